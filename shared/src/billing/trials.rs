//! Free trials (issue 23 §2, decision 68): a sign-up that issues the key
//! without charging, and a conversion to paid that needs the customer's
//! consent (전자상거래법 §13⑥: taken separately, in the 30 days before the
//! conversion). Pure rules: when a trial ends, whether it converts, what a
//! consent may be, and what follows a trial's end without one.
//!
//! A trialing subscription is an ordinary one whose first period (0) starts
//! at the trial's end: anchored on that Seoul date, `next_charge_at` is the
//! conversion, and the daily run reaches it through the due index like any
//! charge. Before it claims period 0, the run asks [`Subscription::conversion`]:
//! without a consent the trial lapses ([`lapsed`]) and nothing is charged.

use chrono::{DateTime, Duration, Utc};

use super::calendar::{Anchor, BILLING_TZ};
use super::entities::Subscription;
use super::state::{Event, SubscriptionStatus};

/// The trial lengths a plan may set, in Seoul days counting the sign-up
/// day (0: no trial).
pub const TRIAL_DAYS: std::ops::RangeInclusive<u16> = 0..=365;
/// A trial's end is announced at least this many days before it (the card
/// rules' text notice 7 days before a free → paid conversion).
pub const TRIAL_NOTICE_DAYS: u16 = 7;
/// The days before a change in which a consent to it counts (the decree's
/// "30일 이내"); `CONSENT_WINDOW_DAYS` may narrow it.
pub const MAX_CONSENT_WINDOW_DAYS: u16 = 30;

/// When the customer agrees to the conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversionConsent {
    /// With the sign-up, as a separate tick the merchant records with its
    /// evidence. Only for trials no longer than the consent window.
    Signup,
    /// Later: the conversion waits for `POST /subscriptions/{id}/consent`
    /// inside the window before the trial's end.
    Explicit,
}

impl ConversionConsent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Explicit => "explicit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Signup, Self::Explicit]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What a trial's end without a consent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNoConsent {
    /// The subscription ends; nothing is charged.
    Cancel,
    /// The trial runs once more for as long again (a second chance to
    /// consent); then it ends like `Cancel`.
    ExtendTrialOnce,
}

impl OnNoConsent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::ExtendTrialOnce => "extend_trial_once",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Cancel, Self::ExtendTrialOnce]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A plan's trial, copied into the registration and the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialTerms {
    /// 1–365 Seoul days, the sign-up day counted.
    pub days: u16,
    pub consent: ConversionConsent,
    pub on_no_consent: OnNoConsent,
}

/// What the merchant shows as the customer's consent: where it was given
/// (`web`, `app`, `kakao`, …), its reference in the merchant's records
/// (the consent log's id), and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub channel: String,
    pub reference: String,
    /// When the customer consented.
    pub at: DateTime<Utc>,
    /// When it was recorded here.
    pub recorded_at: DateTime<Utc>,
}

/// A subscription's trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub terms: TrialTerms,
    /// The conversion: the first period's start (Seoul midnight).
    pub ends_at: DateTime<Utc>,
    /// Extended once already (`extend_trial_once`).
    pub extended: bool,
    pub consent: Option<Consent>,
}

/// Whether a trialing subscription whose first period is due converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Not in a trial: charged as ever.
    NotATrial,
    /// Consented: period 0 is charged.
    Consented,
    /// No consent: nothing is charged, and [`lapsed`] says what follows.
    Lapses,
}

/// The anchor and the end of a trial of `days` starting at `now`: the
/// Seoul date `days` after the sign-up's, at midnight (a 14-day trial
/// signed up on 3 December is charged on 17 December, 00:00 KST).
pub fn trial_end(days: u16, now: DateTime<Utc>) -> (Anchor, DateTime<Utc>) {
    let date = now.with_timezone(&BILLING_TZ).date_naive() + Duration::days(i64::from(days));
    let anchor = Anchor::from_date(date);
    (anchor, anchor.period_start(0))
}

/// Whether `consent` counts for a conversion at `ends_at`: taken in the
/// [`MAX_CONSENT_WINDOW_DAYS`] before it.
pub fn counts(consent: &Consent, ends_at: DateTime<Utc>) -> bool {
    consent.at >= ends_at - Duration::days(i64::from(MAX_CONSENT_WINDOW_DAYS))
        && consent.at < ends_at
}

/// The `cancel_reason` of a trial that ended without a consent.
pub const LAPSED: &str = "trial ended without consent to convert";

/// Why a consent was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// The subscription is not in a trial (converted, lapsed, cancelled).
    #[error("the subscription is not in a trial (status {0})")]
    NotTrialing(&'static str),
    /// The trial's end has come: it converts or lapses at the next run.
    #[error("the trial ended at {0}; a consent now is too late")]
    Ended(DateTime<Utc>),
    /// Before the window: a consent this early does not count.
    #[error("a consent counts only in the {window} days before the conversion; from {opens_at}")]
    TooEarly {
        window: u16,
        opens_at: DateTime<Utc>,
    },
    /// The evidence's time is not inside the window, or in the future.
    #[error("{0}")]
    BadEvidence(String),
}

