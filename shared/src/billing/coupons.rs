//! Coupons (issue 25 §3, decision 78). Pure rules: what a coupon may be,
//! whether it can still be redeemed, which periods a redeemed one covers,
//! what a covered period costs, and what applying one to a running
//! subscription does about the consent its end needs.
//!
//! - A coupon is a catalogue record: `percent_off` (1–100) or `amount_off`
//!   (whole KRW), for `once`, `repeating:N` periods or `forever`, with an
//!   optional `max_redemptions` and `redeem_by`. Its `redeemed` count moves
//!   only in the ledger's conditional write that also stores what redeemed
//!   it (a registration, or a subscription change), so it is counted once.
//! - On a subscription it is a [`Discount`]: the coupon's terms and the
//!   span of calendar periods it covers (`from` up to, not including,
//!   `until`). A period is priced at the claim: the plan's price (or its
//!   share of a period had in part), less the discount when the span
//!   covers the period; the claim fixes the amount on the attempt, so a
//!   retry never changes it. A pause does not stretch the span.
//! - What is left under the smallest charge (100 KRW) is nothing: the
//!   period is recorded as paid at 0 KRW and nothing is sent to the PG.
//! - Its end raises the price. Redeemed with a sign-up, the end was shown
//!   in the payment window and is recorded as disclosed (`end_disclosed`).
//!   Applied later, the end is a price increase under decision 69: the
//!   same write opens a price change marked with the coupon, whose period
//!   is `until`, asked `CONSENT_WINDOW_DAYS` before it.

use chrono::{DateTime, Duration, Utc};

use super::calendar::PeriodId;
use super::entities::Subscription;
use super::plans::PLAN_AMOUNT;
use super::price_changes::{OnNoConsent, PriceChange};
use super::state::SubscriptionStatus;

/// The most periods a `repeating:N` coupon may cover.
pub const MAX_REPEATING: u32 = 36;
/// The most times a coupon may be redeemed.
pub const MAX_REDEMPTIONS: u32 = 1_000_000;

/// A coupon's id: 1–40 lowercase letters, digits and hyphens, not starting
/// with a hyphen (`launch-3m`), chosen by the merchant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CouponId(String);

impl CouponId {
    /// The catalogue's id rule, a plan's (`PlanId::parse`).
    pub fn parse(s: &str) -> Option<Self> {
        super::plans::PlanId::parse(s).map(|p| Self(p.as_str().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CouponId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a coupon takes off a period's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Off {
    /// 1 to 100 percent, rounded down to the won.
    Percent(u8),
    /// Whole KRW, at most the period's price.
    Amount(i64),
}

impl Off {
    /// The won taken off `base`: never more than `base`.
    pub fn of(self, base: i64) -> i64 {
        match self {
            Self::Percent(p) => base * i64::from(p) / 100,
            Self::Amount(a) => a.min(base),
        }
        .clamp(0, base.max(0))
    }
}

/// How many periods a coupon covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponDuration {
    Once,
    /// N periods, 1 to [`MAX_REPEATING`].
    Repeating(u32),
    Forever,
}

impl CouponDuration {
    pub fn label(self) -> String {
        match self {
            Self::Once => "once".into(),
            Self::Repeating(n) => format!("repeating:{n}"),
            Self::Forever => "forever".into(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "once" => Some(Self::Once),
            "forever" => Some(Self::Forever),
            _ => {
                let n: u32 = s.strip_prefix("repeating:")?.parse().ok()?;
                (1..=MAX_REPEATING)
                    .contains(&n)
                    .then_some(Self::Repeating(n))
            }
        }
    }

    /// The periods covered; `None`: all of them.
    pub fn periods(self) -> Option<u32> {
        match self {
            Self::Once => Some(1),
            Self::Repeating(n) => Some(n),
            Self::Forever => None,
        }
    }
}

/// A coupon in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub id: CouponId,
    /// What the customer is shown (1–40 characters).
    pub name: String,
    pub off: Off,
    pub duration: CouponDuration,
    pub max_redemptions: Option<u32>,
    /// The last moment it may be redeemed (exclusive).
    pub redeem_by: Option<DateTime<Utc>>,
    /// How many times it was redeemed: moved only by the ledger's
    /// conditional redemption.
    pub redeemed: u32,
    pub created_at: DateTime<Utc>,
}

/// Why a coupon, or its redemption, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// Redeemed `max_redemptions` times already (409).
    #[error("coupon {0} has been redeemed the most times it may be")]
    Exhausted(CouponId),
    /// Past its `redeem_by` (422).
    #[error("coupon {id} could be redeemed until {redeem_by}")]
    Expired {
        id: CouponId,
        redeem_by: DateTime<Utc>,
    },
    /// The subscription's state does not allow it (409).
    #[error("{0}")]
    NotAllowed(String),
}

impl Coupon {
    /// Whether one more redemption is allowed at `now` (the ledger checks
    /// the same again in the write that counts it).
    pub fn redeemable(&self, now: DateTime<Utc>) -> Result<(), CouponError> {
        if let Some(by) = self.redeem_by
            && now >= by
        {
            return Err(CouponError::Expired {
                id: self.id.clone(),
                redeem_by: by,
            });
        }
        if self.max_redemptions.is_some_and(|m| self.redeemed >= m) {
            return Err(CouponError::Exhausted(self.id.clone()));
        }
        Ok(())
    }
}

/// `POST /coupons`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponInput {
    pub id: String,
    pub name: Option<String>,
    pub percent_off: Option<i64>,
    pub amount_off: Option<i64>,
    pub duration: String,
    pub max_redemptions: Option<i64>,
    pub redeem_by: Option<DateTime<Utc>>,
}

