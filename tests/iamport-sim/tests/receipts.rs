//! Cash receipts (현금영수증) on both faces: V1 `POST|GET|DELETE /receipts/{imp_uid}`, V2
//! `POST /portone/cash-receipts`, `GET /portone/payments/{id}/cash-receipt[/cancel]`, the
//! receipt modes (`in_progress`, `fail`) and the control endpoints, and the V2 payment `method`.

mod common;

use common::{Api, Reply, start};
use iamport_sim::{CashReceiptKind, CashReceiptStatus, NewCustomer, ReceiptMode, SimHandle};
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000;
const SECRET: &str = "PortOne sim_portone_api_secret";
const IDENTIFIER: &str = "01012345678";

fn receipts(imp_uid: &str) -> String {
    format!("/receipts/{imp_uid}")
}

/// A paid CHAI (`trans`) payment of `amount` under `merchant_uid`; its imp_uid.
async fn paid_transfer(
    api: &Api,
    sim: &SimHandle,
    token: &str,
    merchant_uid: &str,
    amount: i64,
) -> String {
    if sim.customer("chai_1").is_none() {
        sim.add_customer("chai_1", "chai");
    }
    let paid = api.again(token, "chai_1", merchant_uid, amount).await;
    assert_eq!(paid.response()["status"], "paid", "{}", paid.text);
    assert_eq!(paid.response()["pay_method"], "trans");
    paid.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned()
}

async fn issue_v1(api: &Api, token: &str, imp_uid: &str, body: Value) -> Reply {
    api.post_json(&receipts(imp_uid), Some(token), body).await
}

// ---------------------------------------------------------------- V2 helpers

async fn v2(api: &Api, method: &str, path: &str, body: Option<Value>) -> Reply {
    let url = api.url(&format!("/portone{path}"));
    let request = match method {
        "get" => api.http.get(url),
        _ => match body {
            Some(body) => api.http.post(url).json(&body),
            None => api.http.post(url),
        },
    };
    api.send(request.header("Authorization", SECRET)).await
}

