//! One seed's world: the in-memory ledger and the model of i'mport behind
//! the engine's two ports, on tokio's paused clock, with every choice (sign-up
//! times, declines, faults, crashes, latencies, duplicate deliveries) drawn
//! from one seeded generator in the order things happen. The same seed gives
//! the same trace, step for step.
//!
//! Every invocation (a scheduled run, a browser callback, a webhook) gets its
//! own engine over handles that count its steps, so a crash can be placed at
//! any await point: before an operation reaches the ledger or the gateway,
//! or after it took effect and before its answer was seen.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::billing::{
    AttemptResult, AttemptState, AuditEntry, BILLING_TZ, ChargeAttempt, DunningPolicy, MerchantUid,
    PaymentRecord, PeriodId, Plan, RecordStatus, Registration, RegistrationStatus, Resolution,
    Subscription, SubscriptionId, SubscriptionStatus, UidKey,
};
use shared::charging::{self, BillingRun, RunOptions};
use shared::clock::Clock;
use shared::engine::{Budget, Engine, Settings};
use shared::gateway::{
    Ambiguity, AmbiguityKind, BillingKey, ChargeOutcome, ChargeRequest, GatewayError,
    PaymentGateway, RefundRequest, Rejection, RejectionKind,
};
use shared::ledger::memory::InMemoryLedger;
use shared::ledger::{
    Activation, Cursor, DuePage, Guard, Ledger, LedgerError, RequestState, ReviewPage, Sent,
    StoredResponse, SubscriptionChange, UserItems,
};
use shared::management::{self, Actor, CancelInput};
use shared::notification::{self, Notification};
use shared::portone::webhook::Notice;
use shared::registration::{self, CallbackParams};
use shared::secret::Secret;

use crate::model::{Applied, Model, Usage};

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
    /// Every gateway call takes this long (a slow i'mport), instead of a
    /// few milliseconds.
    pub gateway_latency: Option<Duration>,
    /// The gateway answers the way the PortOne V2 client does (`PAYMENT_API=v2`):
    /// keys issued by PortOne (the redirect carries the key), declines
    /// without a transaction until looked up, `ALREADY_PAID` as a typed
    /// refusal, payments looked up by `paymentId` only.
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

const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest i'mport keeps processing a request after our timeout (the
/// assumption the resend quiet period rests on; see docs/charging.md).
const MAX_PROCESSING: Duration = Duration::from_secs(300);
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(29);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

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
}

