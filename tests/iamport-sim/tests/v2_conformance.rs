//! The V2 face against the official spec subset
//! (`/work/shared/portone-v2/v2-billing.openapi.json`, copied to
//! `spec/v2-billing.openapi.json`), read at test time: every answer of a
//! scripted session (window, key lookup, charges paid, declined and
//! refused, lookups, refunds, deletes, bad auth) must have a status the spec
//! documents for its operation, and a body that validates against that
//! status's schema: discriminated unions resolved by their mapping,
//! required fields present, enums respected, instants RFC 3339, and no
//! field the spec does not document. Also: the semantics the client relies
//! on (a decline is 502 `PG_PROVIDER` with the payment `FAILED`, paying a
//! paid id is 409 `ALREADY_PAID`, a deleted key reads `DELETED`).
//!
//! Cash receipts are checked against `spec/v2-cash-receipt.openapi.json`
//! (the same spec's cash-receipt operations, from `portone-io/server-sdk`).

mod common;

use std::time::Duration;

use common::{Api, Reply, start};
use iamport_sim::{Fault, FaultKind};
use serde_json::{Value, json};

struct Spec(Value);

impl Spec {
    fn load() -> Self {
        Self::load_file("v2-billing.openapi.json")
    }

    fn load_file(name: &str) -> Self {
        let path = format!("{}/spec/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).expect("spec readable");
        Self(serde_json::from_str(&text).expect("spec is JSON"))
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/components/schemas/");
            s = &self.0["components"]["schemas"][name];
            assert!(s.is_object(), "unresolved {r}");
        }
        s
    }

    /// The response schema of `method path` for `status`, if documented.
    fn response(&self, path: &str, method: &str, status: u16) -> Option<&Value> {
        let op = &self.0["paths"][path][method];
        assert!(op.is_object(), "spec has no {method} {path}");
        let r = &op["responses"][status.to_string()];
        r.is_object()
            .then(|| &r["content"]["application/json"]["schema"])
    }

    /// Problems of `value` against `schema`, at `at`.
    fn check(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        let s = self.resolve(schema);
        if let (Some(d), Some(variants)) = (s.get("discriminator"), s.get("oneOf")) {
            let prop = d["propertyName"].as_str().unwrap_or("type");
            let tag = value[prop].as_str().unwrap_or_default();
            match d["mapping"][tag].as_str() {
                Some(target) => {
                    self.check(&json!({"$ref": target}), value, at, problems);
                }
                None => problems.push(format!(
                    "{at}: {prop} {tag:?} is none of {:?}",
                    variants.as_array().map(Vec::len)
                )),
            }
            return;
        }
        if let Some(variants) = s.get("oneOf").and_then(Value::as_array) {
            let fits = variants.iter().any(|v| {
                let mut p = Vec::new();
                self.check(v, value, at, &mut p);
                p.is_empty()
            });
            if !fits {
                problems.push(format!("{at}: fits no variant"));
            }
            return;
        }
        match s.get("type").and_then(Value::as_str) {
            Some("object") | None if s.get("properties").is_some() => {
                let Some(obj) = value.as_object() else {
                    problems.push(format!("{at}: expected an object, got {value}"));
                    return;
                };
                let props = s["properties"].as_object().cloned().unwrap_or_default();
                for req in s["required"].as_array().into_iter().flatten() {
                    let name = req.as_str().unwrap_or_default();
                    if !obj.contains_key(name) {
                        problems.push(format!("{at}: required {name} missing"));
                    }
                }
                for (k, v) in obj {
                    match props.get(k) {
                        Some(p) => self.check(p, v, &format!("{at}.{k}"), problems),
                        None => problems.push(format!("{at}: undocumented field {k}")),
                    }
                }
            }
            Some("string") => {
                let Some(text) = value.as_str() else {
                    problems.push(format!("{at}: expected a string, got {value}"));
                    return;
                };
                if let Some(choices) = s.get("enum").and_then(Value::as_array)
                    && !choices.iter().any(|c| c == value)
                {
                    problems.push(format!("{at}: {text:?} not in the enum"));
                }
                if s.get("format").and_then(Value::as_str) == Some("date-time")
                    && chrono::DateTime::parse_from_rfc3339(text).is_err()
                {
                    problems.push(format!("{at}: {text:?} is not RFC 3339"));
                }
            }
            Some("integer") if !value.is_i64() => {
                problems.push(format!("{at}: expected an integer, got {value}"));
            }
            Some("boolean") if !value.is_boolean() => {
                problems.push(format!("{at}: expected a boolean, got {value}"));
            }
            Some("array") => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(&s["items"], item, &format!("{at}[{i}]"), problems);
                    }
                }
                None => problems.push(format!("{at}: expected an array, got {value}")),
            },
            _ => {}
        }
    }
}

