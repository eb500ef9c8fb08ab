//! The i'mport V1 client against wiremock serving the documented bodies
//! (`/work/shared/iamport-v1/README.md` §9). One test per behaviour; every
//! test asserts the values that came back and the requests that went out.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::gateway::iamport::{
    AgainOutcome, AgainRequest, CancelRequest, ClientConfig, IamportClient, PaymentStatus,
};
use shared::gateway::{Ambiguity, AmbiguityKind, GatewayError, Rejection, RejectionKind};
use shared::secret::{Pii, Secret};
use url::Url;
use wiremock::matchers::{bearer_token, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const IMP_KEY: &str = "imp_key_4417_visible";
const IMP_SECRET: &str = "imp_secret_9a8b7c_visible";
/// §9.1
const TOKEN: &str = "a9ace025c90c0da2161075da6ddd3492a2fca776";
const IMP_UID: &str = "imps_410000000001";
const MERCHANT_UID: &str = "sub_2024_06_u42";
const CUSTOMER_UID: &str = "u42_chai_1";
const PHONE: &str = "01012345678";
const EMAIL: &str = "a@example.com";
const T0: i64 = 1_700_000_000;

const GET_TOKEN: &str = "/users/getToken";
const AGAIN: &str = "/subscribe/payments/again";
const PAYMENT: &str = "/payments/imps_410000000001";
const CUSTOMER: &str = "/subscribe/customers/u42_chai_1";
const CANCEL: &str = "/payments/cancel";

const MSG_UNKNOWN_BUYER: &str = "등록되지 않은 구매자입니다.";
const MSG_ALREADY_PAID: &str = "이미 결제 완료된 주문번호(merchant_uid)입니다.";
const MSG_NO_PAYMENT: &str = "존재하지 않는 결제정보입니다.";
const MSG_NOTHING_TO_CANCEL: &str = "취소할 결제건이 존재하지 않습니다.";
const MSG_BAD_CREDENTIALS: &str = "imp_key, imp_secret 인증에 실패하였습니다.";

// ------------------------------------------------------------------ bodies

/// §9.1 with the given clock values.
fn token_answer(token: &str, now: i64, expired_at: i64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "code": 0,
        "message": null,
        "response": {"access_token": token, "now": now, "expired_at": expired_at}
    }))
}

fn ok(response: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"code": 0, "message": null, "response": response}))
}

fn refused(status: u16, code: i64, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"code": code, "message": message, "response": null}))
}

/// §9.4 verbatim (`pg_id` filled in): `again` approved.
const PAID_PAYMENT: &str = r#"{
 "imp_uid":"imps_410000000001","merchant_uid":"sub_2024_06_u42","pay_method":"trans","channel":"api",
 "pg_provider":"chai","emb_pg_provider":null,"pg_tid":"chai_tx_123","pg_id":"pk_chai","escrow":false,
 "apply_num":null,"bank_code":null,"bank_name":null,"card_code":null,"card_name":null,"card_quota":0,
 "card_number":null,"card_type":null,"vbank_code":null,"vbank_name":null,"vbank_num":null,"vbank_holder":null,
 "vbank_date":0,"vbank_issued_at":0,"name":"월간 구독","amount":9900,"cancel_amount":0,"currency":"KRW",
 "buyer_name":"홍길동","buyer_email":"a@example.com","buyer_tel":"01012345678","buyer_addr":null,"buyer_postcode":null,
 "custom_data":null,"user_agent":"sorry_not_supported_anymore","status":"paid","started_at":1700000100,
 "paid_at":1700000101,"failed_at":0,"cancelled_at":0,"fail_reason":null,"cancel_reason":null,
 "receipt_url":null,"cancel_history":[],"cancel_receipt_urls":[],"cash_receipt_issued":false,
 "customer_uid":"u42_chai_1","customer_uid_usage":"payment"}"#;

fn paid_payment() -> Value {
    serde_json::from_str(PAID_PAYMENT).expect("§9.4 is JSON")
}

/// §9.5: `again` declined (HTTP 200, code 0).
fn declined_payment() -> Value {
    let mut p = paid_payment();
    p["status"] = json!("failed");
    p["paid_at"] = json!(0);
    p["failed_at"] = json!(1_700_000_101);
    p["fail_reason"] = json!("잔액부족");
    p
}

