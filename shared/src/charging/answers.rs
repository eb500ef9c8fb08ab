//! What the gateway answered a charge, and what the engine records of it:
//! paid only on a verified record, declined only when a lookup agrees, a
//! refusal or a lost answer left open until the gateway's records can be
//! read after the quiet period. Never a new `merchant_uid` on one answer.

use tracing::{info, warn};

use super::pace::Pace;
use super::settle::{Applied, Settled, apply_fact, flag, settle_from_gateway};
use super::{Outcome, RunError, SkipReason};
use crate::billing::{ChargeAttempt, Fact, PaymentRecord, Subscription};
use crate::engine::Engine;
use crate::gateway::{Ambiguity, ChargeOutcome, GatewayError, PaymentGateway, RejectionKind};
use crate::ledger::{Guard, Ledger, LedgerError, Sent, UnknownOutcome};

fn skipped(reason: SkipReason) -> Result<Outcome, RunError> {
    Ok(Outcome::Skipped { reason })
}

/// Acts on the gateway's answer to a charge we sent under `token`.
pub(super) async fn send_answer<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
    pace: &Pace,
    answer: ChargeOutcome,
) -> Result<Outcome, RunError> {
    match answer {
        ChargeOutcome::Paid(record) => {
            pace.succeeded();
            Box::pin(paid(engine, sub, attempt, token, &record)).await
        }
        ChargeOutcome::Declined(record) => {
            pace.succeeded();
            Box::pin(declined(engine, sub, attempt, token, &record)).await
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
            Box::pin(refused(engine, sub, attempt, token, &r.message)).await
        }
        ChargeOutcome::Ambiguous(a) => {
            Box::pin(lost_answer(engine, sub, attempt, token, pace, &a)).await
        }
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
    let refs = &engine.settings.uid_key;
    match Fact::from_record(answer, attempt, refs, engine.now()) {
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
    let settled = settle_from_gateway(engine, sub, attempt, Guard::Claim(token)).await?;
    match concluded(engine, attempt, token, settled, &detail).await? {
        Ok(outcome) => Ok(outcome),
        Err(Open::Waiting(settled)) => {
            release(engine, attempt, token, &settled, Sent::Maybe).await?;
            Ok(Outcome::Declined {
                reason: settled,
                class: None,
            })
        }
        Err(Open::NothingThere | Open::Unclear(_)) => {
            release(engine, attempt, token, &detail, Sent::Maybe).await?;
            pace.failed();
            Ok(Outcome::Ambiguous { detail })
        }
    }
}

/// What a lookup under our claim left open: nothing is concluded yet.
pub(super) enum Open {
    /// The gateway has no payment under the uid.
    NothingThere,
    /// The lookup failed.
    Unclear(String),
    /// Not paid, and settling it now would end access within the quiet
    /// period.
    Waiting(String),
}

/// The one mapping from a settlement under our claim to an outcome, for
/// the cases every caller shares: a record decided (reconciled), someone
/// else settled or holds the attempt (busy), a person decides (review), or
/// our credentials were refused (the claim released under `refused`, and
/// the run stops). What is still open is handed back to the caller, whose
/// answer decides what to do with it.
pub(super) async fn concluded<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    token: &str,
    settled: Settled,
    refused: &str,
) -> Result<Result<Outcome, Open>, RunError> {
    let outcome = match settled {
        Settled::Recorded(fact) => Outcome::Reconciled { fact },
        Settled::AlreadySettled | Settled::ClaimLost => Outcome::Skipped {
            reason: SkipReason::Busy,
        },
        Settled::Review(reason) => Outcome::NeedsReview { reason },
        Settled::Unauthorized(e) => {
            release(engine, attempt, token, refused, Sent::Maybe).await?;
            return Err(RunError::Unauthorized(e));
        }
        Settled::NothingThere => return Ok(Err(Open::NothingThere)),
        Settled::Unclear(detail) => return Ok(Err(Open::Unclear(detail))),
        Settled::Waiting(detail) => return Ok(Err(Open::Waiting(detail))),
    };
    Ok(Ok(outcome))
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
    let settled = settle_from_gateway(engine, sub, attempt, claim).await?;
    match &settled {
        Settled::Recorded(fact @ Fact::Declined { .. }) => return Ok(outcome_of(fact, attempt)),
        Settled::Recorded(fact) => {
            warn!(merchant_uid = %attempt.merchant_uid, ?fact, "answered declined, but the gateway's record says otherwise");
        }
        _ => {}
    }
    let refused = "declined; the lookup was refused (401)";
    match concluded(engine, attempt, token, settled, refused).await? {
        Ok(outcome) => Ok(outcome),
        // A decline that ends access (the last retry, a cancel that took
        // effect meanwhile) waits for the quiet period, so that no copy of
        // the request still processing at the gateway is left behind it.
        Err(Open::Waiting(detail)) => {
            release(engine, attempt, token, &detail, Sent::Maybe).await?;
            Ok(Outcome::Declined {
                reason: detail,
                class: None,
            })
        }
        Err(Open::NothingThere | Open::Unclear(_)) => {
            let detail = format!(
                "answered declined ({}), not yet confirmed by a lookup",
                answer.fail_reason.as_deref().unwrap_or("no reason")
            );
            release(engine, attempt, token, &detail, Sent::Maybe).await?;
            Ok(Outcome::Ambiguous { detail })
        }
    }
}

/// A refusal (`code != 0`, a typed V2 error): a record under the uid
/// decides (already paid → paid). Without one, nothing is concluded yet:
/// another copy of the request may still be processing, and the gateway's
/// lookups lag (defect D8). It is left open and settled on a later look,
/// after the quiet period (then the billing-key lookup tells a gone key
/// from a refusal to send again).
async fn refused<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
    message: &str,
) -> Result<Outcome, RunError> {
    let claim = Guard::Claim(token);
    let detail = format!("refused: {message}");
    let settled = settle_from_gateway(engine, sub, attempt, claim).await?;
    let refused = "refused, and the lookup was refused (401)";
    match concluded(engine, attempt, token, settled, refused).await? {
        Ok(outcome) => Ok(outcome),
        Err(Open::Unclear(_) | Open::NothingThere | Open::Waiting(_)) => {
            warn!(merchant_uid = %attempt.merchant_uid, %detail, "refused; left open until the gateway's records can tell");
            release(engine, attempt, token, &detail, Sent::Maybe).await?;
            Ok(Outcome::Refused {
                reason: message.to_owned(),
            })
        }
    }
}

