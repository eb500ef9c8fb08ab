//! The management API's charge routes: refunds, and what waits for a person.

use serde::{Deserialize, Serialize};

use super::subscriptions::charge_now;
use super::views::ChargeView;
use super::{Actor, ManageError, audit, load, text};
use crate::engine::Engine;
use crate::gateway::PaymentGateway;
use crate::ledger::{Cursor, Ledger, LedgerError};
use crate::refunds::{self, RefundAsk};
use crate::review::{self, attempt_by_uid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    /// Whole KRW; all that remains when absent.
    #[serde(default)]
    pub amount: Option<i64>,
    pub reason: String,
}

/// `POST /charges/{merchant_uid}/refund` with an `Idempotency-Key` (`key`):
/// a full or partial refund through the gateway with its checksum, never
/// more than was paid, carried out at most once per key however often it
/// is retried (`crate::refunds`); recorded on the attempt with who and why.
pub async fn refund<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    input: RefundInput,
    key: &str,
    actor: &Actor,
) -> Result<ChargeView, ManageError> {
    let reason = text("reason", &input.reason, 200)?;
    if input.amount.is_some_and(|a| a <= 0) {
        return Err(ManageError::Invalid(
            "amount must be a positive whole KRW amount".into(),
        ));
    }
    let attempt = attempt_by_uid(engine, merchant_uid)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no charge {merchant_uid:?}")))?;
    let sub = load(engine, &attempt.subscription_id).await?;
    let ask = RefundAsk {
        key,
        amount: input.amount,
        reason: &reason,
        cause: crate::billing::RefundCause::Requested,
    };
    refunds::refund(engine, &attempt, ask, |done| {
        Some(audit(
            engine,
            &sub,
            actor,
            "refund",
            format!(
                "{} KRW of {merchant_uid} ({}): {reason}",
                done.amount, done.imp_uid
            ),
        ))
    })
    .await?;
    let stored = attempt_by_uid(engine, merchant_uid)
        .await?
        .unwrap_or(attempt);
    Ok(ChargeView::from(&stored))
}

/// One page of `GET /charges/needs-review`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReviewList {
    pub charges: Vec<ChargeView>,
    /// Refunds asked whose outcome is not known.
    pub refunds: Vec<RefundReview>,
    /// Pass as `?cursor=` for the next page.
    pub next_cursor: Option<String>,
}

/// A refund in the review queue: what was asked, and why its outcome is
/// not known. Resumed by the same request with the same `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefundReview {
    pub merchant_uid: String,
    pub subscription_id: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub reason: String,
    pub review_reason: String,
    pub since: String,
}

/// `GET /charges/needs-review`: the attempts and the refunds waiting for a
/// person, oldest first.
pub async fn needs_review<L: Ledger, G>(
    engine: &Engine<L, G>,
    cursor: Option<&str>,
) -> Result<ReviewList, ManageError> {
    let cursor = cursor.map(Cursor::from_text);
    let page = engine
        .ledger
        .review_page(50, cursor.as_ref())
        .await
        .map_err(|e| match e {
            LedgerError::Fatal(m) if m.contains("cursor") => ManageError::Invalid(m),
            other => other.into(),
        })?;
    let mut charges = Vec::new();
    for (id, period, n) in &page.attempts {
        if let Some(a) = engine.ledger.get_attempt(id, period, *n).await? {
            charges.push(ChargeView::from(&a));
        }
    }
    let mut refunds = Vec::new();
    for (id, merchant_uid, key) in &page.refunds {
        let Some(a) = attempt_by_uid(engine, merchant_uid).await? else {
            continue;
        };
        if let Some(r) = engine.ledger.get_refund(&a, key).await? {
            refunds.push(RefundReview {
                merchant_uid: r.merchant_uid,
                subscription_id: id.as_str().to_owned(),
                idempotency_key: r.key,
                amount: r.amount,
                reason: r.reason,
                review_reason: r.review_reason.unwrap_or_default(),
                since: r
                    .updated_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
        }
    }
    Ok(ReviewList {
        charges,
        refunds,
        next_cursor: page.next.map(|c| c.as_str().to_owned()),
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveInput {
    /// `paid` or `failed`.
    #[serde(rename = "as")]
    pub resolve_as: String,
    pub note: String,
}

/// `POST /charges/{merchant_uid}/resolve`: the operator's way out for an
/// attempt that needs review, re-checked against the gateway first. A
/// subscription back in access is charged at once.
pub async fn resolve<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    input: ResolveInput,
    actor: &Actor,
) -> Result<ChargeView, ManageError> {
    let as_paid = match input.resolve_as.as_str() {
        "paid" => true,
        "failed" => false,
        other => {
            return Err(ManageError::Invalid(format!(
                "as must be \"paid\" or \"failed\", not {other:?}"
            )));
        }
    };
    let note = text("note", &input.note, 500)?;
    let resolved = review::resolve(engine, merchant_uid, as_paid, &note, actor).await?;
    if resolved.charge_now {
        let id = resolved.attempt.subscription_id.clone();
        charge_now(engine, &id, "resolve").await;
    }
    Ok(ChargeView::from(&resolved.attempt))
}
