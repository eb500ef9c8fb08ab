//! The plan catalogue (issue 23 §0): `POST /plans`, `GET /plans`,
//! `GET /plans/{id}`. A version, once written, never changes: there is no
//! route that edits one, and the ledger refuses to write a version twice.

use serde::{Deserialize, Serialize};

use super::ManageError;
use super::views::rfc3339;
use crate::billing::plans::{self, InvalidPlan, NewPlan, PlanId, PlanRecord};
use crate::billing::rollouts::{self, Rollout};
use crate::engine::Engine;
use crate::ledger::{Cursor, Ledger, LedgerError};

/// What `POST /plans` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    /// Optional: `a-z`, `0-9`, `-`, at most 40; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    pub amount: i64,
    /// Only `KRW`.
    #[serde(default)]
    pub currency: Option<String>,
    /// `month` (the default), `year` or `months:N` (2–12; decision 75).
    #[serde(default)]
    pub interval: Option<String>,
    /// Days before each renewal its notice goes out: 0 to 14, default 7;
    /// 0 sends none.
    #[serde(default)]
    pub notice_days: Option<i64>,
    /// A free trial: 0 to 365 Seoul days, the sign-up day counted; 0 (the
    /// default) for none.
    #[serde(default)]
    pub trial_days: Option<i64>,
    /// `explicit` (the default) or `signup` (trials of at most 30 days).
    #[serde(default)]
    pub conversion_consent: Option<String>,
    /// `cancel` (the default) or `extend_trial_once`.
    #[serde(default)]
    pub on_no_consent: Option<String>,
    /// `taxable` (the default), `exempt` or `mixed` (decision 73).
    #[serde(default)]
    pub tax: Option<String>,
    /// A mixed plan's tax-free part of each charge, whole KRW.
    #[serde(default)]
    pub tax_free_amount: Option<i64>,
    /// 1–31: every subscription bills on this day of the month (decision 77).
    #[serde(default)]
    pub billing_day: Option<i64>,
    /// With `billing_day`: `free`, `prorated` (the default) or `full`.
    #[serde(default)]
    pub first_period: Option<String>,
}

/// One plan version as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CatalogueView {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub amount: i64,
    pub currency: &'static str,
    pub interval: String,
    pub notice_days: u16,
    /// 0 without a trial.
    pub trial_days: u16,
    /// With a trial only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_consent: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_no_consent: Option<&'static str>,
    /// `taxable`, `exempt` or `mixed` (decision 73).
    pub tax: &'static str,
    /// A mixed plan's tax-free part of each charge; null otherwise.
    pub tax_free_amount: Option<i64>,
    /// Its fixed billing day and first period's price; null without one.
    pub billing_day: Option<u8>,
    pub first_period: Option<&'static str>,
    pub created_at: String,
    /// Its newest plan-wide price change (`GET /plans/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_change: Option<RolloutView>,
}

/// A plan-wide price change as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RolloutView {
    /// The version subscriptions move to.
    pub version: u32,
    pub amount: i64,
    /// The month whose periods are the first at the new price (`YYYYMM`).
    pub effective_period: String,
    pub on_no_consent: &'static str,
    pub requested_at: String,
    /// `planning` while the runs give the subscriptions their change, then `planned`.
    pub state: &'static str,
    pub planned: u32,
    pub skipped: u32,
    pub planned_at: Option<String>,
}

impl From<&Rollout> for RolloutView {
    fn from(r: &Rollout) -> Self {
        Self {
            version: r.to_version,
            amount: r.plan.amount,
            effective_period: r.effective.to_string(),
            on_no_consent: r.on_no_consent.as_str(),
            requested_at: rfc3339(r.requested_at),
            state: if r.is_open() { "planning" } else { "planned" },
            planned: r.planned,
            skipped: r.skipped,
            planned_at: r.done_at.map(rfc3339),
        }
    }
}

/// What `POST /plans/{id}/price-change` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPriceChangeInput {
    /// The new price, whole KRW.
    pub amount: i64,
    /// `YYYYMM`: each subscription's period starting in that month is its
    /// first at the new price.
    pub effective_period: String,
    /// `cancel_at_period_end` (the default) or `keep_old_price`.
    #[serde(default)]
    pub on_no_consent: Option<String>,
}

impl From<&PlanRecord> for CatalogueView {
    fn from(p: &PlanRecord) -> Self {
        Self {
            id: p.id.to_string(),
            version: p.version,
            name: p.name.clone(),
            amount: p.amount,
            currency: "KRW",
            interval: p.interval.label(),
            notice_days: p.notice_days,
            trial_days: p.trial.map_or(0, |t| t.days),
            conversion_consent: p.trial.map(|t| t.consent.as_str()),
            on_no_consent: p.trial.map(|t| t.on_no_consent.as_str()),
            tax: p.tax.kind(),
            tax_free_amount: p.tax.tax_free_amount(),
            billing_day: p.billing.map(|b| b.day),
            first_period: p.billing.map(|b| b.first.as_str()),
            created_at: rfc3339(p.created_at),
            price_change: None,
        }
    }
}

/// `GET /plans`: one page of the catalogue.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CatalogueList {
    pub plans: Vec<CatalogueView>,
    /// Pass as `?cursor=` for the next page.
    pub next_cursor: Option<String>,
}

impl From<InvalidPlan> for ManageError {
    fn from(e: InvalidPlan) -> Self {
        Self::Invalid(e.0)
    }
}

