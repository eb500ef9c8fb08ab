//! payment-webhook: `POST …/webhooks/iamport`. The body is a hint; the
//! payment is re-fetched from i'mport (`shared::notification`). With
//! `PAYMENT_API=v2` the same route takes PortOne V2 webhooks, which must
//! carry a valid Standard Webhooks signature first.

use std::net::IpAddr;

use lambda_http::http::{StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::app::App;
use shared::config::PaymentApi;
use shared::notification::{self, Handled};
use shared::portone::webhook;
use tracing::{info, warn};

/// The route this function serves (whatever the path it is mounted on).
/// `docs/openapi.yaml` and `infra/template.yaml` list the same; a test
/// compares them.
pub const ROUTES: [(&str, &str); 1] = [("POST", "/webhooks/iamport")];

pub async fn handle(app: &App, request: Request) -> Result<Response<Body>, Error> {
    if request.method().as_str() != "POST" {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    if !app.config.webhook_allowed_ips.is_empty() {
        match source_ip(&request) {
            Some(ip) if app.config.webhook_allowed_ips.contains(&ip) => {}
            other => {
                warn!(source_ip = ?other, "webhook from an address outside the allow-list");
                return Ok(reply(StatusCode::FORBIDDEN, "source address not allowed"));
            }
        }
    }
    if app.config.payment_api == PaymentApi::V2 {
        return Ok(portone_v2(app, &request).await);
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let n = match notification::parse(content_type, request.body().as_ref()) {
        Ok(n) => n,
        Err(e) => {
            info!(reason = %e, "webhook refused");
            let status = match e {
                notification::BadNotification::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                notification::BadNotification::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return Ok(reply(status, &e.to_string()));
        }
    };
    Ok(answer(notification::handle(&app.engine, &n).await))
}

/// A V2 webhook: the signature over the raw body (any active secret, ±5
/// minutes) before anything is read; then the notice.
async fn portone_v2(app: &App, request: &Request) -> Response<Body> {
    let body = request.body().as_ref();
    if body.len() > notification::MAX_BODY {
        return reply(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = webhook::verify(
        &app.webhook_secrets,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        body,
        app.engine.now().timestamp(),
    ) {
        warn!(reason = %e, "V2 webhook refused: signature");
        return reply(StatusCode::UNAUTHORIZED, "signature not valid");
    }
    match webhook::parse(body) {
        Ok(notice) => answer(notification::handle_v2(&app.engine, &notice).await),
        Err(e) => {
            info!(reason = %e, "V2 webhook refused");
            reply(StatusCode::BAD_REQUEST, "not a PortOne webhook body")
        }
    }
}

fn answer(handled: Result<Handled, notification::RetryLater>) -> Response<Body> {
    match handled {
        Ok(Handled::Settled(_)) => reply(StatusCode::OK, "settled"),
        Ok(Handled::NeedsReview(_)) => {
            shared::telemetry::count("payment-webhook", "NeedsReview", 1);
            reply(StatusCode::OK, "needs review")
        }
        Ok(Handled::RefundRecorded { .. }) => reply(StatusCode::OK, "refund recorded"),
        Ok(Handled::SignupCompleted) => reply(StatusCode::OK, "sign-up completed"),
        Ok(Handled::Duplicate) => reply(StatusCode::OK, "already recorded"),
        Ok(Handled::Ignored(why)) => reply(StatusCode::OK, &format!("ignored: {why}")),
        Err(e) => {
            warn!(error = %e, "webhook not recorded; asking the gateway to re-send");
            reply(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable")
        }
    }
}

fn source_ip(request: &Request) -> Option<IpAddr> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref()?.parse().ok(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn reply(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(
        serde_json::json!({"result": message}).to_string(),
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