/// A payment after a full refund (§5.3 response shape).
fn cancelled_payment() -> Value {
    let mut p = paid_payment();
    p["status"] = json!("cancelled");
    p["cancel_amount"] = json!(9900);
    p["cancelled_at"] = json!(1_700_000_500);
    p["cancel_reason"] = json!("고객 요청");
    p["cancel_history"] = json!([{
        "pg_tid": "chai_tx_123", "amount": 9900, "cancelled_at": 1_700_000_500,
        "reason": "고객 요청", "cancellation_id": "cncl_1", "receipt_url": null
    }]);
    p
}

/// §9.9: the billing key.
fn billing_key_body() -> Value {
    json!({
        "customer_uid": CUSTOMER_UID, "pg_provider": "chai", "pg_id": "pk_chai",
        "customer_id": null, "card_name": null, "card_code": null, "card_number": null,
        "card_type": null, "customer_name": "홍길동", "customer_tel": PHONE,
        "customer_email": EMAIL, "customer_addr": null, "customer_postcode": null,
        "inserted": 1_699_990_000, "updated": 1_699_990_000
    })
}

// ------------------------------------------------------------------ helpers

fn config(base_url: &str) -> ClientConfig {
    let mut config = ClientConfig::new(
        Url::parse(base_url).expect("base url"),
        Secret::new(IMP_KEY),
        Secret::new(IMP_SECRET),
    );
    config.connect_timeout = Duration::from_secs(1);
    config.timeout = Duration::from_secs(5);
    config
}

fn client_with(server: &MockServer, tweak: impl FnOnce(&mut ClientConfig)) -> IamportClient {
    let mut config = config(&server.uri());
    tweak(&mut config);
    IamportClient::new(config).expect("client")
}

fn client(server: &MockServer) -> IamportClient {
    client_with(server, |_| {})
}

/// A 30-minute token (§9.1).
async fn mount_token(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer(TOKEN, T0, T0 + 1800))
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

fn again_request() -> AgainRequest {
    AgainRequest {
        customer_uid: CUSTOMER_UID.into(),
        merchant_uid: MERCHANT_UID.into(),
        amount: 9900,
        currency: "KRW",
        name: "월간 구독".into(),
        buyer_name: Some(Pii::new("홍길동")),
        buyer_email: Some(Pii::new(EMAIL)),
        buyer_tel: Some(Pii::new(PHONE)),
        custom_data: Some(r#"{"subscription_id":"sub_1","period":"2024-06"}"#.into()),
        notice_url: Some("https://billing.example/webhook".into()),
        tax_free: None,
    }
}

fn rejection_of(outcome: AgainOutcome) -> Rejection {
    match outcome {
        AgainOutcome::Rejected(r) => r,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn ambiguity_of(outcome: AgainOutcome) -> Ambiguity {
    match outcome {
        AgainOutcome::Ambiguous(a) => a,
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

fn rejected(err: GatewayError) -> Rejection {
    match err {
        GatewayError::Rejected(r) => r,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn ambiguous(err: GatewayError) -> Ambiguity {
    match err {
        GatewayError::Ambiguous(a) => a,
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

// ------------------------------------------------------------------ tokens

#[tokio::test]
async fn token_is_fetched_once_and_reused_across_many_calls() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer(TOKEN, T0, T0 + 1800))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PAYMENT))
        .respond_with(ok(paid_payment()))
        .expect(10)
        .mount(&server)
        .await;
    let client = client(&server);

    for _ in 0..10 {
        let p = client.payment(IMP_UID).await.expect("payment");
        assert_eq!(p.imp_uid, IMP_UID);
        assert_eq!(p.amount, 9900);
    }
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 1);
    assert_eq!(requests_to(&server, PAYMENT).await.len(), 10);
}

#[tokio::test]
async fn calls_carry_the_token_as_bearer_and_get_token_carries_the_credentials() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path(PAYMENT))
        .and(bearer_token(TOKEN))
        .respond_with(ok(paid_payment()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let p = client.payment(IMP_UID).await.expect("payment");
    assert_eq!(p.merchant_uid, MERCHANT_UID);

    let calls = requests_to(&server, PAYMENT).await;
    assert_eq!(calls.len(), 1);
    let auth = calls[0]
        .headers
        .get("authorization")
        .expect("authorization");
    assert_eq!(auth.to_str().unwrap(), format!("Bearer {TOKEN}"));

    let token_calls = requests_to(&server, GET_TOKEN).await;
    assert_eq!(token_calls.len(), 1);
    assert_eq!(token_calls[0].method.as_str(), "POST");
    assert!(token_calls[0].headers.get("authorization").is_none());
    let body: Value = token_calls[0].body_json().expect("getToken body is JSON");
    assert_eq!(body, json!({"imp_key": IMP_KEY, "imp_secret": IMP_SECRET}));
}

#[tokio::test]
async fn token_with_61_seconds_left_is_refreshed_once_the_60s_margin_is_reached() {
    let server = MockServer::start().await;
    // A fresh-looking answer with only 61 s left (docs §1: never assume 1800).
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer("tok_short", T0, T0 + 61))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer("tok_long", T0 + 2, T0 + 1802))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PAYMENT))
        .and(bearer_token("tok_short"))
        .respond_with(ok(paid_payment()))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PAYMENT))
        .and(bearer_token("tok_long"))
        .respond_with(ok(paid_payment()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_with(&server, |c| c.refresh_margin = Duration::from_secs(60));

    client.payment(IMP_UID).await.expect("first call");
    client
        .payment(IMP_UID)
        .await
        .expect("second call, same token");
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let p = client.payment(IMP_UID).await.expect("call after 1.1 s");
    assert_eq!(p.imp_uid, IMP_UID);
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 2);
    let auths: Vec<String> = requests_to(&server, PAYMENT)
        .await
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        auths,
        ["Bearer tok_short", "Bearer tok_short", "Bearer tok_long"]
    );
}