async fn v2_charge(api: &Api, payment_id: &str, key: &str, amount: i64) -> Reply {
    let reply = v2(
        api,
        "post",
        &format!("/payments/{payment_id}/billing-key"),
        Some(json!({
            "billingKey": key,
            "orderName": "월간 구독",
            "amount": {"total": amount},
            "currency": "KRW",
        })),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
}

fn issue_body(payment_id: &str, total: i64) -> Value {
    json!({
        "storeId": "store-iamport-sim",
        "paymentId": payment_id,
        "channelKey": "channel-key-iamport-sim",
        "type": "PERSONAL",
        "orderName": "월간 구독",
        "currency": "KRW",
        "amount": {"total": total},
        "customer": {"identityNumber": IDENTIFIER, "identityNumberType": "PHONE", "name": "홍길동"},
        "paymentMethod": "TRANSFER",
    })
}

async fn v2_issue(api: &Api, body: Value) -> Reply {
    v2(api, "post", "/cash-receipts", Some(body)).await
}

async fn v2_receipt(api: &Api, payment_id: &str) -> Reply {
    v2(
        api,
        "get",
        &format!("/payments/{payment_id}/cash-receipt"),
        None,
    )
    .await
}

async fn v2_cancel(api: &Api, payment_id: &str) -> Reply {
    v2(
        api,
        "post",
        &format!("/payments/{payment_id}/cash-receipt/cancel"),
        None,
    )
    .await
}

fn kind(reply: &Reply) -> (u16, Option<&str>) {
    (reply.status, reply.json["type"].as_str())
}

// ---------------------------------------------------------------- V1

#[tokio::test]
async fn v1_issues_looks_up_cancels_and_reissues_for_the_balance() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    let token = api.token().await;
    let imp_uid = paid_transfer(&api, &sim, &token, "order_cr_1", 11_000).await;

    // Issue with a form body, as the docs' samples do.
    let issued = api
        .post_form(
            &receipts(&imp_uid),
            Some(&token),
            &[
                ("identifier", IDENTIFIER),
                ("identifier_type", "phone"),
                ("type", "person"),
                ("buyer_name", "홍길동"),
            ],
        )
        .await;
    assert_eq!(
        (issued.status, issued.code()),
        (200, Some(0)),
        "{}",
        issued.text
    );
    assert_eq!(issued.json["message"], Value::Null);
    let first = issued.response().clone();
    assert_eq!(first["imp_uid"], imp_uid.as_str());
    assert_eq!(first["type"], "person");
    assert_eq!(first["amount"], 11_000);
    assert_eq!(first["vat"], 1_000);
    assert_eq!(first["cancelled_at"], 0);
    let applied_at = first["applied_at"].as_i64().expect("applied_at");
    assert!((T0..=T0 + 2).contains(&applied_at), "{applied_at}");
    let apply_num = first["apply_num"].as_str().expect("apply_num").to_owned();
    assert!(apply_num.len() == 9 && apply_num.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        first["receipt_url"],
        format!("https://receipts.iamport-sim.invalid/cash/{apply_num}")
    );
    assert!(
        first["receipt_tid"]
            .as_str()
            .is_some_and(|t| t.starts_with("chai_cr_"))
    );

    // Shown by the lookup and on the payment.
    let looked_up = api.get(&receipts(&imp_uid), Some(&token)).await;
    assert_eq!(looked_up.status, 200);
    assert_eq!(looked_up.response(), &first);
    let payment = api.get(&format!("/payments/{imp_uid}"), Some(&token)).await;
    assert_eq!(payment.response()["cash_receipt_issued"], true);

    // A second issuance is refused: already issued.
    let twice = issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER})).await;
    assert_eq!((twice.status, twice.code()), (400, Some(-1)));
    assert!(
        twice.message().is_some_and(|m| m.contains("이미")),
        "{}",
        twice.text
    );
    assert_eq!(twice.json["response"], Value::Null);

    // Cancel: the annotation now carries cancelled_at; a second cancel has nothing to cancel.
    sim.advance_clock(60);
    let cancelled = api.delete(&receipts(&imp_uid), Some(&token)).await;
    assert_eq!(
        (cancelled.status, cancelled.code()),
        (200, Some(0)),
        "{}",
        cancelled.text
    );
    let cancelled_at = cancelled.response()["cancelled_at"]
        .as_i64()
        .expect("cancelled_at");
    assert!(cancelled_at >= T0 + 60);
    assert_eq!(cancelled.response()["apply_num"], apply_num.as_str());
    let after = api.get(&receipts(&imp_uid), Some(&token)).await;
    assert_eq!(after.response()["cancelled_at"], cancelled_at);
    assert_eq!(
        api.delete(&receipts(&imp_uid), Some(&token)).await.status,
        400
    );
    let payment = api.get(&format!("/payments/{imp_uid}"), Some(&token)).await;
    assert_eq!(payment.response()["cash_receipt_issued"], false);

    // A partial refund, then a new receipt for what is left, with a tax-free part.
    let refund = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"imp_uid": imp_uid, "amount": 3_000, "reason": "부분환불"}),
        )
        .await;
    assert_eq!(refund.response()["cancel_amount"], 3_000);
    let reissued = issue_v1(
        &api,
        &token,
        &imp_uid,
        json!({"identifier": "1234567890", "identifier_type": "business", "type": "company", "tax_free": 1_000}),
    )
    .await;
    assert_eq!(reissued.status, 200, "{}", reissued.text);
    let second = reissued.response();
    assert_eq!(second["amount"], 8_000);
    assert_eq!(second["vat"], 7_000 / 11);
    assert_eq!(second["type"], "company");
    assert_ne!(second["apply_num"], apply_num.as_str());
    assert_eq!(
        api.get(&receipts(&imp_uid), Some(&token)).await.response(),
        second
    );

    // The history, by imp_uid or merchant_uid.
    let history = sim.cash_receipts(&imp_uid);
    assert_eq!(history, sim.cash_receipts("order_cr_1"));
    assert_eq!(
        history
            .iter()
            .map(|r| (
                r.status,
                r.kind,
                r.amount,
                r.tax_free,
                r.vat,
                r.identifier.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![
            (
                CashReceiptStatus::Cancelled,
                CashReceiptKind::Person,
                11_000,
                0,
                1_000,
                IDENTIFIER
            ),
            (
                CashReceiptStatus::Issued,
                CashReceiptKind::Company,
                8_000,
                1_000,
                636,
                "1234567890"
            ),
        ]
    );
    assert_eq!(history[0].cancelled_at, Some(cancelled_at));
    assert_eq!(history[0].issued_at, Some(applied_at));
    assert_eq!(history[1].identifier_type.as_deref(), Some("business"));
    assert!(
        !format!("{history:?}").contains(IDENTIFIER),
        "Debug masks identifiers"
    );
}

#[tokio::test]
async fn v1_refuses_cards_unpaid_payments_bad_params_and_unknown_ids() {
    let sim = start().await;
    let api = Api::new(&sim);
    let token = api.token().await;
    let body = json!({"identifier": IDENTIFIER});

    // A card payment is not a cash transaction.
    sim.add_customer_with(NewCustomer {
        card_name: Some("신한카드".into()),
        ..NewCustomer::new("card_1", "nice")
    });
    let card = api.again(&token, "card_1", "order_card", 5_000).await;
    let card_uid = card.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    let refused = issue_v1(&api, &token, &card_uid, body.clone()).await;
    assert_eq!((refused.status, refused.code()), (400, Some(-1)));
    assert!(
        refused.message().is_some_and(|m| m.contains("현금성 거래")),
        "{}",
        refused.text
    );

    // A declined payment, a fully refunded one.
    sim.add_customer("chai_1", "chai");
    sim.decline_customer("chai_1", "잔액부족");
    let failed = api.again(&token, "chai_1", "order_failed", 5_000).await;
    let failed_uid = failed.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    sim.clear_decline("chai_1");
    let not_paid = issue_v1(&api, &token, &failed_uid, body.clone()).await;
    assert_eq!(not_paid.status, 400);
    assert!(
        not_paid.message().is_some_and(|m| m.contains("failed")),
        "{}",
        not_paid.text
    );
    let refunded_uid = paid_transfer(&api, &sim, &token, "order_refunded", 5_000).await;
    let refund = api
        .post_json(
            "/payments/cancel",
            Some(&token),
            json!({"imp_uid": refunded_uid}),
        )
        .await;
    assert_eq!(refund.response()["status"], "cancelled");
    assert_eq!(
        issue_v1(&api, &token, &refunded_uid, body.clone())
            .await
            .status,
        400
    );

    // Parameters: identifier required, type person|company, tax_free within the amount.
    let paid_uid = paid_transfer(&api, &sim, &token, "order_ok", 5_000).await;
    for bad in [
        json!({}),
        json!({"identifier": ""}),
        json!({"identifier": IDENTIFIER, "type": "corporate"}),
        json!({"identifier": IDENTIFIER, "identifier_type": "email"}),
        json!({"identifier": IDENTIFIER, "tax_free": "100"}),
        json!({"identifier": IDENTIFIER, "tax_free": -1}),
        json!({"identifier": IDENTIFIER, "tax_free": 5_001}),
    ] {
        let reply = issue_v1(&api, &token, &paid_uid, bad.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, Some(-1)),
            "{bad}: {}",
            reply.text
        );
        assert!(reply.message().is_some_and(|m| !m.contains(IDENTIFIER)));
    }
    let missing = issue_v1(&api, &token, &paid_uid, json!({})).await;
    assert!(missing.message().is_some_and(|m| m.contains("identifier")));

    // Nothing issued yet: GET is 404, DELETE 400; unknown imp_uid 404 everywhere.
    let none = api.get(&receipts(&paid_uid), Some(&token)).await;
    assert_eq!((none.status, none.code()), (404, Some(-1)));
    assert_eq!(none.json["response"], Value::Null);
    assert_eq!(
        api.delete(&receipts(&paid_uid), Some(&token)).await.status,
        400
    );
    for reply in [
        issue_v1(&api, &token, "imps_000000000000", body.clone()).await,
        api.get(&receipts("imps_000000000000"), Some(&token)).await,
        api.delete(&receipts("imps_000000000000"), Some(&token))
            .await,
    ] {
        assert_eq!(
            (reply.status, reply.code()),
            (404, Some(-1)),
            "{}",
            reply.text
        );
        assert_eq!(reply.json["response"], Value::Null);
    }

    // No token: 401, nothing issued.
    assert_eq!(
        api.post_json(&receipts(&paid_uid), None, body.clone())
            .await
            .status,
        401
    );
    assert_eq!(api.get(&receipts(&paid_uid), None).await.status, 401);
    assert_eq!(api.delete(&receipts(&paid_uid), None).await.status, 401);
    assert_eq!(
        api.post_form(&receipts(&paid_uid), Some("wrong"), &[("identifier", "1")])
            .await
            .status,
        401
    );

    assert!(
        sim.all_cash_receipts().is_empty(),
        "{:?}",
        sim.all_cash_receipts()
    );
}

