//! The billing-callback handler end to end: API Gateway v2 events from
//! `infra/events/` and the i'mport simulator, including its payment window.
//! The sign-up runs on a real DynamoDB API (moto_server), to prove the
//! adapter; the other cases on the in-memory ledger (the second
//! implementation of the same port, held to it by the contract suite).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use billing_callback::handle;
use iamport_sim::{Fault, FaultKind};
use shared::app::App;
use shared::billing::RegistrationStatus;
use shared::billing::{SubscriptionId, SubscriptionStatus};
use shared::ledger::Ledger;
use testkit::{
    FAILURE_URL, SUCCESS_URL, http_request, memory_app, open_window, start_sim, test_app,
};

struct Redirect {
    status: u16,
    location: String,
}

async fn call<L: Ledger>(app: &App<L>, request: lambda_http::Request) -> (u16, String, String) {
    let response = handle(app, request).await.expect("handler answers");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
    (status, location, body)
}

async fn prepare<L: Ledger>(app: &App<L>, body: &str) -> serde_json::Value {
    let (status, _, body) = call(app, http_request("prepare.json", None, Some(body))).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn callback<L: Ledger>(app: &App<L>, raw_query: &str) -> Redirect {
    let (status, location, _) = call(
        app,
        http_request("callback-success.json", Some(raw_query), None),
    )
    .await;
    Redirect { status, location }
}

const PREPARE: &str = r#"{"user_id":"user-42","plan":{"amount":9900,"name":"월간 구독"},"buyer":{"name":"홍길동","email":"gildong@example.com","tel":"010-1234-5678"}}"#;

/// On moto_server: the DynamoDB adapter under the handler (`--skip
/// on_dynamodb::` leaves these out of the fast loop).
mod on_dynamodb {
    use super::*;

    #[tokio::test]
    async fn sign_up_through_the_payment_window_activates_and_charges_once() {
        let sim = start_sim().await;
        let app = test_app(&sim.base_url(), &[]).await;
        let prepared = prepare(&app, PREPARE).await;
        let rp = &prepared["request_pay"];
        assert_eq!(rp["pg"], "chai");
        assert_eq!(rp["pay_method"], "trans");
        assert_eq!(rp["amount"], 0);
        assert_eq!(
            rp["m_redirect_url"],
            "http://127.0.0.1:9000/billing/callback"
        );
        let customer_uid = rp["customer_uid"].as_str().unwrap().to_owned();
        assert!(customer_uid.starts_with("cu_") && customer_uid.len() <= 80);

        let query = open_window(&sim.base_url(), rp, &[]).await;
        assert!(query.contains("imp_success=true"), "{query}");
        let first = callback(&app, &query).await;
        assert_eq!(first.status, 302);
        let sub_id = prepared["subscription_id"].as_str().unwrap();
        assert_eq!(
            first.location,
            format!("{SUCCESS_URL}?subscription_id={sub_id}&first_charge=paid")
        );

        // Refresh, back button, second tab: the same answer (the first
        // charge as stored), nothing new.
        for _ in 0..3 {
            let again = callback(&app, &query).await;
            assert_eq!(again.status, 302);
            assert_eq!(
                again.location,
                format!("{SUCCESS_URL}?subscription_id={sub_id}&first_charge=paid")
            );
        }
        let ledger = sim.ledger();
        let charges: Vec<_> = ledger
            .iter()
            .filter(|p| p.customer_uid_usage.as_deref() == Some("payment"))
            .collect();
        assert_eq!(charges.len(), 1, "exactly one charge: {ledger:?}");
        assert_eq!(charges[0].amount, 9900);
        assert_eq!(charges[0].status, "paid");

        let sub = app
            .engine
            .ledger
            .get_subscription(&SubscriptionId::parse(sub_id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sub.status, SubscriptionStatus::Active);
        assert_eq!(sub.customer_uid, customer_uid);
        assert_eq!(sub.period_index, 1, "the sign-up period is paid");
        assert_eq!(sub.key.pg_provider, "chai");
        assert_eq!(sub.next_charge_at, sub.anchor.period_start(1));
        let attempts = app.engine.ledger.list_attempts(&sub.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].imp_uid.as_deref(),
            Some(charges[0].imp_uid.as_str())
        );
    }
}

#[tokio::test]
async fn new_sdk_redirect_without_success_flag_is_verified_the_same_way() {
    let sim = start_sim().await;
    let app = memory_app(
        &sim.base_url(),
        &[
            ("CHARGE_ON_SIGNUP", "false"),
            ("IAMPORT_PG", "chai.pk_test_1"),
        ],
    );
    let prepared = prepare(&app, r#"{"user_id":"u-7"}"#).await;
    assert_eq!(prepared["request_pay"]["pg"], "chai.pk_test_1");
    assert_eq!(prepared["request_pay"]["name"], "월간 구독", "default plan");
    let query = open_window(&sim.base_url(), &prepared["request_pay"], &[("sdk", "new")]).await;
    assert!(!query.contains("success"), "{query}");
    let r = callback(&app, &query).await;
    let sub_id = prepared["subscription_id"].as_str().unwrap();
    assert_eq!(
        r.location,
        format!("{SUCCESS_URL}?subscription_id={sub_id}")
    );
    assert!(
        sim.ledger()
            .iter()
            .all(|p| p.customer_uid_usage.as_deref() != Some("payment")),
        "no charge when CHARGE_ON_SIGNUP=false"
    );
    let sub = app
        .engine
        .ledger
        .get_subscription(&SubscriptionId::parse(sub_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.period_index, 0);
    assert_eq!(sub.pg, "chai.pk_test_1");
}

async fn assert_nothing_stored<L: Ledger>(app: &App<L>, prepared: &serde_json::Value) {
    let sub_id = SubscriptionId::parse(prepared["subscription_id"].as_str().unwrap()).unwrap();
    assert!(
        app.engine
            .ledger
            .get_subscription(&sub_id)
            .await
            .unwrap()
            .is_none(),
        "no subscription may exist"
    );
    let reg = app
        .engine
        .ledger
        .get_registration(prepared["request_pay"]["merchant_uid"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reg.status, RegistrationStatus::Pending);
}

#[tokio::test]
async fn user_cancel_and_pg_error_redirect_to_failure_and_store_nothing() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[]);
    for scenario in ["user_cancel", "pg_error"] {
        let prepared = prepare(&app, PREPARE).await;
        let query = open_window(
            &sim.base_url(),
            &prepared["request_pay"],
            &[("scenario", scenario)],
        )
        .await;
        assert!(query.contains("error_code="), "{query}");
        let r = callback(&app, &query).await;
        assert_eq!(
            r.location,
            format!("{FAILURE_URL}?reason=payment_failed"),
            "{scenario}"
        );
        assert_nothing_stored(&app, &prepared).await;
    }
}

#[tokio::test]
async fn claimed_success_on_a_failed_payment_is_not_believed() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[]);
    let prepared = prepare(&app, PREPARE).await;
    let query = open_window(
        &sim.base_url(),
        &prepared["request_pay"],
        &[("scenario", "user_cancel")],
    )
    .await;
    // The browser edits the query to claim success.
    let forged = query.replace("imp_success=false", "imp_success=true");
    let forged: String = forged
        .split('&')
        .filter(|kv| !kv.starts_with("error_"))
        .collect::<Vec<_>>()
        .join("&");
    let r = callback(&app, &forged).await;
    assert!(r.location.starts_with(FAILURE_URL), "{}", r.location);
    assert_nothing_stored(&app, &prepared).await;
}

