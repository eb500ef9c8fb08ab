//! Flow 2: charging due subscriptions, one attempt at a time, never twice.
//!
//! - `attempt`: one subscription: claim (or take over) its current attempt,
//!   settle what was left open, send the charge, record the answer;
//! - `settle`: the one find → verify → settle sequence;
//! - `pace`: backing off from a gateway that stops taking requests;
//! - `report`: the run's summary as a metrics line.
//!
//! The decisions themselves are the core's (`crate::billing`). See
//! `docs/charging.md` for the reasoning.

mod attempt;
mod pace;
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
use crate::registration::{self, Swept};
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

/// An entry of the due index.
enum Due {
    Subscription(SubscriptionId),
    Attempt(AttemptKey),
    Registration(String),
}

/// The due index, read a page at a time as work is taken.
#[derive(Default)]
struct Intake {
    queue: VecDeque<Due>,
    cursor: Option<Cursor>,
    done: bool,
    /// A subscription is charged at most once per run: one that was late and
    /// declined may already be due again, and could come back on a later page.
    seen: HashSet<SubscriptionId>,
}

impl Intake {
    async fn next<L: Ledger, G>(
        &mut self,
        engine: &Engine<L, G>,
        run: &BillingRun,
        summary: &mut Summary,
    ) -> Result<Option<Due>, RunError> {
        while self.queue.is_empty() && !self.done {
            let page = engine
                .ledger
                .due_page(run.billing_time, PAGE_SIZE, self.cursor.as_ref())
                .await?;
            for what in &page.corrupt {
                error!(%what, "unreadable entry in the due index; skipped");
            }
            summary.corrupt += page.corrupt.len() as u64;
            self.queue
                .extend(page.registrations.into_iter().map(Due::Registration));
            let seen = &mut self.seen;
            self.queue.extend(
                page.attempts
                    .into_iter()
                    .filter(|key| seen.insert(key.0.clone()))
                    .map(Due::Attempt),
            );
            self.queue.extend(
                page.ids
                    .into_iter()
                    .filter(|id| seen.insert(id.clone()))
                    .map(Due::Subscription),
            );
            self.done = page.next.is_none();
            self.cursor = page.next;
        }
        Ok(self.queue.pop_front())
    }
}

/// The work on one entry of the due index.
async fn work<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    entry: Due,
    run: &BillingRun,
    pace: &Pace,
    budget: Budget,
) -> (Option<SubscriptionId>, Result<Outcome, RunError>) {
    match entry {
        Due::Subscription(id) => {
            let outcome = attempt::charge_one(engine, &id, run, pace).await;
            (Some(id), outcome)
        }
        Due::Attempt(key) => {
            let outcome = attempt::attend(engine, &key, run, pace).await;
            (Some(key.0), outcome)
        }
        Due::Registration(uid) => {
            let swept = registration::complete_from_gateway(engine, &uid, None, budget).await;
            (None, Ok(Outcome::Swept(swept)))
        }
    }
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
}

/// Counts of one run, also logged and emitted as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub due: u64,
    pub charged: u64,
    pub declined: u64,
    pub rejected: u64,
    pub ambiguous: u64,
    pub reconciled: u64,
    pub deferred: u64,
    pub needs_review: u64,
    /// Items that could not be read: skipped, counted and alarmed on.
    pub corrupt: u64,
    pub skipped: u64,
    /// Pending sign-ups completed from the gateway's records (the browser
    /// never came back).
    pub signups_completed: u64,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Charged { .. } => self.charged += 1,
            Outcome::Declined { .. } => self.declined += 1,
            Outcome::Rejected { .. } => self.rejected += 1,
            Outcome::Ambiguous { .. } => self.ambiguous += 1,
            Outcome::Reconciled { .. } => self.reconciled += 1,
            Outcome::Deferred { .. } => self.deferred += 1,
            Outcome::NeedsReview { .. } => self.needs_review += 1,
            Outcome::Skipped { .. } => self.skipped += 1,
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
/// the due index is read page by page, up to `concurrency` entries are in
/// work at once, and new work stops near the deadline or on a failure of a
/// dependency as a whole.
pub async fn run<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    options: RunOptions,
) -> RunReport {
    let run = &options.run;
    let budget = options.budget;
    let reserve = reserve(engine.settings.gateway_timeout);
    let concurrency = engine.settings.concurrency.max(1);
    let pace = Pace::default();
    let mut summary = Summary::default();
    let mut stopped: Option<String> = None;
    let mut error: Option<RunError> = None;
    let mut intake = Intake::default();
    let mut in_work = FuturesUnordered::new();
    loop {
        // Take new work while there is room, time, and no reason to stop.
        while stopped.is_none() && in_work.len() < concurrency {
            let entry = match intake.next(engine, run, &mut summary).await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    error!(error = %e, "due index unreadable; the run stops");
                    stopped = Some(format!("dependency failure: {e}"));
                    error = Some(e);
                    break;
                }
            };
            if !budget.allows(Duration::ZERO, reserve) {
                stopped = Some("deadline near: stopped taking new work".into());
                break;
            }
            if matches!(entry, Due::Subscription(_) | Due::Attempt(_)) {
                summary.due += 1;
            }
            in_work.push(work(engine, entry, run, &pace, budget));
        }
        let Some((id, result)) = in_work.next().await else {
            break;
        };
        let failure = match result {
            Ok(outcome) => {
                summary.add(&outcome);
                let streak = pace.streak();
                (streak >= TRANSIENT_LIMIT).then_some(RunError::Unavailable(streak))
            }
            Err(RunError::Ledger(LedgerError::Corrupt(what))) => {
                error!(subscription_id = ?id.as_ref().map(|i| i.as_str()), %what, "unreadable item; skipped, the run goes on");
                summary.corrupt += 1;
                None
            }
            Err(e) => {
                error!(subscription_id = ?id.as_ref().map(|i| i.as_str()), error = %e, "run stops taking new work");
                summary.skipped += 1;
                Some(e)
            }
        };
        if let Some(e) = failure
            && stopped.is_none()
        {
            stopped = Some(format!("dependency failure: {e}"));
            error = Some(e);
        }
    }
    let error = error.map(|e| e.to_string());
    RunReport {
        billing_time: run.billing_time,
        run_id: run.run_id.clone(),
        summary,
        stopped,
        error,
    }
}
