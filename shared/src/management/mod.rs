//! Flow 4: managing subscriptions, for the merchant's backend and the people
//! who run billing. Reads are views of the ledger; every change is decided by
//! the core (`billing::changes`), written with the subscription's version as
//! the guard (a change and a charge run never lose each other's writes), and
//! kept with who, when and why.
//!
//! - `subscriptions`: reading, cancelling, resuming, plan changes, new cards;
//! - `charges`: refunds (`crate::refunds`) and what waits for a person
//!   (`crate::review`);
//! - `cancellation`: what a mid-term cancel refunds (its quote);
//! - `plans`: the plan catalogue;
//! - `trials`: a trial's consent to convert;
//! - `price_changes`: price changes that need consent;
//! - `views`: what the API shows;
//! - `tests`: the use cases' unit tests (in-memory ledger, scripted gateway).

mod cancellation;
mod charges;
mod coupons;
mod plans;
mod portal;
mod price_changes;
mod subscriptions;
#[cfg(test)]
mod tests;
mod trials;
mod views;

pub use cancellation::{QuoteView, QuotedRefund, cancel_quoted, cancellation_quote};
pub use charges::{
    DismissInput, RefundInput, RefundReview, ResolveInput, ReviewList, dismiss_refund,
    needs_review, refund, resolve,
};
pub use coupons::{ApplyCouponInput, CouponView, apply_coupon, create_coupon, get_coupon};
pub use plans::{
    CatalogueList, CatalogueView, PlanInput as NewPlanInput, PlanPriceChangeInput, RolloutView,
    create_plan, get_plan, list_plans, request_plan_price_change,
};
pub use portal::{PORTAL_LINK_TTL, PortalLink, PortalView, open_portal, portal_link};
pub use price_changes::{
    PendingConsentList, PriceChangeInput, PriceConsentInput, consent_price_change,
    decline_price_change, pending_consent, request_price_change,
};
pub use subscriptions::{
    CancelInput, Cancelled, PauseInput, PlanInput, ResumedView, cancel, change_plan, charges, get,
    list_for_user, pause, payment_method, resume,
};
pub use trials::{ConsentInput, consent};
pub use views::{
    ActionView, CardView, ChargeView, DiscountView, PlanView, ResolutionView, SubscriptionView,
    TaxView,
};

pub use crate::billing::Actor;

use crate::billing::changes::NotAllowed;
use crate::billing::{AuditEntry, ChargeAttempt, Subscription, SubscriptionId};
use crate::engine::Engine;
use crate::ledger::{Ledger, LedgerError};
use crate::refunds::RefundError;
use crate::review::ReviewError;

/// Why a request was not carried out. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The state does not allow it (or another change won a race twice).
    #[error("{0}")]
    Conflict(String),
    /// The gateway still processes the payment: decide once it is paid or
    /// failed (409 `still_in_progress`).
    #[error("{0}")]
    StillInProgress(String),
    /// Well-formed, but not possible (e.g. more than is refundable).
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency failed; the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a misconfiguration (a missing table, an unreadable item).
    #[error("{0}")]
    Internal(String),
    /// The request body is larger than accepted.
    #[error("{0}")]
    TooLarge(String),
    /// A charge is out: what was paid may change (409 `charge_in_flight`).
    #[error("{0}")]
    ChargeInFlight(String),
    /// A link whose time is up (410 `link_expired`).
    #[error("{0}")]
    Expired(String),
    /// A quote that no longer holds (409 `stale_quote`), with a fresh one.
    #[error("{message}")]
    StaleQuote {
        message: String,
        fresh: Box<cancellation::QuoteView>,
    },
}

