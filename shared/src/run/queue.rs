//! The queued mode of a run: the scheduled function only *plans* (pages the
//! due index and sends the work to a queue in messages), and workers charge
//! what the messages carry. Nothing here decides about money: a message
//! delivered twice, or a planner run twice for one instant, only leads to a
//! second look at work the first one claimed or settled (the claim decides).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::{Intake, RunOptions, Summary, WorkItem, reserve};
use crate::charging::{BillingRun, RunError};
use crate::engine::Engine;
use crate::ledger::Ledger;

/// Work items per message: a worker's invocation takes a few messages, and
/// a redelivered message repeats little.
pub const ITEMS_PER_MESSAGE: usize = 25;
/// Messages per send (SQS `SendMessageBatch` takes at most 10).
pub const MESSAGES_PER_SEND: usize = 10;

/// One queue message: a share of a run's work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkMessage {
    /// The run's billing clock (the scheduled time).
    pub billing_time: DateTime<Utc>,
    pub run_id: String,
    /// `WorkItem::encode`d.
    pub items: Vec<String>,
}

impl WorkMessage {
    pub fn run(&self) -> BillingRun {
        BillingRun {
            billing_time: self.billing_time,
            run_id: self.run_id.clone(),
        }
    }

    /// The items, or `None` if any does not decode (a message we did not
    /// write: never guessed at).
    pub fn work(&self) -> Option<Vec<WorkItem>> {
        self.items.iter().map(|t| WorkItem::decode(t)).collect()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(pub String);

/// Where a planner sends work.
pub trait WorkQueue: Send + Sync {
    /// Sends up to [`MESSAGES_PER_SEND`] messages; all or an error (a
    /// message sent twice is harmless).
    fn send(&self, messages: &[WorkMessage])
    -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// What a planner did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanReport {
    pub billing_time: Option<DateTime<Utc>>,
    pub run_id: String,
    /// Always `queued`: tells a planner's answer from a run's.
    pub mode: &'static str,
    /// Work items sent (subscriptions, open attempts, registrations).
    pub planned: u64,
    pub messages: u64,
    pub pages: u64,
    /// Entries of the due index that could not be read.
    pub corrupt: u64,
    pub stopped: Option<String>,
    pub error: Option<String>,
    /// Plan-wide price changes planned after the queue (decision 71).
    pub price_changes: super::rollouts::RolloutReport,
    /// Cash receipts worked after that (decision 74): those of the charges
    /// the workers made since the last plan.
    pub cash_receipts: super::receipts::ReceiptReport,
}

/// Pages the due index at the run's billing time and sends it to `queue`
/// in messages of [`ITEMS_PER_MESSAGE`]. Stops (with an error) on a failure
/// of the ledger or the queue: what was sent stays sent, and running the
/// planner again for the same instant is harmless.
pub async fn plan<L: Ledger, G: crate::gateway::PaymentGateway, Q: WorkQueue>(
    engine: &Engine<L, G>,
    options: &RunOptions,
    queue: &Q,
) -> PlanReport {
    let run = &options.run;
    let mut report = PlanReport {
        billing_time: Some(run.billing_time),
        run_id: run.run_id.clone(),
        mode: "queued",
        ..PlanReport::default()
    };
    let reserve = reserve(engine.settings.gateway_timeout).min(Duration::from_secs(10));
    let mut intake = Intake::default();
    let mut summary = Summary::default();
    let mut pending: Vec<WorkMessage> = Vec::new();
    let mut items: Vec<String> = Vec::new();
    loop {
        if !options.budget.allows(Duration::ZERO, reserve) {
            report.stopped = Some("deadline near: stopped planning".into());
            break;
        }
        let page = match intake.page(engine, run, &mut summary).await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                error!(error = %e, "due index unreadable; planning stops");
                report.error = Some(e.to_string());
                break;
            }
        };
        report.pages += 1;
        for item in page {
            items.push(item.encode());
            report.planned += 1;
            if items.len() == ITEMS_PER_MESSAGE {
                pending.push(message(run, std::mem::take(&mut items)));
            }
        }
        if pending.len() >= MESSAGES_PER_SEND
            && let Err(e) = flush(queue, &mut pending, &mut report, false).await
        {
            report.error = Some(e.to_string());
            break;
        }
    }
    report.corrupt = summary.corrupt;
    if report.error.is_none() {
        if !items.is_empty() {
            pending.push(message(run, items));
        }
        if let Err(e) = flush(queue, &mut pending, &mut report, true).await {
            report.error = Some(e.to_string());
        }
    }
    info!(
        planned = report.planned,
        messages = report.messages,
        pages = report.pages,
        error = ?report.error,
        "run planned into the queue"
    );
    if report.error.is_none() {
        report.price_changes = super::rollouts::plan(engine, &options.budget, reserve).await;
        report.cash_receipts = super::receipts::work(engine, &options.budget, reserve).await;
    }
    report
}

fn message(run: &BillingRun, items: Vec<String>) -> WorkMessage {
    WorkMessage {
        billing_time: run.billing_time,
        run_id: run.run_id.clone(),
        items,
    }
}

/// Sends full batches of pending messages (all of them when `all`).
async fn flush<Q: WorkQueue>(
    queue: &Q,
    pending: &mut Vec<WorkMessage>,
    report: &mut PlanReport,
    all: bool,
) -> Result<(), RunError> {
    while pending.len() >= MESSAGES_PER_SEND || (all && !pending.is_empty()) {
        let n = pending.len().min(MESSAGES_PER_SEND);
        let batch: Vec<WorkMessage> = pending.drain(..n).collect();
        queue
            .send(&batch)
            .await
            .map_err(|e| RunError::Ledger(crate::ledger::LedgerError::Transient(e.to_string())))?;
        report.messages += batch.len() as u64;
    }
    Ok(())
}

/// The queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl WorkQueue for SqsQueue {
    async fn send(&self, messages: &[WorkMessage]) -> Result<(), QueueError> {
        let mut request = self.client.send_message_batch().queue_url(&self.url);
        for (i, m) in messages.iter().enumerate() {
            let body = serde_json::to_string(m).map_err(|e| QueueError(e.to_string()))?;
            request = request.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .map_err(|e| QueueError(e.to_string()))?,
            );
        }
        let out = request
            .send()
            .await
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        if !out.failed().is_empty() {
            let why: Vec<String> = out
                .failed()
                .iter()
                .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or_default()))
                .collect();
            return Err(QueueError(format!(
                "{} of {} messages refused ({})",
                out.failed().len(),
                messages.len(),
                why.join("; ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{PeriodId, SubscriptionId};

    #[test]
    fn work_items_survive_a_message_and_nothing_else_is_read_as_one() {
        let id = SubscriptionId::parse("abcdefghij01").unwrap();
        let items = [
            WorkItem::Subscription(id.clone()),
            WorkItem::Attempt((id, PeriodId::parse("202612").unwrap(), 3)),
            WorkItem::Registration("rabcdefghij01k12345678".into()),
        ];
        for item in &items {
            assert_eq!(WorkItem::decode(&item.encode()).as_ref(), Some(item));
        }
        for bad in [
            "",
            "s:",
            "s:../x",
            "a:abcdefghij01:2026:1",
            "a:abcdefghij01:202612:x",
            "x:1",
            "r:",
        ] {
            assert_eq!(WorkItem::decode(bad), None, "{bad}");
        }
    }
}
