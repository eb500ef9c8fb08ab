//! What a merchant's or an operator's change does to a subscription. Pure:
//! the management service reads, calls these, and writes the result with
//! the subscription's version as the guard.

use chrono::{DateTime, Utc};

use super::calendar::{Anchor, BILLING_TZ, PeriodId};
use super::entities::{AttemptState, ChargeAttempt, KeyInfo, PartialPeriod, Plan, Subscription};
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

/// The subscription after a cancellation. A period-end cancel whose period
/// end has already passed (the current period began and is not paid: a
/// subscription in dunning, suspended, without a key, waiting for a person,
/// or due and not yet charged) ends it now: no period after the paid one is
/// charged (defect D6). It is still recorded as a period-end cancel
/// (`cancel_at_period_end` stays set on the ended subscription).
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
    // A paused one keeps access until what it paid for ends: the run ends
    // it then (`pauses::at_period_start`).
    let period_end_passed = if sub.status == SubscriptionStatus::Paused {
        sub.paid_until() <= now
    } else {
        sub.period_due() <= now || !sub.status.is_chargeable()
    };
    match at {
        CancelAt::PeriodEnd if !period_end_passed => next.cancel_at_period_end = true,
        CancelAt::PeriodEnd | CancelAt::Now => {
            next.status = sub
                .status
                .apply(Event::Cancel)
                .map_err(|e| NotAllowed(e.to_string()))?;
            next.ended_at = Some(now);
            next.cancel_at_period_end = at == CancelAt::PeriodEnd;
            next.pause = None;
        }
    }
    Ok(next)
}

/// What happens to the outstanding period when a subscription that had no
/// access (suspended, without a key, waiting for a person) gets it back:
/// at most one period is charged, and no period that began without access
/// is billed (`RESUME_POLICY`; `docs/charging.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResumePolicy {
    /// The calendar re-anchors on the Seoul date access comes back: a new
    /// period starts that day and is charged now; the outstanding period
    /// and every period since are not billed.
    #[default]
    Reanchor,
    /// The outstanding (declined) period is charged now, once; the
    /// calendar re-anchors on the Seoul date of that payment, so the next
    /// period starts a period after it. The periods between are not billed.
    CollectOutstanding,
}

impl ResumePolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reanchor" => Some(Self::Reanchor),
            "collect_outstanding" => Some(Self::CollectOutstanding),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reanchor => "reanchor",
            Self::CollectOutstanding => "collect_outstanding",
        }
    }
}

/// A subscription back in access: what is charged now, and which periods
/// are not billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comeback {
    pub next: Subscription,
    /// Periods that began without access and will never be billed.
    pub not_billed: Vec<PeriodId>,
    /// The calendar's anchor before.
    pub before: Anchor,
}

impl Comeback {
    /// For people: what happened to the calendar.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "charging {} now (attempt {})",
            self.next.current_period(),
            self.next.attempt
        );
        if self.next.anchor != self.before {
            text.push_str(&format!(
                "; re-anchored on {:04}-{:02}-{:02}",
                self.next.anchor.year, self.next.anchor.month, self.next.anchor.day
            ));
        }
        if self.next.reanchor_on_payment {
            text.push_str("; re-anchors on the date it is paid");
        }
        if !self.not_billed.is_empty() {
            let list: Vec<&str> = self.not_billed.iter().map(PeriodId::as_str).collect();
            text.push_str(&format!("; not billed: {}", list.join(", ")));
        }
        text
    }
}

