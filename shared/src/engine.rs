//! The engine: the two ports, a clock and the settings the services read.
//! The services (`charging`, `registration`, `notification`) take an
//! `&Engine<L, G>`; production wires a DynamoDB ledger and the i'mport client
//! (`crate::app`), the simulation an in-memory ledger and a model of i'mport.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::billing::{SubscriptionId, UidKey, random_customer_uid, random_nonce};
use crate::clock::Clock;
use crate::config::{BillingClock, ChargingConfig, Config, RegistrationConfig};
use crate::gateway::PaymentGateway;
use crate::ledger::Ledger;

/// What the services need to know: the groups of [`Config`] they read, and
/// what is resolved from the gateway's group at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub charging: ChargingConfig,
    pub registration: RegistrationConfig,
    /// The gateway's per-request timeout (budgets and lease checks use it).
    pub gateway_timeout: Duration,
    /// What subscriptions record as their PG (`chai`, `chai.{public_key}`,
    /// …; `portone` with V2).
    pub pg: String,
    /// The key of the `merchant_uid` tags.
    pub uid_key: UidKey,
}

impl Settings {
    pub fn from_config(config: &Config, uid_key: UidKey) -> Self {
        Self {
            charging: config.charging.clone(),
            registration: config.registration.clone(),
            gateway_timeout: config.gateway.timeout().0,
            pg: config.gateway.pg().to_owned(),
            uid_key,
        }
    }

    /// The cash receipt a charge paid now gets (decision 74): one when
    /// receipts are on and it was paid from an account, to the buyer's
    /// number or else self-issued.
    pub fn cash_receipt_for(
        &self,
        buyer: &crate::billing::Buyer,
        cash: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<crate::billing::CashReceipt> {
        (cash && self.charging.cash_receipts == crate::billing::CashReceiptMode::Auto).then(|| {
            crate::billing::CashReceipt::new(
                buyer
                    .cash_receipt
                    .clone()
                    .unwrap_or_else(crate::billing::ReceiptHolder::self_issued),
                now,
            )
        })
    }

    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.charging.claim_lease)
            .unwrap_or(chrono::Duration::minutes(15))
    }

    pub fn quiet(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.charging.resend_quiet)
            .unwrap_or(chrono::Duration::minutes(10))
    }

    /// What must be left of a claim's lease to send one more request under
    /// it: the request's timeout, twice (a 401 makes the client ask for a
    /// new token and send again), and a margin for the write that follows.
    pub fn lease_needed_per_call(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.gateway_timeout * 2 + Duration::from_secs(5))
            .unwrap_or(chrono::Duration::minutes(1))
    }
}

/// The ports, a clock and the settings. One per process in production.
pub struct Engine<L, G> {
    pub ledger: L,
    pub gateway: G,
    pub clock: Clock,
    pub settings: Settings,
    /// Claim tokens and new ids; seeded in the simulation.
    rng: Mutex<StdRng>,
}

impl<L, G> std::fmt::Debug for Engine<L, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("clock", &self.clock)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<L: Ledger, G: PaymentGateway> Engine<L, G> {
    pub fn new(ledger: L, gateway: G, clock: Clock, settings: Settings) -> Self {
        Self {
            ledger,
            gateway,
            clock,
            settings,
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }

    /// An engine whose claim tokens and ids come from `seed` (the simulation
    /// replays a seed exactly).
    pub fn seeded(ledger: L, gateway: G, clock: Clock, settings: Settings, seed: u64) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            ..Self::new(ledger, gateway, clock, settings)
        }
    }
}

impl<L, G> Engine<L, G> {
    /// On the event's clock (`BILLING_CLOCK=event`: local runs and tests
    /// that play months in minutes) the process clock moves forward to an
    /// event's time when it is behind (a run's billing time, an HTTP
    /// request's `x-billing-clock`), so that leases, quiet periods and the
    /// billing day are measured in the time the story plays, whichever
    /// function plays it. On the real clock (production) nothing moves.
    pub fn follow_the_event(&self, at: DateTime<Utc>) {
        if self.settings.charging.billing_clock == BillingClock::Event {
            let now = self.now();
            if at > now {
                self.clock.advance(at - now);
            }
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut rng)
    }

    /// A claim token: the run's id and a random suffix, so that two
    /// deliveries of one scheduled event (same run id) never share a claim.
    pub fn claim_token(&self, run_id: &str) -> String {
        let suffix: u64 = self.with_rng(|r| r.random());
        format!("{run_id}.{suffix:016x}")
    }

    pub fn new_subscription_id(&self) -> SubscriptionId {
        self.with_rng(SubscriptionId::random)
    }

    pub fn new_customer_uid(&self) -> String {
        self.with_rng(random_customer_uid)
    }

