use lambda_http::{Error, run, service_fn};
use shared::app::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    if app.config.registration.callback_url.is_none() {
        return Err(
            "CALLBACK_URL is required (payment-method returns IMP.request_pay parameters)".into(),
        );
    }
    let app = &app;
    run(service_fn(move |request| {
        subscription_api::handle(app, request)
    }))
    .await
}
