//! payment-webhook end to end: the simulator's webhook sender posts over
//! real HTTP to a local gateway that hands API Gateway v2 events to the
//! handler. The tests run on the in-memory ledger (the second
//! implementation of the ledger port, held to the DynamoDB adapter by the
//! contract suite) except those in `on_dynamodb`, which keep moto_server
//! under the handler to prove the adapter. The tests of settling and
//! refusing run in both modes (`PAYMENT_API=v2`: signed V2 notices); the
//! ones about V1's body formats and source allow-list run on V1 only (V2's
//! signatures have their own tests in `tests/e2e/tests/portone_v2.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use iamport_sim::{Fault, FaultKind, SimHandle, WebhookFormat, WebhookSettings};
use lambda_runtime::{Context, LambdaEvent};
use payment_webhook::handle;
use shared::app::App;
use shared::billing::BILLING_TZ;
use shared::billing::{AttemptState, Subscription};
use shared::ledger::Ledger;
use testkit::{
    MemoryApp, app_for, charge_directly, http_event, http_request, local_gateway, memory_app,
    memory_app_for, seed_subscription, start_sim, v2_mode,
};

async fn gateway<L: Ledger + 'static>(app: Arc<App<L>>) -> String {
    local_gateway("webhook-json.json", move |request| {
        let app = Arc::clone(&app);
        async move { handle(&app, request).await.expect("handler answers") }
    })
    .await
}

async fn send<L: Ledger>(
    app: &App<L>,
    content_type: Option<&str>,
    body: &[u8],
    ip: &str,
) -> (u16, String) {
    let request = http_event(
        "webhook-json.json",
        "POST",
        "/webhooks/iamport",
        content_type,
        body,
        ip,
    );
    let response = handle(app, request).await.unwrap();
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body().as_ref()).into_owned(),
    )
}

