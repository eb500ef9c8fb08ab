//! Price changes that need consent (issue 23 §3, decision 69). Pure rules:
//! when a change may take effect, when its consent request goes out, what a
//! consent or a decline may be, and what the claim of its first period does.
//!
//! A price change is a record on the subscription ([`PriceChange`]): the new
//! plan version, the period it takes effect from, and the customer's answer.
//! A decrease needs no answer and applies at the first claim of its period.
//! An increase needs a consent taken in the 30 days before that period
//! starts (전자상거래법 §13⑥ and its decree; the KFTC guideline: without one
//! the automatic increase stops). Its consent request
//! (`subscription.price_change_requested`) goes out `CONSENT_WINDOW_DAYS`
//! before the period, found through the due index like a renewal notice
//! ([`Subscription::due_at`]). The one place a period is claimed asks
//! [`at_claim`] first: consented, the new price is charged; declined or
//! unanswered, `on_no_consent` applies (the subscription ends, or keeps its
//! old price); never asked (missed runs), or its consent left behind by a
//! moved calendar, it waits one period and is asked again.

use chrono::{DateTime, Duration, Utc};

use super::calendar::PeriodId;
use super::entities::{Plan, Subscription};
use super::plans::PlanRef;
use super::state::{Event, SubscriptionStatus};
use super::trials::{Consent, MAX_CONSENT_WINDOW_DAYS};

/// The `cancel_reason` of a subscription that ended because a price
/// increase was not consented to.
pub const NOT_CONSENTED: &str = "price increase not consented";

/// What an increase without a consent does at its effective period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNoConsent {
    /// The subscription ends when the last period at the old price ends;
    /// nothing is charged at the new price (the default).
    #[default]
    CancelAtPeriodEnd,
    /// The subscription goes on at the old price.
    KeepOldPrice,
}

impl OnNoConsent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CancelAtPeriodEnd => "cancel_at_period_end",
            Self::KeepOldPrice => "keep_old_price",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::CancelAtPeriodEnd, Self::KeepOldPrice]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// How a price change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new price is the subscription's from its effective period.
    Applied,
    /// Declined or unanswered: `on_no_consent` applied.
    NotConsented,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::NotConsented => "not_consented",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Applied, Self::NotConsented]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A subscription's price change, kept once it ended (until the next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceChange {
    /// The plan charged from `effective` on.
    pub plan: Plan,
    pub plan_ref: Option<PlanRef>,
    /// The amount it replaces.
    pub from_amount: i64,
    /// The first period at the new price.
    pub effective: PeriodId,
    pub on_no_consent: OnNoConsent,
    pub requested_at: DateTime<Utc>,
    /// When the consent request goes out (an increase only): the window
    /// before `effective` opens.
    pub asks_at: Option<DateTime<Utc>>,
    /// When it went out (the event's write).
    pub asked_at: Option<DateTime<Utc>>,
    pub consent: Option<Consent>,
    pub declined_at: Option<DateTime<Utc>>,
    /// How and when it ended; `None` while pending.
    pub closed: Option<(Outcome, DateTime<Utc>)>,
    /// The end of this coupon's discount, applied to the running
    /// subscription (decision 78): the plan stays, the discount ends.
    pub coupon: Option<super::coupons::CouponId>,
}

impl PriceChange {
    /// A change to a higher price: it needs a consent.
    pub fn is_increase(&self) -> bool {
        self.plan.amount > self.from_amount
    }

    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// An open increase nobody answered yet: whom to chase.
    pub fn awaits_consent(&self) -> bool {
        self.is_open() && self.is_increase() && self.consent.is_none() && self.declined_at.is_none()
    }
}

/// Why a price change, or an answer to one, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceChangeError {
    /// The subscription's state does not allow it (409).
    #[error("{0}")]
    NotAllowed(String),
    /// The effective period is sooner than the consent window allows, or
    /// is not one of the subscription's coming periods (422).
    #[error("the price can change from period {earliest} at the earliest: {why}")]
    TooSoon { earliest: PeriodId, why: String },
    /// Before the window: a consent this early does not count (409).
    #[error("a consent counts only in the {window} days before the change; from {opens_at}")]
    TooEarly {
        window: u16,
        opens_at: DateTime<Utc>,
    },
    /// The evidence's time is not inside the window, or in the future (422).
    #[error("{0}")]
    BadEvidence(String),
}