pub(crate) struct World {
    seed: u64,
    rng: Mutex<StdRng>,
    clock: Clock,
    origin: DateTime<Utc>,
    ledger: InMemoryLedger,
    model: Mutex<Model>,
    settings: Settings,
    /// How often faults strike this seed (0 when off).
    fault_level: f64,
    faults: AtomicBool,
    steps: AtomicU64,
    trace: Mutex<Trace>,
    violations: Mutex<Vec<String>>,
    invocations: Mutex<BTreeMap<u32, Invocation>>,
    next_invocation: AtomicU32,
    customers: Mutex<BTreeMap<String, Customer>>,
    stats: Mutex<BTreeMap<&'static str, u64>>,
    gateway_latency: Option<Duration>,
    /// [`Params::v2`].
    v2: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type SimEngine = Engine<SimLedger, SimGateway>;

/// A webhook as the engine receives it, from i'mport or PortOne V2.
enum Webhook {
    V1(Notification),
    V2(Notice),
}

/// A trace label for a V2 notice (never the billing key).
fn notice_label(n: &Notice) -> String {
    match n {
        Notice::Payment {
            payment_id,
            transaction_id,
            ..
        } => format!("{payment_id} {transaction_id}"),
        Notice::KeyIssued { .. } => "BillingKey.Issued".into(),
        Notice::Ignored(kind) => kind.clone(),
    }
}

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
        let settings = Settings {
            dunning: DunningPolicy::default(),
            claim_lease: Duration::from_secs(900),
            resend_quiet: Duration::from_secs(600),
            gateway_timeout: TIMEOUT,
            concurrency: 4,
            notice_url: None,
            charge_on_signup: rng.random_bool(0.7),
            pg: if params.v2 { "portone" } else { "chai" }.into(),
            pay_method: "trans".into(),
            v2: params.v2.then(|| shared::config::PortOneSettings {
                base_url: url::Url::parse("https://api.portone.io").expect("a URL"),
                store_id: "store-simulation".into(),
                channel_key: "channel-key-simulation".into(),
                billing_key_method: "CARD".into(),
            }),
            default_plan: Plan {
                amount: 9900,
                name: "월간 구독".into(),
            },
            registration_ttl: Duration::from_secs(86_400),
            callback_url: Some("https://billing.example/billing/callback".into()),
            uid_key: UidKey::new(b"simulation-merchant-uid-key")
                .unwrap_or_else(|| UidKey::derived_from(b"simulation")),
            allow_multiple_subscriptions: false,
            delete_key_on_cancel: true,
        };
        Arc::new(Self {
            seed,
            rng: Mutex::new(rng),
            clock: Clock::tokio(origin),
            origin,
            ledger: InMemoryLedger::new(),
            model: Mutex::new(Model::default()),
            settings,
            fault_level,
            faults: AtomicBool::new(params.faults),
            steps: AtomicU64::new(0),
            trace: Mutex::new(Trace {
                hasher: DefaultHasher::new(),
                lines: params.keep_trace.then(Vec::new),
            }),
            violations: Mutex::new(Vec::new()),
            invocations: Mutex::new(BTreeMap::new()),
            next_invocation: AtomicU32::new(1),
            customers: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(BTreeMap::new()),
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

    /// Whether a fault with base probability `p` strikes now.
    fn strikes(&self, p: f64) -> bool {
        self.faults.load(Ordering::SeqCst)
            && self.rand(|r| r.random_bool((p * self.fault_level).min(1.0)))
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

    fn violation(&self, what: String) {
        self.record(format!("VIOLATION {what}"));
        let at = self
            .now()
            .with_timezone(&BILLING_TZ)
            .format("%Y-%m-%d %H:%M:%S KST");
        lock(&self.violations).push(format!("seed {}: {at} {what}", self.seed));
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
            SimLedger {
                world: Arc::clone(self),
                inv: id,
            },
            SimGateway {
                world: Arc::clone(self),
                inv: id,
            },
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

    /// The attempt a `merchant_uid` names, as stored now.
    fn attempt_of(&self, merchant_uid: &str) -> Option<ChargeAttempt> {
        match MerchantUid::parse(merchant_uid)? {
            MerchantUid::Charge {
                subscription,
                period,
                attempt,
            } => self.ledger.attempt_now(&subscription, &period, attempt),
            MerchantUid::Issuance { .. } => None,
        }
    }

    // ---- invariants checked as the steps happen -------------------------

    /// A charge leaves invocation `inv`: it must hold the attempt's claim,
    /// with time left on its lease, and no earlier attempt of the period may
    /// still be paid or in flight.
    fn check_send(&self, inv: u32, req: &ChargeRequest) {
        let now = self.now();
        let Some(a) = self.attempt_of(&req.merchant_uid) else {
            self.violation(format!(
                "{inv} charge {} without a claimed attempt",
                req.merchant_uid
            ));
            return;
        };
        let held = lock(&self.invocations)
            .get(&inv)
            .is_some_and(|i| a.claim_token.as_ref().is_some_and(|t| i.tokens.contains(t)));
        if a.state != AttemptState::Claimed || !held || a.lease_until.is_none_or(|l| l <= now) {
            self.violation(format!(
                "{inv} charge {} sent without a live claim ({} lease {:?})",
                req.merchant_uid,
                a.state.as_str(),
                a.lease_until
            ));
        }
        if a.merchant_uid != req.merchant_uid || a.amount != req.amount {
            self.violation(format!(
                "{inv} charge {} is not the stored attempt",
                req.merchant_uid
            ));
        }
        // Only a key the gateway issued (and the engine verified) is charged.
        if !lock(&self.model).ever_issued(&req.customer_uid) {
            self.violation(format!(
                "{inv} charge {} names a key the gateway never issued",
                req.merchant_uid
            ));
        }
        let model = lock(&self.model);
        for earlier in 1..a.attempt {
            if let Some(e) = self
                .ledger
                .attempt_now(&a.subscription_id, &a.period, earlier)
                && (model.paid_under(&e.merchant_uid) > 0
                    || model.inflight.get(&e.merchant_uid).copied().unwrap_or(0) > 0)
            {
                self.violation(format!(
                    "{inv} new merchant_uid {} while {} may still be paid",
                    req.merchant_uid, e.merchant_uid
                ));
            }
        }
    }

    /// A claim to send (a new attempt, or a re-send) was just written: its
    /// subscription must not have ended. A cancel stops all further charges
    /// at once (a claim written before it may still be sent: it was in
    /// flight).
    fn check_claim(&self, id: &SubscriptionId, what: &str) {
        if let Some(s) = self.ledger.subscription_now(id)
            && s.status == SubscriptionStatus::Cancelled
        {
            self.violation(format!("{what} for {id} after it was cancelled"));
        }
    }

    /// An attempt was just settled as not paid (declined, rejected): i'mport
    /// must have no payment under it and nothing still in flight for it, or
    /// the period moves on to a new merchant uid while this one may be paid.
    fn check_unpaid(&self, merchant_uid: &str) {
        let model = lock(&self.model);
        let inflight = model.inflight.get(merchant_uid).copied().unwrap_or(0);
        if model.paid_under(merchant_uid) > 0 || inflight > 0 {
            drop(model);
            self.violation(format!(
                "{merchant_uid} settled as not paid while i'mport has it paid or still processing ({inflight} in flight)"
            ));
        }
    }

    /// Money was just taken under `merchant_uid`: at most one payment per
    /// (subscription, period), and never before the period is due.
    fn check_paid(&self, merchant_uid: &str) {
        let Some((sub, period)) = self.period_of(merchant_uid) else {
            self.violation(format!(
                "payment under a merchant_uid that is not ours: {merchant_uid}"
            ));
            return;
        };
        let paid = self
            .paid_per_period()
            .get(&(sub.clone(), period.clone()))
            .copied()
            .unwrap_or(0);
        if paid > 1 {
            self.violation(format!("double charge: {sub} {period} paid {paid} times"));
        }
        if let (Some(s), Some(MerchantUid::Charge { .. })) = (
            self.ledger.subscription_now(&sub),
            MerchantUid::parse(merchant_uid),
        ) {
            let due = (0..600)
                .find(|&k| s.anchor.period_id(k) == period)
                .map(|k| s.anchor.period_start(k));
            if due.is_none_or(|due| self.now() < due) {
                self.violation(format!(
                    "{merchant_uid} billed before its period was due ({due:?})"
                ));
            }
        }
    }

    /// (subscription, period) of one of our merchant uids: a charge uid
    /// names them; an issuance pays the sign-up period.
    fn period_of(&self, merchant_uid: &str) -> Option<(SubscriptionId, PeriodId)> {
        match MerchantUid::parse(merchant_uid)? {
            MerchantUid::Charge {
                subscription,
                period,
                ..
            } => Some((subscription, period)),
            MerchantUid::Issuance { subscription } => {
                let reg = self
                    .ledger
                    .all_registrations()
                    .into_iter()
                    .find(|r| r.merchant_uid == merchant_uid)?;
                let period = shared::billing::Anchor::from_instant(reg.created_at).period_id(0);
                // The subscription's own anchor when it exists (activation may
                // cross midnight in Seoul).
                let period = self
                    .ledger
                    .subscription_now(&subscription)
                    .map_or(period, |s| s.anchor.period_id(0));
                Some((subscription, period))
            }
        }
    }

    fn paid_per_period(&self) -> BTreeMap<(SubscriptionId, PeriodId), u64> {
        let payments: Vec<String> = lock(&self.model)
            .payments
            .iter()
            .filter(|p| p.took_money())
            .map(|p| p.merchant_uid.clone())
            .collect();
        let mut out = BTreeMap::new();
        for uid in payments {
            if let Some(key) = self.period_of(&uid) {
                *out.entry(key).or_insert(0) += 1;
            }
        }
        out
    }

    // ---- the model's side effects ----------------------------------------

    /// A charge request reaching i'mport now.
    fn apply_charge(self: &Arc<Self>, req: &ChargeRequest) -> Applied {
        let declined = {
            let rate = lock(&self.customers)
                .get(&req.customer_uid)
                .map_or(0.0, |c| c.decline_rate);
            self.rand(|r| r.random_bool(rate))
        };
        let in_progress = lock(&self.model)
            .inflight
            .get(&req.merchant_uid)
            .copied()
            .unwrap_or(0)
            > 0;
        if in_progress && self.rand(|r| r.random_bool(0.5)) {
            self.count("refused while in progress");
            return Applied::Refused {
                code: 1,
                message: crate::model::MSG_IN_PROGRESS,
            };
        }
        let now = self.now();
        let applied = lock(&self.model).charge(
            &req.customer_uid,
            &req.merchant_uid,
            req.amount,
            declined,
            now,
        );
        match &applied {
            Applied::Paid(p) => {
                self.count("charges paid");
                self.record(format!("I paid {} {}", p.merchant_uid, p.imp_uid));
                self.check_paid(&p.merchant_uid);
                self.schedule_webhooks(p);
            }
            Applied::Declined(p) => {
                self.count("charges declined");
                self.record(format!("I declined {} {}", p.merchant_uid, p.imp_uid));
            }
            Applied::Refused { code, .. } => {
                self.record(format!("I refused {} code {code}", req.merchant_uid));
            }
        }
        applied
    }

    /// i'mport's webhook: one delivery, sometimes two or three, each after
    /// its own delay (so they arrive reordered), re-sent up to five times a
    /// minute apart while the receiver fails.
    fn schedule_webhooks(self: &Arc<Self>, p: &PaymentRecord) {
        if !self.rand(|r| r.random_bool(0.8)) {
            return;
        }
        let copies = if self.strikes(0.2) {
            self.rand(|r| r.random_range(2..=3))
        } else {
            1
        };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rand(|r| r.random_range(0..600_000)));
            let notice = if self.v2 {
                Webhook::V2(Notice::Payment {
                    payment_id: p.merchant_uid.clone(),
                    transaction_id: p.imp_uid.clone(),
                    status: match p.status {
                        RecordStatus::Paid => "paid",
                        RecordStatus::Failed => "failed",
                        _ => "cancelled",
                    },
                    cancellation_id: None,
                })
            } else {
                Webhook::V1(Notification {
                    imp_uid: p.imp_uid.clone(),
                    merchant_uid: p.merchant_uid.clone(),
                    status: p.status.as_str().to_owned(),
                    cancellation_id: None,
                })
            };
            tokio::spawn(Arc::clone(self).deliver_webhook(notice, delay));
        }
    }

    /// A V2 notice, delivered like a payment's webhooks (maybe late, maybe twice).
    fn schedule_notice(self: &Arc<Self>, notice: Notice) {
        let copies = if self.strikes(0.2) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rand(|r| r.random_range(0..600_000)));
            tokio::spawn(Arc::clone(self).deliver_webhook(Webhook::V2(notice.clone()), delay));
        }
    }

