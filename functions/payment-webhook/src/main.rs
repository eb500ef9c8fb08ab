use lambda_http::{Error, run, service_fn};
use shared::app::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let app = App::from_env().await?;
    let app = &app;
    run(service_fn(move |request| {
        payment_webhook::handle(app, request)
    }))
    .await
}
