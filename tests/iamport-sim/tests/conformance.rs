//! Conformance: every simulator answer for the endpoints we use is checked against the
//! official V1 spec (`spec/v1.openapi.yml`, Swagger 2.0), read at test time.
//!
//! The checker resolves `$ref`s under `definitions`, merges `allOf`, and checks that required
//! fields are present and not null, that types match (integer/number/string/boolean/array/
//! object), that strings respect `maxLength`, and that no undocumented field is sent (a typo in
//! a field name fails here). Fields that are not required may be null. Documented exceptions
//! are listed in [`NULL_ALLOWED`].

mod common;

use common::{AGAIN, Api, Reply, start};
use iamport_sim::NewCustomer;
use serde_json::{Map, Value, json};

/// Required fields the real API is documented to send as `null`.
const NULL_ALLOWED: &[(&str, &str)] = &[
    // Spec marks card_name required, but non-card keys (CHAI is account-based, PayPal per the
    // spec's own per-PG note) carry `card_name: null` (docs §5.2, §9.9).
    ("CustomerAnnotation", "card_name"),
];

/// Statuses the spec does not list for an operation that the simulator
/// answers on purpose (with why).
const UNDOCUMENTED_STATUSES: &[(&str, &str, u16)] = &[
    // An unknown imp_uid: 404 as `GET /receipts/{imp_uid}` documents
    // ("존재하지 않는 포트원 거래정보"); POST and DELETE list no 404.
    (RECEIPT, "post", 404),
    (RECEIPT, "delete", 404),
];

struct Spec {
    root: Value,
}

impl Spec {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/v1.openapi.yml");
        let text = std::fs::read_to_string(path).expect("spec readable");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("spec is YAML");
        let root = serde_json::to_value(yaml).expect("spec converts to JSON");
        assert_eq!(root["swagger"], "2.0");
        Self { root }
    }

    fn operation(&self, path: &str, method: &str) -> &Value {
        let op = &self.root["paths"][path][method];
        assert!(op.is_object(), "spec has no {method} {path}");
        op
    }

    /// The documented schema of one response, if any.
    fn response_schema(&self, path: &str, method: &str, status: u16) -> Option<&Value> {
        let schema = &self.operation(path, method)["responses"][status.to_string()]["schema"];
        (!schema.is_null()).then_some(schema)
    }

    fn documents_status(&self, path: &str, method: &str, status: u16) -> bool {
        !self.operation(path, method)["responses"][status.to_string()].is_null()
    }

    fn definition(&self, name: &str) -> &Value {
        let def = &self.root["definitions"][name];
        assert!(def.is_object(), "spec has no definition {name}");
        def
    }

    /// Follow a `$ref` chain; returns the schema and the definition name it came from.
    fn resolve<'a>(
        &'a self,
        schema: &'a Value,
        name: Option<&'a str>,
    ) -> (&'a Value, Option<&'a str>) {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let def_name = reference
                    .strip_prefix("#/definitions/")
                    .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
                self.resolve(self.definition(def_name), Some(def_name))
            }
            None => (schema, name),
        }
    }
}

/// A schema with `$ref` resolved and `allOf` merged.
#[derive(Default)]
struct Flat {
    name: Option<String>,
    ty: Option<String>,
    properties: Map<String, Value>,
    required: Vec<String>,
    items: Option<Value>,
    max_length: Option<u64>,
    nullable: bool,
}

