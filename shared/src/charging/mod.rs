//! Flow 2: charging one subscription, one attempt at a time, never twice.
//!
//! - `attempt`: one subscription: claim (or take over) its current attempt,
//!   settle what was left open, send the charge, record the answer;
//! - `settle`: the one find → verify → settle sequence (runs, webhooks,
//!   reviews);
//! - `pace`: backing off from a gateway that stops taking requests.
//!
//! The run that charges everything due is `crate::run`. The decisions
//! themselves are the core's (`crate::billing`). See `docs/charging.md` for
//! the reasoning.

mod answers;
pub(crate) mod attempt;
pub(crate) mod pace;
pub mod settle;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

use crate::billing::{DeclineClass, Fact, SubscriptionId};
use crate::engine::Engine;
use crate::gateway::{GatewayError, PaymentGateway};
use crate::ledger::{Ledger, LedgerError};
use pace::Pace;

/// One billing run: what is due is decided at `billing_time` (the scheduled
/// event's time), and every claim it makes carries `run_id`.
#[derive(Debug, Clone)]
pub struct BillingRun {
    pub billing_time: DateTime<Utc>,
    /// E.g. the scheduler's execution id.
    pub run_id: String,
}

/// What happened to one due subscription in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Charged {
        imp_uid: String,
    },
    /// A period a coupon leaves nothing to pay for: recorded as paid at
    /// 0 KRW, nothing sent (decision 78).
    Free {
        merchant_uid: String,
    },
    Declined {
        reason: String,
        /// Its class once recorded (decision 72); `None` while the decline
        /// waits for the quiet period before it is recorded.
        class: Option<DeclineClass>,
    },
    Rejected {
        reason: String,
        key_gone: bool,
    },
    /// The charge may have happened; recorded `unknown`, settled by a later run.
    Ambiguous {
        detail: String,
    },
    /// The gateway refused the charge without a payment (V1 `code != 0`, a
    /// typed V2 error). Left open until its records can tell, after the
    /// quiet period; counted, and alike refusals in a row stop the run.
    Refused {
        reason: String,
    },
    /// An attempt left open earlier was settled from the gateway's records.
    Reconciled {
        fact: Fact,
    },
    /// The request could not be sent (refused connection, throttled): the
    /// claim is released and the next run tries again.
    Deferred {
        reason: String,
    },
    /// Flagged for a person: the subscription is charged no more until then.
    NeedsReview {
        reason: String,
    },
    Skipped {
        reason: SkipReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotDue,
    /// Another live run holds the attempt, or settled it first.
    Busy,
    NotFound,
    /// Cancelled at the end of its paid period instead of being charged.
    CancelledAtPeriodEnd,
    /// A trial ended without a consent to convert: extended once, or
    /// cancelled; nothing charged (`billing::trials`).
    TrialEndedWithoutConsent,
    /// A price increase was declined or not answered under
    /// `cancel_at_period_end`: the subscription ended; nothing charged
    /// (`billing::price_changes`).
    PriceIncreaseNotConsented,
    /// The gateway's record could not be read; left open for the next run.
    Unsettled,
    /// Sent recently and not (yet) visible at the gateway: left open until
    /// the quiet period has passed, so a re-send cannot race the first request.
    Waiting,
    /// Its attempt waits for a person.
    NeedsReview,
    /// Charged once per run, and one period a day: already charged in this
    /// run, or another period was paid today.
    OncePerRunOrDay,
    /// Paused: the period that began is skipped, never charged (decision 76).
    Paused,
}

/// A failure of a dependency as a whole: the run stops taking new work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// A ledger failure. `Corrupt` is the one kind that only skips the
    /// subscription it concerns.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("gateway refused our credentials: {0}")]
    Unauthorized(GatewayError),
    #[error("gateway unavailable: {0} failures in a row")]
    Unavailable(u32),
    /// Every charge is refused alike (a PG setting broken at the merchant):
    /// going on would only march every subscription into dunning (S2).
    #[error("{count} charges in a row refused alike ({reason}): the PG setup looks broken")]
    RefusedAlike { count: u32, reason: String },
    /// The run's time is ahead of the clock by more than the allowed skew
    /// (a mistyped manual run, a forged message): everyone would look due
    /// (defect D7).
    #[error("billing time {billing_time} is {ahead_secs} s ahead of the clock; refused")]
    FutureBillingTime {
        billing_time: DateTime<Utc>,
        ahead_secs: i64,
    },
}

/// Charges one subscription if it is due at `run.billing_time` (the
/// sign-up's first charge, tools).
pub async fn charge_one<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &SubscriptionId,
    run: &BillingRun,
) -> Result<Outcome, RunError> {
    attempt::charge_one(engine, id, run, &Pace::default()).await
}
