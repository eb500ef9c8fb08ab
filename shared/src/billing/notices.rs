//! Notices before a charge (issue 23 §1, decision 66): when a subscription's
//! renewal notice is due, and what sending one changes.
//!
//! A subscription that will renew (active, its next period not tried yet,
//! not set to end) is noticed once per period, `plan.notice_days` before
//! its charge. The notice's due time is part of the subscription's place in
//! the due index ([`Subscription::due_at`]), so the daily run finds it by
//! the index it already reads, and a run that was missed catches up until
//! the charge itself is due. Recording the notice is a version-checked
//! write of the subscription: at most one notice per (subscription,
//! period), and the lifecycle event is derived from that write with an id
//! made of the subscription and the period, the same on every replay.

use chrono::{DateTime, Duration, Utc};

use super::calendar::PeriodId;
use super::entities::Subscription;
use super::state::SubscriptionStatus;
use super::trials::TRIAL_NOTICE_DAYS;

/// The notice days of a plan that does not say (and of the deprecated
/// amount-and-name plans).
pub const DEFAULT_NOTICE_DAYS: u16 = 7;
/// The notice days a plan may set: 0 turns renewal notices off; at most
/// 14, so that a notice always comes after the period before was charged
/// (the shortest period is 28 days) and can name the amount of the next.
pub const NOTICE_DAYS: std::ops::RangeInclusive<u16> = 0..=14;

/// What a notice told the merchant's notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// `subscription.renewal_upcoming`: the key is on file; the period will
    /// be charged at `charge_at`.
    RenewalUpcoming,
    /// `payment_method.action_required`: the PG no longer has the billing
    /// key; without a new card the charge at `charge_at` will fail.
    ActionRequired,
    /// `subscription.trial_will_end`: the free trial converts to paid at
    /// `charge_at` (with a consent; the event says whether one is still
    /// needed). At least [`TRIAL_NOTICE_DAYS`] days before.
    TrialWillEnd,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RenewalUpcoming => "renewal_upcoming",
            Self::ActionRequired => "action_required",
            Self::TrialWillEnd => "trial_will_end",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "renewal_upcoming" => Some(Self::RenewalUpcoming),
            "action_required" => Some(Self::ActionRequired),
            "trial_will_end" => Some(Self::TrialWillEnd),
            _ => None,
        }
    }
}

/// The newest notice a subscription was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentNotice {
    /// The period it announced.
    pub period: PeriodId,
    pub kind: NoticeKind,
    /// What that period will be charged, whole KRW.
    pub amount: i64,
    /// When the charge is due.
    pub charge_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    /// Whether the PG answered the key check (a notice is sent even when it
    /// did not: the notice is owed, the check is a courtesy).
    pub key_checked: bool,
}

/// What the key check at the PG found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    OnFile,
    Missing,
    /// The PG did not answer clearly (down, timed out).
    Unknown,
}

impl Subscription {
    /// When the notice of the period to charge next is due, if one is owed:
    /// a renewal (not the sign-up's own period, which the customer just
    /// agreed to), active, `plan.notice_days` (above 0) before it; or a
    /// trial's conversion, at least [`TRIAL_NOTICE_DAYS`] before it (the
    /// card rules' notice, owed whatever the plan's days). Either only if
    /// the period is not tried yet and not announced, the subscription not
    /// set to end and not re-anchoring on an outstanding period.
    pub fn notice_at(&self) -> Option<DateTime<Utc>> {
        let days = match self.status {
            // (The rest of a period a pause ended in is charged the day it
            // resumes, on the customer's word: not a renewal, not noticed.)
            SubscriptionStatus::Active
                if self.period_index >= 1
                    && self.plan.notice_days > 0
                    && self.partial.is_none_or(|p| p.index != self.period_index) =>
            {
                self.plan.notice_days
            }
            SubscriptionStatus::Trialing if self.period_index == 0 => {
                self.plan.notice_days.max(TRIAL_NOTICE_DAYS)
            }
            _ => return None,
        };
        // (A trial's period 0 has a second attempt only after its sign-up
        // took money and a person resolved it as not paid: still told.)
        let owed = (self.attempt == 1 || self.status == SubscriptionStatus::Trialing)
            && !self.cancel_at_period_end
            && !self.reanchor_on_payment
            && !self.ends_on_declined_increase()
            && self
                .notice
                .as_ref()
                .is_none_or(|n| n.period != self.current_period());
        owed.then(|| self.next_charge_at - Duration::days(i64::from(days)))
    }

    /// The days before its next charge its notice goes out (0: none).
    pub fn notice_days(&self) -> u16 {
        match self.status {
            SubscriptionStatus::Trialing => self.plan.notice_days.max(TRIAL_NOTICE_DAYS),
            _ => self.plan.notice_days,
        }
    }