/// With `refresh_margin` 1799 s a 1800 s token may be reused for exactly one
/// second: reuse at once proves lifetime > 1799 s, a refresh after 1.1 s proves
/// lifetime < 1801 s. Both with a server clock nowhere near the local one.
#[tokio::test]
async fn token_lifetime_is_expired_at_minus_now_whatever_the_server_clock() {
    async fn lifetime_case(now: i64) {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(GET_TOKEN))
            .respond_with(token_answer(TOKEN, now, now + 1800))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(PAYMENT))
            .respond_with(ok(paid_payment()))
            .mount(&server)
            .await;
        let client = client_with(&server, |c| c.refresh_margin = Duration::from_secs(1799));

        client.payment(IMP_UID).await.expect("first call");
        client.payment(IMP_UID).await.expect("second call");
        assert_eq!(
            requests_to(&server, GET_TOKEN).await.len(),
            1,
            "server now={now}: token not reused"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        client.payment(IMP_UID).await.expect("third call");
        assert_eq!(
            requests_to(&server, GET_TOKEN).await.len(),
            2,
            "server now={now}: token kept past its margin"
        );
    }
    // Far in the past (now=1000, expired_at=2800) and far in the future.
    tokio::join!(lifetime_case(1000), lifetime_case(4_000_000_000));
}

#[tokio::test]
async fn api_401_forces_one_token_refresh_and_the_retry_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer("tok_old", T0, T0 + 1800))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer("tok_new", T0 + 5, T0 + 1805))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .and(bearer_token("tok_old"))
        .respond_with(refused(401, -1, "Unauthorized"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .and(bearer_token("tok_new"))
        .respond_with(ok(paid_payment()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    match client.charge_again(&again_request()).await {
        AgainOutcome::Paid(p) => {
            assert_eq!(p.imp_uid, IMP_UID);
            assert_eq!(p.amount, 9900);
        }
        other => panic!("expected Paid after the retry, got {other:?}"),
    }
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 2);
    assert_eq!(requests_to(&server, AGAIN).await.len(), 2);

    // The new token is cached: a later call needs no further getToken.
    Mock::given(method("GET"))
        .and(path(PAYMENT))
        .and(bearer_token("tok_new"))
        .respond_with(ok(paid_payment()))
        .expect(1)
        .mount(&server)
        .await;
    client.payment(IMP_UID).await.expect("payment");
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 2);
}

#[tokio::test]
async fn api_401_twice_is_rejected_unauthorized_after_exactly_one_retry() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(refused(401, -1, "Unauthorized"))
        .mount(&server)
        .await;
    let client = client(&server);

    let r = rejection_of(client.charge_again(&again_request()).await);
    assert_eq!(r.kind, RejectionKind::Unauthorized);
    assert_eq!(r.http_status, Some(401));
    let err = GatewayError::Rejected(r.clone());
    assert!(err.is_unauthorized());
    assert!(!err.is_transient());
    assert_eq!(err.label(), "rejected_unauthorized");
    assert!(!err.to_string().contains(TOKEN), "{err}");
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 2);
    assert_eq!(requests_to(&server, AGAIN).await.len(), 2);
}

