//! Flow 4: managing subscriptions, for the merchant's backend and the people
//! who run billing. Reads are views of the ledger; every change is decided by
//! the core (`billing::changes`), written with the subscription's version as
//! the guard (a change and a charge run never lose each other's writes), and
//! kept with who, when and why.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::billing::changes::{
    self, CancelAt, NotAllowed, Resumed, check_resolution, plan_changed, resolved,
};
use crate::billing::{
    AttemptResult, AttemptState, AuditEntry, ChargeAttempt, MerchantUid, PaymentRecord, Plan,
    Resolution, Subscription, SubscriptionId, SubscriptionStatus,
};
use crate::charging::{self, BillingRun, Outcome};
use crate::engine::Engine;
use crate::gateway::{GatewayError, PaymentGateway, RefundRequest, RejectionKind};
use crate::ledger::{Cursor, Ledger, LedgerError, LockChange, SubscriptionChange};
use crate::registration::{self, PrepareError, Prepared};

/// Who asked: the IAM principal, or what the merchant's backend names in
/// `x-actor`. Kept with every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

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
}

/// The error body of every HTTP API here (prepare, callback, management):
/// `{"error": {"code": "...", "message": "..."}}`, `code` stable for
/// programs, `message` for people.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

impl ManageError {
    /// The stable code in `{"error": {"code", "message"}}`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Invalid(_) => "invalid_request",
            Self::Conflict(_) => "conflict",
            Self::Unprocessable(_) => "unprocessable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
            Self::TooLarge(_) => "payload_too_large",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Invalid(_) => 400,
            Self::Conflict(_) => 409,
            Self::Unprocessable(_) => 422,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
            Self::TooLarge(_) => 413,
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

fn gateway_unavailable(e: &GatewayError) -> ManageError {
    ManageError::Unavailable(format!("i'mport: {e}"))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanView {
    pub amount: i64,
    pub name: String,
}

impl From<&Plan> for PlanView {
    fn from(p: &Plan) -> Self {
        Self {
            amount: p.amount,
            name: p.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CardView {
    pub pg_provider: String,
    pub card_name: Option<String>,
    /// Masked by i'mport.
    pub card_number: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResolutionView {
    #[serde(rename = "as")]
    pub resolved_as: String,
    pub note: String,
    pub by: String,
    pub at: String,
}

/// A charge attempt as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChargeView {
    pub subscription_id: String,
    pub merchant_uid: String,
    pub period: String,
    pub attempt: u32,
    pub imp_uid: Option<String>,
    pub amount: i64,
    pub state: String,
    pub reason: Option<String>,
    pub refunded: i64,
    pub paid_at: Option<String>,
    /// Not paid: when the period is charged again, if it is.
    pub next_retry_at: Option<String>,
    pub resolution: Option<ResolutionView>,
    pub created_at: String,
}

impl From<&ChargeAttempt> for ChargeView {
    fn from(a: &ChargeAttempt) -> Self {
        Self {
            subscription_id: a.subscription_id.to_string(),
            merchant_uid: a.merchant_uid.clone(),
            period: a.period.to_string(),
            attempt: a.attempt,
            imp_uid: a.imp_uid.clone(),
            amount: a.amount,
            state: a.state.as_str().to_owned(),
            reason: a.fail_reason.clone(),
            refunded: a.refunded,
            paid_at: a.paid_at.map(rfc3339),
            next_retry_at: a.retry_at.map(rfc3339),
            resolution: a.resolution.as_ref().map(|r| ResolutionView {
                resolved_as: r.state.as_str().to_owned(),
                note: r.note.clone(),
                by: r.actor.clone(),
                at: rfc3339(r.at),
            }),
            created_at: rfc3339(a.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActionView {
    pub at: String,
    pub by: String,
    pub action: String,
    pub detail: String,
}

/// A subscription as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: String,
    pub user_id: String,
    pub status: String,
    pub plan: PlanView,
    /// A plan change that applies from the next period.
    pub pending_plan: Option<PlanView>,
    /// The sign-up date in Seoul: periods start on this day of the month.
    pub anchor: String,
    /// The period charged next (`YYYYMM`).
    pub current_period: String,
    pub next_charge_at: Option<String>,
    pub paid_through: Option<String>,
    pub card: CardView,
    pub cancel_at_period_end: bool,
    pub cancel_reason: Option<String>,
    pub ended_at: Option<String>,
    /// The attempt being charged or settled now, if any.
    pub open_attempt: Option<ChargeView>,
    pub created_at: String,
    pub version: u64,
    /// The newest manual actions (get only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<ActionView>>,
}

fn view(sub: &Subscription, current: Option<&ChargeAttempt>) -> SubscriptionView {
    SubscriptionView {
        id: sub.id.to_string(),
        user_id: sub.user_id.clone(),
        status: sub.status.as_str().to_owned(),
        plan: (&sub.plan).into(),
        pending_plan: sub.pending_plan.as_ref().map(Into::into),
        anchor: format!(
            "{:04}-{:02}-{:02}",
            sub.anchor.year, sub.anchor.month, sub.anchor.day
        ),
        current_period: sub.current_period().to_string(),
        next_charge_at: sub
            .status
            .is_chargeable()
            .then(|| rfc3339(sub.next_charge_at)),
        paid_through: sub.paid_through.as_ref().map(ToString::to_string),
        card: CardView {
            pg_provider: sub.key.pg_provider.clone(),
            card_name: sub.key.card_name.clone(),
            card_number: sub.key.card_number.clone(),
        },
        cancel_at_period_end: sub.cancel_at_period_end,
        cancel_reason: sub.cancel_reason.clone(),
        ended_at: sub.ended_at.map(rfc3339),
        open_attempt: current.filter(|a| a.state.is_open()).map(ChargeView::from),
        created_at: rfc3339(sub.created_at),
        version: sub.version,
        history: None,
    }
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
    Ok(view(sub, current.as_ref()))
}

/// `GET /subscriptions/{id}`.
pub async fn get<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
) -> Result<SubscriptionView, ManageError> {
    let id = parse_id(id)?;
    let sub = load(engine, &id).await?;
    let mut v = view_of(engine, &sub).await?;
    v.history = Some(
        engine
            .ledger
            .history(&id, 20)
            .await?
            .into_iter()
            .map(|e| ActionView {
                at: rfc3339(e.at),
                by: e.actor,
                action: e.action,
                detail: e.detail,
            })
            .collect(),
    );
    Ok(v)
}

/// `GET /users/{user_id}/subscriptions`: a key lookup, never a scan.
pub async fn list_for_user<L: Ledger, G>(
    engine: &Engine<L, G>,
    user_id: &str,
) -> Result<Vec<SubscriptionView>, ManageError> {
    if user_id.is_empty() || user_id.chars().count() > 128 {
        return Err(ManageError::Invalid(
            "user_id must have 1 to 128 characters".into(),
        ));
    }
    let items = engine.ledger.user_items(user_id).await?;
    let mut out = Vec::new();
    for id in &items.subscriptions {
        if let Some(sub) = engine.ledger.get_subscription(id).await? {
            out.push(view_of(engine, &sub).await?);
        }
    }
    Ok(out)
}

/// `GET /subscriptions/{id}/charges`.
pub async fn charges<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
) -> Result<Vec<ChargeView>, ManageError> {
    let id = parse_id(id)?;
    load(engine, &id).await?;
    Ok(engine
        .ledger
        .list_attempts(&id)
        .await?
        .iter()
        .map(ChargeView::from)
        .collect())
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
        actor: actor.0.clone(),
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// `now` or `period_end`.
    pub at: String,
    pub reason: String,
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cancelled {
    pub subscription: SubscriptionView,
    /// Whether the billing key was deleted at i'mport (cancel now).
    pub key_deleted: Option<bool>,
}

/// `POST /subscriptions/{id}/cancel`. `now` stops all further charges at
/// once (a charge already in flight is still settled by its run) and
/// deletes the billing key at i'mport unless configured not to;
/// `period_end` keeps access until `paid_through`. Asking again for what is
/// already so changes nothing.
pub async fn cancel<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &str,
    input: CancelInput,
    actor: &Actor,
) -> Result<Cancelled, ManageError> {
    let at = match input.at.as_str() {
        "now" => CancelAt::Now,
        "period_end" => CancelAt::PeriodEnd,
        other => {
            return Err(ManageError::Invalid(format!(
                "at must be \"now\" or \"period_end\", not {other:?}"
            )));
        }
    };
    let reason = text("reason", &input.reason, 200)?;
    let id = parse_id(id)?;
    for _ in 0..3 {
        let sub = load(engine, &id).await?;
        let already = match at {
            CancelAt::Now => sub.status == SubscriptionStatus::Cancelled,
            // An ended subscription has ended at (or before) its period's end.
            CancelAt::PeriodEnd => {
                sub.cancel_at_period_end || sub.status == SubscriptionStatus::Cancelled
            }
        };
        if already {
            return Ok(Cancelled {
                subscription: view_of(engine, &sub).await?,
                key_deleted: None,
            });
        }
        let now = engine.now();
        let next = changes::cancelled(&sub, at, &reason, now)?;
        let entry = audit(
            engine,
            &sub,
            actor,
            "cancel",
            format!("{}: {reason}", input.at),
        );
        let change = SubscriptionChange {
            next: &next,
            audit: Some(&entry),
            lock: match at {
                CancelAt::Now => LockChange::Release(sub.lock_name()),
                CancelAt::PeriodEnd => LockChange::Keep,
            },
        };
        match engine.ledger.change_subscription(&change).await {
            Ok(()) => {}
            Err(LedgerError::Conflict(_)) => continue, // a run or another change got there first
            Err(e) => return Err(e.into()),
        }
        info!(subscription_id = %id, at = %input.at, "subscription cancelled");
        let key_deleted = if at == CancelAt::Now && engine.settings.delete_key_on_cancel {
            Some(
                match engine.gateway.delete_billing_key(&sub.customer_uid).await {
                    Ok(()) => true,
                    Err(e) if e.is_not_found() => true,
                    Err(e) => {
                        warn!(error = %e, "billing key not deleted at i'mport; delete it by hand");
                        false
                    }
                },
            )
        } else {
            None
        };
        return Ok(Cancelled {
            subscription: view_of(engine, &next).await?,
            key_deleted,
        });
    }
    Err(ManageError::Conflict(
        "the subscription kept changing; try again".into(),
    ))
}

/// What a resume did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResumedView {
    pub subscription: SubscriptionView,
    /// For a suspended subscription: what charging the outstanding period did.
    pub charge: Option<String>,
}

/// `POST /subscriptions/{id}/resume`: undo a pending period-end cancel; for
/// a suspended subscription, charge the outstanding period now, once.
pub async fn resume<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &str,
    actor: &Actor,
) -> Result<ResumedView, ManageError> {
    let id = parse_id(id)?;
    for _ in 0..3 {
        let sub = load(engine, &id).await?;
        let now = engine.now();
        let (next, charge) = match changes::resumed(&sub, now)? {
            Resumed::CancelUndone(next) => (next, false),
            Resumed::ChargeNow(next) => (next, true),
        };
        let detail = if charge {
            format!("suspended: charging {} again now", sub.current_period())
        } else {
            "period-end cancellation undone".into()
        };
        let entry = audit(engine, &sub, actor, "resume", detail);
        match engine
            .ledger
            .change_subscription(&SubscriptionChange {
                next: &next,
                audit: Some(&entry),
                lock: LockChange::Keep,
            })
            .await
        {
            Ok(()) => {}
            Err(LedgerError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        let charge = if charge {
            let run = BillingRun {
                billing_time: now,
                run_id: format!("resume-{id}"),
            };
            Some(describe(charging::charge_one(engine, &id, &run).await))
        } else {
            None
        };
        let sub = load(engine, &id).await?;
        return Ok(ResumedView {
            subscription: view_of(engine, &sub).await?,
            charge,
        });
    }
    Err(ManageError::Conflict(
        "the subscription kept changing; try again".into(),
    ))
}

fn describe(outcome: Result<Outcome, charging::RunError>) -> String {
    match outcome {
        Ok(Outcome::Charged { .. }) => "paid".into(),
        Ok(Outcome::Reconciled { fact }) if fact.is_paid() => "paid".into(),
        Ok(Outcome::Declined { reason }) => format!("declined: {reason}"),
        Ok(Outcome::Rejected { reason, .. }) => format!("rejected: {reason}"),
        Ok(Outcome::NeedsReview { .. }) => "needs_review".into(),
        Ok(other) => format!("pending ({other:?}); the next run settles it"),
        Err(e) => format!("pending ({e}); the next run charges it"),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub amount: i64,
    pub name: String,
}

/// `POST /subscriptions/{id}/plan`: the new price applies from the next
/// period (no proration); an attempt already sent keeps its amount.
pub async fn change_plan<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    input: PlanInput,
    actor: &Actor,
) -> Result<SubscriptionView, ManageError> {
    let name = text("name", &input.name, 40)?;
    if !(100..=10_000_000).contains(&input.amount) {
        return Err(ManageError::Invalid(
            "amount must be a whole KRW amount from 100 to 10,000,000".into(),
        ));
    }
    let plan = Plan {
        amount: input.amount,
        name,
    };
    let id = parse_id(id)?;
    for _ in 0..3 {
        let sub = load(engine, &id).await?;
        if sub.plan == plan && sub.pending_plan.is_none()
            || sub.pending_plan.as_ref() == Some(&plan)
        {
            return view_of(engine, &sub).await; // already so
        }
        let started = engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), 1)
            .await?
            .is_some();
        let now = engine.now();
        let next = plan_changed(&sub, plan.clone(), started, now)?;
        let when = if started {
            "from the next period"
        } else {
            "from this period"
        };
        let entry = audit(
            engine,
            &sub,
            actor,
            "plan",
            format!(
                "{} KRW {:?} → {} KRW {:?}, {when}",
                sub.plan.amount, sub.plan.name, plan.amount, plan.name
            ),
        );
        // The user's lock follows the plan's name (one live subscription
        // per user and plan).
        let lock = if engine.settings.allow_multiple_subscriptions
            || sub.lock_name() == next.lock_name()
        {
            LockChange::Keep
        } else {
            LockChange::Move {
                from: sub.lock_name(),
                to: next.lock_name(),
            }
        };
        match engine
            .ledger
            .change_subscription(&SubscriptionChange {
                next: &next,
                audit: Some(&entry),
                lock,
            })
            .await
        {
            Ok(()) => return view_of(engine, &next).await,
            Err(LedgerError::Conflict(_)) => {
                if let LockChange::Move { to, .. } = lock
                    && let Some((_, holder)) = engine
                        .ledger
                        .user_items(&sub.user_id)
                        .await?
                        .locks
                        .iter()
                        .find(|(name, holder)| name == to && holder != &sub.id)
                {
                    return Err(ManageError::Conflict(format!(
                        "the user already has subscription {holder} to plan {to:?}"
                    )));
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ManageError::Conflict(
        "the subscription kept changing; try again".into(),
    ))
}

/// `POST /subscriptions/{id}/payment-method`: `IMP.request_pay` parameters
/// for a new billing key (a new server-generated `customer_uid`). The
/// callback swaps the key once it is verified and deletes the old one; a
/// subscription behind on payment is charged again at once.
pub async fn payment_method<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &str,
) -> Result<Prepared, ManageError> {
    let id = parse_id(id)?;
    let sub = load(engine, &id).await?;
    if matches!(
        sub.status,
        SubscriptionStatus::Cancelled | SubscriptionStatus::Pending
    ) {
        return Err(ManageError::Conflict(format!(
            "a {} subscription takes no new card",
            sub.status.as_str()
        )));
    }
    registration::prepare_key_replacement(engine, &sub)
        .await
        .map_err(|e| match e {
            PrepareError::Ledger(e) => e.into(),
            other => ManageError::Internal(other.to_string()),
        })
}

/// The attempt a merchant uid names (a charge, or a sign-up that took money).
async fn attempt_by_uid<L: Ledger, G>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
) -> Result<ChargeAttempt, ManageError> {
    let missing = || ManageError::NotFound(format!("no charge {merchant_uid:?}"));
    let found = match MerchantUid::parse(merchant_uid).ok_or_else(missing)? {
        MerchantUid::Charge {
            subscription,
            period,
            attempt,
        } => {
            engine
                .ledger
                .get_attempt(&subscription, &period, attempt)
                .await?
        }
        MerchantUid::Issuance { subscription } => {
            let Some(sub) = engine.ledger.get_subscription(&subscription).await? else {
                return Err(missing());
            };
            engine
                .ledger
                .get_attempt(&subscription, &sub.anchor.period_id(0), 1)
                .await?
        }
    };
    found
        .filter(|a| a.merchant_uid == merchant_uid)
        .ok_or_else(missing)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    /// Whole KRW; all that remains when absent.
    #[serde(default)]
    pub amount: Option<i64>,
    pub reason: String,
}

/// `POST /charges/{merchant_uid}/refund`: a full or partial refund through
/// i'mport with `checksum` (the refundable amount we hold), never more than
/// was paid; recorded on the attempt with who and why.
pub async fn refund<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    input: RefundInput,
    actor: &Actor,
) -> Result<ChargeView, ManageError> {
    let reason = text("reason", &input.reason, 200)?;
    let attempt = attempt_by_uid(engine, merchant_uid).await?;
    let (imp_uid, refundable) = refundable_payment(engine, &attempt).await?;
    let amount = input.amount.unwrap_or(refundable);
    if amount <= 0 {
        return Err(ManageError::Invalid(
            "amount must be a positive whole KRW amount".into(),
        ));
    }
    if amount > refundable {
        return Err(ManageError::Unprocessable(format!(
            "{amount} KRW is more than the {refundable} KRW left to refund"
        )));
    }
    let request = RefundRequest {
        imp_uid: imp_uid.clone(),
        merchant_uid: attempt.merchant_uid.clone(),
        amount: Some(amount),
        checksum: Some(refundable),
        reason: reason.clone(),
    };
    let record = match engine.gateway.refund(&request).await {
        Ok(record) => record,
        Err(GatewayError::Rejected(r)) if r.kind == RejectionKind::Business => {
            // Refused (e.g. the refundable amount changed): record what
            // i'mport shows, so the next attempt starts from the truth.
            let shown = engine
                .gateway
                .find_payment(&attempt.merchant_uid)
                .await
                .ok();
            if let Some(p) = &shown {
                engine
                    .ledger
                    .record_refund(&attempt, p.cancelled_amount, engine.now(), None)
                    .await?;
            }
            return Err(ManageError::Conflict(format!(
                "i'mport refused the refund ({}); it shows {} KRW refunded. Nothing was refunded now.",
                r.message,
                shown.map_or(attempt.refunded, |p| p.cancelled_amount)
            )));
        }
        Err(e @ GatewayError::Rejected(_)) => return Err(gateway_unavailable(&e)),
        Err(e) => return Err(gateway_unavailable(&e)),
    };
    let sub = load(engine, &attempt.subscription_id).await?;
    let now = engine.now();
    let entry = audit(
        engine,
        &sub,
        actor,
        "refund",
        format!("{amount} KRW of {merchant_uid} ({}): {reason}", imp_uid),
    );
    engine
        .ledger
        .record_refund(&attempt, record.cancelled_amount, now, Some(&entry))
        .await?;
    info!(merchant_uid, amount, "refunded");
    let stored = attempt_by_uid(engine, merchant_uid).await?;
    Ok(ChargeView::from(&stored))
}

/// The payment a refund of `attempt` is for, and what is left of it to
/// refund. A paid attempt: its recorded payment and our view of it (the
/// `checksum` catches a stale view). One waiting for a person: the payment
/// i'mport holds under its `merchant_uid` (a late payment, an odd amount;
/// not necessarily the one recorded on the attempt), as i'mport shows it.
async fn refundable_payment<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    attempt: &ChargeAttempt,
) -> Result<(String, i64), ManageError> {
    let nothing = || {
        ManageError::Conflict(format!(
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
            Ok(p) if p.merchant_uid == attempt.merchant_uid && p.paid_at.is_some() => {
                Ok((p.imp_uid, p.amount - p.cancelled_amount))
            }
            Ok(_) => Err(nothing()),
            Err(e) if e.is_not_found() => Err(nothing()),
            Err(e) => Err(gateway_unavailable(&e)),
        },
        _ => Err(nothing()),
    }
}

/// One page of `GET /charges/needs-review`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReviewList {
    pub charges: Vec<ChargeView>,
    /// Pass as `?cursor=` for the next page.
    pub next_cursor: Option<String>,
}

/// `GET /charges/needs-review`: the attempts waiting for a person, oldest first.
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
    Ok(ReviewList {
        charges,
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
/// attempt that needs review, re-checked against i'mport first.
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
    for _ in 0..3 {
        let attempt = attempt_by_uid(engine, merchant_uid).await?;
        if let Some(r) = &attempt.resolution
            && (r.state == AttemptState::Paid) == as_paid
        {
            return Ok(ChargeView::from(&attempt)); // already resolved so
        }
        let record = match engine.gateway.find_payment(merchant_uid).await {
            Ok(p) => Some(p),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(gateway_unavailable(&e)),
        };
        check_resolution(&attempt, record.as_ref(), as_paid)?;
        let sub = load(engine, &attempt.subscription_id).await?;
        if as_paid {
            let others = engine.ledger.list_attempts(&sub.id).await?;
            if let Some(paid) = others.iter().find(|a| {
                a.period == attempt.period
                    && a.attempt != attempt.attempt
                    && a.state == AttemptState::Paid
            }) {
                return Err(ManageError::Conflict(format!(
                    "{} already paid period {}: refund one of the two first",
                    paid.merchant_uid, attempt.period
                )));
            }
            if let Some(open) = others.iter().find(|a| {
                a.period == attempt.period && a.attempt != attempt.attempt && a.state.is_open()
            }) {
                return Err(ManageError::Conflict(format!(
                    "{} of period {} is still being charged ({}): resolve after it is settled",
                    open.merchant_uid,
                    attempt.period,
                    open.state.as_str()
                )));
            }
        }
        let now = engine.now();
        let next = resolved(&sub, &attempt, as_paid, now)?;
        let result = resolution_result(&attempt, record.as_ref(), as_paid, &note, now);
        let resolution = Resolution {
            state: result.state,
            note: note.clone(),
            actor: actor.0.clone(),
            at: now,
        };
        let entry = audit(
            engine,
            &sub,
            actor,
            "resolve",
            format!("{merchant_uid} as {}: {note}", input.resolve_as),
        );
        match engine
            .ledger
            .resolve(&attempt, &result, &resolution, &next, &entry)
            .await
        {
            Ok(()) => {
                info!(merchant_uid, resolved_as = %input.resolve_as, "attempt resolved by a person");
                return Ok(ChargeView::from(
                    &attempt_by_uid(engine, merchant_uid).await?,
                ));
            }
            Err(LedgerError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ManageError::Conflict(
        "the charge or its subscription kept changing; try again".into(),
    ))
}

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
            imp_uid: record
                .map(|p| p.imp_uid.clone())
                .or_else(|| attempt.imp_uid.clone()),
            paid_at: Some(record.and_then(|p| p.paid_at).unwrap_or(now)),
            fail_reason: None,
            retry_at: None,
        }
    } else {
        AttemptResult {
            state: AttemptState::Failed,
            imp_uid: attempt.imp_uid.clone(),
            paid_at: None,
            fail_reason: Some(format!("resolved as not paid: {note}")),
            retry_at: None,
        }
    }
}
