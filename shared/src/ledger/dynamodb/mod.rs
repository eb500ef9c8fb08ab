//! The ledger on DynamoDB: registrations, subscriptions and charge attempts
//! in one table (see `docs/data-model.md`). Items, attribute values and the
//! client stay inside this module.

mod item;
pub mod table;

use std::fmt::Debug;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use crate::billing::{
    AttemptResult, AttemptState, ChargeAttempt, PeriodId, Registration, RegistrationStatus,
    Subscription, SubscriptionId,
};
use crate::ledger::{Cursor, DuePage, Guard, Ledger, LedgerError, Sent};
use item::{
    Item, META, attempt_from_item, attempt_sk, attempt_to_item, due_pk, n, reg_pk,
    registration_from_item, registration_to_item, s, sub_pk, subscription_from_item,
    subscription_to_item, ts,
};
use table::{DUE_INDEX, DUE_PK, DUE_SK, PK, SK, TTL_ATTRIBUTE};

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
                    if message.contains("ConditionalCheckFailed")
                        || message.contains("TransactionConflict")
                    {
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
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>, shards: u32) -> Self {
        Self {
            client,
            table: table.into(),
            shards: shards.max(1),
        }
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

    fn versioned_put(&self, next: &Subscription) -> Result<Put, LedgerError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(subscription_to_item(next, self.shards)))
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

    /// Condition and values for "the attempt is open and `guard` may write it".
    fn open_guard(
        guard: Guard<'_>,
        result: &AttemptResult,
    ) -> Result<(String, Values), LedgerError> {
        match guard {
            Guard::Claim(token) => Ok((
                "#state = :claimed AND claim_token = :token".into(),
                vec![
                    (":claimed", s(AttemptState::Claimed.as_str())),
                    (":token", s(token)),
                ],
            )),
            Guard::PaidFact if result.state == AttemptState::Paid => Ok((
                "(#state = :claimed OR #state = :unknown)".into(),
                vec![
                    (":claimed", s(AttemptState::Claimed.as_str())),
                    (":unknown", s(AttemptState::Unknown.as_str())),
                ],
            )),
            Guard::PaidFact => Err(LedgerError::Fatal(format!(
                "only a paid fact may settle without the claim, not {}",
                result.state.as_str()
            ))),
        }
    }
}

impl Ledger for DynamoLedger {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(registration_to_item(reg, self.shards)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(|e| sdk_error(e, "PutItem registration"))?;
        Ok(())
    }

    async fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> Result<Option<Registration>, LedgerError> {
        self.get(reg_pk(merchant_uid), META)
            .await?
            .map(|item| registration_from_item(&item))
            .transpose()
    }

    async fn activate(
        &self,
        reg: &Registration,
        sub: &Subscription,
        imp_uid: &str,
        first_attempt: Option<&ChargeAttempt>,
    ) -> Result<(), LedgerError> {
        let put_sub = Put::builder()
            .table_name(&self.table)
            .set_item(Some(subscription_to_item(sub, self.shards)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(build_error)?;
        let complete_reg = Update::builder()
            .table_name(&self.table)
            .key(PK, s(reg_pk(&reg.merchant_uid)))
            .key(SK, s(META))
            .update_expression(
                "SET #status = :completed, completed_at = :now, imp_uid = :imp_uid REMOVE #ttl, #dpk, #dsk",
            )
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":completed", s(RegistrationStatus::Completed.as_str()))
            .expression_attribute_values(":pending", s(RegistrationStatus::Pending.as_str()))
            .expression_attribute_values(":now", ts(sub.created_at))
            .expression_attribute_values(":imp_uid", s(imp_uid))
            .build()
            .map_err(build_error)?;
        let mut items = vec![
            TransactWriteItem::builder().put(put_sub).build(),
            TransactWriteItem::builder().update(complete_reg).build(),
        ];
        if let Some(attempt) = first_attempt {
            let put_attempt = Put::builder()
                .table_name(&self.table)
                .set_item(Some(attempt_to_item(attempt)))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().put(put_attempt).build());
        }
        self.transact(items, "TransactWriteItems activate").await
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        self.get(sub_pk(id), META)
            .await?
            .map(|item| subscription_from_item(&item))
            .transpose()
    }

