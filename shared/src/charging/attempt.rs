//! One due subscription: claim (or take over) its current attempt, settle
//! what an earlier run left open, send the charge. What the gateway answers
//! is read in `answers`.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::answers::{Open, concluded, record, refused_at_last, release, send_answer};
use super::pace::Pace;
use super::settle::{flag, lookup_of, settle_from_gateway};
use super::{BillingRun, Outcome, RunError, SkipReason};
use crate::billing::price_changes::{self, AtClaim, Effect};
use crate::billing::trials::{self, Conversion};
use crate::billing::{
    AttemptState, BILLING_TZ, ChargeAttempt, Event, Fact, Lookup, MAX_SENDS, RecordStatus,
    Subscription, SubscriptionId,
};
use crate::engine::Engine;
use crate::gateway::{ChargeRequest, PaymentGateway};
use crate::ledger::{
    AttemptKey, Guard, Ledger, LedgerError, LockChange, Sent, Settlement, SubscriptionChange,
    TakeOver,
};

pub(super) fn skipped(reason: SkipReason) -> Result<Outcome, RunError> {
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
    let Some(sub) = engine.ledger.get_subscription(id).await? else {
        return skipped(SkipReason::NotFound);
    };
    // Boxed, like the calls below: a debug build's frames of the charge
    // path add up to more than a 2 MB thread (tests overflowed).
    Box::pin(charge_read(engine, sub, run, pace)).await
}

/// [`charge_one`] of a subscription just read.
pub(crate) async fn charge_read<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: Subscription,
    run: &BillingRun,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    // Wait out a back-off before claiming, so a claim's time is its send's
    // (the claim is version-checked: a change meanwhile loses it).
    pace.wait().await;
    if !sub.is_due(run.billing_time) {
        return skipped(SkipReason::NotDue);
    }
    // A trial converts only with a consent; without one nothing is claimed.
    if sub.conversion() == Conversion::Lapses {
        return trial_lapsed(engine, &sub).await;
    }
    // A price change in force: applied with its consent, else what the
    // customer chose not to consent means (decision 69).
    let sub = match Box::pin(price_change_gate(engine, sub)).await? {
        Ok(sub) => sub,
        Err(stop) => return Ok(stop),
    };
    // A subscription set to end is never claimed again, whichever attempt
    // of its period is next (defect D6).
    let ending = sub.cancel_at_period_end;
    let mut refused_today = None;
    if !ending {
        let today = engine.now().with_timezone(&BILLING_TZ).date_naive();
        match sub.may_claim(&run.run_id, today) {
            Ok(()) => {
                if let Some(stop) = earlier_attempt_clear(engine, &sub).await? {
                    return Ok(stop);
                }
                // `None`: it exists, or the subscription changed.
                if let Some((next, fresh, token)) = claim_fresh(engine, &sub, run).await? {
                    return Box::pin(send(engine, &next, &fresh, &token, pace)).await;
                }
            }
            Err(why) => refused_today = Some(why),
        }
    }
    match engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), sub.attempt)
        .await?
    {
        None if ending => cancel_at_period_end(engine, &sub).await,
        None if refused_today.is_some() => skipped(SkipReason::OncePerRunOrDay),
        None => skipped(SkipReason::Busy),
        Some(a) if a.state.is_open() => {
            let token = engine.claim_token(&run.run_id);
            Box::pin(resume(engine, &sub, &a, &token, pace)).await
        }
        Some(a) if a.state == AttemptState::NeedsReview => skipped(SkipReason::NeedsReview),
        Some(a) if ending => {
            // Settled as not paid before the cancel: nothing more to charge.
            info!(merchant_uid = %a.merchant_uid, "period-end cancel of a period not paid");
            cancel_at_period_end(engine, &sub).await
        }
        Some(a) => {
            // Settled, but our copy of the subscription is older than the
            // settlement (a webhook or another run got there first).
            info!(merchant_uid = %a.merchant_uid, state = a.state.as_str(), "attempt already settled by someone else");
            skipped(SkipReason::Busy)
        }
    }
}

