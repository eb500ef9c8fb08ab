//! What a merchant's or an operator's change does to a subscription. Pure:
//! the management service reads, calls these, and writes the result with
//! the subscription's version as the guard.

use chrono::{DateTime, Utc};

use super::entities::{AttemptState, ChargeAttempt, KeyInfo, Plan, Subscription};
use super::facts::{PaymentRecord, RecordStatus};
use super::state::{Event, SubscriptionStatus};

/// A change the subscription's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAllowed(pub String);

fn not_allowed<T>(why: impl Into<String>) -> Result<T, NotAllowed> {
    Err(NotAllowed(why.into()))
}

/// When a cancellation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAt {
    /// Stop all further charges now.
    Now,
    /// Keep access until `paid_through`; end without a charge when the next
    /// period would begin.
    PeriodEnd,
}

/// The subscription after a cancellation.
pub fn cancelled(
    sub: &Subscription,
    at: CancelAt,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Subscription, NotAllowed> {
    if sub.status == SubscriptionStatus::Cancelled {
        return not_allowed("the subscription has ended already");
    }
    let mut next = sub.next_version(now);
    next.cancel_reason = Some(reason.to_owned());
    match at {
        CancelAt::PeriodEnd => next.cancel_at_period_end = true,
        CancelAt::Now => {
            next.status = sub
                .status
                .apply(Event::Cancel)
                .map_err(|e| NotAllowed(e.to_string()))?;
            next.ended_at = Some(now);
            next.cancel_at_period_end = false;
        }
    }
    Ok(next)
}

/// What a resume does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// A pending period-end cancellation was undone.
    CancelUndone(Subscription),
    /// A suspended subscription: its outstanding period is charged again now
    /// (a fresh attempt); success reactivates it.
    ChargeNow(Subscription),
}

pub fn resumed(sub: &Subscription, now: DateTime<Utc>) -> Result<Resumed, NotAllowed> {
    let mut next = sub.next_version(now);
    if sub.status == SubscriptionStatus::Suspended {
        next.status = sub
            .status
            .apply(Event::Retry)
            .map_err(|e| NotAllowed(e.to_string()))?;
        next.attempt = sub.attempt + 1;
        next.next_charge_at = now;
        next.cancel_at_period_end = false;
        return Ok(Resumed::ChargeNow(next));
    }
    if sub.cancel_at_period_end && sub.status != SubscriptionStatus::Cancelled {
        next.cancel_at_period_end = false;
        next.cancel_reason = None;
        return Ok(Resumed::CancelUndone(next));
    }
    not_allowed(format!(
        "nothing to resume: the subscription is {} without a pending cancellation",
        sub.status.as_str()
    ))
}

/// The subscription after a plan change. The new price applies from the
/// next period: at once when the period to charge next has no attempt yet,
/// otherwise once that period is paid (an attempt already sent keeps its
/// amount; no proration).
pub fn plan_changed(
    sub: &Subscription,
    plan: Plan,
    current_period_started: bool,
    now: DateTime<Utc>,
) -> Result<Subscription, NotAllowed> {
    if sub.status == SubscriptionStatus::Cancelled {
        return not_allowed("the subscription has ended");
    }
    let mut next = sub.next_version(now);
    if current_period_started {
        // Asking for the current plan again withdraws a pending change.
        next.pending_plan = (plan != sub.plan).then_some(plan);
    } else {
        next.plan = plan;
        next.pending_plan = None;
    }
    Ok(next)
}

/// The subscription once a new billing key replaced its old one. A
/// subscription behind on payment (declined, suspended, key lost) is charged
/// again at once, with a fresh attempt when its current one was settled.
/// Returns whether to charge now.
pub fn key_replaced(
    sub: &Subscription,
    customer_uid: &str,
    key: KeyInfo,
    current_attempt: Option<&ChargeAttempt>,
    now: DateTime<Utc>,
) -> Result<(Subscription, bool), NotAllowed> {
    use SubscriptionStatus as S;
    if matches!(sub.status, S::Cancelled | S::Pending) {
        return not_allowed(format!(
            "a {} subscription takes no new card",
            sub.status.as_str()
        ));
    }
    let mut next = sub.next_version(now);
    next.customer_uid = customer_uid.to_owned();
    next.key = key;
    let behind = matches!(sub.status, S::PastDue | S::Suspended | S::KeyMissing);
    if behind {
        next.status = sub
            .status
            .apply(Event::Retry)
            .map_err(|e| NotAllowed(e.to_string()))?;
        if current_attempt.is_some_and(|a| !a.state.is_open()) {
            next.attempt = sub.attempt + 1;
        }
        next.next_charge_at = now;
    }
    Ok((next, behind))
}

