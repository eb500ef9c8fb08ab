//! The ledger on DynamoDB: registrations, subscriptions and charge attempts
//! in one table (see `docs/data-model.md`). Items, attribute values and the
//! client stay inside this module.

mod item;
pub mod seal;
pub mod stream;
pub mod table;

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
    Activation, AttemptKey, Cursor, DuePage, Guard, IDEMPOTENCY_STALE, IDEMPOTENCY_TTL,
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

    /// The update writing a final result onto an attempt (out of the due and
    /// review indexes), under `condition`.
    fn result_update(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        condition: String,
        condition_values: Values,
        now: DateTime<Utc>,
        resolution: Option<&Resolution>,
    ) -> Result<Update, LedgerError> {
        let mut set = vec!["#state = :state", "updated_at = :now"];
        let mut remove = vec!["claim_token", "lease_until", "#dpk", "#dsk"];
        let mut values = vec![(":state", s(result.state.as_str())), (":now", ts(now))];
        values.extend(condition_values);
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
        match result.retry_at {
            Some(t) => {
                set.push("retry_at = :retry_at");
                values.push((":retry_at", ts(t)));
            }
            None => remove.push("retry_at"),
        }
        if let Some(amount) = result.amount {
            set.push("amount = :amount");
            values.push((":amount", n(amount)));
        }
        if let Some(res) = resolution {
            set.extend([
                "resolution_state = :res_state",
                "resolution_note = :res_note",
                "resolved_by = :res_by",
                "resolved_at = :res_at",
            ]);
            values.extend([
                (":res_state", s(res.state.as_str())),
                (":res_note", s(&res.note)),
                (":res_by", s(&res.actor)),
                (":res_at", ts(res.at)),
            ]);
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
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK);
        for (k, v) in values {
            update = update.expression_attribute_values(k, v);
        }
        update.build().map_err(build_error)
    }

    /// Condition and values for "the attempt is open and `guard` may write it".
    fn open_guard(
        guard: Guard<'_>,
        result: &AttemptResult,
    ) -> Result<(String, Values), LedgerError> {
        if !matches!(
            result.state,
            AttemptState::Paid | AttemptState::Failed | AttemptState::Rejected
        ) {
            return Err(LedgerError::Fatal(format!(
                "an attempt is settled as paid, failed or rejected, not {}",
                result.state.as_str()
            )));
        }
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

impl DynamoLedger {
    fn put(&self, item: Item) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .unwrap_or_else(|_| unreachable_put())
    }

    fn put_new(&self, item: Item) -> Result<Put, LedgerError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(build_error)
    }

    fn version_check(
        &self,
        id: &SubscriptionId,
        version: u64,
    ) -> Result<TransactWriteItem, LedgerError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, s(sub_pk(id)))
            .key(SK, s(META))
            .condition_expression("#version = :v")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":v", n(version))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    fn complete_registration(
        &self,
        reg: &Registration,
        imp_uid: &str,
        at: DateTime<Utc>,
    ) -> Result<Update, LedgerError> {
        Update::builder()
            .table_name(&self.table)
            .key(PK, s(reg_pk(&reg.merchant_uid)))
            .key(SK, s(META))
            .update_expression(
                "SET #status = :completed, completed_at = :now, imp_uid = :imp_uid REMOVE #ttl, expires_at, #dpk, #dsk",
            )
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":completed", s(RegistrationStatus::Completed.as_str()))
            .expression_attribute_values(":pending", s(RegistrationStatus::Pending.as_str()))
            .expression_attribute_values(":now", ts(at))
            .expression_attribute_values(":imp_uid", s(imp_uid))
            .build()
            .map_err(build_error)
    }

    /// The attempt with its entry in the due index (open attempts are due
    /// for attention at `due_at`).
    fn attempt_item(&self, a: &ChargeAttempt, due_at: Option<DateTime<Utc>>) -> Item {
        let mut item = attempt_to_item(a);
        if let Some(at) = due_at {
            item.insert(
                DUE_PK.into(),
                s(due_pk(a.subscription_id.shard(self.shards))),
            );
            item.insert(DUE_SK.into(), ts(at));
        }
        item
    }

    /// The delete of the user's lock on `name`, if `sub` holds it. A lock
    /// held by another is left alone (a conditional delete would fail the
    /// whole transaction), so it is read first and deleted on that condition.
    async fn let_go_of_lock(
        &self,
        sub: &Subscription,
        name: &str,
    ) -> Result<Option<TransactWriteItem>, LedgerError> {
        if self.lock_holder(&sub.user_id, name).await? != Some(sub.id.clone()) {
            return Ok(None);
        }
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(PK, s(user_pk(&sub.user_id)))
            .key(SK, s(user_lock_sk(name)))
            .condition_expression("subscription_id = :id")
            .expression_attribute_values(":id", s(sub.id.as_str()))
            .build()
            .map_err(build_error)?;
        Ok(Some(TransactWriteItem::builder().delete(delete).build()))
    }

    /// Which subscription holds the user's lock on a plan name.
    async fn lock_holder(
        &self,
        user_id: &str,
        plan_name: &str,
    ) -> Result<Option<SubscriptionId>, LedgerError> {
        match self.get(user_pk(user_id), &user_lock_sk(plan_name)).await? {
            Some(item) => Ok(Some(
                item::Reader::new(&item, "plan lock").sub_id("subscription_id")?,
            )),
            None => Ok(None),
        }
    }

    async fn query_all(&self, pk: String, sk_prefix: &str) -> Result<Vec<Item>, LedgerError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            // DynamoDB refuses an empty key value, so "every item" is a
            // condition on the partition alone.
            let query = if sk_prefix.is_empty() {
                query.key_condition_expression("#pk = :pk")
            } else {
                query
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":prefix", s(sk_prefix))
            };
            let page = query.send().await.map_err(|e| sdk_error(e, "Query"))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }
}

