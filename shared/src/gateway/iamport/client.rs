//! The i'mport V1 REST client: token handling, the envelope, typed outcomes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::model::{
    AgainRequest, BillingKey, CancelRequest, Envelope, Payment, PaymentStatus, ReceiptAnnotation,
    ReceiptRequest, TokenResponse,
};
use crate::gateway::{Ambiguity, AmbiguityKind, GatewayError, Rejection, RejectionKind};
use crate::secret::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.iamport.kr";

/// How to reach i'mport. Built once at cold start.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub imp_key: Secret,
    pub imp_secret: Secret,
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, read the answer).
    pub timeout: Duration,
    /// Send `include_sandbox=true` on lookups (test channels).
    pub include_sandbox: bool,
    /// Refresh a cached token when less than this is left of it.
    pub refresh_margin: Duration,
    /// `pay_method` of the payment window (`trans` for CHAI, as its guide
    /// says; `card` for most other PGs).
    pub pay_method: String,
}

impl ClientConfig {
    pub fn new(base_url: Url, imp_key: Secret, imp_secret: Secret) -> Self {
        Self {
            base_url,
            imp_key,
            imp_secret,
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            include_sandbox: false,
            refresh_margin: Duration::from_secs(60),
            pay_method: "card".into(),
        }
    }
}

/// What became of a `POST /subscribe/payments/again`, in V1's own terms
/// (the port maps it onto `gateway::ChargeOutcome`).
#[derive(Debug, Clone, PartialEq)]
pub enum AgainOutcome {
    /// Money was taken: `status == "paid"`.
    Paid(Payment),
    /// The attempt was made and declined (HTTP 200, `code 0`, `status "failed"`).
    Declined(Payment),
    /// No attempt was made (`code != 0`, 4xx, or the request never left).
    Rejected(Rejection),
    /// May or may not have charged. Settle with `find_payment` before anything else.
    Ambiguous(Ambiguity),
}

impl AgainOutcome {
    pub fn from_result(result: Result<Payment, GatewayError>) -> Self {
        match result {
            Ok(p) if p.status == PaymentStatus::Paid => Self::Paid(p),
            Ok(p) if p.status == PaymentStatus::Failed => Self::Declined(p),
            Ok(p) => Self::Ambiguous(Ambiguity {
                kind: AmbiguityKind::Malformed,
                http_status: Some(200),
                detail: format!(
                    "charge {} answered with status {:?}, expected paid or failed",
                    p.imp_uid,
                    p.status.as_str()
                ),
            }),
            // `code 0` without a payment is undocumented for `again`: it may
            // hide a charge, so it is settled like any unclear answer.
            Err(GatewayError::Rejected(r))
                if r.kind == RejectionKind::Business && r.code == Some(0) =>
            {
                Self::Ambiguous(Ambiguity {
                    kind: AmbiguityKind::Malformed,
                    http_status: r.http_status,
                    detail: format!("code 0 without a payment: {}", r.message),
                })
            }
            Err(GatewayError::Rejected(r)) => Self::Rejected(r),
            Err(GatewayError::Ambiguous(a)) => Self::Ambiguous(a),
        }
    }
}

struct CachedToken {
    token: Secret,
    refresh_after: Instant,
    expires_at: Instant,
}

type TokenFetch = Shared<BoxFuture<'static, Result<Arc<CachedToken>, GatewayError>>>;

#[derive(Default)]
struct TokenState {
    cached: Option<Arc<CachedToken>>,
    /// The getToken request in flight, shared by every caller that waits for it.
    inflight: Option<TokenFetch>,
}

/// A typed i'mport V1 client. Cheap to share (`Arc`); one per process.
///
/// The access token is cached for the life of the process (so across warm
/// Lambda invocations), its lifetime taken from `expired_at - now` of the
/// server's answer, refreshed `refresh_margin` ahead of expiry, refreshed by
/// one request whose result every concurrent caller shares (no lock is held
/// while it is in flight), and refreshed once more and the call retried when
/// i'mport answers 401.
pub struct IamportClient {
    http: reqwest::Client,
    pub(super) config: ClientConfig,
    token: std::sync::Mutex<TokenState>,
}

