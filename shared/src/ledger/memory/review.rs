//! The review queue in memory: an attempt handed to a person, their decision, and
//! the queue's pages.

use super::*;

pub(super) async fn flag_review(
    db: &InMemoryLedger,
    flag: &ReviewFlag<'_>,
) -> Result<(), LedgerError> {
    let ReviewFlag {
        attempt,
        token,
        reason,
        next,
        now,
    } = *flag;
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let allowed = st.attempts.get(&key_of(attempt)).is_some_and(|a| {
        a.state.after(AttemptEvent::Flag).is_ok()
            && (a.state != AttemptState::Claimed
                || token.is_some_and(|t| a.claim_token.as_deref() == Some(t)))
    });
    if !allowed || !st.version_matches(next) {
        return Err(conflict("flag review"));
    }
    st.put_subscription(next);
    if let Some(a) = st.attempts.get(&key_of(attempt)).cloned() {
        let mut flagged = a;
        flagged.state = AttemptState::NeedsReview;
        flagged.fail_reason = Some(reason.to_owned());
        flagged.claim_token = None;
        flagged.lease_until = None;
        flagged.updated_at = secs(now);
        let key = key_of(&flagged);
        st.put_attempt(flagged, None);
        st.review.insert((secs(now).timestamp(), Due::Attempt(key)));
    }
    Ok(())
}

pub(super) async fn resolve(
    db: &InMemoryLedger,
    decision: &ReviewDecision<'_>,
) -> Result<(), LedgerError> {
    let ReviewDecision {
        attempt,
        result,
        resolution,
        next,
        audit,
    } = *decision;
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let allowed = st
        .attempts
        .get(&key_of(attempt))
        .is_some_and(|a| a.state.after(AttemptEvent::Resolve(result.state)) == Ok(result.state));
    if !allowed || !st.version_matches(next) {
        return Err(conflict("resolve"));
    }
    st.put_subscription(next);
    if let Some(a) = st.attempts.get(&key_of(attempt)).cloned() {
        let mut resolved = a;
        resolved.state = result.state;
        if let Some(amount) = result.amount {
            resolved.amount = amount;
        }
        resolved.imp_uid.clone_from(&result.imp_uid);
        resolved.paid_at = opt_secs(result.paid_at);
        resolved.fail_reason.clone_from(&result.fail_reason);
        resolved.decline = result.decline;
        resolved.receipt_url.clone_from(&result.receipt_url);
        if let Some(tax) = result.tax {
            resolved.tax_free = tax.tax_free;
            resolved.vat = Some(tax.vat);
        }
        resolved.retry_at = result.retry_at.map(secs);
        resolved.resolution = Some(resolution.clone());
        resolved.updated_at = secs(resolution.at);
        let resolved = stored_attempt(&resolved);
        let key = key_of(&resolved);
        st.put_attempt(resolved, None);
        st.unreview(&key);
        st.put_new_receipt(&key, result.cash_receipt.as_ref());
    }
    st.add_audit(Some(audit));
    Ok(())
}

pub(super) async fn count_review(db: &InMemoryLedger) -> Result<u64, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    Ok(st.review.len() as u64)
}

pub(super) async fn review_page(
    db: &InMemoryLedger,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<ReviewPage, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    let after = match decode_cursor(cursor)? {
        None => None,
        Some((t, due @ (Due::Attempt(_) | Due::Refund(_)))) => Some((t, due)),
        Some(_) => return Err(not_a_cursor(cursor)),
    };
    let limit = limit.clamp(1, 1000);
    let range = match &after {
        Some(k) => st.review.range((
            std::ops::Bound::Excluded(k.clone()),
            std::ops::Bound::Unbounded,
        )),
        None => st.review.range(..),
    };
    let page: Vec<(i64, Due)> = range.take(limit + 1).cloned().collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let mut out = ReviewPage {
        next: if more {
            page.last()
                .map(|(t, k)| Cursor(format!("{t}|{}", k.encode())))
        } else {
            None
        },
        ..ReviewPage::default()
    };
    for (_, entry) in page {
        match entry {
            Due::Attempt(k) => out.attempts.push(k.clone()),
            Due::Refund(k) => out.refunds.push(k.clone()),
            Due::Subscription(_) | Due::Registration(_) => {}
        }
    }
    Ok(out)
}
