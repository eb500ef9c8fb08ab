//! The entities the engine reasons about: plans, registrations,
//! subscriptions and charge attempts, with the attempt state machine.
//! Pure data: how they are stored is the ledger's business.

use chrono::{DateTime, NaiveDate, Utc};

use super::calendar::{Anchor, PeriodId};
use super::declines::DeclineClass;
use super::ids::{SubscriptionId, UidKey};
use super::notices::SentNotice;
use super::plans::PlanRef;
use super::price_changes::PriceChange;
use super::state::SubscriptionStatus;
use super::tax::{TaxSetting, TaxSplit};
use super::trials::{Consent, Trial, TrialTerms};
use crate::secret::Pii;

/// A plan: what is charged each period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Whole KRW, > 0.
    pub amount: i64,
    pub name: String,
    /// Days before a renewal charge its notice goes out (0: none); see
    /// `billing::notices`.
    pub notice_days: u16,
    /// How its charges split for VAT (decision 73).
    pub tax: TaxSetting,
}

/// Buyer details passed to the gateway (`buyer_*`). Masked in `Debug`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buyer {
    pub name: Option<Pii>,
    pub email: Option<Pii>,
    pub tel: Option<Pii>,
    /// Who the customer's cash receipts go to, when they gave a number at
    /// sign-up (decision 74).
    pub cash_receipt: Option<super::ReceiptHolder>,
}

/// The public description of a billing key, as the gateway reported it at
/// registration. Never the key itself: i'mport keeps that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub pg_provider: String,
    pub pg_id: Option<String>,
    pub card_name: Option<String>,
    /// Masked by the gateway.
    pub card_number: Option<String>,
    pub inserted_at: DateTime<Utc>,
}

/// A sign-up prepared by the merchant's backend and waiting for the browser
/// to come back from the payment window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub merchant_uid: String,
    pub subscription_id: SubscriptionId,
    pub customer_uid: String,
    pub user_id: String,
    pub plan: Plan,
    /// The plan version signed up to, when `prepare` named one (`plan_id`).
    pub plan_ref: Option<PlanRef>,
    pub pg: String,
    pub buyer: Buyer,
    pub status: RegistrationStatus,
    pub created_at: DateTime<Utc>,
    /// Expiry while pending; removed once completed.
    pub expires_at: Option<DateTime<Utc>>,
    /// The issuance payment that completed it (set on completion).
    pub imp_uid: Option<String>,
    /// While pending: when the charge run looks the issuance up at the
    /// gateway, in case the browser never came back (closed tab, lost
    /// redirect) and no webhook arrived: a window the customer finished is
    /// completed all the same, and money it took is never left unrecorded.
    pub sweep_at: Option<DateTime<Utc>>,
    /// A new card for the existing subscription `subscription_id` (its key
    /// is swapped once the new one is verified), not a new subscription.
    pub replaces_key: bool,
    /// The plan's free trial, if it has one (`billing::trials`).
    pub trial: Option<TrialTerms>,
    /// The plan's billing interval: the new subscription's calendar.
    pub interval: super::Interval,
    /// The plan's fixed billing day, if any (decision 77).
    pub billing: Option<super::BillingDay>,
    /// The consent to convert, taken with the sign-up (a trial whose
    /// `consent` is `signup`), with the merchant's evidence.
    pub consent: Option<Consent>,
    /// The coupon redeemed with the sign-up (counted when the registration
    /// was written; decision 78).
    pub coupon: Option<super::coupons::CouponTerms>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStatus {
    Pending,
    Completed,
    /// Verified at the gateway but not activated (the user already has a
    /// live subscription to the plan); its key was deleted. Final.
    Refused,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Completed, Self::Refused]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub user_id: String,
    pub customer_uid: String,
    pub pg: String,
    pub plan: Plan,
    /// The plan version `plan` is a copy of, when it came from the
    /// catalogue; `None` for an amount-and-name plan, and once a change by
    /// amount and name replaced it.
    pub plan_ref: Option<PlanRef>,
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
    /// A plan change that applies from the next period (the current one has
    /// an attempt at the old price already).
    pub pending_plan: Option<Plan>,
    /// When it ended (cancelled), and why.
    pub ended_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    /// While `needs_review`: the status before, restored when a person
    /// resolves the attempt as not paid.
    pub review_from: Option<SubscriptionStatus>,
    /// The run that claimed its newest fresh attempt: a run (all its
    /// deliveries and workers) charges a subscription once (defect S7).
    pub last_run: Option<String>,
    /// The Seoul date its newest period was paid: at most one period is
    /// paid per subscription and day, however many runs there are (I8).
    pub paid_on: Option<NaiveDate>,
    /// Re-anchor the calendar on the Seoul date of the next payment: set
    /// when access came back under `collect_outstanding` (the outstanding
    /// period is charged first, and the next one starts a period after
    /// that charge). See `docs/charging.md`, "Coming back after no access".
    pub reanchor_on_payment: bool,
    /// `action_required`: the hard decline class that stopped it (decision
    /// 72); cleared by a new card.
    pub action_reason: Option<DeclineClass>,
    /// The newest renewal notice it was sent (`billing::notices`).
    pub notice: Option<SentNotice>,
    /// Its free trial, kept once converted (`billing::trials`).
    pub trial: Option<Trial>,
    /// Its newest price change, kept once it ended until the next one
    /// (`billing::price_changes`).
    pub price_change: Option<PriceChange>,
    /// While `paused`: since when, and when it resumes (`billing::pauses`).
    pub pause: Option<super::pauses::Pause>,
    /// A period that costs less than the plan's price, because only part
    /// of it is had: a billing-day plan's first period (decision 77), or
    /// the rest of the period a pause ended in (decision 76). Kept as a
    /// share of the period's days and priced at the claim, at the price the
    /// claim charges (a price change applied there included); cleared once
    /// that period is paid or left.
    pub partial: Option<PartialPeriod>,
    /// The coupon redeemed on it and the periods it covers (decision 78),
    /// kept once over until the next.
    pub discount: Option<super::coupons::Discount>,
}

