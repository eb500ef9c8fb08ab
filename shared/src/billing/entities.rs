//! What the table holds, as typed records.

use chrono::{DateTime, Utc};

use crate::billing::{Anchor, PeriodId, SubscriptionId, SubscriptionStatus};
use crate::secret::Pii;

/// A plan: what is charged each period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Whole KRW, > 0.
    pub amount: i64,
    pub name: String,
}

/// Buyer details passed to i'mport (`buyer_*`). Masked in `Debug`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buyer {
    pub name: Option<Pii>,
    pub email: Option<Pii>,
    pub tel: Option<Pii>,
}

/// The public description of a billing key, as i'mport reported it at
/// registration. Never the key itself: i'mport keeps that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub pg_provider: String,
    pub pg_id: Option<String>,
    pub card_name: Option<String>,
    /// Masked by i'mport.
    pub card_number: Option<String>,
    pub inserted_at: DateTime<Utc>,
}

/// `REG#{merchant_uid}`: a sign-up prepared by the merchant's backend and
/// waiting for the browser to come back from the payment window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub merchant_uid: String,
    pub subscription_id: SubscriptionId,
    pub customer_uid: String,
    pub user_id: String,
    pub plan: Plan,
    pub pg: String,
    pub buyer: Buyer,
    pub status: RegistrationStatus,
    pub created_at: DateTime<Utc>,
    /// DynamoDB TTL while pending; removed once completed.
    pub expires_at: Option<DateTime<Utc>>,
    /// The issuance payment that completed it (set on completion).
    pub imp_uid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStatus {
    Pending,
    Completed,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
        }
    }
}

/// `SUB#{id}` / `META`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub user_id: String,
    pub customer_uid: String,
    pub pg: String,
    pub plan: Plan,
    pub buyer: Buyer,
    pub status: SubscriptionStatus,
    pub anchor: Anchor,
    /// The period to charge next (0 = the sign-up period).
    pub period_index: u32,
    /// The attempt of that period to make next (1-based).
    pub attempt: u32,
    /// When that attempt is due.
    pub next_charge_at: DateTime<Utc>,
    /// The last period that was paid, if any.
    pub paid_through: Option<PeriodId>,
    pub key: KeyInfo,
    /// Optimistic-locking version; every write checks and bumps it.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Cancel at the end of the paid period instead of charging again.
    pub cancel_at_period_end: bool,
}

impl Subscription {
    pub fn current_period(&self) -> PeriodId {
        self.anchor.period_id(self.period_index)
    }

    /// When the current period became due (the dunning base).
    pub fn period_due(&self) -> DateTime<Utc> {
        self.anchor.period_start(self.period_index)
    }

    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.status.is_chargeable() && self.next_charge_at <= now
    }
}

/// State of one charge attempt (`SUB#{id}` / `CHARGE#{period}#{attempt}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// A run holds the lease and is (about to be) talking to i'mport.
    Claimed,
    Paid,
    /// Declined by the PG (`status: failed`).
    Failed,
    /// Refused by i'mport (`code != 0`): no charge was attempted.
    Rejected,
    /// i'mport's answer was lost: may or may not have charged. Settled by a
    /// lookup of its `merchant_uid` before anything else happens.
    Unknown,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Claimed,
            Self::Paid,
            Self::Failed,
            Self::Rejected,
            Self::Unknown,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Still open: needs a charge or a settlement.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Claimed | Self::Unknown)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAttempt {
    pub subscription_id: SubscriptionId,
    pub period: PeriodId,
    pub attempt: u32,
    pub merchant_uid: String,
    pub amount: i64,
    pub state: AttemptState,
    /// Who holds the claim (a run id) and until when.
    pub claim_token: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub imp_uid: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub fail_reason: Option<String>,
    /// Total refunded (KRW), from i'mport's `cancel_amount`.
    pub refunded: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The final fact about an attempt, to be written together with the
/// subscription's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub state: AttemptState,
    pub imp_uid: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub fail_reason: Option<String>,
}
