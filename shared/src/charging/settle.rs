//! The one sequence that turns the gateway's records into our records:
//! look the `merchant_uid` up → verify the record is our charge → settle (or
//! flag for a person). Used for open attempts, refusals and lost answers
//! alike, by the run and by the webhook.

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::RunError;
use crate::billing::{
    AttemptState, ChargeAttempt, Fact, Lookup, PaymentRecord, Subscription, SubscriptionStatus,
    Verdict, flagged_state, next_state_for, retry_of, verdict,
};
use crate::engine::Engine;
use crate::gateway::{GatewayError, PaymentGateway};
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{Guard, Ledger, LedgerError, ReviewFlag, Settlement};

/// What came of writing a fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written, with the subscription's next state.
    Recorded,
    /// Someone else had settled the attempt already: nothing to do.
    AlreadySettled,
    /// Our claim was taken over and the fact is not money: the new holder
    /// settles the attempt with its own answer.
    ClaimLost,
    /// Money, but the attempt had been settled as not paid meanwhile: it was
    /// flagged for a person (the period may now be paid twice).
    Flagged(String),
    /// Not written: settled as not paid, it would end access (a suspension,
    /// a cancel that took effect) while a copy of its request may still be
    /// processing at the gateway, and nothing would look for it afterwards.
    /// It is settled after the quiet period.
    NotYet(String),
}

/// What came of looking an attempt up at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// A verified fact, written.
    Recorded(Fact),
    AlreadySettled,
    ClaimLost,
    /// The gateway has no payment under the uid.
    NothingThere,
    /// Nothing can be concluded now (the lookup failed); still open.
    Unclear(String),
    /// Flagged for a person (or, without the claim, left for its holder).
    Review(String),
    /// Not paid, and settling it now would end access within the quiet
    /// period ([`Applied::NotYet`]): still open, judged again later.
    Waiting(String),
    /// The gateway refused our credentials: a failure of the whole run.
    Unauthorized(GatewayError),
}

/// Turns a lookup result into the core's terms.
pub(crate) fn lookup_of<T>(result: Result<T, GatewayError>) -> (Lookup<T>, Option<GatewayError>) {
    match result {
        Ok(v) => (Lookup::Found(v), None),
        Err(e) if e.is_not_found() => (Lookup::Missing, None),
        Err(e) if e.is_unauthorized() => (Lookup::Failed(e.to_string()), Some(e)),
        Err(e) => (Lookup::Failed(e.to_string()), None),
    }
}

/// Looks `attempt`'s `merchant_uid` up and acts on the verdict: records a
/// verified fact (with `guard`), flags a record that is not our charge, or
/// reports that there is nothing (yet) or nothing clear.
pub async fn settle_from_gateway<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    guard: Guard<'_>,
) -> Result<Settled, RunError> {
    let (lookup, unauthorized) =
        lookup_of(engine.gateway.find_payment(&attempt.merchant_uid).await);
    if let Some(e) = unauthorized {
        return Ok(Settled::Unauthorized(e));
    }
    settle_from_lookup(engine, sub, attempt, &lookup, guard).await
}

/// [`settle_from_gateway`] for a record already fetched.
pub async fn settle_from_lookup<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    lookup: &Lookup<PaymentRecord>,
    guard: Guard<'_>,
) -> Result<Settled, RunError> {
    let merchant_uid = attempt.merchant_uid.as_str();
    match verdict(lookup, attempt, &engine.settings.uid_key, engine.now()) {
        Verdict::Settle(fact) => {
            let guard = match guard {
                // Only money settles without the claim; anything else waits for its holder.
                Guard::PaidFact if !fact.is_paid() => return Ok(Settled::ClaimLost),
                g => g,
            };
            Ok(
                match apply_fact(engine, attempt, &fact, guard, Some(sub.clone())).await? {
                    Applied::Recorded => {
                        info!(merchant_uid, ?fact, "settled from the gateway's record");
                        Settled::Recorded(fact)
                    }
                    Applied::AlreadySettled => Settled::AlreadySettled,
                    Applied::ClaimLost => Settled::ClaimLost,
                    Applied::Flagged(reason) => Settled::Review(reason),
                    Applied::NotYet(detail) => Settled::Waiting(detail),
                },
            )
        }
        Verdict::NothingThere => Ok(Settled::NothingThere),
        Verdict::Unclear(detail) => {
            warn!(merchant_uid, %detail, "could not settle from the gateway");
            Ok(Settled::Unclear(detail))
        }
        Verdict::Review(reason) => {
            let token = match guard {
                Guard::Claim(t) => Some(t),
                Guard::PaidFact => None,
            };
            Ok(if flag(engine, attempt, token, &reason).await? {
                Settled::Review(reason)
            } else {
                Settled::AlreadySettled
            })
        }
    }
}

