//! # merchant-web
//!
//! What a merchant adds to its own site to sell a subscription, small enough to copy: three pages
//! (`static/`) and a backend of two proxied calls.
//!
//! - `GET /`: the subscribe page. Its button asks the backend for `prepare`, then opens the PG's
//!   window with exactly what came back: `IMP.request_pay` (i'mport V1) or
//!   `PortOne.requestIssueBillingKey` (PortOne V2). The PG sends the browser to the billing
//!   service's callback, which sends it on to `/billing/done` or `/billing/failed` here.
//! - `GET /billing/done?subscription_id=…`: reads the subscription through the backend and shows it.
//! - `GET /billing/failed?reason=…`: says what went wrong.
//! - `POST /api/prepare {user_id}` → the billing service's `POST /billing/prepare` (with the
//!   merchant's plan; `x-api-key` when configured). The user id is remembered in this browser's
//!   session cookie.
//! - `GET /api/subscriptions/{id}` → `GET /subscriptions/{id}` of the management API, answered only
//!   when the subscription belongs to this session's user.
//! - "My subscription" (issue 23 §5, cancelling as easy as signing up): `POST /api/portal-link/{id}`
//!   (this session's user's subscription) asks the billing service for a signed, 30-minute link
//!   (`POST /subscriptions/{id}/portal-link`) and answers the page's address, `/account?t=…`, which
//!   could as well go out in a message. `GET /api/portal?t=…` opens it (`GET /portal/{token}`: the
//!   subscription it names, its pending price change, the mid-term cancel's quote), and
//!   `POST /api/portal/action {t, action, quote_id?}` does what the customer clicked, on the
//!   subscription the link names and no other: `consent` / `decline` a price increase, `cancel_now`
//!   (with the quoted refund), `cancel_period_end`, `change_card` (the PG's window again),
//!   `pause` (until resumed) and `resume` (issue 25 §4).
//!
//! In AWS the two billing routes take IAM auth: the merchant's backend signs them (SigV4, e.g. with
//! `aws-sigv4`); this example calls the local stack's function URLs, which need none. Its "login" is a
//! user id typed on the page: a real site uses its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

const INDEX: &str = include_str!("../static/index.html");
const DONE: &str = include_str!("../static/done.html");
const FAILED: &str = include_str!("../static/failed.html");
const ACCOUNT: &str = include_str!("../static/account.html");
const STYLE: &str = include_str!("../static/style.css");
const SESSION_COOKIE: &str = "merchant_session";

/// Where the billing service and the PG's browser SDKs are.
#[derive(Debug, Clone)]
pub struct MerchantConfig {
    /// The billing service's `POST /billing/prepare`.
    pub prepare_url: String,
    /// The management API's base (`{base}/subscriptions/{id}`).
    pub subscriptions_url: String,
    /// i'mport's SDK (`https://cdn.iamport.kr/v1/iamport.js`; the simulator's `/sdk/iamport.js` locally).
    pub iamport_sdk: String,
    /// PortOne V2's SDK (`https://cdn.portone.io/v2/browser-sdk.js`; the simulator's `/sdk/portone.js`).
    pub portone_sdk: String,
    /// The merchant code for `IMP.init`.
    pub imp_code: String,
    /// The plan this shop sells.
    pub plan_amount: i64,
    pub plan_name: String,
    /// Sent as `x-api-key` to both billing routes when set.
    pub api_key: Option<String>,
}

struct Shop {
    config: MerchantConfig,
    http: reqwest::Client,
    /// session id → user id
    sessions: Mutex<HashMap<String, String>>,
}

/// Serves the shop on `addr` (e.g. `127.0.0.1:3000`) in a task of the caller's runtime.
pub async fn serve(
    config: MerchantConfig,
    addr: &str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(std::io::Error::other)?;
    let shop = Arc::new(Shop {
        config,
        http,
        sessions: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/", get(|| async { html(INDEX) }))
        .route("/billing/done", get(|| async { html(DONE) }))
        .route("/billing/failed", get(|| async { html(FAILED) }))
        .route("/account", get(|| async { html(ACCOUNT) }))
        .route("/style.css", get(|| async { asset("text/css", STYLE) }))
        .route("/config.js", get(config_js))
        .route("/api/prepare", post(prepare))
        .route("/api/subscriptions/{id}", get(subscription))
        .route("/api/portal-link/{id}", post(portal_link))
        .route("/api/portal", get(open_portal))
        .route("/api/portal/action", post(portal_action))
        .with_state(shop);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "merchant-web stopped");
        }
    });
    Ok((local, task))
}