#[tokio::test]
async fn another_customers_imp_uid_or_an_unknown_merchant_uid_grants_nothing() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[("CHARGE_ON_SIGNUP", "false")]);
    let alice = prepare(&app, r#"{"user_id":"alice"}"#).await;
    let mallory = prepare(&app, r#"{"user_id":"mallory"}"#).await;
    let alice_query = open_window(&sim.base_url(), &alice["request_pay"], &[]).await;
    let alice_imp = url::form_urlencoded::parse(alice_query.as_bytes())
        .find(|(k, _)| k == "imp_uid")
        .unwrap()
        .1
        .into_owned();

    // Mallory presents Alice's successful imp_uid with her own merchant_uid.
    let m_uid = mallory["request_pay"]["merchant_uid"].as_str().unwrap();
    let r = callback(
        &app,
        &format!("imp_uid={alice_imp}&merchant_uid={m_uid}&imp_success=true"),
    )
    .await;
    assert_eq!(r.location, format!("{FAILURE_URL}?reason=payment_mismatch"));
    assert_nothing_stored(&app, &mallory).await;

    // A merchant_uid we never prepared.
    let r = callback(
        &app,
        &format!("imp_uid={alice_imp}&merchant_uid=rzzzzzzzzzzzz&imp_success=true"),
    )
    .await;
    assert_eq!(
        r.location,
        format!("{FAILURE_URL}?reason=unknown_registration")
    );
    let r = callback(
        &app,
        &format!("imp_uid={alice_imp}&merchant_uid=order_123&imp_success=true"),
    )
    .await;
    assert_eq!(
        r.location,
        format!("{FAILURE_URL}?reason=unknown_registration")
    );
    // An imp_uid i'mport does not know.
    let a_uid = alice["request_pay"]["merchant_uid"].as_str().unwrap();
    let r = callback(
        &app,
        &format!("imp_uid=imp_999999999999&merchant_uid={a_uid}"),
    )
    .await;
    assert_eq!(r.location, format!("{FAILURE_URL}?reason=payment_mismatch"));
    assert_nothing_stored(&app, &alice).await;

    // Alice's real redirect still works afterwards.
    let r = callback(&app, &alice_query).await;
    assert!(r.location.starts_with(SUCCESS_URL), "{}", r.location);
}

#[tokio::test]
async fn garbage_and_overlong_parameters_are_refused_without_lookups() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[]);
    let before = sim.request_counts();
    let long = "r".repeat(200);
    for q in [
        "imp_uid=imp_1".to_owned(),
        format!("merchant_uid={long}&imp_uid=imp_1"),
        "merchant_uid=rabc%00def&imp_uid=imp_1".to_owned(),
        "merchant_uid=rabcdefghijkl&imp_uid=..%2F..%2Fusers%2FgetToken".to_owned(),
    ] {
        let r = callback(&app, &q).await;
        assert_eq!(
            r.location,
            format!("{FAILURE_URL}?reason=bad_request"),
            "{q}"
        );
    }
    // No parameters at all: not a browser coming back from i'mport.
    let (status, _, body) = call(&app, http_request("callback-success.json", Some(""), None)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(sim.request_counts(), before, "no request may reach i'mport");
}

