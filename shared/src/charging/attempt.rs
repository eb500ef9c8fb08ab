//! One due subscription: claim (or take over) its current attempt, settle
//! what an earlier run left open, send the charge, record what came of it.

use tracing::{info, warn};

use super::pace::Pace;
use super::settle::{Applied, Settled, apply_fact, flag, lookup_of, settle_from_gateway};
use super::{BillingRun, Outcome, RunError, SkipReason};
use crate::billing::{
    AttemptState, ChargeAttempt, Event, Fact, PaymentRecord, Subscription, SubscriptionId, refusal,
};
use crate::engine::Engine;
use crate::gateway::{
    Ambiguity, ChargeOutcome, ChargeRequest, GatewayError, PaymentGateway, RejectionKind,
};
use crate::ledger::{AttemptKey, Guard, Ledger, LedgerError, LockChange, Sent, SubscriptionChange};

fn skipped(reason: SkipReason) -> Result<Outcome, RunError> {
    Ok(Outcome::Skipped { reason })
}

/// Charges one subscription if it is due at the run's billing time.
#[tracing::instrument(skip_all, fields(subscription_id = %id))]
pub(crate) async fn charge_one<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &SubscriptionId,
    run: &BillingRun,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    // Wait out a back-off before claiming, so a claim's time is its send's.
    pace.wait().await;
    let Some(sub) = engine.ledger.get_subscription(id).await? else {
        return skipped(SkipReason::NotFound);
    };
    if !sub.is_due(run.billing_time) {
        return skipped(SkipReason::NotDue);
    }
    let period = sub.current_period();
    let token = engine.claim_token(&run.run_id);
    // A new period of a subscription set to end: nothing to claim.
    let ending = sub.cancel_at_period_end && sub.attempt == 1;
    if !ending {
        // The common case first: a fresh attempt, claimed with one
        // conditional write (which also checks that the subscription is
        // still the version read: a change made meanwhile wins).
        let now = engine.now();
        let fresh = ChargeAttempt {
            subscription_id: sub.id.clone(),
            merchant_uid: engine
                .settings
                .uid_key
                .charge_uid(&sub.id, &period, sub.attempt),
            customer_uid: sub.customer_uid.clone(),
            period: period.clone(),
            attempt: sub.attempt,
            amount: sub.plan.amount,
            state: AttemptState::Claimed,
            claim_token: Some(token.clone()),
            lease_until: Some(now + engine.settings.lease()),
            sent_at: Some(now),
            imp_uid: None,
            paid_at: None,
            fail_reason: None,
            refunded: 0,
            resolution: None,
            retry_at: None,
            created_at: now,
            updated_at: now,
        };
        match engine.ledger.claim_new(&fresh, sub.version).await {
            Ok(()) => return send(engine, &sub, &fresh, &token, pace).await,
            Err(LedgerError::Conflict(_)) => {} // it exists, or the subscription changed
            Err(e) => return Err(e.into()),
        }
    }
    match engine
        .ledger
        .get_attempt(&sub.id, &period, sub.attempt)
        .await?
    {
        None if ending => cancel_at_period_end(engine, &sub).await,
        None => skipped(SkipReason::Busy),
        Some(a) if a.state.is_open() => resume(engine, &sub, &a, &token, pace).await,
        Some(a) if a.state == AttemptState::NeedsReview => skipped(SkipReason::NeedsReview),
        Some(a) => {
            // Settled, but our copy of the subscription is older than the
            // settlement (a webhook or another run got there first).
            info!(merchant_uid = %a.merchant_uid, state = a.state.as_str(), "attempt already settled by someone else");
            skipped(SkipReason::Busy)
        }
    }
}

/// An open attempt from the due index (its lease ended, or a lost answer is
/// due for another look), whatever its subscription's status: an attempt is
/// never orphaned by a cancellation or a review.
#[tracing::instrument(skip_all, fields(subscription_id = %key.0))]
pub(crate) async fn attend<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    key: &AttemptKey,
    run: &BillingRun,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    pace.wait().await;
    let (id, period, n) = key;
    let Some(sub) = engine.ledger.get_subscription(id).await? else {
        return skipped(SkipReason::NotFound);
    };
    match engine.ledger.get_attempt(id, period, *n).await? {
        Some(open) if open.state.is_open() => {
            let token = engine.claim_token(&run.run_id);
            resume(engine, &sub, &open, &token, pace).await
        }
        _ => skipped(SkipReason::Busy),
    }
}