impl std::fmt::Debug for IamportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamportClient")
            .field("base_url", &self.config.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl IamportClient {
    pub fn new(config: ClientConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("subscription-billing/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            config,
            token: std::sync::Mutex::new(TokenState::default()),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.config.base_url
    }

    /// `POST /subscribe/payments/again`: charge a stored billing key.
    pub async fn charge_again(&self, request: &AgainRequest) -> AgainOutcome {
        let url = self.url(&["subscribe", "payments", "again"], false);
        let result = self
            .call::<Payment, _>(Method::POST, url, Some(request))
            .await;
        AgainOutcome::from_result(result)
    }

    /// `GET /payments/{imp_uid}`.
    pub async fn payment(&self, imp_uid: &str) -> Result<Payment, GatewayError> {
        let url = self.url(&["payments", path_id(imp_uid)?], true);
        self.call::<Payment, ()>(Method::GET, url, None).await
    }

    /// `GET /payments/find/{merchant_uid}[/{status}]`: the newest payment
    /// with that `merchant_uid` (and status, if given).
    pub async fn find_payment(
        &self,
        merchant_uid: &str,
        status: Option<PaymentStatus>,
    ) -> Result<Payment, GatewayError> {
        let merchant_uid = path_id(merchant_uid)?;
        let url = match status {
            Some(s) => self.url(&["payments", "find", merchant_uid, s.as_str()], true),
            None => self.url(&["payments", "find", merchant_uid], true),
        };
        self.call::<Payment, ()>(Method::GET, url, None).await
    }

    /// `GET /subscribe/customers/{customer_uid}`: the billing key's description.
    pub async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        let url = self.url(&["subscribe", "customers", path_id(customer_uid)?], false);
        self.call::<BillingKey, ()>(Method::GET, url, None).await
    }

    /// `DELETE /subscribe/customers/{customer_uid}`: removes the key at i'mport.
    pub async fn delete_billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        let url = self.url(&["subscribe", "customers", path_id(customer_uid)?], false);
        self.call::<BillingKey, ()>(Method::DELETE, url, None).await
    }

    /// `POST /payments/cancel`: full or partial refund.
    pub async fn cancel(&self, request: &CancelRequest) -> Result<Payment, GatewayError> {
        let url = self.url(&["payments", "cancel"], false);
        self.call::<Payment, _>(Method::POST, url, Some(request))
            .await
    }

    /// `POST /receipts/{imp_uid}`: issues a cash receipt for a cash payment.
    pub async fn issue_receipt(
        &self,
        imp_uid: &str,
        request: &ReceiptRequest,
    ) -> Result<ReceiptAnnotation, GatewayError> {
        let url = self.url(&["receipts", path_id(imp_uid)?], false);
        self.call::<ReceiptAnnotation, _>(Method::POST, url, Some(request))
            .await
    }

    /// `GET /receipts/{imp_uid}`: the payment's cash receipt (404: none).
    pub async fn receipt(&self, imp_uid: &str) -> Result<ReceiptAnnotation, GatewayError> {
        let url = self.url(&["receipts", path_id(imp_uid)?], false);
        self.call::<ReceiptAnnotation, ()>(Method::GET, url, None)
            .await
    }

    /// `DELETE /receipts/{imp_uid}`: cancels the payment's cash receipt.
    pub async fn revoke_receipt(&self, imp_uid: &str) -> Result<ReceiptAnnotation, GatewayError> {
        let url = self.url(&["receipts", path_id(imp_uid)?], false);
        self.call::<ReceiptAnnotation, ()>(Method::DELETE, url, None)
            .await
    }

    /// Builds `base/segments…`, each segment percent-encoded, so an id taken
    /// from a browser can never change the path (`../`, `/`, `?`).
    fn url(&self, segments: &[&str], lookup: bool) -> Url {
        let mut url = self.config.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if lookup && self.config.include_sandbox {
            url.query_pairs_mut().append_pair("include_sandbox", "true");
        }
        url
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, GatewayError> {
        let token = self.access_token().await?;
        match self.send::<T, B>(&method, &url, body, &token).await {
            Err(Unauthorized) => {
                warn!(
                    path = loggable_path(&url),
                    "i'mport answered 401; refreshing the token once"
                );
                self.invalidate(&token).await;
                let token = self.access_token().await?;
                match self.send::<T, B>(&method, &url, body, &token).await {
                    Err(Unauthorized) => Err(GatewayError::Rejected(Rejection {
                        kind: RejectionKind::Unauthorized,
                        http_status: Some(401),
                        code: None,
                        message: "access token refused twice".into(),
                    })),
                    Ok(result) => result,
                }
            }
            Ok(result) => result,
        }
    }

    async fn send<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&B>,
        token: &Secret,
    ) -> Result<Result<T, GatewayError>, Unauthorized> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("Authorization", format!("Bearer {}", token.expose()));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Err(transport_error(&e))),
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Unauthorized);
        }
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(Err(transport_error(&e))),
        };
        Ok(decode(status, &bytes))
    }

    /// The cached token, or a fresh one. Concurrent callers share one
    /// `getToken` request and its result, success or failure, and no lock is
    /// held while it is in flight: a slow or failing getToken costs every
    /// waiter one timeout, never one timeout each in turn.
    async fn access_token(&self) -> Result<Secret, GatewayError> {
        let (inflight, stale) = {
            let mut st = self.lock_token();
            let now = Instant::now();
            if let Some(cached) = st.cached.as_ref().filter(|c| now < c.refresh_after) {
                return Ok(cached.token.clone());
            }
            let stale = st.cached.clone().filter(|c| now < c.expires_at);
            let inflight = match &st.inflight {
                Some(f) => f.clone(),
                None => {
                    let f = self.fetch_token().boxed().shared();
                    st.inflight = Some(f.clone());
                    f
                }
            };
            (inflight, stale)
        };
        let result = inflight.clone().await;
        {
            let mut st = self.lock_token();
            if st.inflight.as_ref().is_some_and(|f| f.ptr_eq(&inflight)) {
                st.inflight = None;
                if let Ok(fresh) = &result {
                    st.cached = Some(Arc::clone(fresh));
                }
            }
        }
        match result {
            Ok(fresh) => Ok(fresh.token.clone()),
            // getToken unreachable, but the old token is still valid: use it.
            Err(e) if e.is_transient() => match stale {
                Some(cached) => Ok(cached.token.clone()),
                None => Err(token_failure(e)),
            },
            Err(e) => Err(token_failure(e)),
        }
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn invalidate(&self, used: &Secret) {
        let mut st = self.lock_token();
        if st.cached.as_ref().is_some_and(|c| &c.token == used) {
            st.cached = None;
        }
    }

    /// One `getToken` request, as a future that owns what it needs (so it
    /// can be shared between callers).
    fn fetch_token(
        &self,
    ) -> impl Future<Output = Result<Arc<CachedToken>, GatewayError>> + Send + 'static {
        #[derive(Serialize)]
        struct Credentials {
            imp_key: String,
            imp_secret: String,
        }
        let url = self.url(&["users", "getToken"], false);
        let http = self.http.clone();
        let refresh_margin = self.config.refresh_margin;
        let credentials = Credentials {
            imp_key: self.config.imp_key.expose().to_owned(),
            imp_secret: self.config.imp_secret.expose().to_owned(),
        };
        async move {
            let started = Instant::now();
            let response = http
                .post(url)
                .json(&credentials)
                .send()
                .await
                .map_err(|e| transport_error(&e))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| transport_error(&e))?;
            if status == StatusCode::UNAUTHORIZED {
                return Err(GatewayError::Rejected(Rejection {
                    kind: RejectionKind::Unauthorized,
                    http_status: Some(401),
                    code: None,
                    message: format!(
                        "getToken refused the REST API key/secret: {}",
                        message_of(&bytes)
                    ),
                }));
            }
            let token: TokenResponse = decode(status, &bytes)?;
            // Lifetime as the server sees it; never assume 30 minutes.
            let lifetime =
                Duration::from_secs(u64::try_from(token.expired_at - token.now).unwrap_or(0));
            let expires_at = started + lifetime;
            let refresh_after = expires_at
                .checked_sub(refresh_margin)
                .unwrap_or(started)
                .max(started);
            debug!(
                lifetime_secs = lifetime.as_secs(),
                "obtained i'mport access token"
            );
            Ok(Arc::new(CachedToken {
                token: Secret::new(token.access_token),
                refresh_after,
                expires_at,
            }))
        }
    }
}