#[tokio::test]
async fn iamport_down_or_slow_gives_a_retryable_failure_and_no_state() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[]);
    let prepared = prepare(&app, PREPARE).await;
    let query = open_window(&sim.base_url(), &prepared["request_pay"], &[]).await;
    sim.inject(Fault::new(FaultKind::Http500));
    let r = callback(&app, &query).await;
    assert_eq!(
        r.location,
        format!("{FAILURE_URL}?reason=temporarily_unavailable")
    );
    assert_nothing_stored(&app, &prepared).await;
    sim.inject(Fault::new(FaultKind::HangBefore { secs: 3 }));
    let r = callback(&app, &query).await;
    assert_eq!(
        r.location,
        format!("{FAILURE_URL}?reason=temporarily_unavailable")
    );
    assert_nothing_stored(&app, &prepared).await;
    // Once i'mport answers again, the same redirect completes.
    let r = callback(&app, &query).await;
    assert!(
        r.location
            .starts_with(&format!("{SUCCESS_URL}?subscription_id=")),
        "{}",
        r.location
    );
}

#[tokio::test]
async fn prepare_checks_its_key_and_its_input() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[("PREPARE_API_KEY", "s3cret-key")]);
    let (status, _, _) = call(&app, http_request("prepare.json", None, Some(PREPARE))).await;
    assert_eq!(status, 401, "no key");
    let mut event = testkit::event_json("prepare.json");
    event["headers"]["x-api-key"] = serde_json::json!("s3cret-key");
    event["body"] = serde_json::json!(PREPARE);
    let (status, _, body) = call(
        &app,
        lambda_http::request::from_str(&event.to_string()).unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for bad in [
        "not json",
        r#"{"user_id":""}"#,
        r#"{"user_id":"u","plan":{"amount":99.5,"name":"x"}}"#,
        r#"{"user_id":"u","plan":{"amount":-1,"name":"x"}}"#,
        r#"{"user_id":"u","plan":{"amount":9900,"name":"이 이름은 마흔 글자를 훨씬 넘어서 아이엠포트가 받아주지 않는 아주 긴 주문 이름입니다"}}"#,
        r#"{"user_id":"u","buyer":{"email":"not-an-email"}}"#,
        r#"{"user_id":"u","customer_uid":"chosen-by-browser"}"#,
    ] {
        event["body"] = serde_json::json!(bad);
        let (status, _, body) = call(
            &app,
            lambda_http::request::from_str(&event.to_string()).unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
}

/// Defect (g): a window opened with the plan amount instead of 0 (i'mport
/// then issues the key *and* takes that payment, a common pattern in its
/// samples) was activated and the first period charged again: the customer
/// paid 9,900 twice. That issuance payment is now the first period's.
#[tokio::test]
async fn an_issuance_that_took_the_plan_amount_pays_the_first_period_and_is_not_charged_again() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[]);
    let prepared = prepare(&app, PREPARE).await;
    let mut rp = prepared["request_pay"].clone();
    rp["amount"] = serde_json::json!(9900);
    let query = open_window(&sim.base_url(), &rp, &[]).await;
    let sub_id = prepared["subscription_id"].as_str().unwrap();
    let first = callback(&app, &query).await;
    assert_eq!(
        first.location,
        format!("{SUCCESS_URL}?subscription_id={sub_id}&first_charge=paid")
    );
    let paid: Vec<_> = sim
        .ledger()
        .into_iter()
        .filter(|p| p.status == "paid" && p.amount > 0)
        .collect();
    assert_eq!(paid.len(), 1, "the customer paid once: {paid:?}");
    let sub = app
        .engine
        .ledger
        .get_subscription(&SubscriptionId::parse(sub_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(sub.period_index, 1);
    assert_eq!(sub.paid_through, Some(sub.anchor.period_id(0)));
    assert_eq!(sub.next_charge_at, sub.anchor.period_start(1));
    let attempts = app.engine.ledger.list_attempts(&sub.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, shared::billing::AttemptState::Paid);
    assert_eq!(
        attempts[0].imp_uid.as_deref(),
        Some(paid[0].imp_uid.as_str())
    );
    assert_eq!(attempts[0].amount, 9900);
}

/// Defect (g): any other issuance amount is never followed by a charge; the
/// subscription waits for a person (refund or accept).
#[tokio::test]
async fn an_issuance_of_another_amount_waits_for_a_person_and_charges_nothing() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[]);
    let prepared = prepare(&app, PREPARE).await;
    let mut rp = prepared["request_pay"].clone();
    rp["amount"] = serde_json::json!(100);
    let query = open_window(&sim.base_url(), &rp, &[]).await;
    let first = callback(&app, &query).await;
    assert_eq!(first.location, format!("{FAILURE_URL}?reason=needs_review"));
    // The same redirect again gives the same answer and still charges nothing.
    let again = callback(&app, &query).await;
    assert_eq!(again.status, 302);
    let charges = sim
        .ledger()
        .into_iter()
        .filter(|p| p.customer_uid_usage.as_deref() == Some("payment"))
        .count();
    assert_eq!(charges, 0);
    let sub_id = SubscriptionId::parse(prepared["subscription_id"].as_str().unwrap()).unwrap();
    let sub = app
        .engine
        .ledger
        .get_subscription(&sub_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.status, SubscriptionStatus::NeedsReview);
    let attempts = app.engine.ledger.list_attempts(&sub.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].state,
        shared::billing::AttemptState::NeedsReview
    );
    assert_eq!(attempts[0].amount, 100);
    assert!(
        attempts[0]
            .fail_reason
            .as_deref()
            .unwrap_or_default()
            .contains("100")
    );
}