fn flatten(spec: &Spec, schema: &Value, name: Option<&str>, into: &mut Flat) {
    let (schema, name) = spec.resolve(schema, name);
    if into.name.is_none() {
        into.name = name.map(str::to_owned);
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            flatten(spec, part, None, into);
        }
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        into.ty = Some(ty.to_owned());
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        into.properties
            .extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
        if into.ty.is_none() {
            into.ty = Some("object".to_owned());
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        into.required
            .extend(required.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if let Some(items) = schema.get("items") {
        into.items = Some(items.clone());
    }
    // maxLength appears both as a number and as a string in this spec.
    into.max_length = into.max_length.or_else(|| match schema.get("maxLength") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    });
    into.nullable |= schema.get("x-nullable").and_then(Value::as_bool) == Some(true);
}

struct Checker<'a> {
    spec: &'a Spec,
    errors: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(spec: &'a Spec) -> Self {
        Self {
            spec,
            errors: Vec::new(),
        }
    }

    fn check(&mut self, schema: &Value, value: &Value, at: &str) {
        let mut flat = Flat::default();
        flatten(self.spec, schema, None, &mut flat);
        self.check_flat(&flat, value, at);
    }

    fn check_flat(&mut self, flat: &Flat, value: &Value, at: &str) {
        let ok = match flat.ty.as_deref() {
            None => true,
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("string") => value.is_string(),
            Some("boolean") => value.is_boolean(),
            Some("array") => value.is_array(),
            Some("object") => value.is_object(),
            Some(other) => {
                self.errors
                    .push(format!("{at}: unsupported schema type {other}"));
                return;
            }
        };
        if !ok {
            self.errors.push(format!(
                "{at}: expected {}, got {value}",
                flat.ty.as_deref().unwrap_or("?")
            ));
            return;
        }
        if let (Some(max), Some(s)) = (flat.max_length, value.as_str()) {
            let len = s.chars().count() as u64;
            if len > max {
                self.errors
                    .push(format!("{at}: {len} characters, maxLength {max}"));
            }
        }
        if let (Some(items), Some(array)) = (&flat.items, value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"));
            }
        }
        if let Some(object) = value.as_object()
            && flat.ty.as_deref() == Some("object")
        {
            self.check_object(flat, object, at);
        }
    }

    fn check_object(&mut self, flat: &Flat, object: &Map<String, Value>, at: &str) {
        let def = flat.name.as_deref().unwrap_or("(inline)");
        for required in &flat.required {
            match object.get(required) {
                None => self
                    .errors
                    .push(format!("{at}.{required}: required field missing")),
                Some(Value::Null)
                    if !NULL_ALLOWED.contains(&(def, required.as_str()))
                        && !is_nullable(self.spec, &flat.properties[required.as_str()]) =>
                {
                    self.errors
                        .push(format!("{at}.{required}: required field is null ({def})"));
                }
                Some(_) => {}
            }
        }
        if !flat.properties.is_empty() {
            for key in object.keys() {
                if !flat.properties.contains_key(key) {
                    self.errors
                        .push(format!("{at}.{key}: field not documented in {def}"));
                }
            }
        }
        for (key, schema) in &flat.properties {
            match object.get(key) {
                None | Some(Value::Null) => {}
                Some(child) => self.check(schema, child, &format!("{at}.{key}")),
            }
        }
    }
}

fn is_nullable(spec: &Spec, schema: &Value) -> bool {
    let mut flat = Flat::default();
    flatten(spec, schema, None, &mut flat);
    flat.nullable
}

/// Some operations document their 200 body as `properties: {CustomerResponse: $ref,
/// SuperBillingKeyResponse: $ref}`: a union of alternative bodies written as properties.
/// Returns the alternatives in that case.
fn alternatives(schema: &Value) -> Option<Vec<&Value>> {
    if schema.get("$ref").is_some() || schema.get("allOf").is_some() || schema.get("type").is_some()
    {
        return None;
    }
    let props = schema.get("properties")?.as_object()?;
    let refs: Vec<&Value> = props.values().collect();
    let all_refs = refs.iter().all(|v| {
        v.get("$ref")
            .and_then(Value::as_str)
            .is_some_and(|r| r.ends_with("Response"))
    });
    all_refs.then_some(refs)
}

struct Conformance {
    spec: Spec,
    failures: Vec<String>,
    checked: usize,
}

impl Conformance {
    fn new() -> Self {
        Self {
            spec: Spec::load(),
            failures: Vec::new(),
            checked: 0,
        }
    }

    fn errors_against(&self, schema: &Value, body: &Value) -> Vec<String> {
        let mut checker = Checker::new(&self.spec);
        checker.check(schema, body, "$");
        checker.errors
    }

    /// Check a 200 answer against the documented 200 schema of `method path`.
    fn ok(&mut self, label: &str, path: &str, method: &str, reply: &Reply) {
        self.checked += 1;
        if reply.status != 200 {
            self.failures
                .push(format!("{label}: HTTP {} {}", reply.status, reply.text));
            return;
        }
        let schema = self
            .spec
            .response_schema(path, method, 200)
            .unwrap_or_else(|| panic!("no 200 schema for {method} {path}"))
            .clone();
        let errors = match alternatives(&schema) {
            Some(options) => {
                let results: Vec<Vec<String>> = options
                    .iter()
                    .map(|option| self.errors_against(option, &reply.json))
                    .collect();
                if results.iter().any(Vec::is_empty) {
                    Vec::new()
                } else {
                    results.concat()
                }
            }
            None => self.errors_against(&schema, &reply.json),
        };
        self.failures
            .extend(errors.into_iter().map(|e| format!("{label}: {e}")));
    }

