//! The checks every completion path shares, and what a verified issuance
//! becomes: a new subscription (once; one live subscription per user and
//! plan unless configured otherwise), or a new card for an existing one.

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::{CALLBACK_RESERVE, CallbackOutcome, FailureReason, FirstCharge, unavailable};
use crate::billing::PaymentRecord;
use crate::billing::trials;
use crate::billing::{
    Anchor, AttemptState, ChargeAttempt, Event, Fact, Issuance, KeyInfo, Registration,
    RegistrationStatus, Subscription, SubscriptionId, SubscriptionStatus, issuance,
};
use crate::charging::{self, BillingRun, Outcome};
use crate::config::pg_provider_of;
use crate::engine::{Budget, Engine};
use crate::gateway::{BillingKey, PaymentGateway};
use crate::ledger::{Activation, Ledger, LedgerError};
use crate::secret::Secret;
use sha2::{Digest, Sha256};

/// A verified issuance: what the window took, the key, and what the amount means.
pub(super) struct Verified {
    pub(super) paid: i64,
    /// The window's payment was from an account (decision 74).
    pub(super) cash: bool,
    pub(super) key: BillingKey,
    pub(super) issued: Issuance,
}

/// What the browser (or a notice) says was issued.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// V1: the issuance payment `imp_uid`.
    Payment(&'a str),
    /// PortOne V2: the billing key PortOne issued.
    Key(&'a Secret),
}

impl Proof<'_> {
    /// What the registration keeps as its issuance reference (and a revisit
    /// is compared with): the `imp_uid`, or for a V2 key a digest of it
    /// (`bk_` + 32 hex digits), never the key itself.
    pub fn reference(&self) -> String {
        match self {
            Self::Payment(imp_uid) => (*imp_uid).to_owned(),
            Self::Key(key) => {
                let digest = Sha256::digest(key.expose().as_bytes());
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                format!("bk_{hex}")
            }
        }
    }
}

/// Completes a pending registration from what `proof` names.
pub(super) async fn verified<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    proof: Proof<'_>,
    budget: Budget,
) -> CallbackOutcome {
    let verdict = match proof {
        Proof::Payment(imp_uid) => verify_issuance(engine, reg, imp_uid, budget).await,
        Proof::Key(key) => verify_key(engine, reg, key, budget).await,
    };
    let v = match verdict {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let reference = proof.reference();
    if reg.replaces_key {
        Box::pin(super::replace::replace_key(
            engine, reg, &reference, v, budget,
        ))
        .await
    } else {
        subscribe(engine, reg, &reference, v, budget).await
    }
}

/// PortOne V2: the key must exist, be `ISSUED` on our channel, and carry
/// this registration's `issueId` and customer id. No money moves when a V2
/// key is issued, so a key that fails a check is simply not ours to use
/// (and not ours to delete).
async fn verify_key<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    key: &Secret,
    budget: Budget,
) -> Result<Verified, CallbackOutcome> {
    let info = match budget
        .run(CALLBACK_RESERVE, engine.gateway.billing_key(key.expose()))
        .await
    {
        None => return Err(unavailable("PortOne (out of time)", &"budget spent")),
        Some(Ok(k)) => k,
        Some(Err(e)) if e.is_not_found() => {
            info!("PortOne has no issued billing key under the redirect's key");
            return Err(CallbackOutcome::Failed(FailureReason::KeyNotIssued));
        }
        Some(Err(e)) => return Err(unavailable("PortOne", &e)),
    };
    if info.issue_id.as_deref() != Some(reg.merchant_uid.as_str())
        || info.customer_id.as_deref() != Some(reg.customer_uid.as_str())
    {
        warn!("the billing key was issued for another registration or customer");
        return Err(CallbackOutcome::Failed(FailureReason::PaymentMismatch));
    }
    if !info.on_our_channel {
        warn!(pg_provider = %info.pg_provider, "the billing key is not on our channel");
        return Err(CallbackOutcome::Failed(FailureReason::KeyNotIssued));
    }
    Ok(Verified {
        paid: 0,
        cash: false,
        key: info,
        issued: Issuance::KeyOnly,
    })
}

