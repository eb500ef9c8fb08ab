//! Chapter 7: the lifecycle events, as EventBridge delivered them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Args;
use crate::Result;
use crate::people::*;
use crate::stack::*;

/// The events' `source` (event-publisher's EVENT_SOURCE default).
pub(crate) const EVENT_SOURCE: &str = "subscription-billing";

/// Step 7: plays the event source mapping (the table's stream, read from
/// its start, in batches of 100, to event-publisher under `cargo lambda
/// watch`), then prints each customer's event log as the bus delivered it.
pub(crate) async fn lifecycle_events(
    stack: &Stack,
    ddb: &aws_sdk_dynamodb::Client,
    args: &Args,
    sink: &testkit::EventSink,
    members: &[&Member],
    checks: &mut Checks,
) -> Result<()> {
    stack.step(
        7,
        "lifecycle events: the table's stream → event-publisher → EventBridge → SQS",
    );
    let mut stream = testkit::StreamReader::open(ddb, &args.dynamodb, &args.table).await;
    let all = stream.next_batch().await;
    let records = all["Records"].as_array().cloned().unwrap_or_default();
    let url = format!(
        "{}/2015-03-31/functions/event-publisher/invocations",
        stack.lambda
    );
    let mut failures = 0;
    for batch in records.chunks(100) {
        let r = stack
            .http
            .post(&url)
            .json(&json!({ "Records": batch }))
            .send()
            .await?;
        let answer: Value = r.json().await.unwrap_or(Value::Null);
        failures += answer["batchItemFailures"].as_array().map_or(1, Vec::len);
    }
    let delivered = sink.drain().await;
    println!(
        "  {} stream records in {} batch(es) → {} events delivered",
        records.len(),
        records.len().div_ceil(100),
        delivered.len()
    );
    checks.check(
        failures == 0,
        format!("{failures} stream batch(es) reported records event-publisher could not publish"),
    );
    let mut ids = std::collections::HashSet::new();
    let mut log: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &delivered {
        let d = &e["detail"];
        ids.insert(d["id"].as_str().unwrap_or_default().to_owned());
        let data = &d["data"];
        let what = match d["type"].as_str().unwrap_or_default() {
            t @ ("charge.succeeded" | "charge.refunded" | "charge.needs_review") => format!(
                "{t} {} {} KRW{}",
                data["period"].as_str().unwrap_or_default(),
                won(data["amount"].as_i64().unwrap_or_default()),
                data["refunded"]
                    .as_i64()
                    .map(|r| format!(", refunded {}", won(r)))
                    .unwrap_or_default()
            ),
            "charge.failed" => format!(
                "charge.failed {} a{} ({}){}",
                data["period"].as_str().unwrap_or_default(),
                data["attempt"],
                data["reason"].as_str().unwrap_or_default(),
                data["next_retry_at"]
                    .as_str()
                    .map(|t| format!(", retry {t}"))
                    .unwrap_or_else(|| ", final".into())
            ),
            "subscription.cancelled" => format!(
                "subscription.cancelled ({})",
                data["mode"].as_str().unwrap_or_default()
            ),
            "subscription.plan_changed" => format!(
                "subscription.plan_changed → {} KRW ({})",
                won(data["plan"]["amount"].as_i64().unwrap_or_default()),
                data["effective"].as_str().unwrap_or_default()
            ),
            other => other.to_owned(),
        };
        log.entry(d["subscription_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(format!(
                "{} {what}",
                d["occurred_at"].as_str().unwrap_or_default()
            ));
    }
    checks.check(
        ids.len() == delivered.len(),
        "every delivered event has its own id",
    );
    for m in members {
        println!("  ── {} ({})", m.p.label, m.id);
        let lines = log.get(m.id.as_str()).cloned().unwrap_or_default();
        for l in &lines {
            println!("     {l}");
        }
        let has = |t: &str| lines.iter().any(|l| l.contains(t));
        let expected: &[&str] = match m.p.scenario {
            Scenario::Pays => &[
                "subscription.activated",
                "subscription.renewal_upcoming",
                "charge.succeeded",
                "charge.refunded",
            ],
            Scenario::AlwaysDeclined => &[
                "charge.failed",
                "subscription.past_due",
                "subscription.suspended",
            ],
            Scenario::DeclinedOnce => {
                &["charge.failed", "subscription.past_due", "charge.succeeded"]
            }
            Scenario::TimeoutAfterCharge => &["subscription.activated", "charge.succeeded"],
            Scenario::PlanChange => &["subscription.plan_changed"],
            Scenario::CancelAtPeriodEnd => &["subscription.cancelled (period_end)"],
            Scenario::NewCardAfterDecline => &[
                "charge.failed",
                "payment_method.action_required",
                "subscription.payment_method_updated",
                "charge.succeeded",
            ],
            Scenario::MidTermCancel => &["subscription.cancelled", "charge.refunded"],
            Scenario::TrialConsented => &[
                "subscription.activated",
                "subscription.trial_consented",
                "subscription.trial_will_end",
                "subscription.trial_converted",
                "charge.succeeded",
            ],
            Scenario::TrialLapses => &["subscription.trial_will_end", "subscription.cancelled"],
            Scenario::PriceIncreaseConsented => &[
                "subscription.price_change_requested",
                "subscription.price_change_consented",
                "subscription.plan_changed",
                "charge.succeeded",
            ],
            Scenario::PriceIncreaseDeclined => &[
                "subscription.price_change_requested",
                "subscription.price_change_declined",
                "subscription.cancelled",
            ],
            Scenario::Yearly => &["subscription.activated", "charge.succeeded"],
            Scenario::BillingDay => &[
                "subscription.activated",
                "subscription.renewal_upcoming",
                "charge.succeeded",
            ],
            Scenario::Pauses if args.months < 3 => &["subscription.paused"],
            Scenario::Pauses => &[
                "subscription.paused",
                "subscription.resumed",
                "charge.succeeded",
            ],
            Scenario::Coupon => &["subscription.activated", "charge.succeeded"],
            Scenario::ClosesWindow => &[],
        };
        let missing: Vec<&&str> = expected.iter().filter(|t| !has(t)).collect();
        checks.check(
            missing.is_empty(),
            format!("{}: events missing from the log: {missing:?}", m.p.label),
        );
    }
    Ok(())
}
