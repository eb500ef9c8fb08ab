//! billing-callback: `POST …/prepare` (merchant backend) and
//! `GET …/callback` (the browser's return from i'mport's payment window).
//! Thin: routing and HTTP mapping only; the rules live in `shared::registration`.

use std::collections::HashMap;

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::app::App;
use shared::engine::Budget;
use shared::gateway::PaymentGateway;
use shared::ledger::Ledger;
use shared::registration::{self, CallbackOutcome, FailureReason, PrepareError, PrepareRequest};
use tracing::{info, warn};
use url::Url;

/// Routes one request. Always answers with a response: client errors are
/// not runtime errors.
pub async fn handle<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: Request,
) -> Result<Response<Body>, Error> {
    if let Some(t) = shared::http::billing_clock(request.headers()) {
        app.engine.follow_the_event(t);
    }
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let method = request.method().as_str().to_owned();
    let response = match (method.as_str(), route(&path)) {
        ("POST", Some(PREPARE)) => prepare(app, &request).await,
        ("GET", Some(CALLBACK)) => callback(app, &request).await,
        (_, Some(_)) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
        (_, None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route {path}"),
        ),
    };
    Ok(response)
}

const PREPARE: &str = "/billing/prepare";
const CALLBACK: &str = "/billing/callback";

/// Every route: method and path (the API's routes name them in full; a
/// stage or a local prefix may come first). `docs/openapi.yaml` and
/// `infra/template.yaml` list the same; a test compares them.
pub const ROUTES: [(&str, &str); 2] = [("POST", PREPARE), ("GET", CALLBACK)];

/// The route whose last segment `path` ends with.
fn route(path: &str) -> Option<&'static str> {
    ROUTES.iter().map(|(_, p)| *p).find(|p| {
        p.rsplit('/')
            .next()
            .is_some_and(|last| path.ends_with(&format!("/{last}")))
    })
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    shared::http::json(status, value.to_string()).map(Body::from)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    shared::http::error(status, code, message).map(Body::from)
}

async fn prepare<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: &Request,
) -> Response<Body> {
    if let Some(refusal) = shared::http::api_key_refusal(
        app.config.http.prepare_api_key.as_ref(),
        request.headers(),
        "prepare",
    ) {
        return refusal.map(Body::from);
    }
    let body: &[u8] = request.body().as_ref();
    if body.len() > 16 * 1024 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "body larger than 16 KiB",
        );
    }
    let input: PrepareRequest = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("invalid JSON body: {e}"),
            );
        }
    };
    match registration::prepare(&app.engine, input).await {
        Ok(prepared) => json(
            StatusCode::CREATED,
            &serde_json::to_value(&prepared).unwrap_or_default(),
        ),
        Err(PrepareError::Invalid(reason)) => {
            error(StatusCode::BAD_REQUEST, "invalid_request", &reason)
        }
        Err(e @ PrepareError::UnknownPlan(_)) => {
            error(StatusCode::NOT_FOUND, "plan_not_found", &e.to_string())
        }
        Err(e @ PrepareError::UnknownCoupon(_)) => {
            error(StatusCode::NOT_FOUND, "coupon_not_found", &e.to_string())
        }
        Err(PrepareError::Coupon(e)) => {
            use shared::billing::coupons::CouponError;
            let (status, code) = match &e {
                CouponError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                CouponError::Expired { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "coupon_expired"),
                CouponError::Exhausted(_) | CouponError::NotAllowed(_) => {
                    (StatusCode::CONFLICT, "coupon_exhausted")
                }
            };
            info!(reason = %e, "prepare refused: coupon");
            error(status, code, &e.to_string())
        }
        Err(e @ PrepareError::AlreadySubscribed { .. }) => {
            info!(reason = %e, "prepare refused: one live subscription per user and plan");
            error(StatusCode::CONFLICT, "already_subscribed", &e.to_string())
        }
        Err(PrepareError::Ledger(e)) if matches!(e, shared::ledger::LedgerError::Transient(_)) => {
            warn!(error = %e, "prepare: store unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; try again",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "prepare failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

fn redirect(location: &Url) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(v) = header::HeaderValue::from_str(location.as_str()) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn with_query(base: &Url, pairs: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    url
}

async fn callback<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: &Request,
) -> Response<Body> {
    let (Some(success), Some(failure)) = (
        &app.config.registration.success_redirect,
        &app.config.registration.failure_redirect,
    ) else {
        tracing::error!("SUCCESS_REDIRECT_URL / FAILURE_REDIRECT_URL not configured");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_configured",
            "the redirect URLs are not configured",
        );
    };
    let query: HashMap<String, String> = request
        .query_string_parameters_ref()
        .map(|q| {
            q.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    // The invocation's deadline: every i'mport call is cut to what is left,
    // so the browser always gets its redirect.
    let budget = request
        .lambda_context_ref()
        .map_or(Budget::unlimited(), |ctx| {
            Budget::from_lambda_deadline(ctx.deadline())
        });
    let outcome = match registration::parse_callback(&query) {
        Ok(params) => registration::complete(&app.engine, &params, budget).await,
        Err(reason) => {
            info!(reason = reason.code(), keys = ?query.keys().collect::<Vec<_>>(), "callback with unusable parameters");
            CallbackOutcome::Failed(reason)
        }
    };
    match outcome {
        CallbackOutcome::Active {
            subscription_id,
            first_charge,
        } => {
            let mut pairs = vec![("subscription_id", subscription_id.as_str())];
            if let Some(c) = first_charge {
                pairs.push(("first_charge", c.as_str()));
            }
            redirect(&with_query(success, &pairs))
        }
        CallbackOutcome::Failed(reason) => {
            if reason == FailureReason::NeedsReview {
                shared::telemetry::count("billing-callback", "NeedsReview", 1);
            }
            if reason == FailureReason::BadRequest && query.is_empty() {
                // Not a browser coming back from i'mport: plain 400.
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "merchant_uid and imp_uid are required",
                );
            }
            redirect(&with_query(failure, &[("reason", reason.code())]))
        }
    }
}
