//! One seed's world: the in-memory ledger and the model of the PG behind
//! the engine's two ports, on tokio's paused clock, with every choice (sign-up
//! times, declines, faults, crashes, latencies, duplicate deliveries,
//! operators' actions) drawn from one seeded generator in the order things
//! happen. The same seed gives the same trace, step for step.
//!
//! Every invocation (a scheduled run, a browser callback, a webhook, a
//! management call) gets its own engine over handles that count its steps,
//! so a crash can be placed at any await point: before an operation reaches
//! the ledger or the gateway, or after it took effect and before its answer
//! was seen.
//!
//! - `ledger`: the ledger port of one invocation (latency, crash points,
//!   observations);
//! - `gateway`: the gateway port (the model in each API's wire format, read
//!   by the production adapters; faults);
//! - `actors`: customers, merchants, operators and the schedule;
//! - `invariants`: what must hold, as steps happen and at the end.

mod actors;
mod gateway;
mod invariants;
mod ledger;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::billing::{
    BILLING_TZ, ChargeAttempt, MerchantUid, Registration, RegistrationStatus, SubscriptionId,
    UidKey,
};
use shared::clock::Clock;
use shared::config::{ChargingConfig, RegistrationConfig};
use shared::engine::{Budget, Engine, Settings};
use shared::ledger::Ledger;
use shared::ledger::memory::InMemoryLedger;
use shared::registration::{self, CallbackParams};

use crate::model::Model;
pub(crate) use gateway::SimGateway;
pub use invariants::INVARIANTS;
pub(crate) use invariants::Observed;
pub(crate) use ledger::{SimLedger, sim_ledger};

/// The size and character of one seed's world.
#[derive(Debug, Clone)]
pub struct Params {
    /// Subscriptions signing up during the first month.
    pub subscriptions: usize,
    /// Months of daily runs.
    pub months: u32,
    /// Gateway faults, crashes and stalls (off: a clean world, for comparison).
    pub faults: bool,
    /// Keep the trace's lines (for `--trace`), not only its hash.
    pub keep_trace: bool,
    /// Every gateway call takes this long (a slow PG), instead of a few
    /// milliseconds.
    pub gateway_latency: Option<Duration>,
    /// The gateway answers as PortOne V2 does (`PAYMENT_API=v2`): keys
    /// issued by PortOne (the redirect carries the key), typed refusals,
    /// payments looked up by `paymentId` only.
    pub v2: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            subscriptions: 8,
            months: 4,
            faults: true,
            keep_trace: false,
            gateway_latency: None,
            v2: false,
        }
    }
}

/// What one seed did and found.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub seed: u64,
    pub steps: u64,
    pub double_charges: u64,
    pub unrecorded: u64,
    pub stuck: u64,
    pub needs_review: u64,
    /// Broken invariants by name (each also in `violations`).
    pub broken: BTreeMap<&'static str, u64>,
    /// Invariants broken (each names what, where and when).
    pub violations: Vec<String>,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub stats: BTreeMap<&'static str, u64>,
}

impl SeedReport {
    pub fn ok(&self) -> bool {
        self.double_charges == 0
            && self.unrecorded == 0
            && self.stuck == 0
            && self.violations.is_empty()
    }
}

/// i'mport's (and PortOne's) request timeout as the engine sees it.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the PG keeps processing a request after our timeout, and the
/// longest its lookups lag behind a new payment: the assumption the resend
/// quiet period rests on (see docs/charging.md).
const MAX_PROCESSING: Duration = Duration::from_secs(300);
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(29);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
const MANAGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Before the operation reaches the ledger or the gateway.
    Before,
    /// After it took effect, before its answer is seen.
    After,
}

#[derive(Debug, Default)]
struct Invocation {
    kind: &'static str,
    ops: u32,
    crash_at: Option<(u32, Side)>,
    /// Claim tokens this invocation obtained.
    tokens: BTreeSet<String>,
    /// The process froze for longer than a lease at some point.
    stalled: bool,
}

#[derive(Default)]
struct Trace {
    hasher: DefaultHasher,
    lines: Option<Vec<String>>,
}

