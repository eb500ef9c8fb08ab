//! Behaviour of the i'mport REST endpoints: tokens, again, lookups, billing keys, cancel.

mod common;

use common::{AGAIN, Api, start};
use iamport_sim::{NewCustomer, PaymentStatus};
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000;

fn is_imp_uid(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .is_some_and(|digits| digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn token_is_reused_with_the_same_expiry_as_the_clock_moves() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    let first = api
        .post_json(
            "/users/getToken",
            None,
            json!({"imp_key": "sim_imp_key", "imp_secret": "sim_imp_secret"}),
        )
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.code(), Some(0));
    assert_eq!(first.json["message"], Value::Null);
    let r1 = first.response().clone();
    let now1 = r1["now"].as_i64().expect("now");
    let expired_at = r1["expired_at"].as_i64().expect("expired_at");
    assert!((T0..=T0 + 1).contains(&now1));
    assert_eq!(expired_at - now1, 1800);
    assert_eq!(r1["access_token"].as_str().map(str::len), Some(40));

    sim.advance_clock(600);
    // Same account, form body this time: same token, same expiry, less time left.
    let second = api
        .post_form(
            "/users/getToken",
            None,
            &[("imp_key", "sim_imp_key"), ("imp_secret", "sim_imp_secret")],
        )
        .await;
    assert_eq!(second.status, 200);
    let r2 = second.response();
    assert_eq!(r2["access_token"], r1["access_token"]);
    assert_eq!(r2["expired_at"].as_i64(), Some(expired_at));
    let left = expired_at - r2["now"].as_i64().expect("now");
    assert!((1198..=1200).contains(&left), "left {left}");
    assert_eq!(sim.token_requests(), 2);
}

#[tokio::test]
async fn token_requested_in_its_last_minute_is_extended_by_five_minutes() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    let token = api.token().await;
    let first = api
        .post_json(
            "/users/getToken",
            None,
            json!({"imp_key": "sim_imp_key", "imp_secret": "sim_imp_secret"}),
        )
        .await;
    let expired_at = first.response()["expired_at"].as_i64().expect("expired_at");
    sim.set_clock(expired_at - 30);
    let late = api
        .post_json(
            "/users/getToken",
            None,
            json!({"imp_key": "sim_imp_key", "imp_secret": "sim_imp_secret"}),
        )
        .await;
    assert_eq!(
        late.response()["access_token"].as_str(),
        Some(token.as_str())
    );
    assert_eq!(
        late.response()["expired_at"].as_i64(),
        Some(expired_at + 300)
    );
    // The extended token works past its original expiry.
    sim.set_clock(expired_at + 100);
    let lookup = api.get("/payments/imps_000000000000", Some(&token)).await;
    assert_eq!(lookup.status, 404);
}

