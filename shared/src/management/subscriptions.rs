//! The management API's subscription routes: reading, cancelling,
//! resuming, plan changes and new cards.

use chrono::SubsecRound;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::views::{ActionView, ChargeView, SubscriptionView, rfc3339};
use super::{Actor, ManageError, audit, kept_changing, load, parse_id, text, view_of};
use crate::billing::changes::{self, CancelAt, Resumed, plan_changed};
use crate::billing::pauses::{self, PauseError};
use crate::billing::{
    AttemptState, PeriodId, Plan, Subscription, SubscriptionId, SubscriptionStatus,
};
use crate::charging::{self, BillingRun, Outcome};
use crate::engine::Engine;
use crate::gateway::PaymentGateway;
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{Ledger, LedgerError, LockChange, SubscriptionChange};
use crate::registration::{self, PrepareError, Prepared};

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
                principal: e.principal,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// `now` or `period_end`.
    pub at: String,
    pub reason: String,
    /// `quote`: refund what `quote_id` quoted (a mid-term cancel, `now`
    /// only; see `cancel_quoted`).
    #[serde(default)]
    pub refund: Option<String>,
    #[serde(default)]
    pub quote_id: Option<String>,
    /// As asked of the quote (`?unused=true`).
    #[serde(default)]
    pub unused: Option<bool>,
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cancelled {
    pub subscription: SubscriptionView,
    /// Whether the billing key was deleted at i'mport (cancel now).
    pub key_deleted: Option<bool>,
    /// A mid-term cancel's refund (`refund: "quote"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<super::cancellation::QuotedRefund>,
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
    if input.refund.is_some() || input.quote_id.is_some() {
        return Err(ManageError::Invalid(
            "a cancel with a refund needs an Idempotency-Key header".into(),
        ));
    }
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
    let (id, reason) = (&id, &reason);
    let cancelled =
        retry_on_conflict(3, (), |()| cancel_once(engine, id, at, reason, actor)).await?;
    cancelled.ok_or_else(kept_changing)
}

/// One read-decide-write of [`cancel`].
async fn cancel_once<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &SubscriptionId,
    at: CancelAt,
    reason: &str,
    actor: &Actor,
) -> Result<Pass<Cancelled>, ManageError> {
    let sub = load(engine, id).await?;
    let already = match at {
        CancelAt::Now => sub.status == SubscriptionStatus::Cancelled,
        // An ended subscription has ended at (or before) its period's end.
        CancelAt::PeriodEnd => {
            sub.cancel_at_period_end || sub.status == SubscriptionStatus::Cancelled
        }
    };
    if already {
        return Ok(Pass::Done(Cancelled {
            subscription: view_of(engine, &sub).await?,
            key_deleted: None,
            refund: None,
        }));
    }
    let now = engine.now();
    let next = changes::cancelled(&sub, at, reason, now)?;
    let at_name = match at {
        CancelAt::Now => "now",
        CancelAt::PeriodEnd => "period_end",
    };
    let entry = audit(
        engine,
        &sub,
        actor,
        "cancel",
        format!("{at_name}: {reason}"),
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
        // A run or another change got there first.
        Err(LedgerError::Conflict(_)) => return Ok(Pass::Again(())),
        Err(e) => return Err(e.into()),
    }
    info!(subscription_id = %id, at = at_name, "subscription cancelled");
    let key_deleted = if at == CancelAt::Now && engine.settings.charging.delete_key_on_cancel {
        Some(delete_key(engine, &sub).await)
    } else {
        None
    };
    Ok(Pass::Done(Cancelled {
        subscription: view_of(engine, &next).await?,
        key_deleted,
        refund: None,
    }))
}

/// Deletes a cancelled subscription's billing key at the PG (`DELETE_KEY_ON_CANCEL`):
/// whether it is gone (a key the PG no longer knows is gone).
async fn delete_key<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> bool {
    match engine.gateway.delete_billing_key(&sub.customer_uid).await {
        Ok(()) => true,
        Err(e) if e.is_not_found() => true,
        Err(e) => {
            warn!(error = %e, "billing key not deleted at the PG; delete it by hand");
            false
        }
    }
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
    let id = &id;
    let resumed = retry_on_conflict(3, (), |()| async move {
        let sub = load(engine, id).await?;
        let now = engine.now();
        let policy = engine.settings.charging.resume_policy;
        let (next, detail, charge) = match changes::resumed(&sub, policy, now)? {
            Resumed::CancelUndone(next) => {
                (next, "period-end cancellation undone".to_owned(), false)
            }
            Resumed::ChargeNow(back) => {
                let detail = format!("suspended: {}", back.describe());
                (back.next, detail, true)
            }
            Resumed::Unpaused { next, skipped } => {
                let detail = unpaused_detail(&next, &skipped);
                let due = next.is_due(now);
                (next, detail, due)
            }
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
            Err(LedgerError::Conflict(_)) => return Ok(Pass::Again(())),
            Err(e) => return Err(e.into()),
        }
        let charge = if charge {
            Some(charge_now(engine, id, "resume").await)
        } else {
            None
        };
        let sub = load(engine, id).await?;
        Ok::<_, ManageError>(Pass::Done(ResumedView {
            subscription: view_of(engine, &sub).await?,
            charge,
        }))
    })
    .await?;
    resumed.ok_or_else(kept_changing)
}