/// `Put::build` only fails without a table name, which every put here has.
fn unreachable_put() -> Put {
    Put::builder()
        .table_name("-")
        .set_item(Some(Item::new()))
        .build()
        .unwrap_or_else(|_| panic!("Put without a table name"))
}

/// The user's lock on a plan name, held by subscription `id`.
fn lock_item(user_id: &str, plan_name: &str, id: &SubscriptionId) -> Item {
    let mut lock = Item::new();
    lock.insert(PK.into(), s(user_pk(user_id)));
    lock.insert(SK.into(), s(user_lock_sk(plan_name)));
    lock.insert("type".into(), s("plan_lock"));
    lock.insert("subscription_id".into(), s(id.as_str()));
    lock.insert("plan_name".into(), s(plan_name));
    lock
}

fn attempt_key_from(pk: &str, sk: &str) -> Option<AttemptKey> {
    let id = pk.strip_prefix("SUB#").and_then(SubscriptionId::parse)?;
    let rest = sk.strip_prefix("CHARGE#")?;
    let (period, n) = rest.split_once('#')?;
    Some((id, PeriodId::parse(period)?, n.parse().ok()?))
}

impl Ledger for DynamoLedger {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        let mut pointer = Item::new();
        pointer.insert(PK.into(), s(user_pk(&reg.user_id)));
        pointer.insert(SK.into(), s(user_reg_sk(&reg.merchant_uid)));
        pointer.insert("type".into(), s("user_registration"));
        if let Some(t) = reg.expires_at {
            pointer.insert(TTL_ATTRIBUTE.into(), ts(t + chrono::Duration::days(7)));
        }
        self.transact(
            vec![
                TransactWriteItem::builder()
                    .put(self.put_new(registration_to_item(reg, self.shards))?)
                    .build(),
                TransactWriteItem::builder().put(self.put(pointer)).build(),
            ],
            "TransactWriteItems registration",
        )
        .await
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

    async fn activate(&self, a: &Activation<'_>) -> Result<(), LedgerError> {
        let mut pointer = Item::new();
        pointer.insert(PK.into(), s(user_pk(&a.sub.user_id)));
        pointer.insert(SK.into(), s(user_sub_sk(&a.sub.id)));
        pointer.insert("type".into(), s("user_subscription"));
        pointer.insert("subscription_id".into(), s(a.sub.id.as_str()));
        let mut items = vec![
            TransactWriteItem::builder()
                .put(self.put_new(self.sub_item(a.sub).await?)?)
                .build(),
            TransactWriteItem::builder()
                .update(self.complete_registration(a.reg, a.imp_uid, a.sub.created_at)?)
                .build(),
            TransactWriteItem::builder().put(self.put(pointer)).build(),
        ];
        if let Some(attempt) = a.first_attempt {
            let mut item = attempt_to_item(attempt);
            if attempt.state == AttemptState::NeedsReview {
                // Waiting for a person from the start: in the review index.
                item.insert(DUE_PK.into(), s(REVIEW_PK));
                item.insert(DUE_SK.into(), ts(attempt.updated_at));
            }
            items.push(
                TransactWriteItem::builder()
                    .put(self.put_new(item)?)
                    .build(),
            );
        }
        if a.plan_lock {
            let lock = lock_item(&a.sub.user_id, a.sub.lock_name(), &a.sub.id);
            items.push(
                TransactWriteItem::builder()
                    .put(self.put_new(lock)?)
                    .build(),
            );
        }
        self.transact(items, "TransactWriteItems activate").await
    }