/// A customer's character.
#[derive(Debug, Clone)]
struct Customer {
    decline_rate: f64,
    /// The card dies (lost, expired, closed) at this instant: every charge
    /// of it from then on is declined with the message (a hard class).
    dies: Option<(DateTime<Utc>, &'static str)>,
    /// V2: charging this key is refused with 403 `FORBIDDEN`.
    forbidden: bool,
}

pub(crate) struct World {
    seed: u64,
    rng: Mutex<StdRng>,
    clock: Clock,
    origin: DateTime<Utc>,
    ledger: Arc<InMemoryLedger>,
    model: Mutex<Model>,
    settings: Settings,
    /// How often faults strike this seed (0 when off).
    fault_level: f64,
    faults: AtomicBool,
    /// The merchant's PG setting is broken: every charge is refused alike.
    setting_broken: AtomicBool,
    steps: AtomicU64,
    trace: Mutex<Trace>,
    violations: Mutex<Vec<String>>,
    broken: Mutex<BTreeMap<&'static str, u64>>,
    invocations: Mutex<BTreeMap<u32, Invocation>>,
    next_invocation: AtomicU32,
    customers: Mutex<BTreeMap<String, Customer>>,
    stats: Mutex<BTreeMap<&'static str, u64>>,
    /// What the invariants need to remember (statuses over time, cancels,
    /// refund requests, flags and the metrics that counted them).
    observed: Mutex<Observed>,
    gateway_latency: Option<Duration>,
    /// [`Params::v2`].
    v2: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type SimEngine = Engine<SimLedger, SimGateway>;

impl World {
    fn new(seed: u64, params: &Params) -> Arc<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let origin = BILLING_TZ
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        // Most seeds see faults now and then; some are storms, which make
        // the rare interleavings (a re-send racing a late request, a lease
        // running out in flight) common.
        let fault_level = match (params.faults, rng.random_range(0..10)) {
            (false, _) => 0.0,
            (true, 0..7) => rng.random_range(0.5..2.0),
            (true, _) => rng.random_range(3.0..8.0),
        };
        // Drawn in this order, the order the seeds were recorded with.
        let charge_on_signup = rng.random_bool(0.7);
        let refund_after_cancel = rng.random_bool(0.3);
        let resume_policy = if rng.random_bool(0.3) {
            shared::billing::changes::ResumePolicy::CollectOutstanding
        } else {
            shared::billing::changes::ResumePolicy::Reanchor
        };
        let settings = Settings {
            charging: ChargingConfig {
                concurrency: 4,
                refund_after_cancel,
                resume_policy,
                cash_receipts: shared::billing::CashReceiptMode::Auto,
                ..ChargingConfig::default()
            },
            registration: RegistrationConfig {
                charge_on_signup,
                callback_url: url::Url::parse("https://billing.example/billing/callback").ok(),
                ..RegistrationConfig::default()
            },
            gateway_timeout: TIMEOUT,
            pg: if params.v2 { "portone" } else { "chai" }.into(),
            uid_key: UidKey::new(b"simulation-merchant-uid-key")
                .unwrap_or_else(|| UidKey::derived_from(b"simulation")),
        };

        Arc::new(Self {
            seed,
            rng: Mutex::new(rng),
            clock: Clock::tokio(origin),
            origin,
            ledger: Arc::new(InMemoryLedger::new()),
            model: Mutex::new(Model::default()),
            settings,
            fault_level,
            faults: AtomicBool::new(params.faults),
            setting_broken: AtomicBool::new(false),
            steps: AtomicU64::new(0),
            trace: Mutex::new(Trace {
                hasher: DefaultHasher::new(),
                lines: params.keep_trace.then(Vec::new),
            }),
            violations: Mutex::new(Vec::new()),
            broken: Mutex::new(BTreeMap::new()),
            invocations: Mutex::new(BTreeMap::new()),
            next_invocation: AtomicU32::new(1),
            customers: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            observed: Mutex::new(Observed::default()),
            gateway_latency: params.gateway_latency,
            v2: params.v2,
        })
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn rand<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut lock(&self.rng))
    }