    async fn save_subscription(&self, next: &Subscription) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(subscription_to_item(next, self.shards)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(next.version.saturating_sub(1)))
            .send()
            .await
            .map_err(|e| sdk_error(e, "PutItem subscription"))?;
        Ok(())
    }

    /// Pages through the shards of the sparse `due` index in turn. The
    /// index is eventually consistent and carries keys only.
    async fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<DuePage, LedgerError> {
        let (mut shard, mut start) = match cursor {
            Some(c) => Self::decode_cursor(c)?,
            None => (0, None),
        };
        let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(100);
        loop {
            if shard >= self.shards {
                return Ok(DuePage {
                    ids: Vec::new(),
                    registrations: Vec::new(),
                    corrupt: Vec::new(),
                    next: None,
                });
            }
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
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(e, "Query due"))?;
            let mut ids = Vec::new();
            let mut registrations = Vec::new();
            let mut corrupt = Vec::new();
            for entry in out.items.unwrap_or_default() {
                match item::Reader::new(&entry, "due entry").str(PK) {
                    Ok(pk) => {
                        if let Some(id) = pk.strip_prefix("SUB#").and_then(SubscriptionId::parse) {
                            ids.push(id);
                        } else if let Some(uid) = pk.strip_prefix("REG#").filter(|u| !u.is_empty())
                        {
                            registrations.push(uid.to_owned());
                        } else {
                            corrupt.push(format!("due entry with key {pk:?}"));
                        }
                    }
                    Err(e) => corrupt.push(e.to_string()),
                }
            }
            let next = match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(key) => Self::encode_cursor(shard, &key),
                None if shard + 1 < self.shards => Some(Cursor(format!("{}", shard + 1))),
                None => None,
            };
            if ids.is_empty()
                && registrations.is_empty()
                && corrupt.is_empty()
                && let Some(c) = &next
            {
                // An empty shard: go on to the next without a round trip to the caller.
                (shard, start) = Self::decode_cursor(c)?;
                continue;
            }
            return Ok(DuePage {
                ids,
                registrations,
                corrupt,
                next,
            });
        }
    }

    async fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Result<Option<ChargeAttempt>, LedgerError> {
        self.get(sub_pk(id), &attempt_sk(period, attempt))
            .await?
            .map(|item| attempt_from_item(&item))
            .transpose()
    }

    async fn list_attempts(&self, id: &SubscriptionId) -> Result<Vec<ChargeAttempt>, LedgerError> {
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
                .map_err(|e| sdk_error(e, "Query attempts"))?;
            for item in page.items.unwrap_or_default() {
                out.push(attempt_from_item(&item)?);
            }
            match page.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    async fn claim_new(&self, attempt: &ChargeAttempt) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attempt_to_item(attempt)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(|e| sdk_error(e, "PutItem claim"))?;
        Ok(())
    }

    async fn take_over(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
        token: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ChargeAttempt, LedgerError> {
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
            .map_err(|e| sdk_error(e, "UpdateItem take over"))?;
        attempt_from_item(&out.attributes.unwrap_or_default())
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (pk, sk) = Self::attempt_key(attempt);
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression("SET sent_at = :now, updated_at = :now")
            .condition_expression("#state = :claimed AND claim_token = :token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":now", ts(now))
            .send()
            .await
            .map_err(|e| sdk_error(e, "UpdateItem sending"))?;
        Ok(())
    }

    async fn mark_unknown(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        detail: &str,
        sent: Sent,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (pk, sk) = Self::attempt_key(attempt);
        let remove = match sent {
            Sent::Maybe => "claim_token, lease_until",
            Sent::Never => "claim_token, lease_until, sent_at",
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(format!(
                "SET #state = :unknown, fail_reason = :detail, updated_at = :now REMOVE {remove}"
            ))
            .condition_expression("#state = :claimed AND claim_token = :token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":unknown", s(AttemptState::Unknown.as_str()))
            .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":detail", s(detail))
            .expression_attribute_values(":now", ts(now))
            .send()
            .await
            .map_err(|e| sdk_error(e, "UpdateItem unknown"))?;
        Ok(())
    }

    async fn settle(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        guard: Guard<'_>,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (condition, guard_values) = Self::open_guard(guard, result)?;
        let mut set = vec!["#state = :state", "updated_at = :now"];
        let mut remove = vec!["claim_token", "lease_until"];
        let mut values = vec![(":state", s(result.state.as_str())), (":now", ts(now))];
        values.extend(guard_values);
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
        let (pk, sk) = Self::attempt_key(attempt);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
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
        let update = update.build().map_err(build_error)?;
        self.transact(
            vec![
                TransactWriteItem::builder().update(update).build(),
                TransactWriteItem::builder()
                    .put(self.versioned_put(next)?)
                    .build(),
            ],
            "TransactWriteItems settle",
        )
        .await
    }

    async fn flag_review(
        &self,
        attempt: &ChargeAttempt,
        token: Option<&str>,
        reason: &str,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (pk, sk) = Self::attempt_key(attempt);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(
                "SET #state = :review, fail_reason = :reason, updated_at = :now REMOVE claim_token, lease_until",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":review", s(AttemptState::NeedsReview.as_str()))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", ts(now))
            .expression_attribute_values(":unknown", s(AttemptState::Unknown.as_str()))
            .expression_attribute_values(":failed", s(AttemptState::Failed.as_str()))
            .expression_attribute_values(":rejected", s(AttemptState::Rejected.as_str()));
        let unclaimed = "#state = :unknown OR #state = :failed OR #state = :rejected";
        update = match token {
            Some(token) => update
                .condition_expression(format!(
                    "{unclaimed} OR (#state = :claimed AND claim_token = :token)"
                ))
                .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
                .expression_attribute_values(":token", s(token)),
            None => update.condition_expression(unclaimed),
        };
        let update = update.build().map_err(build_error)?;
        self.transact(
            vec![
                TransactWriteItem::builder().update(update).build(),
                TransactWriteItem::builder()
                    .put(self.versioned_put(next)?)
                    .build(),
            ],
            "TransactWriteItems flag review",
        )
        .await
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let (pk, sk) = Self::attempt_key(attempt);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression("SET refunded = :r, updated_at = :now")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(refunded) OR refunded < :r)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":r", n(refunded))
            .expression_attribute_values(":now", ts(now))
            .send()
            .await
            .map_err(|e| sdk_error(e, "UpdateItem refund"));
        match result {
            Ok(_) => Ok(true),
            Err(LedgerError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

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
        pub fn subscription_item(&self, sub: &Subscription) -> Item {
            subscription_to_item(sub, self.shards)
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