impl ManageError {
    /// The stable code in `{"error": {"code", "message"}}`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Invalid(_) => "invalid_request",
            Self::Conflict(_) => "conflict",
            Self::StillInProgress(_) => "still_in_progress",
            Self::Unprocessable(_) => "unprocessable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
            Self::TooLarge(_) => "payload_too_large",
            Self::ChargeInFlight(_) => "charge_in_flight",
            Self::StaleQuote { .. } => "stale_quote",
            Self::Expired(_) => "link_expired",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Invalid(_) => 400,
            Self::Conflict(_)
            | Self::StillInProgress(_)
            | Self::ChargeInFlight(_)
            | Self::StaleQuote { .. } => 409,
            Self::Unprocessable(_) => 422,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
            Self::TooLarge(_) => 413,
            Self::Expired(_) => 410,
        }
    }
}

impl ManageError {
    /// What the error body carries besides its code and message: a stale
    /// quote's fresh one (`quote`).
    pub fn details(&self) -> Option<(&'static str, serde_json::Value)> {
        match self {
            Self::StaleQuote { fresh, .. } => {
                serde_json::to_value(fresh).ok().map(|v| ("quote", v))
            }
            _ => None,
        }
    }
}

impl From<LedgerError> for ManageError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Conflict(m) => Self::Conflict(m),
            LedgerError::Transient(_) => Self::Unavailable(e.to_string()),
            LedgerError::Fatal(_) | LedgerError::Corrupt(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<NotAllowed> for ManageError {
    fn from(e: NotAllowed) -> Self {
        Self::Conflict(e.0)
    }
}

impl From<ReviewError> for ManageError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::NotFound(m) => Self::NotFound(m),
            ReviewError::Conflict(m) => Self::Conflict(m),
            ReviewError::StillInProgress(m) => Self::StillInProgress(m),
            ReviewError::Unavailable(m) => Self::Unavailable(m),
            ReviewError::Ledger(e) => e.into(),
        }
    }
}

impl From<RefundError> for ManageError {
    fn from(e: RefundError) -> Self {
        match e {
            RefundError::NothingToRefund(m) => Self::Conflict(m),
            e @ RefundError::TooMuch { .. } => Self::Unprocessable(e.to_string()),
            e @ RefundError::BadAmount => Self::Invalid(e.to_string()),
            e @ RefundError::KeyReused => Self::Unprocessable(e.to_string()),
            e @ RefundError::Refused { .. } => Self::Conflict(e.to_string()),
            e @ RefundError::Unclear(_) => Self::Unavailable(e.to_string()),
            RefundError::Ledger(e) => e.into(),
        }
    }
}

/// Every pass of a version-checked change lost its race.
fn kept_changing() -> ManageError {
    ManageError::Conflict("the subscription kept changing; try again".into())
}

fn parse_id(id: &str) -> Result<SubscriptionId, ManageError> {
    SubscriptionId::parse(id)
        .ok_or_else(|| ManageError::NotFound(format!("no subscription {id:?}")))
}

async fn load<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &SubscriptionId,
) -> Result<Subscription, ManageError> {
    engine
        .ledger
        .get_subscription(id)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no subscription {id}")))
}

async fn current_attempt<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Option<ChargeAttempt>, ManageError> {
    Ok(engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), sub.attempt)
        .await?)
}

async fn view_of<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<SubscriptionView, ManageError> {
    let current = current_attempt(engine, sub).await?;
    Ok(views::view(sub, current.as_ref()))
}

/// An audit entry for a manual action, timed to the microsecond so that
/// the history keeps the order of actions within one second.
fn audit<L, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    actor: &Actor,
    action: &str,
    detail: String,
) -> AuditEntry {
    AuditEntry {
        subscription_id: sub.id.clone(),
        at: engine.clock.now_precise(),
        actor: actor.name.clone(),
        principal: actor.principal.clone(),
        action: action.to_owned(),
        detail,
    }
}

fn text(field: &str, value: &str, max: usize) -> Result<String, ManageError> {
    let n = value.chars().count();
    if n == 0 || n > max || value.chars().any(char::is_control) {
        return Err(ManageError::Invalid(format!(
            "{field} must have 1 to {max} characters, no control characters"
        )));
    }
    Ok(value.to_owned())
}