    /// Check an error envelope: a documented status, the documented schema for it if the spec
    /// has one (else `ResponseAnnotation`), a non-zero code, a message, and `response: null`.
    fn error(&mut self, label: &str, path: &str, method: &str, reply: &Reply) {
        self.checked += 1;
        if reply.status != 400
            && !self.spec.documents_status(path, method, reply.status)
            && !UNDOCUMENTED_STATUSES.contains(&(path, method, reply.status))
        {
            self.failures.push(format!(
                "{label}: HTTP {} is not documented for {method} {path}",
                reply.status
            ));
        }
        let schema = match self.spec.response_schema(path, method, reply.status) {
            Some(schema) => schema.clone(),
            None => json!({"$ref": "#/definitions/ResponseAnnotation"}),
        };
        let mut errors = self.errors_against(&schema, &reply.json);
        // ResponseAnnotation documents code and message; `response` is the envelope's third field.
        errors.retain(|e| !e.starts_with("$.response: field not documented"));
        if reply.code().is_none_or(|c| c == 0) {
            errors.push(format!("code must be non-zero, got {}", reply.json["code"]));
        }
        if reply.message().is_none_or(str::is_empty) {
            errors.push("message must be a non-empty string".to_owned());
        }
        if reply.json.get("response") != Some(&Value::Null) {
            errors.push("response must be present and null".to_owned());
        }
        self.failures
            .extend(errors.into_iter().map(|e| format!("{label}: {e}")));
    }
}

const TOKEN: &str = "/users/getToken";
const PAYMENT: &str = "/payments/{imp_uid}";
const FIND: &str = "/payments/find/{merchant_uid}/{payment_status}";
const CUSTOMER: &str = "/subscribe/customers/{customer_uid}";
const CANCEL: &str = "/payments/cancel";
const RECEIPT: &str = "/receipts/{imp_uid}";