/// What i'mport's record of a flagged attempt allows a person to decide.
pub fn check_resolution(
    attempt: &ChargeAttempt,
    record: Option<&PaymentRecord>,
    as_paid: bool,
) -> Result<(), NotAllowed> {
    if attempt.state != AttemptState::NeedsReview {
        return not_allowed(format!(
            "the attempt is {}, not waiting for review",
            attempt.state.as_str()
        ));
    }
    let money_kept = record.is_some_and(|p| {
        matches!(p.status, RecordStatus::Paid | RecordStatus::Cancelled)
            && p.paid_at.is_some()
            && p.cancelled_amount < p.amount
    });
    match (as_paid, money_kept) {
        (true, false) => not_allowed(
            "i'mport shows no money kept under this merchant_uid: it cannot be resolved as paid",
        ),
        (false, true) => not_allowed(
            "i'mport shows money kept under this merchant_uid: refund it first (POST /charges/{merchant_uid}/refund), or resolve it as paid",
        ),
        _ => Ok(()),
    }
}

/// The subscription once a person resolved one of its attempts.
///
/// - paid: the attempt's period counts as paid; if it is the period to charge
///   next (whichever attempt of it this is: a late payment on attempt 1 while
///   attempt 2 is current pays the period all the same), the subscription
///   moves to the one after;
/// - not paid: the subscription returns to where it was before the review;
///   if the attempt is its current one, the period is charged again now with
///   a fresh attempt.
pub fn resolved(
    sub: &Subscription,
    attempt: &ChargeAttempt,
    as_paid: bool,
    now: DateTime<Utc>,
) -> Result<Subscription, NotAllowed> {
    let mut next = sub.next_version(now);
    let current = sub.is_current(attempt);
    let event = if as_paid {
        if attempt.period == sub.current_period() {
            next.paid_through = Some(sub.current_period());
            next.period_index += 1;
            next.attempt = 1;
            next.next_charge_at = sub.anchor.period_start(next.period_index);
            if let Some(plan) = next.pending_plan.take() {
                next.plan = plan;
            }
        }
        Event::ResolvedPaid
    } else {
        if current {
            next.attempt = sub.attempt + 1;
            next.next_charge_at = now;
        }
        Event::ResolvedUnpaid(sub.review_from.unwrap_or(SubscriptionStatus::Active))
    };
    if sub.status == SubscriptionStatus::NeedsReview {
        next.status = sub
            .status
            .apply(event)
            .map_err(|e| NotAllowed(e.to_string()))?;
        next.review_from = None;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Anchor, SubscriptionId, UidKey};

    fn sub() -> Subscription {
        let anchor = Anchor::new(2026, 12, 1).unwrap();
        let t = anchor.period_start(0);
        Subscription {
            id: SubscriptionId::parse("abcdefghij01").unwrap(),
            user_id: "u".into(),
            customer_uid: "cu".into(),
            pg: "chai".into(),
            plan: Plan {
                amount: 9900,
                name: "p".into(),
            },
            buyer: Default::default(),
            status: SubscriptionStatus::Active,
            anchor,
            period_index: 1,
            attempt: 1,
            next_charge_at: anchor.period_start(1),
            paid_through: Some(anchor.period_id(0)),
            key: KeyInfo {
                pg_provider: "chai".into(),
                pg_id: None,
                card_name: None,
                card_number: None,
                inserted_at: t,
            },
            version: 3,
            created_at: t,
            updated_at: t,
            cancel_at_period_end: false,
            pending_plan: None,
            ended_at: None,
            cancel_reason: None,
            review_from: None,
        }
    }

    fn attempt(s: &Subscription, state: AttemptState) -> ChargeAttempt {
        let period = s.current_period();
        ChargeAttempt {
            subscription_id: s.id.clone(),
            merchant_uid: UidKey::derived_from(b"k").charge_uid(&s.id, &period, s.attempt),
            customer_uid: s.customer_uid.clone(),
            period,
            attempt: s.attempt,
            amount: 9900,
            state,
            claim_token: None,
            lease_until: None,
            sent_at: None,
            imp_uid: Some("imps_1".into()),
            paid_at: None,
            fail_reason: None,
            refunded: 0,
            resolution: None,
            retry_at: None,
            created_at: s.created_at,
            updated_at: s.created_at,
        }
    }

    #[test]
    fn cancel_now_ends_and_period_end_keeps_access() {
        let s = sub();
        let now = s.created_at;
        let ended = cancelled(&s, CancelAt::Now, "moved away", now).unwrap();
        assert_eq!(ended.status, SubscriptionStatus::Cancelled);
        assert!(!ended.status.is_chargeable());
        assert!(cancelled(&ended, CancelAt::Now, "again", now).is_err());
        let later = cancelled(&s, CancelAt::PeriodEnd, "too expensive", now).unwrap();
        assert_eq!(later.status, SubscriptionStatus::Active);
        assert!(later.cancel_at_period_end);
        assert!(
            matches!(resumed(&later, now), Ok(Resumed::CancelUndone(r)) if !r.cancel_at_period_end)
        );
        assert!(resumed(&s, now).is_err());
    }

    #[test]
    fn a_suspended_subscription_resumes_with_a_fresh_attempt_due_now() {
        let mut s = sub();
        s.status = SubscriptionStatus::Suspended;
        s.attempt = 4;
        let now = s.created_at + chrono::Duration::days(40);
        let Ok(Resumed::ChargeNow(r)) = resumed(&s, now) else {
            panic!()
        };
        assert_eq!(
            (r.status, r.attempt, r.next_charge_at),
            (SubscriptionStatus::PastDue, 5, now)
        );
        assert!(r.is_due(now));
    }

    #[test]
    fn a_new_price_waits_for_the_next_period_once_this_one_has_an_attempt() {
        let s = sub();
        let plan = Plan {
            amount: 19_900,
            name: "pro".into(),
        };
        let now = s.created_at;
        let at_once = plan_changed(&s, plan.clone(), false, now).unwrap();
        assert_eq!(at_once.plan.amount, 19_900);
        let later = plan_changed(&s, plan, true, now).unwrap();
        assert_eq!(
            (
                later.plan.amount,
                later.pending_plan.as_ref().map(|p| p.amount)
            ),
            (9900, Some(19_900))
        );
        let (paid, _) = crate::billing::next_state(
            &later,
            &crate::billing::Fact::Paid {
                imp_uid: "i".into(),
                paid_at: now,
            },
            &Default::default(),
            now,
        );
        assert_eq!((paid.plan.amount, paid.pending_plan), (19_900, None));
    }

    #[test]
    fn a_new_card_retries_a_subscription_behind_on_payment_with_a_fresh_attempt() {
        let mut s = sub();
        s.status = SubscriptionStatus::KeyMissing;
        let now = s.created_at + chrono::Duration::days(35);
        let rejected = attempt(&s, AttemptState::Rejected);
        let (next, charge) =
            key_replaced(&s, "cu_new", s.key.clone(), Some(&rejected), now).unwrap();
        assert!(charge);
        assert_eq!(
            (next.status, next.attempt, next.customer_uid.as_str()),
            (SubscriptionStatus::PastDue, 2, "cu_new")
        );
        let (active, charge) = key_replaced(&sub(), "cu_new", s.key.clone(), None, now).unwrap();
        assert!(!charge);
        assert_eq!(active.status, SubscriptionStatus::Active);
    }

    #[test]
    fn a_resolution_must_agree_with_what_iamport_shows() {
        let s = sub();
        let flagged = attempt(&s, AttemptState::NeedsReview);
        let record = |status, cancelled| PaymentRecord {
            imp_uid: "imps_1".into(),
            merchant_uid: flagged.merchant_uid.clone(),
            status,
            amount: 9900,
            cancelled_amount: cancelled,
            currency: Some("KRW".into()),
            customer_uid: Some("cu".into()),
            paid_at: Some(s.created_at),
            fail_reason: None,
            cancel_reason: None,
        };
        assert!(check_resolution(&flagged, Some(&record(RecordStatus::Paid, 0)), true).is_ok());
        assert!(check_resolution(&flagged, Some(&record(RecordStatus::Paid, 0)), false).is_err());
        assert!(
            check_resolution(
                &flagged,
                Some(&record(RecordStatus::Cancelled, 9900)),
                false
            )
            .is_ok()
        );
        assert!(check_resolution(&flagged, None, true).is_err());
        assert!(check_resolution(&attempt(&s, AttemptState::Paid), None, false).is_err());
    }

    #[test]
    fn resolving_the_current_attempt_moves_the_subscription_on() {
        let mut s = sub();
        s.status = SubscriptionStatus::NeedsReview;
        s.review_from = Some(SubscriptionStatus::Active);
        let flagged = attempt(&s, AttemptState::NeedsReview);
        let now = s.created_at;
        let paid = resolved(&s, &flagged, true, now).unwrap();
        assert_eq!(
            (paid.status, paid.period_index),
            (SubscriptionStatus::Active, 2)
        );
        let unpaid = resolved(&s, &flagged, false, now).unwrap();
        assert_eq!(
            (unpaid.status, unpaid.period_index, unpaid.attempt),
            (SubscriptionStatus::Active, 1, 2)
        );
        assert!(unpaid.is_due(now));
    }

    #[test]
    fn a_late_payment_on_an_earlier_attempt_resolved_as_paid_pays_the_period() {
        // Attempt 1 was declined, then its payment arrived after all; attempt
        // 2 of the same period is the current one.
        let mut s = sub();
        s.status = SubscriptionStatus::NeedsReview;
        s.review_from = Some(SubscriptionStatus::PastDue);
        s.attempt = 2;
        let mut late = attempt(&s, AttemptState::NeedsReview);
        late.attempt = 1;
        let now = s.created_at;
        let paid = resolved(&s, &late, true, now).unwrap();
        assert_eq!(paid.paid_through, Some(s.current_period()));
        assert_eq!((paid.period_index, paid.attempt), (2, 1));
        assert_eq!(paid.status, SubscriptionStatus::Active);
        assert!(!paid.is_due(now), "the period is not charged again");
    }
}
