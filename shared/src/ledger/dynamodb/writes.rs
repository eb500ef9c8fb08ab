//! The pieces the operations share: the update that writes an attempt's
//! result, the guards of an open attempt, puts with their conditions, the
//! user's plan lock, and paging through an item collection.

use super::*;

impl DynamoLedger {
    /// The update writing a final result onto an attempt (out of the due and
    /// review indexes), under `condition`.
    pub(super) fn result_update(
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
        // Each optional field is written when the result has it and
        // removed when it has not (a retry's result replaces the last one).
        let optional = [
            ("imp_uid", ":imp_uid", result.imp_uid.as_deref().map(s)),
            ("paid_at", ":paid_at", result.paid_at.map(ts)),
            (
                "fail_reason",
                ":reason",
                result.fail_reason.as_deref().map(s),
            ),
            ("decline", ":decline", result.decline.map(|c| s(c.as_str()))),
            (
                "receipt_url",
                ":receipt_url",
                result.receipt_url.as_deref().map(s),
            ),
            ("retry_at", ":retry_at", result.retry_at.map(ts)),
        ];
        let mut assigned = Vec::new();
        for (attr, placeholder, value) in optional {
            match value {
                Some(v) => {
                    assigned.push(format!("{attr} = {placeholder}"));
                    values.push((placeholder, v));
                }
                None => remove.push(attr),
            }
        }
        set.extend(assigned.iter().map(String::as_str));
        if let Some(amount) = result.amount {
            set.push("amount = :amount");
            values.push((":amount", n(amount)));
        }
        // The VAT split as the PG reported it replaces the one sent.
        if let Some(tax) = result.tax {
            set.push("tax_free = :tax_free, vat = :vat");
            values.push((":tax_free", n(tax.tax_free)));
            values.push((":vat", n(tax.vat)));
        }
        if let Some(res) = resolution {
            let (assignments, resolved) = resolution_fields(res);
            set.extend(assignments);
            values.extend(resolved);
        }
        // A paid charge's cash receipt, in the queue from now (decision 74).
        let receipt = result
            .cash_receipt
            .as_ref()
            .map(|r| super::receipts::assignments(r, attempt.subscription_id.shard(self.shards)));
        if let Some((assignments, _, receipt_values)) = &receipt {
            set.extend(assignments.iter().copied());
            values.extend(receipt_values.iter().cloned());
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
        if receipt.is_some() {
            for (k, v) in super::receipts::NAMES {
                update = update.expression_attribute_names(k, v);
            }
        }
        for (k, v) in values {
            update = update.expression_attribute_values(k, v);
        }
        update.build().map_err(build_error)
    }

    /// Condition and values for "the attempt is open and `guard` may write it".
    pub(super) fn open_guard(
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
    pub(super) fn put(&self, item: Item) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .unwrap_or_else(|_| unreachable_put())
    }

    pub(super) fn put_new(&self, item: Item) -> Result<Put, LedgerError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(build_error)
    }

    pub(super) fn version_check(
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

    pub(super) fn complete_registration(
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
    pub(super) fn attempt_item(&self, a: &ChargeAttempt, due_at: Option<DateTime<Utc>>) -> Item {
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
    pub(super) async fn let_go_of_lock(
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
    pub(super) async fn lock_holder(
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

    pub(super) async fn query_all(
        &self,
        pk: String,
        sk_prefix: &str,
    ) -> Result<Vec<Item>, LedgerError> {
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
pub(super) fn lock_item(user_id: &str, plan_name: &str, id: &SubscriptionId) -> Item {
    let mut lock = Item::new();
    lock.insert(PK.into(), s(user_pk(user_id)));
    lock.insert(SK.into(), s(user_lock_sk(plan_name)));
    lock.insert("type".into(), s("plan_lock"));
    lock.insert("subscription_id".into(), s(id.as_str()));
    lock.insert("plan_name".into(), s(plan_name));
    lock
}

pub(super) fn attempt_key_from(pk: &str, sk: &str) -> Option<AttemptKey> {
    let id = pk.strip_prefix("SUB#").and_then(SubscriptionId::parse)?;
    let rest = sk.strip_prefix("CHARGE#")?;
    let (period, n) = rest.split_once('#')?;
    Some((id, PeriodId::parse(period)?, n.parse().ok()?))
}

/// A person's resolution on an attempt: its assignments and their values.
fn resolution_fields(
    res: &Resolution,
) -> (
    [&'static str; 4],
    [(&'static str, aws_sdk_dynamodb::types::AttributeValue); 4],
) {
    (
        [
            "resolution_state = :res_state",
            "resolution_note = :res_note",
            "resolved_by = :res_by",
            "resolved_at = :res_at",
        ],
        [
            (":res_state", s(res.state.as_str())),
            (":res_note", s(&res.note)),
            (":res_by", s(&res.actor)),
            (":res_at", ts(res.at)),
        ],
    )
}