#[tokio::test]
async fn get_token_401_is_unauthorized_and_the_charge_is_never_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(refused(401, -1, MSG_BAD_CREDENTIALS))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(paid_payment()))
        .expect(0)
        .mount(&server)
        .await;
    let client = client(&server);

    let r = rejection_of(client.charge_again(&again_request()).await);
    assert_eq!(r.kind, RejectionKind::Unauthorized);
    assert_eq!(r.http_status, Some(401));
    assert!(r.message.contains(MSG_BAD_CREDENTIALS), "{}", r.message);
    assert!(!r.message.contains(IMP_SECRET) && !r.message.contains(IMP_KEY));
    assert!(GatewayError::Rejected(r).is_unauthorized());
    assert_eq!(requests_to(&server, AGAIN).await.len(), 0);
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 1);
}

// ------------------------------------------------------------------ again

#[tokio::test]
async fn paid_charge_is_paid_with_amount_and_paid_at() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(paid_payment()))
        .expect(1)
        .mount(&server)
        .await;

    match client(&server).charge_again(&again_request()).await {
        AgainOutcome::Paid(p) => {
            assert_eq!(p.imp_uid, IMP_UID);
            assert_eq!(p.merchant_uid, MERCHANT_UID);
            assert_eq!(p.amount, 9900);
            assert_eq!(p.status, PaymentStatus::Paid);
            assert_eq!(p.paid_at, 1_700_000_101);
            assert_eq!(p.failed_at, 0);
            assert_eq!(p.fail_reason, None);
            assert_eq!(p.pg_provider.as_deref(), Some("chai"));
            assert_eq!(p.customer_uid.as_deref(), Some(CUSTOMER_UID));
            assert_eq!(p.customer_uid_usage.as_deref(), Some("payment"));
        }
        other => panic!("expected Paid, got {other:?}"),
    }
}

#[tokio::test]
async fn decline_answered_as_200_code_0_is_declined_with_fail_reason() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(declined_payment()))
        .expect(1)
        .mount(&server)
        .await;

    match client(&server).charge_again(&again_request()).await {
        AgainOutcome::Declined(p) => {
            assert_eq!(p.imp_uid, IMP_UID);
            assert_eq!(p.status, PaymentStatus::Failed);
            assert_eq!(p.fail_reason.as_deref(), Some("잔액부족"));
            assert_eq!(p.failed_at, 1_700_000_101);
            assert_eq!(p.paid_at, 0);
            assert_eq!(p.amount, 9900);
        }
        other => panic!("expected Declined, got {other:?}"),
    }
}

#[tokio::test]
async fn nonzero_code_with_null_response_is_a_business_rejection() {
    // §9.6 (code 1 historically, -1 since ~2019) and §9.7 (duplicate merchant_uid).
    for (code, message) in [
        (1, MSG_UNKNOWN_BUYER),
        (-1, MSG_UNKNOWN_BUYER),
        (1, MSG_ALREADY_PAID),
    ] {
        let server = MockServer::start().await;
        mount_token(&server).await;
        Mock::given(method("POST"))
            .and(path(AGAIN))
            .respond_with(refused(200, code, message))
            .expect(1)
            .mount(&server)
            .await;

        let r = rejection_of(client(&server).charge_again(&again_request()).await);
        assert_eq!(r.kind, RejectionKind::Business, "code {code}");
        assert_eq!(r.code, Some(code));
        assert_eq!(r.message, message);
        assert_eq!(r.http_status, Some(200));
        let err = GatewayError::Rejected(r);
        assert_eq!(err.label(), "rejected_business");
        assert!(!err.is_transient());
        assert!(err.to_string().contains(message));
    }
}

#[tokio::test]
async fn again_answered_with_a_status_other_than_paid_or_failed_is_ambiguous_not_paid() {
    for status in ["ready", "cancelled", "partial_cancelled"] {
        let server = MockServer::start().await;
        mount_token(&server).await;
        let mut body = paid_payment();
        body["status"] = json!(status);
        Mock::given(method("POST"))
            .and(path(AGAIN))
            .respond_with(ok(body))
            .expect(1)
            .mount(&server)
            .await;

        let a = ambiguity_of(client(&server).charge_again(&again_request()).await);
        assert_eq!(a.kind, AmbiguityKind::Malformed, "status {status}");
        assert_eq!(a.http_status, Some(200));
        assert!(a.detail.contains(IMP_UID), "{}", a.detail);
        let expected = if status == "partial_cancelled" {
            "unknown"
        } else {
            status
        };
        assert!(a.detail.contains(expected), "{}", a.detail);
    }
}

