//! What happens after a declined charge: retry offsets and the final state.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};

use super::BILLING_TZ;
use super::state::SubscriptionStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningPolicy {
    /// Retry `n` (1-based) is due `retry_offsets[n-1]` after the period's due
    /// instant. Default +1 day, +3 days, +7 days.
    pub retry_offsets: Vec<Duration>,
    /// The status after the last retry is declined too.
    pub final_status: SubscriptionStatus,
    /// `DUNNING_RETRY_HOUR`: Seoul hours the retries run at, taken in turn
    /// (retry 1 at the first, retry 2 at the next, …), so that successive
    /// retries meet the card at different times of day (a check card funded
    /// on payday). Empty: a retry is due at its offset's instant.
    pub retry_hours: Vec<u32>,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self {
            retry_offsets: vec![Duration::days(1), Duration::days(3), Duration::days(7)],
            final_status: SubscriptionStatus::Suspended,
            retry_hours: Vec::new(),
        }
    }
}

/// The decision after attempt `attempt` of a period was declined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DunningStep {
    /// Try again as attempt `attempt`, due at `at`.
    Retry { attempt: u32, at: DateTime<Utc> },
    /// No more retries: move to this status.
    GiveUp { status: SubscriptionStatus },
}

impl DunningPolicy {
    /// Offsets count from the period's due instant, so a replayed or late run
    /// computes the same schedule. A retry whose time has passed is due at once.
    pub fn after_decline(&self, period_due: DateTime<Utc>, failed_attempt: u32) -> DunningStep {
        let retry = failed_attempt.saturating_sub(1) as usize;
        match self.retry_offsets.get(retry) {
            Some(offset) => DunningStep::Retry {
                attempt: failed_attempt + 1,
                at: self.at_retry_hour(period_due + *offset, retry),
            },
            None => DunningStep::GiveUp {
                status: self.final_status,
            },
        }
    }

    /// `at` moved to retry `retry`'s (0-based) hour: that hour of `at`'s
    /// Seoul day, or of the next day when it has passed.
    fn at_retry_hour(&self, at: DateTime<Utc>, retry: usize) -> DateTime<Utc> {
        let Some(&hour) = self.retry_hours.get(retry % self.retry_hours.len().max(1)) else {
            return at;
        };
        let Some(time) = NaiveTime::from_hms_opt(hour, 0, 0) else {
            return at;
        };
        let day = at.with_timezone(&BILLING_TZ).date_naive();
        // Seoul has no daylight saving: every local time exists once.
        let on = |d: chrono::NaiveDate| {
            BILLING_TZ
                .from_local_datetime(&d.and_time(time))
                .single()
                .map(|t| t.with_timezone(&Utc))
        };
        match on(day) {
            Some(t) if t >= at => t,
            _ => day.succ_opt().and_then(on).unwrap_or(at),
        }
    }

    /// Parses `DUNNING_RETRY_HOUR`: Seoul hours, `"10,18"` or `"10:00,18:00"`,
    /// each on the hour, 0–23, none twice.
    pub fn parse_hours(spec: &str) -> Result<Vec<u32>, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            let hour = part.strip_suffix(":00").unwrap_or(part);
            let hour: u32 = hour.parse().ok().filter(|h| *h < 24).ok_or_else(|| {
                format!("retry hour {part:?} is not an hour 0-23 (on the hour, e.g. 10 or 10:00)")
            })?;
            if out.contains(&hour) {
                return Err(format!("retry hour {hour} is listed twice in {spec:?}"));
            }
            out.push(hour);
        }
        Ok(out)
    }

    /// How many attempts a period gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.retry_offsets.len() as u32 + 1
    }

    /// Parses `"1,3,7"` (days). Offsets must be positive and increasing.
    pub fn parse_days(spec: &str) -> Result<Vec<Duration>, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut last = 0i64;
        for part in spec.split(',') {
            let days: i64 = part
                .trim()
                .parse()
                .map_err(|_| format!("retry offset {part:?} is not a whole number of days"))?;
            if days <= last || days > 60 {
                return Err(format!(
                    "retry offsets must increase and lie within 1..=60 days, got {spec:?}"
                ));
            }
            last = days;
            out.push(Duration::days(days));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_hours_are_taken_in_turn_on_the_retry_day_in_seoul() {
        let p = DunningPolicy {
            retry_hours: DunningPolicy::parse_hours("10:00, 18").unwrap(),
            ..DunningPolicy::default()
        };
        // Due at 00:00 Seoul on 25 December.
        let due = DateTime::parse_from_rfc3339("2026-12-24T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |n| match p.after_decline(due, n) {
            DunningStep::Retry { at, .. } => at.with_timezone(&BILLING_TZ).to_rfc3339(),
            other => panic!("{other:?}"),
        };
        assert_eq!(at(1), "2026-12-26T10:00:00+09:00");
        assert_eq!(at(2), "2026-12-28T18:00:00+09:00");
        assert_eq!(at(3), "2027-01-01T10:00:00+09:00");
        // A due time past the hour goes to the next day's.
        let late = due + Duration::hours(20);
        match p.after_decline(late, 1) {
            DunningStep::Retry { at, .. } => assert_eq!(
                at.with_timezone(&BILLING_TZ).to_rfc3339(),
                "2026-12-27T10:00:00+09:00"
            ),
            other => panic!("{other:?}"),
        }
        for bad in ["24", "10:30", "ten", "10,10"] {
            assert!(DunningPolicy::parse_hours(bad).is_err(), "{bad}");
        }
        assert_eq!(DunningPolicy::parse_hours(" ").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn default_policy_walks_1_3_7_then_suspends() {
        let p = DunningPolicy::default();
        let due = DateTime::parse_from_rfc3339("2026-12-24T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            p.after_decline(due, 1),
            DunningStep::Retry {
                attempt: 2,
                at: due + Duration::days(1)
            }
        );
        assert_eq!(
            p.after_decline(due, 2),
            DunningStep::Retry {
                attempt: 3,
                at: due + Duration::days(3)
            }
        );
        assert_eq!(
            p.after_decline(due, 3),
            DunningStep::Retry {
                attempt: 4,
                at: due + Duration::days(7)
            }
        );
        assert_eq!(
            p.after_decline(due, 4),
            DunningStep::GiveUp {
                status: SubscriptionStatus::Suspended
            }
        );
        assert_eq!(p.max_attempts(), 4);
    }

    #[test]
    fn parse_days_rejects_nonsense() {
        assert_eq!(DunningPolicy::parse_days("1, 3,7").unwrap().len(), 3);
        assert!(DunningPolicy::parse_days("").unwrap().is_empty());
        assert!(DunningPolicy::parse_days("3,1").is_err());
        assert!(DunningPolicy::parse_days("0").is_err());
        assert!(DunningPolicy::parse_days("x").is_err());
        assert!(DunningPolicy::parse_days("1,99").is_err());
    }
}