/// Instants are stored to the second.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn invalid<T>(why: impl Into<String>) -> Result<T, CouponError> {
    Err(CouponError::Invalid(why.into()))
}

/// A new coupon from `input`, as of `now`: every field checked, nothing
/// stored.
pub fn validated(input: CouponInput, now: DateTime<Utc>) -> Result<Coupon, CouponError> {
    let Some(id) = CouponId::parse(&input.id) else {
        return invalid(
            "id must be 1 to 40 lowercase letters, digits and hyphens, not starting with a hyphen",
        );
    };
    let name = input.name.unwrap_or_else(|| id.to_string());
    let chars = name.chars().count();
    if chars == 0 || chars > 40 || name.chars().any(char::is_control) {
        return invalid("name must have 1 to 40 characters");
    }
    let off = match (input.percent_off, input.amount_off) {
        (Some(p), None) if (1..=100).contains(&p) => Off::Percent(p as u8),
        (Some(p), None) => return invalid(format!("percent_off must be 1 to 100, not {p}")),
        (None, Some(a)) if (1..=*PLAN_AMOUNT.end()).contains(&a) => Off::Amount(a),
        (None, Some(a)) => {
            return invalid(format!(
                "amount_off must be a whole KRW amount from 1 to {}, not {a}",
                PLAN_AMOUNT.end()
            ));
        }
        _ => return invalid("give percent_off or amount_off, exactly one"),
    };
    let Some(duration) = CouponDuration::parse(&input.duration) else {
        return invalid(format!(
            "duration must be once, repeating:N (N 1 to {MAX_REPEATING}) or forever, not {:?}",
            input.duration
        ));
    };
    let max_redemptions = match input.max_redemptions {
        None => None,
        Some(m) if (1..=i64::from(MAX_REDEMPTIONS)).contains(&m) => Some(m as u32),
        Some(m) => {
            return invalid(format!(
                "max_redemptions must be 1 to {MAX_REDEMPTIONS}, not {m}"
            ));
        }
    };
    if let Some(by) = input.redeem_by
        && by <= now
    {
        return invalid(format!("redeem_by {by} is not in the future"));
    }
    Ok(Coupon {
        id,
        name,
        off,
        duration,
        max_redemptions,
        redeem_by: input.redeem_by.map(whole_seconds),
        redeemed: 0,
        created_at: whole_seconds(now),
    })
}

/// What a redemption keeps of its coupon: the terms, not the counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponTerms {
    pub id: CouponId,
    pub off: Off,
    pub duration: CouponDuration,
}

impl Coupon {
    pub fn terms(&self) -> CouponTerms {
        CouponTerms {
            id: self.id.clone(),
            off: self.off,
            duration: self.duration,
        }
    }
}