impl Subscription {
    /// Whether its first period converts a trial, at its charge.
    /// A consent counts only if it was taken in the 30 days before the
    /// trial's end as it stands (the law's window, whatever the setting).
    pub fn conversion(&self) -> Conversion {
        match &self.trial {
            Some(t) if self.status == SubscriptionStatus::Trialing => {
                if t.consent.as_ref().is_some_and(|c| counts(c, t.ends_at)) {
                    Conversion::Consented
                } else {
                    Conversion::Lapses
                }
            }
            _ => Conversion::NotATrial,
        }
    }

    /// When the consent window of its trial opens.
    pub fn consent_opens_at(&self, window_days: u16) -> Option<DateTime<Utc>> {
        let t = self.trial.as_ref()?;
        Some(t.ends_at - Duration::days(i64::from(window_days)))
    }
}

/// The subscription one version later with `consent` to convert recorded,
/// at `now`; `Ok(None)` when a consent is recorded already (two consents
/// are one record: the first stands). `window_days` is the consent window.
pub fn consented(
    sub: &Subscription,
    channel: &str,
    reference: &str,
    at: DateTime<Utc>,
    window_days: u16,
    now: DateTime<Utc>,
) -> Result<Option<Subscription>, ConsentError> {
    let trial = match &sub.trial {
        Some(t) if sub.status == SubscriptionStatus::Trialing => t,
        _ => return Err(ConsentError::NotTrialing(sub.status.as_str())),
    };
    if trial.consent.is_some() {
        return Ok(None);
    }
    if now >= trial.ends_at {
        return Err(ConsentError::Ended(trial.ends_at));
    }
    let opens_at = trial.ends_at - Duration::days(i64::from(window_days));
    if now < opens_at {
        return Err(ConsentError::TooEarly {
            window: window_days,
            opens_at,
        });
    }
    if at < opens_at || at >= trial.ends_at {
        return Err(ConsentError::BadEvidence(format!(
            "evidence.at must be inside the consent window, from {opens_at} to before {}",
            trial.ends_at
        )));
    }
    if at > now + Duration::minutes(5) {
        return Err(ConsentError::BadEvidence(
            "evidence.at is in the future".into(),
        ));
    }
    let mut next = sub.next_version(now);
    if let Some(t) = next.trial.as_mut() {
        t.consent = Some(Consent {
            channel: channel.to_owned(),
            reference: reference.to_owned(),
            at,
            recorded_at: now,
        });
    }
    Ok(Some(next))
}

