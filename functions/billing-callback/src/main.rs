use lambda_http::{Error, run, service_fn};
use shared::app::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    if app.config.registration.success_redirect.is_none()
        || app.config.registration.failure_redirect.is_none()
        || app.config.registration.callback_url.is_none()
    {
        return Err(
            "CALLBACK_URL, SUCCESS_REDIRECT_URL and FAILURE_REDIRECT_URL are required".into(),
        );
    }
    let app = &app;
    run(service_fn(move |request| {
        billing_callback::handle(app, request)
    }))
    .await
}
