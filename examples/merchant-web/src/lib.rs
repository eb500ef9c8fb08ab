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
        .route("/style.css", get(|| async { asset("text/css", STYLE) }))
        .route("/config.js", get(config_js))
        .route("/api/prepare", post(prepare))
        .route("/api/subscriptions/{id}", get(subscription))
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
    if id.is_empty() || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return error(StatusCode::BAD_REQUEST, "not a subscription id");
    }
    let user = session_of(&headers).and_then(|s| {
        shop.sessions
            .lock()
            .ok()
            .and_then(|sessions| sessions.get(&s).cloned())
    });
    let Some(user) = user else {
        return error(
            StatusCode::UNAUTHORIZED,
            "subscribe from this browser first",
        );
    };
    let c = &shop.config;
    let mut request = shop.http.get(format!(
        "{}/subscriptions/{id}",
        c.subscriptions_url.trim_end_matches('/')
    ));
    if let Some(key) = &c.api_key {
        request = request.header("x-api-key", key);
    }
    match forward(request).await {
        Ok((status, answer)) if status.is_success() && answer["user_id"] != json!(user) => {
            error(StatusCode::NOT_FOUND, "no such subscription")
        }
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
