use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::app::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let app = &app;
    run(service_fn(move |event: LambdaEvent<Value>| {
        scheduled_charge::handle(app, event)
    }))
    .await
}
