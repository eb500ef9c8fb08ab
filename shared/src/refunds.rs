//! Refunds through the gateway, each request carried out at most once.
//!
//! A refund request is written beside its attempt before the gateway hears
//! of it (a [`RefundIntent`] under the request's idempotency key), with the
//! amount and the gateway's checksum (what was left to refund when it was
//! asked). A retry with the same key, after a crash or a lost answer,
//! resumes that request: it sends the same refund with the same checksum,
//! which the gateway refuses once the first one went through, and then the
//! payment's refunded total tells that it did. It never recomputes the
//! checksum from a newer view, which is how a retry used to refund twice
//! (defect D3). The outcome, the attempt's refunded total and the audit
//! entry are written in one transaction.

use tracing::{error, info, warn};

use crate::billing::{AttemptState, AuditEntry, ChargeAttempt, PaymentRecord};
use crate::engine::Engine;
use crate::gateway::{GatewayError, PaymentGateway, RefundRequest, RejectionKind};
use crate::ledger::{Ledger, LedgerError, RefundIntent, RefundState};

/// What is asked: an amount (all that is left when `None`) and why.
#[derive(Debug, Clone, Copy)]
pub struct RefundAsk<'a> {
    /// The request's idempotency key.
    pub key: &'a str,
    pub amount: Option<i64>,
    pub reason: &'a str,
    pub cause: crate::billing::RefundCause,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    #[error("{0}")]
    NothingToRefund(String),
    #[error("{asked} KRW is more than the {left} KRW left to refund")]
    TooMuch { asked: i64, left: i64 },
    #[error("amount must be a positive whole KRW amount")]
    BadAmount,
    /// The key was used for a refund of another amount or reason.
    #[error("this Idempotency-Key was used for a different refund")]
    KeyReused,
    /// The gateway refused it; nothing moved. It shows `refunded` in all.
    #[error(
        "the gateway refused the refund ({message}); it shows {refunded} KRW refunded. Nothing was refunded now."
    )]
    Refused { message: String, refunded: i64 },
    /// The gateway's answer is unknown: the refund may have happened. Ask
    /// again with the same key (never a new one).
    #[error("the refund's outcome is not known yet ({0}); ask again with the same Idempotency-Key")]
    Unclear(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Refunds `attempt`'s payment as `ask` says, at most once per key.
/// `audit` writes who asked, with the refund's outcome.
pub async fn refund<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    ask: RefundAsk<'_>,
    audit: impl FnOnce(&RefundIntent) -> Option<AuditEntry>,
) -> Result<RefundIntent, RefundError> {
    let intent = intent_for(engine, attempt, ask).await?;
    match intent.state {
        RefundState::Done => return Ok(intent),
        RefundState::Refused => {
            return Err(RefundError::Refused {
                message: "refused when first asked".into(),
                refunded: intent.refunded_total.unwrap_or(attempt.refunded),
            });
        }
        RefundState::Requested => {}
    }
    let request = RefundRequest {
        imp_uid: intent.imp_uid.clone(),
        merchant_uid: intent.merchant_uid.clone(),
        amount: Some(intent.amount),
        checksum: Some(intent.checksum),
        // Pro rata of what was refunded before this intent (decision 73),
        // so a retry under the same key sends the same parts.
        // Only of a paid attempt: a payment waiting for a person may not be
        // the charge its attempt describes (another amount), so its split is
        // the PG's to apply.
        tax_free: (attempt.tax_free > 0 && attempt.state == AttemptState::Paid).then(|| {
            attempt
                .tax()
                .refund(attempt.amount - intent.checksum, intent.amount)
                .tax_free
        }),
        reason: intent.reason.clone(),
    };
    let shown = match engine.gateway.refund(&request).await {
        Ok(record) => record,
        Err(GatewayError::Rejected(r))
            if !matches!(r.kind, RejectionKind::NotSent | RejectionKind::Unauthorized) =>
        {
            return refused(engine, attempt, intent, &r.message, audit).await;
        }
        // It never reached the PG, or the PG took no request from us: a
        // retry with the same key is safe and nobody needs to look.
        Err(e @ GatewayError::Rejected(_)) => {
            warn!(merchant_uid = %attempt.merchant_uid, error = %e, "refund not sent; the same key resumes it");
            return Err(RefundError::Unclear(e.to_string()));
        }
        Err(e @ GatewayError::Ambiguous(_)) => {
            let why = format!("refund outcome unknown: {e}");
            return Err(unclear(engine, attempt, &intent, why).await);
        }
    };
    finish(
        engine,
        attempt,
        intent,
        RefundState::Done,
        shown.cancelled_amount,
        audit,
    )
    .await
}