#[tokio::test]
async fn expired_token_gets_401_and_a_new_token_is_issued() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    let old = api.token().await;
    sim.advance_clock(1801);
    let refused = api.get("/payments/imps_000000000000", Some(&old)).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code(), Some(-1));
    assert_eq!(refused.json["response"], Value::Null);
    assert!(refused.message().is_some());

    let new = api.token().await;
    assert_ne!(new, old);
    assert_eq!(
        api.get("/payments/imps_000000000000", Some(&new))
            .await
            .status,
        404
    );
    assert_eq!(
        api.get("/payments/imps_000000000000", Some(&old))
            .await
            .status,
        401
    );

    sim.expire_tokens();
    assert_eq!(
        api.get("/payments/imps_000000000000", Some(&new))
            .await
            .status,
        401
    );
    assert_ne!(api.token().await, new);
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_and_garbage_gets_400() {
    let sim = start().await;
    let api = Api::new(&sim);
    let wrong = api
        .post_json(
            "/users/getToken",
            None,
            json!({"imp_key": "sim_imp_key", "imp_secret": "nope"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.code(), Some(-1));
    assert_eq!(wrong.json["response"], Value::Null);
    assert_eq!(
        wrong.message(),
        Some("imp_key, imp_secret 인증에 실패하였습니다.")
    );

    let missing = api
        .post_form("/users/getToken", None, &[("imp_key", "sim_imp_key")])
        .await;
    assert_eq!(missing.status, 401);

    let garbage = api
        .send(
            api.http
                .post(api.url("/users/getToken"))
                .header("content-type", "application/json")
                .body("{\"imp_key\": "),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.code(), Some(-1));
    assert_eq!(garbage.json["response"], Value::Null);
}

#[tokio::test]
async fn bearer_bare_and_legacy_token_headers_are_accepted() {
    let sim = start().await;
    let api = Api::new(&sim);
    let token = api.token().await;
    let path = api.url("/payments/imps_000000000000");
    for (header, value) in [
        ("Authorization", format!("Bearer {token}")),
        ("Authorization", token.clone()),
        ("X-ImpTokenHeader", token.clone()),
    ] {
        let reply = api.send(api.http.get(&path).header(header, value)).await;
        assert_eq!(reply.status, 404, "{header} should authenticate");
        assert_eq!(reply.message(), Some("존재하지 않는 결제정보입니다."));
    }
    for request in [
        api.http.get(&path),
        api.http
            .get(&path)
            .header("Authorization", "Bearer not-a-token"),
        api.http.get(&path).header("Authorization", "Bearer "),
    ] {
        let reply = api.send(request).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json,
            json!({"code": -1, "message": "Unauthorized", "response": null})
        );
    }
    // Every authenticated endpoint is guarded.
    assert_eq!(api.post_json(AGAIN, None, json!({})).await.status, 401);
    assert_eq!(
        api.post_json("/payments/cancel", None, json!({}))
            .await
            .status,
        401
    );
    assert_eq!(api.get("/payments/find/x", None).await.status, 401);
    assert_eq!(api.get("/subscribe/customers/x", None).await.status, 401);
    assert_eq!(api.delete("/subscribe/customers/x", None).await.status, 401);
}

// ---------------------------------------------------------------- again

#[tokio::test]
async fn again_charges_the_key_and_records_one_paid_payment() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    sim.add_customer("cust_chai_1", "chai");
    let token = api.token().await;
    let reply = api
        .post_json(
            AGAIN,
            Some(&token),
            json!({
                "customer_uid": "cust_chai_1",
                "merchant_uid": "sub_2024_06_u42",
                "amount": 9900,
                "name": "월간 구독",
                "buyer_name": "홍길동",
                "buyer_email": "a@example.com",
                "buyer_tel": "01012345678",
                "custom_data": {"plan": "monthly"},
            }),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.code(), Some(0));
    assert_eq!(reply.json["message"], Value::Null);
    let p = reply.response();
    let imp_uid = p["imp_uid"].as_str().expect("imp_uid");
    assert!(is_imp_uid(imp_uid, "imps_"), "{imp_uid}");
    assert_eq!(p["merchant_uid"], "sub_2024_06_u42");
    assert_eq!(p["status"], "paid");
    assert_eq!(p["amount"], 9900);
    assert_eq!(p["cancel_amount"], 0);
    assert_eq!(p["currency"], "KRW");
    assert_eq!(p["pay_method"], "trans");
    assert_eq!(p["channel"], "api");
    assert_eq!(p["pg_provider"], "chai");
    assert_eq!(p["pg_id"], "sim_pg_id");
    assert_eq!(p["customer_uid"], "cust_chai_1");
    assert_eq!(p["customer_uid_usage"], "payment");
    assert_eq!(p["name"], "월간 구독");
    assert_eq!(p["buyer_name"], "홍길동");
    assert_eq!(p["custom_data"], r#"{"plan":"monthly"}"#);
    let paid_at = p["paid_at"].as_i64().expect("paid_at");
    assert!((T0..=T0 + 1).contains(&paid_at));
    assert_eq!(p["started_at"].as_i64(), Some(paid_at));
    assert_eq!(p["failed_at"], 0);
    assert_eq!(p["cancelled_at"], 0);
    assert_eq!(p["vbank_date"], 0);
    assert_eq!(p["fail_reason"], Value::Null);
    assert_eq!(p["card_number"], Value::Null);
    assert_eq!(p["cancel_history"], json!([]));
    assert_eq!(p["cancel_receipt_urls"], json!([]));
    assert_eq!(p["escrow"], false);
    assert_eq!(p["cash_receipt_issued"], false);
    assert!(p["pg_tid"].as_str().is_some_and(|t| t.starts_with("chai_")));
    for field in [
        "emb_pg_provider",
        "bank_code",
        "vbank_num",
        "buyer_addr",
        "promotion",
    ] {
        assert!(
            p.get(field).is_some_and(Value::is_null),
            "{field} must be present and null"
        );
    }
    // A paid payment carries the PG's receipt link (the card slip).
    assert!(
        p["receipt_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(p["imp_uid"].as_str().unwrap_or("?"))),
        "receipt_url of a paid payment: {}",
        p["receipt_url"]
    );

    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].imp_uid, imp_uid);
    assert_eq!(ledger[0].status, PaymentStatus::Paid);
    assert_eq!(ledger[0].amount, 9900);
    assert_eq!(ledger[0].customer_uid_usage.as_deref(), Some("payment"));
    assert_eq!(sim.paid_count("sub_2024_06_u42"), 1);
    assert_eq!(sim.request_count(AGAIN), 1);
}

