use aws_config::BehaviorVersion;
use event_publisher::{Bus, Publisher, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::ledger::dynamodb::DynamoLedger;

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let shards = std::env::var("DUE_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let publisher = Publisher {
        ledger: DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            var("TABLE_NAME")?,
            shards,
        )
        // It reads a charge's user_id only: no KMS access to billing keys.
        .keys_left_sealed(),
        bus: Bus {
            client: aws_sdk_eventbridge::Client::new(&sdk),
            name: var("EVENT_BUS_NAME")?,
            source: std::env::var("EVENT_SOURCE")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "subscription-billing".into()),
        },
    };
    let publisher = &publisher;
    run(service_fn(move |event: LambdaEvent<_>| {
        handle(publisher, event)
    }))
    .await
}