#[tokio::test]
async fn every_answer_matches_the_official_spec() {
    let mut c = Conformance::new();
    let sim = start().await;
    let api = Api::new(&sim);
    let credentials = json!({"imp_key": "sim_imp_key", "imp_secret": "sim_imp_secret"});

    // Token
    let token_reply = api.post_json(TOKEN, None, credentials.clone()).await;
    c.ok("getToken json", TOKEN, "post", &token_reply);
    let form = api
        .post_form(
            TOKEN,
            None,
            &[("imp_key", "sim_imp_key"), ("imp_secret", "sim_imp_secret")],
        )
        .await;
    c.ok("getToken form", TOKEN, "post", &form);
    let bad = api
        .post_json(TOKEN, None, json!({"imp_key": "x", "imp_secret": "y"}))
        .await;
    c.error("getToken 401", TOKEN, "post", &bad);
    let token = token_reply.response()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Keys: a CHAI one issued in the window, a card one registered directly.
    let window = api
        .get(
            "/window?pg=chai.pk_1&customer_uid=chai_1&merchant_uid=issue_1&amount=0&name=%EB%93%B1%EB%A1%9D\
             &m_redirect_url=http%3A%2F%2Fshop.example%2Fdone&buyer_name=%ED%99%8D%EA%B8%B8%EB%8F%99",
            None,
        )
        .await;
    assert_eq!(window.status, 302);
    let issuance_uid = common::query_of(&window.location.expect("Location"))
        .into_iter()
        .find(|(k, _)| k == "imp_uid")
        .map(|(_, v)| v)
        .expect("imp_uid");
    sim.add_customer_with(NewCustomer {
        card_name: Some("신한카드".into()),
        card_code: Some("361".into()),
        card_number: Some("4330288712349512".into()),
        card_type: Some(1),
        customer_name: Some("김철수".into()),
        ..NewCustomer::new("card_1", "nice")
    });

    // again: paid, paid by card, declined, unknown customer, duplicate
    let paid = api.again(&token, "chai_1", "order_1", 9900).await;
    c.ok("again paid", AGAIN, "post", &paid);
    let card = api.again(&token, "card_1", "order_card", 55000).await;
    c.ok("again paid by card", AGAIN, "post", &card);
    sim.decline_customer("chai_1", "잔액부족");
    let failed = api.again(&token, "chai_1", "order_2", 9900).await;
    assert_eq!(failed.response()["status"], "failed");
    c.ok("again failed", AGAIN, "post", &failed);
    sim.clear_decline("chai_1");
    let unknown = api.again(&token, "nobody", "order_3", 9900).await;
    c.ok("again unknown customer (envelope)", AGAIN, "post", &unknown);
    c.error("again unknown customer", AGAIN, "post", &unknown);
    let duplicate = api.again(&token, "chai_1", "order_1", 9900).await;
    c.ok("again duplicate (envelope)", AGAIN, "post", &duplicate);
    c.error("again duplicate", AGAIN, "post", &duplicate);
    let invalid = api
        .post_json(AGAIN, Some(&token), json!({"customer_uid": "chai_1"}))
        .await;
    c.error("again 400", AGAIN, "post", &invalid);
    let unauthorized = api.post_json(AGAIN, None, json!({})).await;
    c.error("again 401", AGAIN, "post", &unauthorized);

    // Cancel: partial, then full (history entries are checked against PaymentCancelAnnotation).
    let partial = api
        .post_json(
            CANCEL,
            Some(&token),
            json!({"merchant_uid": "order_1", "amount": 1000, "reason": "부분"}),
        )
        .await;
    c.ok("cancel partial", CANCEL, "post", &partial);
    let full = api
        .post_json(CANCEL, Some(&token), json!({"merchant_uid": "order_1"}))
        .await;
    assert_eq!(full.response()["status"], "cancelled");
    c.ok("cancel full", CANCEL, "post", &full);
    let refused = api
        .post_json(
            CANCEL,
            Some(&token),
            json!({"imp_uid": "imps_000000000000"}),
        )
        .await;
    c.ok("cancel unknown (envelope)", CANCEL, "post", &refused);
    c.error("cancel unknown", CANCEL, "post", &refused);

    // Lookups of every kind of record.
    for (label, imp_uid) in [
        ("payment issuance", issuance_uid.as_str()),
        (
            "payment cancelled",
            paid.response()["imp_uid"].as_str().expect("uid"),
        ),
        (
            "payment failed",
            failed.response()["imp_uid"].as_str().expect("uid"),
        ),
        (
            "payment card",
            card.response()["imp_uid"].as_str().expect("uid"),
        ),
    ] {
        let reply = api.get(&format!("/payments/{imp_uid}"), Some(&token)).await;
        c.ok(label, PAYMENT, "get", &reply);
    }
    let missing = api.get("/payments/imps_000000000000", Some(&token)).await;
    c.error("payment 404", PAYMENT, "get", &missing);
    let found = api.get("/payments/find/order_2", Some(&token)).await;
    c.ok("find", FIND, "get", &found);
    let found_status = api
        .get("/payments/find/order_1/cancelled", Some(&token))
        .await;
    c.ok("find by status", FIND, "get", &found_status);
    let not_found = api.get("/payments/find/order_1/failed", Some(&token)).await;
    c.error("find 404", FIND, "get", &not_found);

    // Billing keys
    for uid in ["chai_1", "card_1"] {
        let reply = api
            .get(&format!("/subscribe/customers/{uid}"), Some(&token))
            .await;
        c.ok(&format!("customer {uid}"), CUSTOMER, "get", &reply);
    }
    let deleted = api
        .delete("/subscribe/customers/card_1", Some(&token))
        .await;
    c.ok("customer delete", CUSTOMER, "delete", &deleted);
    let gone = api.get("/subscribe/customers/card_1", Some(&token)).await;
    c.error("customer 404", CUSTOMER, "get", &gone);
    let gone_delete = api
        .delete("/subscribe/customers/card_1", Some(&token))
        .await;
    c.error("customer delete 404", CUSTOMER, "delete", &gone_delete);

    assert!(
        c.failures.is_empty(),
        "{} of {} answers break the spec:\n{}",
        c.failures.len(),
        c.checked,
        c.failures.join("\n")
    );
    assert_eq!(c.checked, 29);
}

