//! The charging group: how runs charge (mode, concurrency, leases,
//! dunning) and what follows a charge (refunds after a cancel, resumes).

use std::time::Duration;

use url::Url;

use super::ConfigError;
use super::vars::{Vars, local_endpoint};
use crate::billing::changes::ResumePolicy;
use crate::billing::{DunningPolicy, SubscriptionStatus};
use crate::secret::Secret;

/// Gateway calls one charge may chain under one claim (see `claim_lease`).
pub const MAX_CALLS_PER_CHARGE: u32 = 6;

/// How far ahead of the clock a run's time may be (the scheduler's
/// `scheduled-time` is the minute the run was due, and clocks differ).
pub const BILLING_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// How a scheduled run is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeMode {
    /// One invocation charges everything due (until its deadline).
    Single,
    /// The invocation plans the run into a queue; `charge-worker`s charge it.
    Queued { queue_url: Url },
}

/// What a run's billing time may be (`BILLING_CLOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BillingClock {
    /// The real clock: a run's time may be in the past (a replayed day
    /// charges only what was due then) but at most [`BILLING_CLOCK_SKEW`]
    /// ahead of now. Production.
    #[default]
    Wall,
    /// The event's time, whatever it is: a test clock (months played in
    /// minutes). Local runs only (`BILLING_CLOCK=event` needs a local
    /// DynamoDB endpoint).
    Event,
}

#[derive(Debug, Clone)]
pub struct ChargingConfig {
    /// Gateway requests in flight per process (`CHARGE_CONCURRENCY`).
    pub concurrency: usize,
    /// `single` (one invocation charges the run) or `queued` (it plans the
    /// run into `CHARGE_QUEUE_URL`; workers charge). See docs/performance.md.
    pub mode: ChargeMode,
    pub dunning: DunningPolicy,
    /// How long a claim on an attempt lasts. Longer than any function's
    /// timeout (checked at the start of each run) and than the longest chain
    /// of gateway calls of one charge (checked by [`super::Config`]).
    pub claim_lease: Duration,
    /// How long after a charge request was sent "the gateway has no such
    /// payment" may be read as "it never arrived" and the request sent again
    /// (with the same merchant_uid / paymentId; see `docs/charging.md`).
    pub resend_quiet: Duration,
    /// What the billing clock is: the real clock, with the event's time
    /// accepted up to a small skew ahead (production); or the event's time
    /// whatever it is, a test clock only a local DynamoDB endpoint allows.
    pub billing_clock: BillingClock,
    /// Refund a payment that lands after a cancel-now by itself instead of
    /// leaving it to a person (`REFUND_AFTER_CANCEL`).
    pub refund_after_cancel: bool,
    /// What a subscription that had no access is charged when it gets it
    /// back (`RESUME_POLICY`: `reanchor` or `collect_outstanding`).
    pub resume_policy: ResumePolicy,
    /// Delete the billing key at the gateway when a subscription is
    /// cancelled now (`DELETE_KEY_ON_CANCEL`).
    pub delete_key_on_cancel: bool,
    /// The fee kept from a mid-term cancel's prorated refund, in percent
    /// (`CANCEL_FEE_PERCENT`, 0–10; 0: none).
    pub cancel_fee_percent: u8,
    /// The days before a trial's conversion in which a consent to it counts
    /// (`CONSENT_WINDOW_DAYS`, 1–30; the decree's 30 by default).
    pub consent_window_days: u16,
    /// `notice_url` sent with each charge (the webhook route), if any.
    pub notice_url: Option<Url>,
    /// Cash receipts for charges paid from an account (`CASH_RECEIPT_MODE`:
    /// `off` or `auto`; decision 74).
    pub cash_receipts: crate::billing::CashReceiptMode,
    /// Key of the merchant_uid tags (`MERCHANT_UID_KEY` locally; in AWS the
    /// secret's `uid_key`); derived from the gateway's secret when absent.
    pub uid_key: Option<Secret>,
}

impl Default for ChargingConfig {
    /// The documented defaults: what an empty environment reads as.
    fn default() -> Self {
        Self::parse(&Vars::new(&|_| None)).unwrap_or_else(|_| unreachable!())
    }
}

