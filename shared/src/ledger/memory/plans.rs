//! The plan catalogue in memory: every version by (id, version); the
//! newest of each id is the catalogue's entry, as the table's `LATEST#`
//! items are.

use super::*;
use crate::billing::plans::{PlanId, PlanRecord};
use crate::billing::rollouts::Rollout;
use crate::ledger::PlanPage;

/// A page cursor of the catalogue: the last id of the page before.
const CURSOR_PREFIX: &str = "plans|";

pub(super) async fn put_plan(db: &InMemoryLedger, plan: &PlanRecord) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let key = (plan.id.clone(), plan.version);
    if st.plans.contains_key(&key) {
        return Err(conflict("put plan"));
    }
    let mut stored = plan.clone();
    stored.created_at = secs(plan.created_at);
    st.plans.insert(key, stored);
    Ok(())
}

pub(super) async fn get_plan(
    db: &InMemoryLedger,
    id: &PlanId,
    version: Option<u32>,
) -> Result<Option<PlanRecord>, LedgerError> {
    let mut st = db.lock();
    st.count("GetItem");
    Ok(match version {
        Some(v) => st.plans.get(&(id.clone(), v)).cloned(),
        None => newest(&st, id).cloned(),
    })
}

fn newest<'a>(st: &'a State, id: &PlanId) -> Option<&'a PlanRecord> {
    st.plans
        .range((id.clone(), 0)..=(id.clone(), u32::MAX))
        .next_back()
        .map(|(_, p)| p)
}

pub(super) async fn plans_page(
    db: &InMemoryLedger,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<PlanPage, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    let after = match cursor {
        None => None,
        Some(c) => Some(
            c.0.strip_prefix(CURSOR_PREFIX)
                .and_then(PlanId::parse)
                .ok_or_else(|| not_a_cursor(cursor))?,
        ),
    };
    let limit = limit.clamp(1, 1000);
    let mut ids: Vec<&PlanId> = st.plans.keys().map(|(id, _)| id).collect();
    ids.dedup();
    let page: Vec<PlanRecord> = ids
        .into_iter()
        .filter(|id| after.as_ref().is_none_or(|a| *id > a))
        .take(limit + 1)
        .filter_map(|id| newest(&st, id).cloned())
        .collect();
    let more = page.len() > limit;
    let plans: Vec<PlanRecord> = page.into_iter().take(limit).collect();
    let next = more
        .then(|| {
            plans
                .last()
                .map(|p| Cursor(format!("{CURSOR_PREFIX}{}", p.id)))
        })
        .flatten();
    Ok(PlanPage { plans, next })
}

// ---- plan-wide price changes (decision 71) -------------------------------

pub(super) async fn put_plan_rollout(
    db: &InMemoryLedger,
    plan: &PlanRecord,
    rollout: &Rollout,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let key = (plan.id.clone(), plan.version);
    let older = newest(&st, &plan.id).is_some_and(|p| p.version < plan.version);
    let open = st.rollouts.get(&plan.id).is_some_and(Rollout::is_open);
    if st.plans.contains_key(&key) || !older || open {
        return Err(conflict("put plan rollout"));
    }
    let mut stored = plan.clone();
    stored.created_at = secs(plan.created_at);
    st.plans.insert(key, stored);
    st.rollouts.insert(plan.id.clone(), stored_rollout(rollout));
    Ok(())
}

/// As the table keeps it: instants in whole seconds.
fn stored_rollout(r: &Rollout) -> Rollout {
    let mut r = r.clone();
    r.requested_at = secs(r.requested_at);
    r.done_at = opt_secs(r.done_at);
    r
}

pub(super) async fn get_rollout(
    db: &InMemoryLedger,
    plan: &PlanId,
) -> Result<Option<Rollout>, LedgerError> {
    let mut st = db.lock();
    st.count("GetItem");
    Ok(st.rollouts.get(plan).cloned())
}

pub(super) async fn open_rollouts(db: &InMemoryLedger) -> Result<Vec<Rollout>, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    Ok(st
        .rollouts
        .values()
        .filter(|r| r.is_open())
        .cloned()
        .collect())
}

pub(super) async fn save_rollout(db: &InMemoryLedger, next: &Rollout) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("PutItem");
    let fits = st
        .rollouts
        .get(&next.plan_id)
        .is_some_and(|r| r.to_version == next.to_version && next.rev.checked_sub(1) == Some(r.rev));
    if !fits {
        return Err(conflict("save rollout"));
    }
    st.rollouts
        .insert(next.plan_id.clone(), stored_rollout(next));
    Ok(())
}