    async fn deliver_webhook(self: Arc<Self>, notice: Webhook, delay: Duration) {
        tokio::time::sleep(delay).await;
        for try_no in 0..6 {
            if try_no > 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            self.count("webhook deliveries");
            let (inv, engine) = self.engine("webhook");
            let handled = match &notice {
                Webhook::V1(n) => {
                    self.record(format!("{inv} WEBHOOK {} {}", n.merchant_uid, n.imp_uid));
                    tokio::time::timeout(WEBHOOK_TIMEOUT, notification::handle(&engine, n)).await
                }
                Webhook::V2(n) => {
                    self.record(format!("{inv} WEBHOOK V2 {}", notice_label(n)));
                    tokio::time::timeout(WEBHOOK_TIMEOUT, notification::handle_v2(&engine, n)).await
                }
            };
            self.record(format!("{inv} WEBHOOK done {handled:?}"));
            if matches!(handled, Ok(Ok(_))) {
                return;
            }
        }
    }

    /// A request i'mport keeps processing after our timeout: its effect lands later.
    async fn land_late(self: Arc<Self>, req: ChargeRequest, after: Duration) {
        tokio::time::sleep(after).await;
        {
            let mut model = lock(&self.model);
            if let Some(n) = model.inflight.get_mut(&req.merchant_uid) {
                *n = n.saturating_sub(1);
            }
        }
        self.record(format!("I late request for {} lands", req.merchant_uid));
        self.apply_charge(&req);
    }
}

/// The ledger port of one invocation: the shared in-memory ledger, with
/// DynamoDB's latency, a step count, the invariants and crash points.
#[derive(Clone)]
pub(crate) struct SimLedger {
    world: Arc<World>,
    inv: u32,
}

impl SimLedger {
    async fn op<T: std::fmt::Debug>(
        &self,
        name: &str,
        key: String,
        f: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.ledger_pause(self.inv).await;
        let out = f.await;
        w.step();
        w.record(format!("{} L {name} {key} -> {}", self.inv, short(&out)));
        w.gate(self.inv, Side::After).await;
        w.ledger_pause(self.inv).await;
        out
    }
}

fn short<T: std::fmt::Debug>(r: &Result<T, LedgerError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(LedgerError::Conflict(_)) => "conflict".into(),
        Err(e) => format!("{e}"),
    }
}

fn attempt_key(a: &ChargeAttempt) -> String {
    format!("{}/{}/{}", a.subscription_id, a.period, a.attempt)
}

