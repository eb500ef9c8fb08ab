//! The ledger in memory: a second, complete implementation of the port
//! with the same conditional semantics as DynamoDB (versions, claim tokens,
//! leases, all-or-nothing settlement, instants kept to whole seconds like the
//! table's UNIX-second attributes). It powers the deterministic simulation
//! and the benchmarks; the contract suite holds it to the DynamoDB adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::billing::{
    AttemptEvent, AttemptResult, AttemptState, ChargeAttempt, PeriodId, Registration,
    RegistrationStatus, Subscription, SubscriptionId,
};
use crate::ledger::{Cursor, DuePage, Guard, Ledger, LedgerError, Sent};

type AttemptKey = (SubscriptionId, PeriodId, u32);

/// An entry of the due index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Subscription(SubscriptionId),
    Registration(String),
}

impl Due {
    fn encode(&self) -> String {
        match self {
            Self::Subscription(id) => format!("S{id}"),
            Self::Registration(uid) => format!("R{uid}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        match s.split_at_checked(1)? {
            ("S", id) => SubscriptionId::parse(id).map(Self::Subscription),
            ("R", uid) if !uid.is_empty() => Some(Self::Registration(uid.to_owned())),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    registrations: BTreeMap<String, Registration>,
    subscriptions: BTreeMap<SubscriptionId, Subscription>,
    attempts: BTreeMap<AttemptKey, ChargeAttempt>,
    /// The due index: (next_charge_at, id) of every chargeable subscription
    /// and (sweep_at, uid) of every pending registration that has one.
    due: BTreeSet<(i64, Due)>,
    /// Subscriptions whose stored item is unreadable (a test hook).
    corrupt: BTreeSet<SubscriptionId>,
    /// Requests served, by operation (for the benchmarks' cost figures).
    requests: BTreeMap<&'static str, u64>,
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
    s
}

fn stored_attempt(a: &ChargeAttempt) -> ChargeAttempt {
    let mut a = a.clone();
    a.lease_until = opt_secs(a.lease_until);
    a.sent_at = opt_secs(a.sent_at);
    a.paid_at = opt_secs(a.paid_at);
    a.created_at = secs(a.created_at);
    a.updated_at = secs(a.updated_at);
    a
}

fn key_of(a: &ChargeAttempt) -> AttemptKey {
    (a.subscription_id.clone(), a.period.clone(), a.attempt)
}

fn conflict(what: &str) -> LedgerError {
    LedgerError::Conflict(format!("{what}: condition failed"))
}

impl State {
    fn count(&mut self, operation: &'static str) {
        *self.requests.entry(operation).or_insert(0) += 1;
    }

    fn subscription(&self, id: &SubscriptionId) -> Result<Option<&Subscription>, LedgerError> {
        if self.corrupt.contains(id) {
            return Err(LedgerError::Corrupt(format!(
                "subscription {id}: attribute unreadable"
            )));
        }
        Ok(self.subscriptions.get(id))
    }

    /// Stores a subscription and keeps the due index in step (sparse: only
    /// chargeable subscriptions are in it).
    fn put_subscription(&mut self, sub: &Subscription) {
        let sub = stored_subscription(sub);
        if let Some(old) = self.subscriptions.get(&sub.id) {
            self.due.remove(&(
                old.next_charge_at.timestamp(),
                Due::Subscription(old.id.clone()),
            ));
        }
        if sub.status.is_chargeable() {
            self.due.insert((
                sub.next_charge_at.timestamp(),
                Due::Subscription(sub.id.clone()),
            ));
        }
        self.subscriptions.insert(sub.id.clone(), sub);
    }

    fn version_matches(&self, next: &Subscription) -> bool {
        self.subscriptions
            .get(&next.id)
            .is_some_and(|s| s.version == next.version.saturating_sub(1))
    }

    fn attempt_mut(&mut self, a: &ChargeAttempt) -> Option<&mut ChargeAttempt> {
        self.attempts.get_mut(&key_of(a))
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
        self.lock().requests.clone()
    }
}

impl Ledger for InMemoryLedger {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("PutItem");
        if st.registrations.contains_key(&reg.merchant_uid) {
            return Err(conflict("put registration"));
        }
        let mut reg = reg.clone();
        reg.created_at = secs(reg.created_at);
        reg.expires_at = opt_secs(reg.expires_at);
        reg.sweep_at = opt_secs(reg.sweep_at);
        if let (RegistrationStatus::Pending, Some(at)) = (reg.status, reg.sweep_at) {
            st.due
                .insert((at.timestamp(), Due::Registration(reg.merchant_uid.clone())));
        }
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

    async fn activate(
        &self,
        reg: &Registration,
        sub: &Subscription,
        imp_uid: &str,
        first_attempt: Option<&ChargeAttempt>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
        let pending = st
            .registrations
            .get(&reg.merchant_uid)
            .is_some_and(|r| r.status == RegistrationStatus::Pending);
        let attempt_free = first_attempt.is_none_or(|a| !st.attempts.contains_key(&key_of(a)));
        if st.subscriptions.contains_key(&sub.id) || !pending || !attempt_free {
            return Err(conflict("activate"));
        }
        st.put_subscription(sub);
        if let Some(r) = st.registrations.get_mut(&reg.merchant_uid) {
            r.status = RegistrationStatus::Completed;
            r.imp_uid = Some(imp_uid.to_owned());
            r.expires_at = None;
            if let Some(at) = r.sweep_at {
                let key = (at.timestamp(), Due::Registration(r.merchant_uid.clone()));
                st.due.remove(&key);
            }
        }
        if let Some(a) = first_attempt {
            st.attempts.insert(key_of(a), stored_attempt(a));
        }
        Ok(())
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        let mut st = self.lock();
        st.count("GetItem");
        Ok(st.subscription(id)?.cloned())
    }

    async fn save_subscription(&self, next: &Subscription) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("PutItem");
        if !st.version_matches(next) {
            return Err(conflict("save subscription"));
        }
        st.put_subscription(next);
        Ok(())
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
        let next = if more {
            page.last()
                .map(|(t, key)| Cursor(format!("{t}|{}", key.encode())))
        } else {
            None
        };
        let mut out = DuePage {
            ids: Vec::new(),
            registrations: Vec::new(),
            corrupt: Vec::new(),
            next,
        };
        for (_, key) in page {
            match key {
                Due::Subscription(id) => out.ids.push(id.clone()),
                Due::Registration(uid) => out.registrations.push(uid.clone()),
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

    async fn claim_new(&self, attempt: &ChargeAttempt) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("PutItem");
        if st.attempts.contains_key(&key_of(attempt)) {
            return Err(conflict("claim"));
        }
        st.attempts.insert(key_of(attempt), stored_attempt(attempt));
        Ok(())
    }

    async fn take_over(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
        token: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ChargeAttempt, LedgerError> {
        let mut st = self.lock();
        st.count("UpdateItem");
        let now = secs(now);
        let Some(a) = st.attempts.get_mut(&(id.clone(), period.clone(), attempt)) else {
            return Err(conflict("take over"));
        };
        let lease_expired = a.lease_until.is_some_and(|l| l < now);
        if a.state
            .after(AttemptEvent::TakeOver { lease_expired })
            .is_err()
        {
            return Err(conflict("take over"));
        }
        a.state = AttemptState::Claimed;
        a.claim_token = Some(token.to_owned());
        a.lease_until = Some(secs(lease_until));
        a.updated_at = now;
        Ok(a.clone())
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("UpdateItem");
        match st.attempt_mut(attempt) {
            Some(a)
                if a.state == AttemptState::Claimed && a.claim_token.as_deref() == Some(token) =>
            {
                a.sent_at = Some(secs(now));
                a.updated_at = secs(now);
                Ok(())
            }
            _ => Err(conflict("mark sending")),
        }
    }

    async fn mark_unknown(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        detail: &str,
        sent: Sent,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("UpdateItem");
        match st.attempt_mut(attempt) {
            Some(a)
                if a.state == AttemptState::Claimed && a.claim_token.as_deref() == Some(token) =>
            {
                if sent == Sent::Never {
                    a.sent_at = None;
                }
                a.state = AttemptState::Unknown;
                a.fail_reason = Some(detail.to_owned());
                a.claim_token = None;
                a.lease_until = None;
                a.updated_at = secs(now);
                Ok(())
            }
            _ => Err(conflict("mark unknown")),
        }
    }

    async fn settle(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        guard: Guard<'_>,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.count("TransactWriteItems");
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
        if let Some(a) = st.attempt_mut(attempt) {
            a.state = result.state;
            a.imp_uid.clone_from(&result.imp_uid);
            a.paid_at = opt_secs(result.paid_at);
            a.fail_reason.clone_from(&result.fail_reason);
            a.claim_token = None;
            a.lease_until = None;
            a.updated_at = secs(now);
        }
        Ok(())
    }

    async fn flag_review(
        &self,
        attempt: &ChargeAttempt,
        token: Option<&str>,
        reason: &str,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
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
        if let Some(a) = st.attempt_mut(attempt) {
            a.state = AttemptState::NeedsReview;
            a.fail_reason = Some(reason.to_owned());
            a.claim_token = None;
            a.lease_until = None;
            a.updated_at = secs(now);
        }
        Ok(())
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let mut st = self.lock();
        st.count("UpdateItem");
        match st.attempt_mut(attempt) {
            Some(a) if a.refunded < refunded => {
                a.refunded = refunded;
                a.updated_at = secs(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
