//! `charge-bench`: measures one charge run (the real `scheduled-charge`
//! handler, in-process) against moto_server and the i'mport simulator
//! running as separate processes. Driven by `scripts/bench.sh`.
//!
//! - `seed`: bulk-load N due subscriptions (BatchWriteItem) and register their
//!   billing keys in the simulator;
//! - `run`: one billing run; prints charges/s, the ratio to the ideal
//!   (concurrency ÷ simulator latency), DynamoDB requests per charge, and
//!   this process's peak RSS (VmHWM);
//! - `query`: pages through the due index and prints pages and time;
//! - `queue`, `plan`, `work`: one function per process on moto_server
//!   (DynamoDB and SQS): create the charge queue, run the real planner
//!   (`scheduled-charge` in queued mode) into it, then the real
//!   `charge-worker` over it (this process playing Lambda's SQS event
//!   source); each prints its own CPU time and peak RSS;
//! - `pipeline`, `fanout`: our pipeline without moto (see `pipeline.rs`).

mod functions;
mod pipeline;
mod process;
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
    /// Create the charge queue (SQS at AWS_ENDPOINT_URL_SQS); prints its URL.
    Queue {
        #[arg(long)]
        name: String,
    },
    /// The planner alone (`scheduled-charge` with CHARGE_MODE=queued) at `--at`.
    Plan {
        #[arg(long)]
        at: DateTime<Utc>,
    },
    /// One charge-worker process over the queue until it is empty: up to
    /// `--batch` messages per invocation, as Lambda's SQS event source.
    Work {
        #[arg(long)]
        queue_url: String,
        #[arg(long, default_value_t = 10)]
        batch: i32,
        /// The simulator's added latency, for the ideal rate.
        #[arg(long)]
        latency_ms: u64,
    },
    /// Our pipeline, without moto: the in-memory ledger at a modelled
    /// DynamoDB latency, the simulator (its own process, at `--sim-url`)
    /// at i'mport's. A sequential baseline and one worker per concurrency,
    /// side by side.
    Pipeline {
        #[arg(long, env = "IAMPORT_BASE_URL")]
        sim_url: String,
        /// Each worker run charges `concurrency × seconds ÷ latency`.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, value_delimiter = ',', default_values_t = [32, 128])]
        concurrency: Vec<usize>,
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
        #[arg(long, env = "IAMPORT_BASE_URL")]
        sim_url: String,
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

/// The functions' `App` over DynamoDB (counted by `counter`) and the
/// i'mport client the configuration names.
async fn app(
    config: Config,
    counter: &Counter,
) -> Result<App<DynamoLedger>, Box<dyn std::error::Error>> {
    let store = store(&config, counter).await;
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
    Ok(App::new(
        config,
        store,
        credentials,
        shared::clock::Clock::system(),
    )?)
}

/// The sequential baseline, then one worker per concurrency, on fresh
/// subscriptions each (a charged subscription is no longer due).
async fn pipeline_runs(
    sim_url: &str,
    seconds: u64,
    concurrencies: &[usize],
    latency_ms: u64,
    store_ms: u64,
    sequential: usize,
) {
    let sim = pipeline::Sim::at(sim_url);
    let (gateway, store) = (
        Duration::from_millis(latency_ms),
        Duration::from_millis(store_ms),
    );
    sim.set_latency(Duration::ZERO).await;
    let baseline = pipeline::setup(&sim, sequential, store).await;
    sim.set_latency(gateway).await;
    let seq = pipeline::sequential(&baseline, sequential).await;
    println!(
        "sequential baseline (fresh token per charge, one at a time): {sequential} charges, {seq:.1} charges/s"
    );
    for &concurrency in concurrencies {
        let charges = usize::try_from(concurrency as u64 * seconds * 1000 / latency_ms.max(1))
            .unwrap_or(usize::MAX);
        sim.set_latency(Duration::ZERO).await;
        let setup = pipeline::setup(&sim, charges, store).await;
        sim.set_latency(gateway).await;
        let m = pipeline::one_worker(&setup, concurrency).await;
        let rate = m.charged as f64 / m.seconds;
        let ideal = concurrency as f64 / gateway.as_secs_f64();
        println!(
            "one worker, concurrency {concurrency}, i'mport {latency_ms} ms (the simulator in its own process), store {store_ms} ms/request (in-memory ledger): {} charged in {:.2} s = {rate:.1} charges/s; ideal {ideal:.0}/s; ratio {:.3}; speed-up over sequential {:.1}x; CPU {:.3} ms per charge; store requests per charge {:.2}; this process's peak RSS so far {:.1} MiB (the in-memory store included)",
            m.charged,
            m.seconds,
            rate / ideal,
            rate / seq,
            m.cpu_ms_per_charge,
            m.store_requests as f64 / m.charged.max(1) as f64,
            process::peak_rss_mib()
        );
    }
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
        let uids: Vec<String> = subs.iter().map(|s| s.customer_uid.clone()).collect();
        pipeline::Sim::at(config.gateway.base_url().as_str())
            .add_customers(&uids)
            .await;
        eprintln!("registered {count} billing keys in the simulator");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Pipeline {
            sim_url,
            seconds,
            concurrency,
            latency_ms,
            store_ms,
            sequential,
        } => {
            pipeline_runs(
                sim_url,
                *seconds,
                concurrency,
                *latency_ms,
                *store_ms,
                *sequential,
            )
            .await;
            return Ok(());
        }
        Command::Fanout {
            sim_url,
            due,
            workers,
            per_worker,
            latency_ms,
            store_ms,
        } => {
            let sim = pipeline::Sim::at(sim_url);
            sim.set_latency(Duration::ZERO).await;
            let setup = pipeline::setup(&sim, *due, Duration::from_millis(*store_ms)).await;
            let after_seed = process::peak_rss_mib();
            sim.set_latency(Duration::from_millis(*latency_ms)).await;
            let m = pipeline::fanout(&setup, *workers, *per_worker).await;
            let total = workers * per_worker;
            let ideal = total as f64 / (*latency_ms as f64 / 1000.0);
            println!(
                "queued mode: {due} due, planner + {workers} workers x {per_worker} (i'mport {total} in flight), i'mport {latency_ms} ms (the simulator in its own process), store {store_ms} ms/request: {} charged in {:.1} s = {:.0} charges/s (ideal {ideal:.0}/s, ratio {:.2}); CPU {:.3} ms per charge in this process; store requests per charge {:.2}; messages per charge {:.3}; peak RSS {:.1} MiB (after seeding {after_seed:.1} MiB: the in-memory store of {due} subscriptions lives in this process)",
                m.charged,
                m.seconds,
                m.charged as f64 / m.seconds,
                m.charged as f64 / m.seconds / ideal,
                m.cpu_ms_per_charge,
                m.store_requests as f64 / m.charged.max(1) as f64,
                m.messages as f64 / m.charged.max(1) as f64,
                process::peak_rss_mib()
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
            let concurrency = config.charging.concurrency;
            let app = app(config, &counter).await?;
            let payload =
                serde_json::json!({"scheduled_time": at.to_rfc3339(), "execution_id": "bench"});
            let (started, cpu) = (Instant::now(), process::cpu_seconds());
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
                "run: due {} charged {} in {:.2} s | {:.1} charges/s, ideal {:.1} (concurrency {} / {} ms) -> ratio {:.3} | DynamoDB requests {} ({:.2} per charge, {:.1} ms mean wait) | CPU {:.3} ms per charge | peak RSS {:.1} MiB",
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
                process::cpu_ms_per(cpu, s.charged),
                process::peak_rss_mib()
            );
        }
        Command::Queue { name } => println!("{}", functions::create_queue(&name).await?),
        Command::Plan { at } => functions::plan(config, at).await?,
        Command::Work {
            queue_url,
            batch,
            latency_ms,
        } => functions::work(config, queue_url, batch, latency_ms).await?,
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
