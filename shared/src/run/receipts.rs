//! The run's share of cash receipts (decision 74): after the charges, while
//! its time allows, each receipt in the queue is brought to what its charge
//! needs, one step at a time (issue, cancel, look up), each step under a
//! claim (the receipt's revision) so two runs never take the same step.
//! What the PG said is written on the revision claimed, with the charge's
//! refunded total as read: a refund recorded meanwhile makes the write
//! fail, and it is written again against the new total (so the refund's
//! requeue is never lost). A failure never touches the charge.

use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::billing::receipts::{self, Outcome, Step, Target};
use crate::billing::{AttemptState, CashReceipt, ChargeAttempt, ReceiptState};
use crate::engine::{Budget, Engine};
use crate::gateway::{CashReceiptRequest, GatewayError, PaymentGateway};
use crate::ledger::{AttemptKey, Cursor, Ledger, LedgerError, ReceiptQueue};

/// What one run did to cash receipts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReceiptReport {
    pub issued: u64,
    pub cancelled: u64,
    /// Tries the PG refused (retried later).
    pub failed: u64,
    /// Issuances whose outcome is not known yet (in progress at the PG, or
    /// a lost answer): looked up later.
    pub in_progress: u64,
    /// Receipts that gave up in this run and wait for a person.
    pub to_review: u64,
    /// Steps not taken: the PG could not be asked, or the ledger failed.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Steps one receipt may take in one go (a cancel and a reissue, each
/// possibly after a look-up).
const STEPS: usize = 4;

/// Works the receipt queue due at `engine.now()` while `budget` leaves `reserve`.
pub async fn work<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    budget: &Budget,
    reserve: Duration,
) -> ReceiptReport {
    let mut report = ReceiptReport::default();
    let mut cursor: Option<Cursor> = None;
    loop {
        let now = engine.now();
        let page = match engine
            .ledger
            .receipt_page(ReceiptQueue::Due(now), 100, cursor.as_ref())
            .await
        {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, "the cash-receipt queue could not be read; the next run tries again");
                report.stopped = Some(e.to_string());
                return report;
            }
        };
        for key in &page.attempts {
            if !budget.allows(Duration::ZERO, reserve) {
                report.stopped = Some("deadline near: cash receipts left to the next run".into());
                return report;
            }
            if let Err(e) = work_one(engine, key, &mut report).await {
                warn!(subscription_id = %key.0, period = %key.1, error = %e, "cash receipt: step not taken; the next run tries again");
                report.errors += 1;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return report,
        }
    }
}

/// What the charge needs at the PG: a receipt for what is left after
/// refunds, with its tax-free part split as refunds split it.
pub fn target_of(attempt: &ChargeAttempt) -> Target {
    let tax = attempt.tax();
    let left = (attempt.amount - attempt.refunded).max(0);
    Target {
        amount: left,
        tax_free: tax.tax_free - tax.refunded_part(attempt.refunded).tax_free,
    }
}