/// Before a new `merchant_uid` for a period (attempt 2 and later), the one
/// before it must be quiet and clear at the gateway: its quiet period over,
/// and a fresh lookup showing no money kept and nothing still in progress
/// under it. A copy of an earlier request that the gateway processed late,
/// or whose record its lookups showed late, is caught here rather than
/// paid twice (I1, with lagging lookups and pending payments: I9). `Some`
/// stops the claim for now.
async fn earlier_attempt_clear<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Option<Outcome>, RunError> {
    if sub.attempt <= 1 {
        return Ok(None);
    }
    let Some(earlier) = engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), sub.attempt - 1)
        .await?
        .filter(|a| a.state.is_unpaid_settlement())
    else {
        return Ok(None);
    };
    if !earlier.quiet_since_sent(engine.now(), engine.settings.quiet()) {
        return Ok(Some(Outcome::Skipped {
            reason: SkipReason::Waiting,
        }));
    }
    let (lookup, unauthorized) =
        lookup_of(engine.gateway.find_payment(&earlier.merchant_uid).await);
    if let Some(e) = unauthorized {
        return Err(RunError::Unauthorized(e));
    }
    match lookup {
        Lookup::Found(p) if p.merchant_uid == earlier.merchant_uid && p.kept() > 0 => {
            let reason = format!(
                "payment {} arrived after the attempt was settled as {}; refund it or accept it",
                p.imp_uid,
                earlier.state.as_str()
            );
            warn!(merchant_uid = %earlier.merchant_uid, %reason, "an earlier attempt was paid after all");
            Ok(Some(if flag(engine, &earlier, None, &reason).await? {
                Outcome::NeedsReview { reason }
            } else {
                Outcome::Skipped {
                    reason: SkipReason::Busy,
                }
            }))
        }
        Lookup::Found(p) if matches!(p.status, RecordStatus::Ready | RecordStatus::Other) => {
            Ok(Some(Outcome::Skipped {
                reason: SkipReason::Waiting,
            }))
        }
        Lookup::Found(_) | Lookup::Missing => Ok(None),
        Lookup::Failed(_) => Ok(Some(Outcome::Skipped {
            reason: SkipReason::Unsettled,
        })),
    }
}