#[tokio::test]
async fn again_accepts_form_bodies_and_card_keys_charge_by_card() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer_with(NewCustomer {
        card_name: Some("신한카드".into()),
        card_number: Some("4330288712349512".into()),
        card_type: Some(0),
        ..NewCustomer::new("cust_card", "nice")
    });
    let token = api.token().await;
    let reply = api
        .post_form(
            AGAIN,
            Some(&token),
            &[
                ("customer_uid", "cust_card"),
                ("merchant_uid", "form_order_1"),
                ("amount", "1500"),
                ("name", "form"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let p = reply.response();
    assert_eq!(p["status"], "paid");
    assert_eq!(p["amount"], 1500);
    assert_eq!(p["pay_method"], "card");
    assert_eq!(p["pg_provider"], "nice");
    assert_eq!(p["card_name"], "신한카드");
    assert_eq!(p["card_type"], 0);
    assert_eq!(p["apply_num"].as_str().map(str::len), Some(8));
}

#[tokio::test]
async fn declined_customer_gets_code_0_and_a_failed_payment_then_can_retry() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_poor", "chai");
    sim.decline_customer("cust_poor", "잔액부족");
    let token = api.token().await;
    let reply = api.again(&token, "cust_poor", "order_d1", 9900).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.code(), Some(0));
    let p = reply.response();
    assert_eq!(p["status"], "failed");
    assert_eq!(p["fail_reason"], "잔액부족");
    assert_eq!(p["paid_at"], 0);
    assert!(p["failed_at"].as_i64().is_some_and(|t| t > 0));
    assert_eq!(p["apply_num"], Value::Null);
    let failed_imp_uid = p["imp_uid"].as_str().expect("imp_uid").to_owned();
    assert!(is_imp_uid(&failed_imp_uid, "imps_"));

    // A failed merchant_uid may be retried; the retry is a new payment.
    assert!(sim.clear_decline("cust_poor"));
    let retry = api.again(&token, "cust_poor", "order_d1", 9900).await;
    assert_eq!(retry.response()["status"], "paid");
    assert_ne!(
        retry.response()["imp_uid"].as_str(),
        Some(failed_imp_uid.as_str())
    );

    let ledger = sim.ledger();
    let statuses: Vec<_> = ledger.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [PaymentStatus::Failed, PaymentStatus::Paid]);
    assert_eq!(ledger[0].fail_reason.as_deref(), Some("잔액부족"));
    assert_eq!(sim.paid_count("order_d1"), 1);
}

#[tokio::test]
async fn unknown_customer_gets_code_minus_1_and_nothing_is_recorded() {
    let sim = start().await;
    let api = Api::new(&sim);
    let token = api.token().await;
    let reply = api.again(&token, "nobody", "order_u1", 9900).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json,
        json!({"code": -1, "message": "등록되지 않은 구매자입니다.", "response": null})
    );
    assert!(sim.ledger().is_empty());
}

#[tokio::test]
async fn already_paid_merchant_uid_is_refused_and_charged_once() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let first = api.again(&token, "cust_1", "order_dup", 9900).await;
    assert_eq!(first.response()["status"], "paid");
    let second = api.again(&token, "cust_1", "order_dup", 9900).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.code(), Some(1));
    assert_eq!(
        second.message(),
        Some("이미 결제 완료된 주문번호(merchant_uid)입니다.")
    );
    assert_eq!(second.json["response"], Value::Null);
    assert_eq!(sim.ledger().len(), 1);
    assert_eq!(sim.paid_count("order_dup"), 1);
}