/// The same redirect again (refresh, back button, second tab) answers the
/// same: active, waiting for a person, or refused.
pub(super) async fn revisited<L: Ledger, G>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
) -> CallbackOutcome {
    match reg.status {
        RegistrationStatus::Completed if reg.imp_uid.as_deref() == Some(imp_uid) => {
            match engine.ledger.get_subscription(&reg.subscription_id).await {
                Ok(Some(sub)) if sub.status == SubscriptionStatus::NeedsReview => {
                    CallbackOutcome::Failed(FailureReason::NeedsReview)
                }
                Ok(sub) => CallbackOutcome::Active {
                    subscription_id: reg.subscription_id.to_string(),
                    first_charge: match sub {
                        Some(s) => first_charge_of(engine, &s).await,
                        None => None,
                    },
                },
                Err(e) => unavailable("store", &e),
            }
        }
        RegistrationStatus::Refused if reg.replaces_key => {
            CallbackOutcome::Failed(FailureReason::SubscriptionEnded)
        }
        RegistrationStatus::Refused => CallbackOutcome::Failed(FailureReason::AlreadySubscribed),
        // The transaction failed for another reason: the next try may pass.
        RegistrationStatus::Pending => CallbackOutcome::Failed(FailureReason::Unavailable),
        RegistrationStatus::Completed => {
            warn!("completed registration revisited with another imp_uid");
            CallbackOutcome::Failed(FailureReason::PaymentMismatch)
        }
    }
}

/// What became of the sign-up's first charge, as stored (the browser comes
/// back after the webhook completed the sign-up, or on a refresh): the
/// first attempt of its first period, if there is one.
async fn first_charge_of<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Option<FirstCharge> {
    if sub.status == SubscriptionStatus::Trialing {
        return None;
    }
    let first = sub.anchor.period_id(0);
    let mut attempt = engine.ledger.get_attempt(&sub.id, &first, 1).await.ok()??;
    // Whoever completed the sign-up (the webhook, as the browser came back)
    // may be charging it this instant: its answer is usually a moment away.
    for pause in [100, 300, 600] {
        if attempt.state != AttemptState::Claimed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        attempt = engine.ledger.get_attempt(&sub.id, &first, 1).await.ok()??;
    }
    Some(match attempt.state {
        AttemptState::Paid => FirstCharge::Paid,
        AttemptState::Failed | AttemptState::Rejected => FirstCharge::Declined,
        AttemptState::Claimed | AttemptState::Unknown | AttemptState::NeedsReview => {
            FirstCharge::Pending
        }
    })
}

/// The issuance payment `imp_uid` must be this registration's (merchant_uid
/// and customer_uid, not failed) and the billing key must exist with the
/// configured PG. A payment under this registration's `merchant_uid` that
/// took money is never refused outright: it is recorded for a person.
async fn verify_issuance<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    budget: Budget,
) -> Result<Verified, CallbackOutcome> {
    let failed = |reason| Err(CallbackOutcome::Failed(reason));
    let payment = issuance_payment(engine, imp_uid, budget).await?;
    if payment.merchant_uid != reg.merchant_uid {
        warn!(payment_merchant_uid = %payment.merchant_uid, "imp_uid belongs to another order");
        return failed(FailureReason::PaymentMismatch);
    }
    if payment.customer_uid.as_deref() != Some(reg.customer_uid.as_str()) {
        warn!("issuance payment names another customer_uid");
        return for_review(reg, &payment, "it was issued for another customer_uid");
    }
    // A trial's window takes nothing, nor a billing-day plan's (its first,
    // partial period is charged after: decision 77): any money it took is
    // for a person.
    // So does a sign-up with a coupon (its first period is priced at the
    // claim, decision 78).
    let expected = if reg.trial.is_some() || reg.billing.is_some() || reg.coupon.is_some() {
        0
    } else {
        reg.plan.amount
    };
    let issued = issuance(&payment, expected, engine.now());
    if issued == Issuance::Failed {
        info!(
            status = payment.status.as_str(),
            "issuance did not succeed at the PG"
        );
        return failed(FailureReason::PaymentFailed);
    }
    let key_not_issued = |_| CallbackOutcome::Failed(FailureReason::KeyNotIssued);
    let Some(key) = issued_key(engine, reg, budget).await? else {
        return for_review(reg, &payment, "the PG has no billing key for it")
            .map_err(key_not_issued);
    };
    if key.customer_uid != reg.customer_uid || key.pg_provider != pg_provider_of(&reg.pg) {
        warn!(pg_provider = %key.pg_provider, expected = pg_provider_of(&reg.pg), "billing key from another PG");
        return for_review(reg, &payment, "its billing key is from another PG")
            .map_err(key_not_issued);
    }
    Ok(Verified {
        paid: payment.amount,
        cash: payment.cash,
        key,
        issued,
    })
}