// ---------------------------------------------------------------- V2

#[tokio::test]
async fn v2_issues_looks_up_cancels_and_refuses() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    let key = sim.add_v2_key_with_method(Some("rCR1"), Some("cu1"), "TRANSFER");
    v2_charge(&api, "cr1", &key, 11_000).await;

    // Refused before anything is issued.
    let mismatch = v2_issue(&api, issue_body("cr1", 10_000)).await;
    assert_eq!(
        kind(&mismatch),
        (400, Some("INVALID_REQUEST")),
        "{}",
        mismatch.text
    );
    assert!(
        mismatch.json["message"]
            .as_str()
            .is_some_and(|m| m.contains("11000"))
    );
    assert_eq!(
        kind(&v2_issue(&api, issue_body("nosuch", 11_000)).await),
        (400, Some("INVALID_REQUEST"))
    );
    let mut no_identity = issue_body("cr1", 11_000);
    no_identity["customer"] = json!({"name": "홍길동"});
    let mut tax_free = issue_body("cr1", 11_000);
    tax_free["amount"]["taxFree"] = json!(11_001);
    let mut corporate_typo = issue_body("cr1", 11_000);
    corporate_typo["type"] = json!("COMPANY");
    let mut dollars = issue_body("cr1", 11_000);
    dollars["currency"] = json!("USD");
    for body in [no_identity, tax_free, corporate_typo, dollars] {
        let reply = v2_issue(&api, body.clone()).await;
        assert_eq!(
            kind(&reply),
            (400, Some("INVALID_REQUEST")),
            "{body}: {}",
            reply.text
        );
    }
    let mut other_channel = issue_body("cr1", 11_000);
    other_channel["channelKey"] = json!("channel-key-other");
    assert_eq!(
        kind(&v2_issue(&api, other_channel).await),
        (404, Some("CHANNEL_NOT_FOUND"))
    );
    let mut other_store = issue_body("cr1", 11_000);
    other_store["storeId"] = json!("store-other");
    assert_eq!(
        kind(&v2_issue(&api, other_store).await),
        (403, Some("FORBIDDEN"))
    );
    let unauthorized = api
        .send(
            api.http
                .post(api.url("/portone/cash-receipts"))
                .json(&issue_body("cr1", 11_000)),
        )
        .await;
    assert_eq!(kind(&unauthorized), (401, Some("UNAUTHORIZED")));
    assert!(sim.cash_receipts("cr1").is_empty());
    assert_eq!(
        kind(&v2_receipt(&api, "cr1").await),
        (404, Some("CASH_RECEIPT_NOT_FOUND"))
    );
    assert_eq!(
        kind(&v2_cancel(&api, "cr1").await),
        (404, Some("CASH_RECEIPT_NOT_FOUND"))
    );

    // Issued.
    let mut body = issue_body("cr1", 11_000);
    body["amount"]["taxFree"] = json!(1_100);
    let issued = v2_issue(&api, body).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let summary = &issued.json["cashReceipt"];
    let issue_number = summary["issueNumber"]
        .as_str()
        .expect("issueNumber")
        .to_owned();
    assert_eq!(
        summary["url"],
        format!("https://receipts.iamport-sim.invalid/cash/{issue_number}")
    );
    assert!(
        summary["pgReceiptId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(
        summary.as_object().map(|o| o.len()),
        Some(3),
        "CashReceiptSummary has issueNumber, url, pgReceiptId"
    );
    let again = v2_issue(&api, issue_body("cr1", 11_000)).await;
    assert_eq!(kind(&again), (409, Some("CASH_RECEIPT_ALREADY_ISSUED")));

    let receipt = v2_receipt(&api, "cr1").await;
    assert_eq!(receipt.status, 200, "{}", receipt.text);
    let r = &receipt.json;
    assert_eq!(r["status"], "ISSUED");
    assert_eq!(r["paymentId"], "cr1");
    assert_eq!(r["amount"], 11_000);
    assert_eq!(r["taxFreeAmount"], 1_100);
    assert_eq!(r["vatAmount"], 900);
    assert_eq!(r["currency"], "KRW");
    assert_eq!(r["type"], "PERSONAL");
    assert_eq!(r["isManual"], false);
    assert_eq!(r["orderName"], "월간 구독");
    assert_eq!(r["issueNumber"], issue_number.as_str());
    assert_eq!(r["pgReceiptId"], summary["pgReceiptId"]);
    assert_eq!(r["channel"]["key"], "channel-key-iamport-sim");
    assert!(
        r["issuedAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("2023-11-14T22:1"))
    );
    assert!(r.get("cancelledAt").is_none());
    let payment = v2(&api, "get", "/payments/cr1", None).await;
    assert_eq!(payment.json["cashReceipt"]["status"], "ISSUED");
    assert_eq!(
        payment.json["cashReceipt"]["issueNumber"],
        issue_number.as_str()
    );
    // The V1 face sees the same receipt.
    let record = &sim.cash_receipts("cr1")[0];
    assert!(record.v2);
    assert_eq!(
        sim.payment(&record.imp_uid).map(|p| p.cash_receipt_issued),
        Some(true)
    );

    // Cancel, then cancel again.
    let cancelled = v2_cancel(&api, "cr1").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json["cancelledAmount"], 11_000);
    let cancelled_at = cancelled.json["cancelledAt"]
        .as_str()
        .expect("cancelledAt")
        .to_owned();
    let after = v2_receipt(&api, "cr1").await;
    assert_eq!(after.json["status"], "CANCELLED");
    assert_eq!(after.json["cancelledAt"], cancelled_at.as_str());
    assert_eq!(after.json["statusUpdatedAt"], cancelled_at.as_str());
    assert_eq!(
        kind(&v2_cancel(&api, "cr1").await),
        (404, Some("CASH_RECEIPT_NOT_ISSUED"))
    );
    assert_eq!(
        v2(&api, "get", "/payments/cr1", None).await.json["cashReceipt"]["status"],
        "CANCELLED"
    );

    // A partial refund; the new receipt must be for the balance.
    let refund = v2(
        &api,
        "post",
        "/payments/cr1/cancel",
        Some(json!({"reason": "부분 환불", "amount": 4_000})),
    )
    .await;
    assert_eq!(refund.status, 200, "{}", refund.text);
    assert_eq!(
        kind(&v2_issue(&api, issue_body("cr1", 11_000)).await),
        (400, Some("INVALID_REQUEST"))
    );
    let reissued = v2_issue(&api, issue_body("cr1", 7_000)).await;
    assert_eq!(reissued.status, 200, "{}", reissued.text);
    assert_ne!(
        reissued.json["cashReceipt"]["issueNumber"],
        issue_number.as_str()
    );
    let newest = v2_receipt(&api, "cr1").await;
    assert_eq!(
        (
            newest.json["status"].as_str(),
            newest.json["amount"].as_i64()
        ),
        (Some("ISSUED"), Some(7_000))
    );
    assert_eq!(newest.json["vatAmount"], 636);
    assert_eq!(
        sim.cash_receipts("cr1")
            .iter()
            .map(|r| (r.status, r.amount))
            .collect::<Vec<_>>(),
        vec![
            (CashReceiptStatus::Cancelled, 11_000),
            (CashReceiptStatus::Issued, 7_000)
        ]
    );

    // A card payment and an unpaid (fully refunded) one are refused.
    let card_key = sim.add_v2_key(Some("rCR2"), Some("cu2"));
    v2_charge(&api, "cr2", &card_key, 5_000).await;
    let card = v2_issue(&api, issue_body("cr2", 5_000)).await;
    assert_eq!(kind(&card), (400, Some("INVALID_REQUEST")), "{}", card.text);
    v2_charge(&api, "cr3", &key, 5_000).await;
    let full = v2(
        &api,
        "post",
        "/payments/cr3/cancel",
        Some(json!({"reason": "전액"})),
    )
    .await;
    assert_eq!(full.status, 200);
    assert_eq!(
        kind(&v2_issue(&api, issue_body("cr3", 5_000)).await),
        (400, Some("INVALID_REQUEST"))
    );
    assert!(sim.cash_receipts("cr2").is_empty() && sim.cash_receipts("cr3").is_empty());
}

