//! The table the code creates (tests, local stack) and the table
//! `infra/template.yaml` deploys must be the same table.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::collections::BTreeSet;

use serde_yaml::Value;
use shared::ledger::dynamodb::table::{
    CONSENT_INDEX, CONSENT_PK, CONSENT_SK, DUE_INDEX, DUE_PK, DUE_SK, KEY_ATTRIBUTES, PK,
    PLAN_INDEX, PLAN_PK, PLAN_SK, RECEIPT_INDEX, RECEIPT_PK, RECEIPT_SK, SK, STREAM_VIEW,
    TTL_ATTRIBUTE,
};

fn template_table() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("read infra/template.yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("template is YAML");
    doc["Resources"]["BillingTable"]["Properties"].clone()
}

fn pairs(list: &Value, a: &str, b: &str) -> BTreeSet<(String, String)> {
    list.as_sequence()
        .expect("a list")
        .iter()
        .map(|e| {
            (
                e[a].as_str().unwrap().to_owned(),
                e[b].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn template_declares_the_table_the_code_uses() {
    let t = template_table();
    assert_eq!(
        pairs(&t["AttributeDefinitions"], "AttributeName", "AttributeType"),
        set(&KEY_ATTRIBUTES)
    );
    assert_eq!(
        pairs(&t["KeySchema"], "AttributeName", "KeyType"),
        set(&[(PK, "HASH"), (SK, "RANGE")])
    );
    let gsis = t["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(gsis.len(), 4);
    for (gsi, (name, pk, sk)) in gsis.iter().zip([
        (DUE_INDEX, DUE_PK, DUE_SK),
        (CONSENT_INDEX, CONSENT_PK, CONSENT_SK),
        (PLAN_INDEX, PLAN_PK, PLAN_SK),
        (RECEIPT_INDEX, RECEIPT_PK, RECEIPT_SK),
    ]) {
        assert_eq!(gsi["IndexName"].as_str(), Some(name));
        assert_eq!(
            pairs(&gsi["KeySchema"], "AttributeName", "KeyType"),
            set(&[(pk, "HASH"), (sk, "RANGE")])
        );
        assert_eq!(
            gsi["Projection"]["ProjectionType"].as_str(),
            Some("KEYS_ONLY")
        );
    }
    assert_eq!(
        t["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some(TTL_ATTRIBUTE)
    );
    assert_eq!(
        t["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        t["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(t["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(
        t["StreamSpecification"]["StreamViewType"].as_str(),
        Some(STREAM_VIEW)
    );
}

#[tokio::test]
async fn create_table_builds_what_the_template_declares() {
    let client = testkit::dynamodb_client().await;
    let name = testkit::fresh_table(&client).await;
    let described = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let attrs: BTreeSet<(String, String)> = described
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    let t = template_table();
    assert_eq!(
        attrs,
        pairs(&t["AttributeDefinitions"], "AttributeName", "AttributeType")
    );
    let stream = described.stream_specification().expect("a stream");
    assert!(stream.stream_enabled());
    assert_eq!(
        stream.stream_view_type().map(|v| v.as_str()),
        Some(STREAM_VIEW)
    );
    let mut built: Vec<_> = described.global_secondary_indexes().iter().collect();
    let order = [DUE_INDEX, CONSENT_INDEX, PLAN_INDEX, RECEIPT_INDEX];
    built.sort_by_key(|g| order.iter().position(|n| g.index_name() == Some(*n)));
    assert_eq!(built.len(), 4);
    for (i, (gsi, name)) in built.iter().zip(order).enumerate() {
        assert_eq!(gsi.index_name(), Some(name));
        let keys: BTreeSet<(String, String)> = gsi
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            pairs(
                &t["GlobalSecondaryIndexes"][i]["KeySchema"],
                "AttributeName",
                "KeyType"
            )
        );
    }
    let ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some(TTL_ATTRIBUTE)
    );
}