/// The window's payment as the PG records it.
async fn issuance_payment<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    imp_uid: &str,
    budget: Budget,
) -> Result<PaymentRecord, CallbackOutcome> {
    match budget
        .run(CALLBACK_RESERVE, engine.gateway.payment(imp_uid))
        .await
    {
        None => Err(unavailable("the PG (out of time)", &"budget spent")),
        Some(Ok(p)) => Ok(p),
        Some(Err(e)) if e.is_not_found() => {
            Err(CallbackOutcome::Failed(FailureReason::PaymentMismatch))
        }
        Some(Err(e)) => Err(unavailable("the PG", &e)),
    }
}

/// The billing key the window issued, `None` when the PG has none.
async fn issued_key<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    budget: Budget,
) -> Result<Option<BillingKey>, CallbackOutcome> {
    match budget
        .run(
            CALLBACK_RESERVE,
            engine.gateway.billing_key(&reg.customer_uid),
        )
        .await
    {
        None => Err(unavailable("the PG (out of time)", &"budget spent")),
        Some(Ok(k)) => Ok(Some(k)),
        Some(Err(e)) if e.is_not_found() => Ok(None),
        Some(Err(e)) => Err(unavailable("the PG", &e)),
    }
}

/// An issuance that cannot be verified: one that took money is recorded
/// for a person (never refused outright), one that took none is refused.
fn for_review(
    reg: &Registration,
    payment: &PaymentRecord,
    why: &str,
) -> Result<Verified, CallbackOutcome> {
    let took_money = payment.status == crate::billing::RecordStatus::Paid && payment.amount > 0;
    if !took_money {
        return Err(CallbackOutcome::Failed(FailureReason::PaymentMismatch));
    }
    let reason = format!(
        "issuance payment {} took {} KRW but {why}; refund it or accept it",
        payment.imp_uid, payment.amount
    );
    Ok(Verified {
        paid: payment.amount,
        cash: payment.cash,
        key: BillingKey {
            customer_uid: reg.customer_uid.clone(),
            pg_provider: pg_provider_of(&reg.pg).to_owned(),
            pg_id: None,
            card_name: None,
            card_number: None,
            inserted: 0,
            issue_id: None,
            customer_id: None,
            on_our_channel: true,
        },
        issued: Issuance::Review { reason },
    })
}

pub(super) fn key_info(key: &BillingKey, now: DateTime<Utc>) -> KeyInfo {
    KeyInfo {
        pg_provider: key.pg_provider.clone(),
        pg_id: key.pg_id.clone(),
        card_name: key.card_name.clone(),
        card_number: key.card_number.clone(),
        inserted_at: DateTime::from_timestamp(key.inserted, 0)
            .filter(|_| key.inserted > 0)
            .unwrap_or(now),
    }
}

/// A new subscription: the subscription, the completed registration and
/// (when the window took money) the first period's attempt, in one
/// transaction, taking the user's lock on the plan; then the first charge,
/// if configured and there is time.
async fn subscribe<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    v: Verified,
    budget: Budget,
) -> CallbackOutcome {
    let now = engine.now();
    let (sub, mut first_attempt) = activation(
        reg,
        &v.key,
        &v.issued,
        imp_uid,
        v.paid,
        &engine.settings.uid_key,
        now,
    );
    // The first period paid in the window gets its cash receipt too.
    if let Some(first) = first_attempt
        .as_mut()
        .filter(|a| a.state == AttemptState::Paid)
    {
        first.cash_receipt = engine.settings.cash_receipt_for(&sub.buyer, v.cash, now);
    }
    // A sign-up waiting for a person is a live subscription too: it holds
    // the lock (when another holds it, `after_conflict` records it without).
    let plan_lock = !engine.settings.registration.allow_multiple_subscriptions;
    let activation_of = |sub, first_attempt, plan_lock| Activation {
        reg,
        sub,
        imp_uid,
        first_attempt,
        plan_lock,
    };
    match engine
        .ledger
        .activate(&activation_of(&sub, first_attempt.as_ref(), plan_lock))
        .await
    {
        Ok(()) => {
            info!(subscription_id = %sub.id, status = sub.status.as_str(), "subscription activated")
        }
        Err(LedgerError::Conflict(_)) => {
            return Box::pin(after_conflict(engine, reg, imp_uid, &v, budget)).await;
        }
        Err(e) => return unavailable("store", &e),
    }
    finish(engine, &sub, v.issued, budget).await
}

