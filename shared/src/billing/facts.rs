//! What the gateway's records prove, and what the subscription becomes.
//! Pure: the services fetch, these functions decide.

use chrono::{DateTime, Utc};

use super::declines::DeclineClass;
use super::dunning::{DunningPolicy, DunningStep};
use super::entities::{AttemptResult, AttemptState, ChargeAttempt, Subscription};
use super::ids::UidKey;
use super::state::{Event, IllegalTransition, SubscriptionStatus};
use super::tax::TaxSplit;

/// A payment as the gateway records it, in the engine's terms (the V1
/// adapter maps i'mport's `PaymentAnnotation` onto it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// The gateway's id of this payment (`imp_uid` in V1).
    pub imp_uid: String,
    /// Our id of the order (`merchant_uid`).
    pub merchant_uid: String,
    pub status: RecordStatus,
    /// Whole KRW.
    pub amount: i64,
    /// Total refunded so far (KRW).
    pub cancelled_amount: i64,
    pub currency: Option<String>,
    /// The billing key the payment was made with (`customer_uid` in V1), if
    /// the record names one.
    pub customer_uid: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub fail_reason: Option<String>,
    /// The PG's own code of a decline, where the gateway reports one apart
    /// from its message (V2 `failure.pgCode`); V1 puts it in `fail_reason`.
    pub pg_code: Option<String>,
    pub cancel_reason: Option<String>,
    /// The PG's receipt (the card slip) for the customer: V1 `receipt_url`,
    /// V2 `receiptUrl`.
    pub receipt_url: Option<String>,
    /// The tax-free part and the VAT as the PG reports them (V2
    /// `amount.taxFree`, `amount.vat`); V1 reports neither.
    pub tax_free: Option<i64>,
    pub vat: Option<i64>,
    /// Paid from an account (V1 `pay_method` `trans` or `vbank`; V2
    /// `method` a transfer, a virtual account, or an easy pay's transfer or
    /// charged balance): a cash receipt is due (decision 74).
    pub cash: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    Ready,
    Paid,
    Failed,
    Cancelled,
    /// A status this code does not know; never money received.
    Other,
}

impl PaymentRecord {
    /// Money was taken under this record, whether or not it was refunded
    /// since: paid, or cancelled after a payment (V1 keeps `paid_at`; a V2
    /// `CANCELLED` record may leave `paidAt` out, but its cancelled amount
    /// says money was there to cancel).
    pub fn took_money(&self) -> bool {
        match self.status {
            RecordStatus::Paid => true,
            RecordStatus::Cancelled => self.paid_at.is_some() || self.cancelled_amount > 0,
            _ => false,
        }
    }

    /// Money taken and not refunded.
    pub fn kept(&self) -> i64 {
        if self.took_money() {
            (self.amount - self.cancelled_amount).max(0)
        } else {
            0
        }
    }
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Other => "other",
        }
    }
}

/// A verified fact about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Paid {
        imp_uid: String,
        paid_at: DateTime<Utc>,
        /// The PG's receipt for the customer, where it gives one.
        receipt_url: Option<String>,
        /// The VAT split as the PG reported it (decision 73).
        tax: Option<TaxSplit>,
        /// Paid from an account: a cash receipt is due (decision 74).
        cash: bool,
    },
    Declined {
        imp_uid: Option<String>,
        reason: String,
        /// What the decline says about the card (decision 72).
        class: DeclineClass,
    },
    /// The gateway refused without attempting; `key_gone` when the billing
    /// key no longer exists.
    Rejected { reason: String, key_gone: bool },
}

/// A record found under our `merchant_uid` that is not the charge we sent:
/// another amount, another billing key, another currency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "payment {imp_uid} for {merchant_uid} does not match the charge (amount {amount} vs {expected}, billing key matches: {key_matches}, currency {currency:?}); refund it and settle by hand"
)]
pub struct Mismatch {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub amount: i64,
    pub expected: i64,
    pub key_matches: bool,
    pub currency: Option<String>,
}