fn not_allowed<T>(why: impl Into<String>) -> Result<T, PriceChangeError> {
    Err(PriceChangeError::NotAllowed(why.into()))
}

impl Subscription {
    /// The index and start of `period` among its periods from the one to
    /// charge next on (at most ten years ahead).
    pub fn coming_period(&self, period: &PeriodId) -> Option<(u32, DateTime<Utc>)> {
        (self.period_index..self.period_index + 120)
            .find(|&k| self.anchor.period_id(k) == *period)
            .map(|k| (k, self.anchor.period_start(k)))
    }

    /// Its first period from the one to charge next that starts in month
    /// `from` or later: a plan-wide change's month (decision 71) on a
    /// calendar of N months or a year (decision 75), which may have no
    /// period starting in that very month.
    pub fn first_period_from(&self, from: &PeriodId) -> Option<PeriodId> {
        (self.period_index..self.period_index + 120)
            .map(|k| self.anchor.period_id(k))
            .find(|id| id >= from)
    }

    /// Its open price change, if one applies to the period to charge next.
    fn change_in_force(&self) -> Option<&PriceChange> {
        self.price_change
            .as_ref()
            .filter(|c| c.is_open() && self.current_period() >= c.effective)
    }

    /// What the period to charge next will be charged, as things stand: a
    /// price change in force that needs no answer, or has a consent,
    /// counts; one waiting for an answer does not (yet).
    pub fn amount_due(&self) -> i64 {
        match self.change_in_force() {
            Some(c) if !c.is_increase() || c.consent.is_some() => c.plan.amount,
            _ => self.plan.amount,
        }
    }

    /// What the period to charge next will be charged, as things stand:
    /// [`Subscription::amount_due`], for the period's share when it is
    /// had in part, less the discount of a coupon covering it (what a
    /// renewal notice tells).
    pub fn charge_due(&self) -> i64 {
        let price = self.amount_due();
        let base = match self.partial {
            Some(p) if p.index == self.period_index => p.price(price),
            _ => price,
        };
        match self.discount_in_force() {
            Some(d) => d.price(base),
            None => base,
        }
    }

    /// Whether the period to charge next ends it: an increase declined (or
    /// unanswered, at its claim) under `cancel_at_period_end`. Its renewal
    /// notice is not owed.
    pub fn ends_on_declined_increase(&self) -> bool {
        self.change_in_force().is_some_and(|c| {
            c.is_increase()
                && c.declined_at.is_some()
                && c.on_no_consent == OnNoConsent::CancelAtPeriodEnd
        })
    }

    /// Its place in the list of whom to chase for a consent
    /// (`GET /subscriptions?pending_consent=true`): when the request goes
    /// out, while an increase waits for an answer on a subscription that
    /// goes on.
    pub fn awaiting_consent_since(&self) -> Option<DateTime<Utc>> {
        let c = self.price_change.as_ref()?;
        if !c.awaits_consent() || self.cancel_at_period_end || !self.status.is_chargeable() {
            return None;
        }
        c.asks_at
    }

    /// When its price change's consent request is due, if one is owed.
    pub fn consent_request_at(&self) -> Option<DateTime<Utc>> {
        let c = self.price_change.as_ref()?;
        if !c.is_open()
            || c.asked_at.is_some()
            || self.cancel_at_period_end
            || !self.status.is_chargeable()
        {
            return None;
        }
        c.asks_at
    }
}

/// Why no new change of its price may be asked for now: it is set to end,
/// a price change (or a coupon's end, decision 78) is open, or a plan
/// change waits for the next period. One change at a time.
pub(super) fn change_pending(sub: &Subscription) -> Option<String> {
    if sub.cancel_at_period_end {
        return Some("the subscription is set to end at its period's end".into());
    }
    if let Some(c) = sub.price_change.as_ref().filter(|c| c.is_open()) {
        return Some(format!(
            "a price change to {} KRW from period {} is pending",
            c.plan.amount, c.effective
        ));
    }
    sub.pending_plan
        .is_some()
        .then(|| "a plan change is pending for the next period".into())
}

