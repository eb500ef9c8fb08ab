//! subscription-api: the merchant's management API on the HTTP API (IAM on
//! the routes, optionally `x-api-key`). Thin: routing, authorisation,
//! idempotency keys and the JSON error shape; the rules live in
//! `shared::management`.

use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use shared::app::App;
use shared::gateway::PaymentGateway;
use shared::ledger::{Ledger, RequestState, StoredResponse};
use shared::management::{self, Actor, ManageError};
use tracing::{info, warn};

/// Every route: method and path template (`{name}` matches one segment).
/// `docs/openapi.yaml` documents the same list; a test compares them.
pub const ROUTES: [(&str, &str); 27] = [
    ("GET", "/plans"),
    ("POST", "/plans"),
    ("GET", "/plans/{id}"),
    ("POST", "/plans/{id}/price-change"),
    ("POST", "/coupons"),
    ("GET", "/coupons/{id}"),
    ("GET", "/subscriptions/{id}"),
    ("GET", "/users/{user_id}/subscriptions"),
    ("GET", "/subscriptions/{id}/charges"),
    ("GET", "/subscriptions/{id}/cancellation-quote"),
    ("POST", "/subscriptions/{id}/cancel"),
    ("POST", "/subscriptions/{id}/resume"),
    ("POST", "/subscriptions/{id}/pause"),
    ("POST", "/subscriptions/{id}/plan"),
    ("POST", "/subscriptions/{id}/payment-method"),
    ("POST", "/subscriptions/{id}/consent"),
    ("POST", "/subscriptions/{id}/price-change"),
    ("POST", "/subscriptions/{id}/price-change/consent"),
    ("POST", "/subscriptions/{id}/price-change/decline"),
    ("POST", "/subscriptions/{id}/coupon"),
    ("POST", "/subscriptions/{id}/portal-link"),
    ("GET", "/portal/{token}"),
    ("GET", "/charges/needs-review"),
    ("POST", "/charges/{merchant_uid}/refund"),
    ("POST", "/charges/{merchant_uid}/resolve"),
    ("POST", "/charges/{merchant_uid}/refunds/{key}/dismiss"),
    // Last: it would also fit the tail of `/users/{user_id}/subscriptions`.
    ("GET", "/subscriptions"),
];

/// The largest body accepted.
const MAX_BODY: usize = 16 * 1024;

