//! The ledger port: the stored state of registrations, subscriptions and
//! charge attempts, with the conditional writes the engine's guarantees rest
//! on (versions, claim tokens, leases, all-or-nothing settlement).
//!
//! Two implementations: [`dynamodb::DynamoLedger`] (production, tested on
//! moto_server) and [`memory::InMemoryLedger`] (the deterministic simulation
//! and the benchmarks). One contract suite (`shared/tests/ledger_contract.rs`)
//! runs the same cases against both, so they cannot drift apart.

pub mod dynamodb;
pub mod memory;

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::billing::{
    AttemptResult, ChargeAttempt, PeriodId, Registration, Subscription, SubscriptionId,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A condition failed: someone else claimed, settled or changed it first.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Throttling, timeouts, 5xx: retrying later may work.
    #[error("ledger unavailable: {0}")]
    Transient(String),
    /// Misconfiguration or a bug (missing table, validation error).
    #[error("ledger error: {0}")]
    Fatal(String),
    /// An item that does not decode: never silently ignored, never fatal to
    /// the rest of a run.
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

impl LedgerError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

/// Where a listing of due subscriptions goes on. Opaque to callers: each
/// ledger encodes its own position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub(crate) String);

impl Cursor {
    /// The cursor as text (e.g. to carry it in a message).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_text(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

/// One page of the due index: subscriptions due for a charge, and pending
/// registrations due for a look at the gateway.
#[derive(Debug, Clone)]
pub struct DuePage {
    pub ids: Vec<SubscriptionId>,
    /// Issuance `merchant_uid`s of pending registrations past their `sweep_at`.
    pub registrations: Vec<String>,
    /// Entries of the index that could not be read (counted, never fatal).
    pub corrupt: Vec<String>,
    /// Pass back for the next page; `None` at the end.
    pub next: Option<Cursor>,
}

/// Whether the request of a released attempt may have reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It was sent, or may have been (a timeout, a lost answer).
    Maybe,
    /// It certainly never arrived (refused connection, throttled, no token).
    Never,
}

/// Who may write a result onto an open attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard<'a> {
    /// The holder of this claim (the attempt must be `claimed` with this token).
    Claim(&'a str),
    /// Anyone, for a verified *paid* fact only: the attempt must be open
    /// (`claimed` by anyone, or `unknown`). Any other result is refused.
    PaidFact,
}

/// The store operations the services use.
///
/// Every write is conditional, and a failed condition is
/// [`LedgerError::Conflict`] with nothing written.
pub trait Ledger: Send + Sync {
    // ---- registrations -------------------------------------------------

    /// Stores a new pending registration (in the due index at its
    /// `sweep_at`); `Conflict` if one exists.
    fn put_registration(
        &self,
        reg: &Registration,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> impl Future<Output = Result<Option<Registration>, LedgerError>> + Send;

    /// Atomically creates the subscription (and, when given, its first
    /// attempt) and marks the registration completed by the issuance payment
    /// `imp_uid` (no longer expiring, out of the due index). `Conflict` if
    /// any of it already happened.
    fn activate(
        &self,
        reg: &Registration,
        sub: &Subscription,
        imp_uid: &str,
        first_attempt: Option<&ChargeAttempt>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    // ---- subscriptions -------------------------------------------------

    fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> impl Future<Output = Result<Option<Subscription>, LedgerError>> + Send;

    /// Writes `next` if the stored version is still `next.version - 1`.
    fn save_subscription(
        &self,
        next: &Subscription,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// One page of what is due at `now`: chargeable subscriptions and pending
    /// registrations past their `sweep_at`, oldest first within each
    /// partition. May lag behind writes: callers re-read each before acting.
    fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> impl Future<Output = Result<DuePage, LedgerError>> + Send;

    // ---- charge attempts -----------------------------------------------

    fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> impl Future<Output = Result<Option<ChargeAttempt>, LedgerError>> + Send;

    /// Every attempt of a subscription, oldest period and attempt first.
    fn list_attempts(
        &self,
        id: &SubscriptionId,
    ) -> impl Future<Output = Result<Vec<ChargeAttempt>, LedgerError>> + Send;

    /// Claims a new attempt (written as given, in state `claimed`).
    /// `Conflict` if the attempt already exists.
    fn claim_new(
        &self,
        attempt: &ChargeAttempt,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Takes over an open attempt: one left `unknown`, or `claimed` by a
    /// claim whose lease ended before `now`. `Conflict` otherwise.
    fn take_over(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
        token: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ChargeAttempt, LedgerError>> + Send;

    /// Records that the holder of `token` is (again) sending the charge now.
    fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Releases a claim as `unknown` (the answer was lost, or the request
    /// could not be sent): the next run settles it first. With
    /// [`Sent::Never`] the attempt's `sent_at` is cleared: nothing can be in
    /// flight, so the next run need not wait before sending it.
    fn mark_unknown(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        detail: &str,
        sent: Sent,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Records the final result of an open attempt and the subscription's
    /// next state, all or nothing. The attempt must be open and pass `guard`;
    /// the subscription must still be at `next.version - 1`.
    fn settle(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        guard: Guard<'_>,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Flags an attempt for a person (`needs_review`, with `reason`) and
    /// writes the subscription's next state, all or nothing. The attempt must
    /// be `unknown`, `failed`, `rejected`, or `claimed` with the token given
    /// (a claim of someone else's is left to its holder).
    fn flag_review(
        &self,
        attempt: &ChargeAttempt,
        token: Option<&str>,
        reason: &str,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Records a refund seen at the gateway. Only ever raises the refunded
    /// total; returns whether anything changed.
    fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
}