/// `next` (a new version of `sub`, its status already set) charged again
/// now under `policy`. The current period's attempt, if it exists
/// (`attempted`), must be settled (no request of it in flight). A period
/// that began on an earlier Seoul day than today began without access (the
/// subscription had none until now): it is not charged as such.
pub fn back_in_access(
    sub: &Subscription,
    mut next: Subscription,
    attempted: bool,
    policy: ResumePolicy,
    now: DateTime<Utc>,
) -> Comeback {
    let today = now.with_timezone(&BILLING_TZ).date_naive();
    let began = sub.anchor.period_date(sub.period_index);
    let outstanding = sub.current_period();
    let fresh_attempt = sub.attempt + u32::from(attempted);
    next.next_charge_at = now;
    if began >= today {
        // The period began today: it is charged as it is.
        next.attempt = fresh_attempt;
        return Comeback {
            next,
            not_billed: Vec::new(),
            before: sub.anchor,
        };
    }
    let fresh = sub.anchor.moved_to(now);
    let mut not_billed = Vec::new();
    match policy {
        ResumePolicy::Reanchor => {
            next.anchor = fresh;
            next.period_index = 0;
            // A period that began this month keeps its id: its attempts go
            // on, at their amount. A new one is a whole period at the plan's
            // price (not a billing-day plan's prorated first one).
            next.attempt = if fresh.period_id(0) == outstanding {
                // Its part-priced amount moves to the period's new index,
                // so a retry charges what the first attempt claimed.
                next.partial = sub
                    .partial
                    .filter(|p| p.index == sub.period_index)
                    .map(|p| PartialPeriod { index: 0, ..p });
                fresh_attempt
            } else {
                not_billed.push(outstanding.clone());
                next.partial = None;
                1
            };
            next.reanchor_on_payment = false;
        }
        ResumePolicy::CollectOutstanding => {
            next.attempt = fresh_attempt;
            next.reanchor_on_payment = true;
        }
    }
    // Every period of the old calendar that began after the outstanding
    // one and before today.
    let mut k = sub.period_index + 1;
    while sub.anchor.period_date(k) < today && k < sub.period_index + 600 {
        let id = sub.anchor.period_id(k);
        if id != next.current_period() {
            not_billed.push(id);
        }
        k += 1;
    }
    Comeback {
        next,
        not_billed,
        before: sub.anchor,
    }
}

/// What a resume does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// A pending period-end cancellation was undone.
    CancelUndone(Subscription),
    /// A suspended subscription is charged again now (see
    /// [`back_in_access`]); success reactivates it.
    ChargeNow(Comeback),
    /// A paused one is active again on its calendar (`pauses::unpaused`);
    /// the periods that began while paused were skipped.
    Unpaused {
        next: Subscription,
        skipped: Vec<PeriodId>,
    },
}

pub fn resumed(
    sub: &Subscription,
    policy: ResumePolicy,
    now: DateTime<Utc>,
) -> Result<Resumed, NotAllowed> {
    if sub.status == SubscriptionStatus::Paused {
        let (next, skipped) = super::pauses::unpaused(sub, now, now)?;
        return Ok(Resumed::Unpaused { next, skipped });
    }
    let mut next = sub.next_version(now);
    if sub.status == SubscriptionStatus::Suspended {
        next.status = sub
            .status
            .apply(Event::Retry)
            .map_err(|e| NotAllowed(e.to_string()))?;
        next.cancel_at_period_end = false;
        return Ok(Resumed::ChargeNow(back_in_access(
            sub, next, true, policy, now,
        )));
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
        if plan != sub.plan {
            // A plan by amount and name follows no catalogue version.
            next.plan_ref = None;
        }
        // A trial told (or consented to) one price converts at a higher one
        // only after being told again and, for the consent, asked again.
        if sub.status == SubscriptionStatus::Trialing && plan.amount > sub.plan.amount {
            next.notice = None;
            if let Some(t) = next.trial.as_mut() {
                t.consent = None;
            }
        }
        next.plan = plan;
        next.pending_plan = None;
    }
    Ok(next)
}

/// The subscription once a new billing key replaced its old one. One
/// behind on payment is charged again at once: in dunning (it kept access),
/// the outstanding period with a fresh attempt; suspended or without a key
/// (no access), as [`back_in_access`] says. Returns whether to charge now.
pub fn key_replaced(
    sub: &Subscription,
    customer_uid: &str,
    key: KeyInfo,
    current_attempt: Option<&ChargeAttempt>,
    policy: ResumePolicy,
    now: DateTime<Utc>,
) -> Result<(Comeback, bool), NotAllowed> {
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
    next.action_reason = None;
    // Waiting for a person after a hard decline: with the new card, a review
    // resolved as not paid charges again instead of asking for a card.
    if next.review_from == Some(S::ActionRequired) {
        next.review_from = Some(S::PastDue);
    }
    let settled = current_attempt.is_some_and(|a| !a.state.is_open());
    let unchanged = |next| Comeback {
        next,
        not_billed: Vec::new(),
        before: sub.anchor,
    };
    match sub.status {
        S::Suspended | S::KeyMissing | S::ActionRequired
            if current_attempt.is_none_or(|a| !a.state.is_open()) =>
        {
            next.status = sub
                .status
                .apply(Event::Retry)
                .map_err(|e| NotAllowed(e.to_string()))?;
            Ok((
                back_in_access(sub, next, current_attempt.is_some(), policy, now),
                true,
            ))
        }
        S::PastDue | S::Suspended | S::KeyMissing | S::ActionRequired => {
            next.status = sub
                .status
                .apply(Event::Retry)
                .map_err(|e| NotAllowed(e.to_string()))?;
            if settled {
                next.attempt = sub.attempt + 1;
            }
            next.next_charge_at = now;
            Ok((unchanged(next), true))
        }
        _ => Ok((unchanged(next), false)),
    }
}