impl Ledger for SimLedger {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        self.op(
            "put_registration",
            reg.merchant_uid.clone(),
            self.world.ledger.put_registration(reg),
        )
        .await
    }

    async fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> Result<Option<Registration>, LedgerError> {
        self.op(
            "get_registration",
            merchant_uid.to_owned(),
            self.world.ledger.get_registration(merchant_uid),
        )
        .await
    }

    async fn activate(&self, activation: &Activation<'_>) -> Result<(), LedgerError> {
        self.op(
            "activate",
            format!(
                "{} {}",
                activation.reg.merchant_uid,
                activation.sub.status.as_str()
            ),
            self.world.ledger.activate(activation),
        )
        .await
    }

    async fn replace_key(
        &self,
        reg: &Registration,
        next: &Subscription,
        imp_uid: &str,
        audit: &AuditEntry,
    ) -> Result<(), LedgerError> {
        self.op(
            "replace_key",
            format!("{} v{}", next.id, next.version),
            self.world.ledger.replace_key(reg, next, imp_uid, audit),
        )
        .await
    }

    async fn refuse_registration(
        &self,
        reg: &Registration,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.op(
            "refuse_registration",
            reg.merchant_uid.clone(),
            self.world.ledger.refuse_registration(reg, now),
        )
        .await
    }

    async fn user_items(&self, user_id: &str) -> Result<UserItems, LedgerError> {
        self.op(
            "user_items",
            user_id.to_owned(),
            self.world.ledger.user_items(user_id),
        )
        .await
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        self.op(
            "get_subscription",
            id.to_string(),
            self.world.ledger.get_subscription(id),
        )
        .await
    }

    async fn change_subscription(
        &self,
        change: &SubscriptionChange<'_>,
    ) -> Result<(), LedgerError> {
        self.op(
            "change_subscription",
            format!(
                "{} v{} {}",
                change.next.id,
                change.next.version,
                change.next.status.as_str()
            ),
            self.world.ledger.change_subscription(change),
        )
        .await
    }

    async fn history(
        &self,
        id: &SubscriptionId,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        self.op(
            "history",
            id.to_string(),
            self.world.ledger.history(id, limit),
        )
        .await
    }

    async fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<DuePage, LedgerError> {
        self.op(
            "due_page",
            String::new(),
            self.world.ledger.due_page(now, limit, cursor),
        )
        .await
    }

    async fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Result<Option<ChargeAttempt>, LedgerError> {
        self.op(
            "get_attempt",
            format!("{id}/{period}/{attempt}"),
            self.world.ledger.get_attempt(id, period, attempt),
        )
        .await
    }

    async fn list_attempts(&self, id: &SubscriptionId) -> Result<Vec<ChargeAttempt>, LedgerError> {
        self.op(
            "list_attempts",
            id.to_string(),
            self.world.ledger.list_attempts(id),
        )
        .await
    }

    async fn claim_new(
        &self,
        attempt: &ChargeAttempt,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        let out = self
            .op("claim_new", attempt_key(attempt), async {
                let out = self.world.ledger.claim_new(attempt, sub_version).await;
                if out.is_ok() {
                    self.world.check_claim(&attempt.subscription_id, "claim");
                }
                out
            })
            .await;
        if out.is_ok()
            && let Some(t) = &attempt.claim_token
        {
            self.world.hold(self.inv, t);
        }
        out
    }

    async fn take_over(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
        token: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<ChargeAttempt, LedgerError> {
        // The token is ours from the moment the write may have happened.
        self.world.hold(self.inv, token);
        // (Taking over an open attempt of a cancelled subscription is how
        // it gets settled; only a send would be wrong.)
        self.op(
            "take_over",
            format!("{id}/{period}/{attempt}"),
            self.world
                .ledger
                .take_over(id, period, attempt, token, lease_until, now, sub_version),
        )
        .await
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        self.op("mark_sending", attempt_key(attempt), async {
            let out = self
                .world
                .ledger
                .mark_sending(attempt, token, now, sub_version)
                .await;
            if out.is_ok() {
                self.world.check_claim(&attempt.subscription_id, "re-send");
            }
            out
        })
        .await
    }

    async fn mark_unknown(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        detail: &str,
        sent: Sent,
        now: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.op(
            "mark_unknown",
            format!("{} {sent:?}", attempt_key(attempt)),
            self.world
                .ledger
                .mark_unknown(attempt, token, detail, sent, now, due_at),
        )
        .await
    }

    async fn settle(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        guard: Guard<'_>,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let guard_name = match guard {
            Guard::Claim(_) => "claim",
            Guard::PaidFact => "paid-fact",
        };
        let out = self
            .op(
                "settle",
                format!(
                    "{} {} by {guard_name}",
                    attempt_key(attempt),
                    result.state.as_str()
                ),
                self.world.ledger.settle(attempt, result, guard, next, now),
            )
            .await;
        if out.is_ok() && result.state.is_unpaid_settlement() {
            self.world.check_unpaid(&attempt.merchant_uid);
        }
        out
    }

    async fn flag_review(
        &self,
        attempt: &ChargeAttempt,
        token: Option<&str>,
        reason: &str,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.op(
            "flag_review",
            attempt_key(attempt),
            self.world
                .ledger
                .flag_review(attempt, token, reason, next, now),
        )
        .await
    }

    async fn resolve(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        resolution: &Resolution,
        next: &Subscription,
        audit: &AuditEntry,
    ) -> Result<(), LedgerError> {
        self.op(
            "resolve",
            attempt_key(attempt),
            self.world
                .ledger
                .resolve(attempt, result, resolution, next, audit),
        )
        .await
    }

    async fn review_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<ReviewPage, LedgerError> {
        self.op(
            "review_page",
            String::new(),
            self.world.ledger.review_page(limit, cursor),
        )
        .await
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, LedgerError> {
        self.op(
            "record_refund",
            attempt_key(attempt),
            self.world
                .ledger
                .record_refund(attempt, refunded, now, audit),
        )
        .await
    }

    async fn begin_request(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestState, LedgerError> {
        self.op(
            "begin_request",
            key.to_owned(),
            self.world.ledger.begin_request(key, fingerprint, now),
        )
        .await
    }

    async fn finish_request(
        &self,
        key: &str,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.op(
            "finish_request",
            key.to_owned(),
            self.world.ledger.finish_request(key, response, now),
        )
        .await
    }

    async fn abandon_request(&self, key: &str) -> Result<(), LedgerError> {
        self.op(
            "abandon_request",
            key.to_owned(),
            self.world.ledger.abandon_request(key),
        )
        .await
    }
}

/// The gateway port of one invocation: the model of i'mport, with network
/// latency, i'mport's faults, and the invariants checked as requests leave.
#[derive(Clone)]
pub(crate) struct SimGateway {
    world: Arc<World>,
    inv: u32,
}

fn ambiguous(kind: AmbiguityKind, detail: &str) -> Ambiguity {
    Ambiguity {
        kind,
        http_status: match kind {
            AmbiguityKind::ServerError => Some(500),
            _ => None,
        },
        detail: detail.to_owned(),
    }
}

fn rejection(kind: RejectionKind, code: Option<i64>, message: &str) -> Rejection {
    Rejection {
        kind,
        http_status: match kind {
            RejectionKind::NotFound => Some(404),
            RejectionKind::Unauthorized => Some(401),
            RejectionKind::NotSent => None,
            _ => Some(200),
        },
        code,
        message: message.to_owned(),
    }
}

/// What goes wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The charge happens; its answer is lost.
    LostAnswer,
    /// Still processing at i'mport when we time out; the effect lands later.
    Late,
    /// 5xx before anything happened.
    ServerErrorBefore,
    /// 5xx after the charge happened.
    ServerErrorAfter,
    /// Our credentials refused (also after a token refresh).
    Unauthorized,
    /// Connection refused or throttled: never arrived.
    NotSent,
    /// getToken hangs past the timeout: never sent.
    SlowToken,
    /// A lookup times out.
    Timeout,
    /// The request reaches i'mport twice (a retried connection): both
    /// copies are processed, and we get the answer of either.
    Duplicated,
}

impl SimGateway {
    fn charge_fault(&self) -> Fault {
        let w = &self.world;
        let draw = [
            (Fault::LostAnswer, 0.03),
            (Fault::Late, 0.03),
            (Fault::ServerErrorBefore, 0.02),
            (Fault::ServerErrorAfter, 0.02),
            (Fault::Unauthorized, 0.005),
            (Fault::NotSent, 0.02),
            (Fault::SlowToken, 0.01),
            (Fault::Duplicated, 0.01),
        ];
        for (fault, p) in draw {
            if w.strikes(p) {
                return fault;
            }
        }
        Fault::None
    }

    fn lookup_fault(&self) -> Fault {
        let w = &self.world;
        for (fault, p) in [
            (Fault::ServerErrorBefore, 0.02),
            (Fault::Timeout, 0.01),
            (Fault::Unauthorized, 0.003),
            (Fault::NotSent, 0.01),
        ] {
            if w.strikes(p) {
                return fault;
            }
        }
        Fault::None
    }

