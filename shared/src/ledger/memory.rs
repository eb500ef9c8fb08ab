//! The ledger in memory: a second, complete implementation of the port
//! with the same conditional semantics as DynamoDB (versions, claim tokens,
//! leases, all-or-nothing writes, instants kept to whole seconds like the
//! table's UNIX-second attributes, the sparse due and review indexes). It
//! powers the deterministic simulation and the benchmarks; the contract
//! suite holds it to the DynamoDB adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::billing::{
    AttemptEvent, AttemptState, AuditEntry, ChargeAttempt, PeriodId, Registration,
    RegistrationStatus, Subscription, SubscriptionId, SubscriptionStatus,
};
use crate::ledger::{
    Activation, AttemptKey, Cursor, DuePage, Guard, IDEMPOTENCY_STALE, IDEMPOTENCY_TTL,
    KeyReplacement, Ledger, LedgerError, LockChange, RefundIntent, RefundState, RequestState,
    ReviewDecision, ReviewFlag, ReviewPage, Sent, Settlement, StoredResponse, SubscriptionChange,
    TakeOver, UnknownOutcome, UserItems,
};

/// An entry of the due index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Subscription(SubscriptionId),
    Registration(String),
    Attempt(AttemptKey),
}

impl Due {
    fn encode(&self) -> String {
        match self {
            Self::Subscription(id) => format!("S{id}"),
            Self::Registration(uid) => format!("R{uid}"),
            Self::Attempt((id, period, n)) => format!("A{id}.{period}.{n}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        match s.split_at_checked(1)? {
            ("S", id) => SubscriptionId::parse(id).map(Self::Subscription),
            ("R", uid) if !uid.is_empty() => Some(Self::Registration(uid.to_owned())),
            ("A", key) => {
                let mut parts = key.split('.');
                let id = SubscriptionId::parse(parts.next()?)?;
                let period = PeriodId::parse(parts.next()?)?;
                let n = parts.next()?.parse().ok()?;
                Some(Self::Attempt((id, period, n)))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Request {
    fingerprint: String,
    response: Option<StoredResponse>,
    started_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    registrations: BTreeMap<String, Registration>,
    subscriptions: BTreeMap<SubscriptionId, Subscription>,
    attempts: BTreeMap<AttemptKey, ChargeAttempt>,
    /// The due index, and where each entry sits in it.
    due: BTreeSet<(i64, Due)>,
    due_at: BTreeMap<Due, i64>,
    /// The review index: (flagged at, attempt).
    review: BTreeSet<(i64, AttemptKey)>,
    users: BTreeMap<String, UserItems>,
    locks: BTreeMap<(String, String), SubscriptionId>,
    audit: BTreeMap<SubscriptionId, Vec<AuditEntry>>,
    requests: BTreeMap<String, Request>,
    /// Refund requests by (attempt's merchant uid, idempotency key).
    refunds: BTreeMap<(String, String), RefundIntent>,
    /// Subscriptions whose stored item is unreadable (a test hook).
    corrupt: BTreeSet<SubscriptionId>,
    /// Requests served, by operation (for the benchmarks' cost figures).
    counts: BTreeMap<&'static str, u64>,
}

/// An in-memory ledger. Cheap to share behind an `Arc`; one mutex, held for
/// the length of one operation (each operation is atomic, as DynamoDB's are).
#[derive(Default)]
pub struct InMemoryLedger {
    state: Mutex<State>,
}

impl std::fmt::Debug for InMemoryLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryLedger").finish_non_exhaustive()
    }
}

/// Instants as the table keeps them: whole UNIX seconds.
fn secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn opt_secs(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(secs)
}

fn stored_subscription(sub: &Subscription) -> Subscription {
    let mut s = sub.clone();
    s.next_charge_at = secs(s.next_charge_at);
    s.created_at = secs(s.created_at);
    s.updated_at = secs(s.updated_at);
    s.key.inserted_at = secs(s.key.inserted_at);
    s.ended_at = opt_secs(s.ended_at);
    s
}

fn stored_attempt(a: &ChargeAttempt) -> ChargeAttempt {
    let mut a = a.clone();
    a.lease_until = opt_secs(a.lease_until);
    a.sent_at = opt_secs(a.sent_at);
    a.paid_at = opt_secs(a.paid_at);
    a.created_at = secs(a.created_at);
    a.updated_at = secs(a.updated_at);
    a.retry_at = opt_secs(a.retry_at);
    if let Some(r) = a.resolution.as_mut() {
        r.at = secs(r.at);
    }
    a
}

/// Audit times keep microseconds (their order within a second matters).
fn stored_audit(e: &AuditEntry) -> AuditEntry {
    let mut e = e.clone();
    e.at = DateTime::from_timestamp_micros(e.at.timestamp_micros()).unwrap_or(e.at);
    e
}

fn key_of(a: &ChargeAttempt) -> AttemptKey {
    (a.subscription_id.clone(), a.period.clone(), a.attempt)
}

fn conflict(what: &str) -> LedgerError {
    LedgerError::Conflict(format!("{what}: condition failed"))
}

impl State {
    fn count(&mut self, operation: &'static str) {
        *self.counts.entry(operation).or_insert(0) += 1;
    }

    fn subscription(&self, id: &SubscriptionId) -> Result<Option<&Subscription>, LedgerError> {
        if self.corrupt.contains(id) {
            return Err(LedgerError::Corrupt(format!(
                "subscription {id}: attribute unreadable"
            )));
        }
        Ok(self.subscriptions.get(id))
    }

    fn index(&mut self, entry: Due, at: Option<DateTime<Utc>>) {
        if let Some(old) = self.due_at.remove(&entry) {
            self.due.remove(&(old, entry.clone()));
        }
        if let Some(at) = at {
            self.due.insert((at.timestamp(), entry.clone()));
            self.due_at.insert(entry, at.timestamp());
        }
    }

    /// Stores a subscription and keeps the due index in step (sparse: only
    /// chargeable subscriptions are in it).
    fn put_subscription(&mut self, sub: &Subscription) {
        let sub = stored_subscription(sub);
        let at = sub.status.is_chargeable().then_some(sub.next_charge_at);
        self.index(Due::Subscription(sub.id.clone()), at);
        self.subscriptions.insert(sub.id.clone(), sub);
    }

    fn version_is(&self, id: &SubscriptionId, version: u64) -> bool {
        self.subscriptions
            .get(id)
            .is_some_and(|s| s.version == version)
    }

    fn version_matches(&self, next: &Subscription) -> bool {
        self.version_is(&next.id, next.version.saturating_sub(1))
    }

    fn attempt_mut(&mut self, a: &ChargeAttempt) -> Option<&mut ChargeAttempt> {
        self.attempts.get_mut(&key_of(a))
    }

    /// Writes an attempt and its place in the due index (open attempts are
    /// there: claimed until their lease ends, unknown until `due_at`).
    fn put_attempt(&mut self, a: ChargeAttempt, due_at: Option<DateTime<Utc>>) {
        let key = key_of(&a);
        self.index(Due::Attempt(key.clone()), due_at.map(secs));
        self.attempts.insert(key, a);
    }

    fn unreview(&mut self, key: &AttemptKey) {
        self.review.retain(|(_, k)| k != key);
    }

    fn add_audit(&mut self, audit: Option<&AuditEntry>) {
        if let Some(e) = audit {
            self.audit
                .entry(e.subscription_id.clone())
                .or_default()
                .push(stored_audit(e));
        }
    }

    fn user(&mut self, user_id: &str) -> &mut UserItems {
        self.users.entry(user_id.to_owned()).or_default()
    }
}

impl InMemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes a subscription's stored item unreadable, like a hand-edited or
    /// half-migrated DynamoDB item (a test hook).
    pub fn corrupt_subscription(&self, id: &SubscriptionId) {
        self.lock().corrupt.insert(id.clone());
    }

    /// Every attempt stored, in key order (for checks and reports).
    pub fn all_attempts(&self) -> Vec<ChargeAttempt> {
        self.lock().attempts.values().cloned().collect()
    }

    /// Every subscription stored, in id order.
    pub fn all_subscriptions(&self) -> Vec<Subscription> {
        self.lock().subscriptions.values().cloned().collect()
    }

    /// An attempt as stored now (for checks that must not await).
    pub fn attempt_now(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Option<ChargeAttempt> {
        self.lock()
            .attempts
            .get(&(id.clone(), period.clone(), attempt))
            .cloned()
    }

    /// A subscription as stored now (for checks that must not await).
    pub fn subscription_now(&self, id: &SubscriptionId) -> Option<Subscription> {
        self.lock().subscriptions.get(id).cloned()
    }

    /// Every registration stored, in merchant_uid order.
    pub fn all_registrations(&self) -> Vec<Registration> {
        self.lock().registrations.values().cloned().collect()
    }

    /// Requests served so far, by operation.
    pub fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        self.lock().counts.clone()
    }
}

impl Ledger for InMemoryLedger {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
        if st.registrations.contains_key(&reg.merchant_uid) {
            return Err(conflict("put registration"));
        }
        let mut reg = reg.clone();
        reg.created_at = secs(reg.created_at);
        reg.expires_at = opt_secs(reg.expires_at);
        reg.sweep_at = opt_secs(reg.sweep_at);
        if reg.status == RegistrationStatus::Pending {
            st.index(Due::Registration(reg.merchant_uid.clone()), reg.sweep_at);
        }
        st.user(&reg.user_id)
            .registrations
            .push(reg.merchant_uid.clone());
        st.registrations.insert(reg.merchant_uid.clone(), reg);
        Ok(())
    }

    async fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> Result<Option<Registration>, LedgerError> {
        let mut st = self.lock();
        st.count("GetItem");
        Ok(st.registrations.get(merchant_uid).cloned())
    }

    async fn activate(&self, a: &Activation<'_>) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
        let pending = st
            .registrations
            .get(&a.reg.merchant_uid)
            .is_some_and(|r| r.status == RegistrationStatus::Pending);
        let attempt_free = a
            .first_attempt
            .is_none_or(|at| !st.attempts.contains_key(&key_of(at)));
        let lock_key = (a.sub.user_id.clone(), a.sub.plan.name.clone());
        let lock_free = !a.plan_lock || !st.locks.contains_key(&lock_key);
        if st.subscriptions.contains_key(&a.sub.id) || !pending || !attempt_free || !lock_free {
            return Err(conflict("activate"));
        }
        st.put_subscription(a.sub);
        st.user(&a.sub.user_id).subscriptions.push(a.sub.id.clone());
        if a.plan_lock {
            st.locks.insert(lock_key, a.sub.id.clone());
        }
        if let Some(r) = st.registrations.get_mut(&a.reg.merchant_uid) {
            r.status = RegistrationStatus::Completed;
            r.imp_uid = Some(a.imp_uid.to_owned());
            r.expires_at = None;
        }
        st.index(Due::Registration(a.reg.merchant_uid.clone()), None);
        if let Some(at) = a.first_attempt {
            st.put_attempt(stored_attempt(at), None);
            if at.state == AttemptState::NeedsReview {
                st.review
                    .insert((secs(at.updated_at).timestamp(), key_of(at)));
            }
        }
        Ok(())
    }

    async fn replace_key(&self, replacement: &KeyReplacement<'_>) -> Result<(), LedgerError> {
        let KeyReplacement {
            reg,
            next,
            imp_uid,
            audit,
            window_payment,
        } = *replacement;
        let mut st = self.lock();
        st.count("TransactWriteItems");
        if window_payment.is_some_and(|w| st.attempts.contains_key(&key_of(w))) {
            return Err(conflict("replace key"));
        }
        if let Some(w) = window_payment {
            let stored = stored_attempt(w);
            let key = key_of(&stored);
            let at = stored.updated_at.timestamp();
            st.put_attempt(stored, None);
            st.review.insert((at, key));
        }
        let pending = st
            .registrations
            .get(&reg.merchant_uid)
            .is_some_and(|r| r.status == RegistrationStatus::Pending);
        if !pending || !st.version_matches(next) {
            return Err(conflict("replace key"));
        }
        st.put_subscription(next);
        if let Some(r) = st.registrations.get_mut(&reg.merchant_uid) {
            r.status = RegistrationStatus::Completed;
            r.imp_uid = Some(imp_uid.to_owned());
            r.expires_at = None;
        }
        st.index(Due::Registration(reg.merchant_uid.clone()), None);
        st.add_audit(Some(audit));
        Ok(())
    }

    async fn refuse_registration(
        &self,
        reg: &Registration,
        _now: DateTime<Utc>,
        window_payment: Option<&ChargeAttempt>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count(if window_payment.is_some() {
            "TransactWriteItems"
        } else {
            "UpdateItem"
        });
        let pending = st
            .registrations
            .get(&reg.merchant_uid)
            .is_some_and(|r| r.status == RegistrationStatus::Pending);
        if !pending || window_payment.is_some_and(|w| st.attempts.contains_key(&key_of(w))) {
            return Err(conflict("refuse registration"));
        }
        if let Some(w) = window_payment {
            let stored = stored_attempt(w);
            let key = key_of(&stored);
            let at = stored.updated_at.timestamp();
            st.put_attempt(stored, None);
            st.review.insert((at, key));
        }
        if let Some(r) = st.registrations.get_mut(&reg.merchant_uid) {
            r.status = RegistrationStatus::Refused;
            r.expires_at = None;
        }
        st.index(Due::Registration(reg.merchant_uid.clone()), None);
        Ok(())
    }

    async fn user_items(&self, user_id: &str) -> Result<UserItems, LedgerError> {
        let mut st = self.lock();
        st.count("Query");
        let mut items = st.users.get(user_id).cloned().unwrap_or_default();
        items.subscriptions.sort();
        items.registrations.sort();
        items.locks = st
            .locks
            .iter()
            .filter(|((user, _), _)| user == user_id)
            .map(|((_, plan), id)| (plan.clone(), id.clone()))
            .collect();
        Ok(items)
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        let mut st = self.lock();
        st.count("GetItem");
        Ok(st.subscription(id)?.cloned())
    }

    async fn change_subscription(
        &self,
        change: &SubscriptionChange<'_>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
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
                if ours(&st, name) {
                    st.locks.remove(&key(name));
                }
            }
            LockChange::Move { from, to } => {
                if ours(&st, from) {
                    st.locks.remove(&key(from));
                }
                st.locks.insert(key(to), next.id.clone());
            }
        }
        st.add_audit(change.audit);
        Ok(())
    }

    async fn history(
        &self,
        id: &SubscriptionId,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        let mut st = self.lock();
        st.count("Query");
        // Kept in the order written; newest first.
        let mut entries = st.audit.get(id).cloned().unwrap_or_default();
        entries.reverse();
        entries.truncate(limit);
        Ok(entries)
    }

    async fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<DuePage, LedgerError> {
        let mut st = self.lock();
        st.count("Query");
        let after = match cursor {
            None => None,
            Some(c) => {
                let bad = || LedgerError::Fatal(format!("not a cursor of this ledger: {:?}", c.0));
                let (t, key) = c.0.split_once('|').ok_or_else(bad)?;
                let t: i64 = t.parse().map_err(|_| bad())?;
                Some((t, Due::decode(key).ok_or_else(bad)?))
            }
        };
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
            }
        }
        Ok(out)
    }

    async fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Result<Option<ChargeAttempt>, LedgerError> {
        let mut st = self.lock();
        st.count("GetItem");
        Ok(st
            .attempts
            .get(&(id.clone(), period.clone(), attempt))
            .cloned())
    }

    async fn list_attempts(&self, id: &SubscriptionId) -> Result<Vec<ChargeAttempt>, LedgerError> {
        let mut st = self.lock();
        st.count("Query");
        Ok(st
            .attempts
            .values()
            .filter(|a| &a.subscription_id == id)
            .cloned()
            .collect())
    }

    async fn claim_new(
        &self,
        attempt: &ChargeAttempt,
        next: &Subscription,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
        if st.attempts.contains_key(&key_of(attempt))
            || next.id != attempt.subscription_id
            || !st.version_matches(next)
        {
            return Err(conflict("claim"));
        }
        let stored = stored_attempt(attempt);
        let due = stored.lease_until;
        st.put_attempt(stored, due);
        st.put_subscription(next);
        Ok(())
    }

    async fn take_over(&self, take_over: &TakeOver<'_>) -> Result<ChargeAttempt, LedgerError> {
        let TakeOver {
            id,
            period,
            attempt,
            token,
            lease_until,
            now,
            sub_version,
        } = *take_over;
        let mut st = self.lock();
        st.count("TransactWriteItems");
        let now = secs(now);
        let key = (id.clone(), period.clone(), attempt);
        let version_ok = st.version_is(id, sub_version);
        let Some(a) = st.attempts.get(&key).cloned() else {
            return Err(conflict("take over"));
        };
        let lease_expired = a.lease_until.is_some_and(|l| l < now);
        if !version_ok
            || a.state
                .after(AttemptEvent::TakeOver { lease_expired })
                .is_err()
        {
            return Err(conflict("take over"));
        }
        let mut taken = a;
        taken.state = AttemptState::Claimed;
        taken.claim_token = Some(token.to_owned());
        taken.lease_until = Some(secs(lease_until));
        taken.updated_at = now;
        let due = taken.lease_until;
        st.put_attempt(taken.clone(), due);
        Ok(taken)
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
        let version_ok = st.version_is(&attempt.subscription_id, sub_version);
        match st.attempt_mut(attempt) {
            Some(a)
                if version_ok
                    && a.state == AttemptState::Claimed
                    && a.claim_token.as_deref() == Some(token) =>
            {
                a.sent_at = Some(secs(now));
                a.updated_at = secs(now);
                a.key_ref.clone_from(&attempt.key_ref);
                a.sends += 1;
                Ok(())
            }
            _ => Err(conflict("mark sending")),
        }
    }

    async fn mark_unknown(&self, unknown: &UnknownOutcome<'_>) -> Result<(), LedgerError> {
        let UnknownOutcome {
            attempt,
            token,
            detail,
            sent,
            now,
            due_at,
        } = *unknown;
        let mut st = self.lock();
        st.count("UpdateItem");
        let Some(a) = st.attempts.get(&key_of(attempt)).cloned() else {
            return Err(conflict("mark unknown"));
        };
        if a.state != AttemptState::Claimed || a.claim_token.as_deref() != Some(token) {
            return Err(conflict("mark unknown"));
        }
        let mut released = a;
        if sent == Sent::Never {
            released.sent_at = None;
            released.sends = released.sends.saturating_sub(1);
        }
        released.state = AttemptState::Unknown;
        released.fail_reason = Some(detail.to_owned());
        released.claim_token = None;
        released.lease_until = None;
        released.updated_at = secs(now);
        st.put_attempt(released, Some(due_at));
        Ok(())
    }

    async fn settle(&self, settlement: &Settlement<'_>) -> Result<(), LedgerError> {
        let Settlement {
            attempt,
            result,
            guard,
            next,
            now,
        } = *settlement;
        let mut st = self.lock();
        st.count("TransactWriteItems");
        if !matches!(
            result.state,
            AttemptState::Paid | AttemptState::Failed | AttemptState::Rejected
        ) {
            return Err(LedgerError::Fatal(format!(
                "an attempt is settled as paid, failed or rejected, not {}",
                result.state.as_str()
            )));
        }
        let event = match guard {
            Guard::Claim(_) => AttemptEvent::SettleByHolder(result.state),
            Guard::PaidFact if result.state == AttemptState::Paid => AttemptEvent::PaidUnclaimed,
            Guard::PaidFact => {
                return Err(LedgerError::Fatal(format!(
                    "only a paid fact may settle without the claim, not {}",
                    result.state.as_str()
                )));
            }
        };
        let allowed = st.attempts.get(&key_of(attempt)).is_some_and(|a| {
            a.state.after(event) == Ok(result.state)
                && match guard {
                    Guard::Claim(token) => a.claim_token.as_deref() == Some(token),
                    Guard::PaidFact => true,
                }
        });
        if !allowed || !st.version_matches(next) {
            return Err(conflict("settle"));
        }
        st.put_subscription(next);
        // Dunning that ends in `cancelled` ends the subscription: its lock goes.
        if next.status == SubscriptionStatus::Cancelled {
            let key = (next.user_id.clone(), next.lock_name().to_owned());
            if st.locks.get(&key) == Some(&next.id) {
                st.locks.remove(&key);
            }
        }
        if let Some(a) = st.attempts.get(&key_of(attempt)).cloned() {
            let mut settled = a;
            settled.state = result.state;
            settled.imp_uid.clone_from(&result.imp_uid);
            settled.paid_at = opt_secs(result.paid_at);
            settled.fail_reason.clone_from(&result.fail_reason);
            settled.retry_at = result.retry_at.map(secs);
            settled.claim_token = None;
            settled.lease_until = None;
            settled.updated_at = secs(now);
            st.put_attempt(settled, None);
        }
        Ok(())
    }

    async fn flag_review(&self, flag: &ReviewFlag<'_>) -> Result<(), LedgerError> {
        let ReviewFlag {
            attempt,
            token,
            reason,
            next,
            now,
        } = *flag;
        let mut st = self.lock();
        st.count("TransactWriteItems");
        let allowed = st.attempts.get(&key_of(attempt)).is_some_and(|a| {
            a.state.after(AttemptEvent::Flag).is_ok()
                && (a.state != AttemptState::Claimed
                    || token.is_some_and(|t| a.claim_token.as_deref() == Some(t)))
        });
        if !allowed || !st.version_matches(next) {
            return Err(conflict("flag review"));
        }
        st.put_subscription(next);
        if let Some(a) = st.attempts.get(&key_of(attempt)).cloned() {
            let mut flagged = a;
            flagged.state = AttemptState::NeedsReview;
            flagged.fail_reason = Some(reason.to_owned());
            flagged.claim_token = None;
            flagged.lease_until = None;
            flagged.updated_at = secs(now);
            let key = key_of(&flagged);
            st.put_attempt(flagged, None);
            st.review.insert((secs(now).timestamp(), key));
        }
        Ok(())
    }

    async fn resolve(&self, decision: &ReviewDecision<'_>) -> Result<(), LedgerError> {
        let ReviewDecision {
            attempt,
            result,
            resolution,
            next,
            audit,
        } = *decision;
        let mut st = self.lock();
        st.count("TransactWriteItems");
        let allowed = st.attempts.get(&key_of(attempt)).is_some_and(|a| {
            a.state.after(AttemptEvent::Resolve(result.state)) == Ok(result.state)
        });
        if !allowed || !st.version_matches(next) {
            return Err(conflict("resolve"));
        }
        st.put_subscription(next);
        if let Some(a) = st.attempts.get(&key_of(attempt)).cloned() {
            let mut resolved = a;
            resolved.state = result.state;
            if let Some(amount) = result.amount {
                resolved.amount = amount;
            }
            resolved.imp_uid.clone_from(&result.imp_uid);
            resolved.paid_at = opt_secs(result.paid_at);
            resolved.fail_reason.clone_from(&result.fail_reason);
            resolved.retry_at = result.retry_at.map(secs);
            resolved.resolution = Some(resolution.clone());
            resolved.updated_at = secs(resolution.at);
            let resolved = stored_attempt(&resolved);
            let key = key_of(&resolved);
            st.put_attempt(resolved, None);
            st.unreview(&key);
        }
        st.add_audit(Some(audit));
        Ok(())
    }

    async fn count_review(&self) -> Result<u64, LedgerError> {
        let mut st = self.lock();
        st.count("Query");
        Ok(st.review.len() as u64)
    }

    async fn review_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<ReviewPage, LedgerError> {
        let mut st = self.lock();
        st.count("Query");
        let after = match cursor {
            None => None,
            Some(c) => {
                let bad = || LedgerError::Fatal(format!("not a cursor of this ledger: {:?}", c.0));
                let (t, key) = c.0.split_once('|').ok_or_else(bad)?;
                match (t.parse::<i64>(), Due::decode(key)) {
                    (Ok(t), Some(Due::Attempt(key))) => Some((t, key)),
                    _ => return Err(bad()),
                }
            }
        };
        let limit = limit.clamp(1, 1000);
        let range = match &after {
            Some(k) => st.review.range((
                std::ops::Bound::Excluded(k.clone()),
                std::ops::Bound::Unbounded,
            )),
            None => st.review.range(..),
        };
        let page: Vec<(i64, AttemptKey)> = range.take(limit + 1).cloned().collect();
        let more = page.len() > limit;
        let page = &page[..page.len().min(limit)];
        Ok(ReviewPage {
            attempts: page.iter().map(|(_, k)| k.clone()).collect(),
            next: if more {
                page.last()
                    .map(|(t, k)| Cursor(format!("{t}|{}", Due::Attempt(k.clone()).encode())))
            } else {
                None
            },
        })
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, LedgerError> {
        let mut st = self.lock();
        st.count(if audit.is_some() {
            "TransactWriteItems"
        } else {
            "UpdateItem"
        });
        let changed = match st.attempt_mut(attempt) {
            Some(a) if a.refunded < refunded => {
                a.refunded = refunded;
                a.updated_at = secs(now);
                true
            }
            _ => false,
        };
        if changed {
            st.add_audit(audit);
        }
        Ok(changed)
    }

    async fn get_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
    ) -> Result<Option<RefundIntent>, LedgerError> {
        let mut st = self.lock();
        st.count("GetItem");
        Ok(st
            .refunds
            .get(&(attempt.merchant_uid.clone(), key.to_owned()))
            .cloned())
    }

    async fn begin_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
    ) -> Result<RefundIntent, LedgerError> {
        let mut st = self.lock();
        st.count("PutItem");
        if !st.attempts.contains_key(&key_of(attempt)) {
            return Err(conflict("begin refund"));
        }
        let key = (attempt.merchant_uid.clone(), intent.key.clone());
        if let Some(existing) = st.refunds.get(&key) {
            return Ok(existing.clone());
        }
        let mut stored = intent.clone();
        stored.created_at = secs(stored.created_at);
        stored.updated_at = secs(stored.updated_at);
        st.refunds.insert(key, stored.clone());
        Ok(stored)
    }

    async fn finish_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
        audit: Option<&AuditEntry>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
        let key = (attempt.merchant_uid.clone(), intent.key.clone());
        let requested = st
            .refunds
            .get(&key)
            .is_some_and(|r| r.state == RefundState::Requested);
        if !requested
            || intent.state == RefundState::Requested
            || !st.attempts.contains_key(&key_of(attempt))
        {
            return Err(conflict("finish refund"));
        }
        let now = secs(intent.updated_at);
        if let (Some(total), Some(a)) = (intent.refunded_total, st.attempt_mut(attempt))
            && a.refunded < total
        {
            a.refunded = total;
            a.updated_at = now;
        }
        if let Some(r) = st.refunds.get_mut(&key) {
            r.state = intent.state;
            r.refunded_total = intent.refunded_total;
            r.updated_at = now;
        }
        st.add_audit(audit);
        Ok(())
    }

    async fn begin_request(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestState, LedgerError> {
        let mut st = self.lock();
        st.count("PutItem");
        let now = secs(now);
        if let Some(existing) = st.requests.get(key).filter(|r| r.expires_at > now) {
            if existing.fingerprint != fingerprint {
                return Ok(RequestState::Mismatch);
            }
            if let Some(response) = &existing.response {
                return Ok(RequestState::Replay(response.clone()));
            }
            if existing.started_at > now - IDEMPOTENCY_STALE {
                return Ok(RequestState::InProgress);
            }
        }
        st.requests.insert(
            key.to_owned(),
            Request {
                fingerprint: fingerprint.to_owned(),
                response: None,
                started_at: now,
                expires_at: now + IDEMPOTENCY_TTL,
            },
        );
        Ok(RequestState::Fresh)
    }

    async fn finish_request(
        &self,
        key: &str,
        response: &StoredResponse,
        _now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("UpdateItem");
        match st.requests.get_mut(key) {
            Some(r) if r.response.is_none() => {
                r.response = Some(response.clone());
                Ok(())
            }
            _ => Err(conflict("finish request")),
        }
    }

    async fn abandon_request(&self, key: &str) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("DeleteItem");
        if st.requests.get(key).is_some_and(|r| r.response.is_none()) {
            st.requests.remove(key);
        }
        Ok(())
    }
}