/// Brings one attempt's receipt to its target, a few steps at most.
pub async fn work_one<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    key: &AttemptKey,
    report: &mut ReceiptReport,
) -> Result<(), LedgerError> {
    for _ in 0..STEPS {
        let Some(attempt) = engine.ledger.get_attempt(&key.0, &key.1, key.2).await? else {
            return Ok(());
        };
        let Some(receipt) = attempt.cash_receipt.clone() else {
            return Ok(());
        };
        let now = engine.now();
        let target = target_of(&attempt);
        let step = receipts::next_step(&receipt, target);
        let open = attempt.state == AttemptState::Paid;
        let to_do = open && step != Step::Done;
        // A receipt that needs nothing more, or is not ours to work now
        // (claimed by another, waiting for a person): only tidy the queue.
        // A settled receipt is queued again by a refund; one waiting for a
        // person too, and a refund is a new reason to try: its tries start over.
        let workable = receipt.claimable(now)
            || matches!(receipt.state, ReceiptState::Settled | ReceiptState::Review);
        // A claim held by another is its holder's, whatever this copy says.
        if receipt.state == ReceiptState::Working && !receipt.claimable(now) {
            return Ok(());
        }
        if !to_do || !workable {
            if !to_do && receipt.state != ReceiptState::Settled {
                let mut settled = receipt.clone();
                settled.rev += 1;
                settled.state = ReceiptState::Settled;
                settled.next_at = None;
                settled.token = None;
                settled.lease_until = None;
                settled.updated_at = now;
                let _ = engine
                    .ledger
                    .save_receipt(&attempt, &settled, Some(attempt.refunded))
                    .await;
            } else if !to_do {
                // Out of the queue (a refund's requeue with nothing to do).
                let mut same = receipt.clone();
                same.rev += 1;
                let _ = engine
                    .ledger
                    .save_receipt(&attempt, &same, Some(attempt.refunded))
                    .await;
            }
            return Ok(());
        }
        let token = engine.claim_token("receipt");
        let mut claimed = receipt.claimed(&token, now);
        if receipt.state == ReceiptState::Review {
            claimed.tries = 0;
        }
        match engine.ledger.save_receipt(&attempt, &claimed, None).await {
            Ok(()) => {}
            // Another holder took it first.
            Err(LedgerError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        let answer = ask(engine, &attempt, &claimed, step, target).await;
        let more = record(engine, &attempt, &claimed, answer, report).await?;
        if !more {
            return Ok(());
        }
    }
    Ok(())
}

/// Takes `step` at the PG.
async fn ask<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    receipt: &CashReceipt,
    step: Step,
    target: Target,
) -> Result<Outcome, GatewayError> {
    let imp_uid = attempt.imp_uid.as_deref().unwrap_or_default();
    let uid = attempt.merchant_uid.as_str();
    match step {
        Step::Issue(target) => {
            let request = CashReceiptRequest {
                imp_uid: imp_uid.to_owned(),
                merchant_uid: uid.to_owned(),
                holder: receipt.holder.clone(),
                amount: target.amount,
                tax_free: target.tax_free,
                order_name: format!("{} {}", attempt.period, attempt.subscription_id),
            };
            engine.gateway.issue_cash_receipt(&request).await
        }
        Step::Cancel => engine.gateway.cancel_cash_receipt(imp_uid, uid).await,
        Step::LookUp => match engine.gateway.cash_receipt(imp_uid, uid).await {
            // V1's annotation has no tax-free part: the receipt issued for
            // the target has the target's.
            Ok(Outcome::Found(Some(mut live))) => {
                if live.tax_free == 0 && live.amount == target.amount {
                    live.tax_free = target.tax_free;
                }
                Ok(Outcome::Found(Some(live)))
            }
            other => other,
        },
        Step::Done => Ok(Outcome::Found(receipt.live.clone())),
    }
}

/// Writes what the PG said on the claimed revision; returns whether
/// another step is due at once.
async fn record<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    claimed: &CashReceipt,
    answer: Result<Outcome, GatewayError>,
    report: &mut ReceiptReport,
) -> Result<bool, LedgerError> {
    let mut seen = attempt.clone();
    for _ in 0..3 {
        let now = engine.now();
        let target = target_of(&seen);
        let next = match &answer {
            Ok(outcome) => receipts::after(claimed, outcome, target, now),
            // Nothing was done at the PG: the same step later.
            Err(e) => receipts::not_asked(claimed, &e.to_string(), now),
        };
        match engine
            .ledger
            .save_receipt(&seen, &next, Some(seen.refunded))
            .await
        {
            Ok(()) => {
                count(&seen, claimed, &next, &answer, report);
                return Ok(
                    next.state == ReceiptState::Due && next.next_at.is_some_and(|at| at <= now)
                );
            }
            Err(LedgerError::Conflict(_)) => {
                // A refund raised the total meanwhile (our claim still
                // holds: nothing else writes a claimed receipt): again,
                // against the new total.
                match engine
                    .ledger
                    .get_attempt(&seen.subscription_id, &seen.period, seen.attempt)
                    .await?
                {
                    Some(fresh)
                        if fresh.cash_receipt.as_ref().map(|r| r.rev) == Some(claimed.rev) =>
                    {
                        seen = fresh;
                    }
                    _ => {
                        return Err(LedgerError::Conflict(
                            "cash receipt changed under its claim".into(),
                        ));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(LedgerError::Transient(
        "cash receipt outcome not written after 3 tries".into(),
    ))
}

fn count(
    attempt: &ChargeAttempt,
    before: &CashReceipt,
    after: &CashReceipt,
    answer: &Result<Outcome, GatewayError>,
    report: &mut ReceiptReport,
) {
    let uid = attempt.merchant_uid.as_str();
    if after.issues > before.issues {
        report.issued += 1;
        info!(merchant_uid = uid, kind = after.holder.kind.as_str(), holder = %after.holder.identifier, amount = after.live.as_ref().map(|l| l.amount), "cash receipt issued");
    }
    if after.cancels > before.cancels {
        report.cancelled += 1;
        info!(merchant_uid = uid, "cash receipt cancelled");
    }
    if after.tries > before.tries {
        report.failed += 1;
        warn!(merchant_uid = uid, tries = after.tries, error = ?after.last_error, "cash receipt refused by the PG");
    }
    if after.unsure_since.is_some()
        && matches!(answer, Ok(Outcome::Unclear(_) | Outcome::Found(None)))
    {
        report.in_progress += 1;
    }
    if after.state == ReceiptState::Review && before.state != ReceiptState::Review {
        report.to_review += 1;
        warn!(
            merchant_uid = uid,
            "cash receipt gave up: waits for a person"
        );
    }
    if answer.is_err() {
        report.errors += 1;
    }
}