/// Records `fact` on `attempt` and moves its subscription on, atomically.
/// Retries on a version conflict. `known`: a copy of the subscription the
/// caller just read (saves a read; a stale copy only costs a retry).
pub async fn apply_fact<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    fact: &Fact,
    guard: Guard<'_>,
    known: Option<Subscription>,
) -> Result<Applied, RunError> {
    // What a pass hands the next: who may write (a claim taken over turns a
    // paid fact into `PaidFact`), and the subscription if already read.
    let applied = retry_on_conflict(5, (guard, known), |(guard, known)| {
        apply_once(engine, attempt, fact, guard, known)
    })
    .await?;
    applied.ok_or_else(|| {
        RunError::Ledger(LedgerError::Transient(format!(
            "could not record {} after 5 tries",
            attempt.merchant_uid
        )))
    })
}

/// What one pass of [`apply_fact`] carries to the next.
type Carried<'a> = (Guard<'a>, Option<Subscription>);

/// One read-decide-write of [`apply_fact`].
async fn apply_once<'a, L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    fact: &Fact,
    guard: Guard<'a>,
    known: Option<Subscription>,
) -> Result<Pass<Applied, Carried<'a>>, RunError> {
    let now = engine.now();
    let sub = match known {
        Some(sub) => sub,
        None => current_subscription(engine, attempt).await?,
    };
    if !sub.is_current(attempt) {
        // The subscription moved past this attempt: it must be settled already.
        let stored = reread(engine, attempt).await?;
        if stored.state.is_open() {
            return Err(RunError::Ledger(LedgerError::Corrupt(format!(
                "open attempt {} is not its subscription's current one",
                attempt.merchant_uid
            ))));
        }
        return settled_meanwhile(engine, &stored, fact)
            .await
            .map(Pass::Done);
    }
    if let Fact::Paid { imp_uid, .. } = fact
        && sub.status == SubscriptionStatus::Cancelled
    {
        return unwanted(engine, attempt, imp_uid, guard)
            .await
            .map(Pass::Done);
    }
    let refs = &engine.settings.uid_key;
    let dunning = &engine.settings.charging.dunning;
    let (next, kept) = next_state_for(&sub, attempt, fact, dunning, refs, now);
    if let Some(e) = kept {
        warn!(subscription_id = %sub.id, error = %e, "status kept; fact recorded");
    }
    if let Some(wait) = too_soon_to_end(engine, attempt, fact, &next, now) {
        return Ok(Pass::Done(wait));
    }
    let mut result = fact.result();
    if !fact.is_paid() {
        result.retry_at = retry_of(attempt, &next);
    }
    if let Fact::Paid { cash, .. } = fact {
        result.cash_receipt = engine.settings.cash_receipt_for(&sub.buyer, *cash, now);
    }
    let settlement = Settlement {
        attempt,
        result: &result,
        guard,
        next: &next,
        now,
    };
    match engine.ledger.settle(&settlement).await {
        Ok(()) => Ok(Pass::Done(Applied::Recorded)),
        Err(LedgerError::Conflict(_)) => after_lost_settle(engine, attempt, fact, guard).await,
        Err(e) => Err(e.into()),
    }
}

/// A decline that would end access waits for the quiet period after the
/// send, so that a late paid answer can still win.
fn too_soon_to_end<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    fact: &Fact,
    next: &Subscription,
    now: DateTime<Utc>,
) -> Option<Applied> {
    if fact.is_paid()
        || next.status.is_chargeable()
        || attempt.quiet_since_sent(now, engine.settings.quiet())
    {
        return None;
    }
    let result = fact.result();
    Some(Applied::NotYet(format!(
        "{} ({}); it would end access ({}): confirmed after the quiet period",
        result.state.as_str(),
        result.fail_reason.as_deref().unwrap_or("no reason"),
        next.status.as_str()
    )))
}

/// The settle lost its condition: settled by someone else, our claim taken
/// over (a paid fact is recorded anyway), or the subscription changed.
async fn after_lost_settle<'a, L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    fact: &Fact,
    guard: Guard<'a>,
) -> Result<Pass<Applied, Carried<'a>>, RunError> {
    let stored = reread(engine, attempt).await?;
    if !stored.state.is_open() {
        return settled_meanwhile(engine, &stored, fact)
            .await
            .map(Pass::Done);
    }
    let guard = match guard {
        Guard::Claim(token) if stored.claim_token.as_deref() != Some(token) => {
            if !fact.is_paid() {
                return Ok(Pass::Done(Applied::ClaimLost));
            }
            // Our claim was taken over, but money is money: record it.
            Guard::PaidFact
        }
        // Still open and writable by us: the subscription changed; re-read it.
        guard => guard,
    };
    Ok(Pass::Again((guard, None)))
}