/// The periods a change may take effect from, as of `now`: the earliest
/// whose start leaves the consent window (`window_days`) for an increase;
/// for a decrease, the period to charge next unless `started` (it has an
/// attempt at the old price already), else the one after.
pub fn earliest(
    sub: &Subscription,
    increase: bool,
    window_days: u16,
    started: bool,
    now: DateTime<Utc>,
) -> (u32, PeriodId) {
    let first = sub.period_index + u32::from(started);
    let k = if increase {
        let from = now + Duration::days(i64::from(window_days));
        (first..first + 120)
            .find(|&k| sub.anchor.period_start(k) >= from)
            .unwrap_or(first)
    } else {
        first
    };
    (k, sub.anchor.period_id(k))
}

/// What `POST /subscriptions/{id}/price-change` asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub plan: Plan,
    pub plan_ref: Option<PlanRef>,
    pub effective: Option<&'a PeriodId>,
    pub on_no_consent: OnNoConsent,
    /// `CONSENT_WINDOW_DAYS`.
    pub window_days: u16,
    /// The period to charge next has an attempt already.
    pub started: bool,
}

/// The subscription one version later with `req` pending, at `now`.
pub fn requested(
    sub: &Subscription,
    req: Request<'_>,
    now: DateTime<Utc>,
) -> Result<Subscription, PriceChangeError> {
    use SubscriptionStatus as S;
    match sub.status {
        S::Cancelled => return not_allowed("the subscription has ended"),
        S::Pending => return not_allowed("the subscription has not started"),
        S::Trialing => {
            return not_allowed(
                "the subscription is in its trial: change its plan (POST /subscriptions/{id}/plan); \
                 the trial's consent to convert covers the price it converts at",
            );
        }
        _ => {}
    }
    if let Some(why) = change_pending(sub) {
        return not_allowed(why);
    }
    if req.plan.amount == sub.plan.amount {
        return not_allowed(format!(
            "the subscription is charged {} KRW already",
            sub.plan.amount
        ));
    }
    let increase = req.plan.amount > sub.plan.amount;
    let (first, earliest_id) = earliest(sub, increase, req.window_days, req.started, now);
    let (k, effective) = match req.effective {
        None => (first, earliest_id),
        Some(p) => match sub.coming_period(p) {
            Some((k, _)) if k >= first => (k, p.clone()),
            Some(_) => {
                let why = if increase {
                    format!(
                        "its consent request goes out {} days before it",
                        req.window_days
                    )
                } else {
                    "that period is being charged at the old price".into()
                };
                return Err(PriceChangeError::TooSoon {
                    earliest: earliest_id,
                    why,
                });
            }
            None => {
                return Err(PriceChangeError::TooSoon {
                    earliest: earliest_id,
                    why: format!("{p} is not one of the subscription's coming periods"),
                });
            }
        },
    };
    let mut next = sub.next_version(now);
    next.price_change = Some(PriceChange {
        plan: req.plan,
        plan_ref: req.plan_ref,
        from_amount: sub.plan.amount,
        effective,
        on_no_consent: req.on_no_consent,
        requested_at: now,
        asks_at: increase
            .then(|| sub.anchor.period_start(k) - Duration::days(i64::from(req.window_days))),
        asked_at: None,
        consent: None,
        declined_at: None,
        closed: None,
        coupon: None,
    });
    Ok(next)
}

/// The subscription one version later with its consent request sent.
pub fn asked(sub: &Subscription, now: DateTime<Utc>) -> Subscription {
    let mut next = sub.next_version(now);
    if let Some(c) = next.price_change.as_mut() {
        c.asked_at = Some(now);
    }
    next
}