/// An answer: status and JSON body.
struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    fn ok(status: StatusCode, value: &impl Serialize) -> Self {
        match serde_json::to_string(value) {
            Ok(body) => Self { status, body },
            Err(e) => Self::error(&ManageError::Unavailable(format!(
                "encoding the answer: {e}"
            ))),
        }
    }

    fn error(e: &ManageError) -> Self {
        let mut answer = Self::fail(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.code(),
            &e.to_string(),
        );
        if let Some((name, value)) = e.details() {
            let mut body = shared::http::error_body(e.code(), &e.to_string());
            body[name] = value;
            answer.body = body.to_string();
        }
        answer
    }

    fn fail(status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            status,
            body: shared::http::error_body(code, message).to_string(),
        }
    }

    fn response(self, replayed: bool) -> Response<Body> {
        let mut response = shared::http::json(self.status, self.body).map(Body::from);
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// Matches `path` (its tail: the stage or a local prefix may come first)
/// against the route templates. Returns the route and its parameters.
pub fn route(method: &str, path: &str) -> Result<(&'static str, Vec<String>), StatusCode> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut path_known = false;
    for (m, template) in ROUTES {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let Some(tail) = segments
            .len()
            .checked_sub(parts.len())
            .map(|i| &segments[i..])
        else {
            continue;
        };
        let mut params = Vec::new();
        let literals = parts
            .iter()
            .zip(tail)
            .all(|(p, s)| p.starts_with('{') || p == s);
        let fits = literals
            && parts.iter().zip(tail).all(|(p, s)| {
                if p.starts_with('{') {
                    // Path parameters arrive percent-encoded (a user id may
                    // hold any character); one that does not decode fits
                    // nothing.
                    match percent_decode_str(s).decode_utf8() {
                        Ok(decoded) if !decoded.is_empty() => {
                            params.push(decoded.into_owned());
                            true
                        }
                        _ => false,
                    }
                } else {
                    true
                }
            });
        if literals && !fits && tail.first() == parts.first() {
            // Its shape, with a parameter that does not decode: no shorter
            // template's tail may take it instead.
            return Err(StatusCode::NOT_FOUND);
        }
        // `/charges/needs-review` must not read as `/subscriptions/{id}`.
        if fits && tail.first() == parts.first() {
            path_known = true;
            if m == method {
                return Ok((template, params));
            }
        }
    }
    Err(if path_known {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    })
}

/// Who is asking: `x-actor` (what the merchant's backend names: an
/// operator's login, a job), else the IAM principal of the signed request;
/// the principal is kept beside a named actor (defect X2: the name is the
/// caller's to choose, the principal is what AWS verified).
fn actor(request: &Request) -> Actor {
    let named = request
        .headers()
        .get("x-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && !v.chars().any(char::is_control));
    let principal = iam_principal(request);
    match named {
        Some(name) => Actor {
            name: name.to_owned(),
            principal,
        },
        None => Actor {
            name: principal.clone().unwrap_or_else(|| "api".to_owned()),
            principal: None,
        },
    }
}

fn iam_principal(request: &Request) -> Option<String> {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn body_of<T: DeserializeOwned>(request: &Request) -> Result<T, ManageError> {
    let body: &[u8] = request.body().as_ref();
    if body.len() > MAX_BODY {
        return Err(ManageError::TooLarge(format!(
            "body larger than {MAX_BODY} bytes"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| ManageError::Invalid(format!("invalid JSON body: {e}")))
}

fn answer<T: Serialize>(status: StatusCode, result: Result<T, ManageError>) -> Answer {
    match result {
        Ok(value) => Answer::ok(status, &value),
        Err(e) => Answer::error(&e),
    }
}

/// Routes one request. Always answers with a response: client errors are
/// not runtime errors.
pub async fn handle<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: Request,
) -> Result<Response<Body>, Error> {
    if let Some(t) = shared::http::billing_clock(request.headers()) {
        app.engine.follow_the_event(t);
    }
    if let Some(refusal) = shared::http::api_key_refusal(
        app.config.http.management_api_key.as_ref(),
        request.headers(),
        "management API",
    ) {
        return Ok(refusal.map(Body::from));
    }
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let (template, params) = match route(&method, &path) {
        Ok(found) => found,
        Err(status) => {
            let code = if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "method_not_allowed"
            };
            return Ok(
                Answer::fail(status, code, &format!("no route {method} {path}")).response(false),
            );
        }
    };
    // Boxed: the routes' futures are large, and a debug build keeps a copy
    // of each on the stack of every caller that awaits one (a test that
    // calls many routes overflowed its 2 MiB thread).
    if method == "POST" {
        return Ok(Box::pin(idempotent(app, &request, template, &params)).await);
    }
    Ok(Box::pin(dispatch(app, &request, template, &params, None))
        .await
        .response(false))
}

/// A POST with an `Idempotency-Key` answers the first answer again; without
/// one it runs (every POST is also idempotent where its meaning allows:
/// cancelling a cancelled subscription changes nothing). A refund requires
/// a key: the same partial refund twice would otherwise be two refunds.
async fn idempotent<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: &Request,
    template: &str,
    params: &[String],
) -> Response<Body> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        if template.ends_with("/refund") {
            return Answer::error(&ManageError::Invalid(
                "a refund needs an Idempotency-Key header".into(),
            ))
            .response(false);
        }
        return dispatch(app, request, template, params, None)
            .await
            .response(false);
    };
    if key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Answer::error(&ManageError::Invalid(
            "Idempotency-Key must be 1 to 128 visible ASCII characters".into(),
        ))
        .response(false);
    }
    let mut digest = Sha256::new();
    digest.update(request.method().as_str());
    digest.update(b" ");
    digest.update(request.uri().path());
    digest.update(b"\n");
    digest.update(request.body().as_ref());
    let fingerprint: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ledger = &app.engine.ledger;
    match ledger
        .begin_request(key, &fingerprint, app.engine.now())
        .await
    {
        Ok(RequestState::Fresh) => {}
        Ok(RequestState::Replay(stored)) => {
            info!("idempotency key seen before: answering the first answer again");
            return Answer {
                status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                body: stored.body,
            }
            .response(true);
        }
        Ok(RequestState::InProgress) => {
            return Answer::error(&ManageError::Conflict(
                "a request with this Idempotency-Key is still being handled".into(),
            ))
            .response(false);
        }
        Ok(RequestState::Mismatch) => {
            return Answer::error(&ManageError::Unprocessable(
                "this Idempotency-Key was used for a different request".into(),
            ))
            .response(false);
        }
        Err(e) => return Answer::error(&e.into()).response(false),
    }
    let answered = dispatch(app, request, template, params, Some(key)).await;
    let kept = if answered.status.is_server_error() {
        // Nothing to keep: a retry with the same key may succeed.
        ledger.abandon_request(key).await
    } else {
        let stored = StoredResponse {
            status: answered.status.as_u16(),
            body: answered.body.clone(),
        };
        ledger.finish_request(key, &stored, app.engine.now()).await
    };
    if let Err(e) = kept {
        warn!(error = %e, "idempotency key not updated");
    }
    answered.response(false)
}