/// The audit's words for a resume from a pause.
pub(crate) fn unpaused_detail(next: &Subscription, skipped: &[PeriodId]) -> String {
    let mut text = format!(
        "paused: resumed; next charge {} ({})",
        next.current_period(),
        next.next_charge_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if !skipped.is_empty() {
        let list: Vec<&str> = skipped.iter().map(PeriodId::as_str).collect();
        text.push_str(&format!("; skipped: {}", list.join(", ")));
    }
    text
}

/// `POST /subscriptions/{id}/pause` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseInput {
    /// RFC 3339; absent: until resumed by hand.
    #[serde(default)]
    pub resumes_at: Option<String>,
}

/// `POST /subscriptions/{id}/pause`: no charges and no notices until it
/// resumes (by hand or at `resumes_at`); access until the paid-through
/// date; the periods that begin meanwhile are skipped (decision 76).
/// Refused (409) while an attempt of its period is open.
pub async fn pause<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &str,
    input: PauseInput,
    actor: &Actor,
) -> Result<SubscriptionView, ManageError> {
    let id = parse_id(id)?;
    let resumes_at = match input.resumes_at.as_deref() {
        None => None,
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                // Whole seconds, as every ledger stores an instant.
                .map(|t| t.with_timezone(&chrono::Utc).trunc_subsecs(0))
                .map_err(|_| {
                    ManageError::Invalid(
                        "resumes_at must be an RFC 3339 instant (2027-03-10T00:00:00+09:00)".into(),
                    )
                })?,
        ),
    };
    let id = &id;
    let paused = retry_on_conflict(3, (), |()| async move {
        let sub = load(engine, id).await?;
        let now = engine.now();
        let open = engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), sub.attempt)
            .await?
            .is_some_and(|a| a.state.is_open() || a.state == AttemptState::NeedsReview);
        let next = match pauses::paused(&sub, resumes_at, open, now) {
            Ok(Some(next)) => next,
            Ok(None) => {
                return Ok::<_, ManageError>(Pass::Done(view_of(engine, &sub).await?));
            }
            Err(PauseError::Invalid(m)) => return Err(ManageError::Invalid(m)),
            Err(PauseError::NotAllowed(e)) => return Err(e.into()),
        };
        let detail = match resumes_at {
            Some(at) => format!(
                "until {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => "until resumed".to_owned(),
        };
        let entry = audit(engine, &sub, actor, "pause", detail);
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
            Err(LedgerError::Conflict(_)) => return Ok(Pass::Again(())),
            Err(e) => return Err(e.into()),
        }
        info!(subscription_id = %id, resumes_at = ?resumes_at, "subscription paused");
        Ok(Pass::Done(view_of(engine, &next).await?))
    })
    .await?;
    paused.ok_or_else(kept_changing)
}

/// Charges a subscription that is due now (back in access), and says what
/// came of it in words for the API's answer.
pub(super) async fn charge_now<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &crate::billing::SubscriptionId,
    why: &str,
) -> String {
    let run = BillingRun {
        billing_time: engine.now(),
        run_id: format!("{why}-{id}"),
    };
    describe(charging::charge_one(engine, id, &run).await)
}

fn describe(outcome: Result<Outcome, charging::RunError>) -> String {
    match outcome {
        Ok(Outcome::Charged { .. }) => "paid".into(),
        Ok(Outcome::Reconciled { fact }) if fact.is_paid() => "paid".into(),
        Ok(Outcome::Declined { reason, .. }) => format!("declined: {reason}"),
        Ok(Outcome::Rejected { reason, .. }) => format!("rejected: {reason}"),
        Ok(Outcome::NeedsReview { .. }) => "needs_review".into(),
        Ok(Outcome::Refused { reason }) => format!("refused: {reason}; the next run settles it"),
        Ok(other) => format!("pending ({other:?}); the next run settles it"),
        Err(e) => format!("pending ({e}); the next run charges it"),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub amount: i64,
    pub name: String,
    /// The customer's own request for a higher price (an upgrade they
    /// asked for), with the merchant's evidence: an increase needs it
    /// (decision 69); a merchant's increase is a price change.
    #[serde(default)]
    pub consent: Option<crate::registration::EvidenceInput>,
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
        notice_days: crate::billing::notices::DEFAULT_NOTICE_DAYS,
        tax: crate::billing::TaxSetting::Taxable,
    };
    let consent = match &input.consent {
        None => None,
        Some(e) => {
            let (channel, reference) = e.checked().map_err(ManageError::Invalid)?;
            Some((channel, reference, e.at))
        }
    };
    let id = parse_id(id)?;
    let (id, plan, consent) = (&id, &plan, &consent);
    let changed = retry_on_conflict(3, (), |()| {
        change_plan_once(engine, id, plan, consent.as_ref(), actor)
    })
    .await?;
    changed.ok_or_else(kept_changing)
}

