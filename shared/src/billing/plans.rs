//! Plans as records (issue 23 §0): what a merchant sells, stored once and
//! referred to by id and version. A version never changes once written: a
//! new price is a new version, and a subscription keeps the version it
//! agreed to (`Subscription::plan_ref`) until a change moves it. The
//! amount and name a charge uses are still copied into the subscription
//! (`Plan`), so a charge never reads the catalogue.

use chrono::{DateTime, Utc};

use super::entities::Plan;
use super::notices::{DEFAULT_NOTICE_DAYS, NOTICE_DAYS};
use super::tax::TaxSetting;
use super::trials::{
    ConversionConsent, MAX_CONSENT_WINDOW_DAYS, OnNoConsent, TRIAL_DAYS, TrialTerms,
};

/// Smallest and largest price of one period, whole KRW (as `prepare` has
/// always accepted).
pub const PLAN_AMOUNT: std::ops::RangeInclusive<i64> = 100..=10_000_000;
/// A plan's name is sent to the PG as the payment's `name`.
pub const PLAN_NAME_MAX: usize = 40;
const PLAN_ID_MAX: usize = 40;

/// A plan's id: 1–40 of `a-z`, `0-9` and `-`, starting with a letter or a
/// digit. Chosen by the merchant (`basic-monthly`), or generated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlanId(String);

impl PlanId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= PLAN_ID_MAX
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PlanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

use super::calendar::BILLING_DAYS;
pub use super::calendar::{BillingDay, FirstPeriod, Interval};

/// One version of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    pub id: PlanId,
    /// 1 for a new plan; each price change writes the next.
    pub version: u32,
    pub name: String,
    /// Whole KRW per period.
    pub amount: i64,
    pub interval: Interval,
    /// Days before each renewal its notice goes out (0: none).
    pub notice_days: u16,
    /// Its free trial, if any.
    pub trial: Option<TrialTerms>,
    /// How its charges split for VAT (decision 73).
    pub tax: TaxSetting,
    /// Its fixed billing day, if it has one (decision 77).
    pub billing: Option<BillingDay>,
    pub created_at: DateTime<Utc>,
}

impl PlanRecord {
    /// What a subscription to this version is charged.
    pub fn plan(&self) -> Plan {
        Plan {
            amount: self.amount,
            name: self.name.clone(),
            notice_days: self.notice_days,
            tax: self.tax,
        }
    }

    pub fn reference(&self) -> PlanRef {
        PlanRef {
            id: self.id.clone(),
            version: self.version,
        }
    }
}

/// Which plan version a registration or subscription agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRef {
    pub id: PlanId,
    pub version: u32,
}

/// A new plan as the merchant asks for it, before it is checked.
#[derive(Debug, Clone)]
pub struct NewPlan {
    pub id: Option<String>,
    pub name: String,
    pub amount: i64,
    pub currency: Option<String>,
    pub interval: Option<String>,
    /// Default [`DEFAULT_NOTICE_DAYS`].
    pub notice_days: Option<i64>,
    /// 0–365; default 0 (no trial).
    pub trial_days: Option<i64>,
    /// `signup` or `explicit` (the default).
    pub conversion_consent: Option<String>,
    /// `cancel` (the default) or `extend_trial_once`.
    pub on_no_consent: Option<String>,
    /// `taxable` (the default), `exempt` or `mixed`.
    pub tax: Option<String>,
    /// A mixed plan's tax-free part, whole KRW.
    pub tax_free_amount: Option<i64>,
    /// 1–31: every subscription bills on this day (decision 77).
    pub billing_day: Option<i64>,
    /// With `billing_day`: `free`, `prorated` (the default) or `full`.
    pub first_period: Option<String>,
}

/// Why a new plan was refused (the API answers 400 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPlan(pub String);

/// Checks `new` and makes version 1 of it, created at `now`; `generated`
/// is the id used when the merchant gave none.
pub fn new_plan(
    new: NewPlan,
    generated: PlanId,
    now: DateTime<Utc>,
) -> Result<PlanRecord, InvalidPlan> {
    let bad = |m: &str| Err(InvalidPlan(m.to_owned()));
    let id = match new.id.as_deref() {
        None => generated,
        Some(s) => match PlanId::parse(s) {
            Some(id) => id,
            None => {
                return bad("id must have 1 to 40 of a-z, 0-9 and '-', and not start with '-'");
            }
        },
    };
    let name_len = new.name.chars().count();
    if name_len == 0 || name_len > PLAN_NAME_MAX || new.name.chars().any(char::is_control) {
        return bad("name must have 1 to 40 characters and no control characters");
    }
    if !PLAN_AMOUNT.contains(&new.amount) {
        return bad("amount must be a whole KRW amount from 100 to 10,000,000");
    }
    if new.currency.as_deref().is_some_and(|c| c != "KRW") {
        return bad("currency must be KRW (billing keys charge won)");
    }
    let interval = match new.interval.as_deref() {
        None => Interval::Month,
        Some(s) => match Interval::parse(s) {
            Some(i) => i,
            None => return bad("interval must be month, year or months:N with N from 2 to 12"),
        },
    };
    let notice_days = match new.notice_days {
        None => DEFAULT_NOTICE_DAYS,
        Some(d) => match u16::try_from(d).ok().filter(|d| NOTICE_DAYS.contains(d)) {
            Some(d) => d,
            None => return bad("notice_days must be a whole number of days from 0 to 14"),
        },
    };
    let trial = trial_terms(&new)?;
    let tax = TaxSetting::from_input(new.tax.as_deref(), new.tax_free_amount, new.amount)
        .map_err(InvalidPlan)?;
    let billing = billing_day(&new)?;
    if billing.is_some() && trial.is_some() {
        return bad("a plan has a billing_day or a trial, not both (not supported together yet)");
    }
    Ok(PlanRecord {
        id,
        version: 1,
        name: new.name,
        amount: new.amount,
        interval,
        notice_days,
        trial,
        tax,
        billing,
        created_at: now,
    })
}