/// An id that becomes one path segment. `.` and `..` are dropped by URL
/// normalisation (`find/../paid` would look up merchant_uid `paid`) and an
/// empty one leaves an empty segment, so those are refused before sending.
fn path_id(id: &str) -> Result<&str, GatewayError> {
    if matches!(id, "" | "." | "..") {
        return Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::BadRequest,
            http_status: None,
            code: None,
            message: format!("{id:?} is not a usable id"),
        }));
    }
    Ok(id)
}

/// The request's path for a log line. A `customer_uid` is the reference to
/// a billing key, so the segment after `customers` is written as its name.
fn loggable_path(url: &Url) -> String {
    let mut path = String::new();
    let mut after_customers = false;
    for segment in url.path_segments().into_iter().flatten() {
        path.push('/');
        path.push_str(if after_customers {
            "{customer_uid}"
        } else {
            segment
        });
        after_customers = segment == "customers";
    }
    path
}

/// Marker: the server answered 401 (token refused).
struct Unauthorized;

/// A token problem means the real request was never sent.
fn token_failure(e: GatewayError) -> GatewayError {
    match e {
        GatewayError::Rejected(r) if r.kind == RejectionKind::Unauthorized => {
            GatewayError::Rejected(r)
        }
        other => GatewayError::not_sent(format!("could not obtain an access token: {other}")),
    }
}