/// Money taken after the subscription was cancelled (a charge already out
/// when the cancel committed, defect D4): recorded for a person to refund
/// or accept, counted and alarmed like every review. With
/// `REFUND_AFTER_CANCEL` the engine refunds it itself (`crate::refunds`).
async fn unwanted<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    imp_uid: &str,
    guard: Guard<'_>,
) -> Result<Applied, RunError> {
    let reason = format!(
        "payment {imp_uid} arrived after the subscription was cancelled; refund it or accept it"
    );
    let token = match guard {
        Guard::Claim(t) => Some(t),
        Guard::PaidFact => None,
    };
    if !flag(engine, attempt, token, &reason).await? {
        // Claimed by someone else: its holder flags it with its answer.
        return Ok(match guard {
            Guard::PaidFact => Applied::ClaimLost,
            Guard::Claim(_) => Applied::AlreadySettled,
        });
    }
    if engine.settings.charging.refund_after_cancel {
        crate::refunds::refund_and_close(
            engine,
            attempt,
            "charged after the subscription was cancelled",
        )
        .await;
    }
    Ok(Applied::Flagged(reason))
}

/// The attempt was settled by someone else while `fact` was on its way. If
/// `fact` is money and the attempt was settled as not paid, the period may
/// now be paid twice: a person decides, and nothing more is charged.
async fn settled_meanwhile<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    stored: &ChargeAttempt,
    fact: &Fact,
) -> Result<Applied, RunError> {
    if let Fact::Paid { imp_uid, .. } = fact
        && stored.state.is_unpaid_settlement()
    {
        let reason = format!(
            "payment {imp_uid} arrived after the attempt was settled as {}; refund it or accept it",
            stored.state.as_str()
        );
        if flag(engine, stored, None, &reason).await? {
            return Ok(Applied::Flagged(reason));
        }
    }
    Ok(Applied::AlreadySettled)
}

/// Flags `attempt` for a person and stops its subscription's charges, in
/// one transaction. A claim of someone else's is left to its holder.
pub async fn flag<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    token: Option<&str>,
    reason: &str,
) -> Result<bool, RunError> {
    let flagged = retry_on_conflict(5, (), |()| async move {
        let now = engine.now();
        let sub = current_subscription(engine, attempt).await?;
        let next = flagged_state(&sub, now);
        match engine
            .ledger
            .flag_review(&ReviewFlag {
                attempt,
                token,
                reason,
                next: &next,
                now,
            })
            .await
        {
            Ok(()) => {
                error!(
                    subscription_id = %attempt.subscription_id,
                    merchant_uid = %attempt.merchant_uid,
                    %reason,
                    "needs review: charges stopped until a person resolves it"
                );
                Ok(Pass::Done(true))
            }
            Err(LedgerError::Conflict(_)) => {
                let stored = reread(engine, attempt).await?;
                let flaggable = match stored.state {
                    AttemptState::Unknown | AttemptState::Failed | AttemptState::Rejected => true,
                    AttemptState::Claimed => {
                        token.is_some() && stored.claim_token.as_deref() == token
                    }
                    AttemptState::Paid | AttemptState::NeedsReview => false,
                };
                if !flaggable {
                    warn!(merchant_uid = %attempt.merchant_uid, state = stored.state.as_str(), %reason, "not flagged: the attempt moved on");
                    return Ok(Pass::Done(false));
                }
                Ok(Pass::Again(()))
            }
            Err(e) => Err(RunError::from(e)),
        }
    })
    .await?;
    flagged.ok_or_else(|| {
        RunError::Ledger(LedgerError::Transient(format!(
            "could not flag {} after 5 tries",
            attempt.merchant_uid
        )))
    })
}

async fn current_subscription<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
) -> Result<Subscription, RunError> {
    engine
        .ledger
        .get_subscription(&attempt.subscription_id)
        .await?
        .ok_or_else(|| {
            RunError::Ledger(LedgerError::Corrupt(format!(
                "subscription {} missing for {}",
                attempt.subscription_id, attempt.merchant_uid
            )))
        })
}

async fn reread<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
) -> Result<ChargeAttempt, RunError> {
    engine
        .ledger
        .get_attempt(&attempt.subscription_id, &attempt.period, attempt.attempt)
        .await?
        .ok_or_else(|| {
            RunError::Ledger(LedgerError::Corrupt(format!(
                "attempt {} vanished while being recorded",
                attempt.merchant_uid
            )))
        })
}