#[tokio::test]
async fn again_body_carries_every_field_with_amount_as_a_json_integer() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(paid_payment()))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client(&server).charge_again(&again_request()).await;
    assert!(matches!(outcome, AgainOutcome::Paid(ref p) if p.imp_uid == IMP_UID));

    let sent = requests_to(&server, AGAIN).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method.as_str(), "POST");
    assert_eq!(
        sent[0].headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = sent[0].body_json().expect("again body is JSON");
    assert_eq!(body["customer_uid"], CUSTOMER_UID);
    assert_eq!(body["merchant_uid"], MERCHANT_UID);
    assert!(body["amount"].is_i64(), "amount is not an integer: {body}");
    assert_eq!(body["amount"].as_i64(), Some(9900));
    assert_eq!(body["currency"], "KRW");
    assert_eq!(body["name"], "월간 구독");
    assert_eq!(body["buyer_name"], "홍길동");
    assert_eq!(body["buyer_email"], EMAIL);
    assert_eq!(body["buyer_tel"], PHONE);
    assert_eq!(
        body["custom_data"],
        r#"{"subscription_id":"sub_1","period":"2024-06"}"#
    );
    assert_eq!(body["notice_url"], "https://billing.example/webhook");
    assert!(body.get("imp_key").is_none() && body.get("imp_secret").is_none());

    // Optional fields left empty are not sent at all.
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(paid_payment()))
        .mount(&server)
        .await;
    let bare = AgainRequest {
        buyer_name: None,
        buyer_email: None,
        buyer_tel: None,
        custom_data: None,
        notice_url: None,
        ..again_request()
    };
    client(&server).charge_again(&bare).await;
    let body: Value = requests_to(&server, AGAIN).await[0].body_json().unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["amount", "currency", "customer_uid", "merchant_uid", "name"]
    );
}

// ------------------------------------------------------------------ errors

#[tokio::test]
async fn lookup_404_is_not_found_with_the_server_message() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/payments/imps_000000000000"))
        .respond_with(refused(404, -1, MSG_NO_PAYMENT))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/payments/find/sub_unknown/paid"))
        .respond_with(refused(404, -1, MSG_NO_PAYMENT))
        .expect(1)
        .mount(&server)
        .await;
    let not_found_key = "요청하신 customer_uid(u404)로 등록된 정보를 찾을 수 없습니다.";
    Mock::given(path("/subscribe/customers/u404"))
        .respond_with(refused(404, 1, not_found_key))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);

    for err in [
        client.payment("imps_000000000000").await.unwrap_err(),
        client
            .find_payment("sub_unknown", Some(PaymentStatus::Paid))
            .await
            .unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(err.label(), "rejected_not_found");
        let r = rejected(err);
        assert_eq!(r.http_status, Some(404));
        assert_eq!(r.code, Some(-1));
        assert_eq!(r.message, MSG_NO_PAYMENT);
    }
    for err in [
        client.billing_key("u404").await.unwrap_err(),
        client.delete_billing_key("u404").await.unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err:?}");
        let r = rejected(err);
        assert_eq!(r.code, Some(1));
        assert_eq!(r.message, not_found_key);
    }
    let methods: Vec<String> = requests_to(&server, "/subscribe/customers/u404")
        .await
        .iter()
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(methods, ["GET", "DELETE"]);
}

#[tokio::test]
async fn server_error_is_ambiguous_with_its_status() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(refused(500, -1, "PG사 통신 오류"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PAYMENT))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let a = ambiguity_of(client.charge_again(&again_request()).await);
    assert_eq!(a.kind, AmbiguityKind::ServerError);
    assert_eq!(a.http_status, Some(500));
    assert_eq!(a.detail, "PG사 통신 오류");

    let err = client.payment(IMP_UID).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.label(), "ambiguous_server_error");
    let a = ambiguous(err);
    assert_eq!(a.http_status, Some(502));
    assert_eq!(a.kind, AmbiguityKind::ServerError);
    assert_eq!(
        requests_to(&server, AGAIN).await.len(),
        1,
        "no retry of a 5xx charge"
    );
}