impl Fact {
    /// What the record `p` proves about `attempt`, after checking that it
    /// really is this charge: same `merchant_uid`, amount, currency and (when
    /// the record names one) billing key. `Err` when it is not: such a record
    /// never counts as money for the period and never lets a new attempt
    /// start; the attempt waits for a person. `Ok(None)`: a status nothing can
    /// be settled on (`ready`, unknown). `refs` makes the key references
    /// the attempt's key is compared by.
    pub fn from_record(
        p: &PaymentRecord,
        attempt: &ChargeAttempt,
        refs: &UidKey,
        now: DateTime<Utc>,
    ) -> Result<Option<Self>, Mismatch> {
        let key_matches = p
            .customer_uid
            .as_deref()
            .is_none_or(|c| attempt.charged(c, refs));
        let krw = p.currency.as_deref().is_none_or(|c| c == "KRW");
        if p.merchant_uid != attempt.merchant_uid
            || p.amount != attempt.amount
            || !key_matches
            || !krw
        {
            return Err(Mismatch {
                imp_uid: p.imp_uid.clone(),
                merchant_uid: p.merchant_uid.clone(),
                amount: p.amount,
                expected: attempt.amount,
                key_matches,
                currency: p.currency.clone(),
            });
        }
        let paid = || Self::Paid {
            imp_uid: p.imp_uid.clone(),
            paid_at: p.paid_at.unwrap_or(now),
            receipt_url: p.receipt_url.clone(),
            tax: TaxSplit::reported(p.amount, p.tax_free, p.vat),
            cash: p.cash,
        };
        if p.took_money() {
            // Refunded later is still money taken for the period; the refund is recorded apart.
            return Ok(Some(paid()));
        }
        Ok(match p.status {
            RecordStatus::Failed => Some(Self::Declined {
                imp_uid: Some(p.imp_uid.clone()),
                reason: p.fail_reason.clone().unwrap_or_else(|| "declined".into()),
                class: DeclineClass::classify(p.pg_code.as_deref(), p.fail_reason.as_deref()),
            }),
            // Cancelled before any money moved: nothing about the card.
            RecordStatus::Cancelled => Some(Self::Declined {
                imp_uid: Some(p.imp_uid.clone()),
                reason: p
                    .cancel_reason
                    .clone()
                    .unwrap_or_else(|| "cancelled before payment".into()),
                class: DeclineClass::Unknown,
            }),
            RecordStatus::Paid | RecordStatus::Ready | RecordStatus::Other => None,
        })
    }

    pub fn is_paid(&self) -> bool {
        matches!(self, Self::Paid { .. })
    }

    /// The attempt's final record.
    pub fn result(&self) -> AttemptResult {
        match self {
            Self::Paid {
                imp_uid,
                paid_at,
                receipt_url,
                tax,
                cash: _,
            } => AttemptResult {
                state: AttemptState::Paid,
                amount: None,
                imp_uid: Some(imp_uid.clone()),
                paid_at: Some(*paid_at),
                fail_reason: None,
                decline: None,
                receipt_url: receipt_url.clone(),
                tax: *tax,
                cash_receipt: None,
                retry_at: None,
            },
            Self::Declined {
                imp_uid,
                reason,
                class,
            } => AttemptResult {
                state: AttemptState::Failed,
                amount: None,
                imp_uid: imp_uid.clone(),
                paid_at: None,
                fail_reason: Some(reason.clone()),
                decline: Some(*class),
                receipt_url: None,
                tax: None,
                cash_receipt: None,
                retry_at: None,
            },
            Self::Rejected { reason, .. } => AttemptResult {
                state: AttemptState::Rejected,
                amount: None,
                imp_uid: None,
                paid_at: None,
                fail_reason: Some(reason.clone()),
                decline: None,
                receipt_url: None,
                tax: None,
                cash_receipt: None,
                retry_at: None,
            },
        }
    }
}

