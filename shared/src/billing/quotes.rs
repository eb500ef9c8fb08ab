//! What a mid-term cancel gives back (issue 23 §4; 여신전문금융업감독규정 and
//! the KFTC's 2025 guideline: a subscription cancelled during a paid period
//! is refunded for the days not used). Pure: the period in force, its days
//! in Seoul, the rule that applies and the amount, in whole won.
//!
//! - Days are Seoul calendar days of the paid period, its real length
//!   (28–31). The day of the cancel counts as used.
//! - `withdrawal_7d`: the merchant says the service was not used and the
//!   charge is at most 7 days old (전자상거래법 §17 청약철회): everything left.
//! - `prorata_daily`: the unused days' share, rounded down to the won.
//! - `prorata_daily_minus_fee`: the same less `CANCEL_FEE_PERCENT` (0–10)
//!   of it, rounded down.
//!
//! Never more than is left to refund of the charge; a quote holds until the
//! end of its Seoul day at most, so the day count it gave cannot change
//! under it.

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};

use super::calendar::{BILLING_TZ, PeriodId};
use super::entities::{AttemptState, ChargeAttempt, Subscription};
use super::state::SubscriptionStatus;

/// How long a quote holds at most (less when the Seoul day ends sooner).
pub const QUOTE_VALID: chrono::Duration = chrono::Duration::minutes(15);
/// The cancellation fee's ceiling, in percent of the prorated amount.
pub const MAX_FEE_PERCENT: u8 = 10;
/// The withdrawal window after a charge.
const WITHDRAWAL: chrono::Duration = chrono::Duration::days(7);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundRule {
    Withdrawal7d,
    ProrataDaily,
    ProrataDailyMinusFee { percent: u8 },
}

impl RefundRule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Withdrawal7d => "withdrawal_7d",
            Self::ProrataDaily => "prorata_daily",
            Self::ProrataDailyMinusFee { .. } => "prorata_daily_minus_fee",
        }
    }
}

/// A mid-term cancel's refund, as of `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The paid charge it refunds.
    pub merchant_uid: String,
    pub period: PeriodId,
    /// Seoul dates: the period's first day and the first day after it.
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub days_total: u32,
    pub days_used: u32,
    pub paid: i64,
    pub already_refunded: i64,
    pub rule: RefundRule,
    /// Whole KRW, at most `paid − already_refunded`.
    pub refund: i64,
    pub at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// Why there is no quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoQuote {
    #[error("the subscription has ended")]
    Ended,
    /// Nothing paid covers today (a `past_due` period, a sign-up not yet
    /// charged, a paid period already over).
    #[error("nothing paid covers today: there is nothing to refund")]
    NothingPaidNow,
    /// The paid charge's record is not the one the subscription names.
    #[error("the paid charge of {0} is not on record")]
    NoPaidCharge(PeriodId),
}

/// What the merchant says about the cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// The service was not used since the charge (full refund within 7 days).
    pub unused: bool,
    /// `CANCEL_FEE_PERCENT`, 0–[`MAX_FEE_PERCENT`].
    pub fee_percent: u8,
}

/// The period `sub` has paid for that includes `at`'s Seoul day, as its
/// index, if any.
fn paid_period_now(sub: &Subscription, today: NaiveDate) -> Option<u32> {
    let paid = sub.paid_through.as_ref()?;
    let k = (0..=sub.period_index)
        .rev()
        .find(|k| sub.anchor.period_id(*k) == *paid)?;
    let (start, end) = (sub.anchor.period_date(k), sub.anchor.period_date(k + 1));
    (start <= today && today < end).then_some(k)
}

