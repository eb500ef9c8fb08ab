//! Flow 2: charging due subscriptions, one attempt at a time, never twice.
//!
//! - `attempt`: one subscription: claim (or take over) its current attempt,
//!   settle what was left open, send the charge, record the answer;
//! - `settle`: the one find → verify → settle sequence;
//! - `pace`: backing off from a gateway that stops taking requests;
//! - `report`: the run's summary as a metrics line;
//! - `queue`: the queued mode: a planner sends the due index as work items
//!   to a queue, workers charge them.
//!
//! The decisions themselves are the core's (`crate::billing`). See
//! `docs/charging.md` for the reasoning.

mod answers;
mod attempt;
mod pace;
pub mod queue;
mod report;
pub mod settle;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tracing::error;

pub use report::emf_line;

use crate::billing::{Fact, SubscriptionId};
use crate::engine::{Budget, Engine};
use crate::gateway::{GatewayError, PaymentGateway};
use crate::ledger::{AttemptKey, Cursor, Ledger, LedgerError};
use crate::registration::{self, CallbackOutcome, FailureReason, Swept};
use pace::Pace;

/// One billing run: what is due is decided at `billing_time` (the scheduled
/// event's time), and every claim it makes carries `run_id`.
#[derive(Debug, Clone)]
pub struct BillingRun {
    pub billing_time: DateTime<Utc>,
    /// E.g. the scheduler's execution id.
    pub run_id: String,
}

/// What happened to one due subscription in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Charged {
        imp_uid: String,
    },
    Declined {
        reason: String,
    },
    Rejected {
        reason: String,
        key_gone: bool,
    },
    /// The charge may have happened; recorded `unknown`, settled by a later run.
    Ambiguous {
        detail: String,
    },
    /// The gateway refused the charge without a payment (V1 `code != 0`, a
    /// typed V2 error). Left open until its records can tell, after the
    /// quiet period; counted, and alike refusals in a row stop the run.
    Refused {
        reason: String,
    },
    /// An attempt left open earlier was settled from the gateway's records.
    Reconciled {
        fact: Fact,
    },
    /// The request could not be sent (refused connection, throttled): the
    /// claim is released and the next run tries again.
    Deferred {
        reason: String,
    },
    /// Flagged for a person: the subscription is charged no more until then.
    NeedsReview {
        reason: String,
    },
    Skipped {
        reason: SkipReason,
    },
    /// A pending registration was looked up at the gateway.
    Swept(Swept),
}

/// An entry of the due index: one unit of work of a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkItem {
    /// A subscription due for a charge.
    Subscription(SubscriptionId),
    /// An open attempt due for attention (lease ended, lost answer).
    Attempt(AttemptKey),
    /// A pending registration due for a look at the gateway.
    Registration(String),
}

impl WorkItem {
    /// The subscription it concerns, if any.
    pub fn subscription(&self) -> Option<&SubscriptionId> {
        match self {
            Self::Subscription(id) | Self::Attempt((id, _, _)) => Some(id),
            Self::Registration(_) => None,
        }
    }

    /// Compact text for a queue message: `s:{id}`, `a:{id}:{period}:{n}`,
    /// `r:{merchant_uid}`.
    pub fn encode(&self) -> String {
        match self {
            Self::Subscription(id) => format!("s:{id}"),
            Self::Attempt((id, period, n)) => format!("a:{id}:{period}:{n}"),
            Self::Registration(uid) => format!("r:{uid}"),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "s" => SubscriptionId::parse(rest).map(Self::Subscription),
            "a" => {
                let mut parts = rest.split(':');
                let id = SubscriptionId::parse(parts.next()?)?;
                let period = crate::billing::PeriodId::parse(parts.next()?)?;
                let n = parts.next()?.parse().ok()?;
                parts
                    .next()
                    .is_none()
                    .then_some(Self::Attempt((id, period, n)))
            }
            "r" if !rest.is_empty() && rest.len() <= 40 => {
                Some(Self::Registration(rest.to_owned()))
            }
            _ => None,
        }
    }
}

/// Where a run takes its work from.
trait Source {
    async fn next<L: Ledger, G>(
        &mut self,
        engine: &Engine<L, G>,
        run: &BillingRun,
        summary: &mut Summary,
    ) -> Result<Option<WorkItem>, RunError>;
}

/// The due index, read a page at a time as work is taken.
#[derive(Default)]
struct Intake {
    queue: VecDeque<WorkItem>,
    cursor: Option<Cursor>,
    done: bool,
    /// A subscription is charged at most once per run: one that was late and
    /// declined may already be due again, and could come back on a later page.
    seen: HashSet<SubscriptionId>,
}

