//! Wall-clock time for leases and timestamps, behind one small type so the
//! deterministic simulation can run the engine on virtual time and tests can
//! move time forward without sleeping.
//!
//! (The *billing* clock — what is due — is the scheduled event's time and
//! travels with each run; this is the time at which things happen.)

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    /// The system clock.
    System,
    /// The system clock plus an offset that a test moves forward.
    Shifted(Arc<AtomicI64>),
    /// `origin` plus the time elapsed on tokio's clock since `start`: virtual
    /// time when the runtime's clock is paused (the simulation).
    Tokio {
        origin: DateTime<Utc>,
        start: tokio::time::Instant,
    },
}

impl Clock {
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// The system clock with an offset moved by [`Clock::advance`] (tests).
    pub fn shifted() -> Self {
        Self(Source::Shifted(Arc::new(AtomicI64::new(0))))
    }

    /// Time that starts at `origin` now and runs with tokio's clock (which a
    /// paused runtime advances virtually).
    pub fn tokio(origin: DateTime<Utc>) -> Self {
        Self(Source::Tokio {
            origin,
            start: tokio::time::Instant::now(),
        })
    }

    /// The current instant, to the whole second (as the ledger stores it).
    pub fn now(&self) -> DateTime<Utc> {
        let t = self.now_precise();
        DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
    }

    /// The current instant to the microsecond: for what must keep its order
    /// within a second (the audit trail).
    pub fn now_precise(&self) -> DateTime<Utc> {
        let t = match &self.0 {
            Source::System => Utc::now(),
            Source::Shifted(offset) => {
                Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst))
            }
            Source::Tokio { origin, start } => {
                *origin
                    + chrono::Duration::from_std(start.elapsed()).unwrap_or(chrono::Duration::MAX)
            }
        };
        DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
    }

    /// Moves a shifted clock forward (every copy of it); no effect on others.
    pub fn advance(&self, by: chrono::Duration) {
        if let Source::Shifted(offset) = &self.0 {
            offset.fetch_add(by.num_seconds(), Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_clocks_move_together_and_keep_whole_seconds() {
        let c = Clock::shifted();
        let copy = c.clone();
        let before = c.now();
        c.advance(chrono::Duration::days(2));
        let after = copy.now();
        assert!(after - before >= chrono::Duration::days(2));
        assert_eq!(after.timestamp_subsec_nanos(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_time_is_virtual_when_paused() {
        let origin = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let c = Clock::tokio(origin);
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert_eq!(c.now(), origin + chrono::Duration::hours(1));
    }
}
