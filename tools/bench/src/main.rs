//! `charge-bench`: measures one charge run (the real `scheduled-charge`
//! handler, in-process) against moto_server and the i'mport simulator
//! running as separate processes. Driven by `scripts/bench.sh`.
//!
//! - `seed`: bulk-load N due subscriptions (BatchWriteItem) and register their
//!   billing keys in the simulator;
//! - `run`: one billing run; prints charges/s, the ratio to the ideal
//!   (concurrency ÷ simulator latency), DynamoDB requests per charge, and
//!   this process's peak RSS (VmHWM);
//! - `query`: pages through the due index and prints pages and time.

mod pipeline;
mod slow;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use shared::app::App;
use shared::billing::Subscription;
use shared::billing::SubscriptionId;
use shared::config::Config;
use shared::ledger::Ledger;
use shared::ledger::dynamodb::{DynamoLedger, table};
use shared::secret::Secret;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the table (if missing) and load `count` due subscriptions.
    Seed {
        #[arg(long)]
        count: usize,
        /// Also register each billing key in the simulator at IAMPORT_BASE_URL.
        #[arg(long)]
        keys: bool,
    },
    /// One billing run at `--at` with the configured concurrency.
    Run {
        #[arg(long)]
        at: DateTime<Utc>,
        /// The simulator's added latency, for the ideal rate.
        #[arg(long)]
        latency_ms: u64,
        /// Give the invocation a Lambda deadline this far away (0: none).
        #[arg(long, default_value_t = 0)]
        deadline_secs: u64,
    },
    /// Page through the due index at `--at`.
    Query {
        #[arg(long)]
        at: DateTime<Utc>,
    },
    /// Our pipeline, without moto: the in-memory ledger at a modelled
    /// DynamoDB latency, the simulator (in this process) at i'mport's. A
    /// sequential baseline and one worker, side by side.
    Pipeline {
        #[arg(long, default_value_t = 3200)]
        charges: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        #[arg(long, default_value_t = 5)]
        store_ms: u64,
        /// Charges of the sequential baseline.
        #[arg(long, default_value_t = 40)]
        sequential: usize,
    },
    /// The queued mode at scale: planner + workers on an in-memory queue.
    Fanout {
        #[arg(long, default_value_t = 100_000)]
        due: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 32)]
        per_worker: usize,
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        #[arg(long, default_value_t = 5)]
        store_ms: u64,
    },
}

/// Counts DynamoDB requests sent and the time spent waiting for their answers.
#[derive(Debug, Clone, Default)]
struct Counter {
    requests: Arc<AtomicU64>,
    waited_us: Arc<AtomicU64>,
}

/// When a request was handed to the HTTP client (kept in the operation's config bag).
#[derive(Debug, Clone)]
struct SentAt(Instant);

impl Storable for SentAt {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "request-counter"
    }
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        cfg.interceptor_state().store_put(SentAt(Instant::now()));
        Ok(())
    }
    fn read_after_transmit(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if let Some(SentAt(at)) = cfg.load::<SentAt>() {
            let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.waited_us.fetch_add(us, Ordering::Relaxed);
        }
        Ok(())
    }
}

