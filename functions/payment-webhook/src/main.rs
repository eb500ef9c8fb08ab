use lambda_http::{Error, run, service_fn};
use shared::app::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let app = &app;
    run(service_fn(move |request| {
        payment_webhook::handle(app, request)
    }))
    .await
}