/// The refund for cancelling `sub` at `at`, from `charge` (the paid
/// attempt of the period in force).
pub fn quote(
    sub: &Subscription,
    charge: Option<&ChargeAttempt>,
    terms: Terms,
    at: DateTime<Utc>,
) -> Result<Quote, NoQuote> {
    if sub.status == SubscriptionStatus::Cancelled {
        return Err(NoQuote::Ended);
    }
    let today = at.with_timezone(&BILLING_TZ).date_naive();
    let k = paid_period_now(sub, today).ok_or(NoQuote::NothingPaidNow)?;
    let period = sub.anchor.period_id(k);
    let charge = charge
        .filter(|c| c.period == period && c.state == AttemptState::Paid)
        .ok_or_else(|| NoQuote::NoPaidCharge(period.clone()))?;
    // A billing-day plan's partial first period was charged for the days
    // from the sign-up on (decision 77): those are its days.
    let signed_up = sub.created_at.with_timezone(&BILLING_TZ).date_naive();
    let (start, end) = (
        sub.anchor.period_date(k).max(signed_up),
        sub.anchor.period_date(k + 1),
    );
    let days_total = u32::try_from((end - start).num_days()).unwrap_or(1).max(1);
    let days_used = u32::try_from((today - start).num_days() + 1)
        .unwrap_or(1)
        .clamp(1, days_total);
    let left = (charge.amount - charge.refunded).max(0);
    let recent = charge.paid_at.is_some_and(|p| at - p <= WITHDRAWAL);
    let fee_percent = terms.fee_percent.min(MAX_FEE_PERCENT);
    let (rule, refund) = if terms.unused && recent {
        (RefundRule::Withdrawal7d, left)
    } else {
        let unused_days = i64::from(days_total - days_used);
        let prorated = charge.amount * unused_days / i64::from(days_total);
        if fee_percent == 0 {
            (RefundRule::ProrataDaily, prorated)
        } else {
            let fee = prorated * i64::from(fee_percent) / 100;
            (
                RefundRule::ProrataDailyMinusFee {
                    percent: fee_percent,
                },
                prorated - fee,
            )
        }
    };
    let midnight = today
        .checked_add_days(Days::new(1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|t| BILLING_TZ.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(at);
    Ok(Quote {
        merchant_uid: charge.merchant_uid.clone(),
        period,
        period_start: start,
        period_end: end,
        days_total,
        days_used,
        paid: charge.amount,
        already_refunded: charge.refunded,
        rule,
        refund: refund.clamp(0, left),
        at,
        valid_until: (at + QUOTE_VALID).min(midnight),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Anchor, Interval};
    use crate::testing;

    use crate::testing::instant as kst;

    /// Anchored on `anchor`, period `k` paid (9,900 KRW at its start).
    fn paid(anchor: Anchor, k: u32) -> (Subscription, ChargeAttempt) {
        let mut sub = testing::subscription("sub0quoting0", anchor);
        sub.period_index = k;
        let mut charge = testing::attempt(&sub, AttemptState::Paid);
        charge.paid_at = Some(anchor.period_start(k));
        sub.paid_through = Some(sub.anchor.period_id(k));
        sub.period_index = k + 1;
        sub.next_charge_at = anchor.period_start(k + 1);
        (sub, charge)
    }

    const PRORATA: Terms = Terms {
        unused: false,
        fee_percent: 0,
    };

    fn anchor(y: i32, m: u32, d: u32) -> Anchor {
        Anchor::new(y, m, d).unwrap_or_else(|| panic!("{y}-{m}-{d}"))
    }

    #[test]
    fn the_unused_days_of_the_real_period_are_refunded_rounded_down() {
        // 2027-02-01 .. 2027-03-01: 28 days; cancelled on the 11th (11 used).
        let (sub, charge) = paid(anchor(2027, 1, 1), 1);
        let q = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2027-02-11T12:00:00+09:00"),
        );
        let q = q.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((q.days_total, q.days_used), (28, 11));
        assert_eq!(q.rule, RefundRule::ProrataDaily);
        // 9,900 × 17 / 28 = 6,010.7…
        assert_eq!(q.refund, 6010);
        assert_eq!(q.period.as_str(), "202702");
        // A 31-day period.
        let (sub, charge) = paid(anchor(2027, 1, 1), 0);
        let q = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2027-01-01T09:00:00+09:00"),
        );
        let q = q.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (q.days_total, q.days_used, q.refund),
            (31, 1, 9900 * 30 / 31)
        );
    }

    /// A yearly plan's quote counts the days of its year (decision 75).
    #[test]
    fn a_yearly_period_counts_the_days_of_its_year() {
        // 2027-01-01 .. 2028-01-01: 365 days; cancelled on 1 April (day 91).
        let (mut sub, mut charge) = paid(anchor(2027, 1, 1).every(Interval::Year), 0);
        charge.amount = 99_000;
        sub.plan.amount = 99_000;
        let q = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2027-04-01T12:00:00+09:00"),
        );
        let q = q.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((q.days_total, q.days_used), (365, 91));
        assert_eq!(q.refund, 99_000 * 274 / 365);
        assert_eq!(q.period.as_str(), "202701");
        // A leap year's period has 366.
        let (sub, charge) = paid(anchor(2028, 1, 1).every(Interval::Year), 0);
        let q = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2028-01-01T12:00:00+09:00"),
        );
        assert_eq!(q.map(|q| q.days_total), Ok(366));
    }

    #[test]
    fn the_day_turns_at_midnight_in_seoul_and_a_quote_never_outlives_its_day() {
        let (sub, charge) = paid(anchor(2027, 1, 1), 1);
        let before = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2027-02-10T23:59:59+09:00"),
        );
        let after = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2027-02-11T00:00:00+09:00"),
        );
        let (before, after) = (before.unwrap(), after.unwrap());
        assert_eq!((before.days_used, after.days_used), (10, 11));
        assert!(before.refund > after.refund);
        assert_eq!(before.valid_until, kst("2027-02-11T00:00:00+09:00"));
        assert_eq!(after.valid_until, kst("2027-02-11T00:15:00+09:00"));
        // The last day of the period: nothing left to refund but the quote stands.
        let last = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2027-02-28T18:00:00+09:00"),
        );
        assert_eq!(last.map(|q| (q.days_used, q.refund)), Ok((28, 0)));
    }

    #[test]
    fn a_withdrawal_within_seven_days_of_an_unused_service_refunds_everything_left() {
        let (sub, mut charge) = paid(anchor(2027, 1, 1), 1);
        charge.refunded = 1000;
        let unused = Terms {
            unused: true,
            fee_percent: 10,
        };
        let q = quote(
            &sub,
            Some(&charge),
            unused,
            kst("2027-02-08T00:00:00+09:00"),
        );
        assert_eq!(
            q.map(|q| (q.rule, q.refund)),
            Ok((RefundRule::Withdrawal7d, 8900))
        );
        // Eight days after the charge, it is prorated (and the fee applies).
        let q = quote(
            &sub,
            Some(&charge),
            unused,
            kst("2027-02-09T00:00:01+09:00"),
        );
        let q = q.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.rule, RefundRule::ProrataDailyMinusFee { percent: 10 });
        // 9,900 × 19 / 28 = 6,717; less 10 % (671) = 6,046; 8,900 are left.
        assert_eq!(q.refund, 6046);
    }

    #[test]
    fn a_quote_never_refunds_more_than_is_left_and_the_fee_is_capped() {
        let (sub, mut charge) = paid(anchor(2027, 1, 1), 1);
        charge.refunded = 9000;
        let q = quote(
            &sub,
            Some(&charge),
            PRORATA,
            kst("2027-02-02T10:00:00+09:00"),
        );
        assert_eq!(q.map(|q| q.refund), Ok(900));
        charge.refunded = 0;
        let greedy = Terms {
            unused: false,
            fee_percent: 90,
        };
        let q = quote(
            &sub,
            Some(&charge),
            greedy,
            kst("2027-02-15T10:00:00+09:00"),
        );
        let q = q.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.rule, RefundRule::ProrataDailyMinusFee { percent: 10 });
        // 9,900 × 13 / 28 = 4,596; less 459 = 4,137.
        assert_eq!(q.refund, 4137);
    }

    #[test]
    fn nothing_paid_now_or_ended_is_no_quote() {
        let (mut sub, charge) = paid(anchor(2027, 1, 1), 1);
        // February is paid; in March (past due) nothing paid covers the day.
        let march = kst("2027-03-05T10:00:00+09:00");
        assert_eq!(
            quote(&sub, Some(&charge), PRORATA, march),
            Err(NoQuote::NothingPaidNow)
        );
        let feb = kst("2027-02-05T10:00:00+09:00");
        assert!(matches!(
            quote(&sub, None, PRORATA, feb),
            Err(NoQuote::NoPaidCharge(_))
        ));
        let mut failed = charge.clone();
        failed.state = AttemptState::Failed;
        assert!(matches!(
            quote(&sub, Some(&failed), PRORATA, feb),
            Err(NoQuote::NoPaidCharge(_))
        ));
        sub.status = SubscriptionStatus::Cancelled;
        assert_eq!(
            quote(&sub, Some(&charge), PRORATA, feb),
            Err(NoQuote::Ended)
        );
        sub.status = SubscriptionStatus::Active;
        sub.paid_through = None;
        assert_eq!(
            quote(&sub, Some(&charge), PRORATA, feb),
            Err(NoQuote::NothingPaidNow)
        );
    }
}
