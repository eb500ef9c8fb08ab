//! What happens after a declined charge: retry offsets and the final state.

use chrono::{DateTime, Duration, Utc};

use super::state::SubscriptionStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningPolicy {
    /// Retry `n` (1-based) is due `retry_offsets[n-1]` after the period's due
    /// instant. Default +1 day, +3 days, +7 days.
    pub retry_offsets: Vec<Duration>,
    /// The status after the last retry is declined too.
    pub final_status: SubscriptionStatus,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self {
            retry_offsets: vec![Duration::days(1), Duration::days(3), Duration::days(7)],
            final_status: SubscriptionStatus::Suspended,
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
        match self
            .retry_offsets
            .get(failed_attempt.saturating_sub(1) as usize)
        {
            Some(offset) => DunningStep::Retry {
                attempt: failed_attempt + 1,
                at: period_due + *offset,
            },
            None => DunningStep::GiveUp {
                status: self.final_status,
            },
        }
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