/// The subscription after `fact` about its current attempt.
///
/// A fact is always recorded, even when the status cannot change any more
/// (e.g. cancelled while the charge was in flight): money taken is never
/// dropped; only the status stays (`Err` says so, with the next state).
pub fn next_state(
    sub: &Subscription,
    fact: &Fact,
    dunning: &DunningPolicy,
    now: DateTime<Utc>,
) -> (Subscription, Option<IllegalTransition>) {
    let mut next = sub.next_version(now);
    let event = match fact {
        Fact::Paid { .. } => {
            next.paid_through = Some(sub.current_period());
            if next.reanchor_on_payment {
                // Access came back with the outstanding period charged
                // first: the next period starts a period after this payment.
                next.reanchor_on_payment = false;
                next.anchor = next.anchor.moved_to(now);
                next.period_index = 1;
            } else {
                next.period_index += 1;
            }
            next.attempt = 1;
            next.next_charge_at = next.anchor.period_start(next.period_index);
            next.partial = None;
            next.paid_on = Some(now.with_timezone(&super::BILLING_TZ).date_naive());
            // A plan change waiting for the next period takes effect now.
            if let Some(plan) = next.pending_plan.take() {
                next.plan = plan;
                next.plan_ref = None;
            }
            Event::Paid
        }
        Fact::Rejected { key_gone: true, .. } => Event::KeyGone,
        // A dead card is not retried: only a new one can pay (decision 72).
        Fact::Declined { class, .. } if class.is_hard() => Event::DeclinedHard,
        Fact::Declined { .. }
        | Fact::Rejected {
            key_gone: false, ..
        } => match dunning.after_decline(sub.period_due(), sub.attempt) {
            DunningStep::Retry { attempt, at } => {
                next.attempt = attempt;
                next.next_charge_at = at;
                Event::DeclinedWillRetry
            }
            DunningStep::GiveUp { status } => Event::DeclinedFinal(status),
        },
    };
    match sub.status.apply(event) {
        Ok(status) => {
            if status == SubscriptionStatus::Cancelled && sub.status != status {
                next.ended_at = Some(now);
            }
            if let (SubscriptionStatus::ActionRequired, Fact::Declined { class, .. }) =
                (status, fact)
            {
                next.action_reason = Some(*class);
            }
            next.status = status;
            (next, None)
        }
        Err(e) => (next, Some(e)),
    }
}

/// [`next_state`] for a fact about `attempt`, the subscription's current
/// attempt. A decline or a refusal of a card the subscription no longer uses
/// (replaced while the attempt was out) says nothing about the new card: the
/// period is charged again at once with the next attempt, its status kept,
/// and a gone old key is not a missing key.
pub fn next_state_for(
    sub: &Subscription,
    attempt: &ChargeAttempt,
    fact: &Fact,
    dunning: &DunningPolicy,
    refs: &UidKey,
    now: DateTime<Utc>,
) -> (Subscription, Option<IllegalTransition>) {
    if !fact.is_paid() && !attempt.charged(&sub.customer_uid, refs) {
        let mut next = sub.next_version(now);
        next.attempt = sub.attempt + 1;
        next.next_charge_at = now;
        return (next, None);
    }
    next_state(sub, fact, dunning, now)
}

/// The subscription once one of its attempts is flagged for a person:
/// nothing more is charged until the attempt is resolved.
pub fn flagged_state(sub: &Subscription, now: DateTime<Utc>) -> Subscription {
    let mut next = sub.next_version(now);
    if let Ok(status) = sub.status.apply(Event::FlagReview) {
        if sub.status != status {
            next.review_from = Some(sub.status);
        }
        next.status = status;
    }
    next
}

/// What the payment that issued a billing key means for the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuance {
    /// A key-only issuance (amount 0): nothing was paid.
    KeyOnly,
    /// The window took the plan's amount as well (a common pattern in
    /// i'mport's samples): that payment is the first period's.
    FirstPeriodPaid {
        imp_uid: String,
        paid_at: DateTime<Utc>,
    },
    /// Any other amount: a person refunds or accepts it; it is never
    /// followed by a second charge.
    Review { reason: String },
    /// The window failed or was cancelled: no subscription.
    Failed,
}