#[tokio::test]
async fn cash_receipt_answers_match_the_official_spec() {
    let mut c = Conformance::new();
    let sim = start().await;
    let api = Api::new(&sim);
    let token = api.token().await;
    sim.add_customer("chai_1", "chai");
    sim.add_customer("card_1", "nice");
    let paid = api.again(&token, "chai_1", "order_cr", 11_000).await;
    let imp_uid = paid.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    let card = api.again(&token, "card_1", "order_card", 5_000).await;
    let card_uid = card.response()["imp_uid"]
        .as_str()
        .expect("imp_uid")
        .to_owned();
    let path = format!("/receipts/{imp_uid}");
    let body = json!({"identifier": "01012345678", "identifier_type": "phone", "type": "person"});

    let none = api.get(&path, Some(&token)).await;
    c.error("receipt get 404 (none issued)", RECEIPT, "get", &none);
    let nothing = api.delete(&path, Some(&token)).await;
    c.error(
        "receipt delete 400 (none issued)",
        RECEIPT,
        "delete",
        &nothing,
    );
    let missing = api.post_json(&path, Some(&token), json!({})).await;
    c.error(
        "receipt post 400 (no identifier)",
        RECEIPT,
        "post",
        &missing,
    );
    let not_cash = api
        .post_json(&format!("/receipts/{card_uid}"), Some(&token), body.clone())
        .await;
    c.error("receipt post 400 (card)", RECEIPT, "post", &not_cash);
    let unknown = api
        .post_json("/receipts/imps_000000000000", Some(&token), body.clone())
        .await;
    c.error("receipt post 404", RECEIPT, "post", &unknown);
    let unknown_get = api.get("/receipts/imps_000000000000", Some(&token)).await;
    c.error("receipt get 404", RECEIPT, "get", &unknown_get);
    let unauthorized = api.post_json(&path, None, body.clone()).await;
    c.error("receipt post 401", RECEIPT, "post", &unauthorized);
    c.error(
        "receipt get 401",
        RECEIPT,
        "get",
        &api.get(&path, None).await,
    );
    c.error(
        "receipt delete 401",
        RECEIPT,
        "delete",
        &api.delete(&path, None).await,
    );
    sim.set_receipt_mode(iamport_sim::ReceiptMode::Fail { times: 1 });
    let pg_failed = api.post_json(&path, Some(&token), body.clone()).await;
    assert_eq!(pg_failed.status, 500);
    c.error("receipt post 500 (PG)", RECEIPT, "post", &pg_failed);

    let issued = api
        .post_form(&path, Some(&token), &[("identifier", "01012345678")])
        .await;
    c.ok("receipt post", RECEIPT, "post", &issued);
    let twice = api.post_json(&path, Some(&token), body.clone()).await;
    c.error("receipt post 400 (already issued)", RECEIPT, "post", &twice);
    c.ok(
        "receipt get",
        RECEIPT,
        "get",
        &api.get(&path, Some(&token)).await,
    );
    let payment = api.get(&format!("/payments/{imp_uid}"), Some(&token)).await;
    assert_eq!(payment.response()["cash_receipt_issued"], true);
    c.ok("payment with a cash receipt", PAYMENT, "get", &payment);
    c.ok(
        "receipt delete",
        RECEIPT,
        "delete",
        &api.delete(&path, Some(&token)).await,
    );
    c.ok(
        "receipt get cancelled",
        RECEIPT,
        "get",
        &api.get(&path, Some(&token)).await,
    );

    assert!(
        c.failures.is_empty(),
        "{} of {} answers break the spec:\n{}",
        c.failures.len(),
        c.checked,
        c.failures.join("\n")
    );
    assert_eq!(c.checked, 16);
}

#[test]
fn the_checker_catches_wrong_names_types_and_missing_fields() {
    let c = Conformance::new();
    let schema = json!({"$ref": "#/definitions/PaymentResponse"});
    let good = json!({"code": 0, "message": null, "response": {
        "imp_uid": "imps_000000000001", "merchant_uid": "m", "amount": 1, "cancel_amount": 0,
        "currency": "KRW", "status": "paid", "cancel_history": [], "paid_at": 0
    }});
    assert_eq!(c.errors_against(&schema, &good), Vec::<String>::new());

    let mut bad = good.clone();
    let response = bad["response"].as_object_mut().expect("object");
    response.remove("imp_uid");
    response.insert("amount".into(), json!("1"));
    response.insert("paidAt".into(), json!(0));
    response.insert("merchant_uid".into(), json!("m".repeat(41)));
    response.insert("currency".into(), Value::Null);
    response.insert(
        "cancel_history".into(),
        json!([{"pg_tid": "t", "amount": 1}]),
    );
    let errors = c.errors_against(&schema, &bad);
    for expected in [
        "$.response.imp_uid: required field missing",
        "$.response.amount: expected number",
        "$.response.paidAt: field not documented",
        "$.response.merchant_uid: 41 characters, maxLength 40",
        "$.response.currency: required field is null",
        "$.response.cancel_history[0].cancellation_id: required field missing",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }

    // The union-as-properties 200 schema of the customer endpoints is recognised.
    let customer_200 = c
        .spec
        .response_schema(CUSTOMER, "get", 200)
        .expect("schema");
    assert_eq!(alternatives(customer_200).map(|a| a.len()), Some(2));
}
