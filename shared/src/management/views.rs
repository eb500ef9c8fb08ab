//! What the management API shows: subscriptions, charges and their
//! history, in the API's words.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::billing::price_changes::PriceChange;
use crate::billing::trials::Trial;
use crate::billing::{ChargeAttempt, Plan, Subscription, SubscriptionStatus, TaxSplit};

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanView {
    pub amount: i64,
    pub name: String,
    /// `taxable`, `exempt` or `mixed` (decision 73).
    pub tax: &'static str,
    /// A mixed plan's tax-free part of each charge; null otherwise.
    pub tax_free_amount: Option<i64>,
}

impl From<&Plan> for PlanView {
    fn from(p: &Plan) -> Self {
        Self {
            amount: p.amount,
            name: p.name.clone(),
            tax: p.tax.kind(),
            tax_free_amount: p.tax.tax_free_amount(),
        }
    }
}

/// How a charge (or what of it was refunded) splits for VAT (decision 73).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TaxView {
    pub supply: i64,
    pub vat: i64,
    pub tax_free: i64,
    /// `pg`: as the PG reported it (V2); `computed`: from the tax-free part
    /// sent, VAT a tenth of the supply (V1 reports none).
    pub source: &'static str,
    /// The part of `refunded`, split the same way (pro rata).
    pub refunded: TaxSplit,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CardView {
    pub pg_provider: String,
    pub card_name: Option<String>,
    /// Masked by i'mport.
    pub card_number: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResolutionView {
    #[serde(rename = "as")]
    pub resolved_as: String,
    pub note: String,
    pub by: String,
    pub at: String,
}

/// A charge attempt as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChargeView {
    pub subscription_id: String,
    pub merchant_uid: String,
    pub period: String,
    pub attempt: u32,
    pub imp_uid: Option<String>,
    pub amount: i64,
    pub state: String,
    pub reason: Option<String>,
    /// A decline's class (decision 72).
    pub decline_class: Option<&'static str>,
    pub refunded: i64,
    pub paid_at: Option<String>,
    /// The PG's receipt for the customer (the card slip), once paid.
    pub receipt_url: Option<String>,
    pub tax: TaxView,
    /// Paid from an account with cash receipts on: its cash receipt
    /// (decision 74); `null` otherwise.
    pub cash_receipt: Option<CashReceiptView>,
    /// Not paid: when the period is charged again, if it is.
    pub next_retry_at: Option<String>,
    pub resolution: Option<ResolutionView>,
    pub created_at: String,
}

/// A charge's cash receipt. The holder's number is masked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CashReceiptView {
    /// `issued` (live at the PG for what is left of the charge), `cancelled`
    /// (the charge was refunded in full), `pending` (to issue, cancel or
    /// reissue; `in_progress` says an issuance waits for the PG's word),
    /// `needs_review` (gave up after 5 tries).
    pub status: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub identifier: String,
    pub self_issued: bool,
    /// What the live receipt covers; 0 when none is live.
    pub amount: i64,
    pub tax_free: i64,
    pub vat: i64,
    pub issue_number: Option<String>,
    pub url: Option<String>,
    pub issued_at: Option<String>,
    pub cancelled_at: Option<String>,
    pub issues: u32,
    pub cancels: u32,
    pub tries: u32,
    pub in_progress: bool,
    pub last_error: Option<String>,
    pub next_try_at: Option<String>,
}

impl From<&crate::billing::CashReceipt> for CashReceiptView {
    fn from(r: &crate::billing::CashReceipt) -> Self {
        use crate::billing::ReceiptState;
        let live = r.live.as_ref();
        Self {
            status: match r.state {
                ReceiptState::Settled if live.is_some() => "issued",
                ReceiptState::Settled => "cancelled",
                ReceiptState::Due | ReceiptState::Working => "pending",
                ReceiptState::Review => "needs_review",
            },
            kind: r.holder.kind.as_str(),
            identifier: r.holder.identifier.masked(),
            self_issued: r.holder.identifier.expose()
                == crate::billing::receipts::SELF_ISSUE_NUMBER,
            amount: live.map_or(0, |l| l.amount),
            tax_free: live.map_or(0, |l| l.tax_free),
            vat: live.map_or(0, |l| l.vat),
            issue_number: live.map(|l| l.issue_number.clone()),
            url: live.and_then(|l| l.url.clone()),
            issued_at: live.map(|l| rfc3339(l.issued_at)),
            cancelled_at: r.cancelled_at.map(rfc3339),
            issues: r.issues,
            cancels: r.cancels,
            tries: r.tries,
            in_progress: r.unsure_since.is_some(),
            last_error: r.last_error.clone(),
            next_try_at: r.next_at.map(rfc3339),
        }
    }
}