    pub fn new_nonce(&self) -> String {
        self.with_rng(random_nonce)
    }
}

/// Time left for a piece of work (a Lambda invocation's deadline), so that
/// calls are cut to what remains and an HTTP caller always gets its answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    deadline: Option<tokio::time::Instant>,
}

impl Budget {
    /// No deadline (tests, tools).
    pub fn unlimited() -> Self {
        Self { deadline: None }
    }

    pub fn until(deadline: tokio::time::Instant) -> Self {
        Self {
            deadline: Some(deadline),
        }
    }

    /// The budget of a Lambda invocation whose deadline is `deadline`
    /// (wall-clock). A deadline at or before the epoch, or already past,
    /// means none: Lambda never sends one, but local emulators do
    /// (cargo-lambda 1.9 sends a duration, 600000, where Lambda sends an
    /// instant), and work that stops before it starts would do nothing.
    pub fn from_lambda_deadline(deadline: std::time::SystemTime) -> Self {
        if deadline <= std::time::UNIX_EPOCH {
            return Self::unlimited();
        }
        match deadline.duration_since(std::time::SystemTime::now()) {
            Ok(left) => Self::until(tokio::time::Instant::now() + left),
            Err(_) => {
                tracing::warn!("the invocation's deadline is already past; running without one");
                Self::unlimited()
            }
        }
    }

    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// Time left after keeping `reserve` back; `None` when unlimited.
    pub fn left(&self, reserve: Duration) -> Option<Duration> {
        self.deadline.map(|d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .saturating_sub(reserve)
        })
    }

    /// Whether `needed` still fits after keeping `reserve` back.
    pub fn allows(&self, needed: Duration, reserve: Duration) -> bool {
        self.left(reserve).is_none_or(|left| left >= needed)
    }

    /// Runs `work` within the time left after `reserve`; `None` if it ran
    /// out (the work is dropped at its current await point).
    pub async fn run<F: std::future::Future>(
        &self,
        reserve: Duration,
        work: F,
    ) -> Option<F::Output> {
        match self.left(reserve) {
            None => Some(work.await),
            Some(left) if left.is_zero() => None,
            Some(left) => tokio::time::timeout(left, work).await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lambda_deadline_in_the_past_means_none_and_a_future_one_is_kept() {
        use std::time::{SystemTime, UNIX_EPOCH};
        assert!(
            Budget::from_lambda_deadline(UNIX_EPOCH)
                .deadline()
                .is_none()
        );
        // cargo-lambda's 600000 ms read as an instant: 1970-01-01T00:10Z.
        assert!(
            Budget::from_lambda_deadline(UNIX_EPOCH + Duration::from_millis(600_000))
                .deadline()
                .is_none()
        );
        let future = Budget::from_lambda_deadline(SystemTime::now() + Duration::from_secs(60));
        let left = future.left(Duration::ZERO).unwrap();
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
    }

    /// Defect (b): two deliveries of one scheduled event carry one run id;
    /// their claims must still be told apart.
    #[test]
    fn claim_tokens_differ_for_the_same_run_id() {
        use crate::ledger::memory::InMemoryLedger;
        let settings = Settings {
            charging: ChargingConfig::default(),
            registration: RegistrationConfig::default(),
            gateway_timeout: Duration::from_secs(10),
            pg: "chai".into(),
            uid_key: UidKey::derived_from(b"k"),
        };
        let engine = |seed| {
            Engine::seeded(
                InMemoryLedger::new(),
                crate::gateway::iamport::IamportClient::new(
                    crate::gateway::iamport::ClientConfig::new(
                        url::Url::parse("http://127.0.0.1:1").unwrap(),
                        crate::secret::Secret::new("k"),
                        crate::secret::Secret::new("s"),
                    ),
                )
                .unwrap(),
                Clock::system(),
                settings.clone(),
                seed,
            )
        };
        let (a, b) = (engine(1), engine(2));
        let (ta, tb) = (a.claim_token("exec-1"), b.claim_token("exec-1"));
        assert!(ta.starts_with("exec-1.") && tb.starts_with("exec-1."));
        assert_ne!(ta, tb);
        assert_ne!(
            a.claim_token("exec-1"),
            ta,
            "two claims of one process differ too"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_budget_is_cut() {
        let b = Budget::until(tokio::time::Instant::now() + Duration::from_secs(10));
        assert!(b.allows(Duration::from_secs(7), Duration::from_secs(2)));
        assert!(!b.allows(Duration::from_secs(9), Duration::from_secs(2)));
        let slow = tokio::time::sleep(Duration::from_secs(30));
        assert!(b.run(Duration::from_secs(2), slow).await.is_none());
        assert!(tokio::time::Instant::now() < b.deadline().unwrap());
    }
}
