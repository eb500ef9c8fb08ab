use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::app::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let app = &app;
    run(service_fn(move |event: LambdaEvent<_>| {
        charge_worker::handle(app, event)
    }))
    .await
}