/// One V2 session against a simulator, checking every answer as it goes.
struct Session {
    api: Api,
    spec: Spec,
    problems: Vec<String>,
    answers: usize,
}

const SECRET: &str = "PortOne sim_portone_api_secret";

impl Session {
    async fn call(
        &mut self,
        method: &str,
        spec_path: &str,
        path: &str,
        body: Option<Value>,
        auth: &str,
    ) -> Reply {
        let url = self.api.url(&format!("/portone{path}"));
        let request = match method {
            "get" => self.api.http.get(url),
            "delete" => self.api.http.delete(url),
            _ => self.api.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let reply = self.api.send(request.header("Authorization", auth)).await;
        self.answers += 1;
        match self.spec.response(spec_path, method, reply.status) {
            Some(schema) => {
                let schema = schema.clone();
                self.spec.check(
                    &schema,
                    &reply.json,
                    &format!("{method} {path} {}", reply.status),
                    &mut self.problems,
                );
            }
            None => self.problems.push(format!(
                "{method} {path}: status {} is not documented ({})",
                reply.status, reply.text
            )),
        }
        reply
    }

    async fn charge(&mut self, payment_id: &str, key: &str, amount: i64) -> Reply {
        self.call(
            "post",
            "/payments/{paymentId}/billing-key",
            &format!("/payments/{payment_id}/billing-key"),
            Some(json!({
                "storeId": "store-iamport-sim",
                "channelKey": "channel-key-iamport-sim",
                "billingKey": key,
                "orderName": "월간 구독",
                "amount": {"total": amount},
                "currency": "KRW",
            })),
            SECRET,
        )
        .await
    }

    async fn payment(&mut self, payment_id: &str) -> Reply {
        self.call(
            "get",
            "/payments/{paymentId}",
            &format!("/payments/{payment_id}"),
            None,
            SECRET,
        )
        .await
    }

    async fn cancel(&mut self, payment_id: &str, body: Value) -> Reply {
        self.call(
            "post",
            "/payments/{paymentId}/cancel",
            &format!("/payments/{payment_id}/cancel"),
            Some(body),
            SECRET,
        )
        .await
    }

    async fn key(&mut self, method: &str, key: &str) -> Reply {
        self.call(
            method,
            "/billing-keys/{billingKey}",
            &format!("/billing-keys/{key}"),
            None,
            SECRET,
        )
        .await
    }
}

#[tokio::test]
async fn every_v2_answer_matches_the_official_spec() {
    let sim = start().await;
    let mut s = Session {
        api: Api::new(&sim),
        spec: Spec::load(),
        problems: Vec::new(),
        answers: 0,
    };

    // The window, as PortOne.requestIssueBillingKey opens it.
    let mut window_url = url::Url::parse(&s.api.url("/portone/window")).unwrap();
    window_url.query_pairs_mut().extend_pairs([
        ("storeId", "store-iamport-sim"),
        ("channelKey", "channel-key-iamport-sim"),
        ("billingKeyMethod", "CARD"),
        ("issueId", "rSUBSCRIPTION1"),
        ("issueName", "월간 구독"),
        (
            "redirectUrl",
            "http://127.0.0.1:9/cb?merchant_uid=rSUBSCRIPTION1",
        ),
        ("customer.customerId", "cu1"),
    ]);
    let window = s.api.send(s.api.http.get(window_url.as_str())).await;
    assert_eq!(window.status, 302, "{}", window.text);
    let location = url::Url::parse(window.location.as_deref().expect("redirect")).unwrap();
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["merchant_uid"], "rSUBSCRIPTION1", "our query is kept");
    assert_eq!(query["transactionType"], "ISSUE_BILLING_KEY");
    let key = query["billingKey"].clone();
    assert!(key.starts_with("billing-key-"));

    let info = s.key("get", &key).await;
    assert_eq!(info.status, 200);
    assert_eq!(
        (
            info.json["status"].as_str(),
            info.json["issueId"].as_str(),
            info.json["customer"]["id"].as_str(),
            info.json["channels"][0]["key"].as_str()
        ),
        (
            Some("ISSUED"),
            Some("rSUBSCRIPTION1"),
            Some("cu1"),
            Some("channel-key-iamport-sim")
        )
    );