    fn note(&self, fault: Fault) {
        if fault != Fault::None {
            self.world.count(match fault {
                Fault::LostAnswer => "fault: answer lost after the charge",
                Fault::Late => "fault: still processing after our timeout",
                Fault::ServerErrorBefore => "fault: 5xx",
                Fault::ServerErrorAfter => "fault: 5xx after the charge",
                Fault::Unauthorized => "fault: 401",
                Fault::NotSent => "fault: not sent (refused, 429)",
                Fault::SlowToken => "fault: slow getToken",
                Fault::Timeout => "fault: lookup timeout",
                Fault::Duplicated => "fault: two requests with one merchant uid at once",
                Fault::None => "none",
            });
        }
    }

    /// A lookup: latency, faults, then `answer` on the model.
    async fn lookup<T: std::fmt::Debug>(
        &self,
        name: &str,
        key: &str,
        answer: impl FnOnce(&Model) -> Option<T>,
    ) -> Result<T, GatewayError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        let fault = self.lookup_fault();
        self.note(fault);
        let out = match fault {
            Fault::Timeout => {
                tokio::time::sleep(TIMEOUT).await;
                Err(GatewayError::Ambiguous(ambiguous(
                    AmbiguityKind::Timeout,
                    "timed out",
                )))
            }
            Fault::ServerErrorBefore => {
                w.transit().await;
                Err(GatewayError::Ambiguous(ambiguous(
                    AmbiguityKind::ServerError,
                    "500",
                )))
            }
            Fault::Unauthorized => {
                w.transit().await;
                Err(GatewayError::Rejected(rejection(
                    RejectionKind::Unauthorized,
                    None,
                    "refused twice",
                )))
            }
            Fault::NotSent => {
                w.transit().await;
                Err(GatewayError::not_sent("connection refused"))
            }
            _ => {
                w.transit().await;
                match answer(&lock(&w.model)) {
                    Some(v) => Ok(v),
                    None => Err(GatewayError::Rejected(rejection(
                        RejectionKind::NotFound,
                        Some(-1),
                        "존재하지 않는 결제정보입니다.",
                    ))),
                }
            }
        };
        w.step();
        w.record(format!(
            "{} G {name} {key} -> {}",
            self.inv,
            match &out {
                Ok(_) => "found".to_owned(),
                Err(e) => e.label().to_owned(),
            }
        ));
        w.gate(self.inv, Side::After).await;
        w.transit().await;
        out
    }
}

impl PaymentGateway for SimGateway {
    async fn charge(&self, req: &ChargeRequest) -> ChargeOutcome {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.check_send(self.inv, req);
        let fault = self.charge_fault();
        self.note(fault);
        w.count("charge requests");
        let early = match fault {
            Fault::NotSent => Some(ChargeOutcome::Rejected(rejection(
                RejectionKind::NotSent,
                None,
                "429 Too Many Requests",
            ))),
            Fault::SlowToken => {
                tokio::time::sleep(TIMEOUT).await;
                Some(ChargeOutcome::Rejected(rejection(
                    RejectionKind::NotSent,
                    None,
                    "could not obtain an access token",
                )))
            }
            Fault::Unauthorized => Some(ChargeOutcome::Rejected(rejection(
                RejectionKind::Unauthorized,
                None,
                "refused twice",
            ))),
            Fault::ServerErrorBefore => Some(ChargeOutcome::Ambiguous(ambiguous(
                AmbiguityKind::ServerError,
                "500",
            ))),
            Fault::Late => {
                *lock(&w.model)
                    .inflight
                    .entry(req.merchant_uid.clone())
                    .or_insert(0) += 1;
                let after = Duration::from_millis(w.rand(|r| {
                    r.random_range(TIMEOUT.as_millis() as u64..=MAX_PROCESSING.as_millis() as u64)
                }));
                tokio::spawn(Arc::clone(w).land_late(req.clone(), after));
                tokio::time::sleep(TIMEOUT).await;
                Some(ChargeOutcome::Ambiguous(ambiguous(
                    AmbiguityKind::Timeout,
                    "timed out",
                )))
            }
            _ => None,
        };
        if let Some(out) = early {
            w.step();
            w.record(format!(
                "{} G charge {} -> {out:?}",
                self.inv, req.merchant_uid
            ));
            w.gate(self.inv, Side::After).await;
            w.transit().await;
            return out;
        }
        w.transit().await;
        let applied = if fault == Fault::Duplicated {
            let first = w.apply_charge(req);
            let second = w.apply_charge(req);
            if w.rand(|r| r.random_bool(0.5)) {
                first
            } else {
                second
            }
        } else {
            w.apply_charge(req)
        };
        w.step();
        w.gate(self.inv, Side::After).await;
        let out = match (fault, applied) {
            (Fault::LostAnswer, _) => {
                ChargeOutcome::Ambiguous(ambiguous(AmbiguityKind::Connection, "connection reset"))
            }
            (Fault::ServerErrorAfter, _) => {
                ChargeOutcome::Ambiguous(ambiguous(AmbiguityKind::ServerError, "502"))
            }
            (_, Applied::Paid(p)) => ChargeOutcome::Paid(p),
            // V2: 502 PG_PROVIDER names no transaction; the engine's lookup does.
            (_, Applied::Declined(p)) if w.v2 => ChargeOutcome::Declined(PaymentRecord {
                imp_uid: String::new(),
                ..p
            }),
            (_, Applied::Declined(p)) => ChargeOutcome::Declined(p),
            // V2: 409 ALREADY_PAID (or another typed refusal), no `code`.
            (_, Applied::Refused { .. }) if w.v2 => {
                ChargeOutcome::Rejected(rejection(RejectionKind::Business, None, "ALREADY_PAID"))
            }
            (_, Applied::Refused { code, message }) => {
                ChargeOutcome::Rejected(rejection(RejectionKind::Business, Some(code), message))
            }
        };
        w.record(format!(
            "{} G charge {} -> {}",
            self.inv,
            req.merchant_uid,
            match &out {
                ChargeOutcome::Paid(_) => "paid".to_owned(),
                ChargeOutcome::Declined(_) => "declined".to_owned(),
                ChargeOutcome::Rejected(r) => format!("rejected {:?}", r.kind),
                ChargeOutcome::Ambiguous(a) => format!("ambiguous {:?}", a.kind),
            }
        ));
        w.transit().await;
        out
    }

