//! Flow 3: the PG's notifications, decoded by the gateway's adapter
//! (`crate::gateway::notice`). A notice is only a hint: the payment is
//! fetched from the gateway and that record is what counts.

use tracing::{info, warn};

use crate::billing::{
    AttemptState, ChargeAttempt, Fact, Lookup, MerchantUid, PaymentRecord, PeriodId, Subscription,
    SubscriptionId,
};
use crate::charging::RunError;
use crate::charging::settle::{Settled, flag, settle_from_lookup};
use crate::engine::{Budget, Engine};
use crate::gateway::PaymentGateway;
use crate::gateway::notice::{Notice, PaymentNotice};
use crate::ledger::{Guard, Ledger, LedgerError};
use crate::registration::{self, CallbackOutcome, FailureReason, Swept};

/// What a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// An open attempt was settled from the gateway's record.
    Settled(Fact),
    /// A refund seen at the gateway was recorded.
    RefundRecorded { refunded: i64 },
    /// Flagged for a person (a payment on an attempt settled as not paid,
    /// or a record that is not our charge): charges stopped, metric counted.
    NeedsReview(String),
    /// A pending sign-up was completed from this notice.
    SignupCompleted,
    /// Already known: nothing changed.
    Duplicate,
    /// Not ours, forged, or nothing to do: acknowledged, no state.
    Ignored(&'static str),
}

/// The webhook could not be recorded; a re-send may help (answer 5xx).
#[derive(Debug, thiserror::Error)]
#[error("could not record the notification: {0}")]
pub struct RetryLater(pub String);

impl From<RunError> for RetryLater {
    fn from(e: RunError) -> Self {
        Self(e.to_string())
    }
}

impl From<LedgerError> for RetryLater {
    fn from(e: LedgerError) -> Self {
        Self(e.to_string())
    }
}

/// Handles one notice: a payment notice re-fetches the payment and records
/// what it proves (only money settles an attempt here: a webhook never
/// holds a claim; anything else is left to the run that does); an issued
/// key completes the sign-up it names; anything else is acknowledged.
pub async fn handle<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    notice: &Notice,
) -> Result<Handled, RetryLater> {
    match notice {
        Notice::Payment(n) => payment_notice(engine, n).await,
        Notice::KeyIssued { billing_key } => {
            let swept =
                registration::complete_from_key(engine, billing_key, Budget::unlimited()).await;
            Ok(match swept {
                Swept::Completed(CallbackOutcome::Failed(FailureReason::NeedsReview)) => {
                    Handled::NeedsReview("sign-up waits for a person".into())
                }
                Swept::Completed(_) => Handled::SignupCompleted,
                Swept::Done => Handled::Duplicate,
                Swept::NothingYet | Swept::Refused(_) => {
                    Handled::Ignored("no sign-up to complete from this key")
                }
                Swept::Unclear => return Err(RetryLater("sign-up could not be checked".into())),
            })
        }
        Notice::Ignored { kind, why } => {
            info!(%kind, why, "notice not acted on");
            Ok(Handled::Ignored(why))
        }
    }
}

#[tracing::instrument(skip(engine, n), fields(payment_ref = %n.payment_ref, payment_id = %n.payment_id, status = %n.status))]
async fn payment_notice<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    n: &PaymentNotice,
) -> Result<Handled, RetryLater> {
    match MerchantUid::parse(&n.payment_id) {
        Some(MerchantUid::Charge {
            subscription,
            period,
            attempt,
        }) => charge_notice(engine, n, &subscription, &period, attempt).await,
        Some(MerchantUid::Issuance { .. }) => signup_notice(engine, n).await,
        None => {
            info!("notice for a payment id that is not ours");
            Ok(Handled::Ignored("unknown merchant_uid"))
        }
    }
}

/// A sign-up's issuance payment: complete the sign-up if the browser has
/// not (the checks are the callback's; a completed one is left alone).
async fn signup_notice<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    n: &PaymentNotice,
) -> Result<Handled, RetryLater> {
    let swept = registration::complete_from_gateway(
        engine,
        &n.payment_id,
        Some(&n.payment_ref),
        Budget::unlimited(),
    )
    .await;
    Ok(match swept {
        Swept::Completed(CallbackOutcome::Failed(FailureReason::NeedsReview)) => {
            Handled::NeedsReview("issuance payment of an unexpected amount".into())
        }
        Swept::Completed(_) => Handled::SignupCompleted,
        Swept::Done => Handled::Duplicate,
        Swept::NothingYet | Swept::Refused(_) => {
            Handled::Ignored("no sign-up to complete from this payment")
        }
        Swept::Unclear => return Err(RetryLater("sign-up could not be checked".into())),
    })
}