/// `POST /plans`: version 1 of a new plan. 409 when the id is taken.
pub async fn create_plan<L: Ledger, G>(
    engine: &Engine<L, G>,
    input: PlanInput,
) -> Result<CatalogueView, ManageError> {
    let generated = PlanId::parse(&format!("pl{}", engine.new_subscription_id()))
        .ok_or_else(|| ManageError::Internal("a generated plan id is not valid".into()))?;
    let new = NewPlan {
        id: input.id,
        name: input.name,
        amount: input.amount,
        currency: input.currency,
        interval: input.interval,
        notice_days: input.notice_days,
        trial_days: input.trial_days,
        conversion_consent: input.conversion_consent,
        on_no_consent: input.on_no_consent,
        tax: input.tax,
        tax_free_amount: input.tax_free_amount,
        billing_day: input.billing_day,
        first_period: input.first_period,
    };
    let plan = plans::new_plan(new, generated, engine.now())?;
    match engine.ledger.put_plan(&plan).await {
        Ok(()) => {
            tracing::info!(plan_id = %plan.id, amount = plan.amount, "plan created");
            Ok((&plan).into())
        }
        Err(LedgerError::Conflict(_)) => Err(ManageError::Conflict(format!(
            "plan {} exists; a plan version never changes (a new price is a new version)",
            plan.id
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `GET /plans/{id}`: the plan's current version.
pub async fn get_plan<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
) -> Result<CatalogueView, ManageError> {
    let not_found = || ManageError::NotFound(format!("no plan {id:?}"));
    let id = PlanId::parse(id).ok_or_else(not_found)?;
    let plan = engine
        .ledger
        .get_plan(&id, None)
        .await?
        .ok_or_else(not_found)?;
    let mut view: CatalogueView = (&plan).into();
    view.price_change = engine
        .ledger
        .get_rollout(&id)
        .await?
        .as_ref()
        .map(Into::into);
    Ok(view)
}

/// `POST /plans/{id}/price-change`: the plan's next version at `amount`,
/// and a rollout the runs plan in pages: every subscription of the plan
/// (on an older version, not ending) gets the same pending change from its
/// period in `effective_period`, each through its own consent flow
/// (decision 71). New sign-ups take the new version at once. 422 with the
/// earliest month when `effective_period` is too soon; 409 while the
/// plan's previous rollout is still planning, or at the same price.
pub async fn request_plan_price_change<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    input: PlanPriceChangeInput,
) -> Result<CatalogueView, ManageError> {
    let not_found = || ManageError::NotFound(format!("no plan {id:?}"));
    let id = PlanId::parse(id).ok_or_else(not_found)?;
    if !plans::PLAN_AMOUNT.contains(&input.amount) {
        return Err(ManageError::Invalid(format!(
            "amount must be {} to {} KRW",
            plans::PLAN_AMOUNT.start(),
            plans::PLAN_AMOUNT.end()
        )));
    }
    let effective = super::price_changes::effective_period(&input.effective_period)?;
    let on_no_consent = super::price_changes::on_no_consent(input.on_no_consent.as_deref())?;
    let current = engine
        .ledger
        .get_plan(&id, None)
        .await?
        .ok_or_else(not_found)?;
    if current.amount == input.amount {
        return Err(ManageError::Conflict(format!(
            "plan {id} costs {} KRW already",
            current.amount
        )));
    }
    let now = engine.now();
    let window = engine.settings.charging.consent_window_days;
    if let Err(earliest) = rollouts::check_effective(&effective, now, window) {
        return Err(ManageError::Unprocessable(format!(
            "effective_period {effective} is too soon: the earliest is {earliest} (each \
             subscription's consent request goes out {window} days before its period, and the \
             runs take up to {} days to plan every subscription)",
            rollouts::PLANNING_DAYS
        )));
    }
    if engine
        .ledger
        .get_rollout(&id)
        .await?
        .is_some_and(|r| r.is_open())
    {
        return Err(ManageError::Conflict(format!(
            "plan {id}'s previous price change is still being planned"
        )));
    }
    if let Some(free) = current.tax.tax_free_amount()
        && input.amount <= free
    {
        return Err(ManageError::Invalid(format!(
            "plan {id} is mixed with {free} KRW tax-free: its new price must be more than that (a \
             plan that is all tax-free is a new, exempt plan)"
        )));
    }
    let next = PlanRecord {
        version: current.version + 1,
        amount: input.amount,
        created_at: now,
        ..current.clone()
    };
    let rollout = Rollout {
        plan_id: id.clone(),
        to_version: next.version,
        plan: next.plan(),
        effective,
        on_no_consent,
        requested_at: now,
        cursor: None,
        planned: 0,
        skipped: 0,
        done_at: None,
        rev: 1,
    };
    match engine.ledger.put_plan_rollout(&next, &rollout).await {
        Ok(()) => {}
        Err(LedgerError::Conflict(_)) => {
            return Err(ManageError::Conflict(format!(
                "plan {id} changed meanwhile (a new version, or a price change being planned); read it and try again"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        plan_id = %id,
        version = next.version,
        from = current.amount,
        to = next.amount,
        effective = %rollout.effective,
        "plan-wide price change requested; the runs plan it"
    );
    let mut view: CatalogueView = (&next).into();
    view.price_change = Some((&rollout).into());
    Ok(view)
}

/// `GET /plans`: the catalogue by id, 50 a page.
pub async fn list_plans<L: Ledger, G>(
    engine: &Engine<L, G>,
    cursor: Option<&str>,
) -> Result<CatalogueList, ManageError> {
    let cursor = cursor.map(Cursor::from_text);
    let page = engine
        .ledger
        .plans_page(50, cursor.as_ref())
        .await
        .map_err(|e| match e {
            LedgerError::Fatal(m) if m.contains("cursor") => ManageError::Invalid(m),
            other => other.into(),
        })?;
    Ok(CatalogueList {
        plans: page.plans.iter().map(Into::into).collect(),
        next_cursor: page.next.map(|c| c.as_str().to_owned()),
    })
}