    fn faults_on(&self) -> bool {
        self.faults.load(Ordering::SeqCst)
    }

    /// Whether a fault with base probability `p` strikes now.
    fn strikes(&self, p: f64) -> bool {
        self.faults_on() && self.rand(|r| r.random_bool((p * self.fault_level).min(1.0)))
    }

    fn count(&self, what: &'static str) {
        *lock(&self.stats).entry(what).or_insert(0) += 1;
    }

    fn record(&self, line: String) {
        let at = self
            .now()
            .with_timezone(&BILLING_TZ)
            .format("%m-%d %H:%M:%S");
        let line = format!("{at} {line}");
        let mut t = lock(&self.trace);
        line.hash(&mut t.hasher);
        if let Some(lines) = t.lines.as_mut() {
            lines.push(line);
        }
    }

    /// An invariant named `which` broke: what, where and when.
    fn violation(&self, which: &'static str, what: String) {
        self.record(format!("VIOLATION {which}: {what}"));
        let at = self
            .now()
            .with_timezone(&BILLING_TZ)
            .format("%Y-%m-%d %H:%M:%S KST");
        *lock(&self.broken).entry(which).or_insert(0) += 1;
        lock(&self.violations).push(format!("seed {}: {at} {which}: {what}", self.seed));
    }

    /// A new invocation (one Lambda process's work) and its engine. With
    /// faults on, some invocations crash at a chosen await point.
    fn engine(self: &Arc<Self>, kind: &'static str) -> (u32, SimEngine) {
        let id = self.next_invocation.fetch_add(1, Ordering::SeqCst);
        let crash_at = if self.strikes(0.08) {
            let at = self.rand(|r| r.random_range(1..=12));
            let side = if self.rand(|r| r.random_bool(0.5)) {
                Side::Before
            } else {
                Side::After
            };
            Some((at, side))
        } else {
            None
        };
        lock(&self.invocations).insert(
            id,
            Invocation {
                kind,
                crash_at,
                ..Invocation::default()
            },
        );
        let seed = self.rand(|r| r.random());
        let engine = Engine::seeded(
            sim_ledger(Arc::clone(self), id),
            SimGateway::new(Arc::clone(self), id),
            self.clock.clone(),
            self.settings.clone(),
            seed,
        );
        (id, engine)
    }

    /// An await point of invocation `inv`: where a planned crash happens. A
    /// crashed invocation never goes on (its process is gone).
    async fn gate(&self, inv: u32, side: Side) {
        let crash = {
            let mut invocations = lock(&self.invocations);
            match invocations.get_mut(&inv) {
                Some(i) => {
                    if side == Side::Before {
                        i.ops += 1;
                    }
                    (i.crash_at == Some((i.ops, side))).then_some(i.kind)
                }
                None => None,
            }
        };
        if let Some(kind) = crash {
            self.record(format!("{inv} CRASH {kind} {side:?}"));
            self.count("crashes");
            std::future::pending::<()>().await;
        }
    }

    /// DynamoDB's latency, and now and then a stall of the process longer
    /// than a lease (a run that outlives its lease while in flight).
    async fn ledger_pause(&self, inv: u32) {
        let ms = self.rand(|r| r.random_range(1..=15));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if self.strikes(0.001) {
            self.count("stalls");
            if let Some(i) = lock(&self.invocations).get_mut(&inv) {
                i.stalled = true;
            }
            self.record(format!("{inv} STALL"));
            let mins = self.rand(|r| r.random_range(16..=30));
            tokio::time::sleep(Duration::from_secs(mins * 60)).await;
        }
    }

    async fn transit(&self) {
        let latency = match self.gateway_latency {
            Some(slow) => slow / 2,
            None => Duration::from_millis(self.rand(|r| r.random_range(5..=80))),
        };
        tokio::time::sleep(latency).await;
    }

    fn step(&self) {
        self.steps.fetch_add(1, Ordering::SeqCst);
    }

