//! The ledger port: the stored state of registrations, subscriptions and
//! charge attempts, with the conditional writes the engine's guarantees rest
//! on (versions, claim tokens, leases, all-or-nothing settlement).
//!
//! Two implementations: [`dynamodb::DynamoLedger`] (production, tested on
//! moto_server) and [`memory::InMemoryLedger`] (the deterministic simulation
//! and the benchmarks). One contract suite (`shared/tests/ledger_contract.rs`)
//! runs the same cases against both, so they cannot drift apart.

pub mod conflict;
mod delegation;
pub mod dynamodb;
pub mod memory;
pub mod observed;

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::billing::coupons::{Coupon, CouponId};
use crate::billing::plans::{PlanId, PlanRecord};
use crate::billing::rollouts::Rollout;
use crate::billing::{
    AttemptResult, AuditEntry, ChargeAttempt, PeriodId, Registration, Resolution, Subscription,
    SubscriptionId,
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

/// An attempt's key: (subscription, period, attempt number).
pub type AttemptKey = (SubscriptionId, PeriodId, u32);

/// One page of the due index: subscriptions due for a charge, open attempts
/// due for attention (a lease ended, a lost answer to look up), and pending
/// registrations due for a look at the gateway.
#[derive(Debug, Clone, Default)]
pub struct DuePage {
    pub ids: Vec<SubscriptionId>,
    /// Issuance `merchant_uid`s of pending registrations past their `sweep_at`.
    pub registrations: Vec<String>,
    /// Open attempts past their `lease_until` (claimed) or their look-again
    /// time (`unknown`), whatever their subscription's status: an open
    /// attempt is never orphaned.
    pub attempts: Vec<AttemptKey>,
    /// Entries of the index that could not be read (counted, never fatal).
    pub corrupt: Vec<String>,
    /// Pass back for the next page; `None` at the end.
    pub next: Option<Cursor>,
}

/// A page of subscription ids from an index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdPage {
    pub ids: Vec<SubscriptionId>,
    /// Pass back for the next page; `None` at the end.
    pub next: Option<Cursor>,
}

/// A refund request: its charge's subscription and `merchant_uid`, and
/// the request's idempotency key.
pub type RefundKey = (SubscriptionId, String, String);

/// One page of what waits for a person, oldest flag first: attempts, and
/// refunds whose outcome is not known.
#[derive(Debug, Clone, Default)]
pub struct ReviewPage {
    pub attempts: Vec<AttemptKey>,
    pub refunds: Vec<RefundKey>,
    pub next: Option<Cursor>,
}

/// Which part of the cash-receipt queue to page through (decision 74).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptQueue {
    /// Receipts with work to do by this time (or whose claim ended).
    Due(DateTime<Utc>),
    /// Receipts that gave up and wait for a person.
    Review,
}

/// A page of charge attempts whose cash receipt is in a queue.
#[derive(Debug, Clone, Default)]
pub struct ReceiptPage {
    pub attempts: Vec<AttemptKey>,
    pub next: Option<Cursor>,
}

/// A page of the plan catalogue: the newest version of each plan, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanPage {
    pub plans: Vec<PlanRecord>,
    pub next: Option<Cursor>,
}

/// A verified sign-up, written all at once.
#[derive(Debug, Clone, Copy)]
pub struct Activation<'a> {
    pub reg: &'a Registration,
    pub sub: &'a Subscription,
    /// The issuance payment that completed it.
    pub imp_uid: &'a str,
    /// The first period's attempt, when the window took money.
    pub first_attempt: Option<&'a ChargeAttempt>,
    /// Take the user's lock on the plan (one live subscription per user and
    /// plan): `Conflict` if another subscription holds it.
    pub plan_lock: bool,
}

/// A verified new card, written all at once.
#[derive(Debug, Clone, Copy)]
pub struct KeyReplacement<'a> {
    pub reg: &'a Registration,
    /// The subscription with its new key (version checked).
    pub next: &'a Subscription,
    /// The window's payment (the key's issuance).
    pub imp_uid: &'a str,
    pub audit: &'a AuditEntry,
    /// A card window is opened for 0 KRW; one that took money anyway is
    /// kept as attempt 0 in `needs_review` until its refund is confirmed,
    /// so that no crash leaves it unrefunded in silence (defect S5).
    pub window_payment: Option<&'a ChargeAttempt>,
}