async fn dispatch<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: &Request,
    template: &str,
    params: &[String],
    key: Option<&str>,
) -> Answer {
    let engine = &app.engine;
    let p = |i: usize| params.get(i).map(String::as_str).unwrap_or_default();
    let who = || actor(request);
    match template {
        "/plans" | "/plans/{id}" => Box::pin(catalogue(app, request, template, p(0))).await,
        "/plans/{id}/price-change" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::request_plan_price_change(engine, p(0), input)).await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/coupons" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::CREATED,
                Box::pin(management::create_coupon(engine, input)).await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/coupons/{id}" => answer(
            StatusCode::OK,
            Box::pin(management::get_coupon(engine, p(0))).await,
        ),
        "/subscriptions/{id}/coupon" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                // Boxed, as every arm added since: a debug build's frame of
                // this match holds each arm's future (a test overflowed).
                Box::pin(management::apply_coupon(engine, p(0), input, &who()))
                    .await
                    .map(|(view, _)| view),
            ),
            Err(e) => Answer::error(&e),
        },
        "/subscriptions/{id}" => answer(
            StatusCode::OK,
            Box::pin(management::get(engine, p(0))).await,
        ),
        "/users/{user_id}/subscriptions" => answer(
            StatusCode::OK,
            Box::pin(management::list_for_user(engine, p(0)))
                .await
                .map(|subscriptions| serde_json::json!({ "subscriptions": subscriptions })),
        ),
        "/subscriptions/{id}/charges" => answer(
            StatusCode::OK,
            Box::pin(management::charges(engine, p(0)))
                .await
                .map(|charges| serde_json::json!({ "charges": charges })),
        ),
        "/subscriptions/{id}/cancellation-quote" => {
            Box::pin(cancellation_quote(app, request, p(0))).await
        }
        "/subscriptions/{id}/cancel" => match (body_of::<management::CancelInput>(request), key) {
            // A mid-term cancel with its quoted refund: needs the key.
            (Ok(input), Some(key)) if input.refund.is_some() => answer(
                StatusCode::OK,
                Box::pin(management::cancel_quoted(engine, p(0), input, key, &who())).await,
            ),
            (Ok(input), _) => answer(
                StatusCode::OK,
                Box::pin(management::cancel(engine, p(0), input, &who())).await,
            ),
            (Err(e), _) => Answer::error(&e),
        },
        "/subscriptions/{id}/resume" => answer(
            StatusCode::OK,
            Box::pin(management::resume(engine, p(0), &who())).await,
        ),
        // No body is a pause until resumed by hand.
        "/subscriptions/{id}/pause" => match if request.body().is_empty() {
            Ok(management::PauseInput::default())
        } else {
            body_of(request)
        } {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::pause(engine, p(0), input, &who())).await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/subscriptions/{id}/plan" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::change_plan(engine, p(0), input, &who())).await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/subscriptions/{id}/payment-method" => answer(
            StatusCode::CREATED,
            Box::pin(management::payment_method(engine, p(0))).await,
        ),
        "/subscriptions/{id}/consent" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::consent(engine, p(0), input, &who())).await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/subscriptions/{id}/price-change" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::request_price_change(
                    engine,
                    p(0),
                    input,
                    &who(),
                ))
                .await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/subscriptions/{id}/price-change/consent" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::consent_price_change(
                    engine,
                    p(0),
                    input,
                    &who(),
                ))
                .await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/subscriptions/{id}/price-change/decline" => answer(
            StatusCode::OK,
            Box::pin(management::decline_price_change(engine, p(0), &who())).await,
        ),
        "/subscriptions/{id}/portal-link" => answer(
            StatusCode::CREATED,
            Box::pin(management::portal_link(engine, p(0))).await,
        ),
        "/portal/{token}" => answer(
            StatusCode::OK,
            Box::pin(management::open_portal(engine, p(0))).await,
        ),
        "/subscriptions" => {
            let query = request.query_string_parameters_ref();
            let pending = query.and_then(|q| q.first("pending_consent"));
            let cursor = query.and_then(|q| q.first("cursor").map(str::to_owned));
            if pending == Some("true") {
                answer(
                    StatusCode::OK,
                    Box::pin(management::pending_consent(engine, cursor.as_deref())).await,
                )
            } else {
                // Listing every subscription would be a scan: only the lists
                // an index serves.
                Answer::error(&ManageError::Invalid(
                    "GET /subscriptions lists only ?pending_consent=true (the subscriptions whose price increase waits for the customer's consent)".into(),
                ))
            }
        }
        "/charges/needs-review" => {
            let cursor = request
                .query_string_parameters_ref()
                .and_then(|q| q.first("cursor").map(str::to_owned));
            answer(
                StatusCode::OK,
                Box::pin(management::needs_review(engine, cursor.as_deref())).await,
            )
        }
        // `idempotent` lets no refund through without its key.
        "/charges/{merchant_uid}/refund" => match (body_of(request), key) {
            (Ok(input), Some(key)) => answer(
                StatusCode::OK,
                Box::pin(management::refund(engine, p(0), input, key, &who())).await,
            ),
            (Err(e), _) => Answer::error(&e),
            (Ok(_), None) => Answer::error(&ManageError::Invalid(
                "a refund needs an Idempotency-Key header".into(),
            )),
        },
        "/charges/{merchant_uid}/refunds/{key}/dismiss" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::dismiss_refund(
                    engine,
                    p(0),
                    p(1),
                    input,
                    &who(),
                ))
                .await,
            ),
            Err(e) => Answer::error(&e),
        },
        "/charges/{merchant_uid}/resolve" => match body_of(request) {
            Ok(input) => answer(
                StatusCode::OK,
                Box::pin(management::resolve(engine, p(0), input, &who())).await,
            ),
            Err(e) => Answer::error(&e),
        },
        other => Answer::fail(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route {other}"),
        ),
    }
}

