use aws_config::BehaviorVersion;
use event_publisher::{Bus, Publisher, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::config::PublisherConfig;
use shared::ledger::dynamodb::DynamoLedger;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = PublisherConfig::from_env()?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let publisher = Publisher {
        ledger: DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            config.table.name,
            config.table.due_shards,
        )
        // It reads a charge's user_id only: no KMS access to billing keys.
        .keys_left_sealed(),
        bus: Bus {
            client: aws_sdk_eventbridge::Client::new(&sdk),
            name: config.events.event_bus_name,
            source: config.events.event_source,
        },
    };
    let publisher = &publisher;
    run(service_fn(move |event: LambdaEvent<_>| {
        handle(publisher, event)
    }))
    .await
}
