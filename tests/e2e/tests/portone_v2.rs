//! PortOne V2 end to end (`PAYMENT_API=v2`): the same functions and engine
//! against the simulator's V2 face and moto_server. The sign-up goes
//! through `PortOne.requestIssueBillingKey`'s window and the callback, the
//! monthly charge through `POST /payments/{paymentId}/billing-key`, V2
//! webhooks (Standard Webhooks signatures) through payment-webhook, and a
//! refund through `POST /payments/{paymentId}/cancel`. Assertions read the
//! simulator's ledger (what PortOne charged), not only our table.

use std::sync::Arc;
use std::time::Duration;

use iamport_sim::{Fault, FaultKind, SimHandle, WebhookSettings};
use lambda_runtime::{Context, LambdaEvent};
use shared::app::App;
use shared::billing::{AttemptState, SubscriptionId, SubscriptionStatus};
use shared::gateway::portone::webhook::sign;
use shared::ledger::Ledger;
use shared::management::{self, Actor, RefundInput};
use testkit::{
    SUCCESS_URL, http_event, http_request, local_gateway, open_v2_window, start_sim, test_app_v2,
};

const PREPARE: &str = r#"{"user_id":"user-v2","plan":{"amount":9900,"name":"월간 구독"},"buyer":{"name":"홍길동","email":"gildong@example.com"}}"#;

async fn call(app: &App, request: lambda_http::Request) -> (u16, String, String) {
    let response = billing_callback::handle(app, request)
        .await
        .expect("handler answers");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
    (response.status().as_u16(), location, body)
}

