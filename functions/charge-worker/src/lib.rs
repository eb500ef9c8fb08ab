//! charge-worker: charges what a planned run put in the charge queue
//! (`CHARGE_MODE=queued`). Each message carries a run's billing clock and
//! up to 25 work items; the items of a batch are charged like a run charges
//! the due index (`shared::run::work_items`: bounded concurrency, one
//! subscription once, the deadline respected).
//!
//! A message is reported failed (`ReportBatchItemFailures`) when one of its
//! items was not done (a dependency failed, or the deadline came first): it
//! comes back after the visibility timeout, and after `maxReceiveCount`
//! deliveries it lands in the dead-letter queue (alarm). Redelivered or
//! duplicate messages are harmless: the claim on each attempt decides.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsEvent};
use chrono::Utc;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use shared::app::App;
use shared::charging;
use shared::engine::Budget;
use shared::gateway::PaymentGateway;
use shared::ledger::Ledger;
use shared::run::queue::WorkMessage;
use shared::run::{self as billing_run, RunOptions, RunReport, Summary, WorkItem};
use tracing::{error, info};

pub const FUNCTION: &str = "charge-worker";

/// The answer: the messages to deliver again (what Lambda reads), and what
/// the batch did (for people and the local story; Lambda ignores it).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerAnswer {
    pub batch_item_failures: Vec<BatchItemFailure>,
    pub summary: Summary,
    pub messages: usize,
    pub stopped: Option<String>,
    pub error: Option<String>,
}

fn failure(message_id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = message_id.to_owned();
    f
}

fn add(total: &mut Summary, s: &Summary) {
    total.due += s.due;
    total.charged += s.charged;
    total.free += s.free;
    total.declined += s.declined;
    total.rejected += s.rejected;
    total.ambiguous += s.ambiguous;
    total.reconciled += s.reconciled;
    total.deferred += s.deferred;
    total.needs_review += s.needs_review;
    total.corrupt += s.corrupt;
    total.skipped += s.skipped;
    total.signups_completed += s.signups_completed;
    total.notices += s.notices;
    total.notices_action_required += s.notices_action_required;
    total.consent_requests += s.consent_requests;
}

/// One batch of queue messages.
pub async fn handle<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    event: LambdaEvent<SqsEvent>,
) -> Result<WorkerAnswer, scheduled_charge::RunFailed> {
    let budget = Budget::from_lambda_deadline(event.context.deadline());
    scheduled_charge::check_lease(app.engine.settings.charging.claim_lease, &budget)?;
    let mut answer = WorkerAnswer {
        messages: event.payload.records.len(),
        ..WorkerAnswer::default()
    };
    // Messages by run (a batch may hold two runs' messages), and which
    // messages carry each item.
    let mut runs: BTreeMap<(chrono::DateTime<Utc>, String), Vec<WorkItem>> = BTreeMap::new();
    let mut carriers: HashMap<WorkItem, Vec<String>> = HashMap::new();
    for record in &event.payload.records {
        let id = record.message_id.clone().unwrap_or_default();
        let parsed = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<WorkMessage>(b).ok())
            .and_then(|m| m.work().map(|items| (m, items)));
        let Some((message, items)) = parsed else {
            error!(message_id = %id, "a charge-queue message that is not ours; it goes to the dead-letter queue");
            answer.batch_item_failures.push(failure(&id));
            continue;
        };
        for item in &items {
            carriers.entry(item.clone()).or_default().push(id.clone());
        }
        runs.entry((message.billing_time, message.run_id))
            .or_default()
            .extend(items);
    }
    let mut again: HashSet<String> = answer
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    for ((billing_time, run_id), items) in runs {
        let options = RunOptions {
            run: charging::BillingRun {
                billing_time,
                run_id,
            },
            budget,
        };
        let (report, undone) = billing_run::work_items(&app.engine, &options, items).await;
        for item in &undone {
            for id in carriers.get(item).into_iter().flatten() {
                again.insert(id.clone());
            }
        }
        log(&report, undone.len());
        add(&mut answer.summary, &report.summary);
        answer.stopped = answer.stopped.or(report.stopped);
        answer.error = answer.error.or(report.error);
    }
    answer.batch_item_failures = again.iter().map(|id| failure(id)).collect();
    answer
        .batch_item_failures
        .sort_by(|a, b| a.item_identifier.cmp(&b.item_identifier));
    Ok(answer)
}

fn log(report: &RunReport, undone: usize) {
    let s = &report.summary;
    info!(
        run_id = %report.run_id, due = s.due, charged = s.charged, declined = s.declined,
        rejected = s.rejected, ambiguous = s.ambiguous, reconciled = s.reconciled,
        deferred = s.deferred, needs_review = s.needs_review, corrupt = s.corrupt,
        skipped = s.skipped, signups_completed = s.signups_completed, notices = s.notices,
        notices_action_required = s.notices_action_required,
        consent_requests = s.consent_requests, undone,
        stopped = ?report.stopped, error = ?report.error,
        "charge-queue batch finished"
    );
    println!(
        "{}",
        billing_run::emf_line(report, FUNCTION, Utc::now().timestamp_millis())
    );
}
