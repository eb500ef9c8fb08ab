//! The routes we serve are written in four places: the functions' routing
//! tables, `docs/openapi.yaml`, `infra/template.yaml` and the event fixtures
//! in `infra/events/`. This test keeps them from drifting apart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).expect("read YAML");
    serde_yaml::from_str(&text).expect("valid YAML")
}

/// A scalar, or the scalar under a CloudFormation tag (`!Sub '...'`).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Tagged(t) => text(&t.value),
        other => panic!("not a string: {other:?}"),
    }
}

/// (method, path, function) from the code.
fn code_routes() -> BTreeSet<(String, String, &'static str)> {
    let mut out = BTreeSet::new();
    let tables: [(&[(&str, &str)], &str); 3] = [
        (&billing_callback::ROUTES, "billing-callback"),
        (&payment_webhook::ROUTES, "payment-webhook"),
        (&subscription_api::ROUTES, "subscription-api"),
    ];
    for (table, function) in tables {
        for (m, p) in table {
            out.insert(((*m).to_owned(), (*p).to_owned(), function));
        }
    }
    out
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_the_functions_serve() {
    let doc = yaml("docs/openapi.yaml");
    assert!(text(&doc["openapi"]).starts_with("3.1"), "OpenAPI 3.1");
    let mut documented = BTreeSet::new();
    let paths = doc["paths"].as_mapping().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_mapping().expect("path item") {
            let method = text(method).to_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                continue; // parameters, summary…
            }
            let function = text(&op["x-function"]);
            let function = match function.as_str() {
                "billing-callback" => "billing-callback",
                "payment-webhook" => "payment-webhook",
                "subscription-api" => "subscription-api",
                other => panic!("{method} {}: unknown x-function {other}", text(path)),
            };
            documented.insert((method, text(path), function));
        }
    }
    assert_eq!(documented, code_routes());
}

#[test]
fn the_template_routes_each_path_to_its_function_with_the_right_authorization() {
    let template = yaml("infra/template.yaml");
    let resources = template["Resources"].as_mapping().expect("resources");
    let function_of_integration = |integration: &str| -> &'static str {
        let function = text(&resources[integration]["Properties"]["IntegrationUri"]);
        match function.split('.').next() {
            Some("BillingCallbackFunction") => "billing-callback",
            Some("PaymentWebhookFunction") => "payment-webhook",
            Some("SubscriptionApiFunction") => "subscription-api",
            other => panic!("integration {integration} targets {other:?}"),
        }
    };
    let mut routed = BTreeSet::new();
    for (_, r) in resources {
        if text(&r["Type"]) != "AWS::ApiGatewayV2::Route" {
            continue;
        }
        let p = &r["Properties"];
        let key = text(&p["RouteKey"]);
        let (method, path) = key.split_once(' ').expect("METHOD /path");
        let target = text(&p["Target"]);
        let integration = target
            .strip_prefix("integrations/${")
            .and_then(|t| t.strip_suffix('}'))
            .expect("integrations/${Integration}");
        let function = function_of_integration(integration);
        let auth = text(&p["AuthorizationType"]);
        let public = key == "GET /billing/callback" || key == "POST /webhooks/iamport";
        assert_eq!(
            auth,
            if public { "NONE" } else { "AWS_IAM" },
            "{key}: i'mport's redirect and webhook are public, everything else is IAM"
        );
        routed.insert((method.to_owned(), path.to_owned(), function));
    }
    assert_eq!(routed, code_routes());
}

#[test]
fn every_route_has_an_event_fixture() {
    let mut keys = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("infra/events")).expect("infra/events") {
        let path = entry.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&text).expect("JSON fixture");
        if let Some(key) = event["routeKey"].as_str() {
            keys.insert(key.to_owned());
        }
    }
    for (method, path, _) in code_routes() {
        let key = format!("{method} {path}");
        assert!(keys.contains(&key), "no fixture in infra/events for {key}");
    }
}
