//! Benchmarks of the charge pipeline itself: the production engine on the
//! in-memory ledger with a modelled DynamoDB latency (`SlowLedger`) and the
//! real i'mport client against the simulator, **a separate process** (its
//! URL given), with a fixed latency. No moto_server: what is measured is our
//! pipeline, and this process's CPU is the pipeline's and the in-memory
//! store's, not the simulator's.
//!
//! - `pipeline`: a sequential baseline (one charge after another, a fresh
//!   token each time, as i'mport's public samples do) and one worker at each
//!   given concurrency, side by side in one run; prints charges/s, the ratio
//!   to the ideal (concurrency ÷ i'mport latency), the speed-up and the CPU
//!   time per charge.
//! - `fanout`: N due through the planner and W workers (queued mode) on an
//!   in-memory queue; prints wall time, CPU per charge, store requests and
//!   queue messages per charge.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use shared::billing::SubscriptionId;
use shared::charging::BillingRun;
use shared::clock::Clock;
use shared::config::Config;
use shared::engine::{Budget, Engine, Settings};
use shared::gateway::iamport::{ClientConfig, IamportClient};
use shared::gateway::limit::Limited;
use shared::run::queue::{self, QueueError, WorkMessage, WorkQueue};
use shared::run::{self as billing_run, RunOptions, WorkItem};
use shared::secret::Secret;
use tokio::sync::Mutex;

use crate::process;
use crate::slow::SlowLedger;

type BenchEngine = Engine<SlowLedger, Limited<IamportClient>>;

/// The simulator, running as its own process at `base_url`.
pub struct Sim {
    pub base_url: String,
    http: reqwest::Client,
}

impl Sim {
    pub fn at(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Every API answer delayed by `latency` (`POST /__sim/latency`).
    pub async fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.http
            .post(format!("{}/__sim/latency", self.base_url))
            .json(&serde_json::json!({ "ms": ms }))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the simulator takes its latency");
    }

    /// Billing keys registered directly (`POST /__sim/customers`), 32 at a time.
    pub async fn add_customers(&self, customer_uids: &[String]) {
        let url = format!("{}/__sim/customers", self.base_url);
        let adds = futures::stream::iter(customer_uids.iter().map(|uid| {
            let body = serde_json::json!({"customer_uid": uid, "pg_provider": "chai"});
            let request = self.http.post(&url).json(&body);
            async move {
                request
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map(drop)
            }
        }))
        .buffer_unordered(32);
        let results: Vec<_> = adds.collect().await;
        for r in results {
            r.expect("the simulator registers a billing key");
        }
    }
}

/// The store, with `n` subscriptions due at `at` (their billing keys
/// registered in the simulator).
pub struct Setup {
    pub sim_url: String,
    pub ledger: SlowLedger,
    pub ids: Vec<SubscriptionId>,
    pub customer_uids: Vec<String>,
    pub at: DateTime<Utc>,
}

pub async fn setup(sim: &Sim, n: usize, store_latency: Duration) -> Setup {
    let ledger = crate::slow::slow_ledger(store_latency);
    let created = Utc::now() - chrono::Duration::hours(1);
    let mut ids = Vec::with_capacity(n);
    let mut customer_uids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = SubscriptionId::generate();
        let mut sub = testkit::sample_subscription(&id, created);
        sub.next_charge_at = created;
        customer_uids.push(sub.customer_uid.clone());
        // Straight into the store: seeding is not what is measured.
        shared::testing::store_subscription(&*ledger.inner, &sub).await;
        ids.push(id);
    }
    sim.add_customers(&customer_uids).await;
    Setup {
        sim_url: sim.base_url.clone(),
        ledger,
        ids,
        customer_uids,
        at: Utc::now(),
    }
}

/// The production engine over the slow store and the simulator, with
/// `concurrency` i'mport requests in flight at most.
pub fn engine(setup: &Setup, concurrency: usize) -> BenchEngine {
    let vars = [
        ("TABLE_NAME", "bench".to_owned()),
        ("IAMPORT_KEY", "sim_imp_key".to_owned()),
        ("IAMPORT_SECRET", "sim_imp_secret".to_owned()),
        ("IAMPORT_BASE_URL", setup.sim_url.clone()),
        ("CHARGE_CONCURRENCY", concurrency.to_string()),
        ("MERCHANT_UID_KEY", "bench-merchant-uid-key".to_owned()),
    ];
    let config =
        Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .expect("bench config");
    let uid_key = shared::billing::UidKey::new(b"bench-merchant-uid-key").expect("uid key");
    let settings = Settings::from_config(&config, uid_key);
    let client = IamportClient::new(ClientConfig::new(
        config.gateway.base_url().clone(),
        Secret::new("sim_imp_key".to_owned()),
        Secret::new("sim_imp_secret".to_owned()),
    ))
    .expect("client");
    Engine::new(
        setup.ledger.clone(),
        Limited::new(client, concurrency),
        Clock::system(),
        settings,
    )
}

