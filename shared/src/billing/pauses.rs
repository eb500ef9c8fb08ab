//! Pausing a subscription (issue 25 §4, decision 76): instead of a cancel,
//! the customer stops paying for a while and keeps the calendar. Pure:
//! whether a pause may start, what the run does at a period start while
//! paused, and what a resume does.
//!
//! - Only an `active` subscription pauses, and only with no attempt of its
//!   period open (a charge in flight, or one waiting for a person) and no
//!   period-end cancel pending.
//! - Access lasts until the paid-through date (the start of the period
//!   charged next); nothing is charged and no notice goes out while paused.
//! - Every period that begins while paused is skipped, never charged later:
//!   the run moves the calendar past it at its start (`skipped`).
//! - It resumes by hand (`POST /subscriptions/{id}/resume`) or at
//!   `resumes_at` (the run), keeping the anchor: the next period on the old
//!   calendar is charged as usual; one that began on the day of the resume
//!   is charged that day (as any comeback's, decision 42).

use chrono::{DateTime, Duration, Utc};

use super::calendar::{BILLING_TZ, PeriodId};
use super::changes::NotAllowed;
use super::entities::Subscription;
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

    /// Its place in the due index while paused: the earlier of the next
    /// period's start (to skip it) and the resume.
    pub(crate) fn paused_due_at(&self) -> DateTime<Utc> {
        self.pause
            .and_then(|p| p.resumes_at)
            .map_or(self.next_charge_at, |at| at.min(self.next_charge_at))
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
    if open_attempt {
        return Err(NotAllowed(
            "a charge of its period is open or waits for a person: pause it once that is settled"
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

/// A paused subscription after a period began (the run): every period
/// that began on an earlier Seoul day is skipped; one that began today is
/// left for a day, so a resume later today charges it as it is (as
/// [`unpaused`] does). A period-end cancel asked while paused ends it at
/// the period's start instead. `None`: nothing to do yet.
pub fn at_period_start(
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Option<(Subscription, Vec<PeriodId>)> {
    if sub.status != SubscriptionStatus::Paused || sub.next_charge_at > now {
        return None;
    }
    let mut next = sub.next_version(now);
    if sub.cancel_at_period_end {
        next.status = sub.status.apply(Event::Cancel).ok()?;
        next.ended_at = Some(now);
        next.pause = None;
        return Some((next, Vec::new()));
    }
    let skipped = skip_before_today(&mut next, now);
    (!skipped.is_empty()).then_some((next, skipped))
}

/// Moves `next` past every period that began before `now`'s Seoul date.
fn skip_before_today(next: &mut Subscription, now: DateTime<Utc>) -> Vec<PeriodId> {
    let today = now.with_timezone(&BILLING_TZ).date_naive();
    let mut skipped = Vec::new();
    while next.anchor.period_date(next.period_index) < today && skipped.len() < 600 {
        skipped.push(next.current_period());
        next.period_index += 1;
    }
    if !skipped.is_empty() {
        next.attempt = 1;
        next.next_charge_at = next.anchor.period_start(next.period_index);
    }
    skipped
}

/// The subscription resumed from its pause at `now` (by hand, or at its
/// `resumes_at`): active again on its old calendar. Periods that began
/// before today's Seoul date are skipped (the run may not have reached
/// them yet); one that began today is charged as it is.
pub fn unpaused(
    sub: &Subscription,
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
    let skipped = skip_before_today(&mut next, now);
    Ok((next, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Anchor;
    use crate::testing;

    fn kst(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
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
    fn a_pause_skips_the_periods_inside_it_and_a_resume_keeps_the_anchor() {
        let s = paid_january();
        let now = kst("2027-01-20T12:00:00+09:00");
        let p = paused(&s, None, false, now).unwrap().unwrap();
        assert_eq!(p.status, SubscriptionStatus::Paused);
        assert!(
            !p.is_due(kst("2027-02-10T10:00:00+09:00")),
            "never charged while paused"
        );
        assert_eq!(p.notice_at(), None, "nor told of a renewal");
        assert_eq!(
            p.due_at(),
            Some(s.next_charge_at),
            "the run skips February at its start"
        );
        // 10 February: left for the day (a resume today would charge it);
        // the 11th: skipped, March is next.
        assert!(at_period_start(&p, kst("2027-02-10T10:00:00+09:00")).is_none());
        let (feb, skipped) = at_period_start(&p, kst("2027-02-11T10:00:00+09:00")).unwrap();
        assert_eq!(
            skipped.iter().map(PeriodId::as_str).collect::<Vec<_>>(),
            ["202702"]
        );
        assert_eq!(feb.next_charge_at, s.anchor.period_start(2));
        assert_eq!(feb.status, SubscriptionStatus::Paused);
        // Resumed on 3 March: active, charged on 10 March as ever.
        let (back, none) = unpaused(&feb, kst("2027-03-03T09:00:00+09:00")).unwrap();
        assert!(none.is_empty());
        assert_eq!(
            (back.status, back.anchor),
            (SubscriptionStatus::Active, s.anchor)
        );
        assert_eq!(back.next_charge_at, s.anchor.period_start(2));
        assert_eq!(back.pause, None);
    }

    #[test]
    fn a_resume_skips_periods_the_run_did_not_reach_but_charges_one_that_began_today() {
        let s = paid_january();
        let p = paused(&s, None, false, kst("2027-01-20T12:00:00+09:00"))
            .unwrap()
            .unwrap();
        // No run since: February and March began while paused.
        let (back, skipped) = unpaused(&p, kst("2027-03-15T09:00:00+09:00")).unwrap();
        assert_eq!(
            skipped.iter().map(PeriodId::as_str).collect::<Vec<_>>(),
            ["202702", "202703"]
        );
        assert_eq!(back.next_charge_at, s.anchor.period_start(3));
        // Resumed on 10 March itself: March is charged that day.
        let (today, skipped) = unpaused(&p, kst("2027-03-10T08:00:00+09:00")).unwrap();
        assert_eq!(
            skipped.iter().map(PeriodId::as_str).collect::<Vec<_>>(),
            ["202702"]
        );
        assert!(today.is_due(kst("2027-03-10T10:00:00+09:00")));
        assert_eq!(today.current_period().as_str(), "202703");
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
        assert!(unpaused(&s, now).is_err(), "an active one is not paused");
    }

    #[test]
    fn the_run_resumes_at_resumes_at_and_ends_a_period_end_cancel_at_its_period() {
        let s = paid_january();
        let now = kst("2027-01-20T12:00:00+09:00");
        let at = kst("2027-03-10T00:00:00+09:00");
        let p = paused(&s, Some(at), false, now).unwrap().unwrap();
        assert_eq!(p.due_at(), Some(s.next_charge_at));
        let (feb, _) = at_period_start(&p, kst("2027-02-11T10:00:00+09:00")).unwrap();
        assert_eq!(
            feb.due_at(),
            Some(at),
            "the resume and March's start coincide"
        );
        assert!(feb.resume_due(at) && !feb.resume_due(at - Duration::seconds(1)));
        let (back, skipped) = unpaused(&feb, kst("2027-03-10T10:00:00+09:00")).unwrap();
        assert!(skipped.is_empty());
        assert!(
            back.is_due(kst("2027-03-10T10:00:00+09:00")),
            "March is charged at the resume"
        );
        let mut ending = p.clone();
        ending.cancel_at_period_end = true;
        let (ended, _) = at_period_start(&ending, kst("2027-02-10T10:00:00+09:00")).unwrap();
        assert_eq!(ended.status, SubscriptionStatus::Cancelled);
        assert!(
            at_period_start(&p, now).is_none(),
            "nothing due before February"
        );
    }
}