    async fn payment(&self, imp_uid: &str) -> Result<PaymentRecord, GatewayError> {
        if self.world.v2 {
            // As the V2 client: no lookup by transaction id.
            self.world.violation(format!(
                "V2: the engine looked a payment up by imp_uid {imp_uid}"
            ));
            return Err(GatewayError::Rejected(rejection(
                RejectionKind::BadRequest,
                None,
                "PortOne V2 looks payments up by paymentId",
            )));
        }
        self.lookup("payment", imp_uid, |m| m.payment(imp_uid))
            .await
    }

    async fn notified_payment(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<PaymentRecord, GatewayError> {
        if self.world.v2 {
            return self.find_payment(merchant_uid).await;
        }
        self.payment(imp_uid).await
    }

    async fn find_payment(&self, merchant_uid: &str) -> Result<PaymentRecord, GatewayError> {
        self.lookup("find", merchant_uid, |m| m.find(merchant_uid))
            .await
    }

    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        self.lookup("billing_key", customer_uid, |m| m.key(customer_uid))
            .await
    }

    async fn delete_billing_key(&self, customer_uid: &str) -> Result<(), GatewayError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.transit().await;
        let deleted = lock(&w.model).delete_key(customer_uid);
        w.step();
        w.gate(self.inv, Side::After).await;
        if deleted || self.world.v2 {
            // V2 keeps a deleted key: deleting it again is 409
            // BILLING_KEY_ALREADY_DELETED, which the client takes as done.
            Ok(())
        } else {
            Err(GatewayError::Rejected(rejection(
                RejectionKind::NotFound,
                Some(-1),
                "not found",
            )))
        }
    }

    async fn refund(&self, _request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        // The engine does not refund on its own; the management API will.
        Err(GatewayError::Rejected(rejection(
            RejectionKind::BadRequest,
            None,
            "refunds are not modelled yet",
        )))
    }
}

// ---- the actors ---------------------------------------------------------

impl World {
    /// A customer signs up: `prepare`'s registration, the payment window at
    /// i'mport (usually a 0-won key issuance; sometimes the page asks for the
    /// plan amount, or another amount), then the browser's redirect, sent
    /// zero to three times (refresh, back button, second tab), and possibly
    /// i'mport's webhook.
    async fn sign_up(self: Arc<Self>, at: Duration) {
        tokio::time::sleep(at).await;
        let id = self.rand(SubscriptionId::random);
        let customer_uid = self.rand(shared::billing::random_customer_uid);
        let plan = Plan {
            amount: self.rand(|r| [4900, 9900, 9900, 19_900][r.random_range(0..4)]),
            name: "월간 구독".into(),
        };
        let decline_rate = self.rand(|r| [0.0, 0.0, 0.0, 0.25, 1.0][r.random_range(0..5)]);
        // V2: PortOne will issue this key in the window; it is what is charged.
        let v2_key = self
            .v2
            .then(|| format!("billing-key-{:032x}", self.rand(|r| r.random::<u128>())));
        let charged_as = v2_key.clone().unwrap_or_else(|| customer_uid.clone());
        lock(&self.customers).insert(charged_as, Customer { decline_rate });
        let now = self.now();
        let reg = Registration {
            merchant_uid: MerchantUid::issuance(&id),
            subscription_id: id.clone(),
            customer_uid: customer_uid.clone(),
            user_id: format!("user-{id}"),
            plan: plan.clone(),
            pg: "chai".into(),
            buyer: Default::default(),
            status: RegistrationStatus::Pending,
            created_at: now,
            expires_at: Some(now + chrono::Duration::days(1)),
            imp_uid: None,
            sweep_at: Some(now + registration::SWEEP_AFTER),
            replaces_key: false,
        };
        if self.ledger.put_registration(&reg).await.is_err() {
            self.violation(format!(
                "registration {} could not be written",
                reg.merchant_uid
            ));
            return;
        }
        // The window, a few seconds later.
        tokio::time::sleep(Duration::from_secs(self.rand(|r| r.random_range(5..60)))).await;
        if let Some(key) = v2_key {
            self.v2_window(&reg, key).await;
            return;
        }
        let amount = self.rand(|r| match r.random_range(0..100) {
            0..80 => 0,
            80..95 => plan.amount,
            _ => 100,
        });
        let imp_uid = lock(&self.model).issue(&customer_uid, &reg.merchant_uid, amount, self.now());
        self.record(format!(
            "I issued {} {imp_uid} amount {amount}",
            reg.merchant_uid
        ));
        self.count("sign-ups");
        if amount > 0 {
            self.count("issuances that took money");
            self.check_paid(&reg.merchant_uid);
        }
        if self.rand(|r| r.random_bool(0.5)) {
            let record = lock(&self.model).payment(&imp_uid);
            if let Some(record) = record {
                self.schedule_webhooks(&record);
            }
        }
        let redirects = self.rand(|r| match r.random_range(0..10) {
            0 => 0,
            1..7 => 1,
            7..9 => 2,
            _ => 3,
        });
        let params = CallbackParams {
            billing_key: None,
            imp_uid: Some(imp_uid),
            merchant_uid: reg.merchant_uid.clone(),
            claimed_success: Some(true),
            error_code: None,
        };
        for _ in 0..redirects {
            let delay = Duration::from_millis(self.rand(|r| r.random_range(0..3000)));
            tokio::spawn(Arc::clone(&self).callback(params.clone(), delay));
        }
        if redirects == 0 {
            self.count("browsers that never came back");
        }
        // Some merchants change the subscription later (while runs charge it).
        // Most of them just as a run charges the subscription, to race its claims.
        if self.rand(|r| r.random_bool(0.3)) {
            let at = Duration::from_secs(self.rand(|r| r.random_range(60..90 * 86_400)));
            let racing = self.rand(|r| r.random_bool(0.8));
            tokio::spawn(Arc::clone(&self).manage(id, at, racing));
        }
    }

    /// The V2 window: PortOne issues the key (no payment), sends
    /// `BillingKey.Issued` (sometimes), and the browser comes back zero to
    /// three times with `billingKey` in the query.
    async fn v2_window(self: Arc<Self>, reg: &Registration, key: String) {
        lock(&self.model).issue_v2(&key, &reg.merchant_uid, &reg.customer_uid, self.now());
        self.record(format!("I issued {} (V2 key)", reg.merchant_uid));
        self.count("sign-ups");
        if self.rand(|r| r.random_bool(0.5)) {
            let notice = Notice::KeyIssued {
                billing_key: Secret::new(key.clone()),
            };
            self.schedule_notice(notice);
        }
        let redirects = self.rand(|r| match r.random_range(0..10) {
            0 => 0,
            1..7 => 1,
            7..9 => 2,
            _ => 3,
        });
        let params = CallbackParams {
            billing_key: Some(Secret::new(key)),
            imp_uid: None,
            merchant_uid: reg.merchant_uid.clone(),
            claimed_success: None,
            error_code: None,
        };
        for _ in 0..redirects {
            let delay = Duration::from_millis(self.rand(|r| r.random_range(0..3000)));
            tokio::spawn(Arc::clone(&self).callback(params.clone(), delay));
        }
        if redirects == 0 {
            self.count("browsers that never came back");
        }
        if self.rand(|r| r.random_bool(0.3)) {
            let at = Duration::from_secs(self.rand(|r| r.random_range(60..90 * 86_400)));
            let racing = self.rand(|r| r.random_bool(0.8));
            tokio::spawn(Arc::clone(&self).manage(reg.subscription_id.clone(), at, racing));
        }
    }