/// The fact for an attempt the gateway never recorded after the quiet
/// period, given its last answer (`last`): a refusal, of a gone key or not.
pub(super) fn refused_at_last(last: &str, key_gone: bool) -> Fact {
    let reason = last.strip_prefix("refused: ").unwrap_or(last).to_owned();
    Fact::Rejected { reason, key_gone }
}

/// Writes the fact under our claim and reports it.
pub(super) async fn record<L: Ledger, G: PaymentGateway>(
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
        Applied::NotYet(detail) => {
            if let Guard::Claim(token) = guard {
                release(engine, attempt, token, &detail, Sent::Maybe).await?;
            }
            return Ok(Outcome::Declined {
                reason: detail,
                class: None,
            });
        }
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
        Fact::Declined { reason, class, .. } => {
            info!(merchant_uid, %reason, class = class.as_str(), "declined");
            Outcome::Declined {
                reason,
                class: Some(class),
            }
        }
        Fact::Rejected { reason, key_gone } => {
            warn!(merchant_uid, %reason, key_gone, "rejected by the gateway");
            Outcome::Rejected { reason, key_gone }
        }
    }
}

/// Releases our claim as `unknown` with `detail`. Losing the claim meanwhile
/// is fine: someone else holds it now.
pub(super) async fn release<L: Ledger, G>(
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
        .mark_unknown(&UnknownOutcome {
            attempt,
            token,
            detail,
            sent,
            now,
            due_at: due_at.max(now),
        })
        .await
    {
        Ok(()) | Err(LedgerError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