/// An attempt left open by a crashed run (expired lease) or a lost answer:
/// take it over, settle it from the gateway's records, and send it again
/// (same `merchant_uid`) only when the gateway has had time to show it and
/// the subscription is still to be charged for it; otherwise it is closed.
async fn resume<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    open: &ChargeAttempt,
    token: &str,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    let now = engine.now();
    let taken = match engine
        .ledger
        .take_over(
            &sub.id,
            &open.period,
            open.attempt,
            token,
            now + engine.settings.lease(),
            now,
            sub.version,
        )
        .await
    {
        Ok(a) => a,
        Err(LedgerError::Conflict(_)) => return skipped(SkipReason::Busy),
        Err(e) => return Err(e.into()),
    };
    match settle_from_gateway(engine, sub, &taken, Guard::Claim(token)).await? {
        Settled::Recorded(fact) => Ok(Outcome::Reconciled { fact }),
        Settled::AlreadySettled | Settled::ClaimLost => skipped(SkipReason::Busy),
        Settled::Review(reason) => Ok(Outcome::NeedsReview { reason }),
        Settled::Unclear(detail) => {
            release(engine, &taken, token, &detail, Sent::Maybe).await?;
            skipped(SkipReason::Unsettled)
        }
        Settled::Unauthorized(e) => {
            release(engine, &taken, token, "lookup refused (401)", Sent::Maybe).await?;
            Err(RunError::Unauthorized(e))
        }
        Settled::NothingThere if !taken.quiet_since_sent(now, engine.settings.quiet()) => {
            // The gateway may still be processing the last request: a re-send
            // now would race it. Wait until it has had time to show.
            let detail = "sent recently; the gateway may still be processing it";
            release(engine, &taken, token, detail, Sent::Maybe).await?;
            skipped(SkipReason::Waiting)
        }
        Settled::NothingThere if !(sub.status.is_chargeable() && sub.is_current(&taken)) => {
            // Never charged, and no longer to be (cancelled, or waiting for a
            // person): closed without touching the subscription.
            abandon(engine, sub, &taken, token).await
        }
        Settled::NothingThere => {
            info!(merchant_uid = %taken.merchant_uid, "open attempt never reached the gateway; sending it again with the same merchant_uid");
            // With the subscription's key of the moment: a card replaced
            // since the last send is the one to charge (the same
            // merchant_uid can be paid only once, whatever the key).
            let resent = ChargeAttempt {
                customer_uid: sub.customer_uid.clone(),
                ..taken
            };
            match engine
                .ledger
                .mark_sending(&resent, token, engine.now(), sub.version)
                .await
            {
                Ok(()) => {}
                Err(LedgerError::Conflict(_)) => return skipped(SkipReason::Busy),
                Err(e) => return Err(e.into()),
            }
            send(engine, sub, &resent, token, pace).await
        }
    }
}

/// Closes an attempt that never reached the gateway and will not be sent
/// again (its subscription ended or waits for a person).
async fn abandon<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
) -> Result<Outcome, RunError> {
    let reason = format!(
        "never reached the gateway; not sent again: the subscription is {}",
        sub.status.as_str()
    );
    let result = Fact::Rejected {
        reason: reason.clone(),
        key_gone: false,
    }
    .result();
    let now = engine.now();
    match engine
        .ledger
        .settle(
            attempt,
            &result,
            Guard::Claim(token),
            &sub.next_version(now),
            now,
        )
        .await
    {
        Ok(()) => Ok(Outcome::Rejected {
            reason,
            key_gone: false,
        }),
        Err(LedgerError::Conflict(_)) => skipped(SkipReason::Busy),
        Err(e) => Err(e.into()),
    }
}

/// Sends the charge for an attempt we hold, then records what came of it.
async fn send<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    // Never act under a claim that could expire before the answer is in.
    if !attempt.lease_covers(engine.now(), engine.settings.lease_needed_per_call()) {
        warn!(merchant_uid = %attempt.merchant_uid, "claim too close to its lease's end to send; released");
        release(
            engine,
            attempt,
            token,
            "lease too short to send",
            Sent::Maybe,
        )
        .await?;
        return skipped(SkipReason::Busy);
    }
    let request = ChargeRequest {
        customer_uid: attempt.customer_uid.clone(),
        merchant_uid: attempt.merchant_uid.clone(),
        amount: attempt.amount,
        name: sub.plan.name.clone(),
        buyer: sub.buyer.clone(),
        custom_data: Some(
            serde_json::json!({"subscription_id": sub.id.as_str(), "period": attempt.period.as_str(), "attempt": attempt.attempt})
                .to_string(),
        ),
        notice_url: engine.settings.notice_url.clone(),
    };
    match engine.gateway.charge(&request).await {
        ChargeOutcome::Paid(record) => {
            pace.succeeded();
            paid(engine, sub, attempt, token, &record).await
        }
        ChargeOutcome::Declined(record) => {
            pace.succeeded();
            declined(engine, sub, attempt, token, &record).await
        }
        ChargeOutcome::Rejected(r) if r.kind == RejectionKind::Unauthorized => {
            let detail = format!("not sent: {}", r.message);
            release(engine, attempt, token, &detail, Sent::Never).await?;
            Err(RunError::Unauthorized(GatewayError::Rejected(r)))
        }
        ChargeOutcome::Rejected(r) if r.kind == RejectionKind::NotSent => {
            // Nothing reached the gateway (connection refused, throttled):
            // release the claim, back off, and go on with the others.
            let reason = format!("not sent: {}", r.message);
            release(engine, attempt, token, &reason, Sent::Never).await?;
            pace.failed();
            Ok(Outcome::Deferred { reason })
        }
        ChargeOutcome::Rejected(r) => {
            pace.succeeded();
            refused(engine, sub, attempt, token, &r.message).await
        }
        ChargeOutcome::Ambiguous(a) => lost_answer(engine, sub, attempt, token, pace, &a).await,
    }
}

