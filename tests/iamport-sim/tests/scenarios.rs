//! Payment window, faults, latency, webhooks, the control endpoints and the binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{AGAIN, Api, Receiver, param, query_of, start, start_with};
use iamport_sim::{Fault, FaultKind, PaymentStatus, SimConfig, WebhookFormat, WebhookSettings};
use serde_json::{Value, json};

fn window_path(extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("pg", "chai.pk_123"),
        ("pay_method", "trans"),
        ("merchant_uid", "issue_u42"),
        ("customer_uid", "u42_chai_1"),
        ("amount", "0"),
        ("name", "정기결제 등록"),
        ("m_redirect_url", "http://shop.example/billing/done?ref=abc"),
        ("buyer_name", "홍길동"),
        ("buyer_email", "a@example.com"),
        ("buyer_tel", "01012345678"),
    ];
    pairs.extend_from_slice(extra);
    format!(
        "/window?{}",
        serde_urlencoded::to_string(&pairs).expect("query")
    )
}

// ---------------------------------------------------------------- window

#[tokio::test]
async fn window_issues_a_key_and_redirects_with_the_legacy_query() {
    let sim = start().await;
    let api = Api::new(&sim);
    let reply = api.get(&window_path(&[]), None).await;
    assert_eq!(reply.status, 302, "{}", reply.text);
    let location = reply.location.expect("Location");
    assert!(
        location.starts_with("http://shop.example/billing/done?ref=abc&"),
        "{location}"
    );
    let query = query_of(&location);
    let keys: Vec<_> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["ref", "imp_uid", "merchant_uid", "imp_success"]);
    let imp_uid = param(&query, "imp_uid").expect("imp_uid");
    assert!(
        imp_uid.starts_with("imp_") && imp_uid.len() == 16,
        "{imp_uid}"
    );
    assert_eq!(param(&query, "merchant_uid"), Some("issue_u42"));
    assert_eq!(param(&query, "imp_success"), Some("true"));

    let customer = sim.customer("u42_chai_1").expect("key issued");
    assert_eq!(customer.pg_provider, "chai");
    assert_eq!(customer.pg_id, "pk_123");
    assert_eq!(customer.customer_name.as_deref(), Some("홍길동"));
    assert_eq!(customer.customer_tel.as_deref(), Some("01012345678"));

    let issuance = sim.payment(imp_uid).expect("issuance recorded");
    assert_eq!(issuance.status, PaymentStatus::Paid);
    assert_eq!(issuance.amount, 0);
    assert_eq!(issuance.customer_uid.as_deref(), Some("u42_chai_1"));
    assert_eq!(issuance.customer_uid_usage.as_deref(), Some("issue"));
    assert_eq!(issuance.pay_method.as_deref(), Some("trans"));
    assert_eq!(issuance.channel.as_deref(), Some("pc"));

    // The callback's verification calls see it, and the key charges.
    let token = api.token().await;
    let payment = api.get(&format!("/payments/{imp_uid}"), Some(&token)).await;
    assert_eq!(payment.response()["customer_uid"], "u42_chai_1");
    assert_eq!(payment.response()["merchant_uid"], "issue_u42");
    let key = api
        .get("/subscribe/customers/u42_chai_1", Some(&token))
        .await;
    assert_eq!(key.response()["pg_provider"], "chai");
    let charge = api.again(&token, "u42_chai_1", "first_period", 9900).await;
    assert_eq!(charge.response()["status"], "paid");
    assert_eq!(charge.response()["pay_method"], "trans");
}

#[tokio::test]
async fn window_success_flag_follows_the_sdk_generation() {
    let sim = start().await;
    let api = Api::new(&sim);
    let new_sdk = api.get(&window_path(&[("sdk", "new")]), None).await;
    let query = query_of(&new_sdk.location.expect("Location"));
    let keys: Vec<_> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["ref", "imp_uid", "merchant_uid"]);

    let success = api
        .get(
            &window_path(&[("sdk", "legacy_success"), ("merchant_uid", "issue_2")]),
            None,
        )
        .await;
    let query = query_of(&success.location.expect("Location"));
    assert_eq!(param(&query, "success"), Some("true"));
    assert_eq!(param(&query, "imp_success"), None);
}