#[tokio::test]
async fn v2_payments_name_their_method() {
    let sim = start().await;
    let api = Api::new(&sim);
    let method = |reply: &Reply| reply.json["method"].clone();

    let card = sim.add_v2_key(None, None);
    v2_charge(&api, "m1", &card, 1_000).await;
    let card_method = method(&v2(&api, "get", "/payments/m1", None).await);
    assert_eq!(card_method["type"], "PaymentMethodCard");
    assert_eq!(card_method["card"]["number"], "53275000****1234");

    let transfer = sim.add_v2_key_with_method(None, None, "TRANSFER");
    v2_charge(&api, "m2", &transfer, 1_000).await;
    assert_eq!(
        method(&v2(&api, "get", "/payments/m2", None).await),
        json!({"type": "PaymentMethodTransfer", "bank": "KOOKMIN"})
    );

    let easy = sim.add_v2_key_with_method(None, None, "EASY_PAY");
    v2_charge(&api, "m3", &easy, 1_000).await;
    assert_eq!(
        method(&v2(&api, "get", "/payments/m3", None).await),
        json!({"type": "PaymentMethodEasyPay", "easyPayMethod": {"type": "PaymentMethodTransfer", "bank": "KOOKMIN"}})
    );
    // An account-funded easy pay may get a cash receipt.
    assert_eq!(v2_issue(&api, issue_body("m3", 1_000)).await.status, 200);

    // A V1 CHAI key (pay_method trans) charged through V2: a transfer.
    sim.add_customer("chai_v1", "chai");
    v2_charge(&api, "m4", "chai_v1", 1_000).await;
    assert_eq!(
        method(&v2(&api, "get", "/payments/m4", None).await)["type"],
        "PaymentMethodTransfer"
    );

    // V1 sees the V2 keys' payments with the matching pay_method.
    let pay_method = |merchant_uid: &str| {
        sim.payments_for(merchant_uid)
            .first()
            .and_then(|p| p.pay_method.clone())
    };
    assert_eq!(pay_method("m1").as_deref(), Some("card"));
    assert_eq!(pay_method("m2").as_deref(), Some("trans"));
    assert_eq!(pay_method("m3").as_deref(), Some("trans"));
    let key = api
        .get(&format!("/portone/billing-keys/{transfer}"), None)
        .await;
    assert_eq!(key.status, 401, "V2 routes need the V2 secret");
    let key = v2(&api, "get", &format!("/billing-keys/{transfer}"), None).await;
    assert_eq!(
        key.json["methods"][0]["type"],
        "BillingKeyPaymentMethodTransfer"
    );
}