#[tokio::test]
async fn concurrent_charges_of_one_merchant_uid_pay_once() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            let token = token.clone();
            tokio::spawn(async move { api.again(&token, "cust_1", "order_race", 9900).await })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.expect("task").code());
    }
    codes.sort_unstable();
    assert_eq!(
        codes,
        [
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1)
        ]
    );
    assert_eq!(sim.paid_count("order_race"), 1);
    assert_eq!(sim.ledger().len(), 1);
}

#[tokio::test]
async fn invalid_again_requests_get_400_and_charge_nothing() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let long_merchant = "m".repeat(41);
    let long_customer = "c".repeat(81);
    let cases = [
        json!({"customer_uid": "cust_1", "merchant_uid": "o1"}),
        json!({"customer_uid": "cust_1", "amount": 100}),
        json!({"merchant_uid": "o1", "amount": 100}),
        json!({"customer_uid": "cust_1", "merchant_uid": "o1", "amount": 0}),
        json!({"customer_uid": "cust_1", "merchant_uid": "o1", "amount": -5}),
        json!({"customer_uid": "cust_1", "merchant_uid": "o1", "amount": 10.5}),
        json!({"customer_uid": "cust_1", "merchant_uid": "o1", "amount": "9900"}),
        json!({"customer_uid": "cust_1", "merchant_uid": long_merchant, "amount": 100}),
        json!({"customer_uid": long_customer, "merchant_uid": "o1", "amount": 100}),
        json!({"customer_uid": "cust_1", "merchant_uid": "o1", "amount": 100, "name": "n".repeat(41)}),
        json!([1, 2, 3]),
    ];
    for body in cases {
        let reply = api.post_json(AGAIN, Some(&token), body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.code(), Some(-1), "{body}");
        assert_eq!(reply.json["response"], Value::Null);
        assert!(reply.message().is_some_and(|m| !m.is_empty()));
    }
    let garbage = api
        .send(
            api.http
                .post(api.url(AGAIN))
                .header("Authorization", token.clone())
                .header("content-type", "application/json")
                .body("{{{"),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.code(), Some(-1));
    let form = api
        .post_form(
            AGAIN,
            Some(&token),
            &[
                ("customer_uid", "cust_1"),
                ("merchant_uid", "o1"),
                ("amount", "abc"),
            ],
        )
        .await;
    assert_eq!(form.status, 400);
    assert!(sim.ledger().is_empty());
}

// ---------------------------------------------------------------- lookups

#[tokio::test]
async fn payment_lookup_by_imp_uid_answers_200_or_404() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let charged = api.again(&token, "cust_1", "order_l1", 4900).await;
    let imp_uid = charged.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();

    let found = api
        .get(
            &format!("/payments/{imp_uid}?include_sandbox=true"),
            Some(&token),
        )
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(found.code(), Some(0));
    assert_eq!(found.response(), charged.response());

    let missing = api.get("/payments/imps_999999999999", Some(&token)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json,
        json!({"code": -1, "message": "존재하지 않는 결제정보입니다.", "response": null})
    );
}

#[tokio::test]
async fn find_by_merchant_uid_returns_the_newest_and_filters_by_status() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    sim.decline_customer("cust_1", "한도초과");
    let token = api.token().await;
    let failed = api.again(&token, "cust_1", "order_f1", 9900).await;
    sim.clear_decline("cust_1");
    sim.advance_clock(10);
    let paid = api.again(&token, "cust_1", "order_f1", 9900).await;
    let failed_uid = failed.response()["imp_uid"].clone();
    let paid_uid = paid.response()["imp_uid"].clone();

    let newest = api.get("/payments/find/order_f1", Some(&token)).await;
    assert_eq!(newest.status, 200);
    assert_eq!(newest.response()["imp_uid"], paid_uid);

    let by_status = api
        .get("/payments/find/order_f1/failed", Some(&token))
        .await;
    assert_eq!(by_status.status, 200);
    assert_eq!(by_status.response()["imp_uid"], failed_uid);
    assert_eq!(by_status.response()["fail_reason"], "한도초과");

    let oldest = api
        .get("/payments/find/order_f1?sorting=started", Some(&token))
        .await;
    assert_eq!(oldest.response()["imp_uid"], failed_uid);

    let paid_only = api.get("/payments/find/order_f1/paid", Some(&token)).await;
    assert_eq!(paid_only.response()["imp_uid"], paid_uid);

    let none = api
        .get("/payments/find/order_f1/cancelled", Some(&token))
        .await;
    assert_eq!(none.status, 404);
    assert_eq!(none.code(), Some(-1));
    assert_eq!(none.message(), Some("존재하지 않는 결제정보입니다."));
    assert_eq!(
        api.get("/payments/find/nothing_here", Some(&token))
            .await
            .status,
        404
    );

    let bad_status = api
        .get("/payments/find/order_f1/refunded", Some(&token))
        .await;
    assert_eq!(bad_status.status, 400);
    assert_eq!(bad_status.code(), Some(-1));
    let bad_sorting = api
        .get("/payments/find/order_f1?sorting=-amount", Some(&token))
        .await;
    assert_eq!(bad_sorting.status, 400);
}