/// An open increase and the start of its effective period.
fn open_increase(sub: &Subscription) -> Result<(&PriceChange, DateTime<Utc>), PriceChangeError> {
    let Some(c) = sub.price_change.as_ref() else {
        return not_allowed("no price change is pending");
    };
    match c.closed {
        Some((Outcome::Applied, at)) => {
            return not_allowed(format!("the price change took effect at {at}"));
        }
        Some((Outcome::NotConsented, at)) => {
            return not_allowed(format!("the price change lapsed at {at}"));
        }
        None => {}
    }
    if !c.is_increase() {
        return not_allowed("the price change lowers the price: it needs no answer");
    }
    if sub.status == SubscriptionStatus::Cancelled {
        return not_allowed("the subscription has ended");
    }
    let starts = sub
        .coming_period(&c.effective)
        .map_or(sub.next_charge_at, |(_, at)| at);
    Ok((c, starts))
}

/// The subscription one version later with the customer's `consent`
/// recorded, at `now`; `Ok(None)` when it is recorded already (two
/// consents are one record: the first stands).
pub fn consented(
    sub: &Subscription,
    consent: Consent,
    window_days: u16,
    now: DateTime<Utc>,
) -> Result<Option<Subscription>, PriceChangeError> {
    let (change, starts) = open_increase(sub)?;
    if change.consent.is_some() {
        return Ok(None);
    }
    if let Some(at) = change.declined_at {
        return not_allowed(format!("the customer declined the price change at {at}"));
    }
    if now >= starts {
        return not_allowed(format!(
            "the change's period began at {starts}; a consent now is too late"
        ));
    }
    let opens_at = starts - Duration::days(i64::from(window_days));
    if now < opens_at {
        return Err(PriceChangeError::TooEarly {
            window: window_days,
            opens_at,
        });
    }
    if consent.at < opens_at || consent.at >= starts {
        return Err(PriceChangeError::BadEvidence(format!(
            "evidence.at must be inside the consent window, from {opens_at} to before {starts}"
        )));
    }
    if consent.at > now + Duration::minutes(5) {
        return Err(PriceChangeError::BadEvidence(
            "evidence.at is in the future".into(),
        ));
    }
    let mut next = sub.next_version(now);
    if let Some(c) = next.price_change.as_mut() {
        c.consent = Some(consent);
    }
    Ok(Some(next))
}

/// The subscription one version later with the customer's decline
/// recorded, at `now`; `Ok(None)` when it is recorded already.
pub fn declined(
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<Subscription>, PriceChangeError> {
    let (change, _) = open_increase(sub)?;
    if change.declined_at.is_some() {
        return Ok(None);
    }
    if let Some(c) = &change.consent {
        return not_allowed(format!(
            "the customer consented to the price change at {}; to stop it, cancel the subscription",
            c.at
        ));
    }
    let mut next = sub.next_version(now);
    if let Some(c) = next.price_change.as_mut() {
        c.declined_at = Some(now);
    }
    Ok(Some(next))
}

/// What the claim of a period does about a price change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtClaim {
    /// Nothing to do: claim as it is.
    Claim,
    /// Write this (one version later), then claim it: the new price
    /// applied, the old one kept, or the change postponed a period.
    ClaimAfter(Subscription, Effect),
    /// Write this: the subscription ended (declined or unanswered under
    /// `cancel_at_period_end`); nothing is claimed.
    Ended(Subscription),
}

/// What [`at_claim`] did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Applied,
    KeptOldPrice,
    /// Never asked (missed runs), or its consent no longer counts (the
    /// calendar moved): one period later, asked again.
    Postponed,
}

