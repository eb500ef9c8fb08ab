//! A mid-term cancel's refund (issue 23 §4): the quote a customer is shown
//! beside the end-of-period cancel. `GET /subscriptions/{id}/cancellation-quote`.
//! The quote's id binds what it says (the subscription's version, the
//! charge, what was refunded of it, the amount, the rule, until when) under
//! the deployment's uid key, so the cancel that takes it up can tell a
//! quote still true from a stale or altered one.

use serde::Serialize;

use super::views::rfc3339;
use super::{ManageError, load, parse_id};
use crate::billing::Subscription;
use crate::billing::quotes::{self, NoQuote, Quote, Terms};
use crate::engine::Engine;
use crate::ledger::Ledger;

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

fn view(sub: &Subscription, q: &Quote, quote_id: String) -> QuoteView {
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
