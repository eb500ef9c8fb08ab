//! Every function, with tracing at TRACE level, through a whole story:
//! the captured output must never contain the i'mport key or secret, an
//! access token, or a full phone number or e-mail address. With
//! `PAYMENT_API=v2`: never the PortOne API secret, the webhook secret, or a
//! billing key (V2 keys are ours to keep, secret-grade).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use lambda_runtime::{Context, LambdaEvent};
use shared::billing::BILLING_TZ;
use shared::gateway::{PaymentGateway, RefundRequest};
use testkit::{
    SIM_KEY, SIM_SECRET, app_for, http_request, local_gateway, open_v2_window, open_window,
    start_sim, v2_mode,
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const TEL: &str = "010-1234-5678";
const EMAIL: &str = "gildong@example.com";

#[tokio::test]
async fn trace_logs_of_a_whole_story_hold_no_secrets_tokens_or_contact_data() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(shared::telemetry::filter("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let sim = start_sim().await;
    let app = Arc::new(app_for(&sim, &[]).await);
    let hook_app = Arc::clone(&app);
    let hooks = local_gateway("webhook-json.json", move |r| {
        let app = Arc::clone(&hook_app);
        async move { payment_webhook::handle(&app, r).await.unwrap() }
    })
    .await;
    sim.set_webhook(iamport_sim::WebhookSettings {
        url: Some(format!("{hooks}/webhooks/iamport")),
        format: iamport_sim::WebhookFormat::Json,
        duplicates: 1,
        delay: Duration::ZERO,
    });

    // Sign-ups: one pays, one is declined.
    let mut customers = Vec::new();
    for declined in [false, true] {
        // Two users: one live subscription per user and plan.
        let user = if declined { "user-43" } else { "user-42" };
        let body = format!(
            r#"{{"user_id":"{user}","buyer":{{"name":"홍길동","email":"{EMAIL}","tel":"{TEL}"}}}}"#
        );
        let response =
            billing_callback::handle(&app, http_request("prepare.json", None, Some(&body)))
                .await
                .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let prepared: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        let (query, key) = if v2_mode() {
            let params = &prepared["request_issue_billing_key"];
            let query = open_v2_window(&sim, params, &[]).await;
            let key = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "billingKey")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            (query, key)
        } else {
            let rp = &prepared["request_pay"];
            let key = rp["customer_uid"].as_str().unwrap().to_owned();
            if declined {
                sim.add_customer(&key, "chai");
            }
            (open_window(&sim.base_url(), rp, &[]).await, key)
        };
        if declined {
            sim.decline_customer(&key, "잔액부족");
        }
        let redirect = billing_callback::handle(
            &app,
            http_request("callback-success.json", Some(&query), None),
        )
        .await
        .unwrap();
        assert_eq!(redirect.status().as_u16(), 302);
        customers.push(key);
    }
    // Misuse that carries contact data in the query.
    let bad = format!("merchant_uid=bad%20uid&buyer_tel={TEL}&buyer_email={EMAIL}");
    billing_callback::handle(
        &app,
        http_request("callback-success.json", Some(&bad), None),
    )
    .await
    .unwrap();

    // Forty days of scheduled runs, from today; the simulator's clock keeps
    // up with ours (V2 webhooks are signed with its time).
    let today = app.engine.now().with_timezone(&BILLING_TZ).date_naive();
    let start = BILLING_TZ
        .with_ymd_and_hms(today.year(), today.month(), today.day(), 10, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    for d in 0..40 {
        let t = start + chrono::Duration::days(d);
        testkit::clock_to(&app, t);
        sim.set_clock(app.engine.now().timestamp());
        let payload = serde_json::json!({"scheduled_time": t.to_rfc3339(), "execution_id": format!("run-{d}")});
        scheduled_charge::handle(&app, LambdaEvent::new(payload, Context::default()))
            .await
            .unwrap();
    }
    // A refund, notified by webhook.
    let paid = sim
        .ledger()
        .into_iter()
        .find(|p| p.status == "paid" && p.amount > 0)
        .unwrap();
    app.engine
        .gateway
        .refund(&RefundRequest {
            imp_uid: paid.imp_uid.clone(),
            merchant_uid: paid.merchant_uid.clone(),
            amount: Some(1000),
            checksum: None,
            reason: "partial".into(),
            tax_free: None,
        })
        .await
        .unwrap();
    sim.wait_for_webhooks(sim.webhooks_sent().len() + 2, Duration::from_secs(5))
        .await;

    // The token the client used (i'mport returns the same one while valid).
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/users/getToken", sim.base_url()))
        .json(&serde_json::json!({"imp_key": SIM_KEY, "imp_secret": SIM_SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["response"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // It did log, at every level, from our code and from the libraries.
    for expected in [
        "subscription activated",
        "charged",
        "declined",
        "TRACE",
        "DEBUG",
        "refund recorded",
    ] {
        assert!(
            logs.contains(expected),
            "expected {expected:?} in the captured logs"
        );
    }
    let config = sim.config();
    let mut secrets = vec![
        SIM_KEY.to_owned(),
        SIM_SECRET.to_owned(),
        token.clone(),
        TEL.to_owned(),
        "01012345678".to_owned(),
        EMAIL.to_owned(),
        config.portone_api_secret.clone(),
        config.portone_webhook_secret.clone(),
        config
            .portone_webhook_secret
            .trim_start_matches("whsec_")
            .to_owned(),
    ];
    // The key references charged (V1 `customer_uid`s, V2 billing keys).
    secrets.extend(customers.iter().cloned());
    if v2_mode() {
        secrets.push("billing-key-".to_owned());
    }
    for secret in &secrets {
        let leaks: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .take(3)
            .collect();
        assert!(
            leaks.is_empty(),
            "{secret:?} appears in the logs: {leaks:#?}"
        );
    }
    // The story really charged both customers (one paid, one declined).
    let ledger = sim.ledger();
    for (customer, status) in customers.iter().zip(["paid", "failed"]) {
        assert!(
            ledger
                .iter()
                .any(|p| p.customer_uid.as_deref() == Some(customer.as_str())
                    && p.customer_uid_usage.as_deref() == Some("payment")
                    && p.status == status),
            "no {status} charge for {customer}"
        );
    }
    eprintln!(
        "captured {} bytes of TRACE logs, no secrets, tokens, phone numbers or e-mail addresses",
        logs.len()
    );
}
