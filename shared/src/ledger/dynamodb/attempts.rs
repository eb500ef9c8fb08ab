//! Charge attempts on DynamoDB: the claim, the take-over of an expired lease, the
//! send, an outcome not known, and the settlement.

use super::*;

pub(super) async fn get_attempt(
    db: &DynamoLedger,
    id: &SubscriptionId,
    period: &PeriodId,
    attempt: u32,
) -> Result<Option<ChargeAttempt>, LedgerError> {
    db.get(sub_pk(id), &attempt_sk(period, attempt))
        .await?
        .map(|item| attempt_from_item(&item))
        .transpose()
}

pub(super) async fn list_attempts(
    db: &DynamoLedger,
    id: &SubscriptionId,
) -> Result<Vec<ChargeAttempt>, LedgerError> {
    db.query_all(sub_pk(id), "CHARGE#")
        .await?
        .iter()
        .map(attempt_from_item)
        .collect()
}

pub(super) async fn claim_new(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    next: &Subscription,
) -> Result<(), LedgerError> {
    if next.id != attempt.subscription_id {
        return Err(LedgerError::Fatal(
            "a claim names another subscription".into(),
        ));
    }
    db.transact(
        vec![
            TransactWriteItem::builder()
                .put(db.put_new(db.attempt_item(attempt, attempt.lease_until))?)
                .build(),
            TransactWriteItem::builder()
                .put(db.versioned_put(next).await?)
                .build(),
        ],
        "TransactWriteItems claim",
    )
    .await
}

pub(super) async fn take_over(
    db: &DynamoLedger,
    take_over: &TakeOver<'_>,
) -> Result<ChargeAttempt, LedgerError> {
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
        .table_name(&db.table)
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
        .expression_attribute_values(":dpk", s(due_pk(id.shard(db.shards))))
        .build()
        .map_err(build_error)?;
    db.transact(
        vec![
            TransactWriteItem::builder().update(update).build(),
            db.version_check(id, sub_version)?,
        ],
        "TransactWriteItems take over",
    )
    .await?;
    // A transaction returns no item: read what was taken over.
    db.get_attempt(id, period, attempt).await?.ok_or_else(|| {
        LedgerError::Corrupt(format!(
            "attempt {id}/{period}/{attempt} vanished after take-over"
        ))
    })
}

pub(super) async fn mark_sending(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    token: &str,
    now: DateTime<Utc>,
    sub_version: u64,
) -> Result<(), LedgerError> {
    let (pk, sk) = DynamoLedger::attempt_key(attempt);
    let update = Update::builder()
        .table_name(&db.table)
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
    db.transact(
        vec![
            TransactWriteItem::builder().update(update).build(),
            db.version_check(&attempt.subscription_id, sub_version)?,
        ],
        "TransactWriteItems sending",
    )
    .await
}

pub(super) async fn mark_unknown(
    db: &DynamoLedger,
    unknown: &UnknownOutcome<'_>,
) -> Result<(), LedgerError> {
    let UnknownOutcome {
        attempt,
        token,
        detail,
        sent,
        now,
        due_at,
    } = *unknown;
    let (pk, sk) = DynamoLedger::attempt_key(attempt);
    // A request certainly never delivered is not counted as sent.
    let (remove, add) = match sent {
        Sent::Maybe => ("claim_token, lease_until", ""),
        Sent::Never => ("claim_token, lease_until, sent_at", " ADD sends :minus_one"),
    };
    let mut update = db
        .client
        .update_item()
        .table_name(&db.table)
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
        .expression_attribute_values(":dpk", s(due_pk(attempt.subscription_id.shard(db.shards))))
        .expression_attribute_values(":due", ts(due_at))
        .send()
        .await
        .map_err(|e| sdk_error(e, "UpdateItem unknown"))?;
    Ok(())
}

pub(super) async fn settle(
    db: &DynamoLedger,
    settlement: &Settlement<'_>,
) -> Result<(), LedgerError> {
    let Settlement {
        attempt,
        result,
        guard,
        next,
        now,
    } = *settlement;
    let (condition, guard_values) = DynamoLedger::open_guard(guard, result)?;
    let update = db.result_update(attempt, result, condition, guard_values, now, None)?;
    let mut items = vec![
        TransactWriteItem::builder().update(update).build(),
        TransactWriteItem::builder()
            .put(db.versioned_put(next).await?)
            .build(),
    ];
    // Dunning that ends in `cancelled` ends the subscription: its lock goes.
    if next.status == SubscriptionStatus::Cancelled {
        items.extend(db.let_go_of_lock(next, next.lock_name()).await?);
    }
    db.transact(items, "TransactWriteItems settle").await
}
