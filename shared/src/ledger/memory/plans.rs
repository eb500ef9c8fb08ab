//! The plan catalogue in memory: every version by (id, version); the
//! newest of each id is the catalogue's entry, as the table's `LATEST#`
//! items are.

use super::*;
use crate::billing::plans::{PlanId, PlanRecord};
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