#[tokio::test]
async fn window_user_cancel_issues_no_key_and_redirects_with_an_error() {
    let sim = start().await;
    let api = Api::new(&sim);
    let reply = api
        .get(&window_path(&[("scenario", "user_cancel")]), None)
        .await;
    assert_eq!(reply.status, 302);
    let location = reply.location.expect("Location");
    assert!(
        location.contains("error_msg=%5B"),
        "error_msg is urlencoded: {location}"
    );
    let query = query_of(&location);
    assert_eq!(param(&query, "imp_success"), Some("false"));
    assert_eq!(param(&query, "error_code"), Some("F0005"));
    assert_eq!(
        param(&query, "error_msg"),
        Some("[결제포기] 사용자가 결제를 취소하셨습니다")
    );
    assert!(sim.customer("u42_chai_1").is_none());
    let imp_uid = param(&query, "imp_uid").expect("imp_uid");
    let payment = sim.payment(imp_uid).expect("recorded");
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert_eq!(
        payment.fail_reason.as_deref(),
        Some("사용자가 결제를 취소하셨습니다")
    );
    assert_eq!(payment.paid_at, 0);
    assert!(payment.failed_at > 0);
}

#[tokio::test]
async fn window_pg_error_fault_fails_once_and_keeps_the_old_key() {
    let sim = start().await;
    let api = Api::new(&sim);
    let old = sim.add_customer("u42_chai_1", "chai");
    sim.inject(Fault::new(FaultKind::PgError {
        code: None,
        message: Some("계좌 인증 실패".into()),
    }));
    let failed = api.get(&window_path(&[("sdk", "new")]), None).await;
    let query = query_of(&failed.location.expect("Location"));
    assert_eq!(param(&query, "error_code"), Some("F1002"));
    assert_eq!(param(&query, "error_msg"), Some("계좌 인증 실패"));
    assert_eq!(param(&query, "imp_success"), None);
    assert_eq!(sim.customer("u42_chai_1"), Some(old.clone()));

    // The fault is used up: the next window replaces the key.
    sim.advance_clock(5);
    let ok = api
        .get(&window_path(&[("merchant_uid", "issue_again")]), None)
        .await;
    assert_eq!(
        param(&query_of(&ok.location.expect("Location")), "imp_success"),
        Some("true")
    );
    let replaced = sim.customer("u42_chai_1").expect("key");
    assert_eq!(replaced.pg_id, "pk_123");
    assert_eq!(replaced.inserted, old.inserted);
    assert!(replaced.updated >= old.updated + 5);
}

#[tokio::test]
async fn window_without_redirect_or_customer_uid_is_a_plain_400() {
    let sim = start().await;
    let api = Api::new(&sim);
    let no_redirect = api.get("/window?customer_uid=c1&amount=0", None).await;
    assert_eq!(no_redirect.status, 400);
    assert!(no_redirect.text.contains("m_redirect_url"));
    let no_customer = api
        .get(
            "/window?m_redirect_url=http%3A%2F%2Fshop.example%2F&amount=0",
            None,
        )
        .await;
    assert_eq!(no_customer.status, 400);
    assert!(no_customer.text.contains("customer_uid"));
    let bad_amount = api.get(&window_path(&[("amount", "-1")]), None).await;
    assert_eq!(bad_amount.status, 400);
    assert!(sim.ledger().is_empty());
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn http500_fault_answers_500_and_records_nothing() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    sim.inject(Fault::new(FaultKind::Http500));
    let reply = api.again(&token, "cust_1", "order_500", 9900).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.code(), Some(-1));
    assert_eq!(reply.json["response"], Value::Null);
    assert!(sim.ledger().is_empty());
    let next = api.again(&token, "cust_1", "order_500", 9900).await;
    assert_eq!(next.response()["status"], "paid");
    assert_eq!(sim.request_count(AGAIN), 2);
}