    // Paid, then the same paymentId again: 409 ALREADY_PAID, still one payment.
    let paid = s.charge("c1p0a1", &key, 9900).await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let again = s.charge("c1p0a1", &key, 9900).await;
    assert_eq!(
        (again.status, again.json["type"].as_str()),
        (409, Some("ALREADY_PAID"))
    );
    assert_eq!(sim.paid_count("c1p0a1"), 1);
    let p = s.payment("c1p0a1").await;
    assert_eq!(
        (
            p.json["status"].as_str(),
            p.json["amount"]["total"].as_i64(),
            p.json["billingKey"].as_str()
        ),
        (Some("PAID"), Some(9900), Some(key.as_str()))
    );

    // A decline: 502 PG_PROVIDER, and the payment reads FAILED.
    sim.inject(Fault::new(FaultKind::Decline {
        reason: "한도초과".into(),
    }));
    let declined = s.charge("c1p1a1", &key, 9900).await;
    assert_eq!(
        (declined.status, declined.json["type"].as_str()),
        (502, Some("PG_PROVIDER"))
    );
    let failed = s.payment("c1p1a1").await;
    assert_eq!(failed.json["status"], "FAILED");
    assert_eq!(failed.json["failure"]["pgMessage"], "한도초과");

    // Refunds: a wrong checksum, too much, a part, the rest, once more.
    let wrong = s
        .cancel(
            "c1p0a1",
            json!({"reason": "x", "currentCancellableAmount": 1}),
        )
        .await;
    assert_eq!(wrong.json["type"], "CANCELLABLE_AMOUNT_CONSISTENCY_BROKEN");
    let too_much = s
        .cancel("c1p0a1", json!({"reason": "x", "amount": 10_000}))
        .await;
    assert_eq!(
        too_much.json["type"],
        "CANCEL_AMOUNT_EXCEEDS_CANCELLABLE_AMOUNT"
    );
    let part = s
        .cancel(
            "c1p0a1",
            json!({"reason": "일부 환불", "amount": 900, "currentCancellableAmount": 9900}),
        )
        .await;
    assert_eq!(part.status, 200, "{}", part.text);
    assert_eq!(
        s.payment("c1p0a1").await.json["status"],
        "PARTIAL_CANCELLED"
    );
    let rest = s.cancel("c1p0a1", json!({"reason": "전액 환불"})).await;
    assert_eq!(rest.status, 200);
    let cancelled = s.payment("c1p0a1").await;
    assert_eq!(
        (
            cancelled.json["status"].as_str(),
            cancelled.json["amount"]["cancelled"].as_i64()
        ),
        (Some("CANCELLED"), Some(9900))
    );
    assert_eq!(
        s.cancel("c1p0a1", json!({"reason": "x"})).await.json["type"],
        "PAYMENT_ALREADY_CANCELLED"
    );
    assert_eq!(
        s.cancel("c1p1a1", json!({"reason": "x"})).await.json["type"],
        "PAYMENT_NOT_PAID"
    );