/// A period charged in part (see [`Subscription::partial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialPeriod {
    /// The period's index on the subscription's calendar.
    pub index: u32,
    /// The days of it charged, of its `of` days.
    pub days: u32,
    pub of: u32,
}

impl PartialPeriod {
    /// Its price at a plan of `amount`: [`prorated`], and never under the
    /// smallest amount a plan may charge (a part is only kept when it was
    /// above that at the price then; a price lowered since can bring it
    /// under).
    pub fn price(&self, amount: i64) -> i64 {
        prorated(amount, self.days, self.of).unwrap_or(*super::plans::PLAN_AMOUNT.start())
    }
}

/// The plan's `amount` for `days` of a period of `of` days, rounded down
/// to the won; `None` under the smallest amount a plan may charge (then
/// the part is not charged at all).
pub fn prorated(amount: i64, days: u32, of: u32) -> Option<i64> {
    let part = amount * i64::from(days) / i64::from(of.max(1));
    (part >= *super::plans::PLAN_AMOUNT.start()).then_some(part)
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

    /// What its period to charge next costs: the plan's price, or its
    /// share of it for a period had in part (decisions 76, 77), less the
    /// discount of a coupon covering the period (decision 78). A claim
    /// fixes it on the attempt: every re-send and refund uses the attempt's.
    pub fn period_amount(&self) -> i64 {
        let base = match self.partial {
            Some(p) if p.index == self.period_index => p.price(self.plan.amount),
            _ => self.plan.amount,
        };
        match self.discount_in_force() {
            Some(d) => d.price(base),
            None => base,
        }
    }

    /// Whether `attempt` is the one this subscription would charge next.
    pub fn is_current(&self, attempt: &ChargeAttempt) -> bool {
        self.current_period() == attempt.period && self.attempt == attempt.attempt
    }

    /// The plan name its user's lock is on (one live subscription per user
    /// and plan): the plan it will have, so a pending change holds the lock
    /// on its new plan from the moment it is asked for.
    pub fn lock_name(&self) -> &str {
        &self.pending_plan.as_ref().unwrap_or(&self.plan).name
    }

    /// Whether a fresh attempt may be claimed by `run_id` on Seoul day
    /// `today`: not twice in one run, and not on a day another period was
    /// paid (the current period is always the unpaid one).
    pub fn may_claim(&self, run_id: &str, today: NaiveDate) -> Result<(), &'static str> {
        if self.last_run.as_deref() == Some(run_id) {
            return Err("charged once per run");
        }
        if self.paid_on == Some(today) {
            return Err("one period a day");
        }
        Ok(())
    }

    /// This subscription, one version later, as of `now`.
    pub fn next_version(&self, now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        next.version += 1;
        next.updated_at = now;
        next
    }
}

