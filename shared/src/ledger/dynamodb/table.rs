//! The table's definition, in one place. `infra/template.yaml` declares the
//! same table; a test parses the template and compares it with this.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};

use super::sdk_error;
use crate::ledger::LedgerError;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// The due index: partition `DUE#{shard}`, sort `next_charge_at` (UNIX seconds).
/// Projection `KEYS_ONLY`: the run re-reads each subscription consistently
/// anyway, so the index carries only keys (smaller, cheaper to query).
pub const DUE_INDEX: &str = "due";
pub const DUE_PK: &str = "gsi1pk";
pub const DUE_SK: &str = "gsi1sk";
/// The consent index: partition `CONSENT#{shard}`, sort the consent
/// request's time (UNIX seconds), only on subscriptions whose price increase
/// waits for the customer's answer (decision 69). `KEYS_ONLY` like `due`.
pub const CONSENT_INDEX: &str = "consent";
pub const CONSENT_PK: &str = "gsi2pk";
pub const CONSENT_SK: &str = "gsi2sk";
/// The plan index: partition `PLAN#{plan id}#{shard}`, sort the
/// subscription's creation (UNIX seconds), on every subscription that
/// carries a catalogue plan's version and has not ended, so a plan-wide
/// price change finds its subscriptions without a scan (decision 71).
pub const PLAN_INDEX: &str = "plan";
pub const PLAN_PK: &str = "gsi3pk";
pub const PLAN_SK: &str = "gsi3sk";
/// The receipt queue: partition `RECEIPT#{shard}` (cash receipts to issue,
/// cancel or reissue, sort the time to look at them) or `RECEIPT#REVIEW`
/// (waiting for a person, sort the time they gave up), on charge attempts
/// (decision 74). `KEYS_ONLY` like `due`.
pub const RECEIPT_INDEX: &str = "receipts";
pub const RECEIPT_PK: &str = "gsi4pk";
pub const RECEIPT_SK: &str = "gsi4sk";
pub const TTL_ATTRIBUTE: &str = "ttl";
/// The change stream's view: both images, so a change can be read as
/// "before → after" (the lifecycle events are derived from it).
pub const STREAM_VIEW: &str = "NEW_AND_OLD_IMAGES";

/// (attribute name, type) of every key attribute, for comparison with the template.
pub const KEY_ATTRIBUTES: [(&str, &str); 10] = [
    (PK, "S"),
    (SK, "S"),
    (DUE_PK, "S"),
    (DUE_SK, "N"),
    (CONSENT_PK, "S"),
    (CONSENT_SK, "N"),
    (PLAN_PK, "S"),
    (PLAN_SK, "N"),
    (RECEIPT_PK, "S"),
    (RECEIPT_SK, "N"),
];

/// Creates the table with its index, TTL and change stream, and waits until
/// it is active.
/// Used by the tests and the local stack; production uses the SAM template.
pub async fn create_table(client: &Client, name: &str) -> Result<(), LedgerError> {
    let attr = |n: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(t)
            .build()
            .map_err(|e| LedgerError::Fatal(e.to_string()))
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(|e| LedgerError::Fatal(e.to_string()))
    };
    let index = |name: &str, pk: &str, sk: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(pk, KeyType::Hash)?)
            .key_schema(key(sk, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(|e| LedgerError::Fatal(e.to_string()))
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(SK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(DUE_PK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(DUE_SK, ScalarAttributeType::N)?)
        .attribute_definitions(attr(CONSENT_PK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(CONSENT_SK, ScalarAttributeType::N)?)
        .attribute_definitions(attr(PLAN_PK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(PLAN_SK, ScalarAttributeType::N)?)
        .attribute_definitions(attr(RECEIPT_PK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(RECEIPT_SK, ScalarAttributeType::N)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(index(DUE_INDEX, DUE_PK, DUE_SK)?)
        .global_secondary_indexes(index(CONSENT_INDEX, CONSENT_PK, CONSENT_SK)?)
        .global_secondary_indexes(index(PLAN_INDEX, PLAN_PK, PLAN_SK)?)
        .global_secondary_indexes(index(RECEIPT_INDEX, RECEIPT_PK, RECEIPT_SK)?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(STREAM_VIEW))
                .build()
                .map_err(|e| LedgerError::Fatal(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| sdk_error(e, "CreateTable"))?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()
                .map_err(|e| LedgerError::Fatal(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| sdk_error(e, "UpdateTimeToLive"))?;
    Ok(())
}