// ---------------------------------------------------------------- modes

#[tokio::test]
async fn in_progress_answers_504_hides_the_receipt_then_shows_it_issued_once_v1() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    let token = api.token().await;
    let imp_uid = paid_transfer(&api, &sim, &token, "order_slow", 5_500).await;
    sim.set_receipt_mode(ReceiptMode::InProgress { secs: 60 });

    let slow = issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER})).await;
    assert_eq!((slow.status, slow.code()), (504, Some(-1)), "{}", slow.text);
    assert_eq!(slow.message(), Some("현금영수증 발행 처리 중"));
    assert_eq!(sim.receipt_mode(), ReceiptMode::Normal, "used up");
    assert_eq!(api.get(&receipts(&imp_uid), Some(&token)).await.status, 404);
    assert_eq!(
        api.delete(&receipts(&imp_uid), Some(&token)).await.status,
        400
    );
    assert_eq!(
        api.get(&format!("/payments/{imp_uid}"), Some(&token))
            .await
            .response()["cash_receipt_issued"],
        false
    );
    // A retry meanwhile: the same 504, no second issuance.
    let retry = issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER})).await;
    assert_eq!(
        (retry.status, retry.message()),
        (504, Some("현금영수증 발행 처리 중"))
    );
    let records = sim.cash_receipts(&imp_uid);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, CashReceiptStatus::InProgress);

    sim.advance_clock(61);
    let shown = api.get(&receipts(&imp_uid), Some(&token)).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.response()["amount"], 5_500);
    assert_eq!(shown.response()["cancelled_at"], 0);
    assert!(
        shown.response()["applied_at"]
            .as_i64()
            .is_some_and(|t| t >= T0 + 60)
    );
    let late_retry = issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER})).await;
    assert_eq!(late_retry.status, 400);
    assert!(late_retry.message().is_some_and(|m| m.contains("이미")));
    let records = sim.cash_receipts(&imp_uid);
    assert_eq!(records.len(), 1, "at most once: {records:?}");
    assert_eq!(records[0].status, CashReceiptStatus::Issued);
}

