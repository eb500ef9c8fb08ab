//! One function per process: the planner and a worker of the queued mode,
//! each run by `scripts/bench.sh` as its own `charge-bench` process over
//! moto_server (DynamoDB and SQS) and the simulator (another process), so
//! what each prints (CPU time, peak RSS) is that function's alone: the
//! store and the PG are elsewhere, as in AWS.

use std::error::Error;
use std::sync::atomic::Ordering;
use std::time::Instant;

use aws_config::BehaviorVersion;
use chrono::{DateTime, Utc};
use lambda_runtime::{Context, LambdaEvent};
use shared::config::{ChargeMode, Config};
use shared::run::queue::SqsQueue;
use testkit::sqs_source;

use crate::{Counter, app, process};

async fn sqs_queue(url: &str) -> SqsQueue {
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    SqsQueue {
        client: aws_sdk_sqs::Client::new(&sdk),
        url: url.to_owned(),
    }
}

/// Creates the queue (at `AWS_ENDPOINT_URL_SQS`) and returns its URL.
pub async fn create_queue(name: &str) -> Result<String, Box<dyn Error>> {
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let created = aws_sdk_sqs::Client::new(&sdk)
        .create_queue()
        .queue_name(name)
        .send()
        .await?;
    created
        .queue_url
        .ok_or_else(|| "CreateQueue answered without a URL".into())
}

/// The planner: `scheduled-charge` in queued mode, once, at `at`.
pub async fn plan(config: Config, at: DateTime<Utc>) -> Result<(), Box<dyn Error>> {
    let ChargeMode::Queued { queue_url } = &config.charging.mode else {
        return Err("plan needs CHARGE_MODE=queued and CHARGE_QUEUE_URL".into());
    };
    let queue = sqs_queue(queue_url.as_str()).await;
    let counter = Counter::default();
    let app = app(config, &counter).await?;
    let payload =
        serde_json::json!({"scheduled_time": at.to_rfc3339(), "execution_id": "bench-plan"});
    let (started, cpu) = (Instant::now(), process::cpu_seconds());
    let report =
        scheduled_charge::plan(&app, &queue, LambdaEvent::new(payload, Context::default())).await?;
    let cpu_ms = (process::cpu_seconds() - cpu) * 1000.0;
    println!(
        "planner (scheduled-charge, CHARGE_MODE=queued, its own process): {} planned into {} messages from {} due pages in {:.2} s; CPU {cpu_ms:.0} ms ({:.3} ms per planned charge); DynamoDB requests {}; peak RSS {:.1} MiB",
        report.planned,
        report.messages,
        report.pages,
        started.elapsed().as_secs_f64(),
        cpu_ms / report.planned.max(1) as f64,
        counter.requests.load(Ordering::Relaxed),
        process::peak_rss_mib()
    );
    Ok(())
}

/// One charge-worker process: invocations of up to `batch` messages until
/// the queue stays empty, this process playing Lambda's SQS event source.
pub async fn work(
    config: Config,
    queue_url: String,
    batch: i32,
    latency_ms: u64,
) -> Result<(), Box<dyn Error>> {
    let concurrency = config.charging.concurrency;
    let queue = sqs_queue(&queue_url).await;
    let counter = Counter::default();
    let app = app(config, &counter).await?;
    let (started, cpu) = (Instant::now(), process::cpu_seconds());
    let (mut charged, mut invocations, mut empty) = (0u64, 0u64, 0);
    let mut last = started;
    while empty < 2 {
        let messages = sqs_source::receive(&queue, batch, 1).await;
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        let answer = charge_worker::handle(&app, sqs_source::event_of(&messages)).await?;
        charged += answer.summary.charged;
        invocations += 1;
        let failed: Vec<String> = answer
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        sqs_source::settle(&queue, &messages, &failed).await;
        last = Instant::now();
    }
    let seconds = (last - started).as_secs_f64();
    let ideal = concurrency as f64 * 1000.0 / latency_ms.max(1) as f64;
    println!(
        "worker (charge-worker, concurrency {concurrency}, up to {batch} messages per invocation, its own process): {charged} charged in {invocations} invocations, {seconds:.2} s = {:.1} charges/s (ideal {ideal:.0}/s: moto_server bounds it); CPU {:.3} ms per charge; DynamoDB requests per charge {:.2}; peak RSS {:.1} MiB",
        charged as f64 / seconds.max(f64::EPSILON),
        process::cpu_ms_per(cpu, charged),
        counter.requests.load(Ordering::Relaxed) as f64 / charged.max(1) as f64,
        process::peak_rss_mib()
    );
    Ok(())
}