/// A paid answer counts once the record is verified as this charge.
async fn paid<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
    answer: &PaymentRecord,
) -> Result<Outcome, RunError> {
    match Fact::from_record(answer, attempt, &attempt.customer_uid, engine.now()) {
        Ok(Some(fact)) => record(engine, sub, attempt, fact, Guard::Claim(token)).await,
        other => {
            let reason = match other {
                Err(mismatch) => mismatch.to_string(),
                _ => format!("charge answered with status {}", answer.status.as_str()),
            };
            flag(engine, attempt, Some(token), &reason).await?;
            Ok(Outcome::NeedsReview { reason })
        }
    }
}

/// The answer was lost (timeout, 5xx, connection, unreadable): look the
/// `merchant_uid` up at once; if that does not settle it, release it as
/// `unknown` for a later run, never a new `merchant_uid`.
async fn lost_answer<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
    pace: &Pace,
    answer: &Ambiguity,
) -> Result<Outcome, RunError> {
    warn!(merchant_uid = %attempt.merchant_uid, detail = %answer, "charge outcome unknown; looking it up");
    let detail = answer.to_string();
    match settle_from_gateway(engine, sub, attempt, Guard::Claim(token)).await? {
        Settled::Recorded(fact) => Ok(Outcome::Reconciled { fact }),
        Settled::AlreadySettled | Settled::ClaimLost => skipped(SkipReason::Busy),
        Settled::Review(reason) => Ok(Outcome::NeedsReview { reason }),
        Settled::Unauthorized(e) => {
            release(engine, attempt, token, &detail, Sent::Maybe).await?;
            Err(RunError::Unauthorized(e))
        }
        Settled::NothingThere | Settled::Unclear(_) => {
            release(engine, attempt, token, &detail, Sent::Maybe).await?;
            pace.failed();
            Ok(Outcome::Ambiguous { detail })
        }
    }
}

/// A decline is final only when the gateway's record of the `merchant_uid`
/// agrees: if the same request reached it twice (a retried connection) and
/// the other copy was paid, the lookup finds the paid one, and that is what
/// is recorded. Money is never settled away on one answer.
async fn declined<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
    answer: &PaymentRecord,
) -> Result<Outcome, RunError> {
    let claim = Guard::Claim(token);
    match settle_from_gateway(engine, sub, attempt, claim).await? {
        Settled::Recorded(fact @ Fact::Declined { .. }) => Ok(outcome_of(&fact, attempt)),
        Settled::Recorded(fact) => {
            warn!(merchant_uid = %attempt.merchant_uid, ?fact, "answered declined, but the gateway's record says otherwise");
            Ok(Outcome::Reconciled { fact })
        }
        Settled::AlreadySettled | Settled::ClaimLost => skipped(SkipReason::Busy),
        Settled::Review(reason) => Ok(Outcome::NeedsReview { reason }),
        Settled::Unauthorized(e) => {
            release(
                engine,
                attempt,
                token,
                "declined; the lookup was refused (401)",
                Sent::Maybe,
            )
            .await?;
            Err(RunError::Unauthorized(e))
        }
        Settled::NothingThere | Settled::Unclear(_) => {
            let detail = format!(
                "answered declined ({}), not yet confirmed by a lookup",
                answer.fail_reason.as_deref().unwrap_or("no reason")
            );
            release(engine, attempt, token, &detail, Sent::Maybe).await?;
            Ok(Outcome::Ambiguous { detail })
        }
    }
}