/// A new plan's billing day: `None` without one; `first_period` means
/// something only with one, so it is refused alone.
fn billing_day(new: &NewPlan) -> Result<Option<BillingDay>, InvalidPlan> {
    let bad = |m: &str| Err(InvalidPlan(m.to_owned()));
    let Some(day) = new.billing_day else {
        if new.first_period.is_some() {
            return bad("first_period applies to a plan with a billing_day");
        }
        return Ok(None);
    };
    let Some(day) = u8::try_from(day).ok().filter(|d| BILLING_DAYS.contains(d)) else {
        return bad(
            "billing_day must be a day of the month from 1 to 31 (29-31 bill on a shorter month's last day)",
        );
    };
    let first = match new.first_period.as_deref() {
        None => FirstPeriod::Prorated,
        Some(f) => match FirstPeriod::parse(f) {
            Some(f) => f,
            None => return bad("first_period must be free, prorated or full"),
        },
    };
    Ok(Some(BillingDay { day, first }))
}

/// A new plan's trial: `None` for 0 days. The consent and no-consent
/// settings mean something only with a trial, so they are refused without
/// one; a consent taken at sign-up counts only for a trial that ends
/// inside the consent window (at most 30 days).
fn trial_terms(new: &NewPlan) -> Result<Option<TrialTerms>, InvalidPlan> {
    let bad = |m: &str| Err(InvalidPlan(m.to_owned()));
    let days = match new.trial_days {
        None => 0,
        Some(d) => match u16::try_from(d).ok().filter(|d| TRIAL_DAYS.contains(d)) {
            Some(d) => d,
            None => return bad("trial_days must be a whole number of days from 0 to 365"),
        },
    };
    let consent = match new.conversion_consent.as_deref() {
        None => ConversionConsent::Explicit,
        Some(c) => match ConversionConsent::parse(c) {
            Some(c) => c,
            None => return bad("conversion_consent must be signup or explicit"),
        },
    };
    let on_no_consent = match new.on_no_consent.as_deref() {
        None => OnNoConsent::Cancel,
        Some(c) => match OnNoConsent::parse(c) {
            Some(c) => c,
            None => return bad("on_no_consent must be cancel or extend_trial_once"),
        },
    };
    if days == 0 {
        if new.conversion_consent.is_some() || new.on_no_consent.is_some() {
            return bad("conversion_consent and on_no_consent apply to a trial: set trial_days");
        }
        return Ok(None);
    }
    if consent == ConversionConsent::Signup && days > MAX_CONSENT_WINDOW_DAYS {
        return bad(
            "a consent taken at sign-up counts only in the 30 days before the conversion: \
             a trial longer than 30 days needs conversion_consent explicit",
        );
    }
    Ok(Some(TrialTerms {
        days,
        consent,
        on_no_consent,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(id: Option<&str>, name: &str, amount: i64) -> NewPlan {
        NewPlan {
            id: id.map(str::to_owned),
            name: name.to_owned(),
            amount,
            currency: None,
            interval: None,
            notice_days: None,
            trial_days: None,
            conversion_consent: None,
            on_no_consent: None,
            tax: None,
            tax_free_amount: None,
            billing_day: None,
            first_period: None,
        }
    }

    fn generated() -> PlanId {
        PlanId::parse("plgenerated01").unwrap_or_else(|| PlanId("x".into()))
    }

    #[test]
    fn a_valid_plan_is_version_one_of_its_id() {
        let now = Utc::now();
        let p = new_plan(
            asked(Some("basic-monthly"), "베이직 월간", 9900),
            generated(),
            now,
        );
        let p = p.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.id.as_str(), "basic-monthly");
        assert_eq!(
            (p.version, p.amount, p.interval),
            (1, 9900, Interval::Month)
        );
        assert_eq!(
            p.plan(),
            Plan {
                amount: 9900,
                name: "베이직 월간".into(),
                notice_days: DEFAULT_NOTICE_DAYS,
                tax: crate::billing::TaxSetting::Taxable,
            }
        );
        let anonymous = new_plan(asked(None, "n", 100), generated(), now);
        assert_eq!(anonymous.map(|p| p.id), Ok(generated()));
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let now = Utc::now();
        let refused = |new: NewPlan| new_plan(new, generated(), now).err().map(|e| e.0);
        for id in [
            "",
            "-basic",
            "Basic",
            "basic monthly",
            "a/b",
            &"x".repeat(41),
        ] {
            assert!(refused(asked(Some(id), "n", 9900)).is_some(), "{id:?}");
        }
        assert!(refused(asked(None, "", 9900)).is_some());
        assert!(refused(asked(None, &"가".repeat(41), 9900)).is_some());
        assert!(refused(asked(None, "a\nb", 9900)).is_some());
        for amount in [0, 99, -100, 10_000_001] {
            assert!(refused(asked(None, "n", amount)).is_some(), "{amount}");
        }
        let mut usd = asked(None, "n", 9900);
        usd.currency = Some("USD".into());
        assert_eq!(
            refused(usd).as_deref(),
            Some("currency must be KRW (billing keys charge won)")
        );
        for bad in ["months:13", "months:1", "weekly", "months:0"] {
            let mut odd = asked(None, "n", 9900);
            odd.interval = Some(bad.into());
            assert_eq!(
                refused(odd).as_deref(),
                Some("interval must be month, year or months:N with N from 2 to 12"),
                "{bad}"
            );
        }
        let mut yearly = asked(None, "n", 99_000);
        yearly.interval = Some("year".into());
        assert_eq!(
            new_plan(yearly, generated(), now).map(|p| p.interval),
            Ok(Interval::Year)
        );
        for days in [-1, 15, 365] {
            let mut asked = asked(None, "n", 9900);
            asked.notice_days = Some(days);
            assert_eq!(
                refused(asked).as_deref(),
                Some("notice_days must be a whole number of days from 0 to 14"),
                "{days}"
            );
        }
        let mut quiet = asked(None, "n", 9900);
        quiet.notice_days = Some(0);
        assert_eq!(
            new_plan(quiet, generated(), now).map(|p| p.notice_days),
            Ok(0)
        );
    }

    #[test]
    fn a_billing_day_is_a_day_of_the_month_with_its_first_period() {
        let now = Utc::now();
        let with = |day: Option<i64>, first: Option<&str>, trial: Option<i64>| {
            let mut a = asked(None, "n", 9900);
            a.billing_day = day;
            a.first_period = first.map(str::to_owned);
            a.trial_days = trial;
            new_plan(a, generated(), now).map(|p| p.billing)
        };
        assert_eq!(with(None, None, None), Ok(None));
        assert_eq!(
            with(Some(1), None, None),
            Ok(Some(BillingDay {
                day: 1,
                first: FirstPeriod::Prorated
            }))
        );
        assert_eq!(
            with(Some(31), Some("free"), None),
            Ok(Some(BillingDay {
                day: 31,
                first: FirstPeriod::Free
            }))
        );
        for (day, first) in [
            (Some(0), None),
            (Some(32), None),
            (Some(-1), None),
            (Some(5), Some("half")),
            (None, Some("full")),
        ] {
            assert!(with(day, first, None).is_err(), "{day:?} {first:?}");
        }
        assert!(with(Some(5), None, Some(14)).is_err(), "with a trial");
    }

    #[test]
    fn a_trial_is_a_plan_setting_with_a_lawful_consent() {
        let now = Utc::now();
        let with = |days: Option<i64>, consent: Option<&str>, none: Option<&str>| {
            let mut a = asked(None, "n", 9900);
            a.trial_days = days;
            a.conversion_consent = consent.map(str::to_owned);
            a.on_no_consent = none.map(str::to_owned);
            new_plan(a, generated(), now).map(|p| p.trial)
        };
        assert_eq!(with(None, None, None), Ok(None));
        assert_eq!(
            with(Some(14), None, None),
            Ok(Some(TrialTerms {
                days: 14,
                consent: ConversionConsent::Explicit,
                on_no_consent: OnNoConsent::Cancel,
            }))
        );
        assert_eq!(
            with(Some(30), Some("signup"), Some("extend_trial_once")),
            Ok(Some(TrialTerms {
                days: 30,
                consent: ConversionConsent::Signup,
                on_no_consent: OnNoConsent::ExtendTrialOnce,
            }))
        );
        // A consent at sign-up would be more than 30 days before the conversion.
        assert!(with(Some(31), Some("signup"), None).is_err());
        assert!(with(Some(366), None, None).is_err());
        assert!(with(Some(-1), None, None).is_err());
        assert!(with(Some(7), Some("later"), None).is_err());
        assert!(with(Some(7), None, Some("charge")).is_err());
        // Consent settings without a trial mean nothing: refused, not ignored.
        assert!(with(Some(0), Some("signup"), None).is_err());
        assert!(with(None, None, Some("cancel")).is_err());
    }

    #[test]
    fn plan_ids_are_safe_in_keys_and_urls() {
        assert!(PlanId::parse("pro-2027").is_some());
        assert!(PlanId::parse(&"a".repeat(40)).is_some());
        // '#' separates the key's parts in the table; '/' a URL's.
        assert!(PlanId::parse("a#1").is_none());
        assert!(PlanId::parse("a/1").is_none());
    }
}