impl Intake {
    /// The next page's work, or `None` at the end of the index.
    async fn page<L: Ledger, G>(
        &mut self,
        engine: &Engine<L, G>,
        run: &BillingRun,
        summary: &mut Summary,
    ) -> Result<Option<Vec<WorkItem>>, RunError> {
        if self.done {
            return Ok(None);
        }
        let page = engine
            .ledger
            .due_page(run.billing_time, PAGE_SIZE, self.cursor.as_ref())
            .await?;
        for what in &page.corrupt {
            error!(%what, "unreadable entry in the due index; skipped");
        }
        summary.corrupt += page.corrupt.len() as u64;
        let mut items: Vec<WorkItem> = page
            .registrations
            .into_iter()
            .map(WorkItem::Registration)
            .collect();
        let seen = &mut self.seen;
        items.extend(
            page.attempts
                .into_iter()
                .filter(|key| seen.insert(key.0.clone()))
                .map(WorkItem::Attempt),
        );
        items.extend(
            page.ids
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .map(WorkItem::Subscription),
        );
        self.done = page.next.is_none();
        self.cursor = page.next;
        Ok(Some(items))
    }
}

impl Source for Intake {
    async fn next<L: Ledger, G>(
        &mut self,
        engine: &Engine<L, G>,
        run: &BillingRun,
        summary: &mut Summary,
    ) -> Result<Option<WorkItem>, RunError> {
        while self.queue.is_empty() {
            match self.page(engine, run, summary).await? {
                Some(items) => self.queue.extend(items),
                None => break,
            }
        }
        Ok(self.queue.pop_front())
    }
}

/// A list of work items (a worker's messages), each subscription once.
struct Listed {
    items: VecDeque<WorkItem>,
    seen: HashSet<SubscriptionId>,
}

impl Source for Listed {
    async fn next<L: Ledger, G>(
        &mut self,
        _engine: &Engine<L, G>,
        _run: &BillingRun,
        _summary: &mut Summary,
    ) -> Result<Option<WorkItem>, RunError> {
        while let Some(item) = self.items.pop_front() {
            match item.subscription() {
                Some(id) if !self.seen.insert(id.clone()) => continue,
                _ => return Ok(Some(item)),
            }
        }
        Ok(None)
    }
}

/// The work on one entry of the due index.
async fn work<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    entry: WorkItem,
    run: &BillingRun,
    pace: &Pace,
    budget: Budget,
) -> (WorkItem, Result<Outcome, RunError>) {
    let outcome = match &entry {
        WorkItem::Subscription(id) => attempt::charge_one(engine, id, run, pace).await,
        WorkItem::Attempt(key) => attempt::attend(engine, key, run, pace).await,
        WorkItem::Registration(uid) => Ok(Outcome::Swept(
            registration::complete_from_gateway(engine, uid, None, budget).await,
        )),
    };
    (entry, outcome)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotDue,
    /// Another live run holds the attempt, or settled it first.
    Busy,
    NotFound,
    /// Cancelled at the end of its paid period instead of being charged.
    CancelledAtPeriodEnd,
    /// The gateway's record could not be read; left open for the next run.
    Unsettled,
    /// Sent recently and not (yet) visible at the gateway: left open until
    /// the quiet period has passed, so a re-send cannot race the first request.
    Waiting,
    /// Its attempt waits for a person.
    NeedsReview,
    /// Charged once per run, and one period a day: already charged in this
    /// run, or another period was paid today.
    OncePerRunOrDay,
}

/// A failure of a dependency as a whole: the run stops taking new work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// A ledger failure. `Corrupt` is the one kind that only skips the
    /// subscription it concerns.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("gateway refused our credentials: {0}")]
    Unauthorized(GatewayError),
    #[error("gateway unavailable: {0} failures in a row")]
    Unavailable(u32),
    /// Every charge is refused alike (a PG setting broken at the merchant):
    /// going on would only march every subscription into dunning (S2).
    #[error("{count} charges in a row refused alike ({reason}): the PG setup looks broken")]
    RefusedAlike { count: u32, reason: String },
    /// The run's time is ahead of the clock by more than the allowed skew
    /// (a mistyped manual run, a forged message): everyone would look due
    /// (defect D7).
    #[error("billing time {billing_time} is {ahead_secs} s ahead of the clock; refused")]
    FutureBillingTime {
        billing_time: DateTime<Utc>,
        ahead_secs: i64,
    },
}