impl ChargingConfig {
    pub fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let uid_key = vars.text("MERCHANT_UID_KEY").map(Secret::new);
        if uid_key.as_ref().is_some_and(|k| k.expose().len() < 16) {
            return Err(ConfigError::Invalid {
                name: "MERCHANT_UID_KEY",
                reason: "must have at least 16 characters".into(),
            });
        }
        let resume_policy = match vars.text("RESUME_POLICY") {
            None => ResumePolicy::default(),
            Some(v) => ResumePolicy::parse(&v).ok_or_else(|| ConfigError::Invalid {
                name: "RESUME_POLICY",
                reason: format!("{v:?} is not reanchor or collect_outstanding"),
            })?,
        };
        let cash_receipts = match vars.text("CASH_RECEIPT_MODE") {
            None => crate::billing::CashReceiptMode::Off,
            Some(v) => {
                crate::billing::CashReceiptMode::parse(&v).ok_or_else(|| ConfigError::Invalid {
                    name: "CASH_RECEIPT_MODE",
                    reason: format!("{v:?} is not off or auto"),
                })?
            }
        };
        Ok(Self {
            concurrency: vars.number("CHARGE_CONCURRENCY", 8, 1, 256)? as usize,
            mode: charge_mode(vars)?,
            dunning: dunning(vars)?,
            claim_lease: Duration::from_secs(vars.number("CLAIM_LEASE_SECS", 900, 10, 3600)?),
            resend_quiet: Duration::from_secs(vars.number("RESEND_QUIET_SECS", 600, 1, 86_400)?),
            billing_clock: billing_clock(vars)?,
            refund_after_cancel: vars.flag("REFUND_AFTER_CANCEL", false)?,
            resume_policy,
            delete_key_on_cancel: vars.flag("DELETE_KEY_ON_CANCEL", true)?,
            cancel_fee_percent: u8::try_from(vars.number("CANCEL_FEE_PERCENT", 0, 0, 10)?)
                .unwrap_or(0),
            consent_window_days: u16::try_from(vars.number("CONSENT_WINDOW_DAYS", 30, 1, 30)?)
                .unwrap_or(30),
            notice_url: vars.url("NOTICE_URL")?,
            cash_receipts,
            uid_key,
        })
    }

    /// The checks against the gateway's per-request timeout (`timeout`,
    /// read from `timeout_name`).
    pub fn check_against(
        &self,
        timeout: Duration,
        timeout_name: &'static str,
    ) -> Result<(), ConfigError> {
        // The longest chain under one claim: a lookup of an open attempt, the
        // charge, and the lookups that classify a refusal, each possibly sent
        // twice (a 401 forces a new token), plus a margin for the writes.
        let chain = timeout * 2 * MAX_CALLS_PER_CHARGE + Duration::from_secs(5);
        if self.claim_lease < chain {
            return Err(ConfigError::Invalid {
                name: "CLAIM_LEASE_SECS",
                reason: format!(
                    "{} s is shorter than the longest chain of gateway calls of one charge ({} s with {timeout_name})",
                    self.claim_lease.as_secs(),
                    chain.as_secs()
                ),
            });
        }
        // The quiet period counts from the claim; the request itself leaves
        // after a getToken (and, on a 401, another getToken and a second
        // send): keep well clear of that. A test clock (months played in
        // minutes against a simulator that answers at once) may wait less;
        // the real world may not.
        let quiet_floor = timeout * 5 + Duration::from_secs(60);
        if self.resend_quiet < quiet_floor && self.billing_clock == BillingClock::Wall {
            return Err(ConfigError::Invalid {
                name: "RESEND_QUIET_SECS",
                reason: format!(
                    "must be at least {} s (five times {timeout_name} plus a minute): the gateway may still be processing a request that timed out",
                    quiet_floor.as_secs()
                ),
            });
        }
        Ok(())
    }
}

fn charge_mode(vars: &Vars) -> Result<ChargeMode, ConfigError> {
    match (
        vars.text("CHARGE_MODE").as_deref(),
        vars.url("CHARGE_QUEUE_URL")?,
    ) {
        (None | Some("single"), _) => Ok(ChargeMode::Single),
        (Some("queued"), Some(queue_url)) => Ok(ChargeMode::Queued { queue_url }),
        (Some("queued"), None) => Err(ConfigError::Missing {
            name: "CHARGE_QUEUE_URL (CHARGE_MODE=queued)",
        }),
        (Some(other), _) => Err(ConfigError::Invalid {
            name: "CHARGE_MODE",
            reason: format!("{other:?} is not single or queued"),
        }),
    }
}

fn dunning(vars: &Vars) -> Result<DunningPolicy, ConfigError> {
    let retry_days = vars
        .text("DUNNING_RETRY_DAYS")
        .unwrap_or_else(|| "1,3,7".into());
    let retry_offsets =
        DunningPolicy::parse_days(&retry_days).map_err(|reason| ConfigError::Invalid {
            name: "DUNNING_RETRY_DAYS",
            reason,
        })?;
    let final_status = match vars.text("DUNNING_FINAL_STATUS").as_deref() {
        None | Some("suspended") => SubscriptionStatus::Suspended,
        Some("cancelled") => SubscriptionStatus::Cancelled,
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "DUNNING_FINAL_STATUS",
                reason: format!("{other:?}: use suspended or cancelled"),
            });
        }
    };
    let retry_hours = DunningPolicy::parse_hours(
        &vars.text("DUNNING_RETRY_HOUR").unwrap_or_default(),
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "DUNNING_RETRY_HOUR",
        reason,
    })?;
    Ok(DunningPolicy {
        retry_offsets,
        final_status,
        retry_hours,
    })
}

fn billing_clock(vars: &Vars) -> Result<BillingClock, ConfigError> {
    match vars.text("BILLING_CLOCK").as_deref() {
        None | Some("wall") => Ok(BillingClock::Wall),
        Some("event") => {
            let endpoint = vars
                .text("AWS_ENDPOINT_URL_DYNAMODB")
                .or_else(|| vars.text("AWS_ENDPOINT_URL"));
            if !endpoint.as_deref().is_some_and(local_endpoint) {
                return Err(ConfigError::Invalid {
                    name: "BILLING_CLOCK",
                    reason: "event (the event's time as a test clock) is for local runs only: it needs AWS_ENDPOINT_URL_DYNAMODB on a local emulator (loopback, localhost or a container name)".into(),
                });
            }
            Ok(BillingClock::Event)
        }
        Some(other) => Err(ConfigError::Invalid {
            name: "BILLING_CLOCK",
            reason: format!("{other:?} is not wall or event"),
        }),
    }
}