/// Why a person's decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolvable {
    #[error("{0}")]
    NotAllowed(#[from] NotAllowed),
    /// The gateway still processes the payment: neither paid nor failed is
    /// known yet (defect D1).
    #[error("{0}")]
    StillInProgress(String),
}

/// What the gateway's record of a flagged attempt allows a person to decide.
pub fn check_resolution(
    attempt: &ChargeAttempt,
    record: Option<&PaymentRecord>,
    as_paid: bool,
) -> Result<(), Unresolvable> {
    if attempt.state != AttemptState::NeedsReview {
        return Err(NotAllowed(format!(
            "the attempt is {}, not waiting for review",
            attempt.state.as_str()
        ))
        .into());
    }
    if let Some(p) =
        record.filter(|p| matches!(p.status, RecordStatus::Ready | RecordStatus::Other))
    {
        return Err(Unresolvable::StillInProgress(format!(
            "the gateway still shows payment {} as {}: it may yet be paid. Resolve it once it is paid or failed",
            p.imp_uid,
            p.status.as_str()
        )));
    }
    let money_kept = record.is_some_and(|p| p.kept() > 0);
    match (as_paid, money_kept) {
        (true, false) => Err(NotAllowed(
            "the gateway shows no money kept under this merchant_uid: it cannot be resolved as paid".into(),
        )
        .into()),
        (false, true) => Err(NotAllowed(
            "the gateway shows money kept under this merchant_uid: refund it first (POST /charges/{merchant_uid}/refund), or resolve it as paid".into(),
        )
        .into()),
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
///   if the attempt is its current one, it is charged again now
///   ([`back_in_access`]: the review ended its access);
/// - a card-replacement window's payment (a window slot) pays no period: only
///   the attempt is settled.
///
/// A pending period-end cancel whose period end passed during the review
/// ends the subscription now.
pub fn resolved(
    sub: &Subscription,
    attempt: &ChargeAttempt,
    as_paid: bool,
    policy: ResumePolicy,
    now: DateTime<Utc>,
) -> Result<(Comeback, bool), NotAllowed> {
    let mut next = sub.next_version(now);
    let unchanged = |next| Comeback {
        next,
        not_billed: Vec::new(),
        before: sub.anchor,
    };
    if attempt.is_window() {
        return Ok((unchanged(next), false));
    }
    let current = sub.is_current(attempt);
    let event = if as_paid {
        if attempt.period == sub.current_period() {
            next.paid_through = Some(sub.current_period());
            next.period_index += 1;
            next.attempt = 1;
            next.next_charge_at = sub.anchor.period_start(next.period_index);
            if let Some(plan) = next.pending_plan.take() {
                next.plan = plan;
                next.plan_ref = None;
            }
        }
        Event::ResolvedPaid
    } else {
        Event::ResolvedUnpaid(sub.review_from.unwrap_or(SubscriptionStatus::Active))
    };
    if sub.status == SubscriptionStatus::NeedsReview {
        // A paused one stays paused whatever the late money paid (its
        // periods are skipped; a payment for an older one pays that one).
        let event = match sub.review_from {
            Some(SubscriptionStatus::Paused) => Event::ResolvedUnpaid(SubscriptionStatus::Paused),
            _ => event,
        };
        next.status = sub
            .status
            .apply(event)
            .map_err(|e| NotAllowed(e.to_string()))?;
        next.review_from = None;
    }
    if next.cancel_at_period_end && next.status.is_chargeable() && next.period_due() <= now {
        next.status = next
            .status
            .apply(Event::Cancel)
            .map_err(|e| NotAllowed(e.to_string()))?;
        next.ended_at = Some(now);
        return Ok((unchanged(next), false));
    }
    // A trial's attempt resolved as not paid: back to its trial, never
    // charged now (its conversion waits for the consent and the notice; the
    // run converts it). Before the trial's end (a sign-up that took money)
    // the period's next attempt is due at the trial's end. After it (a
    // conversion that went to a person) the review ended its access like
    // any other's: the first period is the one that starts when access comes
    // back ([`back_in_access`]), so a conversion paid weeks late is not
    // followed by the next period's charge the day after.
    if !as_paid && current && next.status == SubscriptionStatus::Trialing {
        match &sub.trial {
            // Its end passed during the review untold (the notice waits
            // while a person decides): the card rules' 7 days' notice comes
            // first, so it converts 7 days from now (seed 636: converted
            // the day after a review resolved past the trial's end).
            Some(t)
                if t.ends_at <= now
                    && sub.notice.as_ref().is_none_or(|n| n.charge_at != t.ends_at) =>
            {
                let (anchor, ends_at) =
                    super::trials::trial_end(super::trials::TRIAL_NOTICE_DAYS, now);
                next.anchor = anchor.every(sub.anchor.interval);
                next.period_index = 0;
                next.attempt = if next.current_period() == sub.current_period() {
                    sub.attempt + 1
                } else {
                    1
                };
                next.next_charge_at = ends_at;
                next.notice = None;
                if let Some(trial) = next.trial.as_mut() {
                    trial.ends_at = ends_at;
                }
                return Ok((unchanged(next), false));
            }
            Some(t) if t.ends_at <= now => {
                return Ok((back_in_access(sub, next, true, policy, now), false));
            }
            Some(t) => next.next_charge_at = t.ends_at,
            None => {}
        }
        next.attempt = sub.attempt + 1;
        return Ok((unchanged(next), false));
    }
    if !as_paid && current && next.status.is_chargeable() {
        return Ok((back_in_access(sub, next, true, policy, now), true));
    }
    Ok((unchanged(next), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Anchor, PaymentRecord};
    use crate::testing::{self, record};

    fn trial() -> Subscription {
        let terms = crate::billing::trials::TrialTerms {
            days: 14,
            consent: crate::billing::trials::ConversionConsent::Explicit,
            on_no_consent: crate::billing::trials::OnNoConsent::Cancel,
        };
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T03:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let mut s = testing::trialing("abcdefghij02", terms, now);
        if let Some(t) = s.trial.as_mut() {
            t.consent = Some(crate::billing::trials::Consent {
                channel: "web".into(),
                reference: "c".into(),
                at: now,
                recorded_at: now,
            });
        }
        s
    }

    /// A trial told and consented at one price is told and asked again
    /// before converting at a higher one; a lower one keeps both.
    #[test]
    fn a_price_raised_during_a_trial_asks_for_its_consent_again() {
        let mut s = trial();
        let told = crate::billing::notices::noticed(
            &s,
            crate::billing::notices::KeyCheck::OnFile,
            s.next_charge_at - chrono::Duration::days(7),
        );
        s = told;
        let dearer = Plan {
            amount: 19_900,
            ..s.plan.clone()
        };
        let raised = plan_changed(&s, dearer, false, s.updated_at).unwrap();
        assert_eq!(raised.notice, None);
        assert!(raised.trial.as_ref().is_some_and(|t| t.consent.is_none()));
        assert!(raised.notice_at().is_some(), "told again");
        let cheaper = Plan {
            amount: 4_900,
            ..s.plan.clone()
        };
        let lowered = plan_changed(&s, cheaper, false, s.updated_at).unwrap();
        assert!(lowered.notice.is_some());
        assert!(lowered.trial.as_ref().is_some_and(|t| t.consent.is_some()));
    }

    /// A trial whose sign-up window took money, resolved as not paid, goes
    /// back to its trial: charged nothing now, due at the trial's end.
    #[test]
    fn a_trial_resolved_as_not_paid_goes_back_to_its_trial() {
        let mut s = trial();
        let mut flagged = testing::attempt(&s, AttemptState::NeedsReview);
        flagged.amount = 100;
        s.review_from = Some(SubscriptionStatus::Trialing);
        s.status = SubscriptionStatus::NeedsReview;
        let now = s.next_charge_at - chrono::Duration::days(13);
        let (back, charge_now) =
            resolved(&s, &flagged, false, ResumePolicy::Reanchor, now).unwrap();
        assert!(!charge_now);
        assert_eq!(back.next.status, SubscriptionStatus::Trialing);
        assert_eq!(back.next.attempt, 2);
        assert_eq!(
            Some(back.next.next_charge_at),
            s.trial.as_ref().map(|t| t.ends_at)
        );
        assert!(back.next.notice_at().is_some(), "still told before its end");
    }

    /// A trial whose sign-up window took money, resolved as not paid only
    /// after the trial's end, was never told of its conversion (no notice
    /// while a person decides): it converts 7 days on, noticed first
    /// (seed 636 of the simulation: converted untold the next day).
    #[test]
    fn a_trial_resolved_as_not_paid_after_its_end_untold_converts_a_notice_later() {
        let mut s = trial();
        let mut flagged = testing::attempt(&s, AttemptState::NeedsReview);
        flagged.amount = 100;
        s.review_from = Some(SubscriptionStatus::Trialing);
        s.status = SubscriptionStatus::NeedsReview;
        let ends = s.trial.as_ref().map(|t| t.ends_at).unwrap();
        let now = ends + chrono::Duration::days(4);
        let (back, charge_now) =
            resolved(&s, &flagged, false, ResumePolicy::Reanchor, now).unwrap();
        assert!(!charge_now);
        assert_eq!(back.next.status, SubscriptionStatus::Trialing);
        let (_, converts) = crate::billing::trials::trial_end(7, now);
        assert_eq!(back.next.next_charge_at, converts);
        assert_eq!(back.next.trial.as_ref().map(|t| t.ends_at), Some(converts));
        assert!(
            back.next.notice_at().is_some_and(|at| at <= now),
            "told at once: {:?}",
            back.next.notice_at()
        );
    }

    /// A trial's conversion that went to a person and was resolved as not
    /// paid after the next period's start is charged for one period from
    /// the day access comes back (seed 4674 of the V2 simulation: converted
    /// for December on 14 January, then charged for January the next day).
    #[test]
    fn a_conversion_resolved_as_not_paid_weeks_later_reanchors_like_any_comeback() {
        let mut s = trial();
        s.attempt = 5;
        let mut flagged = testing::attempt(&s, AttemptState::NeedsReview);
        flagged.attempt = 5;
        s.review_from = Some(SubscriptionStatus::Trialing);
        s.status = SubscriptionStatus::NeedsReview;
        let ends = s.trial.as_ref().map(|t| t.ends_at).unwrap();
        // Told of its conversion before it went to a person.
        s.notice = Some(crate::billing::notices::SentNotice {
            period: s.current_period(),
            kind: crate::billing::notices::NoticeKind::TrialWillEnd,
            amount: s.plan.amount,
            charge_at: ends,
            sent_at: ends - chrono::Duration::days(7),
            key_checked: true,
        });
        let now = ends + chrono::Duration::days(34);
        let (back, charge_now) =
            resolved(&s, &flagged, false, ResumePolicy::Reanchor, now).unwrap();
        assert!(!charge_now, "the run converts it, after its checks");
        assert_eq!(back.next.status, SubscriptionStatus::Trialing);
        assert_eq!(back.next.anchor, Anchor::from_instant(now));
        assert_eq!(back.next.period_index, 0);
        assert_eq!(back.next.attempt, 1, "a new period id: its first attempt");
        assert_eq!(back.next.next_charge_at, now);
        assert_eq!(back.not_billed, vec![s.current_period()]);
        assert_eq!(
            back.next.conversion(),
            crate::billing::trials::Conversion::Consented
        );
        // Collecting the outstanding period instead re-anchors when it is paid.
        let (collect, _) =
            resolved(&s, &flagged, false, ResumePolicy::CollectOutstanding, now).unwrap();
        assert_eq!(collect.next.current_period(), s.current_period());
        assert_eq!(collect.next.attempt, 6);
        assert!(collect.next.reanchor_on_payment);
    }

    /// Paid for its sign-up period (Dec 2026), due on Jan 1.
    fn sub() -> Subscription {
        let anchor = Anchor::new(2026, 12, 1).unwrap();
        let mut s = testing::subscription("abcdefghij01", anchor);
        s.period_index = 1;
        s.next_charge_at = anchor.period_start(1);
        s.paid_through = Some(anchor.period_id(0));
        s.version = 3;
        s
    }

    fn attempt(s: &Subscription, state: AttemptState) -> ChargeAttempt {
        ChargeAttempt {
            imp_uid: Some("imps_1".into()),
            ..testing::attempt(s, state)
        }
    }

    fn day(y: i32, m: u32, d: u32, hour: i64) -> DateTime<Utc> {
        Anchor::new(y, m, d).unwrap().period_start(0) + chrono::Duration::hours(hour)
    }

    #[test]
    fn cancel_now_ends_and_period_end_keeps_access() {
        let s = sub();
        let now = s.created_at;
        let ended = cancelled(&s, CancelAt::Now, "moved away", now).unwrap();
        assert_eq!(ended.status, SubscriptionStatus::Cancelled);
        assert!(!ended.status.is_chargeable());
        assert!(!ended.cancel_at_period_end);
        assert!(cancelled(&ended, CancelAt::Now, "again", now).is_err());
        let later = cancelled(&s, CancelAt::PeriodEnd, "too expensive", now).unwrap();
        assert_eq!(later.status, SubscriptionStatus::Active);
        assert!(later.cancel_at_period_end);
        assert!(matches!(
            resumed(&later, ResumePolicy::Reanchor, now),
            Ok(Resumed::CancelUndone(r)) if !r.cancel_at_period_end
        ));
        assert!(resumed(&s, ResumePolicy::Reanchor, now).is_err());
    }

    /// Defect D6: a period-end cancel during dunning (or of a suspended,
    /// key-less or flagged subscription) was ignored, and such a
    /// subscription was never ended (keeping the user's plan lock). Its
    /// period end has passed: it ends now.
    #[test]
    fn a_period_end_cancel_after_the_period_ended_ends_the_subscription_now() {
        let mut s = sub();
        let due = s.next_charge_at;
        for status in [
            SubscriptionStatus::PastDue,
            SubscriptionStatus::Suspended,
            SubscriptionStatus::KeyMissing,
            SubscriptionStatus::NeedsReview,
        ] {
            s.status = status;
            let ended = cancelled(
                &s,
                CancelAt::PeriodEnd,
                "behind",
                due + chrono::Duration::days(2),
            )
            .unwrap();
            assert_eq!(ended.status, SubscriptionStatus::Cancelled, "{status:?}");
            assert!(ended.cancel_at_period_end, "still a period-end cancel");
        }
        // Active and due, not yet charged: the paid period is over too.
        s.status = SubscriptionStatus::Active;
        let due_now = cancelled(
            &s,
            CancelAt::PeriodEnd,
            "late",
            due + chrono::Duration::hours(1),
        )
        .unwrap();
        assert_eq!(due_now.status, SubscriptionStatus::Cancelled);
    }

    /// Defect D5: after three suspended months a resume charged every
    /// missed period, one a day. At most one period is charged; by default
    /// the calendar re-anchors on the day access comes back.
    #[test]
    fn a_resume_after_months_charges_one_period_from_that_day() {
        let mut s = sub();
        s.status = SubscriptionStatus::Suspended;
        s.attempt = 4;
        let now = day(2027, 4, 15, 14);
        let Ok(Resumed::ChargeNow(back)) = resumed(&s, ResumePolicy::Reanchor, now) else {
            panic!()
        };
        let r = &back.next;
        assert_eq!(
            (r.status, r.next_charge_at),
            (SubscriptionStatus::PastDue, now)
        );
        assert!(r.is_due(now));
        assert_eq!(r.anchor, Anchor::new(2027, 4, 15).unwrap());
        assert_eq!((r.current_period().as_str(), r.attempt), ("202704", 1));
        let missed: Vec<&str> = back.not_billed.iter().map(PeriodId::as_str).collect();
        assert_eq!(missed, ["202701", "202702", "202703"]);
        assert!(
            back.describe()
                .contains("not billed: 202701, 202702, 202703")
        );
    }

    #[test]
    fn collect_outstanding_charges_the_declined_period_and_re_anchors_on_its_payment() {
        let mut s = sub();
        s.status = SubscriptionStatus::Suspended;
        s.attempt = 4;
        let now = day(2027, 4, 15, 14);
        let Ok(Resumed::ChargeNow(back)) = resumed(&s, ResumePolicy::CollectOutstanding, now)
        else {
            panic!()
        };
        let r = &back.next;
        assert_eq!((r.current_period().as_str(), r.attempt), ("202701", 5));
        assert!(r.reanchor_on_payment);
        let missed: Vec<&str> = back.not_billed.iter().map(PeriodId::as_str).collect();
        assert_eq!(missed, ["202702", "202703", "202704"]);
    }

    #[test]
    fn a_suspension_resumed_the_day_its_period_began_charges_that_period() {
        let mut s = sub();
        s.status = SubscriptionStatus::Suspended;
        s.attempt = 4;
        let now = s.next_charge_at + chrono::Duration::hours(9);
        let Ok(Resumed::ChargeNow(back)) = resumed(&s, ResumePolicy::Reanchor, now) else {
            panic!()
        };
        assert_eq!((back.next.anchor, back.next.attempt), (s.anchor, 5));
        assert!(back.not_billed.is_empty());
    }

    /// Simulation seeds 1479 (V1) and 1456 (V2): a pause resumed mid-period
    /// claimed the rest prorated, was declined, and a new card the same
    /// month re-anchored the period (same id, index 0) and charged it again
    /// at the full price: a retry at another amount.
    #[test]
    fn a_comeback_in_the_same_month_keeps_a_part_priced_periods_amount() {
        let mut s = sub();
        s.status = SubscriptionStatus::PastDue;
        s.period_index = 2; // 202702, begun on Feb 1
        s.partial = Some(PartialPeriod {
            index: 2,
            days: 21,
            of: 28,
        });
        let now = day(2027, 2, 26, 7);
        let mut next = s.clone();
        next.status = SubscriptionStatus::PastDue;
        let back = back_in_access(&s, next, true, ResumePolicy::Reanchor, now);
        let r = &back.next;
        assert_eq!((r.current_period().as_str(), r.attempt), ("202702", 2));
        assert_eq!(
            r.period_amount(),
            7425,
            "the retry keeps the claimed amount"
        );
    }

    #[test]
    fn a_new_price_waits_for_the_next_period_once_this_one_has_an_attempt() {
        let s = sub();
        let plan = Plan {
            amount: 19_900,
            name: "pro".into(),
            notice_days: crate::billing::notices::DEFAULT_NOTICE_DAYS,
            tax: crate::billing::TaxSetting::Taxable,
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
                receipt_url: None,
                tax: None,
                cash: false,
            },
            &Default::default(),
            now,
        );
        assert_eq!((paid.plan.amount, paid.pending_plan), (19_900, None));
    }

    #[test]
    fn a_new_card_retries_a_subscription_behind_on_payment() {
        let mut s = sub();
        s.status = SubscriptionStatus::PastDue;
        let now = s.next_charge_at + chrono::Duration::days(2);
        let declined = attempt(&s, AttemptState::Failed);
        let (back, charge) = key_replaced(
            &s,
            "cu_new",
            s.key.clone(),
            Some(&declined),
            ResumePolicy::Reanchor,
            now,
        )
        .unwrap();
        assert!(charge);
        // In dunning it kept access: the outstanding period, a fresh attempt.
        assert_eq!(
            (
                back.next.status,
                back.next.attempt,
                back.next.anchor,
                back.next.customer_uid.as_str()
            ),
            (SubscriptionStatus::PastDue, 2, s.anchor, "cu_new")
        );
        // Without a key for a month: one period, from the day of the new card.
        s.status = SubscriptionStatus::KeyMissing;
        let later = s.next_charge_at + chrono::Duration::days(35);
        let rejected = attempt(&s, AttemptState::Rejected);
        let (back, charge) = key_replaced(
            &s,
            "cu_new",
            s.key.clone(),
            Some(&rejected),
            ResumePolicy::Reanchor,
            later,
        )
        .unwrap();
        assert!(charge);
        assert_eq!(back.next.anchor, Anchor::from_instant(later));
        assert_eq!(back.not_billed.len(), 1);
        let (active, charge) = key_replaced(
            &sub(),
            "cu_new",
            s.key.clone(),
            None,
            ResumePolicy::Reanchor,
            now,
        )
        .unwrap();
        assert!(!charge);
        assert_eq!(active.next.status, SubscriptionStatus::Active);
    }

    fn flagged_record(
        a: &ChargeAttempt,
        status: RecordStatus,
        cancelled: i64,
        paid: bool,
    ) -> PaymentRecord {
        PaymentRecord {
            cancelled_amount: cancelled,
            ..record(a, status, 9900, paid.then_some(a.created_at), "cu")
        }
    }

    #[test]
    fn a_resolution_must_agree_with_what_the_gateway_shows() {
        let s = sub();
        let flagged = attempt(&s, AttemptState::NeedsReview);
        let r = |status, cancelled| flagged_record(&flagged, status, cancelled, true);
        assert!(check_resolution(&flagged, Some(&r(RecordStatus::Paid, 0)), true).is_ok());
        assert!(check_resolution(&flagged, Some(&r(RecordStatus::Paid, 0)), false).is_err());
        assert!(check_resolution(&flagged, Some(&r(RecordStatus::Cancelled, 9900)), false).is_ok());
        assert!(check_resolution(&flagged, None, true).is_err());
        assert!(check_resolution(&attempt(&s, AttemptState::Paid), None, false).is_err());
    }

    /// Defect D1: a review resolved as failed while the gateway still showed
    /// the payment pending let the next run charge the period under a new
    /// merchant uid; when the pending one completed, the customer paid
    /// twice. Neither decision is taken until the record is final.
    #[test]
    fn a_pending_payment_cannot_be_resolved_either_way() {
        let s = sub();
        let flagged = attempt(&s, AttemptState::NeedsReview);
        let pending = flagged_record(&flagged, RecordStatus::Ready, 0, false);
        for as_paid in [false, true] {
            assert!(matches!(
                check_resolution(&flagged, Some(&pending), as_paid),
                Err(Unresolvable::StillInProgress(_))
            ));
        }
    }

    #[test]
    fn resolving_the_current_attempt_moves_the_subscription_on() {
        let mut s = sub();
        s.status = SubscriptionStatus::NeedsReview;
        s.review_from = Some(SubscriptionStatus::Active);
        let flagged = attempt(&s, AttemptState::NeedsReview);
        let now = s.next_charge_at + chrono::Duration::hours(12);
        let (paid, _) = resolved(&s, &flagged, true, ResumePolicy::Reanchor, now).unwrap();
        assert_eq!(
            (paid.next.status, paid.next.period_index),
            (SubscriptionStatus::Active, 2)
        );
        let (unpaid, charge) = resolved(&s, &flagged, false, ResumePolicy::Reanchor, now).unwrap();
        assert!(charge);
        assert_eq!(
            (
                unpaid.next.status,
                unpaid.next.period_index,
                unpaid.next.attempt
            ),
            (SubscriptionStatus::Active, 1, 2)
        );
        assert!(unpaid.next.is_due(now));
    }

    #[test]
    fn a_review_resolved_weeks_later_charges_one_period_from_that_day() {
        let mut s = sub();
        s.status = SubscriptionStatus::NeedsReview;
        s.review_from = Some(SubscriptionStatus::Active);
        let flagged = attempt(&s, AttemptState::NeedsReview);
        let now = day(2027, 2, 20, 15);
        let (unpaid, charge) = resolved(&s, &flagged, false, ResumePolicy::Reanchor, now).unwrap();
        assert!(charge);
        assert_eq!(unpaid.next.anchor, Anchor::new(2027, 2, 20).unwrap());
        let missed: Vec<&str> = unpaid.not_billed.iter().map(PeriodId::as_str).collect();
        assert_eq!(missed, ["202701"]);
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
        let (paid, _) = resolved(&s, &late, true, ResumePolicy::Reanchor, now).unwrap();
        let paid = paid.next;
        assert_eq!(paid.paid_through, Some(s.current_period()));
        assert_eq!((paid.period_index, paid.attempt), (2, 1));
        assert_eq!(paid.status, SubscriptionStatus::Active);
        assert!(!paid.is_due(now), "the period is not charged again");
    }

    #[test]
    fn a_card_window_payment_resolved_pays_no_period() {
        let s = sub();
        let mut window = attempt(&s, AttemptState::NeedsReview);
        window.attempt = crate::billing::FIRST_WINDOW_SLOT;
        let (back, charge) =
            resolved(&s, &window, true, ResumePolicy::Reanchor, s.created_at).unwrap();
        assert!(!charge);
        assert_eq!(
            (back.next.period_index, back.next.paid_through.clone()),
            (s.period_index, s.paid_through.clone())
        );
    }
}