/// A refusal (`code != 0`): is it "already paid" (a record exists), "the key
/// is gone" (no record, no key), or another refusal? Never a clean rejection
/// while either lookup is unclear.
async fn refused<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
    message: &str,
) -> Result<Outcome, RunError> {
    let claim = Guard::Claim(token);
    let detail = match settle_from_gateway(engine, sub, attempt, claim).await? {
        Settled::Recorded(fact) => return Ok(Outcome::Reconciled { fact }),
        Settled::AlreadySettled | Settled::ClaimLost => return skipped(SkipReason::Busy),
        Settled::Review(reason) => return Ok(Outcome::NeedsReview { reason }),
        Settled::Unauthorized(e) => {
            release(
                engine,
                attempt,
                token,
                "refused, and the lookup was refused (401)",
                Sent::Maybe,
            )
            .await?;
            return Err(RunError::Unauthorized(e));
        }
        Settled::Unclear(detail) => format!("refused ({message}); {detail}"),
        Settled::NothingThere => {
            let (key, unauthorized) = lookup_of(
                engine
                    .gateway
                    .billing_key(&attempt.customer_uid)
                    .await
                    .map(|_| ()),
            );
            if let Some(e) = unauthorized {
                release(
                    engine,
                    attempt,
                    token,
                    "refused, and the key lookup was refused (401)",
                    Sent::Maybe,
                )
                .await?;
                return Err(RunError::Unauthorized(e));
            }
            match refusal(message, &key) {
                Some(fact) => return record(engine, sub, attempt, fact, claim).await,
                None => format!("refused ({message}) and the billing-key lookup failed"),
            }
        }
    };
    warn!(merchant_uid = %attempt.merchant_uid, %detail, "refusal could not be classified; left open");
    release(engine, attempt, token, &detail, Sent::Maybe).await?;
    Ok(Outcome::Ambiguous { detail })
}

/// Writes the fact under our claim and reports it.
async fn record<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    fact: Fact,
    guard: Guard<'_>,
) -> Result<Outcome, RunError> {
    let merchant_uid = attempt.merchant_uid.as_str();
    match apply_fact(engine, attempt, &fact, guard, Some(sub.clone())).await? {
        Applied::Recorded => {}
        Applied::AlreadySettled => {
            info!(
                merchant_uid,
                "already settled by someone else (webhook or another run)"
            );
        }
        Applied::ClaimLost => {
            warn!(
                merchant_uid,
                ?fact,
                "claim taken over meanwhile; its holder records the outcome"
            );
            return skipped(SkipReason::Busy);
        }
        Applied::Flagged(reason) => return Ok(Outcome::NeedsReview { reason }),
    }
    Ok(outcome_of(&fact, attempt))
}

/// The outcome of a fact recorded by the run that sent the charge.
fn outcome_of(fact: &Fact, attempt: &ChargeAttempt) -> Outcome {
    let merchant_uid = attempt.merchant_uid.as_str();
    match fact.clone() {
        Fact::Paid { imp_uid, .. } => {
            info!(merchant_uid, %imp_uid, amount = attempt.amount, "charged");
            Outcome::Charged { imp_uid }
        }
        Fact::Declined { reason, .. } => {
            info!(merchant_uid, %reason, "declined");
            Outcome::Declined { reason }
        }
        Fact::Rejected { reason, key_gone } => {
            warn!(merchant_uid, %reason, key_gone, "rejected by the gateway");
            Outcome::Rejected { reason, key_gone }
        }
    }
}

/// Releases our claim as `unknown` with `detail`. Losing the claim meanwhile
/// is fine: someone else holds it now.
async fn release<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    token: &str,
    detail: &str,
    sent: Sent,
) -> Result<(), RunError> {
    let now = engine.now();
    // When to look again: once a request that may be in flight has had time
    // to show at the gateway; at once when nothing can be in flight.
    let due_at = match sent {
        Sent::Maybe => attempt.sent_at.unwrap_or(now) + engine.settings.quiet(),
        Sent::Never => now,
    };
    match engine
        .ledger
        .mark_unknown(attempt, token, detail, sent, now, due_at.max(now))
        .await
    {
        Ok(()) | Err(LedgerError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn cancel_at_period_end<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Outcome, RunError> {
    let mut next = sub.next_version(engine.now());
    next.ended_at = Some(engine.now());
    next.status = match sub.status.apply(Event::Cancel) {
        Ok(s) => s,
        Err(_) => return skipped(SkipReason::NotDue),
    };
    // The subscription ends: the user's lock on its plan goes with it.
    let change = SubscriptionChange {
        next: &next,
        audit: None,
        lock: LockChange::Release(sub.lock_name()),
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => {
            info!("cancelled at period end");
            skipped(SkipReason::CancelledAtPeriodEnd)
        }
        Err(LedgerError::Conflict(_)) => skipped(SkipReason::Busy),
        Err(e) => Err(e.into()),
    }
}
