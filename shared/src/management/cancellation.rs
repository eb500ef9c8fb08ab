//! A mid-term cancel's refund (issue 23 §4): the quote a customer is shown
//! beside the end-of-period cancel. `GET /subscriptions/{id}/cancellation-quote`.
//! The quote's id binds what it says (the subscription's version, the
//! charge, what was refunded of it, the amount, the rule, until when) under
//! the deployment's uid key, so the cancel that takes it up can tell a
//! quote still true from a stale or altered one.

use serde::Serialize;
use tracing::{info, warn};

use super::subscriptions::{CancelInput, Cancelled};
use super::views::rfc3339;
use super::{Actor, ManageError, audit, current_attempt, load, parse_id, text};
use crate::billing::quotes::{self, NoQuote, Quote, Terms};
use crate::billing::{AttemptState, ChargeAttempt, Subscription};
use crate::engine::Engine;
use crate::gateway::PaymentGateway;
use crate::ledger::Ledger;
use crate::refunds::{self, RefundAsk, RefundError};

/// The quote as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuoteView {
    pub quote_id: String,
    pub subscription_id: String,
    /// The paid charge it refunds.
    pub merchant_uid: String,
    pub paid_amount: i64,
    pub already_refunded: i64,
    /// The period in force: its first and last day, in Seoul.
    pub period: String,
    pub period_first_day: String,
    pub period_last_day: String,
    pub days_total: u32,
    pub days_used: u32,
    pub rule: &'static str,
    /// Whole KRW.
    pub refund_amount: i64,
    pub valid_until: String,
}

impl From<NoQuote> for ManageError {
    fn from(e: NoQuote) -> Self {
        Self::Conflict(e.to_string())
    }
}

/// The id of `q` for `sub`: `q`, the expiry (UNIX seconds), and a tag over
/// everything the quote says.
pub(super) fn quote_id<L, G>(engine: &Engine<L, G>, sub: &Subscription, q: &Quote) -> String {
    let until = q.valid_until.timestamp();
    let text = format!(
        "{}|{}|{}|{}|{}|{}|{until}",
        sub.id,
        sub.version,
        q.merchant_uid,
        q.already_refunded,
        q.refund,
        q.rule.as_str()
    );
    let tag = engine.settings.uid_key.tag_of("cancel-quote", &text);
    format!("q{until}{tag}")
}

/// The quote for cancelling `sub` now, from its paid charge of the period
/// in force.
pub(super) async fn quote_now<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    unused: bool,
) -> Result<Quote, ManageError> {
    let attempts = engine.ledger.list_attempts(&sub.id).await?;
    let paid_for = sub.paid_through.as_ref();
    let charge = attempts
        .iter()
        .rev()
        .find(|a| Some(&a.period) == paid_for && a.state == crate::billing::AttemptState::Paid);
    let terms = Terms {
        unused,
        fee_percent: engine.settings.charging.cancel_fee_percent,
    };
    Ok(quotes::quote(sub, charge, terms, engine.now())?)
}

pub(super) fn view(sub: &Subscription, q: &Quote, quote_id: String) -> QuoteView {
    QuoteView {
        quote_id,
        subscription_id: sub.id.to_string(),
        merchant_uid: q.merchant_uid.clone(),
        paid_amount: q.paid,
        already_refunded: q.already_refunded,
        period: q.period.to_string(),
        period_first_day: q.period_start.to_string(),
        period_last_day: q.period_end.pred_opt().unwrap_or(q.period_end).to_string(),
        days_total: q.days_total,
        days_used: q.days_used,
        rule: q.rule.as_str(),
        refund_amount: q.refund,
        valid_until: rfc3339(q.valid_until),
    }
}

/// `GET /subscriptions/{id}/cancellation-quote[?unused=true]`: what
/// cancelling now would refund. 409 when nothing paid covers today or the
/// subscription has ended.
pub async fn cancellation_quote<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    unused: bool,
) -> Result<QuoteView, ManageError> {
    let sub = load(engine, &parse_id(id)?).await?;
    let q = quote_now(engine, &sub, unused).await?;
    let id = quote_id(engine, &sub, &q);
    Ok(view(&sub, &q, id))
}

