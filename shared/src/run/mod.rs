//! The billing run: everything due at a billing time, with bounded
//! concurrency, each subscription at most once.
//!
//! - here: the intake (the due index, page by page, or a worker's list),
//!   the pipeline (entries taken as room frees up, stopped near the deadline
//!   or when a dependency fails as a whole) and the summary;
//! - `report`: the summary as a CloudWatch EMF line;
//! - `queue`: the queued mode: a planner sends the due index as work items
//!   to a queue (the SQS adapter), workers charge them.
//!
//! One entry is charged by `crate::charging` (a subscription or an open
//! attempt) or swept by `crate::registration` (a pending sign-up): the run
//! is the one place that names both.

pub mod queue;
pub mod receipts;
mod report;
pub mod rollouts;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tracing::error;

pub use report::emf_line;

use crate::billing::notices::NoticeKind;
use crate::billing::{Fact, SubscriptionId};
use crate::charging::pace::Pace;
use crate::charging::{BillingRun, Outcome, RunError, SkipReason, attempt};
use crate::config::{BILLING_CLOCK_SKEW, BillingClock};
use crate::engine::{Budget, Engine};
use crate::gateway::PaymentGateway;
use crate::ledger::{AttemptKey, Cursor, Ledger, LedgerError};
use crate::notices::{self, Noticed};
use crate::registration::{self, CallbackOutcome, FailureReason, Swept};

/// What became of one entry of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Worked {
    /// A subscription or an open attempt, charged or settled.
    Charge(Outcome),
    /// A pending registration looked up at the gateway.
    Sweep(Swept),
    /// A subscription's renewal notice, due before its charge.
    Notice(Noticed),
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
) -> (WorkItem, Result<Worked, RunError>) {
    // Each arm is boxed: their futures are large, and in debug builds (the
    // tests' 2 MiB threads) polling them inline overflows the stack.
    let outcome = match &entry {
        WorkItem::Subscription(id) => Box::pin(subscription(engine, id, run, pace)).await,
        WorkItem::Attempt(key) => Box::pin(attempt::attend(engine, key, run, pace))
            .await
            .map(Worked::Charge),
        WorkItem::Registration(uid) => Ok(Worked::Sweep(
            Box::pin(registration::complete_from_gateway(
                engine, uid, None, budget,
            ))
            .await,
        )),
    };
    (entry, outcome)
}

/// A subscription from the due index: its renewal notice when that is what
/// is due (`billing::notices`: its place in the index is the earlier of the
/// notice and the charge), else its charge.
async fn subscription<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &SubscriptionId,
    run: &BillingRun,
    pace: &Pace,
) -> Result<Worked, RunError> {
    let Some(sub) = engine.ledger.get_subscription(id).await? else {
        return Ok(Worked::Charge(Outcome::Skipped {
            reason: SkipReason::NotFound,
        }));
    };
    // Paused: resumed at its `resumes_at` (then worked like any other), or
    // the period that began is skipped (decision 76).
    let sub = if sub.status == crate::billing::SubscriptionStatus::Paused {
        match while_paused(engine, sub).await? {
            Ok(resumed) => resumed,
            Err(outcome) => return Ok(Worked::Charge(outcome)),
        }
    } else {
        sub
    };
    // A consent request (decision 69) waits for a charge due now: the
    // charge goes first, the request at the next run.
    if sub
        .consent_request_at()
        .is_some_and(|at| at <= run.billing_time)
        && run.billing_time < sub.next_charge_at
    {
        return notices::ask_consent(engine, &sub).await.map(Worked::Notice);
    }
    if sub.notice_due(run.billing_time) {
        return notices::send(engine, &sub).await.map(Worked::Notice);
    }
    attempt::charge_read(engine, sub, run, pace)
        .await
        .map(Worked::Charge)
}

