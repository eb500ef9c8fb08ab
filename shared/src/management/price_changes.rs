//! Price changes that need consent (issue 23 §3, decision 69):
//! `POST /subscriptions/{id}/price-change` asks for one (a new plan
//! version), `…/price-change/consent` records the customer's consent with
//! the merchant's evidence, `…/price-change/decline` the customer's no.
//! Each is one version-checked write of the subscription, audited; the
//! events are derived from it. The run sends the consent request and
//! applies the change (`billing::price_changes`).

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Actor, ManageError, SubscriptionView, audit, kept_changing, load, parse_id, view_of};
use crate::billing::plans::PlanId;
use crate::billing::price_changes::{self, OnNoConsent, PriceChangeError, Request};
use crate::billing::trials::Consent;
use crate::billing::{PeriodId, Subscription};
use crate::engine::Engine;
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{Cursor, Ledger, LedgerError, LockChange, SubscriptionChange};
use crate::registration::EvidenceInput;

/// What `POST /subscriptions/{id}/price-change` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceChangeInput {
    /// The plan whose newest version the subscription moves to.
    pub plan_id: String,
    /// `YYYYMM`, one of the subscription's coming periods; the earliest
    /// allowed when absent.
    #[serde(default)]
    pub effective_period: Option<String>,
    /// `cancel_at_period_end` (the default) or `keep_old_price`.
    #[serde(default)]
    pub on_no_consent: Option<String>,
}

/// What `POST …/price-change/consent` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConsentInput {
    pub evidence: EvidenceInput,
}

fn refused(e: PriceChangeError) -> ManageError {
    match e {
        PriceChangeError::NotAllowed(_) | PriceChangeError::TooEarly { .. } => {
            ManageError::Conflict(e.to_string())
        }
        PriceChangeError::TooSoon { .. } | PriceChangeError::BadEvidence(_) => {
            ManageError::Unprocessable(e.to_string())
        }
    }
}

/// One audited, version-checked write of `next` (`None`: nothing to write,
/// answer `sub` as it is).
async fn write<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    next: Option<Subscription>,
    actor: &Actor,
    what: &str,
    detail: String,
) -> Result<Pass<SubscriptionView>, ManageError> {
    let Some(next) = next else {
        return view_of(engine, sub).await.map(Pass::Done);
    };
    let entry = audit(engine, sub, actor, what, detail);
    let change = SubscriptionChange {
        next: &next,
        audit: Some(&entry),
        lock: LockChange::Keep,
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => {
            info!(subscription_id = %sub.id, what, "price change updated");
            view_of(engine, &next).await.map(Pass::Done)
        }
        Err(LedgerError::Conflict(_)) => Ok(Pass::Again(())),
        Err(e) => Err(e.into()),
    }
}

/// A request's `effective_period`: `YYYYMM`.
pub(super) fn effective_period(p: &str) -> Result<PeriodId, ManageError> {
    PeriodId::parse(p).ok_or_else(|| {
        ManageError::Invalid("effective_period must be YYYYMM (for example 202703)".into())
    })
}

/// A request's `on_no_consent`, `cancel_at_period_end` when absent.
pub(super) fn on_no_consent(s: Option<&str>) -> Result<OnNoConsent, ManageError> {
    match s {
        None => Ok(OnNoConsent::default()),
        Some(s) => OnNoConsent::parse(s).ok_or_else(|| {
            ManageError::Invalid(
                "on_no_consent must be cancel_at_period_end or keep_old_price".into(),
            )
        }),
    }
}

/// `POST /subscriptions/{id}/price-change`: the subscription moves to the
/// newest version of `plan_id` from `effective_period`. A decrease applies
/// like a plan change (the next period not charged yet). An increase waits
/// for the customer's consent: its request goes out `CONSENT_WINDOW_DAYS`
/// before the period, so the period must start at least that far ahead
/// (422 with the earliest one otherwise). 409 while another change is
/// pending, during a trial, or once the subscription ends or is set to.
pub async fn request_price_change<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    input: PriceChangeInput,
    actor: &Actor,
) -> Result<SubscriptionView, ManageError> {
    let id = parse_id(id)?;
    let plan_id = PlanId::parse(&input.plan_id).ok_or_else(|| {
        ManageError::Invalid("plan_id must have 1 to 40 of a-z, 0-9 and '-'".into())
    })?;
    let effective = input
        .effective_period
        .as_deref()
        .map(effective_period)
        .transpose()?;
    let on_no_consent = on_no_consent(input.on_no_consent.as_deref())?;
    let record = engine
        .ledger
        .get_plan(&plan_id, None)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("plan {plan_id} not found")))?;
    let window = engine.settings.charging.consent_window_days;
    let (id, record, effective) = (&id, &record, &effective);
    let done = retry_on_conflict(3, (), |()| async move {
        let sub = load(engine, id).await?;
        // The user's one-live-subscription lock is on the plan's name: a
        // price change keeps it (another plan is a plan change).
        if record.name != sub.plan.name
            && !engine.settings.registration.allow_multiple_subscriptions
        {
            return Err(ManageError::Conflict(format!(
                "plan {} is named {:?}, the subscription's plan {:?}: a price change keeps the plan's name; \
                 to move to another plan use POST /subscriptions/{{id}}/plan",
                record.id, record.name, sub.plan.name
            )));
        }
        let started = engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), 1)
            .await?
            .is_some();
        let now = engine.now();
        let request = Request {
            plan: record.plan(),
            plan_ref: Some(record.reference()),
            effective: effective.as_ref(),
            on_no_consent,
            window_days: window,
            started,
        };
        let next = price_changes::requested(&sub, request, now).map_err(refused)?;
        let detail = next.price_change.as_ref().map_or_else(String::new, |c| {
            format!(
                "{} KRW → {} KRW ({} v{}) from period {}, {}",
                c.from_amount,
                c.plan.amount,
                record.id,
                record.version,
                c.effective,
                if c.is_increase() {
                    format!("with consent, else {}", c.on_no_consent.as_str())
                } else {
                    "a decrease, no consent needed".into()
                }
            )
        });
        write(engine, &sub, Some(next), actor, "price change", detail).await
    })
    .await?;
    done.ok_or_else(kept_changing)
}