/// `?unused=true` when the merchant says the service was not used (a full
/// refund within 7 days of the charge).
async fn cancellation_quote<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: &Request,
    id: &str,
) -> Answer {
    let unused = request
        .query_string_parameters_ref()
        .and_then(|q| q.first("unused").map(str::to_owned));
    let unused = match unused.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Answer::error(&ManageError::Invalid(format!(
                "unused must be true or false, not {other:?}"
            )));
        }
    };
    answer(
        StatusCode::OK,
        management::cancellation_quote(&app.engine, id, unused).await,
    )
}

/// The plan catalogue's routes.
async fn catalogue<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    request: &Request,
    template: &str,
    id: &str,
) -> Answer {
    let engine = &app.engine;
    match (request.method().as_str(), template) {
        ("POST", _) => match body_of(request) {
            Ok(input) => answer(
                StatusCode::CREATED,
                management::create_plan(engine, input).await,
            ),
            Err(e) => Answer::error(&e),
        },
        (_, "/plans") => {
            let cursor = request
                .query_string_parameters_ref()
                .and_then(|q| q.first("cursor").map(str::to_owned));
            answer(
                StatusCode::OK,
                management::list_plans(engine, cursor.as_deref()).await,
            )
        }
        _ => answer(StatusCode::OK, management::get_plan(engine, id).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_by_their_tail_and_keep_literal_segments_apart() {
        assert_eq!(
            route("GET", "/subscriptions/abc123def456").unwrap(),
            ("/subscriptions/{id}", vec!["abc123def456".to_owned()])
        );
        assert_eq!(
            route("GET", "/lambda-url/subscription-api/charges/needs-review")
                .unwrap()
                .0,
            "/charges/needs-review"
        );
        assert_eq!(
            route("POST", "/charges/sabc/refund").unwrap(),
            ("/charges/{merchant_uid}/refund", vec!["sabc".to_owned()])
        );
        assert_eq!(
            route("DELETE", "/subscriptions/x"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(route("GET", "/nothing/here"), Err(StatusCode::NOT_FOUND));
        assert_eq!(
            route("GET", "/users/kim%20min%2Fjun%40shop/subscriptions").unwrap(),
            (
                "/users/{user_id}/subscriptions",
                vec!["kim min/jun@shop".to_owned()]
            )
        );
        assert_eq!(
            route("GET", "/users/%FF/subscriptions"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            route("GET", "/subscriptions/"),
            Ok(("/subscriptions", vec![]))
        );
        assert_eq!(
            route("GET", "/subscriptions"),
            Ok(("/subscriptions", vec![]))
        );
        assert_eq!(
            route("POST", "/subscriptions"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
    }
}