/// State of one charge attempt. The transitions are in [`AttemptState::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptState {
    /// A run holds the lease and is (about to be) talking to the gateway.
    Claimed,
    Paid,
    /// Declined by the PG (`status: failed`).
    Failed,
    /// Refused by the gateway (`code != 0`): no charge was attempted.
    Rejected,
    /// The gateway's answer was lost: may or may not have charged. Settled by
    /// a lookup of its `merchant_uid` before anything else happens.
    Unknown,
    /// The engine will not decide alone (a record that does not match the
    /// charge, a payment that arrived after the attempt was settled as not
    /// paid, …). Only a person moves it on.
    NeedsReview,
}

/// What can happen to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEvent {
    /// Another run takes over an open attempt (lease expired, or `unknown`).
    TakeOver { lease_expired: bool },
    /// The holder lost the answer (or could not send): `unknown`, lease released.
    Release,
    /// A verified result, written by the claim's holder.
    SettleByHolder(AttemptState),
    /// A verified *paid* record, written without holding the claim (webhook,
    /// a run whose claim was taken over). Only money may settle unclaimed.
    PaidUnclaimed,
    /// Flagged for a person.
    Flag,
    /// A person decided (paid or failed).
    Resolve(AttemptState),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal attempt transition: {from:?} on {event:?}")]
pub struct IllegalAttemptTransition {
    pub from: AttemptState,
    pub event: AttemptEvent,
}

impl AttemptState {
    pub const ALL: [Self; 6] = [
        Self::Claimed,
        Self::Paid,
        Self::Failed,
        Self::Rejected,
        Self::Unknown,
        Self::NeedsReview,
    ];

    /// The one table of attempt transitions. Both ledgers enforce it with
    /// their own conditions; the contract suite holds them to it.
    pub fn after(self, event: AttemptEvent) -> Result<Self, IllegalAttemptTransition> {
        use AttemptEvent as E;
        use AttemptState as S;
        let next = match (self, event) {
            (S::Unknown, E::TakeOver { .. }) => S::Claimed,
            (
                S::Claimed,
                E::TakeOver {
                    lease_expired: true,
                },
            ) => S::Claimed,
            (S::Claimed, E::Release) => S::Unknown,
            (S::Claimed, E::SettleByHolder(to @ (S::Paid | S::Failed | S::Rejected))) => to,
            (S::Claimed | S::Unknown, E::PaidUnclaimed) => S::Paid,
            // A late payment on an attempt settled as not paid, or a record
            // that does not match: a person decides.
            (S::Claimed | S::Unknown | S::Failed | S::Rejected, E::Flag) => S::NeedsReview,
            (S::NeedsReview, E::Resolve(to @ (S::Paid | S::Failed))) => to,
            (from, event) => return Err(IllegalAttemptTransition { from, event }),
        };
        Ok(next)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Unknown => "unknown",
            Self::NeedsReview => "needs_review",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Still open: needs a charge or a settlement by the engine.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Claimed | Self::Unknown)
    }

    /// Settled as "no money taken": the period moved on to another attempt.
    pub fn is_unpaid_settlement(self) -> bool {
        matches!(self, Self::Failed | Self::Rejected)
    }
}

/// Why money went back on a charge (`charge.refunded`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundCause {
    /// The merchant asked (`POST /charges/{merchant_uid}/refund`).
    Requested,
    /// The refund of a mid-term cancel's quote (issue 23 §4).
    ProratedCancel,
    /// Given back by the engine itself (a payment after a cancel with
    /// `REFUND_AFTER_CANCEL`, a card window that took money).
    Automatic,
    /// Seen at the PG (its webhook or a lookup), not asked through us: a
    /// refund in the PG's console, or our own one whose webhook came first.
    PgReported,
}