    fn hold(&self, inv: u32, token: &str) {
        if let Some(i) = lock(&self.invocations).get_mut(&inv) {
            i.tokens.insert(token.to_owned());
        }
    }

    fn holds(&self, inv: u32, token: &str) -> bool {
        lock(&self.invocations)
            .get(&inv)
            .is_some_and(|i| i.tokens.contains(token))
    }

    /// Whether invocation `inv` crashed or froze (its caller saw a timeout).
    fn crashed(&self, inv: u32) -> bool {
        lock(&self.invocations)
            .get(&inv)
            .is_some_and(|i| i.stalled || i.crash_at.is_some_and(|(at, _)| i.ops >= at))
    }

    /// The attempt a `merchant_uid` names, as stored now.
    fn attempt_of(&self, merchant_uid: &str) -> Option<ChargeAttempt> {
        match MerchantUid::parse(merchant_uid)? {
            MerchantUid::Charge {
                subscription,
                period,
                attempt,
            } => self.ledger.attempt_now(&subscription, &period, attempt),
            MerchantUid::Issuance { .. } => self
                .ledger
                .all_attempts()
                .into_iter()
                .find(|a| a.merchant_uid == merchant_uid),
        }
    }
}

/// 10:00 in Seoul, `day` days after the origin.
fn ten_am(origin: DateTime<Utc>, day: i64) -> DateTime<Utc> {
    origin + chrono::Duration::days(day) + chrono::Duration::hours(10)
}

/// How long from `now` until `t` (zero if past).
fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or_default()
}

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}

/// Plays one seed and checks the invariants at the end.
pub fn simulate(seed: u64, params: &Params) -> SeedReport {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return SeedReport {
                seed,
                violations: vec![format!("seed {seed}: no runtime: {e}")],
                ..SeedReport::default()
            };
        }
    };
    let world = runtime.block_on(async {
        let world = World::new(seed, params);
        actors::play(&world, params).await;
        world
    });
    // Inside the runtime: the world's clock is tokio's paused one, so the
    // verdict's "now" is the end of the world, not its origin.
    let report = runtime.block_on(async { invariants::verdict(&world) });
    drop(runtime);
    report
}

/// Defect (e) of the engine issue: one sign-up whose every gateway call
/// takes `latency`, the browser's redirect handled with the callback
/// function's 29 s budget. Returns how long the callback took to answer
/// (virtual time) and what it answered.
pub fn callback_with_slow_gateway(latency: Duration) -> (Duration, String) {
    let params = Params {
        faults: false,
        gateway_latency: Some(latency),
        ..Params::default()
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => return (Duration::MAX, format!("no runtime: {e}")),
    };
    runtime.block_on(async {
        let world = World::new(1, &params);
        let id = world.rand(SubscriptionId::random);
        let now = world.now();
        let reg = Registration {
            merchant_uid: MerchantUid::issuance(&id),
            subscription_id: id.clone(),
            customer_uid: "cu_slow".into(),
            user_id: "user-slow".into(),
            plan: world.settings.registration.default_plan.clone(),
            plan_ref: None,
            pg: "chai".into(),
            buyer: Default::default(),
            status: RegistrationStatus::Pending,
            created_at: now,
            expires_at: None,
            imp_uid: None,
            sweep_at: None,
            replaces_key: false,
            interval: Default::default(),
            billing: None,
            trial: None,
            consent: None,
            coupon: None,
        };
        if let Err(e) = world.ledger.put_registration(&reg).await {
            return (Duration::MAX, e.to_string());
        }
        let imp_uid = lock(&world.model).issue("cu_slow", &reg.merchant_uid, 0, now);
        let (_, engine) = world.engine("callback");
        let params = CallbackParams {
            billing_key: None,
            imp_uid: Some(imp_uid),
            merchant_uid: reg.merchant_uid.clone(),
            claimed_success: Some(true),
            error_code: None,
        };
        let started = tokio::time::Instant::now();
        let budget = Budget::until(started + CALLBACK_TIMEOUT);
        let outcome = registration::complete(&engine, &params, budget).await;
        (started.elapsed(), format!("{outcome:?}"))
    })
}
