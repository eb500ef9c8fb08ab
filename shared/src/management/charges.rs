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

/// A refund in the review queue: what was asked, and why a person must
/// see to it. `requested`: its outcome is not known; resumed by the same
/// request with the same `Idempotency-Key`. `refused`: the PG refused a
/// mid-term cancel's refund and the customer is owed it; once the money has
/// moved another way, `POST /charges/{merchant_uid}/refunds/{key}/dismiss`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefundReview {
    pub merchant_uid: String,
    pub subscription_id: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub reason: String,
    pub state: &'static str,
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
                state: r.state.as_str(),
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

/// What `POST /charges/{merchant_uid}/refunds/{key}/dismiss` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DismissInput {
    /// What was done instead (refunded by hand, a new refund asked…).
    pub note: String,
}

/// `POST /charges/{merchant_uid}/refunds/{key}/dismiss`: a refused refund
/// a person has seen to leaves the review queue, audited. 404 for no such
/// refund; 409 unless it is refused and in the queue (an unclear one is
/// resumed, not dismissed).
pub async fn dismiss_refund<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    key: &str,
    input: DismissInput,
    actor: &Actor,
) -> Result<ReviewList, ManageError> {
    let note = text("note", &input.note, 500)?;
    let not_found =
        || ManageError::NotFound(format!("no refund {key:?} of charge {merchant_uid:?}"));
    let attempt = attempt_by_uid(engine, merchant_uid)
        .await?
        .ok_or_else(not_found)?;
    let intent = engine
        .ledger
        .get_refund(&attempt, key)
        .await?
        .ok_or_else(not_found)?;
    let sub = load(engine, &attempt.subscription_id).await?;
    let entry = audit(
        engine,
        &sub,
        actor,
        "refund dismissed",
        format!(
            "{} KRW of {} (key {key}, {}): {note}",
            intent.amount,
            merchant_uid,
            intent.state.as_str()
        ),
    );
    match engine.ledger.dismiss_refund(&attempt, key, &entry).await {
        Ok(()) => {
            tracing::info!(%merchant_uid, key, "refused refund dismissed from the review queue");
            needs_review(engine, None).await
        }
        Err(LedgerError::Conflict(_)) => Err(ManageError::Conflict(format!(
            "refund {key:?} is {} and {}in the review queue: only a refused one waiting there is dismissed (an unclear one is resumed with its key)",
            intent.state.as_str(),
            if intent.review_reason.is_some() {
                "was "
            } else {
                "not "
            }
        ))),
        Err(e) => Err(e.into()),
    }
}