fn transport_error(e: &reqwest::Error) -> GatewayError {
    // `reqwest::Error`'s Display may include the URL; ours carry no secrets.
    let detail = e.to_string();
    if e.is_connect() {
        // Failed before the request was written: nothing reached i'mport.
        GatewayError::not_sent(detail)
    } else if e.is_timeout() {
        GatewayError::Ambiguous(Ambiguity {
            kind: AmbiguityKind::Timeout,
            http_status: None,
            detail,
        })
    } else {
        GatewayError::Ambiguous(Ambiguity {
            kind: AmbiguityKind::Connection,
            http_status: None,
            detail,
        })
    }
}

/// Decodes the `{code, message, response}` envelope of one answer.
pub(crate) fn decode<T: DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Result<T, GatewayError> {
    if status == StatusCode::NOT_FOUND {
        // Only i'mport's own envelope says "no such payment / key": a 404
        // page from a proxy in front of the API (a wrong base URL, a load
        // balancer) says nothing about the record, and read as "not found"
        // it once made every key look gone (defect S2).
        let Some(code) = envelope_code(body) else {
            return Err(GatewayError::Ambiguous(Ambiguity {
                kind: AmbiguityKind::Malformed,
                http_status: Some(404),
                detail: format!(
                    "HTTP 404 without i'mport's envelope ({} bytes): not an answer of the API",
                    body.len()
                ),
            }));
        };
        return Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::NotFound,
            http_status: Some(404),
            code: Some(code),
            message: message_of(body),
        }));
    }
    if status.is_server_error() {
        return Err(GatewayError::Ambiguous(Ambiguity {
            kind: AmbiguityKind::ServerError,
            http_status: Some(status.as_u16()),
            detail: message_of(body),
        }));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        // Throttled or timed out before processing: nothing happened, try later.
        // Never a customer's decline.
        return Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::NotSent,
            http_status: Some(status.as_u16()),
            code: envelope_code(body),
            message: format!("i'mport answered {status}: {}", message_of(body)),
        }));
    }
    if status.is_client_error() {
        return Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::BadRequest,
            http_status: Some(status.as_u16()),
            code: envelope_code(body),
            message: message_of(body),
        }));
    }
    if status != StatusCode::OK {
        return Err(GatewayError::Ambiguous(Ambiguity {
            kind: AmbiguityKind::Malformed,
            http_status: Some(status.as_u16()),
            detail: "unexpected HTTP status".into(),
        }));
    }
    let envelope: Envelope<T> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::Ambiguous(Ambiguity {
            kind: AmbiguityKind::Malformed,
            http_status: Some(200),
            detail: format!("body is not the documented envelope: {e}"),
        })
    })?;
    match (envelope.code, envelope.response) {
        (0, Some(response)) => Ok(response),
        (0, None) => Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::Business,
            http_status: Some(200),
            code: Some(0),
            message: envelope.message.unwrap_or_else(|| "empty response".into()),
        })),
        (code, _) => Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::Business,
            http_status: Some(200),
            code: Some(code),
            message: envelope.message.unwrap_or_default(),
        })),
    }
}