/// Counts of one run, also logged and emitted as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub due: u64,
    pub charged: u64,
    pub declined: u64,
    pub rejected: u64,
    pub ambiguous: u64,
    /// Refused without a payment; left open to be settled after the quiet
    /// period (see [`Outcome::Refused`]).
    pub refused: u64,
    pub reconciled: u64,
    pub deferred: u64,
    pub needs_review: u64,
    /// Items that could not be read: skipped, counted and alarmed on.
    pub corrupt: u64,
    pub skipped: u64,
    /// Pending sign-ups completed from the gateway's records (the browser
    /// never came back).
    pub signups_completed: u64,
    /// Items that failed on a dependency (counted and skipped; the run stops
    /// after several in a row).
    pub errors: u64,
    /// Attempts waiting for a person when the run ended (a level, read
    /// from the review index: what the `NeedsReviewAlarm` watches, so a
    /// flag whose invocation died before counting it still shows).
    pub waiting_for_review: Option<u64>,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Charged { .. } => self.charged += 1,
            Outcome::Declined { .. } => self.declined += 1,
            Outcome::Rejected { .. } => self.rejected += 1,
            Outcome::Ambiguous { .. } => self.ambiguous += 1,
            Outcome::Refused { .. } => self.refused += 1,
            Outcome::Reconciled { .. } => self.reconciled += 1,
            Outcome::Deferred { .. } => self.deferred += 1,
            Outcome::NeedsReview { .. } => self.needs_review += 1,
            Outcome::Skipped { .. } => self.skipped += 1,
            Outcome::Swept(Swept::Completed(CallbackOutcome::Failed(
                FailureReason::NeedsReview,
            ))) => {
                self.signups_completed += 1;
                self.needs_review += 1;
            }
            Outcome::Swept(Swept::Completed(_)) => self.signups_completed += 1,
            Outcome::Swept(_) => {}
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub billing_time: DateTime<Utc>,
    pub run_id: String,
    #[serde(flatten)]
    pub summary: Summary,
    /// Why the run stopped taking work early, if it did.
    pub stopped: Option<String>,
    /// A dependency failure that ended the run (error status).
    pub error: Option<String>,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run: BillingRun,
    /// Stop taking new work once the invocation's deadline is near.
    pub budget: Budget,
}

/// How long before the deadline the run stops taking new work: enough for
/// an in-flight charge to finish its usual calls. (One cut short by the
/// deadline is left open under its claim and settled by the next run.)
fn reserve(timeout: Duration) -> Duration {
    timeout * 3 + Duration::from_secs(5)
}

const PAGE_SIZE: usize = 100;
/// Gateway failures in a row (lost answers, requests not sent) that end a run.
const TRANSIENT_LIMIT: u32 = 5;
/// Charges in a row refused with the same reason that end a run.
const REFUSED_ALIKE_LIMIT: u32 = 5;
/// Items in a row that failed on a dependency that end a run.
const ITEM_ERROR_LIMIT: u32 = 5;

/// Charges one subscription if it is due at `run.billing_time` (the
/// sign-up's first charge, tools).
pub async fn charge_one<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &SubscriptionId,
    run: &BillingRun,
) -> Result<Outcome, RunError> {
    attempt::charge_one(engine, id, run, &Pace::default()).await
}

/// Charges everything due at the billing time, with bounded concurrency:
/// the due index is read page by page, entries are taken as room frees up,
/// and new work stops near the deadline or on a failure of a dependency as
/// a whole.
pub async fn run<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    options: RunOptions,
) -> RunReport {
    drive(engine, &options, Intake::default()).await.0
}

/// Charges the given work items (a worker's share of a run planned into a
/// queue), each subscription once, like [`run`] does the due index. Also
/// returns the items not done: never taken (the run stopped first) or
/// stopped by a failure of a dependency; their messages should come again.
pub async fn work_items<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    options: &RunOptions,
    items: Vec<WorkItem>,
) -> (RunReport, Vec<WorkItem>) {
    let listed = Listed {
        items: items.into(),
        seen: HashSet::new(),
    };
    let (report, mut undone, rest) = drive(engine, options, listed).await;
    undone.extend(rest.items);
    (report, undone)
}

/// How many entries are in work at once: twice the gateway's concurrency,
/// so that a charge's ledger reads and writes (outside its gateway slot,
/// see `gateway::limit`) do not leave gateway slots idle.
fn pipeline(engine_concurrency: usize) -> usize {
    engine_concurrency.max(1) * 2
}

/// Why a run should stop, from what its items came to: the gateway failing
/// over and over, charges refused alike, items failing on a dependency.
#[derive(Default)]
struct Watch {
    refused: Option<(String, u32)>,
    errors_in_a_row: u32,
}

impl Watch {
    fn outcome(&mut self, outcome: &Outcome, pace: &Pace) -> Option<RunError> {
        self.errors_in_a_row = 0;
        match outcome {
            Outcome::Refused { reason } => {
                let count = match &self.refused {
                    Some((r, n)) if r == reason => n + 1,
                    _ => 1,
                };
                self.refused = Some((reason.clone(), count));
                if count >= REFUSED_ALIKE_LIMIT {
                    return Some(RunError::RefusedAlike {
                        count,
                        reason: reason.clone(),
                    });
                }
            }
            Outcome::Charged { .. } | Outcome::Declined { .. } | Outcome::Reconciled { .. } => {
                self.refused = None;
            }
            _ => {}
        }
        let streak = pace.streak();
        (streak >= TRANSIENT_LIMIT).then_some(RunError::Unavailable(streak))
    }