/// Reads the issuance payment `p` of a sign-up to `plan_amount` KRW.
pub fn issuance(p: &PaymentRecord, plan_amount: i64, now: DateTime<Utc>) -> Issuance {
    let krw = p.currency.as_deref().is_none_or(|c| c == "KRW");
    match p.status {
        RecordStatus::Failed | RecordStatus::Cancelled => Issuance::Failed,
        _ if p.amount == 0 => Issuance::KeyOnly,
        RecordStatus::Paid if p.amount == plan_amount && krw => Issuance::FirstPeriodPaid {
            imp_uid: p.imp_uid.clone(),
            paid_at: p.paid_at.unwrap_or(now),
        },
        status => Issuance::Review {
            reason: format!(
                "issuance payment {} is {} for {} {} while the plan is {} KRW; refund it or accept it",
                p.imp_uid,
                status.as_str(),
                p.amount,
                p.currency.as_deref().unwrap_or("KRW"),
                plan_amount
            ),
        },
    }
}

/// The answer to "what happened under this `merchant_uid`?" (a lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// The gateway answered that it has none.
    Missing,
    /// The lookup failed; nothing can be concluded.
    Failed(String),
}

/// What the engine does with an attempt after a lookup of its `merchant_uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Record this fact.
    Settle(Fact),
    /// The gateway has no payment under the uid. Whether that means
    /// "never arrived" depends on how long ago it was sent.
    NothingThere,
    /// Nothing can be concluded now; leave the attempt open.
    Unclear(String),
    /// A person must look (a record that is not our charge, or one in a
    /// status nothing can be settled on).
    Review(String),
}

/// Reads a lookup of `attempt`'s `merchant_uid`. A record in a status
/// nothing settles on (`ready`, V2 `PAY_PENDING`) is still in progress at
/// the gateway: the attempt stays open and is looked at again (a payment
/// may stay pending for hours; one open for days goes to a person, see
/// [`ESCALATE_AFTER`](super::ESCALATE_AFTER)).
pub fn verdict(
    lookup: &Lookup<PaymentRecord>,
    attempt: &ChargeAttempt,
    refs: &UidKey,
    now: DateTime<Utc>,
) -> Verdict {
    match lookup {
        Lookup::Found(p) => match Fact::from_record(p, attempt, refs, now) {
            Ok(Some(fact)) => Verdict::Settle(fact),
            Ok(None) => Verdict::Unclear(format!(
                "payment {} is {}: still in progress at the gateway",
                p.imp_uid,
                p.status.as_str()
            )),
            Err(mismatch) => Verdict::Review(mismatch.to_string()),
        },
        Lookup::Missing => Verdict::NothingThere,
        Lookup::Failed(e) => Verdict::Unclear(format!("lookup failed: {e}")),
    }
}