fn html(body: &'static str) -> Response {
    asset("text/html; charset=utf-8", body)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-store")],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

/// `window.MERCHANT`: the SDKs' addresses and the merchant code.
async fn config_js(State(shop): State<Arc<Shop>>) -> Response {
    let c = &shop.config;
    let body = format!(
        "window.MERCHANT = {};\n",
        json!({"iamport_sdk": c.iamport_sdk, "portone_sdk": c.portone_sdk, "imp_code": c.imp_code})
    );
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn new_session() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

#[derive(Deserialize)]
struct PrepareInput {
    user_id: String,
}

/// `POST /api/prepare {user_id}` → the billing service's prepare, with this shop's plan.
async fn prepare(State(shop): State<Arc<Shop>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(input) = serde_json::from_slice::<PrepareInput>(&body) else {
        return error(StatusCode::BAD_REQUEST, "send {\"user_id\": \"…\"}");
    };
    let c = &shop.config;
    let mut request = shop.http.post(&c.prepare_url).json(&json!({
        "user_id": input.user_id,
        "plan": {"amount": c.plan_amount, "name": c.plan_name},
    }));
    if let Some(key) = &c.api_key {
        request = request.header("x-api-key", key);
    }
    let (status, answer) = match forward(request).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let session = session_of(&headers).unwrap_or_else(new_session);
    if status.is_success()
        && let Ok(mut sessions) = shop.sessions.lock()
    {
        sessions.insert(session.clone(), input.user_id);
    }
    let mut response = (status, axum::Json(answer)).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"
    )) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

/// `GET /api/subscriptions/{id}`: the subscription, if it is this session's user's.
async fn subscription(
    State(shop): State<Arc<Shop>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match owned(&shop, &headers, &id).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(response) => response,
    }
}

/// The subscription `id` as the management API shows it, when it is this
/// session's user's; else the answer to give.
async fn owned(shop: &Shop, headers: &HeaderMap, id: &str) -> Result<Value, Response> {
    if !is_subscription_id(id) {
        return Err(error(StatusCode::BAD_REQUEST, "not a subscription id"));
    }
    let Some(user) = user_of(shop, headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "subscribe from this browser first",
        ));
    };
    match forward(billing(
        shop,
        reqwest::Method::GET,
        &format!("/subscriptions/{id}"),
    ))
    .await?
    {
        (status, answer) if status.is_success() && answer["user_id"] == json!(user) => Ok(answer),
        (status, _) if status.is_success() => {
            Err(error(StatusCode::NOT_FOUND, "no such subscription"))
        }
        (status, answer) => Err((status, axum::Json(answer)).into_response()),
    }
}

/// The user of this browser's session, if it signed in (subscribed) here.
fn user_of(shop: &Shop, headers: &HeaderMap) -> Option<String> {
    session_of(headers).and_then(|s| {
        shop.sessions
            .lock()
            .ok()
            .and_then(|sessions| sessions.get(&s).cloned())
    })
}

fn is_subscription_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A billing-service call, with `x-api-key` when configured.
fn billing(shop: &Shop, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    let c = &shop.config;
    let url = format!("{}{path}", c.subscriptions_url.trim_end_matches('/'));
    let mut request = shop.http.request(method, url);
    if let Some(key) = &c.api_key {
        request = request.header("x-api-key", key);
    }
    request
}

/// `POST /api/portal-link/{id}`: a link to the page of this session's
/// user's subscription.
async fn portal_link(
    State(shop): State<Arc<Shop>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    // Only the owner gets a link.
    if let Err(response) = owned(&shop, &headers, &id).await {
        return response;
    }
    let request = billing(
        &shop,
        reqwest::Method::POST,
        &format!("/subscriptions/{id}/portal-link"),
    )
    .json(&json!({}));
    match forward(request).await {
        Ok((status, answer)) if status.is_success() => {
            let token = answer["token"].as_str().unwrap_or_default();
            let url = format!("/account?t={token}");
            axum::Json(json!({"url": url, "expires_at": answer["expires_at"]})).into_response()
        }
        Ok((status, answer)) => (status, axum::Json(answer)).into_response(),
        Err(response) => response,
    }
}