/// Why an activation did not go through: another tab (or the webhook, or
/// the sweep) won, or the user already has a live subscription to the plan.
async fn after_conflict<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    v: &Verified,
    budget: Budget,
) -> CallbackOutcome {
    let stored = match engine.ledger.get_registration(&reg.merchant_uid).await {
        Ok(Some(r)) => r,
        Ok(None) => return CallbackOutcome::Failed(FailureReason::UnknownRegistration),
        Err(e) => return unavailable("store", &e),
    };
    if stored.status != RegistrationStatus::Pending {
        return revisited(engine, &stored, imp_uid).await;
    }
    let held = match engine.ledger.user_items(&reg.user_id).await {
        Ok(items) => items
            .locks
            .into_iter()
            .find(|(plan, id)| plan == &reg.plan.name && id != &reg.subscription_id),
        Err(e) => return unavailable("store", &e),
    };
    let Some((_, holder)) = held else {
        // Nobody else holds the plan: the write that beat ours (the
        // webhook's, another tab's) may still be committing. Read again,
        // briefly, before the browser is told to try later (found in the V2
        // local story: `BillingKey.Issued` completed a trial's sign-up as its
        // redirect arrived, and the customer saw the failure page).
        for pause in [100, 300, 600] {
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            match engine.ledger.get_registration(&reg.merchant_uid).await {
                Ok(Some(r)) if r.status != RegistrationStatus::Pending => {
                    return revisited(engine, &r, imp_uid).await;
                }
                Ok(_) => {}
                Err(e) => return unavailable("store", &e),
            }
        }
        return CallbackOutcome::Failed(FailureReason::Unavailable);
    };
    if v.paid > 0 {
        // Money was taken: never refused silently.
        return kept_for_review(engine, reg, imp_uid, v, &holder, budget).await;
    }
    info!(subscription_id = %holder, "the user already has a live subscription to this plan; sign-up refused");
    if let Err(e) = engine
        .ledger
        .refuse_registration(reg, engine.now(), None)
        .await
        && !e.is_conflict()
    {
        return unavailable("store", &e);
    }
    if let Err(e) = engine.gateway.delete_billing_key(&v.key.customer_uid).await {
        warn!(error = %e, "could not delete the refused sign-up's billing key");
    }
    CallbackOutcome::Failed(FailureReason::AlreadySubscribed)
}

/// A sign-up refused by the one-live-plan rule whose window took money: the
/// subscription is recorded for a person (refund it or keep it), without
/// the user's lock.
async fn kept_for_review<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    v: &Verified,
    holder: &SubscriptionId,
    budget: Budget,
) -> CallbackOutcome {
    let now = engine.now();
    let reason = Issuance::Review {
        reason: format!(
            "the user already has subscription {holder} to this plan, and this sign-up's window took {} KRW; refund it or accept it",
            v.paid
        ),
    };
    let (sub, first) = activation(
        reg,
        &v.key,
        &reason,
        imp_uid,
        v.paid,
        &engine.settings.uid_key,
        now,
    );
    match engine
        .ledger
        .activate(&Activation {
            reg,
            sub: &sub,
            imp_uid,
            first_attempt: first.as_ref(),
            plan_lock: false,
        })
        .await
    {
        Ok(()) => finish(engine, &sub, reason, budget).await,
        Err(e) => unavailable("store", &e),
    }
}