fn t0() -> chrono::DateTime<Utc> {
    BILLING_TZ
        .with_ymd_and_hms(2026, 12, 1, 10, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

async fn charge_run<L: Ledger>(app: &App<L>) {
    testkit::clock_to(app, t0());
    let payload = serde_json::json!({"scheduled_time": t0().to_rfc3339(), "execution_id": "run-1"});
    scheduled_charge::handle(app, LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap();
}

/// An app of the API in use (`PAYMENT_API`) with one subscription due at `t0`.
async fn seeded(sim: &SimHandle, extra: &[(&str, &str)]) -> (Arc<MemoryApp>, Subscription) {
    let app = Arc::new(memory_app_for(sim, extra));
    let sub = seed_subscription(&app, sim, t0() - chrono::Duration::hours(1)).await;
    (app, sub)
}

/// The same on i'mport V1 whatever the mode (tests of V1's body formats).
async fn seeded_v1(sim: &SimHandle, extra: &[(&str, &str)]) -> (Arc<MemoryApp>, Subscription) {
    let app = Arc::new(memory_app(&sim.base_url(), extra));
    let sub = seed_subscription(&app, sim, t0() - chrono::Duration::hours(1)).await;
    (app, sub)
}

/// A notice that payment `imp_uid` of `merchant_uid` is `status`, as the
/// API in use sends it: V1's unsigned JSON, or V2's `Transaction.*` signed
/// with the simulator's webhook secret.
async fn notify<L: Ledger>(
    app: &App<L>,
    sim: &SimHandle,
    imp_uid: &str,
    merchant_uid: &str,
    status: &str,
) -> (u16, String) {
    if !v2_mode() {
        let body = format!(
            r#"{{"imp_uid":"{imp_uid}","merchant_uid":"{merchant_uid}","status":"{status}"}}"#
        );
        return send(app, Some("application/json"), body.as_bytes(), "127.0.0.1").await;
    }
    let kind = match status {
        "paid" => "Transaction.Paid",
        "failed" => "Transaction.Failed",
        _ => "Transaction.Cancelled",
    };
    let body = serde_json::json!({
        "type": kind,
        "timestamp": app.engine.now().to_rfc3339(),
        "data": {
            "storeId": sim.config().portone_store_id,
            "paymentId": merchant_uid,
            "transactionId": imp_uid,
        },
    })
    .to_string();
    let mut request = http_event(
        "webhook-json.json",
        "POST",
        "/webhooks/iamport",
        Some("application/json"),
        body.as_bytes(),
        "127.0.0.1",
    );
    for (name, value) in testkit::v2_signature_headers(sim, app.engine.now().timestamp(), &body) {
        request.headers_mut().insert(
            name,
            lambda_http::http::HeaderValue::from_str(&value).unwrap(),
        );
    }
    let response = handle(app, request).await.unwrap();
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body().as_ref()).into_owned(),
    )
}

#[tokio::test]
async fn a_webhook_arriving_before_the_charge_result_settles_the_attempt_once() {
    let sim = start_sim().await;
    let (app, sub) = seeded(&sim, &[]).await;
    webhook_before_the_charge_result(&sim, app, sub).await;
}

/// On moto_server: the DynamoDB adapter under the handler (`--skip
/// on_dynamodb::` leaves these out of the fast loop).
mod on_dynamodb {
    use super::*;

    #[tokio::test]
    async fn a_webhook_arriving_before_the_charge_result_settles_the_attempt_once() {
        let sim = start_sim().await;
        let app = Arc::new(app_for(&sim, &[]).await);
        let sub = seed_subscription(&app, &sim, t0() - chrono::Duration::hours(1)).await;
        webhook_before_the_charge_result(&sim, app, sub).await;
    }
}

async fn webhook_before_the_charge_result<L: Ledger + 'static>(
    sim: &SimHandle,
    app: Arc<App<L>>,
    sub: Subscription,
) {
    let url = gateway(Arc::clone(&app)).await;
    sim.set_webhook(WebhookSettings {
        url: Some(format!("{url}/webhooks/iamport")),
        format: WebhookFormat::Json,
        duplicates: 2,
        delay: Duration::ZERO,
    });
    // i'mport charges, sends the webhook at once, and the API answer never comes back in time.
    sim.inject(Fault::new(FaultKind::HangAfter { secs: 3 }).on_charge());
    sim.inject(Fault::new(FaultKind::Http500).on_lookup());
    charge_run(&app).await;
    let deliveries = sim.wait_for_webhooks(3, Duration::from_secs(5)).await;
    assert_eq!(deliveries.len(), 3);
    // In V2 the webhook's lookup and the run's are the same request
    // (`GET /payments/{paymentId}`): the failing one may be the webhook's,
    // which then answers 503 so that PortOne sends it again.
    let ok = |d: &iamport_sim::WebhookDelivery| {
        d.http_status == Some(200) || (v2_mode() && d.http_status == Some(503))
    };
    assert!(deliveries.iter().all(ok), "{deliveries:?}");
    assert_eq!(deliveries.last().and_then(|d| d.http_status), Some(200));

    let period = sub.current_period();
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &period, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Paid, "settled by the webhook");
    assert_eq!(
        attempt.imp_uid.as_deref(),
        Some(deliveries[0].imp_uid.as_str())
    );
    let now = app
        .engine
        .ledger
        .get_subscription(&sub.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.period_index, 1);
    assert_eq!(
        now.version,
        sub.version + 2,
        "the claim and the settlement; duplicates changed nothing more"
    );
    assert_eq!(
        sim.paid_count(&app.engine.settings.uid_key.charge_uid(&sub.id, &period, 1)),
        1
    );
}

#[tokio::test]
async fn form_encoded_webhooks_and_console_refunds_are_recorded() {
    let sim = start_sim().await;
    let (app, sub) = seeded_v1(&sim, &[]).await;
    let url = gateway(Arc::clone(&app)).await;
    sim.set_webhook(WebhookSettings {
        url: Some(format!("{url}/webhooks/iamport")),
        format: WebhookFormat::Form,
        duplicates: 0,
        delay: Duration::ZERO,
    });
    charge_run(&app).await;
    let paid = sim.wait_for_webhooks(1, Duration::from_secs(5)).await;
    assert_eq!(paid[0].http_status, Some(200));
    assert!(paid[0].body.starts_with("imp_uid="), "{}", paid[0].body);

    // A partial refund made in the i'mport console, then the rest.
    let imp_uid = paid[0].imp_uid.clone();
    for (amount, expected) in [(Some(3000), 3000), (None, 9900)] {
        use shared::gateway::PaymentGateway;
        app.engine
            .gateway
            .refund(&shared::gateway::RefundRequest {
                imp_uid: imp_uid.clone(),
                merchant_uid: paid[0].merchant_uid.clone(),
                amount,
                checksum: None,
                reason: "console refund".into(),
                tax_free: None,
            })
            .await
            .unwrap();
        let all = sim
            .wait_for_webhooks(if expected == 3000 { 2 } else { 3 }, Duration::from_secs(5))
            .await;
        assert_eq!(all.last().unwrap().http_status, Some(200));
        let attempt = app
            .engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempt.refunded, expected);
        assert_eq!(attempt.state, AttemptState::Paid);
    }
}