/// A change to a subscription by the merchant or an operator.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionChange<'a> {
    /// Written if the stored version is still `next.version - 1`.
    pub next: &'a Subscription,
    /// Who did it and why, kept beside the subscription.
    pub audit: Option<&'a AuditEntry>,
    /// What happens to the user's lock on the plan.
    pub lock: LockChange<'a>,
}

/// A coupon's redemption, written all at once with what redeems it
/// ([`Ledger::redeem`], decision 78).
#[derive(Debug, Clone, Copy)]
pub struct Redemption<'a> {
    pub coupon: &'a crate::billing::coupons::CouponId,
    /// Checked against the coupon's `redeem_by` in the same write.
    pub now: DateTime<Utc>,
    pub into: Redeemer<'a>,
}

/// What a coupon is redeemed with.
#[derive(Debug, Clone, Copy)]
pub enum Redeemer<'a> {
    /// A new pending registration, written as [`Ledger::put_registration`]
    /// writes it.
    Registration(&'a Registration),
    /// A change of a subscription, written as
    /// [`Ledger::change_subscription`] writes it.
    Subscription(SubscriptionChange<'a>),
}

/// What a change does to the user's lock on a plan (one live subscription
/// per user and plan, by plan name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockChange<'a> {
    Keep,
    /// The subscription ended: the lock on this plan name is let go if this
    /// subscription holds it (one held by another is left alone).
    Release(&'a str),
    /// The plan changed name: the lock on `to` is taken (`Conflict` if
    /// another subscription holds it) and the one on `from` let go.
    Move {
        from: &'a str,
        to: &'a str,
    },
}

/// What a user has: subscriptions, pending or past registrations, and the
/// plans they hold a lock on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserItems {
    pub subscriptions: Vec<SubscriptionId>,
    pub registrations: Vec<String>,
    /// (plan name, the subscription holding it).
    pub locks: Vec<(String, SubscriptionId)>,
}

/// The first answer to a request, kept for its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// What an idempotency key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestState {
    /// First time: go on (the key is now held).
    Fresh,
    /// Answered before: send this again.
    Replay(StoredResponse),
    /// Another request with this key is being handled right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// A refund someone asked for, kept beside its attempt under the request's
/// idempotency key, so that one request moves money at most once: a retry
/// after a crash or a lost answer finds it and sends the same refund with
/// the same checksum (which the gateway refuses once the first went
/// through), never a fresh one (defect D3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundIntent {
    /// The request's idempotency key.
    pub key: String,
    /// The attempt's `merchant_uid`.
    pub merchant_uid: String,
    /// The payment refunded (V1 refunds by it).
    pub imp_uid: String,
    pub amount: i64,
    /// What was left to refund when it was asked: the gateway's checksum.
    pub checksum: i64,
    pub reason: String,
    /// What kind of refund it is (kept with it: a resumed refund keeps it).
    pub cause: crate::billing::RefundCause,
    pub state: RefundState,
    /// The payment's refunded total once the refund went through.
    pub refunded_total: Option<i64>,
    /// Why it was put in the review queue ([`Ledger::flag_refund`]): its
    /// outcome was not known. Kept once it is finished.
    pub review_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    /// Asked for; the gateway's answer is not recorded yet.
    Requested,
    /// Carried out at the gateway.
    Done,
    /// The gateway refused it: nothing moved (a new request takes a new key).
    Refused,
}

impl RefundState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Done => "done",
            Self::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Requested, Self::Done, Self::Refused]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::hours(24);
/// After this long, a key still "in progress" (its handler died) may be
/// taken by a retry.
pub const IDEMPOTENCY_STALE: chrono::Duration = chrono::Duration::minutes(5);

/// Whether the request of a released attempt may have reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It was sent, or may have been (a timeout, a lost answer).
    Maybe,
    /// It certainly never arrived (refused connection, throttled, no token).
    Never,
}

/// An open attempt whose lease ran out, taken over by a new holder
/// ([`Ledger::take_over`]).
#[derive(Debug, Clone, Copy)]
pub struct TakeOver<'a> {
    pub id: &'a SubscriptionId,
    pub period: &'a PeriodId,
    pub attempt: u32,
    /// The new holder's claim token.
    pub token: &'a str,
    pub lease_until: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// The subscription must still be at this version.
    pub sub_version: u64,
}