#[tokio::test]
async fn answer_slower_than_the_client_timeout_is_ambiguous_timeout() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(paid_payment()).set_delay(Duration::from_millis(1500)))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_with(&server, |c| c.timeout = Duration::from_millis(300));
    // Token first, so only the charge runs into the timeout.
    let _ = client.billing_key("warm_up").await;

    let started = Instant::now();
    let a = ambiguity_of(client.charge_again(&again_request()).await);
    let elapsed = started.elapsed();
    assert_eq!(a.kind, AmbiguityKind::Timeout);
    assert_eq!(a.http_status, None);
    assert!(
        elapsed < Duration::from_millis(1200),
        "client waited {elapsed:?}"
    );
    assert!(GatewayError::Ambiguous(a).is_transient());
    assert_eq!(requests_to(&server, AGAIN).await.len(), 1, "no retry");
}

#[tokio::test]
async fn unreadable_200_body_is_ambiguous_malformed() {
    let truncated = {
        let full = json!({"code": 0, "message": null, "response": paid_payment()}).to_string();
        full[..full.len() / 2].to_owned()
    };
    let bodies = [
        truncated,
        "<html>maintenance</html>".to_owned(),
        String::new(),
        // The envelope is fine but the payment misses required fields.
        json!({"code": 0, "message": null, "response": {"imp_uid": IMP_UID}}).to_string(),
        // A fractional KRW amount is refused rather than rounded.
        json!({"code": 0, "message": null, "response": {
            "imp_uid": IMP_UID, "merchant_uid": MERCHANT_UID, "amount": 9900.5, "status": "paid"
        }})
        .to_string(),
    ];
    for body in bodies {
        let server = MockServer::start().await;
        mount_token(&server).await;
        Mock::given(method("POST"))
            .and(path(AGAIN))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json"))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(PAYMENT))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json"))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server);

        let a = ambiguity_of(client.charge_again(&again_request()).await);
        assert_eq!(a.kind, AmbiguityKind::Malformed, "body {body:?}");
        assert_eq!(a.http_status, Some(200));
        let err = client.payment(IMP_UID).await.unwrap_err();
        assert_eq!(err.label(), "ambiguous_malformed", "body {body:?}");
    }
}

#[tokio::test]
async fn connection_refused_is_not_sent_and_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }; // closed again here
    let client = IamportClient::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();

    let err = client.payment(IMP_UID).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.label(), "not_sent");
    let r = rejected(err);
    assert_eq!(r.kind, RejectionKind::NotSent);
    assert_eq!(r.http_status, None);
    assert_eq!(r.code, None);

    let r = rejection_of(client.charge_again(&again_request()).await);
    assert_eq!(r.kind, RejectionKind::NotSent);
    assert!(!r.message.contains(IMP_SECRET));
}

// ------------------------------------------------------------------ concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_a_fresh_client_share_one_get_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer(TOKEN, T0, T0 + 1800).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PAYMENT))
        .and(bearer_token(TOKEN))
        .respond_with(ok(paid_payment()))
        .expect(32)
        .mount(&server)
        .await;
    let client = Arc::new(client(&server));
    let barrier = Arc::new(tokio::sync::Barrier::new(32));

    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let client = Arc::clone(&client);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                client.payment(IMP_UID).await
            })
        })
        .collect();
    for task in tasks {
        let p = task.await.expect("task").expect("payment");
        assert_eq!(p.imp_uid, IMP_UID);
        assert_eq!(p.amount, 9900);
    }
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 1);
    assert_eq!(requests_to(&server, PAYMENT).await.len(), 32);
}

/// A getToken that hangs past the timeout fails every waiter with the same
/// answer: one request, not one per waiter in turn (which would stretch a
/// charge run, and the claims it holds, by a timeout per waiting charge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_get_token_is_shared_by_its_waiters_not_retried_by_each() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GET_TOKEN))
        .respond_with(token_answer(TOKEN, T0, T0 + 1800).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let client = Arc::new(client_with(&server, |c| {
        c.timeout = Duration::from_millis(500)
    }));
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = Arc::clone(&client);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                client.payment(IMP_UID).await
            })
        })
        .collect();
    for task in tasks {
        let err = task.await.expect("task").unwrap_err();
        // Nothing was sent: the token never came.
        assert_eq!(err.label(), "not_sent", "{err}");
    }
    assert_eq!(requests_to(&server, GET_TOKEN).await.len(), 1);
    assert!(requests_to(&server, PAYMENT).await.is_empty());
}

