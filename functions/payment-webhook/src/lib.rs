//! payment-webhook: `POST …/webhooks/iamport`. The configured gateway
//! decodes the notification (i'mport V1's unsigned body; PortOne V2's
//! Standard Webhook, whose signature is checked before anything is read);
//! the notice is a hint, and the payment is re-fetched from the gateway
//! (`shared::notification`).

use std::net::IpAddr;

use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::app::App;
use shared::gateway::{BadNotice, InboundNotice, PaymentGateway};
use shared::ledger::Ledger;
use shared::notification::{self, Handled};
use tracing::{info, warn};

/// The route this function serves (whatever the path it is mounted on).
/// `docs/openapi.yaml` and `infra/template.yaml` list the same; a test
/// compares them.
pub const ROUTES: [(&str, &str); 1] = [("POST", "/webhooks/iamport")];

pub async fn handle<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: Request,
) -> Result<Response<Body>, Error> {
    if request.method().as_str() != "POST" {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    if !app.config.http.webhook_allowed_ips.is_empty() {
        match source_ip(&request) {
            Some(ip) if app.config.http.webhook_allowed_ips.contains(&ip) => {}
            other => {
                warn!(source_ip = ?other, "webhook from an address outside the allow-list");
                return Ok(reply(StatusCode::FORBIDDEN, "source address not allowed"));
            }
        }
    }
    let inbound = InboundNotice {
        headers: request.headers(),
        body: request.body().as_ref(),
        now: app.engine.now().timestamp(),
    };
    match app.engine.gateway.decode_notice(&inbound) {
        Ok(notice) => Ok(answer(notification::handle(&app.engine, &notice).await)),
        Err(e) => {
            info!(reason = %e, "webhook refused");
            Ok(refused(&e))
        }
    }
}

/// The answer to a notification that was not read.
fn refused(e: &BadNotice) -> Response<Body> {
    match e {
        BadNotice::ContentType => reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e.to_string()),
        BadNotice::TooLarge => reply(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
        BadNotice::Signature(_) => reply(StatusCode::UNAUTHORIZED, "signature not valid"),
        BadNotice::Body(_) => reply(StatusCode::BAD_REQUEST, "not a webhook body"),
        BadNotice::Empty | BadNotice::Encoding | BadNotice::Fields => {
            reply(StatusCode::BAD_REQUEST, &e.to_string())
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
    shared::http::json(status, serde_json::json!({"result": message}).to_string()).map(Body::from)
}
