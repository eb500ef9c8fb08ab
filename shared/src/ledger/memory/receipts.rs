//! Cash receipts in memory (decision 74): the receipt on its attempt, and
//! the sparse receipt queue (due, or waiting for a person) kept beside it
//! as the DynamoDB `receipts` index is.

use super::*;
use crate::billing::{CashReceipt, ReceiptState};
use crate::ledger::{ReceiptPage, ReceiptQueue};

/// A receipt as the table keeps it: instants in whole seconds.
pub(super) fn stored_receipt(r: &CashReceipt) -> CashReceipt {
    let mut r = r.clone();
    if let Some(live) = r.live.as_mut() {
        live.issued_at = secs(live.issued_at);
    }
    r.unsure_since = opt_secs(r.unsure_since);
    r.lease_until = opt_secs(r.lease_until);
    r.next_at = opt_secs(r.next_at);
    r.cancelled_at = opt_secs(r.cancelled_at);
    r.updated_at = secs(r.updated_at);
    r
}

impl State {
    /// Puts `key` in the receipt queue where `r` says (or takes it out).
    pub(super) fn queue_receipt(&mut self, key: &AttemptKey, r: &CashReceipt) {
        let place = match r.state {
            ReceiptState::Review => Some((true, r.updated_at.timestamp())),
            _ => r.queued_at().map(|at| (false, at.timestamp())),
        };
        self.place_receipt(key, place);
    }

    pub(super) fn place_receipt(&mut self, key: &AttemptKey, place: Option<(bool, i64)>) {
        if let Some((review, at)) = self.receipt_at.remove(key) {
            self.receipts.remove(&(review, at, key.clone()));
        }
        if let Some((review, at)) = place {
            self.receipts.insert((review, at, key.clone()));
            self.receipt_at.insert(key.clone(), (review, at));
        }
    }

    /// A refund changed what `attempt`'s receipt must cover: queued now.
    pub(super) fn requeue_receipt(&mut self, attempt: &ChargeAttempt, now: DateTime<Utc>) {
        if attempt.cash_receipt.is_some() {
            self.place_receipt(&key_of(attempt), Some((false, secs(now).timestamp())));
        }
    }

    /// Writes a paid result's new receipt on the stored attempt.
    pub(super) fn put_new_receipt(&mut self, key: &AttemptKey, r: Option<&CashReceipt>) {
        let Some(r) = r else { return };
        let r = stored_receipt(r);
        if let Some(a) = self.attempts.get_mut(key) {
            a.cash_receipt = Some(r.clone());
        }
        self.queue_receipt(key, &r);
    }
}

pub(super) async fn save_receipt(
    db: &InMemoryLedger,
    attempt: &ChargeAttempt,
    next: &CashReceipt,
    refunded: Option<i64>,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("UpdateItem");
    let key = key_of(attempt);
    let ok = st.attempts.get(&key).is_some_and(|a| {
        let rev_ok = match (&a.cash_receipt, next.rev) {
            (None, 0) => true,
            (Some(stored), rev) => rev > 0 && stored.rev == rev - 1,
            (None, _) => false,
        };
        rev_ok && refunded.is_none_or(|r| a.refunded == r)
    });
    if !ok {
        return Err(conflict("save receipt"));
    }
    st.put_new_receipt(&key, Some(next));
    Ok(())
}

pub(super) async fn receipt_page(
    db: &InMemoryLedger,
    queue: ReceiptQueue,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<ReceiptPage, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    let after = decode_cursor(cursor)?;
    let (review, upto) = match queue {
        ReceiptQueue::Due(now) => (false, secs(now).timestamp()),
        ReceiptQueue::Review => (true, i64::MAX),
    };
    let limit = limit.clamp(1, 1000);
    let mut page = ReceiptPage::default();
    let entries = st.receipts.iter().filter(|(r, at, key)| {
        *r == review
            && *at <= upto
            && after
                .as_ref()
                .is_none_or(|(t, k)| (*at, Due::Attempt(key.clone())) > (*t, k.clone()))
    });
    for (_, at, key) in entries {
        if page.attempts.len() == limit {
            let (t, k) = page
                .attempts
                .last()
                .map(|k| (st.receipt_at[k].1, Due::Attempt(k.clone())))
                .unwrap_or((*at, Due::Attempt(key.clone())));
            page.next = Some(Cursor(format!("{t}|{}", k.encode())));
            break;
        }
        page.attempts.push(key.clone());
    }
    Ok(page)
}
