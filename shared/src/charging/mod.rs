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

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use serde::Serialize;
use tracing::error;

pub use report::emf_line;

use crate::billing::{Fact, SubscriptionId};
use crate::engine::{Budget, Engine};
use crate::gateway::{GatewayError, PaymentGateway};
use crate::ledger::{Cursor, Ledger, LedgerError};
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

/// Charges everything due at the billing time, with bounded concurrency.
pub async fn run<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    options: RunOptions,
) -> RunReport {
    let run = &options.run;
    let pace = Pace::default();
    let stop = AtomicBool::new(false);
    let stopped: Mutex<Option<String>> = Mutex::new(None);
    let fatal: Mutex<Option<RunError>> = Mutex::new(None);
    let halt = |why: String, e: Option<RunError>| {
        stop.store(true, Ordering::SeqCst);
        if let Ok(mut s) = stopped.lock() {
            s.get_or_insert(why);
        }
        if let (Some(e), Ok(mut f)) = (e, fatal.lock()) {
            f.get_or_insert(e);
        }
    };
    let reserve = reserve(engine.settings.gateway_timeout);
    let corrupt_entries = std::sync::atomic::AtomicU64::new(0);

    let pages = stream::unfold(Some(None::<Cursor>), |state| async {
        let cursor = state?;
        match engine
            .ledger
            .due_page(run.billing_time, PAGE_SIZE, cursor.as_ref())
            .await
        {
            Ok(page) => {
                for what in &page.corrupt {
                    error!(%what, "unreadable entry in the due index; skipped");
                }
                corrupt_entries.fetch_add(page.corrupt.len() as u64, Ordering::SeqCst);
                Some((Ok(page.ids), page.next.map(Some)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    // A subscription is charged at most once per run: one that was late and
    // declined may already be due again, and could come back on a later page.
    let mut seen = HashSet::new();
    let ids = pages
        .flat_map(|page| match page {
            Ok(ids) => stream::iter(ids.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        })
        .filter(move |next| {
            futures::future::ready(match next {
                Ok(id) => seen.insert(id.clone()),
                Err(_) => true,
            })
        });

    let mut summary = Summary::default();
    let work = ids
        .take_while(|_| {
            let go = !stop.load(Ordering::SeqCst) && options.budget.allows(Duration::ZERO, reserve);
            if !go && !stop.load(Ordering::SeqCst) {
                halt("deadline near: stopped taking new work".into(), None);
            }
            futures::future::ready(go)
        })
        .map(|next| {
            let pace = &pace;
            async move {
                match next {
                    Ok(id) => (
                        Some(id.clone()),
                        attempt::charge_one(engine, &id, run, pace).await,
                    ),
                    Err(e) => (None, Err(RunError::Ledger(e))),
                }
            }
        })
        .buffer_unordered(engine.settings.concurrency.max(1));
    futures::pin_mut!(work);
    while let Some((id, result)) = work.next().await {
        if id.is_some() {
            summary.due += 1;
        }
        match result {
            Ok(outcome) => {
                summary.add(&outcome);
                let streak = pace.streak();
                if streak >= TRANSIENT_LIMIT {
                    let e = RunError::Unavailable(streak);
                    halt(e.to_string(), Some(e));
                }
            }
            Err(RunError::Ledger(LedgerError::Corrupt(what))) => {
                error!(subscription_id = ?id.as_ref().map(|i| i.as_str()), %what, "unreadable item; skipped, the run goes on");
                summary.corrupt += 1;
            }
            Err(e) => {
                error!(subscription_id = ?id.as_ref().map(|i| i.as_str()), error = %e, "run stops taking new work");
                halt(format!("dependency failure: {e}"), Some(e));
                if id.is_some() {
                    summary.skipped += 1;
                }
            }
        }
    }
    summary.corrupt += corrupt_entries.load(Ordering::SeqCst);
    let error = fatal
        .lock()
        .ok()
        .and_then(|mut f| f.take())
        .map(|e| e.to_string());
    let stopped = stopped.lock().ok().and_then(|mut s| s.take());
    RunReport {
        billing_time: run.billing_time,
        run_id: run.run_id.clone(),
        summary,
        stopped,
        error,
    }
}