#[tokio::test]
async fn forged_unknown_and_mismatched_notifications_are_acknowledged_without_state() {
    let sim = start_sim().await;
    let (app, sub) = seeded_v1(&sim, &[]).await;
    charge_run(&app).await;
    let period = sub.current_period();
    let muid = app.engine.settings.uid_key.charge_uid(&sub.id, &period, 1);
    let real = sim
        .ledger()
        .into_iter()
        .find(|p| p.merchant_uid == muid)
        .unwrap();
    let before = app
        .engine
        .ledger
        .get_subscription(&sub.id)
        .await
        .unwrap()
        .unwrap();
    for body in [
        format!(r#"{{"imp_uid":"imps_999999999999","merchant_uid":"{muid}","status":"paid"}}"#),
        format!(
            r#"{{"imp_uid":"{}","merchant_uid":"order_from_elsewhere","status":"paid"}}"#,
            real.imp_uid
        ),
        format!(
            r#"{{"imp_uid":"{}","merchant_uid":"s{}202701a1","status":"paid"}}"#,
            real.imp_uid, sub.id
        ),
    ] {
        let lookups_before = sim.request_count("/payments");
        let (status, text) =
            send(&app, Some("application/json"), body.as_bytes(), "127.0.0.1").await;
        assert_eq!(status, 200, "{body}: {text}");
        assert!(text.contains("ignored"), "{text}");
        // Defect X1: an unsigned notice for a merchant_uid we hold no
        // attempt under costs no i'mport lookup (the ledger is read first).
        if !body.contains(&muid) {
            assert_eq!(
                sim.request_count("/payments"),
                lookups_before,
                "{body}: looked up at i'mport"
            );
        }
    }
    assert_eq!(
        app.engine
            .ledger
            .get_subscription(&sub.id)
            .await
            .unwrap()
            .unwrap(),
        before
    );
    assert!(
        app.engine
            .ledger
            .get_attempt(
                &sub.id,
                &shared::billing::PeriodId::parse("202701").unwrap(),
                1
            )
            .await
            .unwrap()
            .is_none()
    );
    // A genuine duplicate of the settled charge: acknowledged, nothing more.
    let body = format!(
        r#"{{"imp_uid":"{}","merchant_uid":"{muid}","status":"paid"}}"#,
        real.imp_uid
    );
    let (status, text) = send(&app, Some("application/json"), body.as_bytes(), "127.0.0.1").await;
    assert_eq!(
        (status, text.contains("already recorded")),
        (200, true),
        "{text}"
    );
}

#[tokio::test]
async fn bad_bodies_get_4xx_and_touch_nothing() {
    let sim = start_sim().await;
    let (app, _) = seeded_v1(&sim, &[]).await;
    let before = sim.request_counts();
    let big = vec![b'a'; 9000];
    let cases: Vec<(Option<&str>, &[u8], u16)> = vec![
        (Some("application/json"), b"", 400),
        (Some("text/plain"), b"imp_uid=x", 415),
        (None, b"{}", 415),
        (Some("application/json"), &big, 413),
        (Some("application/json"), &[0xc3, 0x28, 0xa0], 400),
        (Some("application/json"), br#"{"imp_uid":"imps_1"}"#, 400),
        (
            Some("application/x-www-form-urlencoded"),
            b"merchant_uid=x&status=paid",
            400,
        ),
        (
            Some("application/json"),
            br#"{"imp_uid":"../../users","merchant_uid":"m","status":"paid"}"#,
            400,
        ),
    ];
    for (ct, body, expected) in cases {
        let (status, text) = send(&app, ct, body, "127.0.0.1").await;
        assert_eq!(status, expected, "{ct:?} {text}");
    }
    assert_eq!(sim.request_counts(), before, "nothing reached i'mport");
    // Wrong method.
    let (status, _) = {
        let r = handle(
            &app,
            http_event(
                "webhook-json.json",
                "GET",
                "/webhooks/iamport",
                None,
                b"",
                "127.0.0.1",
            ),
        )
        .await
        .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 405);
}

#[tokio::test]
async fn the_allow_list_admits_only_listed_sources() {
    let sim = start_sim().await;
    let (app, _) = seeded_v1(
        &sim,
        &[(
            "WEBHOOK_ALLOWED_IPS",
            "52.78.100.19, 52.78.48.223, 52.78.5.241",
        )],
    )
    .await;
    let body = br#"{"imp_uid":"imps_410000000001","merchant_uid":"order_x","status":"paid"}"#;
    assert_eq!(
        send(&app, Some("application/json"), body, "203.0.113.9")
            .await
            .0,
        403
    );
    assert_eq!(
        send(&app, Some("application/json"), body, "52.78.48.223")
            .await
            .0,
        200
    );
    // The committed fixtures (JSON, form, base64 form) come from a listed address.
    for fixture in [
        "webhook-json.json",
        "webhook-form.json",
        "webhook-form-base64.json",
    ] {
        let r = handle(&app, http_request(fixture, None, None))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{fixture}: {:?}", r.body());
    }
}

#[tokio::test]
async fn iamport_down_answers_503_so_the_resend_can_settle_it() {
    let sim = start_sim().await;
    let (app, sub) = seeded(&sim, &[]).await;
    sim.inject(Fault::new(FaultKind::HangAfter { secs: 3 }).on_charge());
    sim.inject(Fault::new(FaultKind::Http500).on_lookup());
    charge_run(&app).await;
    let muid = app
        .engine
        .settings
        .uid_key
        .charge_uid(&sub.id, &sub.current_period(), 1);
    let real = sim
        .ledger()
        .into_iter()
        .find(|p| p.merchant_uid == muid)
        .unwrap();
    // Every payment lookup fails (V1 by imp_uid, V2 by paymentId).
    let lookups = if v2_mode() {
        "/portone/payments/"
    } else {
        "/payments/"
    };
    sim.inject(Fault::new(FaultKind::Http500).on_path(lookups));
    let (status, _) = notify(&app, &sim, &real.imp_uid, &muid, "paid").await;
    assert_eq!(status, 503);
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Unknown);
    let (status, text) = notify(&app, &sim, &real.imp_uid, &muid, "paid").await;
    assert_eq!((status, text.contains("settled")), (200, true), "{text}");
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Paid);
}

