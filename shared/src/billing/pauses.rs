//! Pausing a subscription (issue 25 §4, decision 76): instead of a cancel,
//! the customer stops paying for a while and keeps the calendar. Pure:
//! whether a pause may start, what the run does while paused, and what a
//! resume does.
//!
//! - Only an `active` subscription pauses, and only with no attempt of its
//!   period open (a charge in flight, or one waiting for a person), no
//!   period-end cancel pending and no comeback re-anchoring on its payment.
//! - Access lasts until the paid-through date (the start of the first
//!   period not paid); nothing is charged and no notice goes out while
//!   paused.
//! - A period the pause covers whole is skipped, never charged: the run
//!   moves the calendar past it once it has ended.
//! - It resumes by hand (`POST /subscriptions/{id}/resume`) or at
//!   `resumes_at` (the run), keeping the anchor. A period that began on the
//!   resume's Seoul day is charged as it is; one the pause covered in part
//!   is charged for the rest of its days, prorated to the won (under the
//!   smallest amount a plan may charge, not at all), so a resume is never a
//!   free stretch and never a charge for paused days.

use chrono::{DateTime, Duration, Utc};

use super::calendar::{BILLING_TZ, PeriodId};
use super::changes::NotAllowed;
use super::entities::{PartialPeriod, Subscription, prorated};
use super::state::{Event, SubscriptionStatus};

/// The furthest ahead a pause's `resumes_at` may be.
pub const MAX_PAUSE: Duration = Duration::days(366);

/// A pause in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub since: DateTime<Utc>,
    /// When the run resumes it; `None`: only by hand.
    pub resumes_at: Option<DateTime<Utc>>,
}

/// Why a pause was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    /// Bad input (the API answers 400).
    #[error("{0}")]
    Invalid(String),
    /// The subscription's state does not allow it (409).
    #[error("{0}")]
    NotAllowed(#[from] NotAllowed),
}

impl Subscription {
    /// Whether it is paused and its `resumes_at` has come.
    pub fn resume_due(&self, now: DateTime<Utc>) -> bool {
        self.status == SubscriptionStatus::Paused
            && self
                .pause
                .and_then(|p| p.resumes_at)
                .is_some_and(|at| at <= now)
    }

    /// The end of what a paused subscription paid for: the start of its
    /// first period not paid (the run skips periods only once they ended,
    /// so this is the period it is in, or the next).
    pub fn paid_until(&self) -> DateTime<Utc> {
        self.anchor.period_start(self.period_index)
    }

    /// Its place in the due index while paused: the earliest of its resume,
    /// the end of the period it is in (to skip it) and, with a period-end
    /// cancel, the end of what it paid for.
    pub(crate) fn paused_due_at(&self) -> DateTime<Utc> {
        let mut at = self.anchor.period_start(self.period_index + 1);
        if self.cancel_at_period_end {
            at = at.min(self.paid_until());
        }
        if let Some(resume) = self.pause.and_then(|p| p.resumes_at) {
            at = at.min(resume);
        }
        at
    }
}

/// The subscription paused at `now` until `resumes_at` (or until resumed by
/// hand). `open_attempt`: an attempt of its period is open or waits for a
/// person. `Ok(None)`: paused already with the same `resumes_at` (asking
/// twice changes nothing); paused with another one moves it.
pub fn paused(
    sub: &Subscription,
    resumes_at: Option<DateTime<Utc>>,
    open_attempt: bool,
    now: DateTime<Utc>,
) -> Result<Option<Subscription>, PauseError> {
    if let Some(at) = resumes_at {
        if at <= now {
            return Err(PauseError::Invalid(
                "resumes_at must be in the future".into(),
            ));
        }
        if at > now + MAX_PAUSE {
            return Err(PauseError::Invalid(
                "resumes_at must be at most 366 days ahead".into(),
            ));
        }
    }
    if sub.status == SubscriptionStatus::Paused {
        let Some(pause) = sub.pause else {
            return Ok(None);
        };
        if pause.resumes_at == resumes_at {
            return Ok(None);
        }
        let mut next = sub.next_version(now);
        next.pause = Some(Pause {
            resumes_at,
            ..pause
        });
        return Ok(Some(next));
    }
    if sub.status != SubscriptionStatus::Active {
        return Err(NotAllowed(format!(
            "only an active subscription can be paused; this one is {}",
            sub.status.as_str()
        ))
        .into());
    }
    if sub.cancel_at_period_end {
        return Err(NotAllowed(
            "it ends at its period's end: undo that first (POST /subscriptions/{id}/resume)".into(),
        )
        .into());
    }
    if open_attempt || sub.reanchor_on_payment {
        return Err(NotAllowed(
            "a charge of its period is open, waits for a person or is being collected again: pause it once that is settled"
                .into(),
        )
        .into());
    }
    let mut next = sub.next_version(now);
    next.status = sub
        .status
        .apply(Event::Pause)
        .map_err(|e| NotAllowed(e.to_string()))?;
    next.pause = Some(Pause {
        since: now,
        resumes_at,
    });
    Ok(Some(next))
}