/// A claim given up without an answer from the PG ([`Ledger::mark_unknown`]):
/// the attempt becomes `unknown` and is looked up again from `due_at`.
#[derive(Debug, Clone, Copy)]
pub struct UnknownOutcome<'a> {
    pub attempt: &'a ChargeAttempt,
    /// The holder's claim token.
    pub token: &'a str,
    /// Why no answer is known (kept as the attempt's reason).
    pub detail: &'a str,
    /// Whether the request may have reached the PG.
    pub sent: Sent,
    pub now: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

/// The final result of an open attempt and the subscription's next state
/// ([`Ledger::settle`]).
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    pub attempt: &'a ChargeAttempt,
    pub result: &'a AttemptResult,
    /// Who may write it.
    pub guard: Guard<'a>,
    /// The subscription's next state (version checked).
    pub next: &'a Subscription,
    pub now: DateTime<Utc>,
}

/// An attempt handed to a person, with the subscription's next state
/// ([`Ledger::flag_review`]).
#[derive(Debug, Clone, Copy)]
pub struct ReviewFlag<'a> {
    pub attempt: &'a ChargeAttempt,
    /// The claim token, when the caller holds the attempt's claim.
    pub token: Option<&'a str>,
    /// What the person should look at.
    pub reason: &'a str,
    /// The subscription's next state (version checked).
    pub next: &'a Subscription,
    pub now: DateTime<Utc>,
}