// ---------------------------------------------------------------- billing keys

#[tokio::test]
async fn customer_can_be_read_and_deleted_then_is_gone() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    sim.add_customer_with(NewCustomer {
        pg_id: Some("pk_live_123".into()),
        customer_name: Some("홍길동".into()),
        customer_tel: Some("01012345678".into()),
        customer_email: Some("a@example.com".into()),
        ..NewCustomer::new("u42_chai_1", "chai")
    });
    let token = api.token().await;
    let got = api
        .get("/subscribe/customers/u42_chai_1", Some(&token))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.code(), Some(0));
    let c = got.response();
    assert_eq!(c["customer_uid"], "u42_chai_1");
    assert_eq!(c["pg_provider"], "chai");
    assert_eq!(c["pg_id"], "pk_live_123");
    assert_eq!(c["customer_name"], "홍길동");
    assert_eq!(c["customer_email"], "a@example.com");
    assert_eq!(c["card_name"], Value::Null);
    assert_eq!(c["customer_addr"], Value::Null);
    let inserted = c["inserted"].as_i64().expect("inserted");
    assert!((T0..=T0 + 1).contains(&inserted));
    assert_eq!(c["updated"].as_i64(), Some(inserted));

    let deleted = api
        .delete("/subscribe/customers/u42_chai_1", Some(&token))
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.response(), got.response());

    let not_found = json!({
        "code": 1,
        "message": "요청하신 customer_uid(u42_chai_1)로 등록된 정보를 찾을 수 없습니다.",
        "response": null
    });
    let gone = api
        .get("/subscribe/customers/u42_chai_1", Some(&token))
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json, not_found);
    let again_delete = api
        .delete("/subscribe/customers/u42_chai_1", Some(&token))
        .await;
    assert_eq!(again_delete.status, 404);
    assert_eq!(again_delete.json, not_found);
    assert!(sim.customer("u42_chai_1").is_none());

    let charge = api.again(&token, "u42_chai_1", "after_delete", 100).await;
    assert_eq!(charge.message(), Some("등록되지 않은 구매자입니다."));
}

// ---------------------------------------------------------------- cancel

#[tokio::test]
async fn full_cancel_marks_the_payment_cancelled_and_a_second_one_is_refused() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    let charged = api.again(&token, "cust_1", "order_c1", 9900).await;
    let imp_uid = charged.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    sim.advance_clock(60);

    let cancelled = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"imp_uid": imp_uid, "reason": "고객 요청"}),
        )
        .await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.code(), Some(0));
    let p = cancelled.response();
    assert_eq!(p["status"], "cancelled");
    assert_eq!(p["amount"], 9900);
    assert_eq!(p["cancel_amount"], 9900);
    assert_eq!(p["cancel_reason"], "고객 요청");
    let cancelled_at = p["cancelled_at"].as_i64().expect("cancelled_at");
    assert!(cancelled_at >= p["paid_at"].as_i64().expect("paid_at") + 60);
    let history = p["cancel_history"].as_array().expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["amount"], 9900);
    assert_eq!(history[0]["reason"], "고객 요청");
    assert_eq!(history[0]["cancelled_at"].as_i64(), Some(cancelled_at));
    assert_eq!(history[0]["pg_tid"], p["pg_tid"]);
    assert!(
        history[0]["cancellation_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    let twice = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"imp_uid": imp_uid}),
        )
        .await;
    assert_eq!(twice.status, 200);
    assert_eq!(twice.code(), Some(1));
    assert_eq!(twice.message(), Some("이미 전액 취소된 결제건입니다."));
    assert_eq!(twice.json["response"], Value::Null);

    // Refunded: the ledger shows it, and the order id cannot be charged again.
    let entry = sim.payment(&imp_uid).expect("in ledger");
    assert_eq!(entry.status, PaymentStatus::Cancelled);
    assert_eq!(entry.cancel_amount, 9900);
    assert_eq!(sim.paid_count("order_c1"), 0);
    let recharge = api.again(&token, "cust_1", "order_c1", 9900).await;
    assert_eq!(recharge.code(), Some(1));
}

