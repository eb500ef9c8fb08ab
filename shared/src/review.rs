//! What waits for a person, and a person's way out: resolving a flagged
//! attempt as paid or as not paid, after the gateway's record is read again.
//! Used by the management API and by the engine itself (an automatic
//! refund of a payment that came after a cancel closes its review).

use chrono::{DateTime, Utc};
use tracing::info;

use crate::billing::changes::{self, Comeback, Unresolvable, check_resolution};
use crate::billing::{
    Actor, AttemptResult, AttemptState, AuditEntry, ChargeAttempt, MerchantUid, PaymentRecord,
    Resolution,
};
use crate::engine::Engine;
use crate::gateway::PaymentGateway;
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{Ledger, LedgerError, ReviewDecision};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it (or kept changing).
    #[error("{0}")]
    Conflict(String),
    /// The gateway still processes the payment (defect D1).
    #[error("{0}")]
    StillInProgress(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The engine as an actor (its own audit entries and resolutions).
pub fn engine_actor() -> Actor {
    Actor::named("engine")
}

/// The attempt a merchant uid names: a charge, a sign-up that took money,
/// or a card-replacement window that did (both by their issuance uid).
pub async fn attempt_by_uid<L: Ledger, G>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
) -> Result<Option<ChargeAttempt>, LedgerError> {
    let found = match MerchantUid::parse(merchant_uid) {
        None => return Ok(None),
        Some(MerchantUid::Charge {
            subscription,
            period,
            attempt,
        }) => {
            engine
                .ledger
                .get_attempt(&subscription, &period, attempt)
                .await?
        }
        Some(MerchantUid::Issuance { subscription }) => engine
            .ledger
            .list_attempts(&subscription)
            .await?
            .into_iter()
            .find(|a| a.merchant_uid == merchant_uid),
    };
    Ok(found.filter(|a| a.merchant_uid == merchant_uid))
}

/// What a resolution did: the attempt as stored now, and whether its
/// subscription is to be charged now (it is back in access).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub attempt: ChargeAttempt,
    pub charge_now: bool,
}

/// Resolves the flagged attempt `merchant_uid` as paid or not, checked
/// against the gateway's record first. Resolving again the same way
/// changes nothing.
pub async fn resolve<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    as_paid: bool,
    note: &str,
    actor: &Actor,
) -> Result<Resolved, ReviewError> {
    let resolved = retry_on_conflict(3, (), |()| {
        resolve_once(engine, merchant_uid, as_paid, note, actor)
    })
    .await?;
    resolved.ok_or_else(|| {
        ReviewError::Conflict("the charge or its subscription kept changing; try again".into())
    })
}

/// One read-decide-write of [`resolve`].
async fn resolve_once<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    as_paid: bool,
    note: &str,
    actor: &Actor,
) -> Result<Pass<Resolved>, ReviewError> {
    let attempt = attempt_by_uid(engine, merchant_uid)
        .await?
        .ok_or_else(|| ReviewError::NotFound(format!("no charge {merchant_uid:?}")))?;
    if let Some(r) = &attempt.resolution
        && (r.state == AttemptState::Paid) == as_paid
    {
        return Ok(Pass::Done(Resolved {
            attempt,
            charge_now: false,
        }));
    }
    let record = checked_record(engine, merchant_uid, &attempt, as_paid).await?;
    let sub = engine
        .ledger
        .get_subscription(&attempt.subscription_id)
        .await?
        .ok_or_else(|| {
            ReviewError::NotFound(format!("no subscription {}", attempt.subscription_id))
        })?;
    if as_paid {
        others_allow_paid(engine, &attempt).await?;
    }
    let now = engine.now();
    let policy = engine.settings.charging.resume_policy;
    let (back, charge_now) = changes::resolved(&sub, &attempt, as_paid, policy, now)
        .map_err(|e| ReviewError::Conflict(e.0))?;
    let mut result = resolution_result(&attempt, record.as_ref(), as_paid, note, now);
    if as_paid && attempt.cash_receipt.is_none() {
        let cash = record.as_ref().is_some_and(|p| p.cash);
        result.cash_receipt = engine.settings.cash_receipt_for(&sub.buyer, cash, now);
    }
    let resolution = Resolution {
        state: result.state,
        note: note.to_owned(),
        actor: actor.name.clone(),
        at: now,
    };
    let entry = audit_of(engine, &back, &attempt, actor, as_paid, note);
    let decision = ReviewDecision {
        attempt: &attempt,
        result: &result,
        resolution: &resolution,
        next: &back.next,
        audit: &entry,
    };
    match engine.ledger.resolve(&decision).await {
        Ok(()) => {
            info!(merchant_uid, as_paid, "attempt resolved by a person");
            let attempt = attempt_by_uid(engine, merchant_uid)
                .await?
                .unwrap_or(attempt);
            Ok(Pass::Done(Resolved {
                attempt,
                charge_now,
            }))
        }
        Err(LedgerError::Conflict(_)) => Ok(Pass::Again(())),
        Err(e) => Err(ReviewError::from(e)),
    }
}