/// One charge after another, as i'mport's public samples do: a fresh token
/// for every charge, then `again`. Returns charges per second.
pub async fn sequential(setup: &Setup, count: usize) -> f64 {
    let http = reqwest::Client::new();
    let base = &setup.sim_url;
    let keys = &setup.customer_uids[..count.min(setup.customer_uids.len())];
    let started = Instant::now();
    for (i, customer_uid) in keys.iter().enumerate() {
        let token: serde_json::Value = http
            .post(format!("{base}/users/getToken"))
            .json(&serde_json::json!({"imp_key": "sim_imp_key", "imp_secret": "sim_imp_secret"}))
            .send()
            .await
            .expect("getToken")
            .json()
            .await
            .expect("token JSON");
        let token = token["response"]["access_token"]
            .as_str()
            .unwrap_or_default();
        let answer: serde_json::Value = http
            .post(format!("{base}/subscribe/payments/again"))
            .header("authorization", token)
            .json(&serde_json::json!({
                "customer_uid": customer_uid, "merchant_uid": format!("seq{i}t{}", started.elapsed().as_nanos()),
                "amount": 9900, "name": "baseline"
            }))
            .send()
            .await
            .expect("again")
            .json()
            .await
            .expect("again JSON");
        assert_eq!(answer["code"], 0, "{answer}");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// What one measured run did.
pub struct Measured {
    pub charged: u64,
    pub seconds: f64,
    /// This process's CPU milliseconds per charge (engine, HTTP client,
    /// in-memory store; the simulator runs elsewhere).
    pub cpu_ms_per_charge: f64,
    pub store_requests: u64,
    pub messages: u64,
}

/// One worker (the `work_items` path every charge-worker invocation takes)
/// over every due subscription of `setup`.
pub async fn one_worker(setup: &Setup, concurrency: usize) -> Measured {
    let engine = engine(setup, concurrency);
    let items: Vec<WorkItem> = setup
        .ids
        .iter()
        .cloned()
        .map(WorkItem::Subscription)
        .collect();
    let before = setup.ledger.watcher.requests.load(Ordering::Relaxed);
    let options = RunOptions {
        run: BillingRun {
            billing_time: setup.at,
            run_id: "bench-worker".into(),
        },
        budget: Budget::unlimited(),
    };
    let (started, cpu) = (Instant::now(), process::cpu_seconds());
    let (report, undone) = billing_run::work_items(&engine, &options, items).await;
    assert!(undone.is_empty(), "{:?}", report.error);
    Measured {
        charged: report.summary.charged,
        seconds: started.elapsed().as_secs_f64(),
        cpu_ms_per_charge: process::cpu_ms_per(cpu, report.summary.charged),
        store_requests: setup.ledger.watcher.requests.load(Ordering::Relaxed) - before,
        messages: 0,
    }
}

/// A queue in memory (what SQS is in AWS).
#[derive(Default)]
struct MemoryQueue {
    messages: Mutex<VecDeque<WorkMessage>>,
}

impl WorkQueue for MemoryQueue {
    async fn send(&self, messages: &[WorkMessage]) -> Result<(), QueueError> {
        self.messages.lock().await.extend(messages.iter().cloned());
        Ok(())
    }
}

/// The queued mode: the planner pages the due index into the queue while
/// `workers` take batches of 4 messages and charge them. The i'mport cap is
/// the total (`workers × per_worker`), as the queue mapping's
/// MaximumConcurrency and each worker's CHARGE_CONCURRENCY make it in AWS.
pub async fn fanout(setup: &Setup, workers: usize, per_worker: usize) -> Measured {
    let engine = Arc::new(engine(setup, workers * per_worker));
    let queue = Arc::new(MemoryQueue::default());
    let before = setup.ledger.watcher.requests.load(Ordering::Relaxed);
    let options = RunOptions {
        run: BillingRun {
            billing_time: setup.at,
            run_id: "bench-plan".into(),
        },
        budget: Budget::unlimited(),
    };
    let (started, cpu) = (Instant::now(), process::cpu_seconds());
    let planner = {
        let (engine, queue, options) = (Arc::clone(&engine), Arc::clone(&queue), options.clone());
        tokio::spawn(async move { queue::plan(&*engine, &options, &*queue).await })
    };
    let planned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..workers {
        let (engine, queue, planned) = (
            Arc::clone(&engine),
            Arc::clone(&queue),
            Arc::clone(&planned),
        );
        handles.push(tokio::spawn(async move {
            let mut charged = 0;
            loop {
                let batch: Vec<WorkMessage> = {
                    let mut q = queue.messages.lock().await;
                    let n = q.len().min(4);
                    q.drain(..n).collect()
                };
                if batch.is_empty() {
                    if planned.load(Ordering::SeqCst) {
                        return charged;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let items: Vec<WorkItem> = batch
                    .iter()
                    .flat_map(|m| m.work().unwrap_or_default())
                    .collect();
                let options = RunOptions {
                    run: batch[0].run(),
                    budget: Budget::unlimited(),
                };
                let (report, undone) = billing_run::work_items(&*engine, &options, items).await;
                assert!(undone.is_empty(), "worker {w}: {:?}", report.error);
                charged += report.summary.charged;
            }
        }));
    }
    let plan = planner.await.expect("planner");
    planned.store(true, Ordering::SeqCst);
    let mut charged = 0;
    for h in handles {
        charged += h.await.expect("worker");
    }
    Measured {
        charged,
        seconds: started.elapsed().as_secs_f64(),
        cpu_ms_per_charge: process::cpu_ms_per(cpu, charged),
        store_requests: setup.ledger.watcher.requests.load(Ordering::Relaxed) - before,
        messages: plan.messages,
    }
}
