//! A plan-wide price change (issue 23 §3, decision 71): the merchant raises
//! (or lowers) a plan's price for everyone on it with
//! `POST /plans/{id}/price-change {amount, effective_period}`. That writes
//! the plan's next version and a rollout; the daily run then plans the
//! rollout in pages, giving each subscription of the plan the same pending
//! change (`billing::price_changes`), which goes through that
//! subscription's own consent flow. Never one request writing thousands of
//! subscriptions.
//!
//! `effective_period` is a month: each subscription's period that starts
//! in it. An increase's consent request goes out `CONSENT_WINDOW_DAYS`
//! before each of those periods, so the month must begin at least that far
//! ahead, plus [`PLANNING_DAYS`] for the runs to plan every subscription
//! before its request is due.

use chrono::{DateTime, Datelike, Duration, Utc};

use super::calendar::{Anchor, BILLING_TZ, PeriodId};
use super::plans::PlanId;
use super::price_changes::OnNoConsent;
use super::{Plan, Subscription};

/// Days the runs have to plan a rollout before the first consent request
/// of its month could be due.
pub const PLANNING_DAYS: i64 = 7;

/// Subscriptions planned per ledger page.
pub const PAGE: usize = 100;

/// A plan-wide price change and how far the runs have planned it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub plan_id: PlanId,
    /// The version it moves subscriptions to; they are on an older one.
    pub to_version: u32,
    /// That version's copy (what each subscription's change charges).
    pub plan: Plan,
    pub effective: PeriodId,
    pub on_no_consent: OnNoConsent,
    pub requested_at: DateTime<Utc>,
    /// Where planning carries on (the plan index's cursor), `None` before
    /// the first page.
    pub cursor: Option<String>,
    /// Subscriptions given the change.
    pub planned: u32,
    /// Subscriptions of the plan left as they are (ended, set to end, in a
    /// trial, another change pending, already at the price…).
    pub skipped: u32,
    /// Every subscription of the plan was looked at.
    pub done_at: Option<DateTime<Utc>>,
    /// Bumped by each write: a write expects the one before.
    pub rev: u64,
}

impl Rollout {
    pub fn is_open(&self) -> bool {
        self.done_at.is_none()
    }
}

/// The instant a month (`YYYYMM`) begins in Seoul.
pub fn month_start(p: &PeriodId) -> Option<DateTime<Utc>> {
    let (y, m) = (p.as_str()[..4].parse().ok()?, p.as_str()[4..].parse().ok()?);
    Some(Anchor::new(y, m, 1)?.period_start(0))
}

/// The first month a rollout requested at `now` may take effect in.
pub fn earliest(now: DateTime<Utc>, window_days: u16) -> PeriodId {
    let from = now + Duration::days(i64::from(window_days) + PLANNING_DAYS);
    let local = from.with_timezone(&BILLING_TZ);
    let first = Anchor::new(local.year(), local.month(), 1)
        .map(|a| (a, a.period_start(0)))
        .map(|(a, start)| {
            if start >= from {
                a.period_id(0)
            } else {
                a.period_id(1)
            }
        });
    first.unwrap_or_else(|| Anchor::from_instant(from).period_id(1))
}

/// Whether `effective` leaves the runs and the customers their time;
/// `Err(earliest)` if not.
pub fn check_effective(
    effective: &PeriodId,
    now: DateTime<Utc>,
    window_days: u16,
) -> Result<(), PeriodId> {
    let first = earliest(now, window_days);
    if *effective >= first {
        Ok(())
    } else {
        Err(first)
    }
}

/// Whether the run gives `sub` the rollout's change: a subscription of
/// the plan on an older version. (Its state is judged by
/// `price_changes::requested`, which refuses what may not change.)
pub fn concerns(rollout: &Rollout, sub: &Subscription) -> bool {
    sub.plan_ref
        .as_ref()
        .is_some_and(|r| r.id == rollout.plan_id && r.version < rollout.to_version)
}

impl Subscription {
    /// The catalogue plan it is a member of for plan-wide changes (the
    /// `plan` index): its plan's id while it has not ended.
    pub fn plan_member(&self) -> Option<&PlanId> {
        if self.status == super::SubscriptionStatus::Cancelled {
            return None;
        }
        self.plan_ref.as_ref().map(|r| &r.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn seoul(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        BILLING_TZ
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn p(s: &str) -> PeriodId {
        PeriodId::parse(s).unwrap()
    }

    #[test]
    fn the_month_must_begin_the_window_and_the_planning_days_ahead() {
        // 3 December + 37 days = 9 January: February is the first whole month.
        let now = seoul(2026, 12, 3, 10);
        assert_eq!(earliest(now, 30), p("202702"));
        assert_eq!(check_effective(&p("202701"), now, 30), Err(p("202702")));
        assert_eq!(check_effective(&p("202702"), now, 30), Ok(()));
        assert_eq!(check_effective(&p("202812"), now, 30), Ok(()));
        // 25 November + 37 days = 1 January 10:00: past its midnight, so February.
        assert_eq!(earliest(seoul(2026, 11, 25, 10), 30), p("202702"));
        // 25 November 00:00 + 37 days = 1 January 00:00: January itself.
        assert_eq!(earliest(seoul(2026, 11, 25, 0), 30), p("202701"));
        assert_eq!(
            month_start(&p("202701")),
            Some(seoul(2027, 1, 1, 0)),
            "Seoul midnight"
        );
    }
}