/// `POST /subscriptions/{id}/price-change/consent`: records the customer's
/// consent to the pending increase, inside the window before its period.
/// A second consent answers the first record. 409 when nothing is pending,
/// it lapsed or took effect, was declined, or the window has not opened;
/// 422 for evidence timed outside the window or in the future.
pub async fn consent_price_change<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    input: PriceConsentInput,
    actor: &Actor,
) -> Result<SubscriptionView, ManageError> {
    let (channel, reference) = input.evidence.checked().map_err(ManageError::Invalid)?;
    let id = parse_id(id)?;
    let window = engine.settings.charging.consent_window_days;
    let (id, channel, reference) = (&id, &channel, &reference);
    let done = retry_on_conflict(3, (), |()| async move {
        let sub = load(engine, id).await?;
        let now = engine.now();
        let at = input.evidence.at.unwrap_or(now);
        let consent = Consent {
            channel: channel.clone(),
            reference: reference.clone(),
            at,
            recorded_at: now,
        };
        let next = price_changes::consented(&sub, consent, window, now).map_err(refused)?;
        let detail = format!(
            "consent to the price change: {channel} {reference} ({})",
            at.to_rfc3339()
        );
        write(engine, &sub, next, actor, "price change consent", detail).await
    })
    .await?;
    done.ok_or_else(kept_changing)
}

/// `POST /subscriptions/{id}/price-change/decline`: records the customer's
/// no; at the change's period `on_no_consent` applies. A second decline
/// answers the first. 409 when nothing is pending or it was consented to.
pub async fn decline_price_change<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    actor: &Actor,
) -> Result<SubscriptionView, ManageError> {
    let id = parse_id(id)?;
    let id = &id;
    let done = retry_on_conflict(3, (), |()| async move {
        let sub = load(engine, id).await?;
        let next = price_changes::declined(&sub, engine.now()).map_err(refused)?;
        let detail = sub.price_change.as_ref().map_or_else(String::new, |c| {
            format!(
                "declined the price change to {} KRW from period {}: {}",
                c.plan.amount,
                c.effective,
                c.on_no_consent.as_str()
            )
        });
        write(engine, &sub, next, actor, "price change decline", detail).await
    })
    .await?;
    done.ok_or_else(kept_changing)
}

/// One page of `GET /subscriptions?pending_consent=true`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PendingConsentList {
    pub subscriptions: Vec<SubscriptionView>,
    /// Pass as `?cursor=` for the next page.
    pub next_cursor: Option<String>,
}

/// `GET /subscriptions?pending_consent=true`: whom to chase, the
/// subscriptions whose price increase waits for the customer's answer,
/// the soonest consent request first (within each shard of the index).
/// Read from the consent index, each re-read: one answered meanwhile is
/// left out.
pub async fn pending_consent<L: Ledger, G>(
    engine: &Engine<L, G>,
    cursor: Option<&str>,
) -> Result<PendingConsentList, ManageError> {
    const PAGE: usize = 50;
    // The index is sharded and the ledger answers a shard's page at a time:
    // carry on through the shards until the page is full or none is left,
    // so a short page means the end of the list.
    let mut cursor = cursor.map(Cursor::from_text);
    let mut ids = Vec::new();
    loop {
        let page = engine
            .ledger
            .pending_consent_page(PAGE - ids.len(), cursor.as_ref())
            .await
            .map_err(|e| match e {
                LedgerError::Fatal(m) if m.contains("cursor") => ManageError::Invalid(m),
                other => other.into(),
            })?;
        ids.extend(page.ids);
        cursor = page.next;
        if cursor.is_none() || ids.len() >= PAGE {
            break;
        }
    }
    let mut subscriptions = Vec::new();
    for id in &ids {
        if let Some(sub) = engine.ledger.get_subscription(id).await?
            && sub.awaiting_consent_since().is_some()
        {
            subscriptions.push(view_of(engine, &sub).await?);
        }
    }
    Ok(PendingConsentList {
        subscriptions,
        next_cursor: cursor.map(|c| c.0),
    })
}
