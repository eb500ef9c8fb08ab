use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::app::App;
use shared::config::ChargeMode;
use shared::run::queue::SqsQueue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let queue = match &app.config.charging.mode {
        ChargeMode::Single => None,
        ChargeMode::Queued { queue_url } => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            Some(SqsQueue {
                client: aws_sdk_sqs::Client::new(&sdk),
                url: queue_url.to_string(),
            })
        }
    };
    let (app, queue) = (&app, queue.as_ref());
    run(service_fn(move |event: LambdaEvent<Value>| {
        scheduled_charge::handle_event(app, queue, event)
    }))
    .await
}