#[tokio::test]
async fn hang_before_times_the_client_out_and_charges_nothing() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    sim.inject(Fault::new(FaultKind::HangBefore { secs: 3 }).on_path(AGAIN));
    let started = Instant::now();
    let result = api
        .http
        .post(api.url(AGAIN))
        .header("Authorization", token.clone())
        .json(&json!({"customer_uid": "cust_1", "merchant_uid": "order_hb", "amount": 9900}))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    let err = result.expect_err("client times out");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(sim.ledger().is_empty());
    let find = api.get("/payments/find/order_hb", Some(&token)).await;
    assert_eq!(find.status, 404);
}

#[tokio::test]
async fn hang_after_records_the_charge_although_the_client_times_out() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    sim.inject(Fault::new(FaultKind::HangAfter { secs: 3 }).on_path(AGAIN));
    let result = api
        .http
        .post(api.url(AGAIN))
        .header("Authorization", token.clone())
        .json(&json!({"customer_uid": "cust_1", "merchant_uid": "order_ha", "amount": 9900}))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(result.expect_err("client times out").is_timeout());
    // The charge happened: reconciliation finds it and a retry is refused.
    assert_eq!(sim.paid_count("order_ha"), 1);
    let find = api.get("/payments/find/order_ha/paid", Some(&token)).await;
    assert_eq!(find.status, 200);
    assert_eq!(find.response()["amount"], 9900);
    let retry = api.again(&token, "cust_1", "order_ha", 9900).await;
    assert_eq!(retry.code(), Some(1));
    assert_eq!(sim.paid_count("order_ha"), 1);
}

#[tokio::test]
async fn corrupt_fault_truncates_the_body_but_the_charge_is_recorded() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    sim.inject(Fault::new(FaultKind::Corrupt));
    let reply = api.again(&token, "cust_1", "order_cor", 9900).await;
    assert_eq!(reply.status, 200);
    assert!(
        serde_json::from_str::<Value>(&reply.text).is_err(),
        "{}",
        reply.text
    );
    assert!(reply.text.starts_with("{\"code\":0"), "{}", reply.text);
    assert_eq!(sim.paid_count("order_cor"), 1);
}

#[tokio::test]
async fn reject_fault_answers_its_code_and_records_nothing() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    sim.inject(Fault::new(FaultKind::Reject {
        code: -1,
        message: "비인증결제모듈 사용정보를 찾을 수 없습니다.".into(),
    }));
    let reply = api.again(&token, "cust_1", "order_rej", 9900).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json,
        json!({"code": -1, "message": "비인증결제모듈 사용정보를 찾을 수 없습니다.", "response": null})
    );
    assert!(sim.ledger().is_empty());
}

#[tokio::test]
async fn unauthorized_fault_answers_401_once() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    sim.inject(Fault::new(FaultKind::Unauthorized));
    let first = api.again(&token, "cust_1", "order_401", 9900).await;
    assert_eq!(first.status, 401);
    assert_eq!(first.code(), Some(-1));
    assert!(sim.ledger().is_empty());
    let second = api.again(&token, "cust_1", "order_401", 9900).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.response()["status"], "paid");
}

#[tokio::test]
async fn decline_fault_declines_one_charge_of_one_customer() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_a", "chai");
    sim.add_customer("cust_b", "chai");
    let token = api.token().await;
    sim.inject(
        Fault::new(FaultKind::Decline {
            reason: "한도초과".into(),
        })
        .for_customer("cust_b"),
    );
    assert_eq!(
        api.again(&token, "cust_a", "a1", 100).await.response()["status"],
        "paid"
    );
    let declined = api.again(&token, "cust_b", "b1", 100).await;
    assert_eq!(declined.code(), Some(0));
    assert_eq!(declined.response()["status"], "failed");
    assert_eq!(declined.response()["fail_reason"], "한도초과");
    assert_eq!(
        api.again(&token, "cust_b", "b2", 100).await.response()["status"],
        "paid"
    );
    assert!(sim.pending_faults().is_empty());
}