fn envelope_code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("code")?
        .as_i64()
}

/// The envelope's `message`, or a short note when the body has none.
fn message_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("no readable message ({} bytes)", body.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_maps_every_documented_shape() {
        let ok =
            br#"{"code":0,"message":null,"response":{"access_token":"t","now":1,"expired_at":2}}"#;
        let t: TokenResponse = decode(StatusCode::OK, ok).unwrap();
        assert_eq!(t.expired_at - t.now, 1);

        let business =
            r#"{"code":1,"message":"취소할 결제건이 존재하지 않습니다.","response":null}"#;
        let e = decode::<Payment>(StatusCode::OK, business.as_bytes()).unwrap_err();
        assert_eq!(e.label(), "rejected_business");
        assert!(e.to_string().contains("취소할 결제건이 존재하지 않습니다."));

        let e = decode::<Payment>(
            StatusCode::NOT_FOUND,
            r#"{"code":-1,"message":"존재하지 않는 결제정보입니다.","response":null}"#.as_bytes(),
        )
        .unwrap_err();
        assert!(e.is_not_found());
        match e {
            GatewayError::Rejected(r) => assert_eq!(r.code, Some(-1)),
            other => panic!("unexpected {other:?}"),
        }

        let e = decode::<Payment>(StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert_eq!(e.label(), "ambiguous_server_error");
        let e = decode::<Payment>(StatusCode::OK, b"{\"code\":0,\"resp").unwrap_err();
        assert_eq!(e.label(), "ambiguous_malformed");
        let e = decode::<Payment>(StatusCode::BAD_REQUEST, b"{}").unwrap_err();
        assert_eq!(e.label(), "rejected_bad_request");
    }

    #[test]
    fn path_segments_are_encoded() {
        let client = IamportClient::new(ClientConfig::new(
            Url::parse("http://127.0.0.1:1/base/").unwrap(),
            Secret::new("k"),
            Secret::new("s"),
        ))
        .unwrap();
        let url = client.url(&["payments", "../users/getToken?x=1"], false);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/payments/..%2Fusers%2FgetToken%3Fx=1"
        );
    }

    #[test]
    fn a_logged_path_never_holds_a_customer_uid() {
        let url = Url::parse("http://127.0.0.1:1/subscribe/customers/cu_secret1").unwrap();
        assert_eq!(loggable_path(&url), "/subscribe/customers/{customer_uid}");
        let url = Url::parse("http://127.0.0.1:1/payments/imp_1?include_sandbox=true").unwrap();
        assert_eq!(loggable_path(&url), "/payments/imp_1");
    }
}
