//! Charge attempts in memory: the claim, the take-over of an expired lease, the
//! send, an outcome not known, and the settlement.

use super::*;

pub(super) async fn get_attempt(
    db: &InMemoryLedger,
    id: &SubscriptionId,
    period: &PeriodId,
    attempt: u32,
) -> Result<Option<ChargeAttempt>, LedgerError> {
    let mut st = db.lock();
    st.count("GetItem");
    Ok(st
        .attempts
        .get(&(id.clone(), period.clone(), attempt))
        .cloned())
}

pub(super) async fn list_attempts(
    db: &InMemoryLedger,
    id: &SubscriptionId,
) -> Result<Vec<ChargeAttempt>, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    Ok(st
        .attempts
        .values()
        .filter(|a| &a.subscription_id == id)
        .cloned()
        .collect())
}

pub(super) async fn claim_new(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    next: &Subscription,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    if st.attempts.contains_key(&key_of(attempt))
        || next.id != attempt.subscription_id
        || !st.version_matches(next)
    {
        return Err(conflict("claim"));
    }
    let stored = stored_attempt(attempt);
    let due = stored.lease_until;
    st.put_attempt(stored, due);
    st.put_subscription(next);
    Ok(())
}

pub(super) async fn take_over(
    db: &InMemoryLedger,
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
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let now = secs(now);
    let key = (id.clone(), period.clone(), attempt);
    let version_ok = st.version_is(id, sub_version);
    let Some(a) = st.attempts.get(&key).cloned() else {
        return Err(conflict("take over"));
    };
    let lease_expired = a.lease_until.is_some_and(|l| l < now);
    if !version_ok
        || a.state
            .after(AttemptEvent::TakeOver { lease_expired })
            .is_err()
    {
        return Err(conflict("take over"));
    }
    let mut taken = a;
    taken.state = AttemptState::Claimed;
    taken.claim_token = Some(token.to_owned());
    taken.lease_until = Some(secs(lease_until));
    taken.updated_at = now;
    let due = taken.lease_until;
    st.put_attempt(taken.clone(), due);
    Ok(taken)
}

pub(super) async fn mark_sending(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    token: &str,
    now: DateTime<Utc>,
    sub_version: u64,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let version_ok = st.version_is(&attempt.subscription_id, sub_version);
    match st.attempt_mut(attempt) {
        Some(a)
            if version_ok
                && a.state == AttemptState::Claimed
                && a.claim_token.as_deref() == Some(token) =>
        {
            a.sent_at = Some(secs(now));
            a.updated_at = secs(now);
            a.key_ref.clone_from(&attempt.key_ref);
            a.sends += 1;
            Ok(())
        }
        _ => Err(conflict("mark sending")),
    }
}

pub(super) async fn mark_unknown(
    db: &InMemoryLedger,
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
    let mut st = db.lock();
    st.count("UpdateItem");
    let Some(a) = st.attempts.get(&key_of(attempt)).cloned() else {
        return Err(conflict("mark unknown"));
    };
    if a.state != AttemptState::Claimed || a.claim_token.as_deref() != Some(token) {
        return Err(conflict("mark unknown"));
    }
    let mut released = a;
    if sent == Sent::Never {
        released.sent_at = None;
        released.sends = released.sends.saturating_sub(1);
    }
    released.state = AttemptState::Unknown;
    released.fail_reason = Some(detail.to_owned());
    released.claim_token = None;
    released.lease_until = None;
    released.updated_at = secs(now);
    st.put_attempt(released, Some(due_at));
    Ok(())
}

pub(super) async fn settle(
    db: &InMemoryLedger,
    settlement: &Settlement<'_>,
) -> Result<(), LedgerError> {
    let Settlement {
        attempt,
        result,
        guard,
        next,
        now,
    } = *settlement;
    let mut st = db.lock();
    st.count("TransactWriteItems");
    if !matches!(
        result.state,
        AttemptState::Paid | AttemptState::Failed | AttemptState::Rejected
    ) {
        return Err(LedgerError::Fatal(format!(
            "an attempt is settled as paid, failed or rejected, not {}",
            result.state.as_str()
        )));
    }
    let event = match guard {
        Guard::Claim(_) => AttemptEvent::SettleByHolder(result.state),
        Guard::PaidFact if result.state == AttemptState::Paid => AttemptEvent::PaidUnclaimed,
        Guard::PaidFact => {
            return Err(LedgerError::Fatal(format!(
                "only a paid fact may settle without the claim, not {}",
                result.state.as_str()
            )));
        }
    };
    let allowed = st.attempts.get(&key_of(attempt)).is_some_and(|a| {
        a.state.after(event) == Ok(result.state)
            && match guard {
                Guard::Claim(token) => a.claim_token.as_deref() == Some(token),
                Guard::PaidFact => true,
            }
    });
    if !allowed || !st.version_matches(next) {
        return Err(conflict("settle"));
    }
    st.put_subscription(next);
    // Dunning that ends in `cancelled` ends the subscription: its lock goes.
    if next.status == SubscriptionStatus::Cancelled {
        let key = (next.user_id.clone(), next.lock_name().to_owned());
        if st.locks.get(&key) == Some(&next.id) {
            st.locks.remove(&key);
        }
    }
    if let Some(a) = st.attempts.get(&key_of(attempt)).cloned() {
        let mut settled = a;
        settled.state = result.state;
        settled.imp_uid.clone_from(&result.imp_uid);
        settled.paid_at = opt_secs(result.paid_at);
        settled.fail_reason.clone_from(&result.fail_reason);
        settled.decline = result.decline;
        settled.receipt_url.clone_from(&result.receipt_url);
        if let Some(tax) = result.tax {
            settled.tax_free = tax.tax_free;
            settled.vat = Some(tax.vat);
        }
        settled.retry_at = result.retry_at.map(secs);
        settled.claim_token = None;
        settled.lease_until = None;
        settled.updated_at = secs(now);
        let key = key_of(&settled);
        st.put_attempt(settled, None);
        st.put_new_receipt(&key, result.cash_receipt.as_ref());
    }
    Ok(())
}
