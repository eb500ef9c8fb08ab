//! The ledger in memory: a second, complete implementation of the port
//! with the same conditional semantics as DynamoDB (versions, claim tokens,
//! leases, all-or-nothing writes, instants kept to whole seconds like the
//! table's UNIX-second attributes, the sparse due and review indexes). It
//! powers the deterministic simulation and the benchmarks; the contract
//! suite holds it to the DynamoDB adapter.
//!
//! The operations live by aggregate (`registrations`, `subscriptions`,
//! `attempts`, `review`, `refunds`, `requests`, `plans`, `coupons`), each a function
//! over the ledger; this file holds the state, its helpers and the port's delegation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::billing::{
    AttemptEvent, AttemptState, AuditEntry, ChargeAttempt, PeriodId, Registration,
    RegistrationStatus, Subscription, SubscriptionId, SubscriptionStatus,
};
use crate::ledger::{
    Activation, AttemptKey, Cursor, DuePage, Guard, IDEMPOTENCY_STALE, IDEMPOTENCY_TTL, IdPage,
    KeyReplacement, Ledger, LedgerError, LockChange, RefundIntent, RefundState, RequestState,
    ReviewDecision, ReviewFlag, ReviewPage, Sent, Settlement, StoredResponse, SubscriptionChange,
    TakeOver, UnknownOutcome, UserItems,
};

mod attempts;
mod coupons;
mod plans;
mod receipts;
mod refunds;
mod registrations;
mod requests;
mod review;
mod subscriptions;

/// An entry of the due index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Subscription(SubscriptionId),
    Registration(String),
    Attempt(AttemptKey),
    /// A refund waiting for a person (only in the review set).
    Refund(crate::ledger::RefundKey),
}

impl Due {
    fn encode(&self) -> String {
        match self {
            Self::Subscription(id) => format!("S{id}"),
            Self::Registration(uid) => format!("R{uid}"),
            Self::Attempt((id, period, n)) => format!("A{id}.{period}.{n}"),
            Self::Refund((id, uid, key)) => format!("F{id}.{uid}.{key}"),
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
            ("F", refund) => {
                let mut parts = refund.splitn(3, '.');
                let id = SubscriptionId::parse(parts.next()?)?;
                let uid = parts.next()?.to_owned();
                let key = parts.next()?.to_owned();
                Some(Self::Refund((id, uid, key)))
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
    review: BTreeSet<(i64, Due)>,
    /// The receipt queue: (waits for a person, at, attempt), and where each
    /// attempt sits in it (decision 74).
    receipts: BTreeSet<(bool, i64, AttemptKey)>,
    receipt_at: BTreeMap<AttemptKey, (bool, i64)>,
    users: BTreeMap<String, UserItems>,
    locks: BTreeMap<(String, String), SubscriptionId>,
    audit: BTreeMap<SubscriptionId, Vec<AuditEntry>>,
    requests: BTreeMap<String, Request>,
    /// Refund requests by (attempt's merchant uid, idempotency key).
    refunds: BTreeMap<(String, String), RefundIntent>,
    /// Plan versions by (id, version).
    plans: BTreeMap<(crate::billing::plans::PlanId, u32), crate::billing::plans::PlanRecord>,
    /// Each plan's newest rollout (decision 71).
    rollouts: BTreeMap<crate::billing::plans::PlanId, crate::billing::rollouts::Rollout>,
    /// The coupons, by id (decision 78).
    coupons: BTreeMap<crate::billing::coupons::CouponId, crate::billing::coupons::Coupon>,
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
    a.cash_receipt = a.cash_receipt.as_ref().map(receipts::stored_receipt);
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

/// A page cursor of this ledger (`<seconds>|<entry>`), `None` for the first page.
fn decode_cursor(cursor: Option<&Cursor>) -> Result<Option<(i64, Due)>, LedgerError> {
    let Some(c) = cursor else {
        return Ok(None);
    };
    let (t, key) = c.0.split_once('|').ok_or_else(|| not_a_cursor(cursor))?;
    match (t.parse::<i64>(), Due::decode(key)) {
        (Ok(t), Some(entry)) => Ok(Some((t, entry))),
        _ => Err(not_a_cursor(cursor)),
    }
}

fn not_a_cursor(cursor: Option<&Cursor>) -> LedgerError {
    LedgerError::Fatal(format!(
        "not a cursor of this ledger: {:?}",
        cursor.map(|c| c.0.as_str()).unwrap_or_default()
    ))
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
        let at = sub.due_at();
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
        self.review.retain(|(_, k)| *k != Due::Attempt(key.clone()));
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

    /// A plan version as stored now (for checks that must not await).
    pub fn plan_now(
        &self,
        id: &crate::billing::plans::PlanId,
        version: u32,
    ) -> Option<crate::billing::plans::PlanRecord> {
        self.lock().plans.get(&(id.clone(), version)).cloned()
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

    /// Every audit entry kept, by subscription (for checks that must not
    /// await).
    pub fn all_audit(&self) -> Vec<AuditEntry> {
        self.lock().audit.values().flatten().cloned().collect()
    }

    /// Every coupon stored, by id (for checks that must not await).
    pub fn all_coupons(&self) -> Vec<crate::billing::coupons::Coupon> {
        self.lock().coupons.values().cloned().collect()
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

crate::ledger::delegation::ledger_by_aggregate!(InMemoryLedger);