#[tokio::test]
async fn partial_cancels_keep_the_payment_paid_until_fully_refunded() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    let token = api.token().await;
    api.again(&token, "cust_1", "order_p1", 9900).await;

    let part = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"merchant_uid": "order_p1", "amount": 3000, "checksum": 9900, "reason": "부분 환불"}),
        )
        .await;
    assert_eq!(part.code(), Some(0), "{}", part.text);
    assert_eq!(part.response()["status"], "paid");
    assert_eq!(part.response()["cancel_amount"], 3000);
    assert_eq!(part.response()["cancelled_at"], 0);

    let wrong_checksum = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"merchant_uid": "order_p1", "amount": 1000, "checksum": 9900}),
        )
        .await;
    assert_eq!(wrong_checksum.status, 200);
    assert_eq!(wrong_checksum.code(), Some(1));
    assert_eq!(wrong_checksum.json["response"], Value::Null);
    assert!(wrong_checksum.message().is_some_and(|m| m.contains("6900")));

    let too_much = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"merchant_uid": "order_p1", "amount": 7000}),
        )
        .await;
    assert_eq!(too_much.code(), Some(1));
    assert_eq!(too_much.json["response"], Value::Null);

    // The rest, as a form body, with no amount: everything left.
    let rest = api
        .post_form(
            "/payments/cancel",
            Some(&token),
            &[("merchant_uid", "order_p1"), ("checksum", "6900")],
        )
        .await;
    assert_eq!(rest.code(), Some(0), "{}", rest.text);
    let p = rest.response();
    assert_eq!(p["status"], "cancelled");
    assert_eq!(p["cancel_amount"], 9900);
    let history = p["cancel_history"].as_array().expect("history");
    let amounts: Vec<_> = history.iter().map(|h| h["amount"].as_i64()).collect();
    assert_eq!(amounts, [Some(3000), Some(6900)]);
    assert_ne!(history[0]["cancellation_id"], history[1]["cancellation_id"]);
    assert_eq!(history[1]["reason"], "");
}

#[tokio::test]
async fn cancel_of_unknown_or_unpaid_payments_is_refused() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.add_customer("cust_1", "chai");
    sim.decline_customer("cust_1", "잔액부족");
    let token = api.token().await;
    let failed = api.again(&token, "cust_1", "order_x", 9900).await;

    let unknown = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"imp_uid": "imps_123456789012"}),
        )
        .await;
    assert_eq!(unknown.status, 200);
    assert_eq!(
        unknown.json,
        json!({"code": 1, "message": "취소할 결제건이 존재하지 않습니다.", "response": null})
    );
    let by_merchant = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"merchant_uid": "order_x"}),
        )
        .await;
    assert_eq!(
        by_merchant.message(),
        Some("취소할 결제건이 존재하지 않습니다.")
    );

    let failed_one = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"imp_uid": failed.response()["imp_uid"]}),
        )
        .await;
    assert_eq!(failed_one.code(), Some(1));
    assert_eq!(failed_one.json["response"], Value::Null);

    let neither = api
        .post_json("/payments/cancel", Some(&token), json!({"reason": "?"}))
        .await;
    assert_eq!(neither.status, 400);
    assert_eq!(neither.code(), Some(-1));
    assert_eq!(sim.ledger()[0].status, PaymentStatus::Failed);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_envelopes() {
    let sim = start().await;
    let api = Api::new(&sim);
    let reply = api.get("/nope", None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), Some(-1));
    assert_eq!(reply.json["response"], Value::Null);
    let wrong_method = api.get("/users/getToken", None).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.code(), Some(-1));
}