impl RefundCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::ProratedCancel => "prorated_cancel",
            Self::Automatic => "automatic",
            Self::PgReported => "pg_reported",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Requested,
            Self::ProratedCancel,
            Self::Automatic,
            Self::PgReported,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAttempt {
    pub subscription_id: SubscriptionId,
    pub period: PeriodId,
    pub attempt: u32,
    /// Fixed when the attempt is claimed; every re-send uses this value.
    pub merchant_uid: String,
    /// A reference to the billing key its latest request charged (the
    /// subscription's key when it was sent; [`UidKey::key_ref`], never the
    /// key). Its records are checked against it, so a card replaced while
    /// the attempt is out does not make its own payment look foreign; a
    /// re-send charges the subscription's key of the moment.
    pub key_ref: String,
    pub amount: i64,
    pub state: AttemptState,
    /// Who holds the claim (unique per claim) and until when.
    pub claim_token: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// When a charge request for it was last (about to be) sent; `None`
    /// when none can be in flight (never sent, or certainly not delivered).
    pub sent_at: Option<DateTime<Utc>>,
    /// Requests sent for it that may have reached the gateway (a request
    /// certainly not delivered is not counted). At most [`MAX_SENDS`].
    pub sends: u32,
    pub imp_uid: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Why it failed, was rejected, is unknown or needs review.
    pub fail_reason: Option<String>,
    /// Declined: what the decline says about the card (decision 72).
    pub decline: Option<DeclineClass>,
    /// Paid: the PG's receipt (the card slip) for the customer, where the
    /// PG gives one (V1 `receipt_url`, V2 `receiptUrl`).
    pub receipt_url: Option<String>,
    /// The tax-free part of `amount` (decision 73): fixed with the amount
    /// when the attempt is claimed and sent with every request of it; once
    /// paid, as the PG reported it where it reports one.
    pub tax_free: i64,
    /// Paid: the VAT as the PG reported it; `None` when the PG reports none
    /// (V1): then it is computed from `tax_free` ([`ChargeAttempt::tax`]).
    pub vat: Option<i64>,
    /// Total refunded (KRW), from the gateway's cancelled amount.
    pub refunded: i64,
    /// Paid from an account with `CASH_RECEIPT_MODE=auto`: its cash receipt
    /// (decision 74), written with the paid result.
    pub cash_receipt: Option<super::CashReceipt>,
    /// What the latest rise of `refunded` was (`charge.refunded`'s
    /// `reason`); `None` before any refund.
    pub refund_cause: Option<RefundCause>,
    /// How a person settled it, when one did.
    pub resolution: Option<Resolution>,
    /// Settled as not paid: when the period is charged again (the next
    /// attempt), if it is; written with the settlement.
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A person's decision on an attempt that needed review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// `Paid` or `Failed`.
    pub state: AttemptState,
    pub note: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// Who asks for a manual action: the name the merchant's backend gave
/// (`x-actor`: an operator's login, a job), and the IAM principal that
/// signed the request. Both are kept (defect X2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub principal: Option<String>,
}

impl Actor {
    /// An actor known by one name (a person in a test, the engine itself).
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            principal: None,
        }
    }
}

/// One manual action on a subscription: who, when, what and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub subscription_id: SubscriptionId,
    pub at: DateTime<Utc>,
    /// Who: the `x-actor` the merchant's backend named (an operator, a
    /// job), else the IAM principal.
    pub actor: String,
    /// The IAM principal that signed the request, kept beside a named
    /// `actor` (which the caller chose, and could misname): defect X2.
    pub principal: Option<String>,
    /// What: `cancel`, `resume`, `plan`, `payment_method`, `refund`, `resolve`.
    pub action: String,
    /// Why, and the details (free text).
    pub detail: String,
}

/// Requests one attempt may send (the first and two re-sends). An attempt
/// the gateway never records after that many (a PG error that leaves no
/// payment, a refusal that does not go away) is closed as `rejected` and the
/// period goes on by the dunning rules, instead of being re-sent forever.
pub const MAX_SENDS: u32 = 3;

/// An attempt left open this long (a payment pending at the gateway for
/// days, lookups that keep failing) goes to a person: `needs_review`.
pub const ESCALATE_AFTER: chrono::Duration = chrono::Duration::days(3);

/// Attempt numbers from this one on are not charges of the period but the
/// record of a card-replacement window that took money (kept for a person
/// until its refund is confirmed): they pay no period.
pub const FIRST_WINDOW_SLOT: u32 = 900;

impl ChargeAttempt {
    /// How its amount splits for VAT: as the PG reported it, else computed
    /// from the tax-free part (decision 73).
    pub fn tax(&self) -> TaxSplit {
        self.vat
            .and_then(|vat| TaxSplit::reported(self.amount, Some(self.tax_free), Some(vat)))
            .unwrap_or_else(|| TaxSplit::computed(self.amount, self.tax_free))
    }

    /// Whether [`ChargeAttempt::tax`] is the PG's own report.
    pub fn tax_reported(&self) -> bool {
        self.vat.is_some()
    }

    /// The record of a card window's payment, not a charge of the period.
    pub fn is_window(&self) -> bool {
        self.attempt >= FIRST_WINDOW_SLOT
    }

    /// Whether this attempt's latest request charged `billing_key`. Older
    /// items kept the key itself (`customer_uid`) where newer ones keep its
    /// reference; both are recognised.
    pub fn charged(&self, billing_key: &str, refs: &UidKey) -> bool {
        self.key_ref == refs.key_ref(billing_key) || self.key_ref == billing_key
    }