#[tokio::test]
async fn faults_respect_path_prefix_and_times() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let charged = api.again(&token, "cust_1", "order_f", 100).await;
    let imp_uid = charged.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    sim.inject(
        Fault::new(FaultKind::Http500)
            .on_path("/payments/find")
            .times(2),
    );
    // Other paths and the token endpoint are untouched.
    assert_eq!(
        api.get(&format!("/payments/{imp_uid}"), Some(&token))
            .await
            .status,
        200
    );
    assert_eq!(api.token().await, token);
    assert_eq!(
        api.get("/payments/find/order_f", Some(&token)).await.status,
        500
    );
    assert_eq!(sim.pending_faults()[0].times, 1);
    assert_eq!(
        api.get("/payments/find/order_f", Some(&token)).await.status,
        500
    );
    assert_eq!(
        api.get("/payments/find/order_f", Some(&token)).await.status,
        200
    );

    // The token endpoint only by explicit path.
    sim.inject(Fault::new(FaultKind::Http500).on_path("/users/getToken"));
    let token_reply = api
        .post_json(
            "/users/getToken",
            None,
            json!({"imp_key": "sim_imp_key", "imp_secret": "sim_imp_secret"}),
        )
        .await;
    assert_eq!(token_reply.status, 500);
    assert_eq!(sim.token_requests(), 3);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_latency(Duration::from_millis(600));
    let started = Instant::now();
    let token = api.token().await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    sim.set_latency(Duration::ZERO);
    let started = Instant::now();
    api.get("/payments/imps_000000000000", Some(&token)).await;
    assert!(started.elapsed() < Duration::from_millis(600));
}

// ---------------------------------------------------------------- webhooks

#[tokio::test]
async fn paid_again_sends_a_json_webhook_to_its_notice_url() {
    let receiver = Receiver::start(200).await;
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let reply = api
        .post_json(
            AGAIN,
            Some(&token),
            json!({"customer_uid": "cust_1", "merchant_uid": "order_w1", "amount": 9900, "notice_url": receiver.url}),
        )
        .await;
    let imp_uid = reply.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    let sent = sim.wait_for_webhooks(1, Duration::from_secs(5)).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url, receiver.url);
    assert_eq!(sent[0].http_status, Some(200));
    assert_eq!(sent[0].status, "paid");
    assert_eq!(sent[0].format, WebhookFormat::Json);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].content_type, "application/json");
    let body: Value = serde_json::from_str(&got[0].body).expect("JSON body");
    assert_eq!(
        body,
        json!({"imp_uid": imp_uid, "merchant_uid": "order_w1", "status": "paid"})
    );
}

#[tokio::test]
async fn configured_form_webhooks_are_duplicated_and_failed_charges_send_none() {
    let receiver = Receiver::start(200).await;
    let sim = start_with(SimConfig {
        webhook_url: Some(receiver.url.clone()),
        webhook_format: WebhookFormat::Form,
        webhook_duplicates: 2,
        ..SimConfig::default()
    })
    .await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    sim.decline_customer("cust_1", "잔액부족");
    let token = api.token().await;
    api.again(&token, "cust_1", "order_fail", 100).await;
    sim.clear_decline("cust_1");
    let reply = api.again(&token, "cust_1", "order_w2", 100).await;
    let imp_uid = reply.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();

    let sent = sim.wait_for_webhooks(3, Duration::from_secs(5)).await;
    assert_eq!(sent.len(), 3);
    let attempts: Vec<_> = sent.iter().map(|d| d.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let expected = format!("imp_uid={imp_uid}&merchant_uid=order_w2&status=paid");
    for request in &got {
        assert_eq!(request.content_type, "application/x-www-form-urlencoded");
        assert_eq!(request.body, expected);
    }
    // Nothing for the failed charge, even after a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.webhooks_sent().len(), 3);
    assert!(
        sim.webhooks_sent()
            .iter()
            .all(|d| d.merchant_uid == "order_w2")
    );
}

#[tokio::test]
async fn cancellation_webhook_carries_the_cancellation_id() {
    let receiver = Receiver::start(200).await;
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    api.again(&token, "cust_1", "order_wc", 100).await;
    sim.set_webhook(WebhookSettings {
        url: Some(receiver.url.clone()),
        ..WebhookSettings::default()
    });
    let cancelled = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"merchant_uid": "order_wc"}),
        )
        .await;
    let cancellation_id = cancelled.response()["cancel_history"][0]["cancellation_id"].clone();
    let sent = sim.wait_for_webhooks(1, Duration::from_secs(5)).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, "cancelled");
    let body: Value = serde_json::from_str(&receiver.received()[0].body).expect("JSON");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["merchant_uid"], "order_wc");
    assert_eq!(body["cancellation_id"], cancellation_id);
}