impl From<&ChargeAttempt> for ChargeView {
    fn from(a: &ChargeAttempt) -> Self {
        Self {
            subscription_id: a.subscription_id.to_string(),
            merchant_uid: a.merchant_uid.clone(),
            period: a.period.to_string(),
            attempt: a.attempt,
            imp_uid: a.imp_uid.clone(),
            amount: a.amount,
            state: a.state.as_str().to_owned(),
            reason: a.fail_reason.clone(),
            decline_class: a.decline.map(|c| c.as_str()),
            refunded: a.refunded,
            paid_at: a.paid_at.map(rfc3339),
            receipt_url: a.receipt_url.clone(),
            tax: {
                let split = a.tax();
                TaxView {
                    supply: split.supply,
                    vat: split.vat,
                    tax_free: split.tax_free,
                    source: if a.tax_reported() { "pg" } else { "computed" },
                    refunded: split.refunded_part(a.refunded),
                }
            },
            cash_receipt: a.cash_receipt.as_ref().map(CashReceiptView::from),
            next_retry_at: a.retry_at.map(rfc3339),
            resolution: a.resolution.as_ref().map(|r| ResolutionView {
                resolved_as: r.state.as_str().to_owned(),
                note: r.note.clone(),
                by: r.actor.clone(),
                at: rfc3339(r.at),
            }),
            created_at: rfc3339(a.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActionView {
    pub at: String,
    /// The name the caller gave (`x-actor`), else the IAM principal.
    pub by: String,
    /// The IAM principal that signed the request, when `by` is a name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub action: String,
    pub detail: String,
}

/// A subscription as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: String,
    pub user_id: String,
    pub status: String,
    /// `action_required`: the hard decline class that stopped it.
    pub action_reason: Option<&'static str>,
    pub plan: PlanView,
    /// The catalogue's plan and version `plan` is a copy of, when it came
    /// from `POST /plans` (`prepare` with `plan_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_version: Option<u32>,
    /// A plan change that applies from the next period.
    pub pending_plan: Option<PlanView>,
    /// The sign-up date in Seoul: periods start on this day of the month.
    pub anchor: String,
    /// How often it bills: `month`, `year` or `months:N` (decision 75).
    pub interval: String,
    /// While paused: since when, and when it resumes (decision 76).
    pub pause: Option<PauseView>,
    /// The period charged next (`YYYYMM`).
    pub current_period: String,
    pub next_charge_at: Option<String>,
    pub paid_through: Option<String>,
    pub card: CardView,
    pub cancel_at_period_end: bool,
    pub cancel_reason: Option<String>,
    pub ended_at: Option<String>,
    /// The attempt being charged or settled now, if any.
    pub open_attempt: Option<ChargeView>,
    /// Its free trial, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialView>,
    /// Its newest price change (pending, or how it ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_change: Option<PriceChangeView>,
    /// Its coupon and the periods it covers (decision 78).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount: Option<DiscountView>,
    /// What the period charged next costs as things stand (a coupon, a
    /// share of a period, a consented change counted).
    pub next_amount: i64,
    pub created_at: String,
    pub version: u64,
    /// The newest manual actions (get only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<ActionView>>,
}

/// A subscription's trial as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrialView {
    pub days: u16,
    /// The conversion: the first charge, with a consent.
    pub ends_at: String,
    /// `signup` or `explicit`.
    pub conversion_consent: String,
    /// `cancel` or `extend_trial_once`.
    pub on_no_consent: String,
    pub extended: bool,
    pub consent: Option<ConsentView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConsentView {
    pub channel: String,
    pub reference: String,
    pub at: String,
    pub recorded_at: String,
}

fn trial_view(t: &Trial) -> TrialView {
    TrialView {
        days: t.terms.days,
        ends_at: rfc3339(t.ends_at),
        conversion_consent: t.terms.consent.as_str().to_owned(),
        on_no_consent: t.terms.on_no_consent.as_str().to_owned(),
        extended: t.extended,
        consent: t.consent.as_ref().map(consent_view),
    }
}

/// A coupon on a subscription, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiscountView {
    pub coupon_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_off: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_off: Option<i64>,
    pub duration: String,
    /// The first period it covers, and the first it does not (`null`:
    /// forever), `YYYYMM`.
    pub from_period: String,
    pub until_period: Option<String>,
    pub redeemed_at: String,
    /// Redeemed with the sign-up, its end shown then: the price after it
    /// needs no consent of its own.
    pub end_disclosed: bool,
    /// Whether it covers the period charged next.
    pub in_force: bool,
}

pub(super) fn discount_view(
    sub: &Subscription,
    d: &crate::billing::coupons::Discount,
) -> DiscountView {
    use crate::billing::coupons::Off;
    DiscountView {
        coupon_id: d.coupon.to_string(),
        percent_off: match d.off {
            Off::Percent(p) => Some(p),
            Off::Amount(_) => None,
        },
        amount_off: match d.off {
            Off::Amount(a) => Some(a),
            Off::Percent(_) => None,
        },
        duration: d.duration.label(),
        from_period: d.from.to_string(),
        until_period: d.until.as_ref().map(ToString::to_string),
        redeemed_at: rfc3339(d.redeemed_at),
        end_disclosed: d.end_disclosed,
        in_force: d.covers(&sub.current_period()),
    }
}

/// A pause in force, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PauseView {
    pub paused_at: String,
    pub resumes_at: Option<String>,
}

/// A subscription's price change as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PriceChangeView {
    pub plan: PlanView,
    pub plan_id: Option<String>,
    pub plan_version: Option<u32>,
    pub previous_amount: i64,
    /// The first period at the new price (`YYYYMM`).
    pub effective_period: String,
    /// When that period starts, while it is ahead.
    pub effective_at: Option<String>,
    /// `pending_consent`, `consented`, `declined`, `scheduled` (a decrease),
    /// `applied` or `not_consented`.
    pub state: &'static str,
    pub on_no_consent: &'static str,
    pub requested_at: String,
    /// When the consent request goes out (an increase), and whether it did.
    pub consent_requested_at: Option<String>,
    pub consent_request_sent: bool,
    pub consent: Option<ConsentView>,
    pub declined_at: Option<String>,
    pub closed_at: Option<String>,
    /// The coupon whose end this change is (decision 78): the plan stays,
    /// the discount ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_id: Option<String>,
}