/// What became of a mid-term cancel's refund.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotedRefund {
    pub merchant_uid: String,
    /// Whole KRW.
    pub amount: i64,
    /// `done`; `nothing_to_refund` (the quote was 0); `refused` (the PG
    /// refused it: nothing moved, refund by hand); `unclear` (the PG's answer
    /// is unknown: `POST /charges/{merchant_uid}/refund` with
    /// `Idempotency-Key: {refund_key}` and the same `amount` and `reason`
    /// resumes it, safely: the checksum and a lookup keep it to one refund).
    pub state: &'static str,
    /// The refund's own key (`cancel-` and the request's key).
    pub refund_key: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The key the quoted refund is kept under, derived from the cancel's:
/// the API's keys name one request each, so the refund needs its own to be
/// resumed through `POST /charges/{merchant_uid}/refund`. At most 128
/// characters, as every Idempotency-Key.
fn refund_key(key: &str) -> String {
    if key.len() <= 121 {
        return format!("cancel-{key}");
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("cancel-{hex}")
}

/// The expiry a quote id names, if it is one of ours in shape.
fn quote_expiry(quote_id: &str) -> Option<i64> {
    let digits = quote_id.strip_prefix('q')?;
    let until = digits.get(..digits.len().checked_sub(16)?)?;
    until.parse().ok()
}

/// Checks that `quote_id` still says what the quote says now.
fn still_true<L, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    now: &Quote,
    quote_id: &str,
) -> Result<(), ManageError> {
    let stale = |why: &str| ManageError::StaleQuote {
        message: format!("{why}; here is a fresh quote"),
        fresh: Box::new(view(sub, now, self::quote_id(engine, sub, now))),
    };
    let Some(until) = quote_expiry(quote_id) else {
        return Err(stale("not a quote id of this deployment"));
    };
    if until <= now.at.timestamp() {
        return Err(stale("the quote has expired"));
    }
    let mut asked = now.clone();
    asked.valid_until = chrono::DateTime::from_timestamp(until, 0).unwrap_or(now.valid_until);
    if self::quote_id(engine, sub, &asked) != quote_id {
        return Err(stale(
            "the quote no longer holds (a refund, a payment or a change since)",
        ));
    }
    Ok(())
}

/// `POST /subscriptions/{id}/cancel {"at": "now", "refund": "quote",
/// "quote_id": …}` with an Idempotency-Key (`key`): refunds what the quote
/// said through the refund path (at most once per key), then cancels now.
/// The refund comes first and is resumable: a retry with the same key
/// after a crash finds the refund begun under it, finishes it, and cancels.
/// A refund the PG refused or whose answer was lost leaves the cancel
/// standing and says so (`refund.state`). 409 `stale_quote` (with a fresh
/// quote) when the quote no longer holds; 409 `charge_in_flight` while a
/// charge is out.
pub async fn cancel_quoted<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &str,
    input: CancelInput,
    key: &str,
    actor: &Actor,
) -> Result<Cancelled, ManageError> {
    let (quote_id, reason) = quoted_input(&input)?;
    let sub = load(engine, &parse_id(id)?).await?;
    if let Some(open) = current_attempt(engine, &sub).await?
        && open.state.is_open()
    {
        return Err(ManageError::ChargeInFlight(format!(
            "the charge {} is in flight; ask for a quote again once it is settled",
            open.merchant_uid
        )));
    }
    let charge = paid_charge(engine, &sub).await?;
    let key = refund_key(key);
    let begun = match &charge {
        Some(c) => engine.ledger.get_refund(c, &key).await?,
        None => None,
    };
    let (charge, amount) = match (charge, begun) {
        // A retry: the quote was checked when this refund began.
        (Some(c), Some(intent)) => (c, intent.amount),
        (charge, None) => {
            let q = quote_now(engine, &sub, input.unused.unwrap_or(false)).await?;
            still_true(engine, &sub, &q, &quote_id)?;
            let c =
                charge.ok_or_else(|| ManageError::Internal("the quoted charge vanished".into()))?;
            (c, q.refund)
        }
        (None, Some(_)) => unreachable!("a refund is found only for a charge"),
    };
    let refund = quoted_refund(engine, &sub, &charge, amount, &key, &reason, actor).await?;
    let now = CancelInput {
        at: "now".into(),
        reason: reason.clone(),
        refund: None,
        quote_id: None,
        unused: None,
    };
    let cancelled = super::cancel(engine, id, now, actor).await?;
    info!(subscription_id = %sub.id, refund = refund.state, amount, "cancelled mid-term with a quoted refund");
    Ok(Cancelled {
        refund: Some(refund),
        ..cancelled
    })
}