async fn finish<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    issued: Issuance,
    budget: Budget,
) -> CallbackOutcome {
    let first_charge = match issued {
        Issuance::Review { reason } => {
            error!(subscription_id = %sub.id, %reason, "needs review: sign-up payment");
            return CallbackOutcome::Failed(FailureReason::NeedsReview);
        }
        Issuance::FirstPeriodPaid { .. } => Some(FirstCharge::Paid),
        // A trial is charged at its end, with a consent.
        Issuance::KeyOnly if sub.status == SubscriptionStatus::Trialing => None,
        Issuance::KeyOnly if engine.settings.registration.charge_on_signup => {
            Some(first_charge(engine, sub, "signup", budget).await)
        }
        Issuance::KeyOnly | Issuance::Failed => None,
    };
    CallbackOutcome::Active {
        subscription_id: sub.id.to_string(),
        first_charge,
    }
}

/// The new subscription and, when the window took money, its first
/// period's attempt (paid, or waiting for a person).
fn activation(
    reg: &Registration,
    key: &BillingKey,
    issued: &Issuance,
    imp_uid: &str,
    paid_amount: i64,
    refs: &crate::billing::UidKey,
    now: DateTime<Utc>,
) -> (Subscription, Option<ChargeAttempt>) {
    let mut sub = fresh_subscription(reg, key, Anchor::from_instant(now).every(reg.interval), now);
    if let Some(billing) = reg.billing {
        first_period_of(&mut sub, billing, now);
    }
    // A trial: period 0 starts at its end, and waits for the consent.
    if let Some(terms) = reg.trial {
        let (anchor, ends_at) = trials::trial_end(terms.days, now);
        sub.anchor = anchor.every(reg.interval);
        sub.next_charge_at = ends_at;
        sub.status = SubscriptionStatus::Pending
            .apply(Event::TrialStarted)
            .unwrap_or(SubscriptionStatus::Trialing);
        // A sign-up completed long after its consent (the sweep, a window
        // left open past midnight) may leave it more than 30 days before
        // the end: then it does not count, and is asked for again.
        let consent = reg.consent.clone().filter(|c| {
            let counts = trials::counts(c, ends_at);
            if !counts {
                warn!(subscription_id = %reg.subscription_id, "the sign-up's consent is more than 30 days before the trial's end; it will be asked for again");
            }
            counts
        });
        sub.trial = Some(trials::Trial {
            terms,
            ends_at,
            extended: false,
            consent,
        });
    }
    // A coupon redeemed with the sign-up covers its periods from the first
    // one charged; its end was shown in the window (decision 78).
    sub.discount = reg.coupon.as_ref().map(|c| {
        crate::billing::coupons::Discount::at_signup(c, &sub.anchor, sub.period_index, now)
    });
    let anchor = sub.anchor;
    let attempt = |state, amount, paid_at, reason: Option<&str>| ChargeAttempt {
        subscription_id: reg.subscription_id.clone(),
        period: anchor.period_id(0),
        attempt: 1,
        merchant_uid: reg.merchant_uid.clone(),
        key_ref: refs.key_ref(&key.customer_uid),
        amount,
        state,
        claim_token: None,
        lease_until: None,
        sent_at: Some(now),
        sends: 1,
        imp_uid: Some(imp_uid.to_owned()),
        paid_at,
        fail_reason: reason.map(str::to_owned),
        refunded: 0,
        cash_receipt: None,
        refund_cause: None,
        resolution: None,
        retry_at: None,
        decline: None,
        receipt_url: None,
        created_at: now,
        updated_at: now,
        tax_free: 0,
        vat: None,
    };
    let first = match issued {
        Issuance::FirstPeriodPaid { paid_at, .. } => {
            sub.paid_through = Some(anchor.period_id(0));
            sub.period_index = 1;
            sub.next_charge_at = anchor.period_start(1);
            Some(attempt(
                AttemptState::Paid,
                reg.plan.amount,
                Some(*paid_at),
                None,
            ))
        }
        Issuance::Review { reason } => {
            if let Ok(status) = sub.status.apply(Event::FlagReview) {
                sub.review_from = Some(sub.status);
                sub.status = status;
            }
            Some(attempt(
                AttemptState::NeedsReview,
                paid_amount,
                None,
                Some(reason),
            ))
        }
        Issuance::KeyOnly | Issuance::Failed => None,
    };
    (sub, first)
}