#[tokio::test]
async fn in_progress_answers_504_hides_the_receipt_then_shows_it_issued_once_v2() {
    let sim = start().await;
    let api = Api::new(&sim);
    sim.set_clock(T0);
    let key = sim.add_v2_key_with_method(None, None, "TRANSFER");
    v2_charge(&api, "slow1", &key, 5_500).await;
    sim.set_receipt_mode(ReceiptMode::InProgress { secs: 30 });

    let slow = v2_issue(&api, issue_body("slow1", 5_500)).await;
    assert_eq!(kind(&slow), (504, Some("PG_PROVIDER")), "{}", slow.text);
    assert_eq!(
        kind(&v2_receipt(&api, "slow1").await),
        (404, Some("CASH_RECEIPT_NOT_FOUND"))
    );
    assert_eq!(
        kind(&v2_cancel(&api, "slow1").await),
        (404, Some("CASH_RECEIPT_NOT_FOUND"))
    );
    assert!(
        v2(&api, "get", "/payments/slow1", None)
            .await
            .json
            .get("cashReceipt")
            .is_none()
    );
    assert_eq!(
        kind(&v2_issue(&api, issue_body("slow1", 5_500)).await),
        (504, Some("PG_PROVIDER"))
    );
    assert_eq!(sim.cash_receipts("slow1").len(), 1);

    sim.advance_clock(31);
    let shown = v2_receipt(&api, "slow1").await;
    assert_eq!(
        (shown.status, shown.json["status"].as_str()),
        (200, Some("ISSUED")),
        "{}",
        shown.text
    );
    assert_eq!(
        kind(&v2_issue(&api, issue_body("slow1", 5_500)).await),
        (409, Some("CASH_RECEIPT_ALREADY_ISSUED"))
    );
    let records = sim.cash_receipts("slow1");
    assert_eq!(records.len(), 1, "at most once: {records:?}");
    assert_eq!(records[0].status, CashReceiptStatus::Issued);
}