    async fn replace_key(&self, replacement: &KeyReplacement<'_>) -> Result<(), LedgerError> {
        let r = replacement;
        let mut items = vec![
            TransactWriteItem::builder()
                .update(self.complete_registration(r.reg, r.imp_uid, r.next.updated_at)?)
                .build(),
            TransactWriteItem::builder()
                .put(self.versioned_put(r.next).await?)
                .build(),
            TransactWriteItem::builder()
                .put(self.put(audit_to_item(r.audit)))
                .build(),
        ];
        if let Some(w) = r.window_payment {
            let mut item = attempt_to_item(w);
            item.insert(DUE_PK.into(), s(REVIEW_PK));
            item.insert(DUE_SK.into(), ts(w.updated_at));
            items.push(
                TransactWriteItem::builder()
                    .put(self.put_new(item)?)
                    .build(),
            );
        }
        self.transact(items, "TransactWriteItems replace key").await
    }

    async fn refuse_registration(
        &self,
        reg: &Registration,
        now: DateTime<Utc>,
        window_payment: Option<&ChargeAttempt>,
    ) -> Result<(), LedgerError> {
        let refuse = Update::builder()
            .table_name(&self.table)
            .key(PK, s(reg_pk(&reg.merchant_uid)))
            .key(SK, s(META))
            .update_expression("SET #status = :refused, refused_at = :now REMOVE #dpk, #dsk")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":refused", s(RegistrationStatus::Refused.as_str()))
            .expression_attribute_values(":pending", s(RegistrationStatus::Pending.as_str()))
            .expression_attribute_values(":now", ts(now))
            .build()
            .map_err(build_error)?;
        let mut items = vec![TransactWriteItem::builder().update(refuse).build()];
        if let Some(w) = window_payment {
            let mut item = attempt_to_item(w);
            item.insert(DUE_PK.into(), s(REVIEW_PK));
            item.insert(DUE_SK.into(), ts(w.updated_at));
            items.push(
                TransactWriteItem::builder()
                    .put(self.put_new(item)?)
                    .build(),
            );
        }
        self.transact(items, "TransactWriteItems refuse registration")
            .await
    }

    async fn user_items(&self, user_id: &str) -> Result<UserItems, LedgerError> {
        let mut out = UserItems::default();
        for item in self.query_all(user_pk(user_id), "").await? {
            let r = item::Reader::new(&item, "user entry");
            let sk = r.str(SK)?;
            if let Some(id) = sk.strip_prefix("SUB#") {
                out.subscriptions.push(
                    SubscriptionId::parse(id)
                        .ok_or_else(|| LedgerError::Corrupt(format!("user entry {sk:?}")))?,
                );
            } else if let Some(uid) = sk.strip_prefix("REG#") {
                out.registrations.push(uid.to_owned());
            } else if let Some(plan) = sk.strip_prefix("PLAN#") {
                out.locks
                    .push((plan.to_owned(), r.sub_id("subscription_id")?));
            }
        }
        Ok(out)
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        match self.get(sub_pk(id), META).await? {
            Some(item) => Ok(Some(self.read_sub(&item).await?)),
            None => Ok(None),
        }
    }

    async fn change_subscription(
        &self,
        change: &SubscriptionChange<'_>,
    ) -> Result<(), LedgerError> {
        let next = change.next;
        if change.audit.is_none() && change.lock == LockChange::Keep {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.sub_item(next).await?))
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(next.version.saturating_sub(1)))
                .send()
                .await
                .map_err(|e| sdk_error(e, "PutItem subscription"))?;
            return Ok(());
        }
        let mut items = vec![
            TransactWriteItem::builder()
                .put(self.versioned_put(next).await?)
                .build(),
        ];
        if let Some(audit) = change.audit {
            items.push(
                TransactWriteItem::builder()
                    .put(self.put(audit_to_item(audit)))
                    .build(),
            );
        }
        let (release, take) = match change.lock {
            LockChange::Keep => (None, None),
            LockChange::Release(name) => (Some(name), None),
            LockChange::Move { from, to } => (Some(from), Some(to)),
        };
        if let Some(name) = release {
            items.extend(self.let_go_of_lock(next, name).await?);
        }
        if let Some(name) = take {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(lock_item(&next.user_id, name, &next.id)))
                .condition_expression("attribute_not_exists(#pk) OR subscription_id = :id")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":id", s(next.id.as_str()))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        self.transact(items, "TransactWriteItems change subscription")
            .await
    }

    async fn history(
        &self,
        id: &SubscriptionId,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :audit)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(sub_pk(id)))
            .expression_attribute_values(":audit", s("AUDIT#"))
            .scan_index_forward(false)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(100))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(e, "Query history"))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(audit_from_item)
            .collect()
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
                return Ok(DuePage::default());
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
                .projection_expression("#pk, #sk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .limit(limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(e, "Query due"))?;
            let mut page = DuePage::default();
            for entry in out.items.unwrap_or_default() {
                let r = item::Reader::new(&entry, "due entry");
                let (pk, sk) = match (r.str(PK), r.str(SK)) {
                    (Ok(pk), Ok(sk)) => (pk, sk),
                    (Err(e), _) | (_, Err(e)) => {
                        page.corrupt.push(e.to_string());
                        continue;
                    }
                };
                if sk == META {
                    if let Some(id) = pk.strip_prefix("SUB#").and_then(SubscriptionId::parse) {
                        page.ids.push(id);
                        continue;
                    }
                    if let Some(uid) = pk.strip_prefix("REG#").filter(|u| !u.is_empty()) {
                        page.registrations.push(uid.to_owned());
                        continue;
                    }
                } else if let Some(key) = attempt_key_from(&pk, &sk) {
                    page.attempts.push(key);
                    continue;
                }
                page.corrupt
                    .push(format!("due entry with key {pk:?}/{sk:?}"));
            }
            page.next = match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(key) => Self::encode_cursor(shard, &key),
                None if shard + 1 < self.shards => Some(Cursor(format!("{}", shard + 1))),
                None => None,
            };
            if page.ids.is_empty()
                && page.registrations.is_empty()
                && page.attempts.is_empty()
                && page.corrupt.is_empty()
                && let Some(c) = &page.next
            {
                // An empty shard: go on to the next without a round trip to the caller.
                (shard, start) = Self::decode_cursor(c)?;
                continue;
            }
            return Ok(page);
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
        self.query_all(sub_pk(id), "CHARGE#")
            .await?
            .iter()
            .map(attempt_from_item)
            .collect()
    }

    async fn claim_new(
        &self,
        attempt: &ChargeAttempt,
        next: &Subscription,
    ) -> Result<(), LedgerError> {
        if next.id != attempt.subscription_id {
            return Err(LedgerError::Fatal(
                "a claim names another subscription".into(),
            ));
        }
        self.transact(
            vec![
                TransactWriteItem::builder()
                    .put(self.put_new(self.attempt_item(attempt, attempt.lease_until))?)
                    .build(),
                TransactWriteItem::builder()
                    .put(self.versioned_put(next).await?)
                    .build(),
            ],
            "TransactWriteItems claim",
        )
        .await
    }

    async fn take_over(&self, take_over: &TakeOver<'_>) -> Result<ChargeAttempt, LedgerError> {
        let TakeOver {
            id,
            period,
            attempt,
            token,
            lease_until,
            now,
            sub_version,
        } = *take_over;
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(sub_pk(id)))
            .key(SK, s(attempt_sk(period, attempt)))
            .update_expression(
                "SET #state = :claimed, claim_token = :token, lease_until = :lease, updated_at = :now, #dpk = :dpk, #dsk = :lease",
            )
            .condition_expression("#state = :unknown OR (#state = :claimed AND lease_until < :now)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
            .expression_attribute_values(":unknown", s(AttemptState::Unknown.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":lease", ts(lease_until))
            .expression_attribute_values(":now", ts(now))
            .expression_attribute_values(":dpk", s(due_pk(id.shard(self.shards))))
            .build()
            .map_err(build_error)?;
        self.transact(
            vec![
                TransactWriteItem::builder().update(update).build(),
                self.version_check(id, sub_version)?,
            ],
            "TransactWriteItems take over",
        )
        .await?;
        // A transaction returns no item: read what was taken over.
        self.get_attempt(id, period, attempt).await?.ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "attempt {id}/{period}/{attempt} vanished after take-over"
            ))
        })
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        let (pk, sk) = Self::attempt_key(attempt);
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(
                "SET sent_at = :now, updated_at = :now, key_ref = :key ADD sends :one REMOVE customer_uid",
            )
            .condition_expression("#state = :claimed AND claim_token = :token")
            .expression_attribute_values(":key", s(&attempt.key_ref))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":now", ts(now))
            .build()
            .map_err(build_error)?;
        self.transact(
            vec![
                TransactWriteItem::builder().update(update).build(),
                self.version_check(&attempt.subscription_id, sub_version)?,
            ],
            "TransactWriteItems sending",
        )
        .await
    }

    async fn mark_unknown(&self, unknown: &UnknownOutcome<'_>) -> Result<(), LedgerError> {
        let UnknownOutcome {
            attempt,
            token,
            detail,
            sent,
            now,
            due_at,
        } = *unknown;
        let (pk, sk) = Self::attempt_key(attempt);
        // A request certainly never delivered is not counted as sent.
        let (remove, add) = match sent {
            Sent::Maybe => ("claim_token, lease_until", ""),
            Sent::Never => ("claim_token, lease_until, sent_at", " ADD sends :minus_one"),
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(format!(
                "SET #state = :unknown, fail_reason = :detail, updated_at = :now, #dpk = :dpk, #dsk = :due{add} REMOVE {remove}"
            ));
        if sent == Sent::Never {
            update = update.expression_attribute_values(":minus_one", n(-1));
        }
        update
            .condition_expression("#state = :claimed AND claim_token = :token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":unknown", s(AttemptState::Unknown.as_str()))
            .expression_attribute_values(":claimed", s(AttemptState::Claimed.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":detail", s(detail))
            .expression_attribute_values(":now", ts(now))
            .expression_attribute_values(
                ":dpk",
                s(due_pk(attempt.subscription_id.shard(self.shards))),
            )
            .expression_attribute_values(":due", ts(due_at))
            .send()
            .await
            .map_err(|e| sdk_error(e, "UpdateItem unknown"))?;
        Ok(())
    }

    async fn settle(&self, settlement: &Settlement<'_>) -> Result<(), LedgerError> {
        let Settlement {
            attempt,
            result,
            guard,
            next,
            now,
        } = *settlement;
        let (condition, guard_values) = Self::open_guard(guard, result)?;
        let update = self.result_update(attempt, result, condition, guard_values, now, None)?;
        let mut items = vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder()
                .put(self.versioned_put(next).await?)
                .build(),
        ];
        // Dunning that ends in `cancelled` ends the subscription: its lock goes.
        if next.status == SubscriptionStatus::Cancelled {
            items.extend(self.let_go_of_lock(next, next.lock_name()).await?);
        }
        self.transact(items, "TransactWriteItems settle").await
    }

    async fn flag_review(&self, flag: &ReviewFlag<'_>) -> Result<(), LedgerError> {
        let ReviewFlag {
            attempt,
            token,
            reason,
            next,
            now,
        } = *flag;
        let (pk, sk) = Self::attempt_key(attempt);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(
                "SET #state = :review, fail_reason = :reason, updated_at = :now, #dpk = :rpk, #dsk = :now REMOVE claim_token, lease_until",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":review", s(AttemptState::NeedsReview.as_str()))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", ts(now))
            .expression_attribute_values(":rpk", s(REVIEW_PK))
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
                    .put(self.versioned_put(next).await?)
                    .build(),
            ],
            "TransactWriteItems flag review",
        )
        .await
    }

    async fn resolve(&self, decision: &ReviewDecision<'_>) -> Result<(), LedgerError> {
        let ReviewDecision {
            attempt,
            result,
            resolution,
            next,
            audit,
        } = *decision;
        let update = self.result_update(
            attempt,
            result,
            "#state = :review".into(),
            vec![(":review", s(AttemptState::NeedsReview.as_str()))],
            resolution.at,
            Some(resolution),
        )?;
        self.transact(
            vec![
                TransactWriteItem::builder().update(update).build(),
                TransactWriteItem::builder()
                    .put(self.versioned_put(next).await?)
                    .build(),
                TransactWriteItem::builder()
                    .put(self.put(audit_to_item(audit)))
                    .build(),
            ],
            "TransactWriteItems resolve",
        )
        .await
    }

    async fn count_review(&self) -> Result<u64, LedgerError> {
        let mut count = 0u64;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("#dpk = :review")
                .expression_attribute_names("#dpk", DUE_PK)
                .expression_attribute_values(":review", s(REVIEW_PK))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error(e, "Query review count"))?;
            count += u64::try_from(out.count).unwrap_or(0);
            match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(k) => start = Some(k),
                None => return Ok(count),
            }
        }
    }

    async fn review_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<ReviewPage, LedgerError> {
        let start = match cursor {
            Some(c) => match Self::decode_cursor(c)? {
                (_, Some(key)) => Some(key),
                (_, None) => None,
            },
            None => None,
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("#dpk = :review")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_values(":review", s(REVIEW_PK))
            .projection_expression("#pk, #sk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(100))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error(e, "Query review"))?;
        let mut page = ReviewPage::default();
        for entry in out.items.unwrap_or_default() {
            let r = item::Reader::new(&entry, "review entry");
            let (pk, sk) = (r.str(PK)?, r.str(SK)?);
            page.attempts.push(
                attempt_key_from(&pk, &sk)
                    .ok_or_else(|| LedgerError::Corrupt(format!("review entry {pk:?}/{sk:?}")))?,
            );
        }
        page.next = out
            .last_evaluated_key
            .filter(|k| !k.is_empty())
            .and_then(|k| Self::encode_cursor(0, &k));
        Ok(page)
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, LedgerError> {
        let (pk, sk) = Self::attempt_key(attempt);
        let update = Update::builder()
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
            .build()
            .map_err(build_error)?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        if let Some(audit) = audit {
            items.push(
                TransactWriteItem::builder()
                    .put(self.put(audit_to_item(audit)))
                    .build(),
            );
        }
        match self.transact(items, "TransactWriteItems refund").await {
            Ok(()) => Ok(true),
            Err(LedgerError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn get_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
    ) -> Result<Option<RefundIntent>, LedgerError> {
        let (pk, _) = Self::attempt_key(attempt);
        self.get(pk, &refund_sk(&attempt.merchant_uid, key))
            .await?
            .map(|item| refund_from_item(&item))
            .transpose()
    }

    async fn begin_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
    ) -> Result<RefundIntent, LedgerError> {
        let (pk, attempt_sk) = Self::attempt_key(attempt);
        let sk = refund_sk(&attempt.merchant_uid, &intent.key);
        let put = self.put_new(refund_to_item(&pk, &sk, intent))?;
        let written = self
            .transact(
                vec![
                    TransactWriteItem::builder().put(put).build(),
                    // The attempt must exist (a refund is kept beside it).
                    TransactWriteItem::builder()
                        .condition_check(
                            ConditionCheck::builder()
                                .table_name(&self.table)
                                .key(PK, s(pk.clone()))
                                .key(SK, s(attempt_sk))
                                .condition_expression("attribute_exists(#pk)")
                                .expression_attribute_names("#pk", PK)
                                .build()
                                .map_err(build_error)?,
                        )
                        .build(),
                ],
                "TransactWriteItems begin refund",
            )
            .await;
        match written {
            Ok(()) => Ok(intent.clone()),
            Err(LedgerError::Conflict(why)) => match self.get(pk, &sk).await? {
                Some(item) => refund_from_item(&item),
                None => Err(LedgerError::Conflict(why)),
            },
            Err(e) => Err(e),
        }
    }

    async fn finish_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
        audit: Option<&AuditEntry>,
    ) -> Result<(), LedgerError> {
        let (pk, attempt_sk) = Self::attempt_key(attempt);
        let finish = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk.clone()))
            .key(SK, s(refund_sk(&attempt.merchant_uid, &intent.key)))
            .update_expression("SET #state = :state, updated_at = :now, refunded_total = :total")
            .condition_expression("#state = :requested")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(intent.state.as_str()))
            .expression_attribute_values(":requested", s(RefundState::Requested.as_str()))
            .expression_attribute_values(":now", ts(intent.updated_at))
            .expression_attribute_values(":total", n(intent.refunded_total.unwrap_or(0)))
            .build()
            .map_err(build_error)?;
        let audit_put = audit.map(|a| {
            TransactWriteItem::builder()
                .put(self.put(audit_to_item(a)))
                .build()
        });
        // The attempt's refunded total (the gateway's, done or refused) only
        // ever rises; when a webhook recorded it first, the refund is
        // finished without it.
        if let Some(total) = intent.refunded_total {
            let raise = Update::builder()
                .table_name(&self.table)
                .key(PK, s(pk))
                .key(SK, s(attempt_sk))
                .update_expression("SET refunded = :r, updated_at = :now")
                .condition_expression(
                    "attribute_exists(#pk) AND (attribute_not_exists(refunded) OR refunded < :r)",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":r", n(total))
                .expression_attribute_values(":now", ts(intent.updated_at))
                .build()
                .map_err(build_error)?;
            let mut items = vec![
                TransactWriteItem::builder().update(finish.clone()).build(),
                TransactWriteItem::builder().update(raise).build(),
            ];
            items.extend(audit_put.clone());
            match self
                .transact(items, "TransactWriteItems finish refund")
                .await
            {
                Err(LedgerError::Conflict(_)) => {}
                other => return other,
            }
        }
        let mut items = vec![TransactWriteItem::builder().update(finish).build()];
        items.extend(audit_put);
        self.transact(items, "TransactWriteItems finish refund")
            .await
    }

    async fn begin_request(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestState, LedgerError> {
        let mut item = Item::new();
        item.insert(PK.into(), s(idempotency_pk(key)));
        item.insert(SK.into(), s(META));
        item.insert("type".into(), s("idempotency_key"));
        item.insert("fingerprint".into(), s(fingerprint));
        item.insert("state".into(), s("in_progress"));
        item.insert("started_at".into(), ts(now));
        item.insert(TTL_ATTRIBUTE.into(), ts(now + IDEMPOTENCY_TTL));
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(#pk) OR #ttl < :now OR (#state = :in_progress AND fingerprint = :fp AND started_at < :stale)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":now", ts(now))
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":fp", s(fingerprint))
            .expression_attribute_values(":stale", ts(now - IDEMPOTENCY_STALE))
            .send()
            .await
            .map_err(|e| sdk_error(e, "PutItem idempotency key"));
        match written {
            Ok(_) => return Ok(RequestState::Fresh),
            Err(LedgerError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let Some(stored) = self.get(idempotency_pk(key), META).await? else {
            // Expired and deleted in between: a retry will take it.
            return Ok(RequestState::InProgress);
        };
        let r = item::Reader::new(&stored, "idempotency key");
        if r.str("fingerprint")? != fingerprint {
            return Ok(RequestState::Mismatch);
        }
        if r.str("state")? == "done" {
            return Ok(RequestState::Replay(StoredResponse {
                status: u16::try_from(r.i64("status")?)
                    .map_err(|_| LedgerError::Corrupt("idempotency status".into()))?,
                body: r.str("body")?,
            }));
        }
        Ok(RequestState::InProgress)
    }

    async fn finish_request(
        &self,
        key: &str,
        response: &StoredResponse,
        _now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(idempotency_pk(key)))
            .key(SK, s(META))
            .update_expression("SET #state = :done, #status = :status, body = :body")
            .condition_expression("#state = :in_progress")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":status", n(response.status))
            .expression_attribute_values(":body", s(&response.body))
            .send()
            .await
            .map_err(|e| sdk_error(e, "UpdateItem idempotency key"))?;
        Ok(())
    }

    async fn abandon_request(&self, key: &str) -> Result<(), LedgerError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(idempotency_pk(key)))
            .key(SK, s(META))
            .condition_expression("#state = :in_progress")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s("in_progress"))
            .send()
            .await
            .map_err(|e| sdk_error(e, "DeleteItem idempotency key"));
        match deleted {
            Ok(_) | Err(LedgerError::Conflict(_)) => Ok(()),
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
