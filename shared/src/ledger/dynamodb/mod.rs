//! The ledger on DynamoDB: registrations, subscriptions and charge attempts
//! in one table (see `docs/data-model.md`). Items, attribute values and the
//! client stay inside this module.
//!
//! The operations live by aggregate (`registrations`, `subscriptions`,
//! `attempts`, `review`, `refunds`, `requests`, `plans`), each a function
//! over the adapter; `writes` holds what they share; this file holds the client, the
//! items' encryption, the cursors and the port's delegation.

mod attempts;
mod coupons;
mod item;
mod plans;
mod price_changes;
mod receipts;
mod refunds;
mod registrations;
mod requests;
mod review;
pub mod seal;
pub mod stream;
mod subscriptions;
pub mod table;
mod trials;
mod writes;

use std::fmt::Debug;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use crate::billing::{
    AttemptResult, AttemptState, AuditEntry, ChargeAttempt, PeriodId, Registration,
    RegistrationStatus, Resolution, Subscription, SubscriptionId, SubscriptionStatus,
};
use crate::ledger::{
    Activation, AttemptKey, Cursor, DuePage, Guard, IDEMPOTENCY_STALE, IDEMPOTENCY_TTL, IdPage,
    KeyReplacement, Ledger, LedgerError, LockChange, RefundIntent, RefundState, RequestState,
    ReviewDecision, ReviewFlag, ReviewPage, Sent, Settlement, StoredResponse, SubscriptionChange,
    TakeOver, UnknownOutcome, UserItems,
};
use item::{
    Item, META, REVIEW_PK, attempt_from_item, attempt_sk, attempt_to_item, audit_from_item,
    audit_to_item, due_pk, idempotency_pk, n, refund_from_item, refund_sk, refund_to_item, reg_pk,
    registration_from_item, registration_to_item, s, sub_pk, subscription_from_item,
    subscription_to_item, ts, user_lock_sk, user_pk, user_reg_sk, user_sub_sk,
};
use seal::{KeySealing, Sealer};
use table::{DUE_INDEX, DUE_PK, DUE_SK, PK, SK, TTL_ATTRIBUTE};

use writes::{attempt_key_from, lock_item};

/// Maps an SDK error onto the ledger's kinds.
pub(crate) fn sdk_error<E, R>(err: SdkError<E, R>, operation: &str) -> LedgerError
where
    E: ProvideErrorMetadata + Debug,
    R: Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().unwrap_or("");
            let text = format!("{operation}: {code}: {message}");
            match code {
                "ConditionalCheckFailedException" => LedgerError::Conflict(text),
                "TransactionCanceledException" => {
                    // A condition failed: someone else changed it first. A
                    // TransactionConflict alone means nothing was written
                    // and nobody won: worth trying again (transient).
                    if message.contains("ConditionalCheckFailed") {
                        LedgerError::Conflict(text)
                    } else {
                        LedgerError::Transient(text)
                    }
                }
                "TransactionConflictException"
                | "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "LimitExceededException" => LedgerError::Transient(text),
                _ => LedgerError::Fatal(text),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            LedgerError::Transient(format!("{operation}: {err}"))
        }
        _ => LedgerError::Fatal(format!("{operation}: {err}")),
    }
}

fn build_error(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Fatal(e.to_string())
}

/// Expression attribute values of a condition.
type Values = Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>;

