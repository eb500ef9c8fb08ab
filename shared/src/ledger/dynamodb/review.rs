//! The review queue on DynamoDB: an attempt handed to a person, their decision, and
//! the queue's pages.

use super::*;

pub(super) async fn flag_review(
    db: &DynamoLedger,
    flag: &ReviewFlag<'_>,
) -> Result<(), LedgerError> {
    let ReviewFlag {
        attempt,
        token,
        reason,
        next,
        now,
    } = *flag;
    let (pk, sk) = DynamoLedger::attempt_key(attempt);
    let mut update = Update::builder()
        .table_name(&db.table)
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
    db.transact(
        vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder()
                .put(db.versioned_put(next).await?)
                .build(),
        ],
        "TransactWriteItems flag review",
    )
    .await
}

pub(super) async fn resolve(
    db: &DynamoLedger,
    decision: &ReviewDecision<'_>,
) -> Result<(), LedgerError> {
    let ReviewDecision {
        attempt,
        result,
        resolution,
        next,
        audit,
    } = *decision;
    let update = db.result_update(
        attempt,
        result,
        "#state = :review".into(),
        vec![(":review", s(AttemptState::NeedsReview.as_str()))],
        resolution.at,
        Some(resolution),
    )?;
    db.transact(
        vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder()
                .put(db.versioned_put(next).await?)
                .build(),
            TransactWriteItem::builder()
                .put(db.put(audit_to_item(audit)))
                .build(),
        ],
        "TransactWriteItems resolve",
    )
    .await
}

pub(super) async fn count_review(db: &DynamoLedger) -> Result<u64, LedgerError> {
    let mut count = 0u64;
    let mut start = None;
    loop {
        let out = db
            .client
            .query()
            .table_name(&db.table)
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

pub(super) async fn review_page(
    db: &DynamoLedger,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<ReviewPage, LedgerError> {
    let start = match cursor {
        Some(c) => match DynamoLedger::decode_cursor(c)? {
            (_, Some(key)) => Some(key),
            (_, None) => None,
        },
        None => None,
    };
    let out = db
        .client
        .query()
        .table_name(&db.table)
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
        if let Some(refund) = refund_key_from(&pk, &sk) {
            page.refunds.push(refund);
            continue;
        }
        page.attempts.push(
            attempt_key_from(&pk, &sk)
                .ok_or_else(|| LedgerError::Corrupt(format!("review entry {pk:?}/{sk:?}")))?,
        );
    }
    page.next = out
        .last_evaluated_key
        .filter(|k| !k.is_empty())
        .and_then(|k| DynamoLedger::encode_cursor(0, &k));
    Ok(page)
}

/// `SUB#{id}` / `REFUND#{merchant_uid}#{key}` (a merchant uid has no `#`).
fn refund_key_from(pk: &str, sk: &str) -> Option<crate::ledger::RefundKey> {
    let id = pk.strip_prefix("SUB#").and_then(SubscriptionId::parse)?;
    let (merchant_uid, key) = sk.strip_prefix("REFUND#")?.split_once('#')?;
    Some((id, merchant_uid.to_owned(), key.to_owned()))
}
