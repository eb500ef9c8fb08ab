//! The in-memory ledger as if it were DynamoDB: every operation waits a
//! modelled round trip first (and is counted), so a benchmark measures the
//! pipeline with a realistic store latency instead of moto_server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shared::ledger::LedgerError;
use shared::ledger::memory::InMemoryLedger;
use shared::ledger::observed::{Observed, Op, Watcher};

/// A round trip of `latency` before each operation, and a count of them.
#[derive(Clone)]
pub struct RoundTrip {
    pub latency: Duration,
    pub requests: Arc<AtomicU64>,
}

impl Watcher for RoundTrip {
    async fn before(&self, _op: &Op<'_>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    async fn after(&self, _op: &Op<'_>, _outcome: Result<(), &LedgerError>) {}
}

/// [`InMemoryLedger`] with `latency` per operation. Clones share the store
/// and the count.
pub type SlowLedger = Observed<InMemoryLedger, RoundTrip>;

pub fn slow_ledger(latency: Duration) -> SlowLedger {
    Observed {
        inner: Arc::new(InMemoryLedger::new()),
        watcher: RoundTrip {
            latency,
            requests: Arc::new(AtomicU64::new(0)),
        },
    }
}
