//! A new card for an existing subscription (a registration that replaces
//! the key): the key is swapped once verified, the old key deleted, and
//! money a card window took is refunded (card windows take no money).

use std::convert::Infallible;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::activate::{Verified, first_charge, key_info, revisited};
use super::{CallbackOutcome, FailureReason, unavailable};
use crate::billing::FIRST_WINDOW_SLOT;
use crate::billing::changes::{Comeback, key_replaced};
use crate::billing::{
    AttemptState, AuditEntry, ChargeAttempt, Registration, RegistrationStatus, Subscription,
};
use crate::engine::{Budget, Engine};
use crate::gateway::PaymentGateway;
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{KeyReplacement, Ledger, LedgerError};
use crate::refunds::refund_and_close;

/// A new card for an existing subscription: the key is swapped once verified
/// (versioned, audited), the old key deleted at the gateway, and a
/// subscription behind on payment charged again at once.
pub(super) async fn replace_key<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    v: Verified,
    budget: Budget,
) -> CallbackOutcome {
    let v = &v;
    let answer = retry_on_conflict(3, (), |()| async move {
        Ok::<_, Infallible>(replace_once(engine, reg, imp_uid, v, budget).await)
    })
    .await;
    answer
        .unwrap_or_else(|never| match never {})
        .unwrap_or(CallbackOutcome::Failed(FailureReason::Unavailable))
}

/// One read-decide-write of [`replace_key`]: `Again` when the subscription
/// changed under the write.
async fn replace_once<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    v: &Verified,
    budget: Budget,
) -> Pass<CallbackOutcome> {
    let now = engine.now();
    let (sub, current) = match read_current(engine, reg).await {
        Ok(read) => read,
        Err(outcome) => return Pass::Done(outcome),
    };
    let (back, charge_now) = match key_replaced(
        &sub,
        &v.key.customer_uid,
        key_info(&v.key, now),
        current.as_ref(),
        engine.settings.charging.resume_policy,
        now,
    ) {
        Ok(changed) => changed,
        Err(why) => {
            return Pass::Done(
                refuse_card(engine, reg, &sub, imp_uid, v, &why.to_string(), now).await,
            );
        }
    };
    let audit = key_audit(engine, &sub, v, &back, charge_now);
    let window = if v.paid > 0 {
        match window_payment(engine, reg, &sub, v, imp_uid, now).await {
            Ok(w) => Some(w),
            Err(e) => return Pass::Done(unavailable("store", &e)),
        }
    } else {
        None
    };
    let replacement = KeyReplacement {
        reg,
        next: &back.next,
        imp_uid,
        audit: &audit,
        window_payment: window.as_ref(),
    };
    match engine.ledger.replace_key(&replacement).await {
        Ok(()) => {}
        Err(LedgerError::Conflict(_)) => return after_lost_replacement(engine, reg, imp_uid).await,
        Err(e) => return Pass::Done(unavailable("store", &e)),
    }
    info!(subscription_id = %sub.id, "billing key replaced");
    if sub.customer_uid != v.key.customer_uid
        && let Err(e) = engine.gateway.delete_billing_key(&sub.customer_uid).await
        && !e.is_not_found()
    {
        warn!(error = %e, "the old billing key could not be deleted at the gateway");
    }
    if let Some(slot) = &window {
        refund_and_close(engine, slot, WINDOWS_TAKE_NO_MONEY).await;
    }
    let first_charge = if charge_now {
        Some(first_charge(engine, &back.next, "card", budget).await)
    } else {
        None
    };
    Pass::Done(CallbackOutcome::Active {
        subscription_id: sub.id.to_string(),
        first_charge,
    })
}

/// The subscription a new card is for, and its current period's attempt.
async fn read_current<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
) -> Result<(Subscription, Option<ChargeAttempt>), CallbackOutcome> {
    let sub = match engine.ledger.get_subscription(&reg.subscription_id).await {
        Ok(Some(sub)) => sub,
        Ok(None) => return Err(CallbackOutcome::Failed(FailureReason::UnknownRegistration)),
        Err(e) => return Err(unavailable("store", &e)),
    };
    match engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), sub.attempt)
        .await
    {
        Ok(current) => Ok((sub, current)),
        Err(e) => Err(unavailable("store", &e)),
    }
}