#[tokio::test]
async fn one_live_subscription_per_user_and_plan_unless_configured_otherwise() {
    let sim = start_sim().await;
    let app = memory_app(&sim.base_url(), &[]);
    // A second prepare while the first is pending returns the pending one.
    let first = prepare(&app, PREPARE).await;
    let again = prepare(&app, PREPARE).await;
    assert_eq!(first, again);
    // Two sign-ups racing past that check (two tabs, one instant): both
    // registrations exist; the window of each is finished.
    let twin = first["request_pay"].clone();
    let raced = {
        use shared::billing::{MerchantUid, Registration};
        let reg = app
            .engine
            .ledger
            .get_registration(twin["merchant_uid"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        let id = SubscriptionId::generate();
        let other = Registration {
            merchant_uid: MerchantUid::issuance(&id),
            subscription_id: id,
            customer_uid: "cu_racedtab0000000000000000000000".into(),
            ..reg
        };
        app.engine.ledger.put_registration(&other).await.unwrap();
        let mut rp = twin.clone();
        rp["merchant_uid"] = serde_json::json!(other.merchant_uid);
        rp["customer_uid"] = serde_json::json!(other.customer_uid);
        rp
    };
    let won = callback(&app, &open_window(&sim.base_url(), &twin, &[]).await).await;
    assert!(won.location.starts_with(SUCCESS_URL), "{}", won.location);
    let lost = callback(&app, &open_window(&sim.base_url(), &raced, &[]).await).await;
    assert_eq!(
        lost.location,
        format!("{FAILURE_URL}?reason=already_subscribed")
    );
    assert!(
        sim.customer(raced["customer_uid"].as_str().unwrap())
            .is_none(),
        "the refused sign-up's key is deleted at i'mport"
    );
    let charged: Vec<_> = sim
        .ledger()
        .into_iter()
        .filter(|p| p.customer_uid_usage.as_deref() == Some("payment"))
        .collect();
    assert_eq!(charged.len(), 1, "one first charge");
    // A third prepare is refused with the subscription's id.
    let (status, _, body) = call(&app, http_request("prepare.json", None, Some(PREPARE))).await;
    assert_eq!(status, 409, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "already_subscribed");

    // Allowed by configuration: two subscriptions.
    let app = memory_app(&sim.base_url(), &[("ALLOW_MULTIPLE_SUBSCRIPTIONS", "true")]);
    for _ in 0..2 {
        let p = prepare(&app, PREPARE).await;
        let done = callback(
            &app,
            &open_window(&sim.base_url(), &p["request_pay"], &[]).await,
        )
        .await;
        assert!(done.location.starts_with(SUCCESS_URL), "{}", done.location);
    }
    let items = app.engine.ledger.user_items("user-42").await.unwrap();
    assert_eq!(items.subscriptions.len(), 2);
}
