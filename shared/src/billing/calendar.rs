//! The billing calendar: periods of one month, N months or a year anchored
//! on the sign-up day, in Asia/Seoul. Days 29–31 clamp to the month's last
//! day without drifting: an anchor of Jan 31 gives Feb 28 (or 29), then
//! Mar 31 again, because every period is computed from the anchor, never
//! from the previous charge. A yearly anchor of 29 February bills on
//! 28 February in common years and on the 29th again in leap years
//! (decision 75).

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The time zone of every calendar decision.
pub const BILLING_TZ: Tz = chrono_tz::Asia::Seoul;

/// The sign-up date in Seoul and the length of a period: period 0 starts
/// that day, period `k` starts `k` intervals later on the same day of month
/// (clamped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    /// Months per period: 1 (the default), 2–12, or 12 for a year.
    #[serde(default)]
    pub interval: Interval,
}

/// How often a plan bills: every month (the default), every N months
/// (2–12) or every year. Periods are whole months, so a period id (the
/// start's `YYYYMM`) stays unique whatever the interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Interval {
    #[default]
    Month,
    /// Every N months, 2 to 12.
    Months(u8),
    Year,
}

/// The N of `months:N`.
pub const INTERVAL_MONTHS: std::ops::RangeInclusive<u8> = 2..=12;

impl Interval {
    /// Months in one period.
    pub fn months(self) -> u32 {
        match self {
            Self::Month => 1,
            Self::Months(n) => u32::from(n),
            Self::Year => 12,
        }
    }

    /// `month`, `year` or `months:N`: the API's and the table's spelling.
    pub fn label(self) -> String {
        match self {
            Self::Month => "month".into(),
            Self::Months(n) => format!("months:{n}"),
            Self::Year => "year".into(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => {
                let n = s.strip_prefix("months:")?;
                // Digits only: no sign, no spaces.
                if n.is_empty() || n.len() > 2 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u8 = n.parse().ok()?;
                INTERVAL_MONTHS.contains(&n).then_some(Self::Months(n))
            }
        }
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// A billing period id, `YYYYMM` of the period's start month in Seoul.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeriodId(String);

impl PeriodId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts exactly six digits with a month 01–12.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let month: u32 = s[4..].parse().ok()?;
        (1..=12).contains(&month).then(|| Self(s.to_owned()))
    }
}

impl std::fmt::Display for PeriodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Anchor {
    /// The anchor of a subscription that starts at `instant`.
    /// A monthly one; [`Anchor::every`] sets another interval.
    pub fn from_instant(instant: DateTime<Utc>) -> Self {
        Self::from_date(instant.with_timezone(&BILLING_TZ).date_naive())
    }

    /// A monthly anchor on `date`.
    pub fn from_date(date: NaiveDate) -> Self {
        Self {
            year: date.year(),
            month: date.month(),
            day: date.day(),
            interval: Interval::Month,
        }
    }

    /// A monthly anchor; [`Anchor::every`] sets another interval.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, day).map(Self::from_date)
    }

    /// The same date, with periods of `interval`.
    pub fn every(self, interval: Interval) -> Self {
        Self { interval, ..self }
    }

    /// The same interval, anchored on the Seoul date of `instant` (a
    /// calendar that re-anchors keeps its plan's interval).
    pub fn moved_to(self, instant: DateTime<Utc>) -> Self {
        Self::from_instant(instant).every(self.interval)
    }

    /// The same interval, anchored on `date`.
    pub fn moved_to_date(self, date: NaiveDate) -> Self {
        Self::from_date(date).every(self.interval)
    }

    /// `YYYY-MM-DD` of period 0's start (a billing day past the month's
    /// end shows as the month's last day).
    pub fn date_text(&self) -> String {
        self.period_date(0).format("%Y-%m-%d").to_string()
    }

    /// The local start date of period `k`.
    pub fn period_date(&self, k: u32) -> NaiveDate {
        let months = (self.year as i64) * 12
            + (self.month as i64 - 1)
            + k as i64 * i64::from(self.interval.months());
        let year = months.div_euclid(12) as i32;
        let month = months.rem_euclid(12) as u32 + 1;
        let day = self.day.min(days_in_month(year, month));
        // `day` is clamped to the month's length, so the date exists.
        NaiveDate::from_ymd_opt(year, month, day).unwrap_or(NaiveDate::MIN)
    }

    /// The instant period `k` becomes due: 00:00 in Seoul on its start date.
    /// (Korea has no daylight saving time, so local midnight always exists.)
    pub fn period_start(&self, k: u32) -> DateTime<Utc> {
        let midnight = self.period_date(k).and_hms_opt(0, 0, 0).unwrap_or_default();
        BILLING_TZ
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| midnight.and_utc())
    }

    pub fn period_id(&self, k: u32) -> PeriodId {
        let d = self.period_date(k);
        PeriodId(format!("{:04}{:02}", d.year(), d.month()))
    }
}

