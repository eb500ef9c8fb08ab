//! The DynamoDB store: registrations, subscriptions and charge attempts in
//! one table (see `docs/data-model.md`).

mod item;
pub mod model;
pub mod table;

use std::fmt::Debug;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use crate::billing::{PeriodId, SubscriptionId};
pub use item::Item;
use item::{
    META, attempt_from_item, attempt_sk, attempt_to_item, due_pk, n, reg_pk,
    registration_from_item, registration_to_item, s, sub_pk, subscription_from_item,
    subscription_to_item, ts,
};
pub use model::{
    AttemptResult, AttemptState, Buyer, ChargeAttempt, KeyInfo, Plan, Registration,
    RegistrationStatus, Subscription,
};
use table::{DUE_INDEX, DUE_PK, DUE_SK, PK, SK, TTL_ATTRIBUTE};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A condition failed: someone else claimed, settled or changed it first.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Throttling, timeouts, 5xx: retrying later may work.
    #[error("DynamoDB unavailable: {0}")]
    Transient(String),
    /// Misconfiguration or a bug (missing table, validation error).
    #[error("DynamoDB error: {0}")]
    Fatal(String),
    /// An item that does not decode: never silently ignored.
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn from_sdk<E, R>(err: SdkError<E, R>, operation: &str) -> Self
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
                    "ConditionalCheckFailedException" => Self::Conflict(text),
                    "TransactionCanceledException" => {
                        if message.contains("ConditionalCheckFailed")
                            || message.contains("TransactionConflict")
                        {
                            Self::Conflict(text)
                        } else {
                            Self::Transient(text)
                        }
                    }
                    "TransactionConflictException"
                    | "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "LimitExceededException" => Self::Transient(text),
                    _ => Self::Fatal(text),
                }
            }
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => Self::Transient(format!("{operation}: {err}")),
            _ => Self::Fatal(format!("{operation}: {err}")),
        }
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

/// One page of the due index.
#[derive(Debug, Clone)]
pub struct DuePage {
    pub ids: Vec<SubscriptionId>,
    /// Pass back to get the next page; `None` at the end.
    pub next: Option<Item>,
}