// ------------------------------------------------------------------ URLs

#[tokio::test]
async fn include_sandbox_is_sent_on_payment_lookups_when_configured_and_never_on_again() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .respond_with(ok(paid_payment()))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(paid_payment()))
        .mount(&server)
        .await;

    let sandbox = client_with(&server, |c| c.include_sandbox = true);
    sandbox.payment(IMP_UID).await.expect("payment");
    sandbox
        .find_payment(MERCHANT_UID, None)
        .await
        .expect("find");
    sandbox
        .find_payment(MERCHANT_UID, Some(PaymentStatus::Paid))
        .await
        .expect("find paid");
    sandbox.charge_again(&again_request()).await;

    let plain = client(&server);
    plain.payment(IMP_UID).await.expect("payment");
    plain.find_payment(MERCHANT_UID, None).await.expect("find");

    let seen: Vec<(String, String, Option<String>)> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() != GET_TOKEN)
        .map(|r| {
            (
                r.method.to_string(),
                r.url.path().to_owned(),
                r.url.query().map(str::to_owned),
            )
        })
        .collect();
    let sandbox_query = Some("include_sandbox=true".to_owned());
    assert_eq!(
        seen,
        [
            ("GET".into(), PAYMENT.into(), sandbox_query.clone()),
            (
                "GET".into(),
                format!("/payments/find/{MERCHANT_UID}"),
                sandbox_query.clone()
            ),
            (
                "GET".into(),
                format!("/payments/find/{MERCHANT_UID}/paid"),
                sandbox_query
            ),
            ("POST".into(), AGAIN.into(), None),
            ("GET".into(), PAYMENT.into(), None),
            ("GET".into(), format!("/payments/find/{MERCHANT_UID}"), None),
        ]
    );
}

#[tokio::test]
async fn ids_with_slashes_are_percent_encoded_and_cannot_reach_another_path() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .respond_with(refused(404, -1, MSG_NO_PAYMENT))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(refused(404, 1, "not found"))
        .mount(&server)
        .await;
    let client = client(&server);

    let errors = [
        client
            .payment("imps_1/../../users/getToken")
            .await
            .unwrap_err(),
        client
            .find_payment("sub/1?x=1#frag", Some(PaymentStatus::Paid))
            .await
            .unwrap_err(),
        client
            .billing_key("u42/../../payments/cancel")
            .await
            .unwrap_err(),
        client
            .delete_billing_key("../payments/imps_1")
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert!(err.is_not_found(), "{err:?}");
    }

    let seen: Vec<(String, String, Option<String>)> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.url.path().to_owned(),
                r.url.query().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".into(), GET_TOKEN.into(), None),
            (
                "GET".into(),
                "/payments/imps_1%2F..%2F..%2Fusers%2FgetToken".into(),
                None
            ),
            (
                "GET".into(),
                "/payments/find/sub%2F1%3Fx=1%23frag/paid".into(),
                None
            ),
            (
                "GET".into(),
                "/subscribe/customers/u42%2F..%2F..%2Fpayments%2Fcancel".into(),
                None
            ),
            (
                "DELETE".into(),
                "/subscribe/customers/..%2Fpayments%2Fimps_1".into(),
                None
            ),
        ]
    );
}

/// `.` and `..` would be dropped by URL normalisation (`/payments/..` is
/// `/payments`; `find/../paid` would look up merchant_uid `paid`) and an empty
/// id leaves an empty segment: such ids are refused before anything is sent.
#[tokio::test]
async fn dot_and_empty_ids_are_refused_before_anything_is_sent() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ok(paid_payment()))
        .mount(&server)
        .await;
    let client = client(&server);

    for id in ["", ".", ".."] {
        for err in [
            client.payment(id).await.unwrap_err(),
            client
                .find_payment(id, Some(PaymentStatus::Paid))
                .await
                .unwrap_err(),
            client.find_payment(id, None).await.unwrap_err(),
            client.billing_key(id).await.unwrap_err(),
            client.delete_billing_key(id).await.unwrap_err(),
        ] {
            assert!(!err.is_transient(), "id {id:?}: {err:?}");
            let r = rejected(err);
            assert_eq!(r.kind, RejectionKind::BadRequest, "id {id:?}");
            assert_eq!(r.http_status, None);
        }
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
}