/// A plan's fixed billing day (issue 25 §2, decision 77): every
/// subscription of the plan bills on this day of the month (clamped to a
/// shorter month's last day), whatever day it signed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingDay {
    /// 1 to 31.
    pub day: u8,
    /// What the first, partial period (sign-up to the first billing day)
    /// costs.
    pub first: FirstPeriod,
}

/// The first, partial period of a billing-day plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPeriod {
    /// Nothing: the first charge is on the first billing day.
    Free,
    /// One charge at sign-up for the days to the first billing day, the
    /// plan's price × those days ÷ the days of the billing period they fall
    /// in, rounded down to the won (the default).
    Prorated,
    /// The plan's price at sign-up, for the partial period.
    Full,
}

impl FirstPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Prorated => "prorated",
            Self::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Free, Self::Prorated, Self::Full]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// The days of the month a billing day may name.
pub const BILLING_DAYS: std::ops::RangeInclusive<u8> = 1..=31;

/// A billing-day calendar for a sign-up on `today`: the anchor is the
/// billing date on or before `today` (day `billing.day`, clamped), so
/// period 0 is the billing period the sign-up falls in; the days from
/// `today` to period 1's start are the partial first period (`days` of the
/// period's `of`). `None` when `today` is a billing date itself: an
/// ordinary calendar anchored today.
pub fn aligned(
    today: NaiveDate,
    billing: BillingDay,
    interval: Interval,
) -> Option<(Anchor, u32, u32)> {
    let day = u32::from(billing.day);
    let in_month = |y: i32, m: u32| day.min(days_in_month(y, m));
    let (mut y, mut m) = (today.year(), today.month());
    if in_month(y, m) == today.day() {
        return None;
    }
    if in_month(y, m) > today.day() {
        // The billing date of the month before.
        (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    }
    let anchor = Anchor {
        year: y,
        month: m,
        day,
        interval,
    };
    let (start, next) = (anchor.period_date(0), anchor.period_date(1));
    let days = u32::try_from((next - today).num_days()).unwrap_or(0);
    let of = u32::try_from((next - start).num_days()).unwrap_or(1).max(1);
    Some((anchor, days, of))
}

pub fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|first_of_next| first_of_next.pred_opt())
        .map_or(28, |last| last.day())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn jan_31_clamps_to_feb_end_and_returns_to_31() {
        let a = Anchor::new(2027, 1, 31).unwrap();
        assert_eq!(a.period_date(0), date(2027, 1, 31));
        assert_eq!(a.period_date(1), date(2027, 2, 28));
        assert_eq!(a.period_date(2), date(2027, 3, 31));
        assert_eq!(a.period_date(3), date(2027, 4, 30));
        assert_eq!(a.period_date(4), date(2027, 5, 31));
        let leap = Anchor::new(2028, 1, 31).unwrap();
        assert_eq!(leap.period_date(1), date(2028, 2, 29));
        assert_eq!(leap.period_date(2), date(2028, 3, 31));
    }

    /// A yearly plan anchored on 29 February bills on 28 February in
    /// common years and on the 29th in leap years; N months step N months.
    #[test]
    fn longer_intervals_step_from_the_anchor_and_clamp_the_same_way() {
        let leap = Anchor::new(2028, 2, 29).unwrap().every(Interval::Year);
        assert_eq!(leap.period_date(1), date(2029, 2, 28));
        assert_eq!(leap.period_date(4), date(2032, 2, 29));
        assert_eq!(leap.period_id(1).as_str(), "202902");
        let quarterly = Anchor::new(2026, 11, 30)
            .unwrap()
            .every(Interval::Months(3));
        assert_eq!(quarterly.period_date(1), date(2027, 2, 28));
        assert_eq!(quarterly.period_date(2), date(2027, 5, 30));
        assert_eq!(quarterly.period_id(4).as_str(), "202711");
        let moved = quarterly.moved_to(leap.period_start(0));
        assert_eq!((moved.year, moved.month, moved.day), (2028, 2, 29));
        assert_eq!(moved.interval, Interval::Months(3));
    }

    /// Decision 77: the anchor is the billing date on or before the
    /// sign-up; the partial period runs to the next one.
    #[test]
    fn a_billing_day_anchors_on_the_billing_date_before_the_sign_up() {
        let b = |day| BillingDay {
            day,
            first: FirstPeriod::Prorated,
        };
        // 7 December, billing on the 1st: from 1 December, 25 of 31 days.
        let (a, days, of) = aligned(date(2026, 12, 7), b(1), Interval::Month).unwrap();
        assert_eq!(
            (a.period_date(0), a.period_date(1)),
            (date(2026, 12, 1), date(2027, 1, 1))
        );
        assert_eq!((days, of), (25, 31));
        assert_eq!(a.period_id(0).as_str(), "202612");
        // 7 December, billing on the 25th: from 25 November, 18 of 30 days.
        let (a, days, of) = aligned(date(2026, 12, 7), b(25), Interval::Month).unwrap();
        assert_eq!(
            (a.period_date(0), a.period_date(1)),
            (date(2026, 11, 25), date(2026, 12, 25))
        );
        assert_eq!((days, of), (18, 30));
        // The 31st: clamped in February, the 31st again in March.
        let (a, days, _) = aligned(date(2027, 3, 5), b(31), Interval::Month).unwrap();
        assert_eq!(
            (a.period_date(0), a.period_date(1), a.period_date(2)),
            (date(2027, 2, 28), date(2027, 3, 31), date(2027, 4, 30))
        );
        assert_eq!(days, 26);
        assert_eq!(a.date_text(), "2027-02-28");
        // Signed up on the billing date (or its clamped day): no partial period.
        assert!(aligned(date(2026, 12, 1), b(1), Interval::Month).is_none());
        assert!(aligned(date(2027, 2, 28), b(31), Interval::Month).is_none());
        // A yearly plan: the partial period is most of a year.
        let (a, days, of) = aligned(date(2026, 12, 7), b(1), Interval::Year).unwrap();
        assert_eq!(a.period_date(1), date(2027, 12, 1));
        assert_eq!((days, of), (359, 365));
    }

    #[test]
    fn intervals_parse_strictly() {
        for (s, i) in [
            ("month", Interval::Month),
            ("year", Interval::Year),
            ("months:2", Interval::Months(2)),
            ("months:12", Interval::Months(12)),
        ] {
            assert_eq!(Interval::parse(s), Some(i), "{s}");
            assert_eq!(i.label(), s);
        }
        for s in [
            "months:1",
            "months:13",
            "months:0",
            "months:",
            "months:+3",
            "months: 3",
            "monthly",
            "Year",
            "months:003",
        ] {
            assert_eq!(Interval::parse(s), None, "{s}");
        }
    }

    #[test]
    fn period_starts_at_seoul_midnight() {
        let a = Anchor::new(2026, 11, 25).unwrap();
        // 2026-12-25 00:00 KST == 2026-12-24 15:00 UTC
        assert_eq!(a.period_start(1).to_rfc3339(), "2026-12-24T15:00:00+00:00");
        assert_eq!(a.period_id(1).as_str(), "202612");
        assert_eq!(a.period_id(2).as_str(), "202701");
    }

    #[test]
    fn anchor_uses_the_seoul_date_not_the_utc_date() {
        // 2026-11-30 16:00 UTC is already Dec 1 in Seoul.
        let t = DateTime::parse_from_rfc3339("2026-11-30T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Anchor::from_instant(t), Anchor::new(2026, 12, 1).unwrap());
    }

    #[test]
    fn period_id_parse_is_strict() {
        assert!(PeriodId::parse("202612").is_some());
        assert!(PeriodId::parse("202613").is_none());
        assert!(PeriodId::parse("20261").is_none());
        assert!(PeriodId::parse("2026a2").is_none());
    }

    proptest! {
        #[test]
        fn periods_never_drift(y in 1990i32..2200, m in 1u32..=12, d in 1u32..=31, k in 0u32..600) {
            prop_assume!(NaiveDate::from_ymd_opt(y, m, d).is_some());
            let a = Anchor::new(y, m, d).unwrap();
            let p = a.period_date(k);
            // exactly k months after the anchor month
            let months = (p.year() - y) as i64 * 12 + p.month() as i64 - m as i64;
            prop_assert_eq!(months, k as i64);
            // the anchor day, or the month's last day when the month is shorter
            prop_assert_eq!(p.day(), d.min(days_in_month(p.year(), p.month())));
        }

        #[test]
        fn periods_strictly_increase_and_ids_are_unique(y in 2000i32..2100, m in 1u32..=12, d in 1u32..=31, k in 0u32..240) {
            prop_assume!(NaiveDate::from_ymd_opt(y, m, d).is_some());
            let a = Anchor::new(y, m, d).unwrap();
            prop_assert!(a.period_start(k) < a.period_start(k + 1));
            prop_assert_ne!(a.period_id(k), a.period_id(k + 1));
            let gap = a.period_start(k + 1) - a.period_start(k);
            prop_assert!(gap.num_days() >= 28 && gap.num_days() <= 31);
        }

        #[test]
        fn every_interval_steps_whole_months_from_the_anchor(y in 2000i32..2100, m in 1u32..=12, d in 1u32..=31, n in 1u8..=12, k in 0u32..60) {
            prop_assume!(NaiveDate::from_ymd_opt(y, m, d).is_some());
            let interval = if n == 1 { Interval::Month } else { Interval::Months(n) };
            let a = Anchor::new(y, m, d).unwrap().every(interval);
            let p = a.period_date(k);
            let months = (p.year() - y) as i64 * 12 + p.month() as i64 - m as i64;
            prop_assert_eq!(months, i64::from(k) * i64::from(n));
            prop_assert_eq!(p.day(), d.min(days_in_month(p.year(), p.month())));
            prop_assert!(a.period_start(k) < a.period_start(k + 1));
            prop_assert_ne!(a.period_id(k), a.period_id(k + 1));
        }
    }
}
