//! Refunds in memory: the refunds recorded on a charge and the intents that make a
//! refund safe to repeat.

use super::*;

pub(super) async fn record_refund(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    refunded: i64,
    now: DateTime<Utc>,
    audit: Option<&AuditEntry>,
) -> Result<bool, LedgerError> {
    let mut st = db.lock();
    st.count(if audit.is_some() {
        "TransactWriteItems"
    } else {
        "UpdateItem"
    });
    let changed = match st.attempt_mut(attempt) {
        Some(a) if a.refunded < refunded => {
            a.refunded = refunded;
            a.refund_cause = Some(crate::billing::RefundCause::PgReported);
            a.updated_at = secs(now);
            true
        }
        _ => false,
    };
    if changed {
        st.requeue_receipt(attempt, now);
        st.add_audit(audit);
    }
    Ok(changed)
}

pub(super) async fn get_refund(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    key: &str,
) -> Result<Option<RefundIntent>, LedgerError> {
    let mut st = db.lock();
    st.count("GetItem");
    Ok(st
        .refunds
        .get(&(attempt.merchant_uid.clone(), key.to_owned()))
        .cloned())
}

pub(super) async fn begin_refund(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    intent: &RefundIntent,
) -> Result<RefundIntent, LedgerError> {
    let mut st = db.lock();
    st.count("PutItem");
    if !st.attempts.contains_key(&key_of(attempt)) {
        return Err(conflict("begin refund"));
    }
    let key = (attempt.merchant_uid.clone(), intent.key.clone());
    if let Some(existing) = st.refunds.get(&key) {
        return Ok(existing.clone());
    }
    let mut stored = intent.clone();
    stored.created_at = secs(stored.created_at);
    stored.updated_at = secs(stored.updated_at);
    st.refunds.insert(key, stored.clone());
    Ok(stored)
}

pub(super) async fn finish_refund(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    intent: &RefundIntent,
    audit: Option<&AuditEntry>,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let key = (attempt.merchant_uid.clone(), intent.key.clone());
    let requested = st
        .refunds
        .get(&key)
        .is_some_and(|r| r.state == RefundState::Requested);
    if !requested
        || intent.state == RefundState::Requested
        || !st.attempts.contains_key(&key_of(attempt))
    {
        return Err(conflict("finish refund"));
    }
    let now = secs(intent.updated_at);
    if let (Some(total), Some(a)) = (intent.refunded_total, st.attempt_mut(attempt))
        && a.refunded < total
    {
        a.refunded = total;
        a.refund_cause = Some(intent.cause);
        a.updated_at = now;
        st.requeue_receipt(attempt, now);
    }
    if let Some(r) = st.refunds.get_mut(&key) {
        r.state = intent.state;
        r.refunded_total = intent.refunded_total;
        r.updated_at = now;
    }
    let reviewed = Due::Refund((attempt.subscription_id.clone(), key.0, key.1));
    st.review.retain(|(_, k)| *k != reviewed);
    st.add_audit(audit);
    Ok(())
}

pub(super) async fn flag_refund(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    key: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("UpdateItem");
    let at = secs(now);
    match st
        .refunds
        .get_mut(&(attempt.merchant_uid.clone(), key.to_owned()))
    {
        Some(r) if matches!(r.state, RefundState::Requested | RefundState::Refused) => {
            r.review_reason = Some(reason.to_owned());
            r.updated_at = at;
        }
        _ => return Err(conflict("flag refund")),
    }
    let entry = Due::Refund((
        attempt.subscription_id.clone(),
        attempt.merchant_uid.clone(),
        key.to_owned(),
    ));
    st.review.retain(|(_, k)| *k != entry);
    st.review.insert((at.timestamp(), entry));
    Ok(())
}

pub(super) async fn dismiss_refund(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    key: &str,
    audit: &AuditEntry,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let entry = Due::Refund((
        attempt.subscription_id.clone(),
        attempt.merchant_uid.clone(),
        key.to_owned(),
    ));
    let queued = st.review.iter().any(|(_, k)| *k == entry);
    let refused = st
        .refunds
        .get(&(attempt.merchant_uid.clone(), key.to_owned()))
        .is_some_and(|r| r.state == RefundState::Refused);
    if !queued || !refused {
        return Err(conflict("dismiss refund"));
    }
    st.review.retain(|(_, k)| *k != entry);
    if let Some(r) = st
        .refunds
        .get_mut(&(attempt.merchant_uid.clone(), key.to_owned()))
    {
        r.updated_at = secs(audit.at);
    }
    st.add_audit(Some(audit));
    Ok(())
}