/// The audit entry of a new card: the PG, the masked card number, and
/// whether the subscription is charged again at once.
fn key_audit<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    v: &Verified,
    back: &Comeback,
    charge_now: bool,
) -> AuditEntry {
    let mut detail = format!(
        "billing key replaced ({} {}); charged again now: {charge_now}",
        v.key.pg_provider,
        v.key.card_number.as_deref().unwrap_or("no card number")
    );
    if charge_now {
        detail.push_str(&format!(" ({})", back.describe()));
    }
    AuditEntry {
        subscription_id: sub.id.clone(),
        at: engine.clock.now_precise(),
        actor: "customer (payment window)".into(),
        principal: None,
        action: "payment_method".into(),
        detail,
    }
}

/// The key replacement lost its condition: the registration was completed
/// by another delivery (answer as it did), or the subscription changed
/// (read it again).
async fn after_lost_replacement<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
) -> Pass<CallbackOutcome> {
    match engine.ledger.get_registration(&reg.merchant_uid).await {
        Ok(Some(r)) if r.status != RegistrationStatus::Pending => {
            Pass::Done(revisited(engine, &r, imp_uid).await)
        }
        Ok(_) => Pass::Again(()),
        Err(e) => Pass::Done(unavailable("store", &e)),
    }
}

/// A new card for a subscription that takes none (it ended meanwhile, or
/// waits for a person): the registration is refused and the new key
/// deleted. Money the window took anyway is recorded with the refusal, for
/// a person, and refunded at once (defect found by the simulation: it was
/// neither recorded nor refunded).
async fn refuse_card<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    sub: &Subscription,
    imp_uid: &str,
    v: &Verified,
    why: &str,
    now: DateTime<Utc>,
) -> CallbackOutcome {
    info!(%why, "a new card for a subscription that takes none");
    let window = if v.paid > 0 {
        match window_payment(engine, reg, sub, v, imp_uid, now).await {
            Ok(w) => Some(w),
            Err(e) => return unavailable("store", &e),
        }
    } else {
        None
    };
    match engine
        .ledger
        .refuse_registration(reg, now, window.as_ref())
        .await
    {
        Ok(()) => {}
        Err(LedgerError::Conflict(_)) => {
            // Settled meanwhile by another delivery of this callback.
            return match engine.ledger.get_registration(&reg.merchant_uid).await {
                Ok(Some(r)) => revisited(engine, &r, imp_uid).await,
                Ok(None) => CallbackOutcome::Failed(FailureReason::UnknownRegistration),
                Err(e) => unavailable("store", &e),
            };
        }
        Err(e) => return unavailable("store", &e),
    }
    if let Err(e) = engine.gateway.delete_billing_key(&v.key.customer_uid).await {
        warn!(error = %e, "could not delete the refused card's billing key");
    }
    if let Some(slot) = &window {
        refund_and_close(engine, slot, WINDOWS_TAKE_NO_MONEY).await;
    }
    CallbackOutcome::Failed(FailureReason::SubscriptionEnded)
}

/// The record of a card window that took money (it is opened for 0 KRW):
/// a window slot of the current period (the first free one from
/// [`FIRST_WINDOW_SLOT`]), waiting for a person until its refund is
/// confirmed.
async fn window_payment<L: Ledger, G>(
    engine: &Engine<L, G>,
    reg: &Registration,
    sub: &Subscription,
    v: &Verified,
    imp_uid: &str,
    now: DateTime<Utc>,
) -> Result<ChargeAttempt, LedgerError> {
    let period = sub.current_period();
    let slot = engine
        .ledger
        .list_attempts(&sub.id)
        .await?
        .iter()
        .filter(|a| a.period == period && a.is_window())
        .map(|a| a.attempt + 1)
        .max()
        .unwrap_or(FIRST_WINDOW_SLOT);
    Ok(ChargeAttempt {
        subscription_id: sub.id.clone(),
        period,
        attempt: slot,
        merchant_uid: reg.merchant_uid.clone(),
        key_ref: engine.settings.uid_key.key_ref(&v.key.customer_uid),
        amount: v.paid,
        state: AttemptState::NeedsReview,
        claim_token: None,
        lease_until: None,
        sent_at: Some(now),
        sends: 1,
        imp_uid: Some(imp_uid.to_owned()),
        paid_at: Some(now),
        fail_reason: Some(format!(
            "card replacement window {imp_uid} took {} KRW; refund it",
            v.paid
        )),
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
    })
}

/// Why a card window's money is refunded at once: it is opened for 0 KRW.
const WINDOWS_TAKE_NO_MONEY: &str = "card windows take no money";