/// A billing-day plan's calendar (decision 77): anchored on the billing
/// date on or before today, period 0 the billing period the sign-up falls
/// in, its partial first period free (period 1 due at the billing date),
/// at the full price, or prorated (rounded down; under the smallest
/// amount a plan may charge, free). Signed up on a billing date: an
/// ordinary period 0 from today.
fn first_period_of(
    sub: &mut Subscription,
    billing: crate::billing::BillingDay,
    now: DateTime<Utc>,
) {
    use crate::billing::FirstPeriod;
    let today = now.with_timezone(&crate::billing::BILLING_TZ).date_naive();
    let Some((anchor, days, of)) =
        crate::billing::calendar::aligned(today, billing, sub.anchor.interval)
    else {
        return;
    };
    sub.anchor = anchor;
    let prorated = crate::billing::entities::prorated(sub.plan.amount, days, of);
    match (billing.first, prorated) {
        (FirstPeriod::Full, _) => {}
        (FirstPeriod::Prorated, Some(_)) => {
            sub.partial = Some(crate::billing::entities::PartialPeriod { index: 0, days, of });
        }
        (FirstPeriod::Free, _) | (FirstPeriod::Prorated, None) => {
            sub.period_index = 1;
            sub.next_charge_at = anchor.period_start(1);
        }
    }
}

/// The subscription a verified sign-up starts: active (its key verified),
/// anchored at `now`, period 0 due at once.
fn fresh_subscription(
    reg: &Registration,
    key: &BillingKey,
    anchor: Anchor,
    now: DateTime<Utc>,
) -> Subscription {
    Subscription {
        id: reg.subscription_id.clone(),
        user_id: reg.user_id.clone(),
        customer_uid: key.customer_uid.clone(),
        pg: reg.pg.clone(),
        plan: reg.plan.clone(),
        plan_ref: reg.plan_ref.clone(),
        buyer: reg.buyer.clone(),
        status: SubscriptionStatus::Pending
            .apply(Event::KeyVerified)
            .unwrap_or(SubscriptionStatus::Active),
        anchor,
        period_index: 0,
        attempt: 1,
        next_charge_at: now,
        paid_through: None,
        key: key_info(key, now),
        version: 1,
        created_at: now,
        updated_at: now,
        cancel_at_period_end: false,
        pending_plan: None,
        ended_at: None,
        cancel_reason: None,
        review_from: None,
        last_run: None,
        paid_on: None,
        reanchor_on_payment: false,
        action_reason: None,
        price_change: None,
        pause: None,
        partial: None,
        discount: None,
        notice: None,
        trial: None,
    }
}

/// The first charge of a new subscription (or of one retried with a new
/// card), if there is time for it; otherwise the next scheduled run charges
/// the (active, due) subscription.
pub(super) async fn first_charge<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    why: &str,
    budget: Budget,
) -> FirstCharge {
    if !budget.allows(engine.settings.gateway_timeout, CALLBACK_RESERVE) {
        info!("no time left for the first charge; the scheduled run charges it");
        return FirstCharge::Pending;
    }
    let run = BillingRun {
        billing_time: engine.now(),
        run_id: format!("{why}-{}", sub.id),
    };
    match budget
        .run(
            CALLBACK_RESERVE,
            // Boxed: the charge's future is large, and it sits under every
            // path of a sign-up (a debug build overflowed the stack).
            Box::pin(charging::charge_one(engine, &sub.id, &run)),
        )
        .await
    {
        Some(Ok(Outcome::Charged { .. }))
        | Some(Ok(Outcome::Reconciled {
            fact: Fact::Paid { .. },
        })) => FirstCharge::Paid,
        Some(Ok(Outcome::Declined { .. } | Outcome::Rejected { .. })) => FirstCharge::Declined,
        Some(Ok(other)) => {
            info!(?other, "charge left to the scheduled run");
            FirstCharge::Pending
        }
        Some(Err(e)) => {
            warn!(error = %e, "charge failed; the scheduled run will retry");
            FirstCharge::Pending
        }
        None => {
            warn!("charge cut short by the deadline; the scheduled run settles it");
            FirstCharge::Pending
        }
    }
}