/// Claims the subscription's current attempt afresh: one transaction that
/// writes the attempt (`claimed`, its `merchant_uid` fixed here) and the
/// subscription one version later, marked with this run. A change written
/// meanwhile (a cancel, a plan change racing the first claim: defect C2)
/// wins, and nothing is claimed on a stale copy. `None`: the attempt
/// exists, or the subscription changed.
async fn claim_fresh<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    run: &BillingRun,
) -> Result<Option<(Subscription, ChargeAttempt, String)>, RunError> {
    let now = engine.now();
    let token = engine.claim_token(&run.run_id);
    let period = sub.current_period();
    let refs = &engine.settings.uid_key;
    let fresh = ChargeAttempt {
        subscription_id: sub.id.clone(),
        merchant_uid: refs.charge_uid(&sub.id, &period, sub.attempt),
        key_ref: refs.key_ref(&sub.customer_uid),
        period,
        attempt: sub.attempt,
        amount: sub.period_amount(),
        // Fixed with the amount: every re-send and refund of it uses it.
        tax_free: sub.plan.tax.tax_free_of(sub.period_amount()),
        state: AttemptState::Claimed,
        claim_token: Some(token.clone()),
        lease_until: Some(now + engine.settings.lease()),
        sent_at: Some(now),
        sends: 1,
        imp_uid: None,
        paid_at: None,
        fail_reason: None,
        refunded: 0,
        cash_receipt: None,
        refund_cause: None,
        resolution: None,
        retry_at: None,
        decline: None,
        receipt_url: None,
        created_at: now,
        updated_at: now,
        vat: None,
    };
    let mut next = sub.next_version(now);
    next.last_run = Some(run.run_id.clone());
    match engine.ledger.claim_new(&fresh, &next).await {
        Ok(()) => Ok(Some((next, fresh, token))),
        Err(LedgerError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
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
/// take it over and settle it from the gateway's records. One the gateway
/// has no record of, after the quiet period, is sent again (same
/// `merchant_uid`) while the subscription is to be charged for it, its key
/// exists and it has been sent fewer than [`MAX_SENDS`] times; otherwise
/// it is closed. One open for days goes to a person.
async fn resume<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    open: &ChargeAttempt,
    token: &str,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    let now = engine.now();
    let lease = now + engine.settings.lease();
    let taken = match engine
        .ledger
        .take_over(&TakeOver {
            id: &sub.id,
            period: &open.period,
            attempt: open.attempt,
            token,
            lease_until: lease,
            now,
            sub_version: sub.version,
        })
        .await
    {
        Ok(a) => a,
        Err(LedgerError::Conflict(_)) => return skipped(SkipReason::Busy),
        Err(e) => return Err(e.into()),
    };
    if taken.amount == 0 {
        // Nothing was ever sent for it: nothing to look up.
        return Box::pin(free_period(engine, &taken, token)).await;
    }
    let settled = settle_from_gateway(engine, sub, &taken, Guard::Claim(token)).await?;
    let open = match concluded(engine, &taken, token, settled, "lookup refused (401)").await? {
        Ok(outcome) => return Ok(outcome),
        Err(open) => open,
    };
    match open {
        Open::Unclear(detail) if taken.overdue(now) => {
            let days = (now - taken.created_at).num_days();
            let reason = format!(
                "open for {days} days and still unsettled ({detail}); look it up at the gateway"
            );
            escalate(engine, &taken, token, reason).await
        }
        Open::Unclear(detail) => {
            release(engine, &taken, token, &detail, Sent::Maybe).await?;
            skipped(SkipReason::Unsettled)
        }
        Open::Waiting(detail) => {
            release(engine, &taken, token, &detail, Sent::Maybe).await?;
            skipped(SkipReason::Waiting)
        }
        Open::NothingThere if !taken.quiet_since_sent(now, engine.settings.quiet()) => {
            // The gateway may still be processing the last request (or its
            // lookups lag behind it): a re-send now would race it.
            let detail = "sent recently; the gateway may still be processing it";
            release(engine, &taken, token, detail, Sent::Maybe).await?;
            skipped(SkipReason::Waiting)
        }
        Open::NothingThere if !(sub.status.is_chargeable() && sub.is_current(&taken)) => {
            abandon(engine, sub, &taken, token).await
        }
        Open::NothingThere => nothing_recorded(engine, sub, &taken, token, pace).await,
    }
}

/// The gateway has no record of an attempt sent more than the quiet period
/// ago: it never arrived, or the gateway refused it without a payment. With
/// the key gone, the attempt is rejected (key missing). Sent the most times
/// already, it goes to a person: a PG error that never leaves a payment is
/// not re-sent forever (defect S4), and a refusal that is the merchant's
/// setup, not the customer's card (defect S2), never walks a customer into
/// suspension. Otherwise it is sent again with the same `merchant_uid`.
async fn nothing_recorded<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    taken: &ChargeAttempt,
    token: &str,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    let (key, unauthorized) = lookup_of(
        engine
            .gateway
            .billing_key(&sub.customer_uid)
            .await
            .map(|_| ()),
    );
    if let Some(e) = unauthorized {
        release(
            engine,
            taken,
            token,
            "key lookup refused (401)",
            Sent::Maybe,
        )
        .await?;
        return Err(RunError::Unauthorized(e));
    }
    let last = taken.fail_reason.as_deref().unwrap_or("no answer");
    match key {
        Lookup::Failed(e) => {
            release(
                engine,
                taken,
                token,
                &format!("billing-key lookup failed: {e}"),
                Sent::Maybe,
            )
            .await?;
            skipped(SkipReason::Unsettled)
        }
        Lookup::Missing => {
            let fact = refused_at_last(last, true);
            record(engine, sub, taken, fact, Guard::Claim(token)).await
        }
        Lookup::Found(()) if taken.sends >= MAX_SENDS => {
            let reason = format!(
                "sent {} times and never recorded by the gateway (last: {last}); the PG setup or the card needs a look",
                taken.sends
            );
            escalate(engine, taken, token, reason).await
        }
        Lookup::Found(()) => resend(engine, sub, taken, token, pace).await,
    }
}

/// Sends an attempt again with the same `merchant_uid`, charging the
/// subscription's key of the moment (a card replaced since the last send is
/// the one to charge: the same `merchant_uid` can be paid only once).
async fn resend<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    taken: &ChargeAttempt,
    token: &str,
    pace: &Pace,
) -> Result<Outcome, RunError> {
    info!(merchant_uid = %taken.merchant_uid, sends = taken.sends, "open attempt never recorded at the gateway; sending it again with the same merchant_uid");
    let now = engine.now();
    // This send is judged by its own time (defect D2), not the last one's.
    let resent = ChargeAttempt {
        key_ref: engine.settings.uid_key.key_ref(&sub.customer_uid),
        sent_at: Some(now),
        sends: taken.sends + 1,
        ..taken.clone()
    };
    match engine
        .ledger
        .mark_sending(&resent, token, now, sub.version)
        .await
    {
        Ok(()) => send(engine, sub, &resent, token, pace).await,
        Err(LedgerError::Conflict(_)) => skipped(SkipReason::Busy),
        Err(e) => Err(e.into()),
    }
}

