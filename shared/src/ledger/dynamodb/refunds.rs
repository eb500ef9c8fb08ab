//! Refunds on DynamoDB: the refunds recorded on a charge and the intents that make a
//! refund safe to repeat.

use super::*;
use crate::billing::RefundCause;

pub(super) async fn record_refund(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    refunded: i64,
    now: DateTime<Utc>,
    audit: Option<&AuditEntry>,
) -> Result<bool, LedgerError> {
    let update = raise_refunded(db, attempt, refunded, RefundCause::PgReported, now)?;
    let mut items = vec![TransactWriteItem::builder().update(update).build()];
    if let Some(audit) = audit {
        items.push(
            TransactWriteItem::builder()
                .put(db.put(audit_to_item(audit)))
                .build(),
        );
    }
    match db.transact(items, "TransactWriteItems refund").await {
        Ok(()) => Ok(true),
        Err(LedgerError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Raises an attempt's refunded total (only ever raised), and puts its
/// cash receipt back in the queue: it must now cover less (decision 74).
fn raise_refunded(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    total: i64,
    cause: RefundCause,
    now: DateTime<Utc>,
) -> Result<Update, LedgerError> {
    let (pk, sk) = DynamoLedger::attempt_key(attempt);
    let mut set = "SET refunded = :r, refund_cause = :cause, updated_at = :now".to_owned();
    let mut update = Update::builder()
        .table_name(&db.table)
        .key(PK, s(pk))
        .key(SK, s(sk))
        .condition_expression(
            "attribute_exists(#pk) AND (attribute_not_exists(refunded) OR refunded < :r)",
        )
        .expression_attribute_names("#pk", PK)
        .expression_attribute_values(":r", n(total))
        .expression_attribute_values(":cause", s(cause.as_str()))
        .expression_attribute_values(":now", ts(now));
    if attempt.cash_receipt.is_some() {
        let (requeue, values) =
            super::receipts::requeue(attempt.subscription_id.shard(db.shards), now);
        set.push_str(", ");
        set.push_str(requeue);
        for (k, v) in super::receipts::NAMES {
            update = update.expression_attribute_names(k, v);
        }
        for (k, v) in values {
            update = update.expression_attribute_values(k, v);
        }
    }
    update.update_expression(set).build().map_err(build_error)
}

pub(super) async fn get_refund(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    key: &str,
) -> Result<Option<RefundIntent>, LedgerError> {
    let (pk, _) = DynamoLedger::attempt_key(attempt);
    db.get(pk, &refund_sk(&attempt.merchant_uid, key))
        .await?
        .map(|item| refund_from_item(&item))
        .transpose()
}

pub(super) async fn begin_refund(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    intent: &RefundIntent,
) -> Result<RefundIntent, LedgerError> {
    let (pk, attempt_sk) = DynamoLedger::attempt_key(attempt);
    let sk = refund_sk(&attempt.merchant_uid, &intent.key);
    let put = db.put_new(refund_to_item(&pk, &sk, intent))?;
    let written = db
        .transact(
            vec![
                TransactWriteItem::builder().put(put).build(),
                // The attempt must exist (a refund is kept beside it).
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&db.table)
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
        Err(LedgerError::Conflict(why)) => match db.get(pk, &sk).await? {
            Some(item) => refund_from_item(&item),
            None => Err(LedgerError::Conflict(why)),
        },
        Err(e) => Err(e),
    }
}

pub(super) async fn finish_refund(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    intent: &RefundIntent,
    audit: Option<&AuditEntry>,
) -> Result<(), LedgerError> {
    let (pk, _) = DynamoLedger::attempt_key(attempt);
    let finish = Update::builder()
        .table_name(&db.table)
        .key(PK, s(pk.clone()))
        .key(SK, s(refund_sk(&attempt.merchant_uid, &intent.key)))
        .update_expression(
            "SET #state = :state, updated_at = :now, refunded_total = :total REMOVE #dpk, #dsk",
        )
        .expression_attribute_names("#dpk", DUE_PK)
        .expression_attribute_names("#dsk", DUE_SK)
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
            .put(db.put(audit_to_item(a)))
            .build()
    });
    // The attempt's refunded total (the gateway's, done or refused) only
    // ever rises; when a webhook recorded it first, the refund is
    // finished without it.
    if let Some(total) = intent.refunded_total {
        let raise = raise_refunded(db, attempt, total, intent.cause, intent.updated_at)?;
        let mut items = vec![
            TransactWriteItem::builder().update(finish.clone()).build(),
            TransactWriteItem::builder().update(raise).build(),
        ];
        items.extend(audit_put.clone());
        match db.transact(items, "TransactWriteItems finish refund").await {
            Err(LedgerError::Conflict(_)) => {}
            other => return other,
        }
    }
    let mut items = vec![TransactWriteItem::builder().update(finish).build()];
    items.extend(audit_put);
    db.transact(items, "TransactWriteItems finish refund").await
}

/// Puts a requested refund in the review partition of the due index, with
/// its reason.
pub(super) async fn flag_refund(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    key: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let (pk, _) = DynamoLedger::attempt_key(attempt);
    db.client
        .update_item()
        .table_name(&db.table)
        .key(PK, s(pk))
        .key(SK, s(refund_sk(&attempt.merchant_uid, key)))
        .update_expression(
            "SET #dpk = :review, #dsk = :at, review_reason = :reason, updated_at = :now",
        )
        .condition_expression("#state IN (:requested, :refused)")
        .expression_attribute_names("#state", "state")
        .expression_attribute_names("#dpk", DUE_PK)
        .expression_attribute_names("#dsk", DUE_SK)
        .expression_attribute_values(":review", s(REVIEW_PK))
        .expression_attribute_values(":at", ts(now))
        .expression_attribute_values(":reason", s(reason))
        .expression_attribute_values(":now", ts(now))
        .expression_attribute_values(":requested", s(RefundState::Requested.as_str()))
        .expression_attribute_values(":refused", s(RefundState::Refused.as_str()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sdk_error(e, "UpdateItem flag refund"))
}

pub(super) async fn dismiss_refund(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    key: &str,
    audit: &AuditEntry,
) -> Result<(), LedgerError> {
    let (pk, _) = DynamoLedger::attempt_key(attempt);
    let dismiss = Update::builder()
        .table_name(&db.table)
        .key(PK, s(pk))
        .key(SK, s(refund_sk(&attempt.merchant_uid, key)))
        .update_expression("SET updated_at = :now REMOVE #dpk, #dsk")
        .condition_expression("#state = :refused AND #dpk = :review")
        .expression_attribute_names("#state", "state")
        .expression_attribute_names("#dpk", DUE_PK)
        .expression_attribute_names("#dsk", DUE_SK)
        .expression_attribute_values(":refused", s(RefundState::Refused.as_str()))
        .expression_attribute_values(":review", s(REVIEW_PK))
        .expression_attribute_values(":now", ts(audit.at))
        .build()
        .map_err(build_error)?;
    db.transact(
        vec![
            TransactWriteItem::builder().update(dismiss).build(),
            TransactWriteItem::builder()
                .put(db.put(audit_to_item(audit)))
                .build(),
        ],
        "TransactWriteItems dismiss refund",
    )
    .await
}