/// The table, with the settings that shape its items.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    shards: u32,
    /// Billing keys sealed at rest ([`seal`]); `None`: stored as they are.
    sealing: Option<Arc<KeySealing>>,
    /// A reader that never uses a billing key: sealed keys are read as the
    /// sealed text, and subscriptions are never written.
    keys_left_sealed: bool,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>, shards: u32) -> Self {
        Self {
            client,
            table: table.into(),
            shards: shards.max(1),
            sealing: None,
            keys_left_sealed: false,
        }
    }

    /// For readers that never use a billing key (event-publisher reads a
    /// charge's `user_id`): a sealed key is read as its sealed text, with no
    /// KMS access, and writing a subscription is refused.
    #[must_use]
    pub fn keys_left_sealed(mut self) -> Self {
        self.keys_left_sealed = true;
        self
    }

    /// Seals billing keys at rest with a data key that `kms_key_id` wraps
    /// (`BILLING_KEY_KMS_KEY_ID`).
    #[must_use]
    pub fn with_sealed_keys(mut self, kms: aws_sdk_kms::Client, kms_key_id: &str) -> Self {
        self.sealing = Some(Arc::new(KeySealing::new(kms, kms_key_id)));
        self
    }

    /// Whether billing keys are sealed at rest.
    pub fn seals_keys(&self) -> bool {
        self.sealing.is_some()
    }

    async fn sealer(&self) -> Result<Option<&Sealer>, LedgerError> {
        match &self.sealing {
            Some(sealing) => Ok(Some(sealing.sealer(&self.client, &self.table).await?)),
            None => Ok(None),
        }
    }

    /// The subscription's item, its billing key sealed when sealing is on.
    async fn sub_item(&self, sub: &Subscription) -> Result<Item, LedgerError> {
        if self.keys_left_sealed {
            return Err(LedgerError::Fatal(
                "this ledger reads billing keys sealed and writes no subscription".into(),
            ));
        }
        let mut item = subscription_to_item(sub, self.shards);
        if let Some(sealer) = self.sealer().await? {
            let sealed = sealer.seal(sub.id.as_str(), &sub.customer_uid)?;
            item.insert("customer_uid".into(), s(sealed));
        }
        Ok(item)
    }

    /// The subscription in `item`, its billing key opened.
    async fn read_sub(&self, item: &Item) -> Result<Subscription, LedgerError> {
        let mut sub = subscription_from_item(item)?;
        if seal::is_sealed(&sub.customer_uid) && !self.keys_left_sealed {
            let Some(sealer) = self.sealer().await? else {
                return Err(LedgerError::Corrupt(format!(
                    "subscription {}: its billing key is sealed, and this ledger has no KMS key to open it (BILLING_KEY_KMS_KEY_ID)",
                    sub.id
                )));
            };
            sub.customer_uid = sealer.open(sub.id.as_str(), &sub.customer_uid)?;
        }
        Ok(sub)
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Partitions of the due index.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Creates this ledger's table (tests and the local stack; production
    /// uses the SAM template).
    pub async fn create_table(&self) -> Result<(), LedgerError> {
        table::create_table(&self.client, &self.table).await
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(e, "GetItem"))?;
        Ok(out.item)
    }

    async fn versioned_put(&self, next: &Subscription) -> Result<Put, LedgerError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.sub_item(next).await?))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(next.version.saturating_sub(1)))
            .build()
            .map_err(build_error)
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        operation: &str,
    ) -> Result<(), LedgerError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(|e| sdk_error(e, operation))?;
        Ok(())
    }

    fn attempt_key(a: &ChargeAttempt) -> (String, String) {
        (sub_pk(&a.subscription_id), attempt_sk(&a.period, a.attempt))
    }

    fn encode_cursor(shard: u32, key: &Item) -> Option<Cursor> {
        let get = |k: &str| match key.get(k) {
            Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => Some(v.clone()),
            Some(aws_sdk_dynamodb::types::AttributeValue::N(v)) => Some(v.clone()),
            _ => None,
        };
        Some(Cursor(format!(
            "{shard}|{}|{}|{}|{}",
            get(PK)?,
            get(SK)?,
            get(DUE_PK)?,
            get(DUE_SK)?
        )))
    }

    fn decode_cursor(cursor: &Cursor) -> Result<(u32, Option<Item>), LedgerError> {
        let bad = || LedgerError::Fatal(format!("not a cursor of this ledger: {:?}", cursor.0));
        let parts: Vec<&str> = cursor.0.split('|').collect();
        let shard: u32 = parts.first().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        match parts.as_slice() {
            [_] => Ok((shard, None)),
            [_, pk, sk, dpk, dsk] => {
                let mut key = Item::new();
                key.insert(PK.into(), s(*pk));
                key.insert(SK.into(), s(*sk));
                key.insert(DUE_PK.into(), s(*dpk));
                key.insert(DUE_SK.into(), n(dsk.parse::<i64>().map_err(|_| bad())?));
                Ok((shard, Some(key)))
            }
            _ => Err(bad()),
        }
    }
}

crate::ledger::delegation::ledger_by_aggregate!(DynamoLedger);

/// Hooks for tests of this adapter and tools that load data in bulk
/// (feature `test-hooks`): raw items, never used by the services.
#[cfg(feature = "test-hooks")]
pub mod hooks {
    use super::*;
    pub use item::Item;

    impl DynamoLedger {
        /// The underlying client.
        pub fn client(&self) -> &Client {
            &self.client
        }

        /// An item as stored.
        pub async fn raw_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, LedgerError> {
            self.get(pk.to_owned(), sk).await
        }

        /// Writes `attribute` of a subscription's item as a string, whatever
        /// it should be (to make a corrupt item).
        pub async fn corrupt_subscription(
            &self,
            id: &SubscriptionId,
            attribute: &str,
            value: &str,
        ) -> Result<(), LedgerError> {
            self.client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(sub_pk(id)))
                .key(SK, s(META))
                .update_expression("SET #a = :v")
                .expression_attribute_names("#a", attribute)
                .expression_attribute_values(":v", s(value))
                .send()
                .await
                .map_err(|e| sdk_error(e, "UpdateItem corrupt"))?;
            Ok(())
        }

        /// The subscription as the item the table would hold.
        pub async fn subscription_item(&self, sub: &Subscription) -> Result<Item, LedgerError> {
            self.sub_item(sub).await
        }

        pub fn subscription_key(id: &SubscriptionId) -> (String, String) {
            (sub_pk(id), META.to_owned())
        }

        pub fn attempt_key_of(
            id: &SubscriptionId,
            period: &PeriodId,
            attempt: u32,
        ) -> (String, String) {
            (sub_pk(id), attempt_sk(period, attempt))
        }
    }
}