/// A token as the billing service writes them: letters, digits and `-`.
fn token_param(t: Option<&str>) -> Option<String> {
    t.filter(|t| {
        !t.is_empty() && t.len() <= 80 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
    .map(str::to_owned)
}

fn bad_link() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "this link is not valid: ask the shop for a new one",
    )
}

/// Opens the link at the billing service: the view, or its error answer.
async fn opened(shop: &Shop, token: &str) -> Result<Value, Response> {
    match forward(billing(
        shop,
        reqwest::Method::GET,
        &format!("/portal/{token}"),
    ))
    .await?
    {
        (status, answer) if status.is_success() => Ok(answer),
        (status, answer) => Err((status, axum::Json(answer)).into_response()),
    }
}

#[derive(Deserialize)]
struct PortalQuery {
    t: Option<String>,
}

/// `GET /api/portal?t=…`: what the page shows.
async fn open_portal(
    State(shop): State<Arc<Shop>>,
    axum::extract::Query(q): axum::extract::Query<PortalQuery>,
) -> Response {
    let Some(token) = token_param(q.t.as_deref()) else {
        return bad_link();
    };
    match opened(&shop, &token).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct PortalAction {
    t: String,
    action: String,
    quote_id: Option<String>,
}

/// `POST /api/portal/action`: what the customer clicked, on the
/// subscription the link names. Each action has a key of its own per link,
/// so a double click is one action.
async fn portal_action(State(shop): State<Arc<Shop>>, body: Bytes) -> Response {
    let Ok(input) = serde_json::from_slice::<PortalAction>(&body) else {
        return error(StatusCode::BAD_REQUEST, "send {\"t\": …, \"action\": …}");
    };
    let Some(token) = token_param(Some(&input.t)) else {
        return bad_link();
    };
    let view = match opened(&shop, &token).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let id = view["subscription_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let expires = view["expires_at"].as_str().unwrap_or_default().to_owned();
    let reason = "customer cancelled on the my-subscription page";
    let (path, body) = match input.action.as_str() {
        "consent" => (
            "price-change/consent",
            json!({"evidence": {"channel": "web", "reference": format!("my-subscription page, link until {expires}")}}),
        ),
        "decline" => ("price-change/decline", json!({})),
        "cancel_now" => (
            "cancel",
            json!({"at": "now", "reason": reason, "refund": "quote", "quote_id": input.quote_id}),
        ),
        "cancel_period_end" => ("cancel", json!({"at": "period_end", "reason": reason})),
        "change_card" => ("payment-method", json!({})),
        // A pause until the customer comes back (decision 76), and the way back.
        "pause" => ("pause", json!({})),
        "resume" => ("resume", json!({})),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unknown action {other:?}"),
            );
        }
    };
    // Per link and action (and quote: a fresh quote after a stale one is a
    // new request).
    let mut key = format!(
        "portal-{}-{id}-{}",
        input.action,
        token.rsplit('-').nth(1).unwrap_or_default()
    );
    if let Some(q) = input
        .quote_id
        .as_deref()
        .filter(|_| input.action == "cancel_now")
    {
        key = format!("{key}-{}", &q[..q.len().min(40)]);
    }
    let request = billing(
        &shop,
        reqwest::Method::POST,
        &format!("/subscriptions/{id}/{path}"),
    )
    .header("idempotency-key", key)
    .json(&body);
    match forward(request).await {
        Ok((status, answer)) => (status, axum::Json(answer)).into_response(),
        Err(response) => response,
    }
}

async fn forward(request: reqwest::RequestBuilder) -> Result<(StatusCode, Value), Response> {
    let answer = request.send().await.map_err(|e| {
        tracing::warn!(error = %e.without_url(), "the billing service is unreachable");
        error(
            StatusCode::BAD_GATEWAY,
            "the billing service is unreachable",
        )
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body: Value = answer.json().await.map_err(|_| {
        error(
            StatusCode::BAD_GATEWAY,
            "the billing service answered something unreadable",
        )
    })?;
    Ok((status, body))
}
