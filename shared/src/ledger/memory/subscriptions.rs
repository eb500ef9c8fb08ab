//! Subscriptions in memory: reads, versioned changes, the audit history and the
//! due index.

use super::*;

pub(super) async fn get_subscription(
    db: &InMemoryLedger,
    id: &SubscriptionId,
) -> Result<Option<Subscription>, LedgerError> {
    let mut st = db.lock();
    st.count("GetItem");
    Ok(st.subscription(id)?.cloned())
}

pub(super) async fn change_subscription(
    db: &InMemoryLedger,
    change: &SubscriptionChange<'_>,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    change_in(&mut st, change)
}

/// [`change_subscription`] inside an operation holding the state.
pub(super) fn change_in(
    st: &mut State,
    change: &SubscriptionChange<'_>,
) -> Result<(), LedgerError> {
    let next = change.next;
    let key = |name: &str| (next.user_id.clone(), name.to_owned());
    let ours = |st: &State, name: &str| st.locks.get(&key(name)) == Some(&next.id);
    let lock_ok = match change.lock {
        LockChange::Move { to, .. } => st.locks.get(&key(to)).is_none_or(|h| h == &next.id),
        LockChange::Keep | LockChange::Release(_) => true,
    };
    if !st.version_matches(next) || !lock_ok {
        return Err(conflict("change subscription"));
    }
    st.put_subscription(next);
    match change.lock {
        LockChange::Keep => {}
        LockChange::Release(name) => {
            if ours(st, name) {
                st.locks.remove(&key(name));
            }
        }
        LockChange::Move { from, to } => {
            if ours(st, from) {
                st.locks.remove(&key(from));
            }
            st.locks.insert(key(to), next.id.clone());
        }
    }
    st.add_audit(change.audit);
    Ok(())
}

pub(super) async fn history(
    db: &InMemoryLedger,
    id: &SubscriptionId,
    limit: usize,
) -> Result<Vec<AuditEntry>, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    // Kept in the order written; newest first.
    let mut entries = st.audit.get(id).cloned().unwrap_or_default();
    entries.reverse();
    entries.truncate(limit);
    Ok(entries)
}

pub(super) async fn due_page(
    db: &InMemoryLedger,
    now: DateTime<Utc>,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<DuePage, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    let after = decode_cursor(cursor)?;
    let now = now.timestamp();
    let limit = limit.clamp(1, 1000);
    let range = match &after {
        Some(k) => st.due.range((
            std::ops::Bound::Excluded(k.clone()),
            std::ops::Bound::Unbounded,
        )),
        None => st.due.range(..),
    };
    let page: Vec<(i64, Due)> = range
        .take_while(|(t, _)| *t <= now)
        .take(limit + 1)
        .cloned()
        .collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let mut out = DuePage {
        next: if more {
            page.last()
                .map(|(t, key)| Cursor(format!("{t}|{}", key.encode())))
        } else {
            None
        },
        ..DuePage::default()
    };
    for (_, key) in page {
        match key {
            Due::Subscription(id) => out.ids.push(id.clone()),
            Due::Registration(uid) => out.registrations.push(uid.clone()),
            Due::Attempt(key) => out.attempts.push(key.clone()),
            Due::Refund(_) => {} // only in the review set
        }
    }
    Ok(out)
}

/// The subscriptions whose price increase waits for an answer, by the
/// consent request's time then id (the one index's order); the cursor is
/// the last `{seconds}|{id}` read.
pub(super) async fn pending_consent_page(
    db: &InMemoryLedger,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<IdPage, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    let keys = st
        .subscriptions
        .values()
        .filter_map(|s| {
            s.awaiting_consent_since()
                .map(|t| (t.timestamp(), s.id.clone()))
        })
        .collect();
    keyed_page(keys, limit, cursor)
}

/// The subscriptions of `plan` that have not ended (the `plan` index), by
/// creation then id; the cursor is the last `{seconds}|{id}` read.
pub(super) async fn plan_members_page(
    db: &InMemoryLedger,
    plan: &crate::billing::plans::PlanId,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<IdPage, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    let keys = st
        .subscriptions
        .values()
        .filter(|s| s.plan_member() == Some(plan))
        .map(|s| (s.created_at.timestamp(), s.id.clone()))
        .collect();
    keyed_page(keys, limit, cursor)
}

/// A page of an index of (seconds, id) keys, after the cursor's key.
fn keyed_page(
    mut keys: Vec<(i64, SubscriptionId)>,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<IdPage, LedgerError> {
    let after = match cursor {
        None => None,
        Some(c) => {
            let bad = || LedgerError::Fatal(format!("not a cursor of this list: {:?}", c.0));
            let (t, id) = c.0.split_once('|').ok_or_else(bad)?;
            Some((
                t.parse::<i64>().map_err(|_| bad())?,
                SubscriptionId::parse(id).ok_or_else(bad)?,
            ))
        }
    };
    keys.retain(|k| after.as_ref().is_none_or(|a| k > a));
    keys.sort();
    let limit = limit.clamp(1, 1000);
    let more = keys.len() > limit;
    keys.truncate(limit);
    Ok(IdPage {
        next: if more {
            keys.last().map(|(t, id)| Cursor(format!("{t}|{id}")))
        } else {
            None
        },
        ids: keys.into_iter().map(|(_, id)| id).collect(),
    })
}