// ------------------------------------------------------------------ keys, cancel

#[tokio::test]
async fn billing_key_and_its_deletion_decode_the_documented_body() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path(CUSTOMER))
        .respond_with(ok(billing_key_body()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(CUSTOMER))
        .respond_with(ok(billing_key_body()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let key = client.billing_key(CUSTOMER_UID).await.expect("key");
    assert_eq!(key.customer_uid, CUSTOMER_UID);
    assert_eq!(key.pg_provider, "chai");
    assert_eq!(key.pg_id.as_deref(), Some("pk_chai"));
    assert_eq!(key.card_name, None);
    assert_eq!(key.inserted, 1_699_990_000);
    assert_eq!(key.customer_tel.as_ref().map(Pii::expose), Some(PHONE));
    assert_eq!(key.customer_email.as_ref().map(Pii::expose), Some(EMAIL));
    let debug = format!("{key:?}");
    assert!(!debug.contains(PHONE) && !debug.contains(EMAIL), "{debug}");

    let deleted = client
        .delete_billing_key(CUSTOMER_UID)
        .await
        .expect("delete");
    assert_eq!(deleted, key);
}

#[tokio::test]
async fn cancel_sends_amount_and_checksum_and_decodes_the_refund() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(CANCEL))
        .respond_with(ok(cancelled_payment()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let p = client
        .cancel(&CancelRequest {
            imp_uid: IMP_UID.into(),
            amount: Some(9900),
            checksum: Some(9900),
            reason: "고객 요청".into(),
            tax_free: None,
        })
        .await
        .expect("cancel");
    assert_eq!(p.status, PaymentStatus::Cancelled);
    assert_eq!(p.cancel_amount, 9900);
    assert_eq!(p.cancelled_at, 1_700_000_500);
    assert_eq!(p.cancel_history.len(), 1);
    assert_eq!(p.cancel_history[0].amount, 9900);
    assert_eq!(
        p.cancel_history[0].cancellation_id.as_deref(),
        Some("cncl_1")
    );
    assert_eq!(p.cancel_history[0].reason.as_deref(), Some("고객 요청"));

    let body: Value = requests_to(&server, CANCEL).await[0].body_json().unwrap();
    assert_eq!(
        body,
        json!({"imp_uid": IMP_UID, "amount": 9900, "checksum": 9900, "reason": "고객 요청"})
    );
}

#[tokio::test]
async fn cancel_of_an_unknown_payment_is_a_business_rejection() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(CANCEL))
        .respond_with(refused(200, 1, MSG_NOTHING_TO_CANCEL))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server)
        .cancel(&CancelRequest {
            imp_uid: "imps_000000000000".into(),
            amount: None,
            checksum: None,
            reason: "환불".into(),
            tax_free: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.label(), "rejected_business");
    let r = rejected(err);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.message, MSG_NOTHING_TO_CANCEL);
    let body: Value = requests_to(&server, CANCEL).await[0].body_json().unwrap();
    assert_eq!(
        body,
        json!({"imp_uid": "imps_000000000000", "reason": "환불"})
    );
}

// ------------------------------------------------------------------ logs

#[tokio::test]
async fn debug_output_never_shows_key_secret_token_phone_or_email() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(AGAIN))
        .respond_with(ok(paid_payment()))
        .mount(&server)
        .await;
    let config = config(&server.uri());
    let client = IamportClient::new(config.clone()).unwrap();
    let request = again_request();
    let outcome = client.charge_again(&request).await; // token now cached
    let AgainOutcome::Paid(payment) = outcome.clone() else {
        panic!("expected Paid, got {outcome:?}");
    };

    let rendered = [
        ("client", format!("{client:?}")),
        ("config", format!("{config:?}")),
        ("payment", format!("{payment:?}")),
        ("outcome", format!("{outcome:?}")),
        ("request", format!("{request:?}")),
    ];
    for (what, text) in &rendered {
        for needle in [IMP_KEY, IMP_SECRET, TOKEN, PHONE, EMAIL] {
            assert!(
                !text.contains(needle),
                "{what} Debug shows {needle:?}: {text}"
            );
        }
    }
    // Still useful: the payment's ids and the masked phone are there.
    assert!(rendered[2].1.contains(IMP_UID));
    assert!(rendered[2].1.contains("*******5678"));
    assert!(rendered[0].1.contains("127.0.0.1"));
}