    /// Open for longer than [`ESCALATE_AFTER`].
    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        self.state.is_open() && now - self.created_at >= ESCALATE_AFTER
    }

    /// Whether "the gateway has no payment under this `merchant_uid`" may be
    /// read as "the request never arrived": only once `quiet` has passed since
    /// the last request was sent. Before that, the gateway may still be
    /// processing it, and a re-send would race it.
    pub fn quiet_since_sent(&self, now: DateTime<Utc>, quiet: chrono::Duration) -> bool {
        self.sent_at.is_none_or(|sent| now - sent >= quiet)
    }

    /// Whether this run's claim still has `needed` left on its lease.
    pub fn lease_covers(&self, now: DateTime<Utc>, needed: chrono::Duration) -> bool {
        self.lease_until.is_some_and(|until| until - now > needed)
    }
}

/// The final fact about an attempt, to be written together with the
/// subscription's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub state: AttemptState,
    /// The amount the payment took, when it is not the attempt's (a person
    /// accepted a payment of another amount); `None` keeps the attempt's.
    pub amount: Option<i64>,
    pub imp_uid: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub fail_reason: Option<String>,
    /// A decline's class (decision 72); `None` for anything but a decline.
    pub decline: Option<DeclineClass>,
    /// Paid: the PG's receipt link for the customer, where it gives one.
    pub receipt_url: Option<String>,
    /// Paid: the VAT split as the PG reported it (V2 `amount.taxFree` and
    /// `amount.vat`); `None` when it reports none (V1).
    pub tax: Option<TaxSplit>,
    /// Paid from an account with cash receipts on: the receipt to issue,
    /// written with the result (decision 74).
    pub cash_receipt: Option<super::CashReceipt>,
    /// Not paid, and the period is charged again (the next attempt) at this
    /// time; `None` when nothing is retried (see [`retry_of`]).
    pub retry_at: Option<DateTime<Utc>>,
}

/// When `attempt`'s period is charged again, given the subscription's next
/// state after `attempt` was settled as not paid: the next attempt's due
/// time while the subscription is still charged for that period.
pub fn retry_of(attempt: &ChargeAttempt, next: &Subscription) -> Option<DateTime<Utc>> {
    (next.status.is_chargeable()
        && next.current_period() == attempt.period
        && next.attempt > attempt.attempt)
        .then_some(next.next_charge_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptState as S;
    use proptest::prelude::*;

    fn any_event() -> impl Strategy<Value = AttemptEvent> {
        let state = proptest::sample::select(S::ALL.to_vec());
        prop_oneof![
            any::<bool>().prop_map(|e| AttemptEvent::TakeOver { lease_expired: e }),
            Just(AttemptEvent::Release),
            state.clone().prop_map(AttemptEvent::SettleByHolder),
            Just(AttemptEvent::PaidUnclaimed),
            Just(AttemptEvent::Flag),
            state.prop_map(AttemptEvent::Resolve),
        ]
    }

    #[test]
    fn only_money_settles_without_the_claim() {
        assert_eq!(S::Unknown.after(AttemptEvent::PaidUnclaimed), Ok(S::Paid));
        assert_eq!(S::Claimed.after(AttemptEvent::PaidUnclaimed), Ok(S::Paid));
        // A decline must come from the holder of the claim.
        assert!(
            S::Unknown
                .after(AttemptEvent::SettleByHolder(S::Failed))
                .is_err()
        );
        assert_eq!(
            S::Claimed.after(AttemptEvent::SettleByHolder(S::Failed)),
            Ok(S::Failed)
        );
        // A live claim cannot be taken over.
        assert!(
            S::Claimed
                .after(AttemptEvent::TakeOver {
                    lease_expired: false
                })
                .is_err()
        );
    }

    #[test]
    fn late_payments_go_to_a_person_and_only_a_person_resolves() {
        assert_eq!(S::Failed.after(AttemptEvent::Flag), Ok(S::NeedsReview));
        assert!(S::Paid.after(AttemptEvent::Flag).is_err());
        assert!(S::NeedsReview.after(AttemptEvent::PaidUnclaimed).is_err());
        assert_eq!(
            S::NeedsReview.after(AttemptEvent::Resolve(S::Paid)),
            Ok(S::Paid)
        );
    }

    proptest! {
        /// Paid is final for the engine, and no event leads back to an
        /// unpaid settlement once money was recorded.
        #[test]
        fn paid_is_never_undone(events in proptest::collection::vec(any_event(), 0..30)) {
            let mut s = S::Paid;
            for e in events {
                if let Ok(next) = s.after(e) { s = next; }
                prop_assert_eq!(s, S::Paid);
            }
        }
    }
}