/// A coupon redeemed on a subscription: its terms, and the calendar
/// periods it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discount {
    pub coupon: CouponId,
    pub off: Off,
    pub duration: CouponDuration,
    /// The first period it covers.
    pub from: PeriodId,
    /// The first period it no longer covers; `None`: forever.
    pub until: Option<PeriodId>,
    pub redeemed_at: DateTime<Utc>,
    /// Its end was shown with the sign-up (redeemed at `prepare`): the
    /// price after it needs no consent of its own.
    pub end_disclosed: bool,
}

impl Discount {
    /// Whether it covers `period`.
    pub fn covers(&self, period: &PeriodId) -> bool {
        &self.from <= period && self.until.as_ref().is_none_or(|u| period < u)
    }

    /// What a period that costs `base` costs under it: never negative,
    /// and nothing when under the smallest charge.
    pub fn price(&self, base: i64) -> i64 {
        let left = base - self.off.of(base);
        if left < *PLAN_AMOUNT.start() { 0 } else { left }
    }

    /// Whether it covers no period from `period` on.
    pub fn is_over(&self, period: &PeriodId) -> bool {
        self.until.as_ref().is_some_and(|u| u <= period)
    }

    /// Redeemed with a sign-up whose period to charge first is `k` on
    /// `anchor`'s calendar.
    pub fn at_signup(
        coupon: &CouponTerms,
        anchor: &super::Anchor,
        k: u32,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            coupon: coupon.id.clone(),
            off: coupon.off,
            duration: coupon.duration,
            from: anchor.period_id(k),
            until: coupon.duration.periods().map(|n| anchor.period_id(k + n)),
            redeemed_at: whole_seconds(now),
            end_disclosed: true,
        }
    }
}

impl Subscription {
    /// The discount of the period to charge next, if its coupon covers it.
    pub fn discount_in_force(&self) -> Option<&Discount> {
        self.discount
            .as_ref()
            .filter(|d| d.covers(&self.current_period()))
    }
}

/// What `POST /subscriptions/{id}/coupon` asks for.
#[derive(Debug, Clone)]
pub struct Apply<'a> {
    pub coupon: &'a Coupon,
    /// What the end of the coupon does without the customer's consent.
    pub on_no_consent: OnNoConsent,
    /// `CONSENT_WINDOW_DAYS`.
    pub window_days: u16,
    /// The period to charge next has an attempt already: the coupon covers
    /// the periods from the one after.
    pub started: bool,
}

fn not_allowed<T>(why: impl Into<String>) -> Result<T, CouponError> {
    Err(CouponError::NotAllowed(why.into()))
}