/// The table, with the settings that shape its items.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
    shards: u32,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>, shards: u32) -> Self {
        Self {
            client,
            table: table.into(),
            shards: shards.max(1),
        }
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The underlying client (for tools such as bulk loaders in benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "GetItem"))?;
        Ok(out.item)
    }

    // ---- registrations -------------------------------------------------

    /// Stores a new pending registration; refuses to overwrite one.
    pub async fn put_registration(&self, reg: &Registration) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(registration_to_item(reg)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "PutItem registration"))?;
        Ok(())
    }

    pub async fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> Result<Option<Registration>, StoreError> {
        self.get(reg_pk(merchant_uid), META)
            .await?
            .map(|item| registration_from_item(&item))
            .transpose()
    }

    /// Atomically creates the subscription and marks its registration
    /// completed by the issuance payment `imp_uid` (and no longer expiring).
    /// `Conflict` if either already happened.
    pub async fn activate(
        &self,
        reg: &Registration,
        sub: &Subscription,
        imp_uid: &str,
    ) -> Result<(), StoreError> {
        let put_sub = Put::builder()
            .table_name(&self.table)
            .set_item(Some(subscription_to_item(sub, self.shards)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| StoreError::Fatal(e.to_string()))?;
        let complete_reg = Update::builder()
            .table_name(&self.table)
            .key(PK, s(reg_pk(&reg.merchant_uid)))
            .key(SK, s(META))
            .update_expression(
                "SET #status = :completed, completed_at = :now, imp_uid = :imp_uid REMOVE #ttl",
            )
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":completed", s(RegistrationStatus::Completed.as_str()))
            .expression_attribute_values(":pending", s(RegistrationStatus::Pending.as_str()))
            .expression_attribute_values(":now", ts(sub.created_at))
            .expression_attribute_values(":imp_uid", s(imp_uid))
            .build()
            .map_err(|e| StoreError::Fatal(e.to_string()))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_sub).build())
            .transact_items(TransactWriteItem::builder().update(complete_reg).build())
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "TransactWriteItems activate"))?;
        Ok(())
    }

    // ---- subscriptions -------------------------------------------------

    pub async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError> {
        self.get(sub_pk(id), META)
            .await?
            .map(|item| subscription_from_item(&item))
            .transpose()
    }

    /// Writes `next` if the stored version is still `next.version - 1`.
    pub async fn save_subscription(&self, next: &Subscription) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(subscription_to_item(next, self.shards)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(next.version.saturating_sub(1)))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "PutItem subscription"))?;
        Ok(())
    }

    /// One page of subscriptions due at `now` in one shard of the due index,
    /// oldest first. The index is eventually consistent: callers re-read
    /// each subscription before acting on it.
    pub async fn due_page(
        &self,
        shard: u32,
        now: DateTime<Utc>,
        limit: i32,
        start: Option<Item>,
    ) -> Result<DuePage, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("#dpk = :shard AND #dsk <= :now")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":shard", s(due_pk(shard)))
            .expression_attribute_values(":now", ts(now))
            .projection_expression("#pk")
            .expression_attribute_names("#pk", PK)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "Query due"))?;
        let ids = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                let pk = item::Reader::new(item, "due entry").str(PK)?;
                pk.strip_prefix("SUB#")
                    .and_then(SubscriptionId::parse)
                    .ok_or_else(|| StoreError::Corrupt(format!("due entry with key {pk:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DuePage {
            ids,
            next: out.last_evaluated_key.filter(|k| !k.is_empty()),
        })
    }

    // ---- charge attempts -----------------------------------------------

    pub async fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Result<Option<ChargeAttempt>, StoreError> {
        self.get(sub_pk(id), &attempt_sk(period, attempt))
            .await?
            .map(|item| attempt_from_item(&item))
            .transpose()
    }

    /// Every attempt of a subscription, oldest period first.
    pub async fn list_attempts(
        &self,
        id: &SubscriptionId,
    ) -> Result<Vec<ChargeAttempt>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :charge)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(sub_pk(id)))
                .expression_attribute_values(":charge", s("CHARGE#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::from_sdk(e, "Query attempts"))?;
            for item in page.items.unwrap_or_default() {
                out.push(attempt_from_item(&item)?);
            }
            match page.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// Claims a new attempt: writes it in state `claimed` with a lease.
    /// `Conflict` if the attempt already exists (another run got there first).
    pub async fn claim_new(&self, attempt: &ChargeAttempt) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attempt_to_item(attempt)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "PutItem claim"))?;
        Ok(())
    }

    /// Takes over an open attempt: one left `unknown`, or `claimed` by a run
    /// whose lease has expired (it crashed or timed out). `Conflict` if it is
    /// settled or another live run holds it.
    pub async fn take_over(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
        token: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ChargeAttempt, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(sub_pk(id)))
            .key(SK, s(attempt_sk(period, attempt)))
            .update_expression(
                "SET #state = :claimed, claim_token = :token, lease_until = :lease, updated_at = :now",
            )
            .condition_expression(
                "#state = :unknown OR (#state = :claimed AND lease_until < :now)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
            .expression_attribute_values(":unknown", s(AttemptState::Unknown.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":lease", ts(lease_until))
            .expression_attribute_values(":now", ts(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "UpdateItem take over"))?;
        attempt_from_item(&out.attributes.unwrap_or_default())
    }

    /// Marks a claimed attempt `unknown` (i'mport's answer was lost) and
    /// releases the lease, so the next run settles it first.
    pub async fn mark_unknown(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(sub_pk(&attempt.subscription_id)))
            .key(SK, s(attempt_sk(&attempt.period, attempt.attempt)))
            .update_expression(
                "SET #state = :unknown, fail_reason = :detail, updated_at = :now REMOVE claim_token, lease_until",
            )
            .condition_expression("#state = :claimed AND claim_token = :token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":unknown", s(AttemptState::Unknown.as_str()))
            .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":detail", s(detail))
            .expression_attribute_values(":now", ts(now))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "UpdateItem unknown"))?;
        Ok(())
    }

    /// Records the final result of an open attempt and writes the
    /// subscription's next state, in one transaction: either both happen or
    /// neither. The attempt must still be open (and, when `token` is given,
    /// held by that claim); the subscription must still be at
    /// `next.version - 1`. Otherwise `Conflict` and nothing is written.
    pub async fn settle(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        token: Option<&str>,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut set = vec!["#state = :state", "updated_at = :now"];
        let mut remove = vec!["claim_token", "lease_until"];
        let mut values = vec![
            (":state", s(result.state.as_str())),
            (":now", ts(now)),
            (":claimed", s(AttemptState::Claimed.as_str())),
            (":unknown", s(AttemptState::Unknown.as_str())),
        ];
        match &result.imp_uid {
            Some(v) => {
                set.push("imp_uid = :imp_uid");
                values.push((":imp_uid", s(v)));
            }
            None => remove.push("imp_uid"),
        }
        match result.paid_at {
            Some(t) => {
                set.push("paid_at = :paid_at");
                values.push((":paid_at", ts(t)));
            }
            None => remove.push("paid_at"),
        }
        match &result.fail_reason {
            Some(v) => {
                set.push("fail_reason = :reason");
                values.push((":reason", s(v)));
            }
            None => remove.push("fail_reason"),
        }
        let mut condition = "(#state = :claimed OR #state = :unknown)".to_owned();
        if let Some(token) = token {
            condition.push_str(" AND claim_token = :token");
            values.push((":token", s(token)));
        }
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(sub_pk(&attempt.subscription_id)))
            .key(SK, s(attempt_sk(&attempt.period, attempt.attempt)))
            .update_expression(format!(
                "SET {} REMOVE {}",
                set.join(", "),
                remove.join(", ")
            ))
            .condition_expression(condition)
            .expression_attribute_names("#state", "state");
        for (k, v) in values {
            update = update.expression_attribute_values(k, v);
        }
        let update = update
            .build()
            .map_err(|e| StoreError::Fatal(e.to_string()))?;
        let put_sub = Put::builder()
            .table_name(&self.table)
            .set_item(Some(subscription_to_item(next, self.shards)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(next.version.saturating_sub(1)))
            .build()
            .map_err(|e| StoreError::Fatal(e.to_string()))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().put(put_sub).build())
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "TransactWriteItems settle"))?;
        Ok(())
    }

    /// Records a refund seen at i'mport. Only ever raises the refunded total,
    /// so duplicate and out-of-order notifications change nothing more.
    /// Returns whether anything changed.
    pub async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(sub_pk(&attempt.subscription_id)))
            .key(SK, s(attempt_sk(&attempt.period, attempt.attempt)))
            .update_expression("SET refunded = :r, updated_at = :now")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(refunded) OR refunded < :r)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":r", n(refunded))
            .expression_attribute_values(":now", ts(now))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(e, "UpdateItem refund"));
        match result {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Raw access for tests and tools (e.g. to check an item's attributes).
    pub async fn raw_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.get(pk.to_owned(), sk).await
    }
}

/// Keys and encodings of records, for tools, benchmarks and tests.
pub mod keys {
    pub use super::item::{META, attempt_sk, reg_pk, sub_pk, subscription_to_item};
}
