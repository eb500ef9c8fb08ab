//! The queued mode end to end on moto_server (DynamoDB and SQS) and the
//! i'mport simulator: scheduled-charge plans the run into a real SQS queue,
//! the test plays Lambda's SQS event source (receive, invoke the worker with
//! the messages, delete what it did not report failed, let the rest come
//! back), and the worker charges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::collections::BTreeMap;
use std::time::Duration;

use charge_worker::{WorkerAnswer, handle};
use chrono::{DateTime, TimeZone, Utc};
use iamport_sim::SimHandle;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use shared::app::App;
use shared::billing::{BILLING_TZ, Subscription};
use shared::ledger::Ledger;
use shared::run::queue::SqsQueue;
use testkit::sqs_source::{self, event_of};
use testkit::{app_for, dynamodb_endpoint, moto_sdk_config, seed_subscription, start_sim};

fn t0() -> DateTime<Utc> {
    BILLING_TZ
        .with_ymd_and_hms(2026, 12, 1, 10, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

async fn queue() -> SqsQueue {
    let client = aws_sdk_sqs::Client::new(&moto_sdk_config(&dynamodb_endpoint()).await);
    let suffix: u64 = rand_suffix();
    let url = client
        .create_queue()
        .queue_name(format!("charge-{suffix:016x}"))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("url");
    SqsQueue { client, url }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

async fn seeded(sim: &SimHandle, n: usize) -> (App, Vec<Subscription>) {
    let app = app_for(sim, &[("CHARGE_CONCURRENCY", "4")]).await;
    let mut subs = Vec::new();
    for _ in 0..n {
        subs.push(seed_subscription(&app, sim, t0() - chrono::Duration::hours(1)).await);
    }
    (app, subs)
}

/// scheduled-charge in queued mode, once.
async fn plan(app: &App, q: &SqsQueue, execution: &str) -> Value {
    testkit::clock_to(app, t0());
    let payload = json!({"scheduled_time": t0().to_rfc3339(), "execution_id": execution});
    let report = scheduled_charge::plan(app, q, LambdaEvent::new(payload, Context::default()))
        .await
        .expect("the plan is sent");
    serde_json::to_value(report).unwrap()
}

/// Up to 10 messages, as Lambda hands them to the worker.
async fn receive(q: &SqsQueue) -> Vec<aws_sdk_sqs::types::Message> {
    sqs_source::receive(q, 10, 0).await
}

/// Deletes what the worker did; what it reported failed comes back at once.
async fn settle(q: &SqsQueue, messages: &[aws_sdk_sqs::types::Message], answer: &WorkerAnswer) {
    let failed: Vec<String> = answer
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    sqs_source::settle(q, messages, &failed).await;
}

/// Plays the SQS event source until the queue is empty.
async fn drain(app: &App, q: &SqsQueue) -> (u64, u64) {
    let (mut charged, mut invocations) = (0, 0);
    for _ in 0..100 {
        let messages = receive(q).await;
        if messages.is_empty() {
            return (charged, invocations);
        }
        let answer = handle(app, event_of(&messages))
            .await
            .expect("the worker answers");
        charged += answer.summary.charged;
        invocations += 1;
        settle(q, &messages, &answer).await;
    }
    panic!("the queue never emptied");
}

/// Payments i'mport took per merchant_uid.
fn paid(sim: &SimHandle) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in sim.ledger() {
        if p.status == "paid" && p.customer_uid_usage.as_deref() == Some("payment") {
            *out.entry(p.merchant_uid.clone()).or_default() += 1;
        }
    }
    out
}

async fn all_paid_once(app: &App, sim: &SimHandle, subs: &[Subscription]) {
    let at_sim = paid(sim);
    assert!(
        at_sim.values().all(|n| *n == 1),
        "a merchant_uid paid twice: {at_sim:?}"
    );
    assert_eq!(at_sim.len(), subs.len(), "one payment per subscription");
    for s in subs {
        let now = app
            .engine
            .ledger
            .get_subscription(&s.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            now.period_index,
            s.period_index + 1,
            "{} moved to its next period",
            s.id
        );
        for a in app.engine.ledger.list_attempts(&s.id).await.unwrap() {
            assert!(!a.state.is_open(), "{a:?}");
        }
    }
}

#[tokio::test]
async fn a_planned_run_charges_every_due_subscription_once() {
    let sim = start_sim().await;
    let (app, subs) = seeded(&sim, 60).await;
    let q = queue().await;
    let report = plan(&app, &q, "exec-1").await;
    assert_eq!(report["mode"], "queued");
    assert_eq!(report["planned"], 60);
    assert_eq!(report["messages"], 3, "25 items per message");
    assert!(paid(&sim).is_empty(), "the planner charges nothing itself");
    let (charged, invocations) = drain(&app, &q).await;
    assert_eq!(charged, 60);
    assert_eq!(invocations, 1, "three messages fit one batch");
    all_paid_once(&app, &sim, &subs).await;
}

#[tokio::test]
async fn a_planner_run_twice_and_duplicate_messages_charge_nothing_twice() {
    let sim = start_sim().await;
    let (app, subs) = seeded(&sim, 20).await;
    let q = queue().await;
    plan(&app, &q, "exec-1").await;
    // The same schedule delivered again (another execution id), and SQS
    // delivering every message twice.
    plan(&app, &q, "exec-2").await;
    let bodies: Vec<String> = receive(&q)
        .await
        .iter()
        .filter_map(|m| m.body().map(str::to_owned))
        .collect();
    for b in &bodies {
        for _ in 0..2 {
            q.client
                .send_message()
                .queue_url(&q.url)
                .message_body(b)
                .send()
                .await
                .unwrap();
        }
    }
    let (charged, _) = drain(&app, &q).await;
    assert_eq!(charged, 20);
    all_paid_once(&app, &sim, &subs).await;
}

#[tokio::test]
async fn a_worker_that_dies_mid_batch_loses_nothing_and_charges_nothing_twice() {
    let sim = start_sim().await;
    let (app, subs) = seeded(&sim, 20).await;
    let q = queue().await;
    plan(&app, &q, "exec-1").await;
    // i'mport answers slowly; the worker is killed while charges are out.
    sim.set_latency(Duration::from_millis(300));
    let messages = receive(&q).await;
    let killed = tokio::time::timeout(
        Duration::from_millis(700),
        handle(&app, event_of(&messages)),
    )
    .await;
    assert!(killed.is_err(), "the worker was still working when it died");
    sim.set_latency(Duration::ZERO);
    // Its messages come back after the visibility timeout; its claims
    // expire; a new worker takes over, settles what was paid, sends the rest.
    for m in &messages {
        q.client
            .change_message_visibility()
            .queue_url(&q.url)
            .receipt_handle(m.receipt_handle().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    app.engine.clock.advance(
        chrono::Duration::from_std(
            app.engine.settings.charging.claim_lease + app.engine.settings.charging.resend_quiet,
        )
        .unwrap()
            + chrono::Duration::seconds(2),
    );
    drain(&app, &q).await;
    all_paid_once(&app, &sim, &subs).await;
}

#[tokio::test]
async fn a_message_that_is_not_ours_is_refused_for_the_dead_letter_queue() {
    let sim = start_sim().await;
    let (app, _) = seeded(&sim, 1).await;
    let q = queue().await;
    for body in [
        "not json",
        r#"{"billing_time":"2026-12-01T01:00:00Z","run_id":"x","items":["s:../../etc"]}"#,
    ] {
        q.client
            .send_message()
            .queue_url(&q.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let messages = receive(&q).await;
    let answer = handle(&app, event_of(&messages)).await.unwrap();
    assert_eq!(answer.batch_item_failures.len(), 2);
    assert_eq!(answer.summary.due, 0);
    assert!(paid(&sim).is_empty());
}
