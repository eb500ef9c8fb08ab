//! Backing off from the gateway when it stops taking requests (refused
//! connections, throttling, lost answers), shared by the charges of one run:
//! after a failure every charge waits, the wait doubles with each failure in
//! a row (1 s up to 30 s), and one success ends it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct Pace {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    until: Option<Instant>,
    delay: Option<Duration>,
    streak: u32,
}

impl Pace {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits out the current back-off, if any.
    pub(crate) async fn wait(&self) {
        let until = self.lock().until;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    /// One more failure in a row; returns how many.
    pub(crate) fn failed(&self) -> u32 {
        let mut st = self.lock();
        let delay = st.delay.map_or(FIRST, |d| (d * 2).min(MAX));
        st.delay = Some(delay);
        st.until = Some(Instant::now() + delay);
        st.streak += 1;
        st.streak
    }

    pub(crate) fn succeeded(&self) {
        *self.lock() = State::default();
    }

    /// Failures in a row so far.
    pub(crate) fn streak(&self) -> u32 {
        self.lock().streak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backs_off_doubling_and_resets_on_success() {
        let pace = Pace::default();
        let start = Instant::now();
        pace.wait().await;
        assert_eq!(Instant::now(), start);
        pace.failed();
        pace.failed();
        pace.wait().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        assert_eq!(pace.streak(), 2);
        pace.succeeded();
        assert_eq!(pace.streak(), 0);
        let t = Instant::now();
        pace.wait().await;
        assert_eq!(Instant::now(), t);
    }
}