async fn prepare(app: &App) -> serde_json::Value {
    let (status, _, body) = call(app, http_request("prepare.json", None, Some(PREPARE))).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn callback(app: &App, query: &str) -> (u16, String) {
    let (status, location, _) = call(
        app,
        http_request("callback-success.json", Some(query), None),
    )
    .await;
    (status, location)
}

async fn webhook_gateway(app: Arc<App>) -> String {
    local_gateway("webhook-json.json", move |request| {
        let app = Arc::clone(&app);
        async move {
            payment_webhook::handle(&app, request)
                .await
                .expect("handler answers")
        }
    })
    .await
}

async fn run(app: &App, run_id: &str) {
    let payload = serde_json::json!({"scheduled_time": app.engine.now().to_rfc3339(), "execution_id": run_id});
    scheduled_charge::handle(app, LambdaEvent::new(payload, Context::default()))
        .await
        .expect("run succeeds");
}

/// A month on, for us and for the simulator (V2 webhook timestamps must
/// stay within 5 minutes of our clock).
fn next_month(app: &App, sim: &SimHandle) {
    app.engine.clock.advance(chrono::Duration::days(32));
    sim.advance_clock(32 * 86_400);
}

/// Paid V2 charges (not the window) in the simulator's ledger.
fn paid_charges(sim: &SimHandle) -> usize {
    sim.ledger()
        .iter()
        .filter(|p| p.status == "paid" && p.customer_uid_usage.as_deref() == Some("payment"))
        .count()
}

/// Signs up through the V2 window; returns the subscription id and the raw
/// callback query.
async fn sign_up(app: &App, sim: &SimHandle) -> (SubscriptionId, String) {
    let prepared = prepare(app).await;
    assert!(
        prepared.get("request_pay").is_none(),
        "no V1 parameters in V2 mode"
    );
    let params = &prepared["request_issue_billing_key"];
    assert_eq!(params["storeId"], sim.config().portone_store_id);
    assert_eq!(params["channelKey"], sim.config().portone_channel_key);
    assert_eq!(params["billingKeyMethod"], "CARD");
    let issue_id = params["issueId"].as_str().unwrap();
    assert!(issue_id.len() <= 40 && issue_id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(
        params["redirectUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("?merchant_uid={issue_id}"))
    );
    let query = open_v2_window(sim, params, &[]).await;
    assert!(query.contains("billingKey=billing-key-"), "{query}");
    let id = prepared["subscription_id"].as_str().unwrap();
    (SubscriptionId::parse(id).unwrap(), query)
}

#[tokio::test]
async fn v2_sign_up_monthly_charge_webhooks_and_refund() {
    let sim = start_sim().await;
    let app = Arc::new(test_app_v2(&sim, &[]).await);
    let hook = webhook_gateway(Arc::clone(&app)).await;
    sim.set_webhook(WebhookSettings {
        url: Some(format!("{hook}/webhooks/iamport")),
        // After the browser's redirect, as usually happens.
        delay: Duration::from_millis(300),
        ..Default::default()
    });

    // Sign-up: window → callback → active, first period charged once.
    let (sub_id, query) = sign_up(&app, &sim).await;
    let (status, location) = callback(&app, &query).await;
    assert_eq!(status, 302);
    assert_eq!(
        location,
        format!("{SUCCESS_URL}?subscription_id={sub_id}&first_charge=paid")
    );
    let sub = app
        .engine
        .ledger
        .get_subscription(&sub_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert!(
        sub.customer_uid.starts_with("billing-key-"),
        "the V2 key is what we charge"
    );
    assert_eq!(sub.key.pg_provider, "tosspayments");
    assert_eq!(sub.pg, "portone");
    assert_eq!(paid_charges(&sim), 1);
    // Reload the callback: same answer, no second key, no second charge.
    for _ in 0..2 {
        let (status, again) = callback(&app, &query).await;
        assert_eq!(status, 302);
        assert_eq!(
            again,
            format!("{SUCCESS_URL}?subscription_id={sub_id}&first_charge=paid"),
            "the same answer, the first charge as stored"
        );
    }
    assert_eq!(paid_charges(&sim), 1);
    assert_eq!(sim.customers().len(), 1);
    // BillingKey.Issued and Transaction.Paid arrive signed and change nothing more.
    let delivered = sim.wait_for_webhooks(2, Duration::from_secs(5)).await;
    assert!(
        delivered.iter().all(|d| d.http_status == Some(200)),
        "{delivered:?}"
    );

    // Next month: the answer is lost after PortOne charged; the lookup
    // settles it (and the webhook finds it settled).
    next_month(&app, &sim);
    sim.inject(Fault::new(FaultKind::HangAfter { secs: 3 }).on_path("/portone/payments/"));
    run(&app, "run-2").await;
    let sub = app
        .engine
        .ledger
        .get_subscription(&sub_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.period_index, 2, "period 1 recorded as paid");
    assert_eq!(paid_charges(&sim), 2);
    let period1 = sub.anchor.period_id(1);
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub_id, &period1, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Paid);
    let delivered = sim.wait_for_webhooks(3, Duration::from_secs(5)).await;
    assert!(
        delivered.iter().all(|d| d.http_status == Some(200)),
        "{delivered:?}"
    );

    // A second run the same day charges nothing.
    run(&app, "run-2-again").await;
    assert_eq!(paid_charges(&sim), 2);

    // Refund that charge through the management core: PortOne cancels it.
    let view = management::refund(
        &app.engine,
        &attempt.merchant_uid,
        RefundInput {
            amount: Some(4_900),
            reason: "고객 요청".into(),
        },
        "refund-v2-1",
        &Actor::named("support"),
    )
    .await
    .expect("refund");
    assert_eq!(view.refunded, 4_900);
    let refunded = sim.payments_for(&attempt.merchant_uid);
    assert_eq!(refunded.iter().map(|p| p.cancel_amount).sum::<i64>(), 4_900);
    let delivered = sim.wait_for_webhooks(4, Duration::from_secs(5)).await;
    assert!(
        delivered.iter().all(|d| d.http_status == Some(200)),
        "{delivered:?}"
    );
    let after = app
        .engine
        .ledger
        .get_attempt(&sub_id, &period1, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.refunded, 4_900,
        "the cancel webhook recorded nothing twice"
    );

    // A decline next month: 502 PG_PROVIDER, confirmed FAILED, dunning.
    next_month(&app, &sim);
    sim.inject(Fault::new(FaultKind::Decline {
        reason: "한도초과".into(),
    }));
    run(&app, "run-3").await;
    let sub = app
        .engine
        .ledger
        .get_subscription(&sub_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.status, SubscriptionStatus::PastDue, "declined: dunning");
    assert_eq!(paid_charges(&sim), 2);
}

#[tokio::test]
async fn v2_window_failures_and_foreign_keys_activate_nothing() {
    let sim = start_sim().await;
    let app = test_app_v2(&sim, &[]).await;

    // The buyer closes the window: code and message, no key.
    let prepared = prepare(&app).await;
    let params = &prepared["request_issue_billing_key"];
    let query = open_v2_window(&sim, params, &[("scenario", "user_cancel")]).await;
    assert!(query.contains("code=FAILURE_TYPE_PG") && !query.contains("billingKey"));
    let (_, location) = callback(&app, &query).await;
    assert!(location.contains("reason=payment_failed"), "{location}");

    // A key issued for someone else, pasted into our callback: refused,
    // and not deleted (it is not ours).
    let foreign = sim.add_v2_key(Some("rSOMEONEELSE"), Some("cu_other"));
    let issue_id = params["issueId"].as_str().unwrap();
    let (_, location) = callback(
        &app,
        &format!("merchant_uid={issue_id}&transactionType=ISSUE_BILLING_KEY&billingKey={foreign}"),
    )
    .await;
    assert!(location.contains("reason=payment_mismatch"), "{location}");
    assert!(!sim.v2_key_deleted(&foreign));
    // A key that does not exist.
    let (_, location) = callback(
        &app,
        &format!("merchant_uid={issue_id}&billingKey=billing-key-nosuch"),
    )
    .await;
    assert!(location.contains("reason=key_not_issued"), "{location}");
    // A V1 redirect in V2 mode is not accepted.
    let (_, location) = callback(&app, &format!("merchant_uid={issue_id}&imp_uid=imp_123")).await;
    assert!(location.contains("reason=bad_request"), "{location}");
    let reg = app
        .engine
        .ledger
        .get_registration(issue_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reg.status, shared::billing::RegistrationStatus::Pending);
    assert_eq!(paid_charges(&sim), 0);

    // The real window afterwards still works.
    let query = open_v2_window(&sim, params, &[]).await;
    let (_, location) = callback(&app, &query).await;
    assert!(location.starts_with(SUCCESS_URL), "{location}");
}

async fn post_webhook(app: &App, headers: &[(&'static str, String)], body: &str) -> (u16, String) {
    let mut request = http_event(
        "webhook-json.json",
        "POST",
        "/webhooks/iamport",
        Some("application/json"),
        body.as_bytes(),
        "127.0.0.1",
    );
    for (k, v) in headers {
        request
            .headers_mut()
            .insert(*k, lambda_http::http::HeaderValue::from_str(v).unwrap());
    }
    let response = payment_webhook::handle(app, request).await.unwrap();
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body().as_ref()).into_owned(),
    )
}

#[tokio::test]
async fn v2_webhooks_need_a_valid_fresh_signature_and_unknown_types_are_ignored() {
    use base64::Engine as _;
    let sim = start_sim().await;
    let app = test_app_v2(&sim, &[]).await;
    let secret = sim.config().portone_webhook_secret.clone();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let now = app.engine.now().timestamp();
    let body = r#"{"type":"Transaction.Paid","timestamp":"2026-11-28T00:00:00Z","data":{"storeId":"store-iamport-sim","paymentId":"nosuchpayment1","transactionId":"tx1"}}"#;
    let headers = |id: &str, ts: i64, sig: String| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig),
        ]
    };
    // Valid: acknowledged (an id that is not ours changes nothing).
    let (status, text) = post_webhook(
        &app,
        &headers("msg_1", now, sign(&key, "msg_1", now, body.as_bytes())),
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Signed with another secret, a changed body, an old timestamp, no headers: 401.
    let (status, _) = post_webhook(
        &app,
        &headers(
            "msg_1",
            now,
            sign(b"other secret", "msg_1", now, body.as_bytes()),
        ),
        body,
    )
    .await;
    assert_eq!(status, 401);
    let tampered = body.replace("tx1", "tx2");
    let (status, _) = post_webhook(
        &app,
        &headers("msg_1", now, sign(&key, "msg_1", now, body.as_bytes())),
        &tampered,
    )
    .await;
    assert_eq!(status, 401);
    let old = now - 301;
    let (status, _) = post_webhook(
        &app,
        &headers("msg_1", old, sign(&key, "msg_1", old, body.as_bytes())),
        body,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post_webhook(&app, &[], body).await;
    assert_eq!(status, 401);
    // Rotation: a second signature entry with the right secret passes.
    let both = format!(
        "{} {}",
        sign(b"retired secret", "msg_2", now, body.as_bytes()),
        sign(&key, "msg_2", now, body.as_bytes())
    );
    let (status, _) = post_webhook(&app, &headers("msg_2", now, both), body).await;
    assert_eq!(status, 200);
    // Unknown types are acknowledged and ignored whole.
    let novel =
        r#"{"type":"Something.New","timestamp":"2026-11-28T00:00:00Z","data":{"whatever":1}}"#;
    let (status, text) = post_webhook(
        &app,
        &headers("msg_3", now, sign(&key, "msg_3", now, novel.as_bytes())),
        novel,
    )
    .await;
    assert_eq!((status, text.contains("ignored")), (200, true), "{text}");
}