    /// One call to the management API at `at`: cancel now or at period
    /// end, a plan change, or a resume, racing whatever runs are under way.
    async fn manage(self: Arc<Self>, id: SubscriptionId, at: Duration, racing: bool) {
        tokio::time::sleep(at).await;
        if racing && let Some(sub) = self.ledger.subscription_now(&id) {
            // The first run at or after its next charge, a moment after it starts.
            let first = ten_am(self.origin, 0);
            let days = ((sub.next_charge_at - first).num_seconds().max(0) + 86_399) / 86_400;
            let jitter = chrono::Duration::milliseconds(self.rand(|r| r.random_range(0..150)));
            tokio::time::sleep(until(ten_am(self.origin, days) + jitter, self.now())).await;
        }
        let action = self.rand(|r| r.random_range(0..10));
        let amount = self.rand(|r| [4900, 14_900][r.random_range(0..2)]);
        let (inv, engine) = self.engine("manage");
        let actor = Actor("merchant".into());
        let id = id.to_string();
        let call = async {
            let cancel = |at: &str| CancelInput {
                at: at.into(),
                reason: "simulated".into(),
            };
            match action {
                0..3 => management::cancel(&engine, &id, cancel("now"), &actor)
                    .await
                    .map(|_| "cancelled now"),
                3..6 => management::cancel(&engine, &id, cancel("period_end"), &actor)
                    .await
                    .map(|_| "cancelled at period end"),
                6..8 => {
                    let plan = management::PlanInput {
                        amount,
                        name: "월간 구독".into(),
                    };
                    management::change_plan(&engine, &id, plan, &actor)
                        .await
                        .map(|_| "plan changed")
                }
                _ => management::resume(&engine, &id, &actor)
                    .await
                    .map(|_| "resumed"),
            }
        };
        self.record(format!("{inv} MANAGE {id} action {action}"));
        let out = tokio::time::timeout(Duration::from_secs(60), call).await;
        match &out {
            Ok(Ok(done)) => self.count(done),
            Ok(Err(_)) => self.count("management calls refused"),
            Err(_) if !self.crashed(inv) => {
                self.violation(format!("{inv} management call never answered"));
            }
            Err(_) => {}
        }
        self.record(format!("{inv} MANAGE done {out:?}"));
    }

    async fn callback(self: Arc<Self>, params: CallbackParams, delay: Duration) {
        tokio::time::sleep(delay).await;
        let (inv, engine) = self.engine("callback");
        self.record(format!("{inv} CALLBACK {}", params.merchant_uid));
        let budget = Budget::until(tokio::time::Instant::now() + CALLBACK_TIMEOUT);
        let started = tokio::time::Instant::now();
        let out = tokio::time::timeout(
            CALLBACK_TIMEOUT + Duration::from_secs(1),
            registration::complete(&engine, &params, budget),
        )
        .await;
        self.count("callbacks");
        match &out {
            Ok(_) if started.elapsed() > CALLBACK_TIMEOUT => {
                self.violation(format!(
                    "{inv} callback answered after the function's timeout"
                ));
            }
            Err(_) if !self.crashed(inv) => {
                self.violation(format!("{inv} callback never answered"));
            }
            _ => {}
        }
        self.record(format!("{inv} CALLBACK done {out:?}"));
    }

    /// Whether invocation `inv` crashed or froze (its caller saw a timeout).
    fn crashed(&self, inv: u32) -> bool {
        lock(&self.invocations)
            .get(&inv)
            .is_some_and(|i| i.stalled || i.crash_at.is_some_and(|(at, _)| i.ops >= at))
    }

    /// One scheduled run (a Lambda invocation killed at its timeout, unless
    /// `zombie`: a process that outlives its timeout, to put a run in flight
    /// past its lease).
    async fn run(self: Arc<Self>, billing_time: DateTime<Utc>, run_id: String, delay: Duration) {
        tokio::time::sleep(delay).await;
        let zombie = self.strikes(0.05);
        let (inv, engine) = self.engine("run");
        self.count("runs");
        self.record(format!(
            "{inv} RUN {run_id} at {billing_time}{}",
            if zombie { " (zombie)" } else { "" }
        ));
        let options = RunOptions {
            run: BillingRun {
                billing_time,
                run_id,
            },
            budget: Budget::until(tokio::time::Instant::now() + RUN_TIMEOUT),
        };
        let report = if zombie {
            Some(charging::run(&engine, options).await)
        } else {
            tokio::time::timeout(RUN_TIMEOUT, charging::run(&engine, options))
                .await
                .ok()
        };
        if let Some(r) = &report {
            let s = &r.summary;
            self.record(format!(
                "{inv} RUN done due {} charged {} declined {} rejected {} ambiguous {} reconciled {} deferred {} review {} skipped {} signups {} error {:?}",
                s.due, s.charged, s.declined, s.rejected, s.ambiguous, s.reconciled, s.deferred, s.needs_review, s.skipped, s.signups_completed, r.error
            ));
        }
    }