    /// Its place in the due index: the earliest of its notice, its price
    /// change's consent request (`billing::price_changes`) and its charge,
    /// while it can be charged; `None` keeps it out of the index.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        if self.status == SubscriptionStatus::Paused {
            return Some(self.paused_due_at());
        }
        if !self.status.is_chargeable() {
            return None;
        }
        Some(
            [self.notice_at(), self.consent_request_at()]
                .into_iter()
                .flatten()
                .fold(self.next_charge_at, DateTime::min),
        )
    }

    /// Whether its notice is due at `now`. A renewal's is moot once the
    /// charge is due (the run charges); a trial's never is: a trial
    /// converts only [`TRIAL_NOTICE_DAYS`] after it was told, so a notice
    /// the runs missed still goes out, and moves the conversion.
    pub fn notice_due(&self, now: DateTime<Utc>) -> bool {
        self.notice_at().is_some_and(|at| at <= now)
            && (now < self.next_charge_at || self.status == SubscriptionStatus::Trialing)
    }
}

/// The subscription one version later with its notice recorded, as of
/// `now`, given what the key check found.
pub fn noticed(sub: &Subscription, check: KeyCheck, now: DateTime<Utc>) -> Subscription {
    let mut next = sub.next_version(now);
    // A trial told late (a trial shorter than the notice, missed runs)
    // converts no sooner than 7 Seoul days after the day it was told.
    let (anchor, ends_at) = super::trials::trial_end(TRIAL_NOTICE_DAYS, now);
    if sub.status == SubscriptionStatus::Trialing && sub.next_charge_at < ends_at {
        next.anchor = anchor.every(sub.anchor.interval);
        next.next_charge_at = ends_at;
        if let Some(t) = next.trial.as_mut() {
            t.ends_at = ends_at;
            // A consent counts only in the 30 days before the conversion: one
            // the later end leaves behind is asked for again (the notice says
            // so); its record stays in the audit trail and the events.
            let window = Duration::days(i64::from(super::trials::MAX_CONSENT_WINDOW_DAYS));
            if t.consent.as_ref().is_some_and(|c| c.at < ends_at - window) {
                t.consent = None;
            }
        }
    }
    next.notice = Some(SentNotice {
        period: next.current_period(),
        kind: match check {
            KeyCheck::Missing => NoticeKind::ActionRequired,
            KeyCheck::OnFile | KeyCheck::Unknown if sub.status == SubscriptionStatus::Trialing => {
                NoticeKind::TrialWillEnd
            }
            KeyCheck::OnFile | KeyCheck::Unknown => NoticeKind::RenewalUpcoming,
        },
        // A price change in force that needs no answer, or has its consent.
        amount: sub.charge_due(),
        charge_at: next.next_charge_at,
        sent_at: now,
        key_checked: check != KeyCheck::Unknown,
    });
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Anchor;
    use chrono::TimeZone;

    fn sub() -> Subscription {
        let anchor = Anchor::new(2026, 1, 31).unwrap_or_else(|| panic!("anchor"));
        let mut s = crate::testing::subscription("k3m9x2p7q4w8", anchor);
        s.period_index = 1;
        s.attempt = 1;
        s.next_charge_at = anchor.period_start(1);
        s
    }

    #[test]
    fn a_renewal_is_noticed_its_plans_days_before_the_charge() {
        let s = sub();
        // The 28 February charge (31 January anchor, clamped), 7 days before.
        assert_eq!(
            s.next_charge_at,
            Utc.with_ymd_and_hms(2026, 2, 27, 15, 0, 0).unwrap()
        );
        let at = s.notice_at().unwrap_or_else(|| panic!("owed"));
        assert_eq!(at, s.next_charge_at - Duration::days(7));
        assert_eq!(s.due_at(), Some(at));
        assert!(!s.notice_due(at - Duration::seconds(1)));
        assert!(s.notice_due(at));
        assert!(!s.notice_due(s.next_charge_at), "the charge is due: moot");
    }

    #[test]
    fn a_notice_is_recorded_once_per_period() {
        let s = sub();
        let at = s.notice_at().unwrap_or_else(|| panic!("owed"));
        let sent = noticed(&s, KeyCheck::OnFile, at);
        assert_eq!(sent.version, s.version + 1);
        let n = sent.notice.clone().unwrap_or_else(|| panic!("recorded"));
        assert_eq!(
            (n.period, n.kind, n.amount, n.charge_at, n.key_checked),
            (
                s.current_period(),
                NoticeKind::RenewalUpcoming,
                s.plan.amount,
                s.next_charge_at,
                true
            )
        );
        assert_eq!(sent.notice_at(), None, "announced");
        assert_eq!(sent.due_at(), Some(s.next_charge_at), "back at its charge");
        // The next period is owed its own notice.
        let mut later = sent.clone();
        later.period_index += 1;
        later.next_charge_at = later.anchor.period_start(2);
        assert!(later.notice_at().is_some());
        let missing = noticed(&s, KeyCheck::Missing, at);
        assert_eq!(
            missing.notice.map(|n| n.kind),
            Some(NoticeKind::ActionRequired)
        );
        let unclear = noticed(&s, KeyCheck::Unknown, at);
        assert_eq!(
            unclear.notice.map(|n| (n.kind, n.key_checked)),
            Some((NoticeKind::RenewalUpcoming, false))
        );
    }

    #[test]
    fn a_trial_is_noticed_at_least_seven_days_before_it_converts() {
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 3, 0, 0).unwrap();
        let terms = crate::billing::trials::TrialTerms {
            days: 30,
            consent: crate::billing::trials::ConversionConsent::Explicit,
            on_no_consent: crate::billing::trials::OnNoConsent::Cancel,
        };
        let mut s = crate::testing::trialing("k3m9x2p7q4w8", terms, now);
        let (anchor, ends_at) = (s.anchor, s.next_charge_at);
        // The plan's 3 days are raised to the card rules' 7; 0 too.
        for plan_days in [0, 3] {
            s.plan.notice_days = plan_days;
            assert_eq!(
                s.notice_at(),
                Some(ends_at - Duration::days(7)),
                "{plan_days}"
            );
        }
        s.plan.notice_days = 14;
        assert_eq!(s.notice_at(), Some(ends_at - Duration::days(14)));
        let at = ends_at - Duration::days(14);
        let sent = noticed(&s, KeyCheck::OnFile, at);
        let n = sent.notice.clone().unwrap_or_else(|| panic!("recorded"));
        assert_eq!(
            (n.kind, n.period),
            (NoticeKind::TrialWillEnd, anchor.period_id(0))
        );
        assert_eq!(sent.notice_at(), None, "announced once");
        assert_eq!(
            noticed(&s, KeyCheck::Missing, at).notice.map(|n| n.kind),
            Some(NoticeKind::ActionRequired)
        );
        // A trial shorter than the notice: due at once.
        let (anchor, ends_at) = crate::billing::trials::trial_end(3, now);
        let mut short = s.clone();
        short.anchor = anchor;
        short.next_charge_at = ends_at;
        short.notice = None;
        if let Some(t) = short.trial.as_mut() {
            t.ends_at = ends_at;
        }
        assert!(short.notice_due(now));
        // It converts no sooner than 7 days after it was told: its end moves.
        let told = noticed(&short, KeyCheck::OnFile, now);
        // Told on 3 December (Seoul): converts on 10 December, 00:00 KST.
        assert_eq!(
            told.next_charge_at,
            Utc.with_ymd_and_hms(2026, 12, 9, 15, 0, 0).unwrap()
        );
        assert_eq!(
            told.trial.as_ref().map(|t| t.ends_at),
            Some(told.next_charge_at)
        );
        let n = told.notice.clone().unwrap_or_else(|| panic!("recorded"));
        assert_eq!(
            (n.charge_at, n.period),
            (told.next_charge_at, told.current_period())
        );
        assert_eq!(told.notice_at(), None);
        // A consent the later end leaves more than 30 days behind is asked
        // for again.
        let mut consented = s.clone();
        let end = consented.next_charge_at;
        if let Some(t) = consented.trial.as_mut() {
            t.consent = Some(crate::billing::trials::Consent {
                channel: "web".into(),
                reference: "c".into(),
                at: end - Duration::days(29) - Duration::hours(12),
                recorded_at: end - Duration::days(29),
            });
        }
        let late = noticed(&consented, KeyCheck::OnFile, end - Duration::days(6));
        assert_eq!(late.next_charge_at, end + Duration::days(1));
        assert_eq!(late.trial.as_ref().and_then(|t| t.consent.clone()), None);
        let in_time = noticed(&consented, KeyCheck::OnFile, end - Duration::days(8));
        assert_eq!(in_time.next_charge_at, end, "told in time: nothing moves");
        assert!(in_time.trial.as_ref().is_some_and(|t| t.consent.is_some()));
        // Missed runs: still told after its end, never converted untold.
        let mut missed = short.clone();
        missed.plan.notice_days = 7;
        assert!(missed.notice_due(ends_at + Duration::days(2)));
    }

    #[test]
    fn no_notice_for_what_will_not_renew() {
        let base = sub();
        let mut cases = Vec::new();
        let mut ending = base.clone();
        ending.cancel_at_period_end = true;
        cases.push(("ending", ending));
        for status in [
            SubscriptionStatus::PastDue,
            SubscriptionStatus::NeedsReview,
            SubscriptionStatus::Cancelled,
            SubscriptionStatus::Suspended,
        ] {
            let mut s = base.clone();
            s.status = status;
            cases.push((status.as_str(), s));
        }
        let mut retry = base.clone();
        retry.attempt = 2;
        cases.push(("a retry", retry));
        let mut off = base.clone();
        off.plan.notice_days = 0;
        cases.push(("notices off", off));
        let mut signup = base.clone();
        signup.period_index = 0;
        cases.push(("the sign-up's period", signup));
        let mut outstanding = base.clone();
        outstanding.reanchor_on_payment = true;
        cases.push(("outstanding", outstanding));
        for (what, s) in cases {
            assert_eq!(s.notice_at(), None, "{what}");
            let expected = s.status.is_chargeable().then_some(s.next_charge_at);
            assert_eq!(s.due_at(), expected, "{what}");
        }
    }
}