    /// An item failed on a dependency: counted and skipped; several in a
    /// row stop the run (one item's ledger hiccup no longer stops it). A
    /// refusal of our credentials stops it at once: every item would meet it.
    fn error(&mut self, e: RunError) -> Option<RunError> {
        self.errors_in_a_row += 1;
        let at_once = matches!(e, RunError::Unauthorized(_));
        (at_once || self.errors_in_a_row >= ITEM_ERROR_LIMIT).then_some(e)
    }
}

/// The run loop over a source of work. Returns the report, the items that
/// ended in a failure of a dependency, and the source (what was never taken).
async fn drive<L: Ledger, G: PaymentGateway, S: Source>(
    engine: &Engine<L, G>,
    options: &RunOptions,
    mut source: S,
) -> (RunReport, Vec<WorkItem>, S) {
    let run = &options.run;
    let pace = Pace::default();
    let mut loop_state = RunLoop::new(engine, options);
    if let Err(e) = engine
        .settings
        .check_billing_time(run.billing_time, engine.now())
    {
        error!(error = %e, "run refused");
        loop_state.stop(e);
    }
    let mut in_work = FuturesUnordered::new();
    loop {
        // Take new work while there is room, time, and no reason to stop.
        while loop_state.takes_work(in_work.len()) {
            match source.next(engine, run, &mut loop_state.summary).await {
                Ok(Some(entry)) => {
                    if entry.subscription().is_some() {
                        loop_state.summary.due += 1;
                    }
                    in_work.push(work(engine, entry, run, &pace, options.budget));
                }
                Ok(None) => break,
                Err(e) => {
                    error!(error = %e, "due index unreadable; the run stops");
                    loop_state.stop(e);
                }
            }
        }
        let Some((entry, result)) = in_work.next().await else {
            break;
        };
        loop_state.done(entry, result, &pace);
    }
    loop_state.summary.waiting_for_review = match engine.ledger.count_review().await {
        Ok(n) => Some(n),
        Err(e) => {
            error!(error = %e, "the review queue could not be counted");
            None
        }
    };
    let (report, failed) = loop_state.finish(run);
    (report, failed, source)
}

/// The state of one run's loop.
struct RunLoop {
    summary: Summary,
    watch: Watch,
    stopped: Option<String>,
    error: Option<RunError>,
    failed: Vec<WorkItem>,
    budget: Budget,
    reserve: Duration,
    in_flight: usize,
}

impl RunLoop {
    fn new<L, G>(engine: &Engine<L, G>, options: &RunOptions) -> Self {
        Self {
            summary: Summary::default(),
            watch: Watch::default(),
            stopped: None,
            error: None,
            failed: Vec::new(),
            budget: options.budget,
            reserve: reserve(engine.settings.gateway_timeout),
            in_flight: pipeline(engine.settings.concurrency),
        }
    }

    fn stop(&mut self, e: RunError) {
        if self.stopped.is_none() {
            self.stopped = Some(format!("dependency failure: {e}"));
            self.error = Some(e);
        }
    }

    fn takes_work(&mut self, in_work: usize) -> bool {
        if self.stopped.is_some() || in_work >= self.in_flight {
            return false;
        }
        if !self.budget.allows(Duration::ZERO, self.reserve) {
            self.stopped = Some("deadline near: stopped taking new work".into());
            return false;
        }
        true
    }

    fn done(&mut self, entry: WorkItem, result: Result<Outcome, RunError>, pace: &Pace) {
        let id = entry.subscription().map(|i| i.as_str().to_owned());
        let failure = match result {
            Ok(outcome) => {
                self.summary.add(&outcome);
                self.watch.outcome(&outcome, pace)
            }
            Err(RunError::Ledger(LedgerError::Corrupt(what))) => {
                error!(subscription_id = ?id, %what, "unreadable item; skipped, the run goes on");
                self.summary.corrupt += 1;
                None
            }
            Err(e) => {
                error!(subscription_id = ?id, error = %e, "item failed; skipped");
                self.summary.errors += 1;
                self.failed.push(entry);
                self.watch.error(e)
            }
        };
        if let Some(e) = failure {
            error!(error = %e, "the run stops taking new work");
            self.stop(e);
        }
    }

    fn finish(self, run: &BillingRun) -> (RunReport, Vec<WorkItem>) {
        let report = RunReport {
            billing_time: run.billing_time,
            run_id: run.run_id.clone(),
            summary: self.summary,
            stopped: self.stopped,
            error: self.error.map(|e| e.to_string()),
        };
        (report, self.failed)
    }
}