    // Not found, bad auth.
    assert_eq!(s.payment("nosuch1").await.json["type"], "PAYMENT_NOT_FOUND");
    assert_eq!(
        s.charge("c9p0a1", "billing-key-nosuch", 100).await.json["type"],
        "BILLING_KEY_NOT_FOUND"
    );
    let unauthorized = s
        .call(
            "get",
            "/payments/{paymentId}",
            "/payments/c1p0a1",
            None,
            "PortOne wrong",
        )
        .await;
    assert_eq!(
        (unauthorized.status, unauthorized.json["type"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );

    // Delete: DELETED stays readable; a second delete and a charge are 409.
    assert_eq!(s.key("delete", &key).await.status, 200);
    assert_eq!(s.key("get", &key).await.json["status"], "DELETED");
    assert_eq!(
        s.key("delete", &key).await.json["type"],
        "BILLING_KEY_ALREADY_DELETED"
    );
    assert_eq!(
        s.charge("c1p2a1", &key, 9900).await.json["type"],
        "BILLING_KEY_ALREADY_DELETED"
    );
    assert!(sim.v2_key_deleted(&key));

    assert!(
        s.problems.is_empty(),
        "{} of {} V2 answers break the spec:\n{}",
        s.problems.len(),
        s.answers,
        s.problems.join("\n")
    );
    println!(
        "v2 conformance: {} answers checked against the spec",
        s.answers
    );
}

#[tokio::test]
async fn cash_receipt_answers_match_the_official_spec() {
    let sim = start().await;
    let session = |spec| Session {
        api: Api::new(&sim),
        spec,
        problems: Vec::new(),
        answers: 0,
    };
    let mut pay = session(Spec::load());
    let mut cash = session(Spec::load_file("v2-cash-receipt.openapi.json"));
    let transfer = sim.add_v2_key_with_method(Some("rCASH1"), Some("cu1"), "TRANSFER");
    let easy = sim.add_v2_key_with_method(None, None, "EASY_PAY");
    let card = sim.add_v2_key(None, None);
    for (id, key) in [("cash1", &transfer), ("cash2", &easy), ("cash3", &card)] {
        assert_eq!(pay.charge(id, key, 11_000).await.status, 200);
    }
    let issue = |payment_id: &str, total: i64| {
        json!({
            "storeId": "store-iamport-sim",
            "paymentId": payment_id,
            "channelKey": "channel-key-iamport-sim",
            "type": "CORPORATE",
            "orderName": "월간 구독",
            "currency": "KRW",
            "amount": {"total": total, "taxFree": 1_000},
            "customer": {"identityNumber": "1234567890", "identityNumberType": "BUSINESS"},
            "productType": "DIGITAL",
            "paidAt": "2024-01-01T00:00:00Z",
        })
    };
    const ISSUE: &str = "/cash-receipts";
    const GET: &str = "/payments/{paymentId}/cash-receipt";
    const CANCEL: &str = "/payments/{paymentId}/cash-receipt/cancel";

    // Refusals: a card payment, a wrong total, an unknown payment, a bad body, bad auth.
    let card_refused = cash
        .call("post", ISSUE, ISSUE, Some(issue("cash3", 11_000)), SECRET)
        .await;
    assert_eq!(card_refused.json["type"], "INVALID_REQUEST");
    let mismatch = cash
        .call("post", ISSUE, ISSUE, Some(issue("cash1", 1)), SECRET)
        .await;
    assert_eq!(mismatch.json["type"], "INVALID_REQUEST");
    let unknown = cash
        .call("post", ISSUE, ISSUE, Some(issue("nosuch", 1)), SECRET)
        .await;
    assert_eq!(unknown.json["type"], "INVALID_REQUEST");
    let garbage = cash
        .call(
            "post",
            ISSUE,
            ISSUE,
            Some(json!({"paymentId": "cash1"})),
            SECRET,
        )
        .await;
    assert_eq!(garbage.json["type"], "INVALID_REQUEST");
    let mut other_channel = issue("cash1", 11_000);
    other_channel["channelKey"] = json!("channel-key-other");
    let channel = cash
        .call("post", ISSUE, ISSUE, Some(other_channel), SECRET)
        .await;
    assert_eq!(channel.json["type"], "CHANNEL_NOT_FOUND");
    let unauthorized = cash
        .call(
            "post",
            ISSUE,
            ISSUE,
            Some(issue("cash1", 11_000)),
            "PortOne x",
        )
        .await;
    assert_eq!(unauthorized.json["type"], "UNAUTHORIZED");
    let none = cash
        .call("get", GET, "/payments/cash1/cash-receipt", None, SECRET)
        .await;
    assert_eq!(none.json["type"], "CASH_RECEIPT_NOT_FOUND");
    let nothing = cash
        .call(
            "post",
            CANCEL,
            "/payments/cash1/cash-receipt/cancel",
            None,
            SECRET,
        )
        .await;
    assert_eq!(nothing.json["type"], "CASH_RECEIPT_NOT_FOUND");

    // The PG refuses once (502 PG_PROVIDER, as the spec's
    // x-portone-status-code gives it), then reads ISSUE_FAILED.
    sim.set_receipt_mode(iamport_sim::ReceiptMode::Fail { times: 1 });
    let pg = cash
        .call("post", ISSUE, ISSUE, Some(issue("cash2", 11_000)), SECRET)
        .await;
    assert_eq!(
        (pg.status, pg.json["type"].as_str()),
        (502, Some("PG_PROVIDER"))
    );
    let failed = cash
        .call("get", GET, "/payments/cash2/cash-receipt", None, SECRET)
        .await;
    assert_eq!(failed.json["status"], "ISSUE_FAILED");

    // Issued, shown, on the payment; then cancelled.
    for id in ["cash1", "cash2"] {
        let issued = cash
            .call("post", ISSUE, ISSUE, Some(issue(id, 11_000)), SECRET)
            .await;
        assert_eq!(issued.status, 200, "{}", issued.text);
        let again = cash
            .call("post", ISSUE, ISSUE, Some(issue(id, 11_000)), SECRET)
            .await;
        assert_eq!(again.json["type"], "CASH_RECEIPT_ALREADY_ISSUED");
        let shown = cash
            .call(
                "get",
                GET,
                &format!("/payments/{id}/cash-receipt"),
                None,
                SECRET,
            )
            .await;
        assert_eq!(shown.json["status"], "ISSUED");
        let payment = pay.payment(id).await;
        assert_eq!(payment.json["cashReceipt"]["status"], "ISSUED");
    }
    assert_eq!(
        pay.payment("cash1").await.json["method"]["type"],
        "PaymentMethodTransfer"
    );
    assert_eq!(
        pay.payment("cash2").await.json["method"]["type"],
        "PaymentMethodEasyPay"
    );
    assert_eq!(
        pay.payment("cash3").await.json["method"]["type"],
        "PaymentMethodCard"
    );
    let cancelled = cash
        .call(
            "post",
            CANCEL,
            "/payments/cash1/cash-receipt/cancel",
            None,
            SECRET,
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    let shown = cash
        .call("get", GET, "/payments/cash1/cash-receipt", None, SECRET)
        .await;
    assert_eq!(shown.json["status"], "CANCELLED");
    assert_eq!(
        pay.payment("cash1").await.json["cashReceipt"]["status"],
        "CANCELLED"
    );
    pay.cancel("cash1", json!({"reason": "부분", "amount": 1_000}))
        .await;
    assert_eq!(
        pay.payment("cash1").await.json["cashReceipt"]["status"],
        "CANCELLED"
    );
    pay.cancel("cash2", json!({"reason": "전액"})).await;
    assert_eq!(pay.payment("cash2").await.json["status"], "CANCELLED");

    // A second cancel: 404 CASH_RECEIPT_NOT_ISSUED, as the spec gives it.
    let twice = cash
        .call(
            "post",
            CANCEL,
            "/payments/cash1/cash-receipt/cancel",
            None,
            SECRET,
        )
        .await;
    assert_eq!(
        (twice.status, twice.json["type"].as_str()),
        (404, Some("CASH_RECEIPT_NOT_ISSUED"))
    );

    let problems: Vec<String> = pay.problems.into_iter().chain(cash.problems).collect();
    assert!(
        problems.is_empty(),
        "{} of {} answers break the spec:\n{}",
        problems.len(),
        pay.answers + cash.answers,
        problems.join("\n")
    );
}

#[tokio::test]
async fn v2_webhooks_are_signed_and_typed() {
    let sim = start().await;
    // A receiver that keeps what it got.
    let received =
        std::sync::Arc::new(std::sync::Mutex::new(
            Vec::<(String, String, String, String)>::new(),
        ));
    let keep = std::sync::Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = std::sync::Arc::clone(&keep);
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                keep.lock().unwrap().push((
                    h("webhook-id"),
                    h("webhook-timestamp"),
                    h("webhook-signature"),
                    body,
                ));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    sim.set_webhook(iamport_sim::WebhookSettings {
        url: Some(hook),
        ..Default::default()
    });
    let api = Api::new(&sim);
    let key = sim.add_v2_key(Some("rSUB2"), Some("cu2"));
    let paid = api
        .send(
            api.http
                .post(api.url("/portone/payments/c2p0a1/billing-key"))
                .header("Authorization", SECRET)
                .json(&json!({"billingKey": key, "orderName": "o", "amount": {"total": 500}, "currency": "KRW"})),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let sent = sim.wait_for_webhooks(1, Duration::from_secs(5)).await;
    assert_eq!(sent.len(), 1);
    let got = received.lock().unwrap().clone();
    let (id, ts, sig, body) = &got[0];
    let expected = {
        use base64::Engine as _;
        use hmac::{Hmac, KeyInit, Mac};
        let secret = base64::engine::general_purpose::STANDARD
            .decode("aWFtcG9ydC1zaW0gd2ViaG9vayBzZWNyZXQgMDAwMQ==")
            .unwrap();
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
        mac.update(format!("{id}.{ts}.{body}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    assert_eq!(sig, &expected, "signed over id.timestamp.body");
    assert!(id.starts_with("msg_"));
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], "Transaction.Paid");
    assert_eq!(event["data"]["paymentId"], "c2p0a1");
    assert_eq!(event["data"]["storeId"], "store-iamport-sim");
    assert!(
        event["data"]["transactionId"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}