/// The request's intent: the one kept under its key, or a new one.
async fn intent_for<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    ask: RefundAsk<'_>,
) -> Result<RefundIntent, RefundError> {
    if let Some(kept) = engine.ledger.get_refund(attempt, ask.key).await? {
        let same = ask.amount.is_none_or(|a| a == kept.amount) && ask.reason == kept.reason;
        return if same {
            Ok(kept)
        } else {
            Err(RefundError::KeyReused)
        };
    }
    let (imp_uid, left) = refundable(engine, attempt).await?;
    let amount = ask.amount.unwrap_or(left);
    if amount <= 0 {
        return Err(if left == 0 {
            RefundError::NothingToRefund("nothing is left to refund".into())
        } else {
            RefundError::BadAmount
        });
    }
    if amount > left {
        return Err(RefundError::TooMuch {
            asked: amount,
            left,
        });
    }
    let now = engine.now();
    let fresh = RefundIntent {
        key: ask.key.to_owned(),
        merchant_uid: attempt.merchant_uid.clone(),
        imp_uid,
        amount,
        checksum: left,
        reason: ask.reason.to_owned(),
        cause: ask.cause,
        state: RefundState::Requested,
        refunded_total: None,
        review_reason: None,
        created_at: now,
        updated_at: now,
    };
    // A concurrent request with the same key may have written first: its
    // intent is the one.
    Ok(engine.ledger.begin_refund(attempt, &fresh).await?)
}

/// The payment a refund of `attempt` is for, and what is left of it to
/// refund. A paid attempt: its recorded payment and our view of it (the
/// checksum catches a stale view). One waiting for a person: the payment
/// the gateway holds under its `merchant_uid` (a late payment, an odd
/// amount; not necessarily the one recorded on the attempt), as it shows it.
async fn refundable<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
) -> Result<(String, i64), RefundError> {
    let nothing = || {
        RefundError::NothingToRefund(format!(
            "the charge is {}: there is no payment to refund",
            attempt.state.as_str()
        ))
    };
    match attempt.state {
        AttemptState::Paid => {
            let imp_uid = attempt.imp_uid.clone().ok_or_else(nothing)?;
            Ok((imp_uid, attempt.amount - attempt.refunded))
        }
        AttemptState::NeedsReview => match engine.gateway.find_payment(&attempt.merchant_uid).await
        {
            Ok(p) if p.merchant_uid == attempt.merchant_uid && p.took_money() => {
                Ok((p.imp_uid.clone(), p.kept()))
            }
            Ok(_) => Err(nothing()),
            Err(e) if e.is_not_found() => Err(nothing()),
            Err(e) => Err(RefundError::Unclear(format!(
                "the gateway could not be read: {e}"
            ))),
        },
        _ => Err(nothing()),
    }
}

/// The gateway refused the refund. Its record tells whether this very
/// request went through before (its answer lost, or the process gone
/// before it was written): then it is done. Otherwise nothing moved.
async fn refused<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    intent: RefundIntent,
    message: &str,
    audit: impl FnOnce(&RefundIntent) -> Option<AuditEntry>,
) -> Result<RefundIntent, RefundError> {
    let shown = match engine.gateway.find_payment(&intent.merchant_uid).await {
        Ok(p) => p,
        Err(e) => {
            let why = format!("refused ({message}), and the payment could not be read: {e}");
            return Err(unclear(engine, attempt, &intent, why).await);
        }
    };
    if went_through(&intent, &shown) {
        info!(merchant_uid = %attempt.merchant_uid, "refund found done at the gateway; recorded once");
        return finish(
            engine,
            attempt,
            intent,
            RefundState::Done,
            shown.cancelled_amount,
            audit,
        )
        .await;
    }
    let refunded = shown.cancelled_amount;
    finish(
        engine,
        attempt,
        intent,
        RefundState::Refused,
        refunded,
        |_| None,
    )
    .await?;
    Err(RefundError::Refused {
        message: message.to_owned(),
        refunded,
    })
}