#[tokio::test]
async fn webhook_answers_and_failures_are_recorded() {
    let failing = Receiver::start(500).await;
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let reply = api.again(&token, "cust_1", "order_w5", 100).await;
    let imp_uid = reply.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    assert!(!sim.send_webhook(&imp_uid, None), "no URL configured");
    assert!(sim.send_webhook(&imp_uid, Some(&failing.url)));
    assert!(sim.send_webhook(&imp_uid, Some("http://127.0.0.1:9/unreachable")));
    let sent = sim.wait_for_webhooks(2, Duration::from_secs(10)).await;
    assert_eq!(sent.len(), 2);
    let to_failing = sent
        .iter()
        .find(|d| d.url == failing.url)
        .expect("delivery");
    assert_eq!(to_failing.http_status, Some(500));
    let unreachable = sent
        .iter()
        .find(|d| d.url.contains(":9/"))
        .expect("delivery");
    assert_eq!(unreachable.http_status, None);
    assert!(unreachable.error.is_some());
}

// ---------------------------------------------------------------- control endpoints

#[tokio::test]
async fn control_endpoints_drive_the_same_state_over_http() {
    let receiver = Receiver::start(200).await;
    let sim = start().await;
    let api = Api::new(&sim);
    let ok = json!({"ok": true});
    assert_eq!(api.get("/__sim/health", None).await.json, ok);

    let added = api
        .post_json(
            "/__sim/customers",
            None,
            json!({"customer_uid": "ctl_1", "pg_provider": "chai", "customer_name": "홍길동"}),
        )
        .await;
    assert_eq!(added.status, 201);
    assert_eq!(added.json["pg_provider"], "chai");
    assert_eq!(
        sim.customer("ctl_1")
            .and_then(|c| c.customer_name)
            .as_deref(),
        Some("홍길동")
    );

    let clock = api
        .post_json("/__sim/clock", None, json!({"now": 2_000_000_000}))
        .await;
    assert!((2_000_000_000..=2_000_000_001).contains(&clock.json["now"].as_i64().expect("now")));
    let moved = api
        .post_json("/__sim/clock", None, json!({"advance_secs": 100}))
        .await;
    assert!(moved.json["now"].as_i64().expect("now") >= 2_000_000_100);
    let read = api.get("/__sim/clock", None).await;
    assert!(read.json["now"].as_i64().expect("now") >= 2_000_000_100);
    assert_eq!(
        api.post_json("/__sim/clock", None, json!({})).await.status,
        400
    );

    let declined = api
        .post_json(
            "/__sim/decline",
            None,
            json!({"customer_uid": "ctl_1", "reason": "정지된 계좌"}),
        )
        .await;
    assert_eq!(
        declined.json,
        json!({"customer_uid": "ctl_1", "reason": "정지된 계좌"})
    );
    let token = api.token().await;
    let failed = api.again(&token, "ctl_1", "ctl_o1", 100).await;
    assert_eq!(failed.response()["fail_reason"], "정지된 계좌");
    let cleared = api.delete("/__sim/decline/ctl_1", None).await;
    assert_eq!(
        cleared.json,
        json!({"customer_uid": "ctl_1", "cleared": true})
    );

    let queued = api
        .post_json(
            "/__sim/faults",
            None,
            json!({"kind": "http500", "path_prefix": AGAIN, "times": 1}),
        )
        .await;
    assert_eq!(queued.status, 200);
    assert_eq!(queued.json[0]["kind"], "http500");
    assert_eq!(api.again(&token, "ctl_1", "ctl_o2", 100).await.status, 500);
    let many = api
        .post_json(
            "/__sim/faults",
            None,
            json!([{"kind": "reject", "code": 1, "message": "거절"}, {"kind": "hang_after", "secs": 0}]),
        )
        .await;
    assert_eq!(many.json.as_array().map(Vec::len), Some(2));
    assert_eq!(api.delete("/__sim/faults", None).await.json, ok);
    assert_eq!(api.get("/__sim/faults", None).await.json, json!([]));
    let bad_fault = api
        .post_json("/__sim/faults", None, json!({"kind": "explode"}))
        .await;
    assert_eq!(bad_fault.status, 400);
    assert!(bad_fault.json["error"].as_str().is_some());

    let hook = api
        .post_json(
            "/__sim/webhook",
            None,
            json!({"url": receiver.url, "format": "form", "duplicates": 1}),
        )
        .await;
    assert_eq!(
        hook.json,
        json!({"url": receiver.url, "format": "form", "duplicates": 1, "delay_ms": 0})
    );
    let paid = api.again(&token, "ctl_1", "ctl_o3", 100).await;
    assert_eq!(paid.response()["status"], "paid");
    sim.wait_for_webhooks(2, Duration::from_secs(5)).await;
    let hooks = api.get("/__sim/webhooks", None).await;
    assert_eq!(hooks.json.as_array().map(Vec::len), Some(2));
    assert_eq!(hooks.json[0]["http_status"], 200);
    let resend = api
        .post_json(
            "/__sim/webhooks/send",
            None,
            json!({"imp_uid": paid.response()["imp_uid"]}),
        )
        .await;
    assert_eq!(resend.status, 202);
    assert_eq!(resend.json["status"], "paid");
    let unknown = api
        .post_json("/__sim/webhooks/send", None, json!({"imp_uid": "imps_0"}))
        .await;
    assert_eq!(unknown.status, 404);

    let ledger = api.get("/__sim/ledger", None).await;
    let statuses: Vec<_> = ledger
        .json
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(statuses, ["failed", "paid"]);

    let requests = api.get("/__sim/requests", None).await;
    assert_eq!(requests.json[AGAIN], 3);

    assert_eq!(
        api.post_json("/__sim/latency", None, json!({"ms": 5}))
            .await
            .json,
        json!({"ms": 5})
    );
    assert_eq!(
        api.post_json("/__sim/tokens/expire", None, json!({}))
            .await
            .json,
        ok
    );
    assert_eq!(api.again(&token, "ctl_1", "ctl_o4", 100).await.status, 401);

    let garbage = api
        .send(
            api.http
                .post(api.url("/__sim/decline"))
                .header("content-type", "application/json")
                .body("nope"),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid JSON"))
    );

    assert_eq!(
        api.post_json("/__sim/reset", None, json!({})).await.json,
        ok
    );
    assert!(sim.ledger().is_empty());
    assert!(sim.customers().is_empty());
    assert!(sim.webhooks_sent().is_empty());
    assert_eq!(sim.webhook_settings(), WebhookSettings::default());
    assert!(
        (sim.now() - 2_000_000_000).abs() > 1000,
        "clock offset reset"
    );
    assert_eq!(sim.request_count("/"), 0);
}

// ---------------------------------------------------------------- binary

#[tokio::test]
async fn binary_prints_its_address_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iamport-sim"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--imp-key",
            "cli_key",
            "--latency-ms",
            "0",
        ])
        .env("IAMPORT_SIM_IMP_SECRET", "cli_secret")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("first line");
    let base = line
        .trim_end()
        .strip_prefix("iamport-sim listening on ")
        .expect("announcement line")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let token = http
        .post(format!("{base}/users/getToken"))
        .form(&[("imp_key", "cli_key"), ("imp_secret", "cli_secret")])
        .send()
        .await
        .expect("getToken");
    assert_eq!(token.status().as_u16(), 200);

    let pid = child.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
}