/// One read-decide-write of [`change_plan`].
async fn change_plan_once<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &SubscriptionId,
    plan: &Plan,
    consent: Option<&(String, String, Option<chrono::DateTime<chrono::Utc>>)>,
    actor: &Actor,
) -> Result<Pass<SubscriptionView>, ManageError> {
    let sub = load(engine, id).await?;
    if sub.plan == *plan && sub.pending_plan.is_none() || sub.pending_plan.as_ref() == Some(plan) {
        return view_of(engine, &sub).await.map(Pass::Done); // already so
    }
    if sub.price_change.as_ref().is_some_and(|c| c.is_open()) {
        return Err(ManageError::Conflict(
            "a price change is pending: it must take effect or lapse first".into(),
        ));
    }
    let started = engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await?
        .is_some();
    let now = engine.now();
    let consent_note = upgrade_consent(&sub, plan, started, consent, now)?;
    let next = plan_changed(&sub, plan.clone(), started, now)?;
    let when = if started {
        "from the next period"
    } else {
        "from this period"
    };
    let when = format!("{when}{consent_note}");
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
    // The user's lock follows the plan's name (one live subscription per
    // user and plan).
    let lock = if engine.settings.registration.allow_multiple_subscriptions
        || sub.lock_name() == next.lock_name()
    {
        LockChange::Keep
    } else {
        LockChange::Move {
            from: sub.lock_name(),
            to: next.lock_name(),
        }
    };
    let change = SubscriptionChange {
        next: &next,
        audit: Some(&entry),
        lock,
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => view_of(engine, &next).await.map(Pass::Done),
        Err(LedgerError::Conflict(_)) => {
            if let LockChange::Move { to, .. } = lock {
                held_by_another(engine, &sub, to).await?;
            }
            Ok(Pass::Again(()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a plan change may raise the price (decision 69): outside a trial
/// (whose conversion has its own consent) and a sign-up not yet active, only
/// as the customer's own request, with its evidence taken within the hour,
/// for the period charged next (so the consent is in the 30 days before
/// the charge). A merchant's increase is `POST …/price-change`. What the
/// audit says of the consent.
fn upgrade_consent(
    sub: &Subscription,
    plan: &Plan,
    started: bool,
    consent: Option<&(String, String, Option<chrono::DateTime<chrono::Utc>>)>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, ManageError> {
    let increase = plan.amount > sub.plan.amount;
    // A trial's conversion has its own consent, asked again at a new price
    // (decision 68), but only while the conversion is not claimed: once it
    // is, the new price would apply from the next period, a renewal like
    // any other (found by the simulation: a trial's upgrade as its
    // conversion was charged raised the second period's price untold).
    let exempt = sub.status == SubscriptionStatus::Pending
        || (sub.status == SubscriptionStatus::Trialing && !started);
    if !increase || exempt {
        return Ok(String::new());
    }
    let Some((channel, reference, at)) = consent else {
        return Err(ManageError::Conflict(format!(
            "a higher price ({} KRW, now {} KRW) needs the customer's consent: send the customer's own request as `consent` evidence, or ask for it with POST /subscriptions/{{id}}/price-change",
            plan.amount, sub.plan.amount
        )));
    };
    if started {
        return Err(ManageError::Conflict(
            "the period charged next has an attempt at the old price: an upgrade now would apply a period later, beyond its consent; use POST /subscriptions/{id}/price-change"
                .into(),
        ));
    }
    let at = at.unwrap_or(now);
    if at < now - chrono::Duration::hours(1) || at > now + chrono::Duration::minutes(5) {
        return Err(ManageError::Unprocessable(
            "consent evidence.at must be within the last hour".into(),
        ));
    }
    Ok(format!(
        ", at the customer's request ({channel} {reference}, {})",
        at.to_rfc3339()
    ))
}

/// A plan change lost its write: `Conflict` when the user's lock on the
/// new plan's name is held by another subscription (the one-live-plan rule),
/// so the caller is told instead of trying again.
async fn held_by_another<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    plan_name: &str,
) -> Result<(), ManageError> {
    let items = engine.ledger.user_items(&sub.user_id).await?;
    match items
        .locks
        .iter()
        .find(|(name, holder)| name == plan_name && holder != &sub.id)
    {
        Some((_, holder)) => Err(ManageError::Conflict(format!(
            "the user already has subscription {holder} to plan {plan_name:?}"
        ))),
        None => Ok(()),
    }
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