    /// Some customers delete their billing key at i'mport (or it expires).
    async fn lose_key(self: Arc<Self>, customer_uid: String, at: Duration) {
        tokio::time::sleep(at).await;
        if lock(&self.model).delete_key(&customer_uid) {
            self.count("keys deleted");
            self.record(format!("I key {customer_uid} deleted"));
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

/// Plays one seed and checks the invariants at the end.
pub fn simulate(seed: u64, params: &Params) -> SeedReport {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
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
        play(&world, params).await;
        world
    });
    let report = verdict(&world);
    drop(runtime);
    report
}

async fn play(world: &Arc<World>, params: &Params) {
    let origin = world.origin;
    let days = i64::from(params.months) * 30 + 5;
    // Sign-ups through the first month, at any time of day (anchors on 29–31 included).
    for _ in 0..params.subscriptions {
        let at = Duration::from_secs(world.rand(|r| r.random_range(0..31 * 86_400)));
        tokio::spawn(Arc::clone(world).sign_up(at));
    }
    // The daily schedule: sometimes delivered twice (same execution id), and
    // sometimes a second run at the same time (another execution).
    for day in 0..days {
        let t = ten_am(origin, day);
        tokio::time::sleep(until(t, world.now())).await;
        let run_id = format!("day-{day}");
        tokio::spawn(Arc::clone(world).run(t, run_id.clone(), Duration::ZERO));
        if world.strikes(0.1) {
            world.count("duplicate deliveries");
            // Mostly within a lease's length of the first delivery.
            let delay = Duration::from_secs(world.rand(|r| r.random_range(1..1200)));
            tokio::spawn(Arc::clone(world).run(t, run_id.clone(), delay));
        }
        if world.strikes(0.05) {
            world.count("concurrent runs");
            let delay = Duration::from_millis(world.rand(|r| r.random_range(0..3000)));
            tokio::spawn(Arc::clone(world).run(t, format!("{run_id}-b"), delay));
        }
        if day == 20 {
            // Some customers lose their key at i'mport in the months that follow.
            let customers: Vec<String> = lock(&world.customers).keys().cloned().collect();
            for cu in customers {
                if world.strikes(0.05) {
                    let at = Duration::from_secs(world.rand(|r| r.random_range(0..90 * 86_400)));
                    tokio::spawn(Arc::clone(world).lose_key(cu, at));
                }
            }
        }
    }
    // Quiet down: no more faults or crashes; what is in flight lands, leases
    // and quiet periods pass; then clean runs settle what was left open.
    world.faults.store(false, Ordering::SeqCst);
    world.record("QUIESCE".into());
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let end = ten_am(origin, days);
    tokio::time::sleep(until(end, world.now())).await;
    for i in 0..3 {
        Arc::clone(world)
            .run(end, format!("final-{i}"), Duration::ZERO)
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
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
            plan: world.settings.default_plan.clone(),
            pg: "chai".into(),
            buyer: Default::default(),
            status: RegistrationStatus::Pending,
            created_at: now,
            expires_at: None,
            imp_uid: None,
            sweep_at: None,
            replaces_key: false,
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

/// The end-of-world checks, from the model's ledger and ours.
fn verdict(world: &World) -> SeedReport {
    let mut report = SeedReport {
        seed: world.seed,
        steps: world.steps.load(Ordering::SeqCst),
        ..SeedReport::default()
    };
    let attempts = world.ledger.all_attempts();
    let subs: BTreeMap<SubscriptionId, Subscription> = world
        .ledger
        .all_subscriptions()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let payments = lock(&world.model).payments.clone();
    // Every charge i'mport took is recorded as paid, or waits for a person.
    for p in payments.iter().filter(|p| p.took_money()) {
        let attempt = attempts.iter().find(|a| a.merchant_uid == p.merchant_uid);
        let sub_review = attempt
            .and_then(|a| subs.get(&a.subscription_id))
            .is_some_and(|s| s.status == SubscriptionStatus::NeedsReview);
        let recorded = match attempt {
            Some(a) if a.state == AttemptState::Paid => {
                a.imp_uid.as_deref() == Some(p.imp_uid.as_str())
            }
            Some(a) if a.state == AttemptState::NeedsReview => true,
            Some(a) if a.state.is_open() && sub_review => true,
            _ => false,
        };
        if !recorded {
            report.unrecorded += 1;
            let usage = match p.usage {
                Usage::Issue => "issuance",
                Usage::Charge => "charge",
            };
            report.violations.push(format!(
                "seed {}: unrecorded {usage} {} {} ({} KRW): ours {:?}",
                world.seed,
                p.merchant_uid,
                p.imp_uid,
                p.amount,
                attempt.map(|a| a.state.as_str())
            ));
        }
    }
    // At most one payment per (subscription, period).
    for ((sub, period), n) in world.paid_per_period() {
        if n > 1 {
            report.double_charges += 1;
            report.violations.push(format!(
                "seed {}: double charge {sub} {period}: {n} payments",
                world.seed
            ));
        }
    }
    // Nothing left open (an open attempt of a flagged subscription waits for its person).
    for a in attempts.iter().filter(|a| a.state.is_open()) {
        let review = subs
            .get(&a.subscription_id)
            .is_some_and(|s| s.status == SubscriptionStatus::NeedsReview);
        if !review {
            report.stuck += 1;
            report.violations.push(format!(
                "seed {}: stuck {} {} ({:?})",
                world.seed,
                a.merchant_uid,
                a.state.as_str(),
                a.fail_reason
            ));
        }
    }
    report.needs_review = attempts
        .iter()
        .filter(|a| a.state == AttemptState::NeedsReview)
        .count() as u64;
    for a in attempts
        .iter()
        .filter(|a| a.state == AttemptState::NeedsReview)
    {
        let why = if a
            .fail_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("issuance payment"))
        {
            "needs review: sign-up window took an odd amount"
        } else {
            "needs review: other"
        };
        *lock(&world.stats).entry(why).or_insert(0) += 1;
    }
    // No period skipped: the paid periods of each subscription are exactly
    // the ones before its current period, and a chargeable one is not behind.
    let end = world.now();
    for s in subs.values() {
        let paid: BTreeSet<PeriodId> = attempts
            .iter()
            .filter(|a| a.subscription_id == s.id && a.state == AttemptState::Paid)
            .map(|a| a.period.clone())
            .collect();
        let expected: BTreeSet<PeriodId> =
            (0..s.period_index).map(|k| s.anchor.period_id(k)).collect();
        if paid != expected {
            report.violations.push(format!(
                "seed {}: {} paid periods {paid:?}, expected {expected:?}",
                world.seed, s.id
            ));
        }
        if s.status.is_chargeable() && s.next_charge_at + chrono::Duration::days(2) < end {
            report.violations.push(format!(
                "seed {}: {} left behind: {} due {}",
                world.seed,
                s.id,
                s.status.as_str(),
                s.next_charge_at
            ));
        }
    }
    // Attempts recorded paid must be paid at i'mport.
    for a in attempts.iter().filter(|a| a.state == AttemptState::Paid) {
        let at_imp = payments.iter().any(|p| {
            p.merchant_uid == a.merchant_uid
                && p.took_money()
                && a.imp_uid.as_deref() == Some(p.imp_uid.as_str())
        });
        if !at_imp {
            report.violations.push(format!(
                "seed {}: {} recorded paid without a payment at i'mport",
                world.seed, a.merchant_uid
            ));
        }
    }
    report
        .violations
        .extend(lock(&world.violations).iter().cloned());
    let trace = lock(&world.trace);
    let mut h = trace.hasher.clone();
    report.steps.hash(&mut h);
    report.trace_hash = h.finish();
    report.trace = trace.lines.clone().unwrap_or_default();
    report.stats = lock(&world.stats).clone();
    report
}