async fn store(config: &Config, counter: &Counter) -> DynamoLedger {
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let dynamo = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(counter.clone())
        .build();
    DynamoLedger::new(
        aws_sdk_dynamodb::Client::from_conf(dynamo),
        config.table.name.clone(),
        config.table.due_shards,
    )
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn subscription(created: DateTime<Utc>) -> Subscription {
    let mut sub = testkit::sample_subscription(&SubscriptionId::generate(), created);
    sub.customer_uid = format!("cu_bench_{}", sub.id);
    sub.next_charge_at = created;
    sub
}

async fn seed(
    config: &Config,
    count: usize,
    with_keys: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let counter = Counter::default();
    let store = store(config, &counter).await;
    if let Err(e) = table::create_table(store.client(), &config.table.name).await {
        eprintln!("create table: {e} (continuing: it may exist)");
    }
    let created = Utc::now() - chrono::Duration::hours(1);
    let subs: Vec<Subscription> = (0..count).map(|_| subscription(created)).collect();
    let mut items = Vec::with_capacity(subs.len());
    for s in &subs {
        items.push(store.subscription_item(s).await?);
    }
    let started = Instant::now();
    let writes = futures::stream::iter(items.chunks(25).map(|chunk| {
        let requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                let put = PutRequest::builder().set_item(Some(item.clone())).build();
                WriteRequest::builder()
                    .put_request(put.expect("put request"))
                    .build()
            })
            .collect();
        let client = store.client().clone();
        let table = config.table.name.clone();
        async move {
            let mut pending = Some(requests);
            while let Some(batch) = pending.take().filter(|b| !b.is_empty()) {
                let out = client
                    .batch_write_item()
                    .request_items(&table, batch)
                    .send()
                    .await?;
                pending = out.unprocessed_items.and_then(|mut m| m.remove(&table));
            }
            Ok::<_, aws_sdk_dynamodb::Error>(())
        }
    }))
    .buffer_unordered(8);
    use futures::StreamExt;
    let results: Vec<_> = writes.collect().await;
    for r in results {
        r?;
    }
    eprintln!(
        "seeded {count} subscriptions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if with_keys {
        let http = reqwest::Client::new();
        let url = format!(
            "{}/__sim/customers",
            config.gateway.base_url().as_str().trim_end_matches('/')
        );
        let adds = futures::stream::iter(subs.iter().map(|s| {
            let body = serde_json::json!({"customer_uid": s.customer_uid, "pg_provider": "chai"});
            let request = http.post(&url).json(&body);
            async move { request.send().await.and_then(|r| r.error_for_status()) }
        }))
        .buffer_unordered(32);
        let results: Vec<_> = adds.collect().await;
        for r in results {
            r?;
        }
        eprintln!("registered {count} billing keys in the simulator");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Pipeline {
            charges,
            concurrency,
            latency_ms,
            store_ms,
            sequential,
        } => {
            let (gateway, store) = (
                Duration::from_millis(*latency_ms),
                Duration::from_millis(*store_ms),
            );
            let setup = pipeline::setup(*charges, store, gateway).await;
            let seq = pipeline::sequential(&setup, *sequential).await;
            println!(
                "sequential baseline (fresh token per charge, one at a time): {sequential} charges, {seq:.1} charges/s"
            );
            let m = pipeline::one_worker(&setup, *concurrency).await;
            let rate = m.charged as f64 / m.seconds;
            let ideal = *concurrency as f64 / gateway.as_secs_f64();
            println!(
                "one worker, concurrency {concurrency}, i'mport {latency_ms} ms, store {store_ms} ms/request (in-memory ledger): {} charged in {:.2} s = {rate:.1} charges/s; ideal {ideal:.0}/s; ratio {:.3}; speed-up over sequential {:.1}x; store requests per charge {:.2}; peak RSS {:.1} MiB",
                m.charged,
                m.seconds,
                rate / ideal,
                rate / seq,
                m.store_requests as f64 / m.charged.max(1) as f64,
                peak_rss_mib()
            );
            return Ok(());
        }
        Command::Fanout {
            due,
            workers,
            per_worker,
            latency_ms,
            store_ms,
        } => {
            let setup = pipeline::setup(
                *due,
                Duration::from_millis(*store_ms),
                Duration::from_millis(*latency_ms),
            )
            .await;
            let after_seed = peak_rss_mib();
            let m = pipeline::fanout(&setup, *workers, *per_worker).await;
            let total = workers * per_worker;
            let ideal = total as f64 / (*latency_ms as f64 / 1000.0);
            println!(
                "queued mode: {due} due, planner + {workers} workers x {per_worker} (i'mport {total} in flight), i'mport {latency_ms} ms, store {store_ms} ms/request: {} charged in {:.1} s = {:.0} charges/s (ideal {ideal:.0}/s); store requests per charge {:.2}; messages per charge {:.3}; peak RSS {:.1} MiB (after seeding {after_seed:.1} MiB: the in-memory store and the simulator's ledger live in this process)",
                m.charged,
                m.seconds,
                m.charged as f64 / m.seconds,
                m.store_requests as f64 / m.charged.max(1) as f64,
                m.messages as f64 / m.charged.max(1) as f64,
                peak_rss_mib()
            );
            return Ok(());
        }
        _ => {}
    }
    let config = Config::from_env()?;
    match cli.command {
        Command::Seed { count, keys } => seed(&config, count, keys).await?,
        Command::Run {
            at,
            latency_ms,
            deadline_secs,
        } => {
            let counter = Counter::default();
            let store = store(&config, &counter).await;
            let concurrency = config.charging.concurrency;
            let (imp_key, imp_secret) = match &config.gateway.credentials {
                shared::config::CredentialsSource::Plain {
                    imp_key,
                    imp_secret,
                } => (imp_key.clone(), imp_secret.clone()),
                _ => (Secret::new(""), Secret::new("")),
            };
            let credentials = shared::app::Credentials {
                imp_key,
                imp_secret,
                uid_key: config.charging.uid_key.clone(),
                api_keys: Default::default(),
                portone: None,
            };
            let app = App::new(config, store, credentials, shared::clock::Clock::system())?;
            let payload =
                serde_json::json!({"scheduled_time": at.to_rfc3339(), "execution_id": "bench"});
            let started = Instant::now();
            let mut context = lambda_runtime::Context::default();
            if deadline_secs > 0 {
                let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default();
                context.deadline = now_ms + deadline_secs * 1000;
            }
            let report =
                scheduled_charge::handle(&app, lambda_runtime::LambdaEvent::new(payload, context))
                    .await?;
            let elapsed = started.elapsed();
            let s = &report.summary;
            let rate = s.charged as f64 / elapsed.as_secs_f64();
            let ideal = concurrency as f64 / Duration::from_millis(latency_ms).as_secs_f64();
            let requests = counter.requests.load(Ordering::Relaxed);
            let waited_ms = counter.waited_us.load(Ordering::Relaxed) as f64 / 1000.0;
            if let Some(why) = &report.stopped {
                println!("run stopped early: {why}");
            }
            println!(
                "run: due {} charged {} in {:.2} s | {:.1} charges/s, ideal {:.1} (concurrency {} / {} ms) -> ratio {:.3} | DynamoDB requests {} ({:.2} per charge, {:.1} ms mean wait) | peak RSS {:.1} MiB",
                s.due,
                s.charged,
                elapsed.as_secs_f64(),
                rate,
                ideal,
                concurrency,
                latency_ms,
                rate / ideal,
                requests,
                requests as f64 / s.charged.max(1) as f64,
                waited_ms / requests.max(1) as f64,
                peak_rss_mib()
            );
        }
        Command::Query { at } => {
            let counter = Counter::default();
            let store = store(&config, &counter).await;
            let started = Instant::now();
            let (mut ids, mut pages) = (0usize, 0usize);
            let mut cursor = None;
            loop {
                let page = store.due_page(at, 100, cursor.as_ref()).await?;
                pages += 1;
                ids += page.ids.len();
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            println!(
                "due query: {ids} due ids in {pages} pages over {} shards, {:.2} s ({:.1} ms per page)",
                store.shards(),
                started.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64() * 1000.0 / pages.max(1) as f64
            );
        }
        Command::Pipeline { .. } | Command::Fanout { .. } => {}
    }
    Ok(())
}