/// A payment that arrives for an attempt already settled as declined (a
/// request i'mport finished late): the period may now be paid twice. It used
/// to be logged and acknowledged while the next retry charged the card
/// again; now the attempt and the subscription wait for a person and
/// nothing more is charged.
#[tokio::test]
async fn a_late_payment_on_a_declined_attempt_stops_charging_and_goes_to_a_person() {
    let sim = start_sim().await;
    let (app, sub) = seeded(&sim, &[]).await;
    sim.inject(Fault {
        customer_uid: Some(sub.customer_uid.clone()),
        ..Fault::new(FaultKind::Decline {
            reason: "잔액부족".into(),
        })
    });
    charge_run(&app).await;
    let first = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.state, AttemptState::Failed);
    // i'mport now shows money under that attempt's merchant_uid.
    let late = charge_directly(&app, &sub.customer_uid, &first.merchant_uid, first.amount).await;
    let shared::gateway::ChargeOutcome::Paid(late) = late else {
        panic!("{late:?}")
    };
    let (status, text) = notify(&app, &sim, &late.imp_uid, &first.merchant_uid, "paid").await;
    assert_eq!(
        (status, text.contains("needs review")),
        (200, true),
        "{text}"
    );
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::NeedsReview);
    let now = app
        .engine
        .ledger
        .get_subscription(&sub.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, shared::billing::SubscriptionStatus::NeedsReview);
    // The retry due the next day charges nothing.
    testkit::clock_to(&app, t0() + chrono::Duration::days(1));
    let payload = serde_json::json!({
        "scheduled_time": (t0() + chrono::Duration::days(1)).to_rfc3339(),
        "execution_id": "run-2"
    });
    let report = scheduled_charge::handle(&app, LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap();
    assert_eq!(report.summary.due, 0, "{report:?}");
    let paid = sim
        .ledger()
        .into_iter()
        .filter(|p| {
            p.status == "paid" && p.customer_uid.as_deref() == Some(sub.customer_uid.as_str())
        })
        .count();
    assert_eq!(paid, 1);
}