/// An attempt the engine will not go on with alone (open for days: a
/// payment pending at the gateway, lookups that keep failing, defect S3; or
/// sent the most times without a record) goes to a person instead of
/// waiting in silence.
async fn escalate<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    taken: &ChargeAttempt,
    token: &str,
    reason: String,
) -> Result<Outcome, RunError> {
    warn!(merchant_uid = %taken.merchant_uid, %reason, "escalated to a person");
    if flag(engine, taken, Some(token), &reason).await? {
        Ok(Outcome::NeedsReview { reason })
    } else {
        skipped(SkipReason::Busy)
    }
}

/// Closes an attempt that never reached the gateway and will not be sent
/// again (its subscription ended or waits for a person). When it is the
/// subscription's current attempt, the subscription moves to the next one,
/// so a review resolved later charges afresh instead of skipping a settled
/// attempt every day (defect S1).
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
    let mut next = sub.next_version(now);
    if sub.is_current(attempt) {
        next.attempt = sub.attempt + 1;
        next.next_charge_at = now.max(sub.next_charge_at);
    }
    match engine
        .ledger
        .settle(&Settlement {
            attempt,
            result: &result,
            guard: Guard::Claim(token),
            next: &next,
            now,
        })
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
    if attempt.amount == 0 {
        // Boxed: its settle would add a ledger write's future to every send.
        return Box::pin(free_period(engine, attempt, token)).await;
    }
    let request = ChargeRequest {
        customer_uid: sub.customer_uid.clone(),
        merchant_uid: attempt.merchant_uid.clone(),
        amount: attempt.amount,
        tax_free: attempt.tax_free,
        name: sub.plan.name.clone(),
        buyer: sub.buyer.clone(),
        custom_data: Some(
            serde_json::json!({"subscription_id": sub.id.as_str(), "period": attempt.period.as_str(), "attempt": attempt.attempt})
                .to_string(),
        ),
        notice_url: engine.settings.charging.notice_url.as_ref().map(url::Url::to_string),
    };
    let answer = engine.gateway.charge(&request).await;
    Box::pin(send_answer(engine, sub, attempt, token, pace, answer)).await
}