/// A refusal (`code != 0`) for which the gateway has no payment under the
/// uid: the billing-key lookup tells a gone key from any other refusal.
/// `None` while the key lookup is unclear: the attempt stays open.
pub fn refusal(message: &str, key: &Lookup<()>) -> Option<Fact> {
    match key {
        Lookup::Found(()) => Some(Fact::Rejected {
            reason: message.to_owned(),
            key_gone: false,
        }),
        Lookup::Missing => Some(Fact::Rejected {
            reason: message.to_owned(),
            key_gone: true,
        }),
        Lookup::Failed(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Anchor, SubscriptionStatus, retry_of};
    use crate::testing::{attempt, record, refs, subscription};

    fn sub(anchor: Anchor) -> Subscription {
        subscription("abcdefghij01", anchor)
    }

    fn attempt_of(s: &Subscription) -> ChargeAttempt {
        attempt(s, AttemptState::Unknown)
    }

    fn paid_at() -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(5, 0)
    }

    #[test]
    fn paid_moves_to_the_next_anchor_not_from_the_charge_time() {
        let s = sub(Anchor::new(2027, 1, 31).unwrap());
        let paid = Fact::Paid {
            imp_uid: "imps_1".into(),
            paid_at: s.next_charge_at,
            receipt_url: None,
            tax: None,
            cash: false,
        };
        let late = s.next_charge_at + chrono::Duration::days(3);
        let (n1, _) = next_state(&s, &paid, &DunningPolicy::default(), late);
        assert_eq!(n1.period_index, 1);
        assert_eq!(
            n1.next_charge_at,
            Anchor::new(2027, 1, 31).unwrap().period_start(1)
        );
        assert_eq!(n1.current_period().as_str(), "202702");
        assert_eq!(n1.paid_through.as_ref().unwrap().as_str(), "202701");
        assert_eq!(n1.version, 2);
        let (n2, _) = next_state(&n1, &paid, &DunningPolicy::default(), late);
        assert_eq!(
            n2.anchor.period_date(n2.period_index).to_string(),
            "2027-03-31"
        );
    }

    #[test]
    fn an_outstanding_period_collected_after_no_access_re_anchors_on_its_payment() {
        let mut s = sub(Anchor::new(2027, 1, 10).unwrap());
        s.reanchor_on_payment = true;
        let paid_on =
            Anchor::new(2027, 4, 20).unwrap().period_start(0) + chrono::Duration::hours(11);
        let fact = Fact::Paid {
            imp_uid: "imps_1".into(),
            paid_at: paid_on,
            receipt_url: None,
            tax: None,
            cash: false,
        };
        let (n, _) = next_state(&s, &fact, &DunningPolicy::default(), paid_on);
        assert_eq!(n.paid_through.as_ref().unwrap().as_str(), "202701");
        assert!(!n.reanchor_on_payment);
        assert_eq!(
            (n.anchor, n.period_index),
            (Anchor::new(2027, 4, 20).unwrap(), 1)
        );
        assert_eq!(
            n.anchor.period_date(n.period_index).to_string(),
            "2027-05-20"
        );
        assert_eq!(n.current_period().as_str(), "202705");
    }

    #[test]
    fn declines_walk_the_dunning_schedule_then_suspend() {
        let policy = DunningPolicy::default();
        let mut s = sub(Anchor::new(2026, 12, 1).unwrap());
        let due = s.period_due();
        let declined = Fact::Declined {
            imp_uid: Some("imps_x".into()),
            reason: "잔액부족".into(),
            class: DeclineClass::InsufficientFunds,
        };
        let mut seen = Vec::new();
        for _ in 0..4 {
            s = next_state(&s, &declined, &policy, due).0;
            seen.push((s.status, s.attempt, (s.next_charge_at - due).num_days()));
        }
        assert_eq!(
            seen,
            vec![
                (SubscriptionStatus::PastDue, 2, 1),
                (SubscriptionStatus::PastDue, 3, 3),
                (SubscriptionStatus::PastDue, 4, 7),
                (SubscriptionStatus::Suspended, 4, 7),
            ]
        );
        assert!(!s.status.is_chargeable());
    }

    /// A dead card is not retried: the first hard decline stops the
    /// subscription, whichever attempt of the period it was (decision 72).
    #[test]
    fn a_hard_decline_stops_at_once_and_asks_for_a_new_card() {
        let policy = DunningPolicy::default();
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let due = s.period_due();
        let mut p = record(
            &attempt_of(&s),
            RecordStatus::Failed,
            s.plan.amount,
            None,
            &s.customer_uid,
        );
        p.fail_reason = Some("[8301] 분실카드입니다".into());
        let fact = Fact::from_record(&p, &attempt_of(&s), &refs(), due)
            .unwrap()
            .unwrap();
        assert_eq!(
            fact,
            Fact::Declined {
                imp_uid: Some("imps_1".into()),
                reason: "[8301] 분실카드입니다".into(),
                class: DeclineClass::CardLostOrStolen,
            }
        );
        let (stopped, _) = next_state(&s, &fact, &policy, due);
        assert_eq!(stopped.status, SubscriptionStatus::ActionRequired);
        assert_eq!(stopped.action_reason, Some(DeclineClass::CardLostOrStolen));
        assert_eq!(stopped.attempt, s.attempt, "no retry is scheduled");
        assert!(!stopped.status.is_chargeable());
        assert_eq!(retry_of(&attempt_of(&s), &stopped), None);
        // A soft decline on the same card walks the schedule.
        p.fail_reason = Some("한도초과".into());
        let soft = Fact::from_record(&p, &attempt_of(&s), &refs(), due)
            .unwrap()
            .unwrap();
        let (retried, _) = next_state(&s, &soft, &policy, due);
        assert_eq!(
            (retried.status, retried.attempt),
            (SubscriptionStatus::PastDue, 2)
        );
        // V2 reports the PG's code apart from its message.
        p.fail_reason = Some("승인 거절".into());
        p.pg_code = Some("잔액부족".into());
        let coded = Fact::from_record(&p, &attempt_of(&s), &refs(), due)
            .unwrap()
            .unwrap();
        assert!(matches!(
            coded,
            Fact::Declined {
                class: DeclineClass::InsufficientFunds,
                ..
            }
        ));
    }

    #[test]
    fn key_gone_stops_charging_and_a_cancelled_subscription_still_records_money() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let (gone, _) = next_state(
            &s,
            &Fact::Rejected {
                reason: "등록되지 않은 구매자입니다.".into(),
                key_gone: true,
            },
            &DunningPolicy::default(),
            s.next_charge_at,
        );
        assert_eq!(gone.status, SubscriptionStatus::KeyMissing);
        let cancelled = Subscription {
            status: SubscriptionStatus::Cancelled,
            ..s
        };
        let (paid, kept) = next_state(
            &cancelled,
            &Fact::Paid {
                imp_uid: "i".into(),
                paid_at: cancelled.next_charge_at,
                receipt_url: None,
                tax: None,
                cash: false,
            },
            &DunningPolicy::default(),
            cancelled.next_charge_at,
        );
        assert!(kept.is_some());
        assert_eq!(paid.status, SubscriptionStatus::Cancelled);
        assert_eq!(paid.paid_through.unwrap().as_str(), "202612");
    }

    #[test]
    fn records_settle_only_when_they_are_our_charge() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let a = attempt_of(&s);
        let now = s.created_at;
        let check = |r: PaymentRecord| Fact::from_record(&r, &a, &refs(), now);
        assert!(matches!(
            check(record(&a, RecordStatus::Paid, 9900, paid_at(), "cu")),
            Ok(Some(Fact::Paid { .. }))
        ));
        // Refunded after payment: still money taken for the period.
        assert!(matches!(
            check(record(&a, RecordStatus::Cancelled, 9900, paid_at(), "cu")),
            Ok(Some(Fact::Paid { .. }))
        ));
        // Cancelled before any payment: nothing was taken.
        assert!(matches!(
            check(record(&a, RecordStatus::Cancelled, 9900, None, "cu")),
            Ok(Some(Fact::Declined { .. }))
        ));
        assert!(matches!(
            check(record(&a, RecordStatus::Ready, 9900, None, "cu")),
            Ok(None)
        ));
        // Another amount or another billing key: never ours.
        assert!(check(record(&a, RecordStatus::Paid, 100, paid_at(), "cu")).is_err());
        assert!(check(record(&a, RecordStatus::Paid, 9900, paid_at(), "cu_other")).is_err());
        // An older item kept the key itself rather than its reference.
        let legacy = ChargeAttempt {
            key_ref: "cu".into(),
            ..a.clone()
        };
        assert!(matches!(
            Fact::from_record(
                &record(&a, RecordStatus::Paid, 9900, paid_at(), "cu"),
                &legacy,
                &refs(),
                now
            ),
            Ok(Some(Fact::Paid { .. }))
        ));
    }

    /// Defect C1: V2 may leave `paidAt` out of a `CANCELLED` payment. It
    /// was paid, then refunded: read as a decline, the period would be
    /// charged again under a new merchant uid after the merchant refunded it.
    #[test]
    fn a_cancelled_payment_without_paid_at_was_money_taken_not_a_decline() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let a = attempt_of(&s);
        let cancelled = PaymentRecord {
            cancelled_amount: 9900,
            ..record(&a, RecordStatus::Cancelled, 9900, None, "cu")
        };
        assert!(cancelled.took_money());
        assert_eq!(cancelled.kept(), 0);
        assert!(matches!(
            Fact::from_record(&cancelled, &a, &refs(), s.created_at),
            Ok(Some(Fact::Paid { .. }))
        ));
    }

    #[test]
    fn verdicts_never_settle_on_doubt() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let a = attempt_of(&s);
        let now = s.created_at;
        assert_eq!(
            verdict(&Lookup::Missing, &a, &refs(), now),
            Verdict::NothingThere
        );
        assert!(matches!(
            verdict(&Lookup::Failed("503".into()), &a, &refs(), now),
            Verdict::Unclear(_)
        ));
        assert!(matches!(
            verdict(
                &Lookup::Found(record(&a, RecordStatus::Paid, 100, paid_at(), "cu")),
                &a,
                &refs(),
                now,
            ),
            Verdict::Review(_)
        ));
        assert_eq!(refusal("no", &Lookup::Failed("x".into())), None);
        assert_eq!(
            refusal("no", &Lookup::Missing),
            Some(Fact::Rejected {
                reason: "no".into(),
                key_gone: true
            })
        );
    }

    #[test]
    fn a_refusal_of_a_replaced_card_retries_the_new_card_at_once() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let a = attempt_of(&s);
        let now = s.next_charge_at;
        let policy = DunningPolicy::default();
        let gone = Fact::Rejected {
            reason: "no key".into(),
            key_gone: true,
        };
        // The key the attempt used is still the subscription's: key missing.
        let (same, _) = next_state_for(&s, &a, &gone, &policy, &refs(), now);
        assert_eq!(same.status, SubscriptionStatus::KeyMissing);
        // The card was replaced meanwhile: the new one is charged now.
        let replaced = Subscription {
            customer_uid: "cu_new".into(),
            ..s.clone()
        };
        let (next, kept) = next_state_for(&replaced, &a, &gone, &policy, &refs(), now);
        assert_eq!(kept, None);
        assert_eq!(next.status, replaced.status);
        assert_eq!(next.attempt, s.attempt + 1);
        assert_eq!(next.next_charge_at, now);
        // Money is money, whatever the key.
        let paid = Fact::Paid {
            imp_uid: "imp_1".into(),
            paid_at: now,
            receipt_url: None,
            tax: None,
            cash: false,
        };
        let (p, _) = next_state_for(&replaced, &a, &paid, &policy, &refs(), now);
        assert_eq!(p.paid_through, Some(s.current_period()));
    }

    /// Defect D2 (and the pending payments of I9): a record still in
    /// progress at the gateway never goes to a person on the strength of
    /// the time since a send: it stays open and is looked at again.
    #[test]
    fn a_pending_record_keeps_its_attempt_open_however_long_since_the_send() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let sent = s.created_at;
        let a = ChargeAttempt {
            sent_at: Some(sent),
            ..attempt_of(&s)
        };
        let ready = Lookup::Found(record(&a, RecordStatus::Ready, 9900, None, "cu"));
        for after in [chrono::Duration::minutes(2), chrono::Duration::hours(30)] {
            assert!(matches!(
                verdict(&ready, &a, &refs(), sent + after),
                Verdict::Unclear(_)
            ));
        }
    }

    #[test]
    fn an_issuance_of_the_plan_amount_pays_the_first_period_and_any_other_waits_for_a_person() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let a = attempt_of(&s);
        let now = s.created_at;
        let r = |status, amount| record(&a, status, amount, paid_at(), "cu");
        assert_eq!(
            issuance(&r(RecordStatus::Paid, 0), 9900, now),
            Issuance::KeyOnly
        );
        assert!(matches!(
            issuance(&r(RecordStatus::Paid, 9900), 9900, now),
            Issuance::FirstPeriodPaid { .. }
        ));
        assert!(matches!(
            issuance(&r(RecordStatus::Paid, 100), 9900, now),
            Issuance::Review { .. }
        ));
        assert!(matches!(
            issuance(&r(RecordStatus::Ready, 9900), 9900, now),
            Issuance::Review { .. }
        ));
        assert_eq!(
            issuance(&r(RecordStatus::Failed, 9900), 9900, now),
            Issuance::Failed
        );
    }

    #[test]
    fn flagging_stops_charging() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let f = flagged_state(&s, s.created_at);
        assert_eq!(f.status, SubscriptionStatus::NeedsReview);
        assert!(!f.status.is_chargeable());
        assert_eq!(f.version, 2);
    }
}