/// A paused subscription as the run finds it at `now`: every period that
/// has ended is skipped (never charged); a period-end cancel asked while
/// paused ends it once what it paid for has. `None`: nothing to do yet.
pub fn at_period_start(
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Option<(Subscription, Vec<PeriodId>)> {
    if sub.status != SubscriptionStatus::Paused {
        return None;
    }
    let mut next = sub.next_version(now);
    if sub.cancel_at_period_end && sub.paid_until() <= now {
        next.status = sub.status.apply(Event::Cancel).ok()?;
        next.ended_at = Some(now);
        next.pause = None;
        return Some((next, Vec::new()));
    }
    let today = now.with_timezone(&BILLING_TZ).date_naive();
    let skipped = skip_ended(&mut next, today);
    (!skipped.is_empty()).then_some((next, skipped))
}

/// Moves `next` past every period that ended by `day` (the next one began
/// on or before it).
fn skip_ended(next: &mut Subscription, day: chrono::NaiveDate) -> Vec<PeriodId> {
    let mut skipped = Vec::new();
    while next.anchor.period_date(next.period_index + 1) <= day && skipped.len() < 600 {
        skipped.push(next.current_period());
        next.period_index += 1;
    }
    if !skipped.is_empty() {
        next.attempt = 1;
        next.next_charge_at = next.anchor.period_start(next.period_index);
        if next.partial.is_some_and(|p| p.index < next.period_index) {
            next.partial = None;
        }
    }
    skipped
}

/// The subscription resumed from its pause at `now` (by hand, or by the
/// run for a `resumes_at` of `from`; by hand `from` is `now`): active again
/// on its old calendar. The periods the pause covered whole are skipped; a
/// period that began on `from`'s Seoul day is charged as it is; one that
/// began before it is due now for the rest of its days, prorated (not at
/// all, and skipped, when that is under the smallest charge).
pub fn unpaused(
    sub: &Subscription,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(Subscription, Vec<PeriodId>), NotAllowed> {
    let mut next = sub.next_version(now);
    next.status = sub.status.apply(Event::Unpause).map_err(|_| {
        NotAllowed(format!(
            "the subscription is {}, not paused",
            sub.status.as_str()
        ))
    })?;
    next.pause = None;
    let day = from.with_timezone(&BILLING_TZ).date_naive();
    let mut skipped = skip_ended(&mut next, day);
    let (start, end) = (
        next.anchor.period_date(next.period_index),
        next.anchor.period_date(next.period_index + 1),
    );
    if start < day {
        let days = u32::try_from((end - day).num_days()).unwrap_or(0);
        let of = u32::try_from((end - start).num_days()).unwrap_or(1);
        // Priced at its claim (a price change applied there included).
        match prorated(next.plan.amount, days, of) {
            Some(_) => {
                next.partial = Some(PartialPeriod {
                    index: next.period_index,
                    days,
                    of,
                });
                // Due since it resumed (a run that comes later charges it).
                next.next_charge_at = from.min(now);
            }
            None => {
                skipped.push(next.current_period());
                next.period_index += 1;
                next.attempt = 1;
                next.next_charge_at = next.anchor.period_start(next.period_index);
            }
        }
    }
    Ok((next, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Anchor;
    use crate::testing;

    use crate::testing::instant as kst;

    fn periods(p: &[PeriodId]) -> Vec<&str> {
        p.iter().map(PeriodId::as_str).collect()
    }

    /// Anchored on 10 January 2027, January paid: next due 10 February.
    fn paid_january() -> Subscription {
        let anchor = Anchor::new(2027, 1, 10).unwrap_or_else(|| panic!("anchor"));
        let mut s = testing::subscription("pausing00001", anchor);
        s.paid_through = Some(anchor.period_id(0));
        s.period_index = 1;
        s.next_charge_at = anchor.period_start(1);
        s
    }

    #[test]
    fn a_pause_skips_the_periods_it_covers_and_a_resume_keeps_the_anchor() {
        let s = paid_january();
        let now = kst("2027-01-20T12:00:00+09:00");
        let p = paused(&s, None, false, now).unwrap().unwrap();
        assert_eq!(p.status, SubscriptionStatus::Paused);
        assert!(
            !p.is_due(kst("2027-02-10T10:00:00+09:00")),
            "never charged while paused"
        );
        assert_eq!(p.notice_at(), None, "nor told of a renewal");
        assert_eq!(p.paid_until(), s.next_charge_at, "access until February");
        assert_eq!(
            p.due_at(),
            Some(s.anchor.period_start(2)),
            "the run skips February once it ended"
        );
        // In February nothing to do; on 10 March February is skipped.
        assert!(at_period_start(&p, kst("2027-02-20T10:00:00+09:00")).is_none());
        let (feb, skipped) = at_period_start(&p, kst("2027-03-10T10:00:00+09:00")).unwrap();
        assert_eq!(periods(&skipped), ["202702"]);
        assert_eq!(feb.next_charge_at, s.anchor.period_start(2));
        assert_eq!(feb.status, SubscriptionStatus::Paused);
        // Resumed on 10 March: March is charged that day, in full, on the old calendar.
        let now = kst("2027-03-10T11:00:00+09:00");
        let (back, none) = unpaused(&feb, now, now).unwrap();
        assert!(none.is_empty());
        assert_eq!(
            (back.status, back.anchor),
            (SubscriptionStatus::Active, s.anchor)
        );
        assert_eq!(
            (back.current_period().as_str(), back.period_amount()),
            ("202703", 9900)
        );
        assert!(back.is_due(now));
        assert_eq!(back.pause, None);
    }

    /// The reviewer's case: paused in January, resumed on 11 February. Not a
    /// free February, not a full one: the rest of it, prorated.
    #[test]
    fn a_resume_inside_a_period_charges_the_rest_of_it_prorated() {
        let s = paid_january();
        let p = paused(&s, None, false, kst("2027-01-11T12:00:00+09:00"))
            .unwrap()
            .unwrap();
        let now = kst("2027-02-11T09:00:00+09:00");
        let (back, skipped) = unpaused(&p, now, now).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(back.current_period().as_str(), "202702");
        // 11 February .. 10 March: 27 of February's 28 days.
        assert_eq!(back.period_amount(), 9900 * 27 / 28);
        assert!(back.is_due(now));
        // A price change the claim applies prices the same share (seeds
        // 392, 1406: the share was fixed at the resume's price).
        let mut raised = back.clone();
        raised.plan.amount = 19900;
        assert_eq!(raised.period_amount(), 19900 * 27 / 28);
        // Simulation seed 1866: resumed at its date by a run that came later
        // than its billing time, it was told of a charge "now" and charged a
        // day later. The rest is due since it resumed, and not noticed.
        let late = kst("2027-02-12T10:17:20+09:00");
        let (back, _) = unpaused(&p, now, late).unwrap();
        assert_eq!(back.next_charge_at, now);
        assert_eq!(back.notice_at(), None);
        assert!(!back.notice_due(kst("2027-02-12T10:00:00+09:00")));
        // Months later: the periods it covered whole are skipped, the one it
        // ends in prorated (15 April .. 10 May: 25 of 30 days).
        let now = kst("2027-04-15T09:00:00+09:00");
        let (back, skipped) = unpaused(&p, now, now).unwrap();
        assert_eq!(periods(&skipped), ["202702", "202703"]);
        assert_eq!(back.current_period().as_str(), "202704");
        assert_eq!(back.period_amount(), 9900 * 25 / 30);
        // Once paid, the next period is the plan's price again.
        let paid = crate::billing::facts::next_state(
            &back,
            &crate::billing::Fact::Paid {
                imp_uid: "imps_1".into(),
                paid_at: now,
                receipt_url: None,
                tax: None,
                cash: false,
            },
            &crate::billing::DunningPolicy::default(),
            now,
        )
        .0;
        assert_eq!(
            (paid.current_period().as_str(), paid.period_amount()),
            ("202705", 9900)
        );
        // The last day of a period: 1 of 30 days of 9,900 is 330 won.
        let now = kst("2027-05-09T09:00:00+09:00");
        let (back, _) = unpaused(&p, now, now).unwrap();
        assert_eq!(back.period_amount(), 330);
    }

    /// The run resumes at `resumes_at` from that day's calendar, even when
    /// it comes a day late: the period that began that day is not skipped.
    #[test]
    fn the_run_resumes_from_the_day_of_resumes_at() {
        let s = paid_january();
        let at = kst("2027-03-10T20:00:00+09:00");
        let p = paused(&s, Some(at), false, kst("2027-01-20T12:00:00+09:00"))
            .unwrap()
            .unwrap();
        let (feb, _) = at_period_start(&p, kst("2027-03-10T10:00:00+09:00")).unwrap();
        assert_eq!(feb.due_at(), Some(at));
        assert!(feb.resume_due(at) && !feb.resume_due(at - Duration::seconds(1)));
        let late = kst("2027-03-11T19:00:00+09:00");
        let (back, skipped) = unpaused(&feb, at, late).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(
            (back.current_period().as_str(), back.period_amount()),
            ("202703", 9900)
        );
        assert!(back.is_due(late));
    }

    #[test]
    fn a_period_end_cancel_while_paused_ends_it_when_what_it_paid_for_ends() {
        let s = paid_january();
        let p = paused(&s, None, false, kst("2027-01-20T12:00:00+09:00"))
            .unwrap()
            .unwrap();
        let mut ending = p.clone();
        ending.cancel_at_period_end = true;
        assert_eq!(ending.due_at(), Some(s.next_charge_at));
        assert!(at_period_start(&ending, kst("2027-02-09T10:00:00+09:00")).is_none());
        let (ended, _) = at_period_start(&ending, kst("2027-02-10T10:00:00+09:00")).unwrap();
        assert_eq!(ended.status, SubscriptionStatus::Cancelled);
        // Asked after February was skipped: it paid for nothing left, so now.
        let (feb, _) = at_period_start(&p, kst("2027-03-10T10:00:00+09:00")).unwrap();
        let cancelled = crate::billing::changes::cancelled(
            &feb,
            crate::billing::changes::CancelAt::PeriodEnd,
            "moving",
            kst("2027-03-12T10:00:00+09:00"),
        )
        .unwrap();
        assert_eq!(cancelled.status, SubscriptionStatus::Cancelled);
        // Asked in January, while paid: it keeps access until February.
        let asked = crate::billing::changes::cancelled(
            &p,
            crate::billing::changes::CancelAt::PeriodEnd,
            "moving",
            kst("2027-01-25T10:00:00+09:00"),
        )
        .unwrap();
        assert!(asked.cancel_at_period_end && asked.status == SubscriptionStatus::Paused);
    }

    #[test]
    fn a_pause_is_refused_with_the_reason_and_asking_twice_changes_nothing() {
        let s = paid_january();
        let now = kst("2027-01-20T12:00:00+09:00");
        let invalid = |r| matches!(r, Err(PauseError::Invalid(_)));
        let not_allowed = |r| matches!(r, Err(PauseError::NotAllowed(_)));
        assert!(invalid(paused(&s, Some(now), false, now)));
        assert!(invalid(paused(
            &s,
            Some(now + Duration::days(367)),
            false,
            now
        )));
        assert!(not_allowed(paused(&s, None, true, now)), "an open attempt");
        let mut ending = s.clone();
        ending.cancel_at_period_end = true;
        assert!(not_allowed(paused(&ending, None, false, now)));
        let mut collecting = s.clone();
        collecting.reanchor_on_payment = true;
        assert!(not_allowed(paused(&collecting, None, false, now)));
        for status in [
            SubscriptionStatus::PastDue,
            SubscriptionStatus::Trialing,
            SubscriptionStatus::Suspended,
        ] {
            let mut other = s.clone();
            other.status = status;
            assert!(not_allowed(paused(&other, None, false, now)), "{status:?}");
        }
        let until = Some(now + Duration::days(40));
        let p = paused(&s, until, false, now).unwrap().unwrap();
        assert_eq!(paused(&p, until, false, now), Ok(None));
        let moved = paused(&p, None, false, now).unwrap().unwrap();
        assert_eq!(
            moved.pause.map(|p| (p.since, p.resumes_at)),
            Some((now, None))
        );
        assert!(
            unpaused(&s, now, now).is_err(),
            "an active one is not paused"
        );
    }
}