/// A requested refund whose outcome is not known: never asked again
/// blindly, it goes to the review queue (alarmed on like a flagged charge)
/// until the same key resumes it (`POST /charges/{uid}/refund` with that
/// Idempotency-Key, which sends the same checksum: the PG refuses a second
/// refund, and its record then shows the first).
async fn unclear<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    intent: &RefundIntent,
    why: String,
) -> RefundError {
    match engine
        .ledger
        .flag_refund(attempt, &intent.key, &why, engine.now())
        .await
    {
        Ok(()) => {
            warn!(merchant_uid = %attempt.merchant_uid, reason = %why, "refund outcome unknown; in the review queue until the same key resumes it");
        }
        // Finished meanwhile by a concurrent request with the same key.
        Err(LedgerError::Conflict(_)) => {}
        Err(e) => {
            error!(merchant_uid = %attempt.merchant_uid, reason = %why, error = %e, "refund outcome unknown and not put in the review queue; resume it with the same key");
        }
    }
    RefundError::Unclear(why)
}

/// Whether the payment shows this refund done: what was refunded before it
/// was asked (`amount − checksum`) plus its amount.
fn went_through(intent: &RefundIntent, shown: &PaymentRecord) -> bool {
    shown.imp_uid == intent.imp_uid
        && shown.cancelled_amount >= (shown.amount - intent.checksum) + intent.amount
}

async fn finish<L: Ledger, G>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    intent: RefundIntent,
    state: RefundState,
    refunded_total: i64,
    audit: impl FnOnce(&RefundIntent) -> Option<AuditEntry>,
) -> Result<RefundIntent, RefundError> {
    let done = RefundIntent {
        state,
        refunded_total: Some(refunded_total),
        updated_at: engine.now(),
        ..intent
    };
    let entry = (state == RefundState::Done).then(|| audit(&done)).flatten();
    match engine
        .ledger
        .finish_refund(attempt, &done, entry.as_ref())
        .await
    {
        Ok(()) => {}
        // Finished meanwhile by a concurrent request with the same key.
        Err(LedgerError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if state == RefundState::Done {
        info!(merchant_uid = %attempt.merchant_uid, amount = done.amount, "refunded");
    }
    Ok(done)
}

/// Money the engine gives back by itself (a payment that landed after its
/// subscription was cancelled, where the merchant opted in with
/// `REFUND_AFTER_CANCEL`; a card window that took money): refunded in full
/// through [`refund`] (so the attempt records it) and its review resolved
/// as not paid. Anything that goes wrong leaves it waiting for a person.
pub async fn refund_and_close<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
    reason: &str,
) {
    let key = format!("auto-{}", attempt.merchant_uid);
    let ask = RefundAsk {
        key: &key,
        amount: None,
        reason,
        cause: crate::billing::RefundCause::Automatic,
    };
    let Ok(Some(flagged)) = engine
        .ledger
        .get_attempt(&attempt.subscription_id, &attempt.period, attempt.attempt)
        .await
    else {
        return;
    };
    match refund(engine, &flagged, ask, |_| None).await {
        Ok(done) => {
            info!(merchant_uid = %flagged.merchant_uid, amount = done.amount, %reason, "refunded automatically");
            let note = format!("{} refunded automatically: {reason}", done.imp_uid);
            if let Err(e) = crate::review::resolve(
                engine,
                &flagged.merchant_uid,
                false,
                &note,
                &crate::review::engine_actor(),
            )
            .await
            {
                warn!(merchant_uid = %flagged.merchant_uid, error = %e, "refunded; the review is left for a person to close");
            }
        }
        Err(e) => {
            error!(merchant_uid = %flagged.merchant_uid, error = %e, "needs review: the automatic refund failed");
        }
    }
}