/// A period a coupon leaves nothing to pay for (decision 78): its attempt,
/// claimed at 0 KRW, is recorded as paid with no payment, and the
/// subscription moves on as after a payment. Nothing is sent to the PG
/// (no PG takes a 0 KRW charge on a billing key).
async fn free_period<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    token: &str,
) -> Result<Outcome, RunError> {
    let now = engine.now();
    let Some(sub) = engine
        .ledger
        .get_subscription(&attempt.subscription_id)
        .await?
    else {
        return skipped(SkipReason::NotFound);
    };
    let fact = Fact::Paid {
        imp_uid: String::new(),
        paid_at: now,
        receipt_url: None,
        tax: None,
        cash: false,
    };
    let next = if sub.is_current(attempt) && sub.status.is_chargeable() {
        crate::billing::next_state(&sub, &fact, &engine.settings.charging.dunning, now).0
    } else {
        // Ended or moved on meanwhile: the record is kept, nothing else.
        sub.next_version(now)
    };
    let mut result = fact.result();
    result.imp_uid = None;
    match engine
        .ledger
        .settle(&Settlement {
            attempt,
            result: &result,
            guard: Guard::Claim(token),
            next: &next,
            now,
        })
        .await
    {
        Ok(()) => {
            info!(merchant_uid = %attempt.merchant_uid, period = %attempt.period, "nothing to pay for this period (coupon): recorded as paid at 0 KRW, nothing sent");
            Ok(Outcome::Free {
                merchant_uid: attempt.merchant_uid.clone(),
            })
        }
        Err(LedgerError::Conflict(_)) => skipped(SkipReason::Busy),
        Err(e) => Err(e.into()),
    }
}

/// Before a claim: a price change in force is written first (applied,
/// kept at the old price, or postponed a period: `Ok` the subscription to
/// claim), or it ends the subscription (`Err`, nothing claimed).
async fn price_change_gate<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: Subscription,
) -> Result<Result<Subscription, Outcome>, RunError> {
    let window = engine.settings.charging.consent_window_days;
    let (next, effect) = match price_changes::at_claim(&sub, window, engine.now()) {
        AtClaim::Claim => return Ok(Ok(sub)),
        AtClaim::ClaimAfter(next, effect) => (next, Some(effect)),
        AtClaim::Ended(next) => (next, None),
    };
    let change = SubscriptionChange {
        next: &next,
        audit: None,
        lock: if effect.is_none() {
            LockChange::Release(sub.lock_name())
        } else {
            LockChange::Keep
        },
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => {}
        Err(LedgerError::Conflict(_)) => {
            return Ok(Err(Outcome::Skipped {
                reason: SkipReason::Busy,
            }));
        }
        Err(e) => return Err(e.into()),
    }
    let amount = next.plan.amount;
    match effect {
        Some(Effect::Applied) => info!(amount, "price change applied from this period"),
        Some(Effect::KeptOldPrice) => {
            info!(
                amount,
                "price increase not consented: the old price goes on"
            );
        }
        Some(Effect::Postponed) => {
            info!(effective = ?next.price_change.as_ref().map(|c| c.effective.as_str()), "price increase not asked in time: one period later, asked again");
        }
        None => {
            info!("price increase not consented: the subscription ends, nothing charged");
            return Ok(Err(Outcome::Skipped {
                reason: SkipReason::PriceIncreaseNotConsented,
            }));
        }
    }
    Ok(Ok(next))
}

/// A trial whose end came without a consent to convert: extended once
/// more, or cancelled (`on_no_consent`), never charged.
async fn trial_lapsed<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Outcome, RunError> {
    let Some(next) = trials::lapsed(sub, engine.now()) else {
        return skipped(SkipReason::NotDue);
    };
    let ended = !next.status.is_chargeable();
    let change = SubscriptionChange {
        next: &next,
        audit: None,
        lock: if ended {
            LockChange::Release(sub.lock_name())
        } else {
            LockChange::Keep
        },
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => {
            if ended {
                info!("trial ended without a consent to convert: cancelled, nothing charged");
            } else {
                info!(trial_ends_at = %next.next_charge_at.to_rfc3339(), "trial ended without a consent to convert: extended once");
            }
            skipped(SkipReason::TrialEndedWithoutConsent)
        }
        Err(LedgerError::Conflict(_)) => skipped(SkipReason::Busy),
        Err(e) => Err(e.into()),
    }
}

async fn cancel_at_period_end<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Outcome, RunError> {
    let now: DateTime<Utc> = engine.now();
    let mut next = sub.next_version(now);
    next.ended_at = Some(now);
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