/// The subscription one version later after its trial ended without a
/// consent, at `now`: extended once more for as long again
/// (`extend_trial_once`, the first time), or cancelled. `None` when it is
/// not a lapsing trial.
pub fn lapsed(sub: &Subscription, now: DateTime<Utc>) -> Option<Subscription> {
    if sub.conversion() != Conversion::Lapses {
        return None;
    }
    let trial = sub.trial.as_ref()?;
    let mut next = sub.next_version(now);
    // A trial the customer cancelled at its end is not extended.
    if trial.terms.on_no_consent == OnNoConsent::ExtendTrialOnce
        && !trial.extended
        && !sub.cancel_at_period_end
    {
        let (anchor, ends_at) = trial_end(trial.terms.days, trial.ends_at);
        next.anchor = anchor.every(sub.anchor.interval);
        next.next_charge_at = ends_at;
        next.notice = None;
        if let Some(t) = next.trial.as_mut() {
            t.ends_at = ends_at;
            t.extended = true;
        }
        return Some(next);
    }
    next.status = sub.status.apply(Event::Cancel).ok()?;
    next.ended_at = Some(now);
    if !sub.cancel_at_period_end {
        next.cancel_reason = Some(LAPSED.into());
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn trialing(terms: TrialTerms, now: DateTime<Utc>) -> Subscription {
        crate::testing::trialing("k3m9x2p7q4w8", terms, now)
    }

    const EXPLICIT: TrialTerms = TrialTerms {
        days: 14,
        consent: ConversionConsent::Explicit,
        on_no_consent: OnNoConsent::Cancel,
    };

    #[test]
    fn a_trial_ends_at_seoul_midnight_its_days_after_the_sign_up_date() {
        // 3 December 23:30 KST is 14:30 UTC; 14 days later is 17 December KST.
        let (anchor, ends) = trial_end(14, t("2026-12-03T14:30:00Z"));
        assert_eq!((anchor.year, anchor.month, anchor.day), (2026, 12, 17));
        assert_eq!(ends, t("2026-12-16T15:00:00Z"));
        // 00:30 KST on 4 December is another Seoul day.
        let (_, ends) = trial_end(14, t("2026-12-03T15:30:00Z"));
        assert_eq!(ends, t("2026-12-17T15:00:00Z"));
    }

    #[test]
    fn a_consent_counts_only_inside_the_window_and_once() {
        let now = t("2026-12-03T03:00:00Z");
        let sub = trialing(
            TrialTerms {
                days: 60,
                ..EXPLICIT
            },
            now,
        );
        let ends = sub.trial.as_ref().map(|t| t.ends_at).unwrap_or(now);
        assert!(matches!(
            consented(&sub, "web", "c-1", now, 30, now),
            Err(ConsentError::TooEarly { window: 30, .. })
        ));
        let inside = ends - Duration::days(10);
        let early_evidence = ends - Duration::days(31);
        assert!(matches!(
            consented(&sub, "web", "c-1", early_evidence, 30, inside),
            Err(ConsentError::BadEvidence(_))
        ));
        let future = inside + Duration::hours(1);
        assert!(matches!(
            consented(&sub, "web", "c-1", future, 30, inside),
            Err(ConsentError::BadEvidence(_))
        ));
        let next = consented(&sub, "web", "c-1", inside, 30, inside)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("recorded"));
        assert_eq!(next.conversion(), Conversion::Consented);
        assert_eq!(next.version, sub.version + 1);
        // A second consent is the same record.
        assert_eq!(
            consented(&next, "app", "c-2", inside, 30, inside + Duration::hours(1)),
            Ok(None)
        );
        // At or after the end: too late, whatever the evidence says.
        let fresh = trialing(EXPLICIT, now);
        let end = fresh.next_charge_at;
        assert_eq!(
            consented(&fresh, "web", "c-9", end - Duration::hours(1), 30, end),
            Err(ConsentError::Ended(end))
        );
        let mut cancelled = next.clone();
        cancelled.status = SubscriptionStatus::Cancelled;
        assert!(matches!(
            consented(&cancelled, "web", "c-1", inside, 30, inside),
            Err(ConsentError::NotTrialing("cancelled"))
        ));
    }

    #[test]
    fn a_trial_without_consent_is_cancelled_or_extended_once() {
        let now = t("2026-12-03T03:00:00Z");
        let sub = trialing(EXPLICIT, now);
        assert_eq!(sub.conversion(), Conversion::Lapses);
        let ended = lapsed(&sub, now + Duration::days(14)).unwrap_or_else(|| panic!("lapses"));
        assert_eq!(ended.status, SubscriptionStatus::Cancelled);
        assert!(!ended.status.is_chargeable());

        let extending = trialing(
            TrialTerms {
                on_no_consent: OnNoConsent::ExtendTrialOnce,
                ..EXPLICIT
            },
            now,
        );
        let first_end = extending.next_charge_at;
        let extended = lapsed(&extending, first_end).unwrap_or_else(|| panic!("extends"));
        assert_eq!(extended.status, SubscriptionStatus::Trialing);
        assert_eq!(extended.next_charge_at, first_end + Duration::days(14));
        assert_eq!(
            extended.trial.as_ref().map(|t| (t.ends_at, t.extended)),
            Some((extended.next_charge_at, true))
        );
        assert_eq!(extended.current_period(), extended.anchor.period_id(0));
        let ended = lapsed(&extended, extended.next_charge_at).unwrap_or_else(|| panic!("ends"));
        assert_eq!(ended.status, SubscriptionStatus::Cancelled);
        // A consented trial does not lapse; nor does a paying subscription.
        let mut consented_sub = sub.clone();
        if let Some(t) = consented_sub.trial.as_mut() {
            t.consent = Some(Consent {
                channel: "web".into(),
                reference: "c".into(),
                at: now,
                recorded_at: now,
            });
        }
        assert_eq!(lapsed(&consented_sub, now + Duration::days(14)), None);
        let mut paying = sub.clone();
        paying.status = SubscriptionStatus::Active;
        assert_eq!(paying.conversion(), Conversion::NotATrial);
        // Cancelled at its end by the customer: not extended, their reason kept.
        let mut leaving = extending.clone();
        leaving.cancel_at_period_end = true;
        leaving.cancel_reason = Some("not for me".into());
        let left = lapsed(&leaving, first_end).unwrap_or_else(|| panic!("ends"));
        assert_eq!(left.status, SubscriptionStatus::Cancelled);
        assert_eq!(left.cancel_reason.as_deref(), Some("not for me"));
        // A consent more than 30 days before the end does not convert it.
        let mut stale = sub;
        if let Some(t) = stale.trial.as_mut() {
            t.consent = Some(Consent {
                channel: "web".into(),
                reference: "c".into(),
                at: t.ends_at - Duration::days(31),
                recorded_at: t.ends_at - Duration::days(31),
            });
        }
        assert_eq!(stale.conversion(), Conversion::Lapses);
    }
}