/// Before the period to charge next is claimed, at `now`. A consent counts
/// if it was taken in the 30 days before the period's start (the law's
/// window, whatever the setting).
pub fn at_claim(sub: &Subscription, window_days: u16, now: DateTime<Utc>) -> AtClaim {
    let Some(change) = sub.change_in_force() else {
        return AtClaim::Claim;
    };
    if sub.cancel_at_period_end {
        return AtClaim::Claim; // it ends anyway; the claim path ends it
    }
    let starts = sub.period_due();
    let counts = |c: &Consent| {
        c.at >= starts - Duration::days(i64::from(MAX_CONSENT_WINDOW_DAYS)) && c.at < starts
    };
    let mut next = sub.next_version(now);
    let apply = |next: &mut Subscription, outcome: Outcome| {
        if let Some(c) = next.price_change.as_mut() {
            c.closed = Some((outcome, now));
        }
    };
    if !change.is_increase() || change.consent.as_ref().is_some_and(counts) {
        if change.coupon.is_none() {
            next.plan = change.plan.clone();
            next.plan_ref = change.plan_ref.clone();
        }
        // (A coupon's end: its discount covers no more periods already.)
        apply(&mut next, Outcome::Applied);
        return AtClaim::ClaimAfter(next, Effect::Applied);
    }
    if change.declined_at.is_none() && (change.asked_at.is_none() || change.consent.is_some()) {
        // Never asked, or asked and consented for a start that has moved:
        // the customer has not had the window the law gives. One more
        // period at the old price, and the question again.
        let k = sub.period_index + 1;
        if let Some(c) = next.price_change.as_mut() {
            c.effective = sub.anchor.period_id(k);
            c.asks_at = Some(sub.anchor.period_start(k) - Duration::days(i64::from(window_days)));
            c.asked_at = None;
            c.consent = None;
        }
        if change.coupon.is_some()
            && let Some(d) = next.discount.as_mut()
        {
            // The coupon's discount lasts as long as its end waits.
            d.until = Some(sub.anchor.period_id(k));
        }
        return AtClaim::ClaimAfter(next, Effect::Postponed);
    }
    apply(&mut next, Outcome::NotConsented);
    if change.coupon.is_some()
        && change.on_no_consent == OnNoConsent::KeepOldPrice
        && let Some(d) = next.discount.as_mut()
    {
        // The old price of a coupon's end is the discounted one.
        d.until = None;
    }
    match change.on_no_consent {
        OnNoConsent::KeepOldPrice => AtClaim::ClaimAfter(next, Effect::KeptOldPrice),
        OnNoConsent::CancelAtPeriodEnd => match sub.status.apply(Event::Cancel) {
            Ok(status) => {
                next.status = status;
                next.ended_at = Some(now);
                next.cancel_at_period_end = true;
                next.cancel_reason = Some(NOT_CONSENTED.to_owned());
                AtClaim::Ended(next)
            }
            Err(_) => AtClaim::Claim,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Anchor;
    use chrono::TimeZone;

    /// Anchored on 10 January 2027, period 3 (April) to charge next.
    fn sub() -> Subscription {
        let anchor = Anchor::new(2027, 1, 10).unwrap_or_else(|| panic!("anchor"));
        let mut s = crate::testing::subscription("k3m9x2p7q4w8", anchor);
        s.period_index = 3;
        s.attempt = 1;
        s.next_charge_at = anchor.period_start(3);
        s
    }

    fn plan(amount: i64) -> Plan {
        Plan {
            amount,
            name: "월간 구독".into(),
            notice_days: 7,
            tax: crate::billing::TaxSetting::Taxable,
        }
    }

    fn req(amount: i64, effective: Option<&PeriodId>) -> Request<'_> {
        Request {
            plan: plan(amount),
            plan_ref: None,
            effective,
            on_no_consent: OnNoConsent::default(),
            window_days: 30,
            started: false,
        }
    }

    fn period(s: &str) -> PeriodId {
        PeriodId::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    fn consent(at: DateTime<Utc>) -> Consent {
        Consent {
            channel: "web".into(),
            reference: "c-1".into(),
            at,
            recorded_at: at,
        }
    }

    fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// 1 March 2027, 12:00 KST.
    fn march_1() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, 1, 3, 0, 0).unwrap()
    }

    /// A plan-wide change's month on a yearly calendar: its first period
    /// from that month on (decision 75).
    #[test]
    fn a_yearly_calendar_takes_a_month_from_its_next_period_in_or_after_it() {
        let anchor = Anchor::new(2027, 1, 10)
            .unwrap_or_else(|| panic!("anchor"))
            .every(crate::billing::Interval::Year);
        let mut s = crate::testing::subscription("yearly000001", anchor);
        s.period_index = 1;
        let p = |t: &str| PeriodId::parse(t).unwrap_or_else(|| panic!("{t}"));
        assert_eq!(s.first_period_from(&p("202706")), Some(p("202801")));
        assert_eq!(s.first_period_from(&p("202801")), Some(p("202801")));
        assert_eq!(s.first_period_from(&p("202802")), Some(p("202901")));
    }

    #[test]
    fn an_increase_takes_effect_no_sooner_than_the_window_allows() {
        let s = sub();
        // 1 March + 30 days = 31 March; April's period starts 10 April.
        let next = ok(requested(&s, req(14_900, None), march_1()));
        let c = next
            .price_change
            .clone()
            .unwrap_or_else(|| panic!("pending"));
        assert_eq!(c.effective, period("202704"));
        assert_eq!(
            c.asks_at,
            Some(s.anchor.period_start(3) - Duration::days(30))
        );
        assert!(c.awaits_consent());
        // On 15 March, April starts in 26 days: May is the earliest.
        let later = Utc.with_ymd_and_hms(2027, 3, 15, 3, 0, 0).unwrap();
        match requested(&s, req(14_900, Some(&period("202704"))), later) {
            Err(PriceChangeError::TooSoon { earliest, .. }) => {
                assert_eq!(earliest, period("202705"));
            }
            other => panic!("{other:?}"),
        }
        let at_may = ok(requested(&s, req(14_900, Some(&period("202705"))), later));
        assert_eq!(
            at_may.price_change.map(|c| c.effective),
            Some(period("202705"))
        );
        // Not one of its periods.
        assert!(matches!(
            requested(&s, req(14_900, Some(&period("202501"))), later),
            Err(PriceChangeError::TooSoon { .. })
        ));
    }

    #[test]
    fn a_decrease_applies_from_the_next_period_not_charged_yet() {
        let s = sub();
        let next = ok(requested(&s, req(4900, None), march_1()));
        let c = next
            .price_change
            .clone()
            .unwrap_or_else(|| panic!("pending"));
        assert_eq!((c.effective.clone(), c.asks_at), (s.current_period(), None));
        assert!(!c.awaits_consent());
        let mut started = req(4900, None);
        started.started = true;
        let next = ok(requested(&s, started, march_1()));
        assert_eq!(
            next.price_change.map(|c| c.effective),
            Some(s.anchor.period_id(4))
        );
        // At the claim: applied, no answer needed.
        let due = ok(requested(&s, req(4900, None), march_1()));
        match at_claim(&due, 30, s.next_charge_at) {
            AtClaim::ClaimAfter(n, Effect::Applied) => {
                assert_eq!(n.plan.amount, 4900);
                assert_eq!(n.amount_due(), 4900);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_change_while_one_is_pending_is_refused() {
        let s = ok(requested(&sub(), req(14_900, None), march_1()));
        assert!(matches!(
            requested(&s, req(19_900, None), march_1()),
            Err(PriceChangeError::NotAllowed(_))
        ));
        let mut trial = sub();
        trial.status = SubscriptionStatus::Trialing;
        assert!(requested(&trial, req(14_900, None), march_1()).is_err());
        let mut ending = sub();
        ending.cancel_at_period_end = true;
        assert!(requested(&ending, req(14_900, None), march_1()).is_err());
        assert!(
            requested(&sub(), req(9900, None), march_1()).is_err(),
            "same price"
        );
    }

    /// An increase effective April (starts 10 April 2027, 00:00 KST).
    fn pending() -> (Subscription, DateTime<Utc>) {
        let s = ok(requested(&sub(), req(14_900, None), march_1()));
        let starts = s.period_due();
        (s, starts)
    }

    #[test]
    fn a_consent_counts_only_inside_the_window() {
        let (s, starts) = pending();
        let opens = starts - Duration::days(30);
        assert!(matches!(
            consented(
                &s,
                consent(opens - Duration::days(1)),
                30,
                opens - Duration::days(1)
            ),
            Err(PriceChangeError::TooEarly { .. })
        ));
        assert!(matches!(
            consented(&s, consent(opens - Duration::days(1)), 30, opens),
            Err(PriceChangeError::BadEvidence(_))
        ));
        assert!(matches!(
            consented(
                &s,
                consent(opens + Duration::days(2)),
                30,
                opens + Duration::days(1)
            ),
            Err(PriceChangeError::BadEvidence(_))
        ));
        assert!(matches!(
            consented(&s, consent(starts), 30, starts),
            Err(PriceChangeError::NotAllowed(_))
        ));
        let yes = ok(consented(&s, consent(opens), 30, opens)).unwrap_or_else(|| panic!("new"));
        assert_eq!(
            ok(consented(
                &yes,
                consent(opens),
                30,
                opens + Duration::days(1)
            )),
            None,
            "two consents are one record"
        );
        assert!(matches!(
            declined(&yes, opens),
            Err(PriceChangeError::NotAllowed(_))
        ));
    }

    #[test]
    fn the_claim_charges_the_new_price_only_with_a_consent() {
        let (s, starts) = pending();
        let asked_s = asked(&s, starts - Duration::days(30));
        assert_eq!(asked_s.amount_due(), 9900);
        // Consented: applied at the claim, and the period is charged at it.
        let yes = ok(consented(
            &asked_s,
            consent(starts - Duration::days(3)),
            30,
            starts - Duration::days(3),
        ))
        .unwrap_or_else(|| panic!("new"));
        assert_eq!(yes.amount_due(), 14_900);
        match at_claim(&yes, 30, starts) {
            AtClaim::ClaimAfter(n, Effect::Applied) => {
                assert_eq!(n.plan.amount, 14_900);
                assert_eq!(
                    n.price_change.and_then(|c| c.closed).map(|c| c.0),
                    Some(Outcome::Applied)
                );
            }
            other => panic!("{other:?}"),
        }
        // Unanswered: the default ends the subscription, nothing claimed.
        match at_claim(&asked_s, 30, starts) {
            AtClaim::Ended(n) => {
                assert_eq!(n.status, SubscriptionStatus::Cancelled);
                assert_eq!(n.cancel_reason.as_deref(), Some(NOT_CONSENTED));
                assert_eq!(n.plan.amount, 9900);
            }
            other => panic!("{other:?}"),
        }
        // keep_old_price: the old price goes on.
        let mut keep = asked_s.clone();
        if let Some(c) = keep.price_change.as_mut() {
            c.on_no_consent = OnNoConsent::KeepOldPrice;
        }
        match at_claim(&keep, 30, starts) {
            AtClaim::ClaimAfter(n, Effect::KeptOldPrice) => assert_eq!(n.plan.amount, 9900),
            other => panic!("{other:?}"),
        }
        // Declined: the renewal is not announced, and the claim ends it.
        let no =
            ok(declined(&asked_s, starts - Duration::days(2))).unwrap_or_else(|| panic!("new"));
        assert!(no.ends_on_declined_increase());
        assert!(matches!(at_claim(&no, 30, starts), AtClaim::Ended(_)));
        // Before its period, nothing happens at a claim.
        let mut before = asked_s.clone();
        before.period_index = 2;
        assert_eq!(at_claim(&before, 30, starts), AtClaim::Claim);
    }

    #[test]
    fn a_change_never_asked_waits_a_period_and_is_asked_again() {
        let (s, starts) = pending();
        match at_claim(&s, 30, starts) {
            AtClaim::ClaimAfter(n, Effect::Postponed) => {
                let c = n.price_change.unwrap_or_else(|| panic!("kept"));
                assert_eq!(c.effective, s.anchor.period_id(4));
                assert_eq!(
                    c.asks_at,
                    Some(s.anchor.period_start(4) - Duration::days(30))
                );
                assert_eq!(n.plan.amount, 9900);
            }
            other => panic!("{other:?}"),
        }
        // A consent the calendar left behind (taken 40 days before the start).
        let mut stale = asked(&s, starts - Duration::days(30));
        if let Some(c) = stale.price_change.as_mut() {
            c.consent = Some(consent(starts - Duration::days(40)));
        }
        assert!(matches!(
            at_claim(&stale, 30, starts),
            AtClaim::ClaimAfter(_, Effect::Postponed)
        ));
    }
}