/// What the PG records under the attempt's merchant uid (`None`: nothing),
/// checked against the person's decision.
async fn checked_record<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    attempt: &ChargeAttempt,
    as_paid: bool,
) -> Result<Option<PaymentRecord>, ReviewError> {
    let record = match engine.gateway.find_payment(merchant_uid).await {
        Ok(p) => Some(p),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(ReviewError::Unavailable(format!("the gateway: {e}"))),
    };
    check_resolution(attempt, record.as_ref(), as_paid).map_err(|e| match e {
        Unresolvable::StillInProgress(m) => ReviewError::StillInProgress(m),
        Unresolvable::NotAllowed(m) => ReviewError::Conflict(m.0),
    })?;
    Ok(record)
}

/// Resolving as paid while another attempt of the period is paid or still
/// being charged would count the period twice.
async fn others_allow_paid<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
) -> Result<(), ReviewError> {
    if attempt.is_window() {
        return Ok(()); // a card window's payment pays no period
    }
    let others = engine
        .ledger
        .list_attempts(&attempt.subscription_id)
        .await?;
    let same_period = |a: &&ChargeAttempt| {
        a.period == attempt.period && a.attempt != attempt.attempt && !a.is_window()
    };
    if let Some(paid) = others
        .iter()
        .filter(same_period)
        .find(|a| a.state == AttemptState::Paid)
    {
        return Err(ReviewError::Conflict(format!(
            "{} already paid period {}: refund one of the two first",
            paid.merchant_uid, attempt.period
        )));
    }
    if let Some(open) = others
        .iter()
        .filter(same_period)
        .find(|a| a.state.is_open())
    {
        return Err(ReviewError::Conflict(format!(
            "{} of period {} is still being charged ({}): resolve after it is settled",
            open.merchant_uid,
            attempt.period,
            open.state.as_str()
        )));
    }
    Ok(())
}

fn audit_of<L, G>(
    engine: &Engine<L, G>,
    back: &Comeback,
    attempt: &ChargeAttempt,
    actor: &Actor,
    as_paid: bool,
    note: &str,
) -> AuditEntry {
    let how = if as_paid { "paid" } else { "failed" };
    let mut detail = format!("{} as {how}: {note}", attempt.merchant_uid);
    if !as_paid && back.next.is_due(engine.now()) {
        detail.push_str(&format!("; {}", back.describe()));
    }
    AuditEntry {
        subscription_id: attempt.subscription_id.clone(),
        at: engine.clock.now_precise(),
        actor: actor.name.clone(),
        principal: actor.principal.clone(),
        action: "resolve".into(),
        detail,
    }
}

/// The attempt's record once resolved. As paid, it takes what the payment
/// took, which may differ from what was asked (a window that took an odd
/// amount, a mismatched payment accepted: defect C5).
fn resolution_result(
    attempt: &ChargeAttempt,
    record: Option<&PaymentRecord>,
    as_paid: bool,
    note: &str,
    now: DateTime<Utc>,
) -> AttemptResult {
    if as_paid {
        AttemptResult {
            state: AttemptState::Paid,
            amount: record.map(|p| p.amount).filter(|a| *a != attempt.amount),
            imp_uid: record
                .map(|p| p.imp_uid.clone())
                .or_else(|| attempt.imp_uid.clone()),
            paid_at: Some(record.and_then(|p| p.paid_at).unwrap_or(now)),
            fail_reason: None,
            retry_at: None,
            decline: None,
            // What the PG's record says, as a settlement would keep it.
            receipt_url: record.and_then(|p| p.receipt_url.clone()),
            tax: record
                .and_then(|p| crate::billing::TaxSplit::reported(p.amount, p.tax_free, p.vat)),
            cash_receipt: None,
        }
    } else {
        AttemptResult {
            state: AttemptState::Failed,
            amount: None,
            imp_uid: attempt.imp_uid.clone(),
            paid_at: None,
            fail_reason: Some(format!("resolved as not paid: {note}")),
            retry_at: None,
            decline: None,
            receipt_url: None,
            tax: None,
            cash_receipt: None,
        }
    }
}
