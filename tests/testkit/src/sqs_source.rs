//! Lambda's SQS event source, played by hand: receive up to 10 messages,
//! hand them to the worker as an `SqsEvent`, delete what it did, and make
//! what it reported failed visible again at once (the visibility timeout,
//! shortened). Used by the charge-worker tests and by `charge-bench work`.

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use shared::run::queue::SqsQueue;

/// Up to `max` messages (at most 10), waiting up to `wait_secs` for the first.
pub async fn receive(q: &SqsQueue, max: i32, wait_secs: i32) -> Vec<Message> {
    q.client
        .receive_message()
        .queue_url(&q.url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("receive from {}: {e:?}", q.url))
        .messages
        .unwrap_or_default()
}

/// The messages as the event Lambda hands to the worker.
pub fn event_of(messages: &[Message]) -> LambdaEvent<SqsEvent> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:ap-northeast-2:123456789012:charge",
                "awsRegion": "ap-northeast-2",
            })
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(json!({ "Records": records }))
        .unwrap_or_else(|e| panic!("an SQS event: {e}"));
    LambdaEvent::new(event, Context::default())
}

/// Deletes the messages the worker did; the ones in `failed` (message ids,
/// its `batchItemFailures`) become visible again at once.
pub async fn settle(q: &SqsQueue, messages: &[Message], failed: &[String]) {
    for m in messages {
        let handle = m.receipt_handle().unwrap_or_default();
        let again = failed.iter().any(|f| Some(f.as_str()) == m.message_id());
        let done = if again {
            q.client
                .change_message_visibility()
                .queue_url(&q.url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        } else {
            q.client
                .delete_message()
                .queue_url(&q.url)
                .receipt_handle(handle)
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        };
        if let Err(e) = done {
            panic!("settling a message on {}: {e}", q.url);
        }
    }
}
