//! Renewal notices (issue 23 §1, decision 66): the run's work on a
//! subscription whose notice is due. The billing key is looked up at the
//! PG first, so a key the PG no longer has is told days before the charge
//! (`payment_method.action_required`) instead of after it fails; then the
//! notice is recorded on the subscription with a version-checked write.
//! The event is derived from that write (`events::of_subscription`), so a
//! notice that was not recorded was not announced, and one recorded is
//! announced once per period, with the same id on every replay.
//!
//! Delivery (알림톡, SMS, e-mail) is the merchant's: the event carries
//! what a message needs, and no buyer data.

use tracing::{info, warn};

use crate::billing::Subscription;
use crate::billing::notices::{self, KeyCheck, NoticeKind};
use crate::billing::price_changes;
use crate::charging::RunError;
use crate::engine::Engine;
use crate::gateway::PaymentGateway;
use crate::ledger::{Ledger, LedgerError, LockChange, SubscriptionChange};

/// What became of a subscription whose notice was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noticed {
    /// Recorded (and so announced) as this kind.
    Sent(NoticeKind),
    /// A price increase's consent request was recorded (and so announced:
    /// `subscription.price_change_requested`, decision 69).
    ConsentRequested,
    /// The subscription changed after it was read (a charge, a cancel, a
    /// plan change): nothing recorded; the next run looks again.
    Changed,
}

/// Records that the consent request of `sub`'s price increase went out
/// (read by the caller, whose run found it due). The event is derived from
/// the write, once: its id is the subscription's and the change's period.
pub(crate) async fn ask_consent<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Noticed, RunError> {
    let next = price_changes::asked(sub, engine.now());
    let change = SubscriptionChange {
        next: &next,
        audit: None,
        lock: LockChange::Keep,
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => {
            if let Some(c) = &next.price_change {
                info!(
                    subscription_id = %sub.id,
                    effective = %c.effective,
                    amount = c.plan.amount,
                    from_amount = c.from_amount,
                    "price increase: consent requested"
                );
            }
            Ok(Noticed::ConsentRequested)
        }
        Err(LedgerError::Conflict(_)) => {
            info!(subscription_id = %sub.id, "subscription changed before its consent request; the next run looks again");
            Ok(Noticed::Changed)
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks the key at the PG and records the notice of `sub`'s next period
/// (read by the caller, whose run found the notice due).
pub(crate) async fn send<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Noticed, RunError> {
    let check = match engine.gateway.billing_key(&sub.customer_uid).await {
        Ok(_) => KeyCheck::OnFile,
        Err(e) if e.is_not_found() => KeyCheck::Missing,
        Err(e) if e.is_unauthorized() => return Err(RunError::Unauthorized(e)),
        Err(e) => {
            // The notice is owed whatever the PG says; the check is a courtesy.
            warn!(subscription_id = %sub.id, error = e.label(), "billing-key check failed; the renewal notice goes out unchecked");
            KeyCheck::Unknown
        }
    };
    let next = notices::noticed(sub, check, engine.now());
    let change = SubscriptionChange {
        next: &next,
        audit: None,
        lock: LockChange::Keep,
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => {
            let kind = next
                .notice
                .as_ref()
                .map_or(NoticeKind::RenewalUpcoming, |n| n.kind);
            info!(
                subscription_id = %sub.id,
                period = %sub.current_period(),
                kind = kind.as_str(),
                charge_at = %sub.next_charge_at.to_rfc3339(),
                "renewal notice recorded"
            );
            Ok(Noticed::Sent(kind))
        }
        Err(LedgerError::Conflict(_)) => {
            info!(subscription_id = %sub.id, "subscription changed before its notice; the next run looks again");
            Ok(Noticed::Changed)
        }
        Err(e) => Err(e.into()),
    }
}