fn consent_view(c: &crate::billing::trials::Consent) -> ConsentView {
    ConsentView {
        channel: c.channel.clone(),
        reference: c.reference.clone(),
        at: rfc3339(c.at),
        recorded_at: rfc3339(c.recorded_at),
    }
}

fn price_change_view(sub: &Subscription, c: &PriceChange) -> PriceChangeView {
    use crate::billing::price_changes::Outcome;
    let state = match c.closed {
        Some((Outcome::Applied, _)) => "applied",
        Some((Outcome::NotConsented, _)) => "not_consented",
        None if !c.is_increase() => "scheduled",
        None if c.consent.is_some() => "consented",
        None if c.declined_at.is_some() => "declined",
        None => "pending_consent",
    };
    PriceChangeView {
        plan: (&c.plan).into(),
        plan_id: c.plan_ref.as_ref().map(|p| p.id.to_string()),
        plan_version: c.plan_ref.as_ref().map(|p| p.version),
        previous_amount: c.from_amount,
        effective_period: c.effective.to_string(),
        effective_at: c
            .is_open()
            .then(|| sub.coming_period(&c.effective).map(|(_, at)| rfc3339(at)))
            .flatten(),
        state,
        on_no_consent: c.on_no_consent.as_str(),
        requested_at: rfc3339(c.requested_at),
        consent_requested_at: c.asked_at.or(c.asks_at).map(rfc3339),
        consent_request_sent: c.asked_at.is_some(),
        consent: c.consent.as_ref().map(consent_view),
        declined_at: c.declined_at.map(rfc3339),
        closed_at: c.closed.map(|(_, at)| rfc3339(at)),
        coupon_id: c.coupon.as_ref().map(ToString::to_string),
    }
}

pub(super) fn view(sub: &Subscription, current: Option<&ChargeAttempt>) -> SubscriptionView {
    SubscriptionView {
        id: sub.id.to_string(),
        user_id: sub.user_id.clone(),
        status: sub.status.as_str().to_owned(),
        action_reason: sub
            .action_reason
            .filter(|_| sub.status == SubscriptionStatus::ActionRequired)
            .map(|c| c.as_str()),
        plan: (&sub.plan).into(),
        plan_id: sub.plan_ref.as_ref().map(|p| p.id.to_string()),
        plan_version: sub.plan_ref.as_ref().map(|p| p.version),
        pending_plan: sub.pending_plan.as_ref().map(Into::into),
        anchor: sub.anchor.date_text(),
        interval: sub.anchor.interval.label(),
        pause: sub.pause.map(|p| PauseView {
            paused_at: rfc3339(p.since),
            resumes_at: p.resumes_at.map(rfc3339),
        }),
        current_period: sub.current_period().to_string(),
        next_charge_at: sub
            .status
            .is_chargeable()
            .then(|| rfc3339(sub.next_charge_at)),
        paid_through: sub.paid_through.as_ref().map(ToString::to_string),
        card: CardView {
            pg_provider: sub.key.pg_provider.clone(),
            card_name: sub.key.card_name.clone(),
            card_number: sub.key.card_number.clone(),
        },
        cancel_at_period_end: sub.cancel_at_period_end,
        cancel_reason: sub.cancel_reason.clone(),
        ended_at: sub.ended_at.map(rfc3339),
        open_attempt: current.filter(|a| a.state.is_open()).map(ChargeView::from),
        trial: sub.trial.as_ref().map(trial_view),
        price_change: sub.price_change.as_ref().map(|c| price_change_view(sub, c)),
        discount: sub.discount.as_ref().map(|d| discount_view(sub, d)),
        next_amount: sub.charge_due(),
        created_at: rfc3339(sub.created_at),
        version: sub.version,
        history: None,
    }
}