/// A charge's payment: settle its open attempt with money, flag money that
/// came after the attempt was settled as not paid, record refunds.
async fn charge_notice<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    n: &PaymentNotice,
    subscription: &SubscriptionId,
    period: &PeriodId,
    attempt: u32,
) -> Result<Handled, RetryLater> {
    // Our own record first: a notice for an attempt we never claimed (or
    // under a uid shaped like ours but not the one stored) costs no call to
    // the gateway (defect X1: unsigned V1 webhooks are anyone's to send).
    let Some(record) = engine
        .ledger
        .get_attempt(subscription, period, attempt)
        .await?
    else {
        warn!("notification for an attempt we never claimed");
        return Ok(Handled::Ignored("no such attempt"));
    };
    if record.merchant_uid != n.payment_id {
        // Shaped like ours, but not the uid we sent: a forgery, never money for the period.
        warn!("merchant_uid is not the one stored for this attempt");
        return Ok(Handled::Ignored("not the merchant_uid of this attempt"));
    }
    let payment = match engine
        .gateway
        .notified_payment(&n.payment_ref, &n.payment_id)
        .await
    {
        Ok(p) => p,
        // The gateway's lookups lag behind a fresh payment: while our
        // attempt is open, a re-send later may find it.
        Err(e) if e.is_not_found() && record.state.is_open() => {
            return Err(RetryLater(
                "the payment is not visible at the gateway yet".into(),
            ));
        }
        Err(e) if e.is_not_found() => {
            warn!("notification names an imp_uid the gateway does not know");
            return Ok(Handled::Ignored("unknown imp_uid"));
        }
        Err(e) => return Err(RetryLater(format!("gateway lookup failed: {e}"))),
    };
    if payment.merchant_uid != n.payment_id {
        warn!(payment_merchant_uid = %payment.merchant_uid, "notification imp_uid and merchant_uid do not match");
        return Ok(Handled::Ignored("imp_uid belongs to another merchant_uid"));
    }
    let Some(sub) = engine.ledger.get_subscription(subscription).await? else {
        warn!("attempt without subscription");
        return Ok(Handled::Ignored("no such subscription"));
    };
    if record.state.is_open() {
        if let Some(handled) = settle_open(engine, &sub, &record, &payment).await? {
            return Ok(handled);
        }
        // Settled meanwhile by the run: a refund in this notice is still recorded below.
    } else if record.state.is_unpaid_settlement()
        // Money kept: a payment refunded in full (what resolving a late
        // payment as not paid asks for first) is no late payment.
        && payment.kept() > 0
        && matches!(
            // The key the attempt charged (the card may have been replaced since).
            Fact::from_record(&payment, &record, &engine.settings.uid_key, engine.now()),
            Ok(Some(Fact::Paid { .. }))
        )
    {
        return late_payment(engine, &record, &payment).await;
    }
    refund_seen(engine, subscription, period, attempt, record, &payment).await
}

/// A notice for an attempt still open settles it from the PG's record
/// (`None`: the run settled it meanwhile; a refund in the notice is still
/// to be recorded).
async fn settle_open<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    record: &ChargeAttempt,
    payment: &PaymentRecord,
) -> Result<Option<Handled>, RetryLater> {
    let found = Lookup::Found(payment.clone());
    match settle_from_lookup(engine, sub, record, &found, Guard::PaidFact).await? {
        Settled::Recorded(fact) => {
            info!(?fact, "open attempt settled from webhook");
            if fact.is_paid() && payment.cancelled_amount > 0 {
                // Paid, then refunded before we heard of it: record both.
                engine
                    .ledger
                    .record_refund(record, payment.cancelled_amount, engine.now(), None)
                    .await?;
            }
            Ok(Some(Handled::Settled(fact)))
        }
        Settled::Review(reason) => Ok(Some(Handled::NeedsReview(reason))),
        // Declined, or nothing to settle on: the claim's holder (or the next run) settles it.
        Settled::ClaimLost | Settled::NothingThere | Settled::Unclear(_) | Settled::Waiting(_) => {
            Ok(Some(Handled::Ignored(
                "left to the run that holds the attempt",
            )))
        }
        Settled::Unauthorized(e) => Err(RetryLater(e.to_string())),
        Settled::AlreadySettled => Ok(None),
    }
}

/// Money for an attempt recorded as not paid: the period may now be paid
/// twice. A person decides; nothing is charged meanwhile.
async fn late_payment<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    record: &ChargeAttempt,
    payment: &PaymentRecord,
) -> Result<Handled, RetryLater> {
    let reason = format!(
        "payment {} arrived after the attempt was settled as {}; refund it or accept it",
        payment.imp_uid,
        record.state.as_str()
    );
    flag(engine, record, None, &reason).await?;
    Ok(Handled::NeedsReview(reason))
}

/// Records a refund the gateway shows for a paid attempt (only ever raising it).
async fn refund_seen<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    subscription: &SubscriptionId,
    period: &PeriodId,
    attempt: u32,
    known: ChargeAttempt,
    payment: &PaymentRecord,
) -> Result<Handled, RetryLater> {
    let record = engine
        .ledger
        .get_attempt(subscription, period, attempt)
        .await?
        .unwrap_or(known);
    if record.state == AttemptState::Paid
        && payment.cancelled_amount > record.refunded
        && engine
            .ledger
            .record_refund(&record, payment.cancelled_amount, engine.now(), None)
            .await?
    {
        info!(refunded = payment.cancelled_amount, "refund recorded");
        return Ok(Handled::RefundRecorded {
            refunded: payment.cancelled_amount,
        });
    }
    Ok(Handled::Duplicate)
}
