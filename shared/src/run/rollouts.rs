//! The run's share of a plan-wide price change (decision 71): after the
//! charges, while its time allows, each open rollout is planned a page of
//! the plan's subscriptions at a time (the `plan` index), each subscription
//! given the pending change `POST /subscriptions/{id}/price-change` would
//! give it, in its own version-checked, audited write. The rollout keeps
//! where it got to (`rev` checked), so a run that stops, or two runs at
//! once, never plan a page twice nor skip one; planning a subscription
//! twice is refused by the change itself (one pending at a time).

use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::billing::plans::PlanRef;
use crate::billing::price_changes::{self, Request};
use crate::billing::rollouts::{self, Rollout};
use crate::billing::{AuditEntry, SubscriptionId};
use crate::engine::{Budget, Engine};
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{Cursor, Ledger, LedgerError, LockChange, SubscriptionChange};

/// What one run did to the open rollouts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RolloutReport {
    /// Subscriptions given a plan-wide change.
    pub planned: u64,
    /// Subscriptions of those plans left as they were.
    pub skipped: u64,
    /// Rollouts that every subscription of their plan has now been through.
    pub finished: u64,
    /// Why planning stopped early, if it did (the next run carries on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// What became of one subscription.
enum Planned {
    Given,
    Skipped,
    /// Not the rollout's to change (already on its version or newer).
    NotConcerned,
}

/// Plans the open rollouts while `budget` leaves `reserve`.
pub async fn plan<L: Ledger, G>(
    engine: &Engine<L, G>,
    budget: &Budget,
    reserve: Duration,
) -> RolloutReport {
    let mut report = RolloutReport::default();
    let open = match engine.ledger.open_rollouts().await {
        Ok(open) => open,
        Err(e) => {
            warn!(error = %e, "open plan-wide price changes could not be read; the next run tries again");
            report.stopped = Some(e.to_string());
            return report;
        }
    };
    for rollout in open {
        if let Err(e) = plan_one(engine, rollout, budget, reserve, &mut report).await {
            warn!(error = %e, "plan-wide price change: planning stopped; the next run carries on");
            report.stopped = Some(e.to_string());
            break;
        }
        if report.stopped.is_some() {
            break;
        }
    }
    if report.planned + report.skipped + report.finished > 0 {
        info!(
            planned = report.planned,
            skipped = report.skipped,
            finished = report.finished,
            "plan-wide price changes planned"
        );
    }
    report
}

async fn plan_one<L: Ledger, G>(
    engine: &Engine<L, G>,
    mut rollout: Rollout,
    budget: &Budget,
    reserve: Duration,
    report: &mut RolloutReport,
) -> Result<(), LedgerError> {
    loop {
        if !budget.allows(Duration::ZERO, reserve) {
            report.stopped = Some("deadline near: stopped planning price changes".into());
            return Ok(());
        }
        let cursor = rollout.cursor.clone().map(Cursor);
        let page = engine
            .ledger
            .plan_members_page(&rollout.plan_id, rollouts::PAGE, cursor.as_ref())
            .await?;
        let (mut given, mut skipped) = (0u32, 0u32);
        for id in &page.ids {
            match subscription(engine, &rollout, id).await? {
                Planned::Given => given += 1,
                Planned::Skipped => skipped += 1,
                Planned::NotConcerned => {}
            }
        }
        let next = Rollout {
            cursor: page.next.as_ref().map(|c| c.0.clone()),
            planned: rollout.planned + given,
            skipped: rollout.skipped + skipped,
            done_at: page.next.is_none().then(|| engine.now()),
            rev: rollout.rev + 1,
            ..rollout.clone()
        };
        match engine.ledger.save_rollout(&next).await {
            Ok(()) => {}
            Err(LedgerError::Conflict(_)) => {
                // Another run is planning it: leave it to that one.
                info!(plan_id = %rollout.plan_id, "plan-wide price change planned by another run meanwhile");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        report.planned += u64::from(given);
        report.skipped += u64::from(skipped);
        if next.done_at.is_some() {
            report.finished += 1;
            info!(
                plan_id = %next.plan_id,
                version = next.to_version,
                planned = next.planned,
                skipped = next.skipped,
                "plan-wide price change planned for every subscription of the plan"
            );
            return Ok(());
        }
        rollout = next;
    }
}

/// Gives `id` the rollout's change, if it is the rollout's to change and
/// its state allows one.
async fn subscription<L: Ledger, G>(
    engine: &Engine<L, G>,
    rollout: &Rollout,
    id: &SubscriptionId,
) -> Result<Planned, LedgerError> {
    let done = retry_on_conflict(3, (), |()| async move {
        let Some(sub) = engine.ledger.get_subscription(id).await? else {
            return Ok(Pass::Done(Planned::NotConcerned));
        };
        if !rollouts::concerns(rollout, &sub) {
            return Ok(Pass::Done(Planned::NotConcerned));
        }
        let started = engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), 1)
            .await?
            .is_some();
        // A yearly or N-month calendar takes the change from its first
        // period in or after the month (decision 75).
        let effective = sub
            .first_period_from(&rollout.effective)
            .unwrap_or_else(|| rollout.effective.clone());
        let request = Request {
            plan: rollout.plan.clone(),
            plan_ref: Some(PlanRef {
                id: rollout.plan_id.clone(),
                version: rollout.to_version,
            }),
            effective: Some(&effective),
            on_no_consent: rollout.on_no_consent,
            window_days: engine.settings.charging.consent_window_days,
            started,
        };
        let next = match price_changes::requested(&sub, request, engine.now()) {
            Ok(next) => next,
            Err(why) => {
                info!(subscription_id = %sub.id, plan_id = %rollout.plan_id, reason = %why, "plan-wide price change: subscription skipped");
                return Ok(Pass::Done(Planned::Skipped));
            }
        };
        let entry = AuditEntry {
            subscription_id: sub.id.clone(),
            at: engine.clock.now_precise(),
            actor: "billing-run".into(),
            principal: None,
            action: "price change".into(),
            detail: format!(
                "plan-wide: {} KRW → {} KRW ({} v{}) from period {}",
                sub.plan.amount,
                rollout.plan.amount,
                rollout.plan_id,
                rollout.to_version,
                rollout.effective
            ),
        };
        let change = SubscriptionChange {
            next: &next,
            audit: Some(&entry),
            lock: LockChange::Keep,
        };
        match engine.ledger.change_subscription(&change).await {
            Ok(()) => Ok(Pass::Done(Planned::Given)),
            Err(LedgerError::Conflict(_)) => Ok(Pass::Again(())),
            Err(e) => Err(e),
        }
    })
    .await?;
    // Still changing under us after three tries: the next rollout page
    // does not come back to it, so say so; the merchant can give it the
    // change by hand.
    Ok(done.unwrap_or_else(|| {
        warn!(subscription_id = %id, plan_id = %rollout.plan_id, "plan-wide price change: the subscription kept changing; skipped");
        Planned::Skipped
    }))
}