/// A paused subscription from the due index: `Ok` with it resumed (its
/// `resumes_at` came), or what the run did instead (skipped the periods
/// that began, ended it on a period-end cancel, or nothing yet).
async fn while_paused<L: Ledger, G>(
    engine: &Engine<L, G>,
    sub: crate::billing::Subscription,
) -> Result<Result<crate::billing::Subscription, Outcome>, RunError> {
    use crate::billing::pauses;
    use crate::ledger::{LedgerError, LockChange, SubscriptionChange};
    let now = engine.now();
    let busy = Outcome::Skipped {
        reason: SkipReason::Busy,
    };
    let (next, skipped, resumed) = if sub.resume_due(now) {
        // From the day it was due to resume, even when the run comes later.
        let from = sub.pause.and_then(|p| p.resumes_at).unwrap_or(now).min(now);
        match pauses::unpaused(&sub, from, now) {
            Ok((next, skipped)) => (next, skipped, true),
            Err(_) => return Ok(Err(busy)),
        }
    } else if let Some((next, skipped)) = pauses::at_period_start(&sub, now) {
        (next, skipped, false)
    } else {
        return Ok(Err(Outcome::Skipped {
            reason: SkipReason::NotDue,
        }));
    };
    let ended = next.status == crate::billing::SubscriptionStatus::Cancelled;
    let change = SubscriptionChange {
        next: &next,
        audit: None,
        lock: if ended {
            LockChange::Release(sub.lock_name())
        } else {
            LockChange::Keep
        },
    };
    match engine.ledger.change_subscription(&change).await {
        Ok(()) => {}
        Err(LedgerError::Conflict(_)) => return Ok(Err(busy)),
        Err(e) => return Err(e.into()),
    }
    let skipped: Vec<&str> = skipped.iter().map(|p| p.as_str()).collect();
    if resumed {
        tracing::info!(?skipped, next_charge_at = %next.next_charge_at, "pause over: resumed");
        return Ok(Ok(next));
    }
    if ended {
        tracing::info!("paused with a period-end cancel: ended at its period's end");
        return Ok(Err(Outcome::Skipped {
            reason: SkipReason::CancelledAtPeriodEnd,
        }));
    }
    tracing::info!(?skipped, next_charge_at = %next.next_charge_at, "paused: period skipped, not charged");
    Ok(Err(Outcome::Skipped {
        reason: SkipReason::Paused,
    }))
}

/// Counts of one run, also logged and emitted as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub due: u64,
    pub charged: u64,
    /// Periods a coupon left nothing to pay for: recorded at 0 KRW, not
    /// sent (decision 78).
    pub free: u64,
    pub declined: u64,
    /// The declines recorded, by class (decision 72), counting those
    /// reconciled from the gateway's records too.
    pub declines: BTreeMap<&'static str, u64>,
    /// Of them, the hard ones: the subscription stopped for a new card.
    pub hard_declines: u64,
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
    /// Renewal notices recorded (`subscription.renewal_upcoming`), and of
    /// them the keys the PG no longer had (`payment_method.action_required`).
    pub notices: u64,
    pub notices_action_required: u64,
    /// Consent requests of price increases recorded
    /// (`subscription.price_change_requested`).
    pub consent_requests: u64,
    /// Items that failed on a dependency (counted and skipped; the run stops
    /// after several in a row).
    pub errors: u64,
    /// Attempts waiting for a person when the run ended (a level, read
    /// from the review index: what the `NeedsReviewAlarm` watches, so a
    /// flag whose invocation died before counting it still shows).
    pub waiting_for_review: Option<u64>,
}