fn quoted_input(input: &CancelInput) -> Result<(String, String), ManageError> {
    if input.refund.as_deref() != Some("quote") {
        return Err(ManageError::Invalid(
            "refund must be \"quote\" (with the quote's quote_id)".into(),
        ));
    }
    if input.at != "now" {
        return Err(ManageError::Invalid(
            "a refund comes with a cancel now (at: \"now\"); a period-end cancel refunds nothing"
                .into(),
        ));
    }
    let quote_id = input
        .quote_id
        .clone()
        .ok_or_else(|| ManageError::Invalid("quote_id is required with refund: quote".into()))?;
    Ok((quote_id, text("reason", &input.reason, 200)?))
}

/// The paid charge of the period `sub` has paid through.
async fn paid_charge<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Option<ChargeAttempt>, ManageError> {
    let attempts = engine.ledger.list_attempts(&sub.id).await?;
    Ok(attempts
        .into_iter()
        .rev()
        .find(|a| Some(&a.period) == sub.paid_through.as_ref() && a.state == AttemptState::Paid))
}

/// Refunds `amount` of `charge` under `key` (nothing when 0).
async fn quoted_refund<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    charge: &ChargeAttempt,
    amount: i64,
    key: &str,
    reason: &str,
    actor: &Actor,
) -> Result<QuotedRefund, ManageError> {
    let refund_reason = format!("prorated_cancel: {reason}");
    let outcome = |state: &'static str, message: Option<String>| QuotedRefund {
        merchant_uid: charge.merchant_uid.clone(),
        amount,
        state,
        refund_key: key.to_owned(),
        reason: refund_reason.clone(),
        message,
    };
    if amount == 0 {
        return Ok(outcome("nothing_to_refund", None));
    }
    let ask = RefundAsk {
        key,
        amount: Some(amount),
        reason: &refund_reason,
        cause: crate::billing::RefundCause::ProratedCancel,
    };
    let result = refunds::refund(engine, charge, ask, |done| {
        Some(audit(
            engine,
            sub,
            actor,
            "refund",
            format!(
                "{} KRW of {} ({}): {refund_reason}",
                done.amount, charge.merchant_uid, done.imp_uid
            ),
        ))
    })
    .await;
    match result {
        Ok(_) => Ok(outcome("done", None)),
        Err(e @ RefundError::Refused { .. }) => {
            // The customer is owed it: a person sees to it from the review
            // queue (never a blind retry), and dismisses it once done.
            warn!(merchant_uid = %charge.merchant_uid, error = %e, "mid-term cancel: the refund was refused; cancelling all the same, the refund waits in the review queue");
            let why = format!("refused by the PG after a mid-term cancel: {e}");
            let queued = engine
                .ledger
                .flag_refund(charge, key, &why, engine.now())
                .await;
            if let Err(q) = &queued {
                tracing::error!(merchant_uid = %charge.merchant_uid, error = %q, "the refused refund could not be put in the review queue");
            }
            let message = match queued {
                Ok(()) => format!("{e} It waits in the review queue (GET /charges/needs-review)."),
                Err(_) => e.to_string(),
            };
            Ok(outcome("refused", Some(message)))
        }
        Err(e @ RefundError::Unclear(_)) => {
            tracing::error!(merchant_uid = %charge.merchant_uid, error = %e, "mid-term cancel: the refund's outcome is unknown; resume it with the same key");
            Ok(outcome("unclear", Some(e.to_string())))
        }
        // Something changed between the quote's check and the refund.
        Err(e @ (RefundError::TooMuch { .. } | RefundError::NothingToRefund(_))) => {
            Err(ManageError::Conflict(format!("{e}; ask for a quote again")))
        }
        Err(e) => Err(e.into()),
    }
}