/// A person's decision on a flagged attempt ([`Ledger::resolve`]).
#[derive(Debug, Clone, Copy)]
pub struct ReviewDecision<'a> {
    pub attempt: &'a ChargeAttempt,
    /// Paid or failed.
    pub result: &'a AttemptResult,
    pub resolution: &'a Resolution,
    /// The subscription's next state (version checked).
    pub next: &'a Subscription,
    pub audit: &'a AuditEntry,
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
    /// `sweep_at`, and under its user); `Conflict` if one exists.
    fn put_registration(
        &self,
        reg: &Registration,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> impl Future<Output = Result<Option<Registration>, LedgerError>> + Send;

    /// Atomically creates the subscription (under its user; with its first
    /// attempt when given; taking the user's plan lock when asked) and marks
    /// the registration completed by the issuance payment (no longer
    /// expiring, out of the due index). `Conflict` if any of it already
    /// happened, or another subscription holds the plan lock.
    fn activate(
        &self,
        activation: &Activation<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// A new card: marks the pending registration completed and writes the
    /// subscription with its new key (versioned), with the audit entry and
    /// the window's payment waiting for a person when it took money, all or
    /// nothing.
    fn replace_key(
        &self,
        replacement: &KeyReplacement<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// A pending registration that will not be activated: `refused`, out of
    /// the due index. `Conflict` unless it was pending. `window_payment`:
    /// money its window took anyway (a card window for a subscription that
    /// takes no new card), written in the same transaction as a window slot
    /// waiting for a person, as [`Ledger::replace_key`] writes it; nothing
    /// is written if that slot exists.
    fn refuse_registration(
        &self,
        reg: &Registration,
        now: DateTime<Utc>,
        window_payment: Option<&ChargeAttempt>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// What a user has (a key lookup, never a scan).
    fn user_items(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<UserItems, LedgerError>> + Send;

    // ---- subscriptions -------------------------------------------------

    fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> impl Future<Output = Result<Option<Subscription>, LedgerError>> + Send;

    /// Writes a change if the stored version is still `next.version - 1`,
    /// with its audit entry and lock release, all or nothing.
    fn change_subscription(
        &self,
        change: &SubscriptionChange<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// The newest manual actions on a subscription, newest first.
    fn history(
        &self,
        id: &SubscriptionId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, LedgerError>> + Send;

    /// One page of what is due at `now`: chargeable subscriptions, open
    /// attempts and pending registrations, oldest first within each
    /// partition. May lag behind writes: callers re-read each before acting.
    fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> impl Future<Output = Result<DuePage, LedgerError>> + Send;

    /// One page of the subscriptions whose price increase waits for the
    /// customer's consent (decision 69), the soonest request first within
    /// each partition. May lag behind writes: callers re-read each.
    fn pending_consent_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> impl Future<Output = Result<IdPage, LedgerError>> + Send;

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

    /// Claims a new attempt (written as given, in state `claimed`, in the
    /// due index at its `lease_until`) and writes its subscription one
    /// version later (`next`, with the claiming run), if the stored version
    /// is still `next.version - 1`: a change of the subscription (a cancel, a
    /// plan change) and a claim made on an older copy of it cannot both
    /// happen, and a change made after the claim sees it. `Conflict` if the
    /// attempt exists or the subscription changed.
    fn claim_new(
        &self,
        attempt: &ChargeAttempt,
        next: &Subscription,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Takes over an open attempt (one left `unknown`, or `claimed` by a
    /// claim whose lease ended before `now`) if its subscription is still at
    /// `sub_version`. `Conflict` otherwise.
    fn take_over(
        &self,
        take_over: &TakeOver<'_>,
    ) -> impl Future<Output = Result<ChargeAttempt, LedgerError>> + Send;

    /// Records that the holder of `token` is sending the charge again now,
    /// with `attempt.customer_uid` (the subscription's key of the moment),
    /// if the subscription is still at `sub_version`.
    fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Releases a claim as `unknown` (the answer was lost, or the request
    /// could not be sent), due for another look at `due_at`. With
    /// [`Sent::Never`] the attempt's `sent_at` is cleared: nothing can be in
    /// flight, so the next run need not wait before sending it.
    fn mark_unknown(
        &self,
        unknown: &UnknownOutcome<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Records the final result of an open attempt (out of the due index)
    /// and the subscription's next state, all or nothing. The attempt must be
    /// open and pass `guard`; the subscription must still be at
    /// `next.version - 1`.
    fn settle(
        &self,
        settlement: &Settlement<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Flags an attempt for a person (`needs_review`, with `reason`; listed
    /// by [`Ledger::review_page`]) and writes the subscription's next state,
    /// all or nothing. The attempt must be `unknown`, `failed`, `rejected`,
    /// or `claimed` with the token given (a claim of someone else's is left
    /// to its holder).
    fn flag_review(
        &self,
        flag: &ReviewFlag<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// A person's decision on a flagged attempt: `result` (paid or failed)
    /// with the resolution, the subscription's next state and the audit
    /// entry, all or nothing. The attempt must be `needs_review`.
    fn resolve(
        &self,
        decision: &ReviewDecision<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// How many attempts wait for a person (the review index's size).
    fn count_review(&self) -> impl Future<Output = Result<u64, LedgerError>> + Send;

    /// One page of the attempts waiting for a person.
    fn review_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> impl Future<Output = Result<ReviewPage, LedgerError>> + Send;

    /// Records a refund seen at (or made through) the gateway. Only ever
    /// raises the refunded total; returns whether anything changed. With an
    /// audit entry (a refund someone asked for), both are written together.
    /// An attempt with a cash receipt (as `attempt` shows it) is put back
    /// in the receipt queue in the same write: the receipt must now cover
    /// less. [`Ledger::finish_refund`] does the same.
    fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// The refund request kept under `key` for `attempt`, if any.
    fn get_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
    ) -> impl Future<Output = Result<Option<RefundIntent>, LedgerError>> + Send;

    /// Records a refund request before it goes to the gateway, beside its
    /// attempt; if one with the same key exists, returns that one instead
    /// (a retry resumes it, whatever its state).
    fn begin_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
    ) -> impl Future<Output = Result<RefundIntent, LedgerError>> + Send;

    /// Records how a requested refund ended (`intent.state`, done or
    /// refused), the attempt's refunded total (only ever raised) and the
    /// audit entry, in one transaction, and takes it out of the review
    /// queue if it was there. `Conflict` unless it was requested.
    fn finish_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
        audit: Option<&AuditEntry>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// A requested refund whose outcome is not known (the PG's answer was
    /// lost, or its record could not be read): in the review queue, with
    /// `reason`, until it is finished ([`Ledger::finish_refund`] takes it
    /// out). Also a refused one that a person must see to (a mid-term
    /// cancel's: the customer is owed it), until it is dismissed
    /// ([`Ledger::dismiss_refund`]). `Conflict` unless it is stored and
    /// requested or refused.
    fn flag_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Takes a refused refund out of the review queue once a person has
    /// dealt with it (the money moved another way, or another refund was
    /// asked), with the audit entry, in one write. `Conflict` unless it is
    /// stored, refused and in the queue.
    fn dismiss_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    // ---- cash receipts (decision 74) ------------------------------------

    /// Writes `next` as `attempt`'s cash receipt if the stored one is at
    /// `next.rev - 1` (revision 0: the attempt has none yet) and, when
    /// `refunded` is given, the attempt's refunded total is still that:
    /// in the `receipts` queue at [`CashReceipt::queued_at`], or in its
    /// review part, or out of it. `Conflict` otherwise.
    ///
    /// [`CashReceipt::queued_at`]: crate::billing::CashReceipt::queued_at
    fn save_receipt(
        &self,
        attempt: &ChargeAttempt,
        next: &crate::billing::CashReceipt,
        refunded: Option<i64>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// One page of the attempts whose receipt is in `queue`. May lag behind
    /// writes: callers re-read each.
    fn receipt_page(
        &self,
        queue: ReceiptQueue,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> impl Future<Output = Result<ReceiptPage, LedgerError>> + Send;

    // ---- idempotency keys ------------------------------------------------

    /// Holds `key` for a request with this `fingerprint`, or says what it
    /// was used for before (see [`RequestState`]).
    fn begin_request(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RequestState, LedgerError>> + Send;

    /// Keeps the first answer to the request holding `key`.
    fn finish_request(
        &self,
        key: &str,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Lets go of `key` without an answer to keep (the request failed in a
    /// way a retry may fix).
    fn abandon_request(&self, key: &str) -> impl Future<Output = Result<(), LedgerError>> + Send;

    // ---- plans ----------------------------------------------------------

    /// Stores a plan version; `Conflict` if that id and version exist (a
    /// version is never rewritten).
    fn put_plan(&self, plan: &PlanRecord) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// A plan's `version`, or its newest when `None`.
    fn get_plan(
        &self,
        id: &PlanId,
        version: Option<u32>,
    ) -> impl Future<Output = Result<Option<PlanRecord>, LedgerError>> + Send;

    /// The catalogue, by id, the newest version of each plan.
    fn plans_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> impl Future<Output = Result<PlanPage, LedgerError>> + Send;

    // ---- plan-wide price changes (decision 71) ---------------------------

    /// Stores a plan's next version and its rollout in one write:
    /// `Conflict` if the version exists or the plan has an open rollout.
    fn put_plan_rollout(
        &self,
        plan: &PlanRecord,
        rollout: &Rollout,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// The plan's newest rollout, open or done.
    fn get_rollout(
        &self,
        plan: &PlanId,
    ) -> impl Future<Output = Result<Option<Rollout>, LedgerError>> + Send;

    /// Every open rollout (one per plan at most).
    fn open_rollouts(&self) -> impl Future<Output = Result<Vec<Rollout>, LedgerError>> + Send;

    /// Stores `next`, how far planning got: `Conflict` unless the stored
    /// rollout is the one before it (`rev` one lower, same version).
    fn save_rollout(&self, next: &Rollout) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// A page of the subscriptions that carry a version of `plan` and have
    /// not ended (the `plan` index), oldest first within a shard.
    fn plan_members_page(
        &self,
        plan: &PlanId,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> impl Future<Output = Result<IdPage, LedgerError>> + Send;

    // ---- coupons (decision 78) -------------------------------------------

    /// Stores a new coupon; `Conflict` if that id exists.
    fn put_coupon(&self, coupon: &Coupon) -> impl Future<Output = Result<(), LedgerError>> + Send;

    fn get_coupon(
        &self,
        id: &CouponId,
    ) -> impl Future<Output = Result<Option<Coupon>, LedgerError>> + Send;

    /// Counts one redemption of the coupon and writes what redeems it, all
    /// or nothing: `Conflict` (nothing written, nothing counted) when the
    /// coupon does not exist, has been redeemed `max_redemptions` times, is
    /// past its `redeem_by` at `now`, or the redeemer's own write fails its
    /// condition. So a redemption is counted exactly once, however many
    /// requests race for it.
    fn redeem(
        &self,
        redemption: &Redemption<'_>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}