impl Summary {
    fn add(&mut self, worked: &Worked) {
        let outcome = match worked {
            Worked::Charge(outcome) => outcome,
            Worked::Sweep(Swept::Completed(CallbackOutcome::Failed(
                FailureReason::NeedsReview,
            ))) => {
                self.signups_completed += 1;
                self.needs_review += 1;
                return;
            }
            Worked::Sweep(Swept::Completed(_)) => {
                self.signups_completed += 1;
                return;
            }
            Worked::Sweep(_) | Worked::Notice(Noticed::Changed) => return,
            Worked::Notice(Noticed::ConsentRequested) => {
                self.consent_requests += 1;
                return;
            }
            Worked::Notice(Noticed::Sent(kind)) => {
                self.notices += 1;
                if *kind == NoticeKind::ActionRequired {
                    self.notices_action_required += 1;
                }
                return;
            }
        };
        let class = match outcome {
            Outcome::Declined { class, .. } => *class,
            Outcome::Reconciled {
                fact: Fact::Declined { class, .. },
            } => Some(*class),
            _ => None,
        };
        if let Some(class) = class {
            *self.declines.entry(class.as_str()).or_default() += 1;
            self.hard_declines += u64::from(class.is_hard());
        }
        match outcome {
            Outcome::Charged { .. } => self.charged += 1,
            Outcome::Free { .. } => self.free += 1,
            Outcome::Declined { .. } => self.declined += 1,
            Outcome::Rejected { .. } => self.rejected += 1,
            Outcome::Ambiguous { .. } => self.ambiguous += 1,
            Outcome::Refused { .. } => self.refused += 1,
            Outcome::Reconciled { .. } => self.reconciled += 1,
            Outcome::Deferred { .. } => self.deferred += 1,
            Outcome::NeedsReview { .. } => self.needs_review += 1,
            Outcome::Skipped { .. } => self.skipped += 1,
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
    /// Plan-wide price changes planned after the charges (decision 71).
    pub price_changes: rollouts::RolloutReport,
    /// Cash receipts worked after them (decision 74).
    pub cash_receipts: receipts::ReceiptReport,
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

/// Charges everything due at the billing time, with bounded concurrency:
/// the due index is read page by page, entries are taken as room frees up,
/// and new work stops near the deadline or on a failure of a dependency as
/// a whole.
pub async fn run<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    options: RunOptions,
) -> RunReport {
    let mut report = drive(engine, &options, Intake::default()).await.0;
    if report.error.is_none() {
        let reserve = reserve(engine.settings.gateway_timeout);
        report.price_changes = rollouts::plan(engine, &options.budget, reserve).await;
        report.cash_receipts = receipts::work(engine, &options.budget, reserve).await;
    }
    report
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
    fn outcome(&mut self, worked: &Worked, pace: &Pace) -> Option<RunError> {
        self.errors_in_a_row = 0;
        // A sweep neither breaks nor extends a streak of refusals.
        let outcome = match worked {
            Worked::Charge(outcome) => Some(outcome),
            Worked::Sweep(_) | Worked::Notice(_) => None,
        };
        match outcome {
            Some(Outcome::Refused { reason }) => {
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
            Some(
                Outcome::Charged { .. } | Outcome::Declined { .. } | Outcome::Reconciled { .. },
            ) => {
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
    engine.follow_the_event(run.billing_time);
    if let Err(e) = check_billing_time(
        engine.settings.charging.billing_clock,
        run.billing_time,
        engine.now(),
    ) {
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
            in_flight: pipeline(engine.settings.charging.concurrency),
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

    fn done(&mut self, entry: WorkItem, result: Result<Worked, RunError>, pace: &Pace) {
        let id = entry.subscription().map(|i| i.as_str().to_owned());
        let failure = match result {
            Ok(worked) => {
                self.summary.add(&worked);
                self.watch.outcome(&worked, pace)
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
            price_changes: rollouts::RolloutReport::default(),
            cash_receipts: receipts::ReceiptReport::default(),
        };
        (report, self.failed)
    }
}

/// Refuses a billing time beyond the allowed skew of the real clock: a
/// mistyped manual run or a forged queue message would make everyone due
/// at once (defect D7).
fn check_billing_time(
    clock: BillingClock,
    billing_time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let ahead = billing_time - now;
    if clock == BillingClock::Wall && ahead > BILLING_CLOCK_SKEW {
        return Err(RunError::FutureBillingTime {
            billing_time,
            ahead_secs: ahead.num_seconds(),
        });
    }
    Ok(())
}
