//! event-publisher: reads the table's change stream (DynamoDB Streams,
//! through a Lambda event source mapping) and publishes each committed
//! change's lifecycle events (`shared::events`) to an EventBridge bus.
//!
//! Delivery is at least once: a batch is retried from its first record not
//! published (`ReportBatchItemFailures`), and a record's events always have
//! the same ids, so a consumer drops a duplicate by `id`. Records are
//! published in stream order (per item, the order of its changes); a
//! failure stops the batch there, so nothing after it overtakes it.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use lambda_runtime::{Error, LambdaEvent};
use shared::billing::SubscriptionId;
use shared::events::{self, Event as LifecycleEvent};
use shared::ledger::Ledger;
use shared::ledger::dynamodb::stream::{Change, Item, change_of};
use tracing::{info, warn};

/// EventBridge takes at most 10 entries per `PutEvents`.
const PUT_EVENTS_MAX: usize = 10;

/// Where events go and under which `source`.
#[derive(Debug, Clone)]
pub struct Bus {
    pub client: aws_sdk_eventbridge::Client,
    /// The bus name or ARN (`EVENT_BUS_NAME`).
    pub name: String,
    /// The events' `source` (`EVENT_SOURCE`, default `subscription-billing`).
    pub source: String,
}

/// The function's state: the ledger (to read a charge's `user_id` from its
/// subscription) and the bus.
pub struct Publisher<L> {
    pub ledger: L,
    pub bus: Bus,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("a stream record could not be read: {0}")]
    Record(String),
    #[error("PutEvents failed: {0}")]
    Bus(String),
}

impl<L: Ledger> Publisher<L> {
    /// The lifecycle events of one stream record.
    pub async fn events_of(
        &self,
        record: &EventRecord,
    ) -> Result<Vec<LifecycleEvent>, PublishError> {
        let image =
            |i: &serde_dynamo::Item| -> Option<Item> { (!i.is_empty()).then(|| i.clone().into()) };
        let keys: Item = record.change.keys.clone().into();
        let old = image(&record.change.old_image);
        let new = image(&record.change.new_image);
        let change = change_of(&keys, old.as_ref(), new.as_ref())
            .map_err(|e| PublishError::Record(e.to_string()))?;
        Ok(match change {
            Change::Subscription { old, new } => {
                events::of_subscription(old.as_deref(), new.as_deref())
            }
            Change::Attempt { old, new } => {
                let Some(id) = new.as_ref().or(old.as_ref()).map(|a| &a.subscription_id) else {
                    return Ok(Vec::new());
                };
                let user_id = self.user_id(id).await?;
                events::of_attempt(old.as_deref(), new.as_deref(), &user_id)
            }
            Change::Other => Vec::new(),
        })
    }

    /// A charge's `user_id` is its subscription's (never changes).
    async fn user_id(&self, id: &SubscriptionId) -> Result<String, PublishError> {
        match self.ledger.get_subscription(id).await {
            Ok(Some(sub)) => Ok(sub.user_id),
            Ok(None) => Err(PublishError::Record(format!(
                "charge of unknown subscription {id}"
            ))),
            Err(e) => Err(PublishError::Record(e.to_string())),
        }
    }

    /// Publishes `events` in order, up to 10 per `PutEvents`. Any entry
    /// refused fails the whole record (it is retried; published entries
    /// come again with the same ids).
    pub async fn publish(&self, events: &[LifecycleEvent]) -> Result<(), PublishError> {
        for chunk in events.chunks(PUT_EVENTS_MAX) {
            let mut request = self.bus.client.put_events();
            for e in chunk {
                let detail =
                    serde_json::to_string(e).map_err(|e| PublishError::Bus(e.to_string()))?;
                let time = chrono::DateTime::parse_from_rfc3339(&e.occurred_at)
                    .map(|t| aws_sdk_eventbridge::primitives::DateTime::from_secs(t.timestamp()))
                    .ok();
                request = request.entries(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus.name)
                        .source(&self.bus.source)
                        .detail_type(e.kind)
                        .detail(detail)
                        .set_time(time)
                        .build(),
                );
            }
            let out = request.send().await.map_err(|e| {
                PublishError::Bus(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())
            })?;
            let failed = out.failed_entry_count();
            if failed > 0 {
                let why: Vec<String> = out
                    .entries()
                    .iter()
                    .filter_map(|r| {
                        r.error_code()
                            .map(|c| format!("{c}: {}", r.error_message().unwrap_or_default()))
                    })
                    .collect();
                return Err(PublishError::Bus(format!(
                    "{failed} of {} entries refused ({})",
                    chunk.len(),
                    why.join("; ")
                )));
            }
        }
        Ok(())
    }
}

/// One batch of stream records. Records are published in order; the first
/// that fails is reported (with `ReportBatchItemFailures`, the batch is
/// retried from it) and nothing after it is published in this invocation.
pub async fn handle<L: Ledger>(
    publisher: &Publisher<L>,
    event: LambdaEvent<Event>,
) -> Result<DynamoDbEventResponse, Error> {
    let records = &event.payload.records;
    let mut response = DynamoDbEventResponse::default();
    let mut published = 0usize;
    for record in records {
        let outcome = match publisher.events_of(record).await {
            Ok(events) => publisher.publish(&events).await.map(|()| events.len()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(n) => published += n,
            Err(e) => {
                warn!(
                    error = %e,
                    sequence_number = record.change.sequence_number.as_deref().unwrap_or_default(),
                    "stream record not published; the batch is retried from it"
                );
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = record.change.sequence_number.clone();
                response.batch_item_failures.push(failure);
                break;
            }
        }
    }
    info!(
        records = records.len(),
        events = published,
        failed = !response.batch_item_failures.is_empty(),
        "stream batch handled"
    );
    Ok(response)
}