/// The subscription one version later with the coupon of `req` applied,
/// at `now`. It covers the periods from the next one without an attempt;
/// one that ends opens the price change its end is (decision 69), asked
/// the consent window before its period, and lasts at least until a period
/// that leaves the customer the whole window.
pub fn applied(
    sub: &Subscription,
    req: &Apply<'_>,
    now: DateTime<Utc>,
) -> Result<Subscription, CouponError> {
    use SubscriptionStatus as S;
    match sub.status {
        S::Cancelled => return not_allowed("the subscription has ended"),
        S::Pending => return not_allowed("the subscription has not started"),
        S::Trialing => {
            return not_allowed(
                "the subscription is in its trial: redeem a coupon with the sign-up, or after the trial converts",
            );
        }
        _ => {}
    }
    if let Some(d) = &sub.discount
        && !d.is_over(&sub.current_period())
    {
        return not_allowed(format!(
            "coupon {} is on the subscription{}",
            d.coupon,
            d.until
                .as_ref()
                .map(|u| format!(" until period {u}"))
                .unwrap_or_default()
        ));
    }
    if let Some(why) = super::price_changes::change_pending(sub) {
        return not_allowed(why);
    }
    let coupon = req.coupon;
    let first = sub.period_index + u32::from(req.started);
    let end = coupon.duration.periods().map(|n| {
        // The customer has the whole window to answer the end.
        let window = now + Duration::days(i64::from(req.window_days));
        (first + n..first + n + 120)
            .find(|&k| sub.anchor.period_start(k) >= window)
            .unwrap_or(first + n)
    });
    let discount = Discount {
        coupon: coupon.id.clone(),
        off: coupon.off,
        duration: coupon.duration,
        from: sub.anchor.period_id(first),
        until: end.map(|k| sub.anchor.period_id(k)),
        redeemed_at: whole_seconds(now),
        end_disclosed: false,
    };
    let mut next = sub.next_version(now);
    if let Some(k) = end {
        next.price_change = Some(PriceChange {
            plan: sub.plan.clone(),
            plan_ref: sub.plan_ref.clone(),
            from_amount: discount.price(sub.plan.amount),
            effective: sub.anchor.period_id(k),
            on_no_consent: req.on_no_consent,
            requested_at: now,
            asks_at: Some(sub.anchor.period_start(k) - Duration::days(i64::from(req.window_days))),
            asked_at: None,
            consent: None,
            declined_at: None,
            closed: None,
            coupon: Some(coupon.id.clone()),
        });
    }
    next.discount = Some(discount);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Anchor;
    use crate::billing::price_changes::{AtClaim, Effect, at_claim};
    use crate::billing::trials::Consent;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 3, 0, 0).unwrap()
    }

    fn input(percent: Option<i64>, amount: Option<i64>, duration: &str) -> CouponInput {
        CouponInput {
            id: "launch-3m".into(),
            name: None,
            percent_off: percent,
            amount_off: amount,
            duration: duration.into(),
            max_redemptions: Some(100),
            redeem_by: None,
        }
    }

    fn coupon(off: Off, duration: CouponDuration) -> Coupon {
        Coupon {
            id: CouponId::parse("launch-3m").unwrap(),
            name: "launch".into(),
            off,
            duration,
            max_redemptions: None,
            redeem_by: None,
            redeemed: 0,
            created_at: at(2027, 1, 1),
        }
    }

    /// Anchored on 10 January 2027, period 1 (February) to charge next.
    fn sub() -> Subscription {
        let anchor = Anchor::new(2027, 1, 10).unwrap();
        let mut s = crate::testing::subscription("k3m9x2p7q4w8", anchor);
        s.period_index = 1;
        s.next_charge_at = anchor.period_start(1);
        s
    }

    fn apply(c: &Coupon, started: bool) -> Apply<'_> {
        Apply {
            coupon: c,
            on_no_consent: OnNoConsent::default(),
            window_days: 30,
            started,
        }
    }

    #[test]
    fn bad_coupons_are_refused_with_the_reason() {
        let now = at(2027, 1, 1);
        let bad = |i: CouponInput| match validated(i, now) {
            Err(CouponError::Invalid(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(bad(input(Some(101), None, "once")).contains("percent_off must be 1 to 100"));
        assert!(bad(input(Some(0), None, "once")).contains("percent_off"));
        assert!(bad(input(Some(10), Some(1000), "once")).contains("exactly one"));
        assert!(bad(input(None, None, "once")).contains("exactly one"));
        assert!(bad(input(None, Some(0), "once")).contains("amount_off"));
        assert!(bad(input(Some(10), None, "repeating:0")).contains("duration"));
        assert!(bad(input(Some(10), None, "repeating:37")).contains("duration"));
        assert!(bad(input(Some(10), None, "monthly")).contains("duration"));
        let past = CouponInput {
            redeem_by: Some(now),
            ..input(Some(10), None, "once")
        };
        assert!(bad(past).contains("redeem_by"));
        let none = CouponInput {
            max_redemptions: Some(0),
            ..input(Some(10), None, "once")
        };
        assert!(bad(none).contains("max_redemptions"));
        let mut id = input(Some(10), None, "once");
        id.id = "Launch".into();
        assert!(bad(id).contains("id must be"));
        let ok = validated(input(None, Some(3000), "repeating:3"), now).unwrap();
        assert_eq!(
            (ok.off, ok.duration, ok.redeemed),
            (Off::Amount(3000), CouponDuration::Repeating(3), 0)
        );
    }

    #[test]
    fn a_coupon_redeems_until_its_limit_and_before_its_date() {
        let now = at(2027, 1, 1);
        let mut c = coupon(Off::Percent(50), CouponDuration::Once);
        c.max_redemptions = Some(2);
        c.redeem_by = Some(now + Duration::days(1));
        assert_eq!(c.redeemable(now), Ok(()));
        c.redeemed = 2;
        assert!(matches!(c.redeemable(now), Err(CouponError::Exhausted(_))));
        c.redeemed = 1;
        assert!(matches!(
            c.redeemable(now + Duration::days(1)),
            Err(CouponError::Expired { .. })
        ));
    }

    #[test]
    fn a_covered_period_costs_the_price_less_the_discount_never_less_than_nothing() {
        let d = |off| Discount {
            coupon: CouponId::parse("c").unwrap(),
            off,
            duration: CouponDuration::Forever,
            from: PeriodId::parse("202702").unwrap(),
            until: None,
            redeemed_at: at(2027, 1, 1),
            end_disclosed: true,
        };
        assert_eq!(d(Off::Percent(50)).price(9900), 4950);
        assert_eq!(d(Off::Percent(33)).price(9900), 9900 - 3267);
        assert_eq!(d(Off::Amount(3000)).price(9900), 6900);
        assert_eq!(d(Off::Amount(20_000)).price(9900), 0);
        assert_eq!(d(Off::Percent(100)).price(9900), 0);
        // 99 KRW left is under the smallest charge: nothing is charged.
        assert_eq!(d(Off::Percent(99)).price(9900), 0);
        assert_eq!(d(Off::Amount(9800)).price(9900), 100);
    }

    #[test]
    fn a_sign_up_coupon_covers_its_periods_from_the_first_charged_and_prices_them() {
        let mut s = sub();
        s.period_index = 0;
        let c = coupon(Off::Percent(50), CouponDuration::Repeating(3));
        s.discount = Some(Discount::at_signup(
            &c.terms(),
            &s.anchor,
            0,
            at(2027, 1, 10),
        ));
        let d = s.discount.clone().unwrap();
        assert_eq!(
            (d.from.as_str(), d.until.as_ref().unwrap().as_str()),
            ("202701", "202704")
        );
        assert!(d.end_disclosed);
        let amounts: Vec<i64> = (0..5)
            .map(|k| {
                s.period_index = k;
                s.period_amount()
            })
            .collect();
        assert_eq!(amounts, [4950, 4950, 4950, 9900, 9900]);
        // A share of a period is discounted too.
        s.period_index = 1;
        s.partial = Some(crate::billing::entities::PartialPeriod {
            index: 1,
            days: 14,
            of: 28,
        });
        assert_eq!(s.period_amount(), 2475);
    }

    #[test]
    fn a_coupon_applied_later_covers_the_next_period_without_an_attempt_and_its_end_asks_a_consent()
    {
        let s = sub();
        let now = at(2027, 2, 1);
        let c = coupon(Off::Percent(50), CouponDuration::Repeating(3));
        let next = applied(&s, &apply(&c, false), now).unwrap();
        let d = next.discount.clone().unwrap();
        assert_eq!(
            (d.from.as_str(), d.until.as_ref().unwrap().as_str()),
            ("202702", "202705")
        );
        assert!(!d.end_disclosed);
        assert_eq!(next.period_amount(), 4950);
        let change = next.price_change.clone().unwrap();
        assert_eq!(change.coupon, Some(c.id.clone()));
        assert_eq!((change.from_amount, change.plan.amount), (4950, 9900));
        assert_eq!(change.effective.as_str(), "202705");
        let may = s.anchor.period_start(4);
        assert_eq!(change.asks_at, Some(may - Duration::days(30)));
        assert!(change.is_increase() && change.is_open());
        // With the period charged already, from the one after.
        let later = applied(&s, &apply(&c, true), now).unwrap();
        assert_eq!(later.discount.unwrap().from.as_str(), "202703");
        // Forever: no end, nothing to consent to.
        let f = coupon(Off::Amount(1000), CouponDuration::Forever);
        let forever = applied(&s, &apply(&f, false), now).unwrap();
        assert_eq!(forever.price_change, None);
        assert_eq!(forever.period_amount(), 8900);
    }

    #[test]
    fn a_coupon_whose_end_would_leave_less_than_the_window_lasts_until_it_does() {
        // Applied on 9 February for the period of 10 February, once: its end
        // on 10 March is 29 days away, so it lasts until 10 April.
        let s = sub();
        let c = coupon(Off::Percent(20), CouponDuration::Once);
        let next = applied(&s, &apply(&c, false), at(2027, 2, 9)).unwrap();
        let d = next.discount.unwrap();
        assert_eq!(d.until.unwrap().as_str(), "202704");
        assert_eq!(next.price_change.unwrap().effective.as_str(), "202704");
    }

    #[test]
    fn a_coupon_is_refused_where_it_would_overlap_a_change() {
        let now = at(2027, 2, 1);
        let c = coupon(Off::Percent(50), CouponDuration::Once);
        let refused = |s: &Subscription| match applied(s, &apply(&c, false), now) {
            Err(CouponError::NotAllowed(why)) => why,
            other => panic!("{other:?}"),
        };
        let with = applied(&sub(), &apply(&c, false), now).unwrap();
        assert!(refused(&with).contains("coupon launch-3m is on the subscription"));
        let mut ended = sub();
        ended.status = SubscriptionStatus::Cancelled;
        assert!(refused(&ended).contains("ended"));
        let mut trial = sub();
        trial.status = SubscriptionStatus::Trialing;
        assert!(refused(&trial).contains("trial"));
        let mut ending = sub();
        ending.cancel_at_period_end = true;
        assert!(refused(&ending).contains("set to end"));
        // Once over, another coupon may follow.
        let mut over = with.clone();
        over.price_change = None;
        over.period_index = 5;
        assert!(applied(&over, &apply(&c, false), now).is_ok());
    }

    fn claim_at_end(next: &Subscription) -> Subscription {
        let mut s = next.clone();
        let k = (0..24)
            .find(|&k| Some(s.anchor.period_id(k)) == s.discount.as_ref().unwrap().until)
            .unwrap();
        s.period_index = k;
        s.next_charge_at = s.anchor.period_start(k);
        s
    }

    #[test]
    fn the_end_of_a_coupon_applied_later_is_charged_only_with_a_consent() {
        let c = coupon(Off::Percent(50), CouponDuration::Repeating(3));
        let next = applied(&sub(), &apply(&c, false), at(2027, 2, 1)).unwrap();
        let end = claim_at_end(&next);
        let starts = end.period_due();
        let window = Duration::days(30);
        // Consented inside the window: the full price, the plan unchanged.
        let mut yes = end.clone();
        if let Some(ch) = yes.price_change.as_mut() {
            ch.asked_at = Some(starts - window);
            ch.consent = Some(Consent {
                channel: "app".into(),
                reference: "c-1".into(),
                at: starts - Duration::days(3),
                recorded_at: starts - Duration::days(3),
            });
        }
        match at_claim(&yes, 30, starts) {
            AtClaim::ClaimAfter(s, Effect::Applied) => {
                assert_eq!(s.plan, yes.plan);
                assert_eq!(s.period_amount(), 9900);
            }
            other => panic!("{other:?}"),
        }
        // Declined, keep the old price: the discounted price goes on.
        let mut keep = end.clone();
        if let Some(ch) = keep.price_change.as_mut() {
            ch.asked_at = Some(starts - window);
            ch.declined_at = Some(starts - Duration::days(2));
            ch.on_no_consent = OnNoConsent::KeepOldPrice;
        }
        match at_claim(&keep, 30, starts) {
            AtClaim::ClaimAfter(s, Effect::KeptOldPrice) => {
                assert_eq!(s.period_amount(), 4950);
                assert_eq!(s.discount.unwrap().until, None);
            }
            other => panic!("{other:?}"),
        }
        // Unanswered under the default: it ends, nothing charged.
        let mut silent = end.clone();
        if let Some(ch) = silent.price_change.as_mut() {
            ch.asked_at = Some(starts - window);
        }
        assert!(matches!(at_claim(&silent, 30, starts), AtClaim::Ended(_)));
        // Never asked (runs missed): one more discounted period, asked again.
        match at_claim(&end, 30, starts) {
            AtClaim::ClaimAfter(s, Effect::Postponed) => {
                assert_eq!(s.period_amount(), 4950);
                let until = s.discount.as_ref().unwrap().until.clone();
                assert_eq!(until, Some(s.anchor.period_id(s.period_index + 1)));
                assert_eq!(Some(s.price_change.unwrap().effective), until);
            }
            other => panic!("{other:?}"),
        }
    }
}