#[tokio::test]
async fn fail_mode_refuses_at_the_pg_on_both_faces() {
    let sim = start().await;
    let api = Api::new(&sim);
    let token = api.token().await;

    // V1: 500, nothing issued, twice; then issued.
    let imp_uid = paid_transfer(&api, &sim, &token, "order_fail", 3_300).await;
    sim.set_receipt_mode(ReceiptMode::Fail { times: 2 });
    for left in [ReceiptMode::Fail { times: 1 }, ReceiptMode::Normal] {
        let failed = issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER})).await;
        assert_eq!(
            (failed.status, failed.code()),
            (500, Some(-1)),
            "{}",
            failed.text
        );
        assert_eq!(failed.message(), Some("[PG] 현금영수증 발급 실패"));
        assert_eq!(sim.receipt_mode(), left);
        assert_eq!(api.get(&receipts(&imp_uid), Some(&token)).await.status, 404);
    }
    assert_eq!(
        issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER}))
            .await
            .status,
        200
    );
    assert_eq!(
        sim.cash_receipts(&imp_uid)
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        vec![
            CashReceiptStatus::Failed,
            CashReceiptStatus::Failed,
            CashReceiptStatus::Issued
        ]
    );
    assert!(sim.cash_receipts(&imp_uid)[0].apply_num.is_none());

    // V2: 502 PG_PROVIDER, then the lookup reads ISSUE_FAILED until a later issuance.
    let key = sim.add_v2_key_with_method(None, None, "TRANSFER");
    v2_charge(&api, "fail1", &key, 3_300).await;
    sim.set_receipt_mode(ReceiptMode::Fail { times: 1 });
    let failed = v2_issue(&api, issue_body("fail1", 3_300)).await;
    assert_eq!(kind(&failed), (502, Some("PG_PROVIDER")), "{}", failed.text);
    assert_eq!(failed.json["pgCode"], "CR01");
    assert_eq!(failed.json["pgMessage"], "현금영수증 발급 실패");
    let lookup = v2_receipt(&api, "fail1").await;
    assert_eq!(
        (lookup.status, lookup.json["status"].as_str()),
        (200, Some("ISSUE_FAILED")),
        "{}",
        lookup.text
    );
    assert_eq!(lookup.json["paymentId"], "fail1");
    assert!(lookup.json.get("issueNumber").is_none());
    assert_eq!(
        kind(&v2_cancel(&api, "fail1").await),
        (404, Some("CASH_RECEIPT_NOT_ISSUED"))
    );
    assert_eq!(v2_issue(&api, issue_body("fail1", 3_300)).await.status, 200);
    assert_eq!(v2_receipt(&api, "fail1").await.json["status"], "ISSUED");
}

#[tokio::test]
async fn receipt_control_endpoints_set_the_mode_list_masked_records_and_reset() {
    let sim = start().await;
    let api = Api::new(&sim);
    let token = api.token().await;
    let imp_uid = paid_transfer(&api, &sim, &token, "order_ctl", 2_200).await;

    let set = api
        .post_json("/__sim/receipts", None, json!({"mode": "fail", "times": 1}))
        .await;
    assert_eq!(set.json, json!({"mode": "fail", "times": 1}));
    assert_eq!(sim.receipt_mode(), ReceiptMode::Fail { times: 1 });
    assert_eq!(
        issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER}))
            .await
            .status,
        500
    );
    let set = api
        .post_json(
            "/__sim/receipts",
            None,
            json!({"mode": "in_progress", "secs": 5}),
        )
        .await;
    assert_eq!(set.json, json!({"mode": "in_progress", "secs": 5}));
    assert_eq!(
        api.post_json("/__sim/receipts", None, json!({"mode": "normal"}))
            .await
            .json,
        json!({"mode": "normal"})
    );
    assert_eq!(
        api.post_json("/__sim/receipts", None, json!({"mode": "explode"}))
            .await
            .status,
        400
    );
    assert_eq!(
        issue_v1(&api, &token, &imp_uid, json!({"identifier": IDENTIFIER}))
            .await
            .status,
        200
    );

    let listed = api.get("/__sim/receipts", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["mode"], json!({"mode": "normal"}));
    let records = listed.json["receipts"].as_array().expect("receipts");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["status"], "failed");
    assert_eq!(records[1]["status"], "issued");
    assert_eq!(records[1]["imp_uid"], imp_uid.as_str());
    assert_eq!(records[1]["payment_id"], "order_ctl");
    assert_eq!(records[1]["kind"], "person");
    assert_eq!(records[1]["amount"], 2_200);
    assert_eq!(records[1]["identifier"], "*******5678");
    assert!(
        !listed.text.contains(IDENTIFIER),
        "identifiers are masked: {}",
        listed.text
    );
    let one = api.get(&format!("/__sim/receipts/{imp_uid}"), None).await;
    assert_eq!(one.json.as_array().map(Vec::len), Some(2));
    assert_eq!(
        api.get("/__sim/receipts/order_ctl", None).await.json,
        one.json
    );
    assert_eq!(
        api.get("/__sim/receipts/nosuch", None).await.json,
        json!([])
    );

    sim.set_receipt_mode(ReceiptMode::Fail { times: 3 });
    api.post_json("/__sim/reset", None, json!({})).await;
    assert_eq!(sim.receipt_mode(), ReceiptMode::Normal);
    assert!(sim.all_cash_receipts().is_empty());
}
