//! What must hold, from the PG's side and the customer's (design I1, I2, I7,
//! I8): checked as steps happen, and at the end of the world (`verdict`).
//! Every broken invariant is counted by name; the summary line shows each.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use shared::billing::{
    Anchor, AttemptState, BILLING_TZ, ChargeAttempt, MerchantUid, PeriodId, Plan, PlanId, PlanRef,
    Subscription, SubscriptionId, SubscriptionStatus, TaxSetting,
};
use shared::gateway::ChargeRequest;

use shared::billing::coupons::{CouponId, Off};

use super::{SeedReport, World, lock};
use crate::model::{MSG_SETTING, Usage};

/// The invariants, by the names the summary line uses.
pub const INVARIANTS: [&str; 35] = [
    "charged after a cancel",
    "billed without access",
    "two periods a day",
    "refunded twice",
    "billed early",
    "unsafe settlements",
    "sent without a live claim",
    "unalarmed reviews",
    "dunned for the merchant's setup",
    "key_missing with a live key",
    "runbook gaps",
    "unanswered calls",
    "plan off its version",
    "refund beyond the quote",
    "noticed twice",
    "noticed while not renewing",
    "notice out of its window",
    "trial converted without consent",
    "trial converted untold",
    "increase charged without consent",
    "retry at another amount",
    "dead card charged again",
    "tax split broken",
    "cash receipt wrong",
    "cash receipt issued twice",
    "cash receipt for a card payment",
    "charged more often than its interval",
    "charged inside a pause",
    "pause overran",
    "first period charged wrong",
    "off its billing day",
    "charged off its coupon",
    "coupon beyond its periods",
    "coupon end charged without consent",
    "coupon redeemed off its count",
];

/// What a period that costs `base` costs under `discount` when it covers
/// `period`, by the sim's own arithmetic over the world's coupons (their
/// terms, not the subscription's copy): less the percent rounded down, or
/// the amount; under 100 KRW nothing.
fn discounted(
    discount: Option<&shared::billing::coupons::Discount>,
    period: &PeriodId,
    base: i64,
) -> i64 {
    let Some(d) = discount.filter(|d| d.covers(period)) else {
        return base;
    };
    let left = match super::actors::sim_coupon(&d.coupon) {
        Some((Off::Percent(p), _)) => base - base * i64::from(p) / 100,
        Some((Off::Amount(a), _)) => base - a.min(base),
        None => -1,
    };
    if (1..100).contains(&left) { 0 } else { left }
}

/// Half the sign-ups (by their id's first character, so the world's random
/// stream is the one it always was) name a catalogue plan:
/// `monthly-{amount}-n{notice days}` version 1 is the plan of that amount
/// and notice, taxable; with `-x` exempt, with `-m{won}` mixed.
pub(super) fn catalogue_ref(id: &SubscriptionId, plan: &Plan) -> Option<PlanRef> {
    if !id.as_str().starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(PlanRef {
        id: catalogue_id(plan)?,
        version: 1,
    })
}

/// The catalogue's id of version 1 of `plan` (see [`catalogue_ref`]).
pub(super) fn catalogue_id(plan: &Plan) -> Option<PlanId> {
    let tax = match plan.tax {
        TaxSetting::Taxable => String::new(),
        TaxSetting::Exempt => "-x".into(),
        TaxSetting::Mixed { tax_free } => format!("-m{tax_free}"),
    };
    PlanId::parse(&format!(
        "monthly-{}-n{}{tax}",
        plan.amount, plan.notice_days
    ))
}

/// A sign-up's tax setting, from its id (so the random stream is the one
/// it always was): a quarter exempt, a quarter mixed (40 % tax-free), the
/// rest taxable.
pub(super) fn sim_tax(id: &SubscriptionId, amount: i64) -> TaxSetting {
    match id.as_str().as_bytes()[10] % 4 {
        0 => TaxSetting::Exempt,
        1 => TaxSetting::Mixed {
            tax_free: amount * 4 / 10,
        },
        _ => TaxSetting::Taxable,
    }
}

/// The plan a catalogue reference stands for: version 1 by the naming of
/// [`catalogue_ref`] (sign-ups name it whether or not it was stored), a
/// later one (a plan-wide price change's) as the catalogue stores it.
fn catalogue_plan(ledger: &shared::ledger::memory::InMemoryLedger, r: &PlanRef) -> Option<Plan> {
    if r.version > 1 {
        return ledger.plan_now(&r.id, r.version).map(|p| p.plan());
    }
    let (amount, rest) = r.id.as_str().strip_prefix("monthly-")?.split_once("-n")?;
    let (days, tax) = match rest.split_once('-') {
        None => (rest, TaxSetting::Taxable),
        Some((days, "x")) => (days, TaxSetting::Exempt),
        Some((days, mixed)) => (
            days,
            TaxSetting::Mixed {
                tax_free: mixed.strip_prefix('m')?.parse().ok()?,
            },
        ),
    };
    let (amount, notice_days) = (amount.parse().ok()?, days.parse().ok()?);
    Some(Plan {
        amount,
        name: "월간 구독".into(),
        notice_days,
        tax,
    })
}

/// A resume as seen: when, the day its rest counts from, the price then.
type Resume = (DateTime<Utc>, DateTime<Utc>, i64);

/// What the invariants need to remember as the world goes on.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Each subscription's statuses as they changed: (since, status).
    statuses: BTreeMap<SubscriptionId, Vec<(DateTime<Utc>, SubscriptionStatus)>>,
    /// When a paused subscription resumed, the day its rest is counted from
    /// (its `resumes_at`'s, when the run resumed it later), and its plan's
    /// price then.
    resumed: BTreeMap<SubscriptionId, Vec<Resume>>,
    /// Each paused subscription's `resumes_at` as last seen.
    resumes_at: BTreeMap<SubscriptionId, DateTime<Utc>>,
    /// Each attempt's state when last seen (to see flags happen).
    attempts: BTreeMap<(SubscriptionId, PeriodId, u32), AttemptState>,
    /// Attempts that went to `needs_review`, and the metric counts of them
    /// the functions emitted.
    pub flags: u64,
    pub counted: u64,
    /// What the newest run reported waiting for a person (the level the
    /// `NeedsReviewAlarm` watches).
    pub last_gauge: Option<u64>,
    /// The idempotency key each management invocation worked for.
    pub refund_keys: BTreeMap<u32, String>,
    /// What each mid-term cancel's quote said it would refund, by its
    /// refund's key.
    pub quoted: BTreeMap<String, i64>,
    /// The subscription as it stood when the PG took money under a charge
    /// uid: (status, period-end cancel asked for).
    paid_while: BTreeMap<String, (SubscriptionStatus, bool)>,
    /// Payments whose lookups keep failing at the PG.
    pub broken_lookups: BTreeSet<String>,
    /// The (subscription, period or trial end) a notice was written for.
    noticed: BTreeSet<(SubscriptionId, String)>,
    /// Each subscription's notice as last seen, to tell a new one from a
    /// later write in the same second that keeps it.
    last_notice: BTreeMap<SubscriptionId, String>,
    /// Refund requests in the review queue (their outcome unknown), by
    /// charge and key, until they are finished.
    refunds_in_review: BTreeSet<(String, String)>,
    /// Trials that ended without a consent, and how (counted once each).
    lapsed: BTreeSet<(SubscriptionId, &'static str)>,
    /// The newest claim of each subscription: its period, amount, price
    /// and the coupon that covered it.
    claimed: BTreeMap<SubscriptionId, (PeriodId, i64, i64, Option<CouponId>)>,
    /// The coupon's discount each (subscription, period) was claimed under.
    discounted: BTreeMap<(SubscriptionId, PeriodId), shared::billing::coupons::Discount>,
    /// Redemptions the ledger's writes counted, as their callers saw them.
    pub redeemed: BTreeMap<CouponId, u64>,
    /// The periods charged (money taken) per subscription and Seoul day.
    paid_days: BTreeMap<(SubscriptionId, NaiveDate), BTreeSet<PeriodId>>,
    /// Billing keys whose charge was recorded as a hard decline (decision
    /// 72), with that charge's uid: none may be charged again.
    dead_keys: BTreeMap<String, String>,
}

fn no_access(s: SubscriptionStatus) -> bool {
    matches!(
        s,
        SubscriptionStatus::Suspended
            | SubscriptionStatus::KeyMissing
            | SubscriptionStatus::ActionRequired
            | SubscriptionStatus::NeedsReview
            | SubscriptionStatus::Cancelled
            // Access lasts until the paid-through date, which is when a
            // period would begin: a period that begins paused is skipped.
            | SubscriptionStatus::Paused
    )
}

fn seoul_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&BILLING_TZ).date_naive()
}

impl Observed {
    fn status_at(&self, id: &SubscriptionId, t: DateTime<Utc>) -> Option<SubscriptionStatus> {
        self.statuses
            .get(id)?
            .iter()
            .take_while(|(since, _)| *since <= t)
            .last()
            .map(|(_, s)| *s)
    }

    /// Whether it was paused at any time in `[from, to)`.
    fn paused_during(&self, id: &SubscriptionId, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        let Some(history) = self.statuses.get(id) else {
            return false;
        };
        history.iter().enumerate().any(|(i, (since, s))| {
            let until = history.get(i + 1).map(|(t, _)| *t);
            *s == SubscriptionStatus::Paused && *since < to && until.is_none_or(|u| u > from)
        })
    }

    /// When the no-access stretch that covers `t` ended (`None`: it did
    /// not, or `t` had access).
    fn access_back_after(&self, id: &SubscriptionId, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.status_at(id, t).is_some_and(no_access) {
            return None;
        }
        self.statuses
            .get(id)?
            .iter()
            .find(|(since, s)| *since > t && !no_access(*s))
            .map(|(since, _)| *since)
    }
}

impl World {
    /// After every write to the ledger: status changes and flags, and the
    /// invariants that hold for each.
    pub(super) fn observe(&self) {
        let now = self.now();
        let subs = self.ledger.all_subscriptions();
        let attempts = self.ledger.all_attempts();
        let mut changed = Vec::new();
        {
            let mut obs = lock(&self.observed);
            for s in &subs {
                match s.pause.and_then(|p| p.resumes_at) {
                    Some(at) => {
                        obs.resumes_at.insert(s.id.clone(), at);
                    }
                    None if s.status == SubscriptionStatus::Paused => {
                        obs.resumes_at.remove(&s.id);
                    }
                    None => {}
                }
                let last = obs
                    .statuses
                    .get(&s.id)
                    .and_then(|h| h.last())
                    .map(|(_, st)| *st);
                if last != Some(s.status) {
                    if last == Some(SubscriptionStatus::Paused)
                        && s.status == SubscriptionStatus::Active
                    {
                        let from = obs.resumes_at.get(&s.id).map_or(now, |at| (*at).min(now));
                        obs.resumed.entry(s.id.clone()).or_default().push((
                            now,
                            from,
                            s.amount_due(),
                        ));
                    }
                    obs.statuses
                        .entry(s.id.clone())
                        .or_default()
                        .push((now, s.status));
                    changed.push(s.clone());
                }
            }
            for a in &attempts {
                let key = (a.subscription_id.clone(), a.period.clone(), a.attempt);
                let before = obs.attempts.insert(key, a.state);
                if a.state == AttemptState::NeedsReview && before != Some(AttemptState::NeedsReview)
                {
                    obs.flags += 1;
                }
                if a.state == AttemptState::Failed
                    && before != Some(AttemptState::Failed)
                    && a.decline.is_some_and(|c| c.is_hard())
                {
                    // The key its declined payment was made with, as the PG recorded it.
                    let model = lock(&self.model);
                    let keys: BTreeSet<String> = model
                        .payments
                        .iter()
                        .filter(|p| p.merchant_uid == a.merchant_uid && p.fail_reason.is_some())
                        .map(|p| p.customer_uid.clone())
                        .collect();
                    drop(model);
                    for k in keys {
                        obs.dead_keys
                            .entry(k)
                            .or_insert_with(|| a.merchant_uid.clone());
                    }
                }
            }
        }
        for s in changed {
            self.status_changed(&s, &attempts);
        }
        for s in &subs {
            if let Some(r) = &s.plan_ref
                && catalogue_plan(&self.ledger, r).as_ref() != Some(&s.plan)
            {
                self.violation(
                    "plan off its version",
                    format!(
                        "{} is charged {} KRW ({}) but says it follows {} v{}",
                        s.id, s.plan.amount, s.plan.name, r.id, r.version
                    ),
                );
            }
        }
    }

    fn status_changed(&self, s: &Subscription, attempts: &[ChargeAttempt]) {
        if s.status == SubscriptionStatus::ActionRequired {
            self.count("stopped by a hard decline for a new card");
        }
        if s.status == SubscriptionStatus::KeyMissing {
            let model = lock(&self.model);
            if model.key(&s.customer_uid).is_some_and(|k| !k.deleted) {
                drop(model);
                self.violation(
                    "key_missing with a live key",
                    format!("{} is key_missing while the PG still has its key", s.id),
                );
            }
        }
        let key_gone = lock(&self.model)
            .key(&s.customer_uid)
            .is_none_or(|k| k.deleted);
        let lost_access = match s.status {
            SubscriptionStatus::Suspended | SubscriptionStatus::Cancelled => true,
            // A key that is really gone is the customer's, whatever the
            // last refusal said.
            SubscriptionStatus::KeyMissing => !key_gone,
            _ => false,
        };
        if lost_access && s.cancel_reason.is_none() {
            let last = attempts
                .iter()
                .filter(|a| a.subscription_id == s.id && a.state.is_unpaid_settlement())
                .max_by_key(|a| a.updated_at);
            if let Some(a) = last
                && a.fail_reason
                    .as_deref()
                    .is_some_and(|r| r.contains(MSG_SETTING) || r.contains("CHANNEL_NOT_FOUND"))
            {
                self.violation(
                    "dunned for the merchant's setup",
                    format!(
                        "{} lost access ({}) to a refusal that hits every charge: {}",
                        s.id,
                        s.status.as_str(),
                        a.merchant_uid
                    ),
                );
            }
        }
    }

    /// A function emitted the `NeedsReview` metric for invocation `inv`.
    pub(super) fn review_counted(&self, _inv: u32) {
        lock(&self.observed).counted += 1;
    }

    /// A charge leaves invocation `inv`: it must hold the attempt's claim,
    /// with time left on its lease, and no earlier attempt of the period may
    /// still be paid or in flight.
    pub(super) fn check_send(&self, inv: u32, req: &ChargeRequest) {
        let now = self.now();
        let Some(a) = self.attempt_of(&req.merchant_uid) else {
            self.violation(
                "sent without a live claim",
                format!(
                    "{inv} charge {} without a claimed attempt",
                    req.merchant_uid
                ),
            );
            return;
        };
        let held = a.claim_token.as_ref().is_some_and(|t| self.holds(inv, t));
        if a.state != AttemptState::Claimed || !held || a.lease_until.is_none_or(|l| l <= now) {
            self.violation(
                "sent without a live claim",
                format!(
                    "{inv} charge {} sent without a live claim ({} lease {:?})",
                    req.merchant_uid,
                    a.state.as_str(),
                    a.lease_until
                ),
            );
        }
        if a.merchant_uid != req.merchant_uid || a.amount != req.amount {
            self.violation(
                "sent without a live claim",
                format!(
                    "{inv} charge {} is not the stored attempt",
                    req.merchant_uid
                ),
            );
        }
        // A card recorded as dead (a hard decline) is never charged again.
        let dead = lock(&self.observed)
            .dead_keys
            .get(&req.customer_uid)
            .cloned();
        if let Some(declined) = dead
            && declined != req.merchant_uid
        {
            self.violation(
                "dead card charged again",
                format!(
                    "{inv} charge {} of a key whose charge {declined} was declined for good",
                    req.merchant_uid
                ),
            );
        }
        // Only a key the gateway issued (and the engine verified) is charged.
        if !lock(&self.model).ever_issued(&req.customer_uid) {
            self.violation(
                "sent without a live claim",
                format!(
                    "{inv} charge {} names a key the gateway never issued",
                    req.merchant_uid
                ),
            );
        }
        let model = lock(&self.model);
        for earlier in 1..a.attempt {
            if let Some(e) = self
                .ledger
                .attempt_now(&a.subscription_id, &a.period, earlier)
                && (model.kept_under(&e.merchant_uid) > 0 || model.processing(&e.merchant_uid) > 0)
            {
                drop(model);
                self.violation(
                    "unsafe settlements",
                    format!(
                        "{inv} new merchant_uid {} while {} may still be paid",
                        req.merchant_uid, e.merchant_uid
                    ),
                );
                return;
            }
        }
    }

    /// A claim to send (a new attempt, or a re-send) was just written: its
    /// subscription must not have ended. A cancel stops all further charges
    /// at once (a claim written before it may still be sent: it was in
    /// flight).
    /// A subscription was just written with a new renewal notice (issue 23
    /// §1): once per period, only for what renews (active, its next
    /// period untried, not ending, not the sign-up's), within its window
    /// (not before `notice_days` ahead of the charge, not after it).
    pub(super) fn check_notice(&self, next: &Subscription) {
        let Some(n) = &next.notice else { return };
        if n.sent_at != next.updated_at {
            return; // a later write that keeps the notice it had
        }
        let id = &next.id;
        // A later write in the same second (a plan-wide price change planned
        // by the same run) keeps it too.
        let seen = format!(
            "{} {:?} {} {} {}",
            n.period, n.kind, n.sent_at, n.charge_at, n.amount
        );
        if lock(&self.observed)
            .last_notice
            .insert(id.clone(), seen.clone())
            == Some(seen)
        {
            return;
        }
        let trialing = next.status == SubscriptionStatus::Trialing;
        self.count(match n.kind {
            shared::billing::notices::NoticeKind::RenewalUpcoming => "notices: renewal upcoming",
            shared::billing::notices::NoticeKind::ActionRequired => "notices: key missing",
            shared::billing::notices::NoticeKind::TrialWillEnd => "notices: trial will end",
        });
        // A trial's notice is one per conversion and price (an extended
        // trial may end in the period it first would have; a raised price is
        // told again); a renewal's one per period.
        let once = if trialing {
            format!("trial {} {}", n.charge_at, n.amount)
        } else {
            n.period.to_string()
        };
        if !lock(&self.observed).noticed.insert((id.clone(), once)) {
            self.violation(
                "noticed twice",
                format!("{id}: period {} noticed again", n.period),
            );
        }
        let renewing = (next.status == SubscriptionStatus::Active && next.period_index >= 1
            || trialing && next.period_index == 0)
            && !next.cancel_at_period_end
            // (a trial's sign-up resolved as not paid goes on at attempt 2)
            && (next.attempt == 1 || trialing)
            && n.period == next.current_period();
        if !renewing {
            self.violation(
                "noticed while not renewing",
                format!(
                    "{id}: period {} noticed while {} (period {}, attempt {}, ending {})",
                    n.period,
                    next.status.as_str(),
                    next.current_period(),
                    next.attempt,
                    next.cancel_at_period_end
                ),
            );
        }
        let days = chrono::Duration::days(i64::from(next.notice_days()));
        // The run's billing time may lead the clock by the allowed skew.
        let early = n.sent_at + shared::config::BILLING_CLOCK_SKEW < n.charge_at - days;
        // A trial's notice may come later than its days (a trial shorter
        // than them is noticed at once), never after its end.
        if next.notice_days() == 0 || early || n.sent_at >= n.charge_at {
            self.violation(
                "notice out of its window",
                format!(
                    "{id}: period {} noticed at {} for a charge at {} ({} days' notice)",
                    n.period,
                    n.sent_at,
                    n.charge_at,
                    next.notice_days()
                ),
            );
        }
    }

    /// A first claim of a trial's period 0 was just written (issue 23 §2):
    /// the conversion needs a recorded consent, taken in the window before
    /// the trial's end.
    pub(super) fn check_conversion(&self, next: &Subscription) {
        if next.status != SubscriptionStatus::Trialing {
            return;
        }
        let Some(trial) = &next.trial else { return };
        let window =
            chrono::Duration::days(i64::from(shared::billing::trials::MAX_CONSENT_WINDOW_DAYS));
        // Told 7 Seoul days before, of this very end.
        let day = |t: DateTime<Utc>| t.with_timezone(&BILLING_TZ).date_naive();
        let told = next.notice.as_ref().is_some_and(|n| {
            n.charge_at == trial.ends_at
                && day(n.sent_at) + chrono::Days::new(7) <= day(trial.ends_at)
        });
        if !told {
            self.violation(
                "trial converted untold",
                format!(
                    "{}: period 0 claimed for a trial ending {} with notice {:?}",
                    next.id, trial.ends_at, next.notice
                ),
            );
        }
        match &trial.consent {
            Some(c) if c.at >= trial.ends_at - window && c.at < trial.ends_at => {
                self.count("trials converted (claimed)");
            }
            Some(c) => self.violation(
                "trial converted without consent",
                format!(
                    "{}: consent at {} is outside the window before {}",
                    next.id, c.at, trial.ends_at
                ),
            ),
            None => self.violation(
                "trial converted without consent",
                format!("{}: period 0 claimed with no consent recorded", next.id),
            ),
        }
    }

    /// A first claim was just written (issue 23 §3): a retry charges its
    /// period's own amount, and a period dearer than the one claimed before
    /// is charged only under a price change applied with a consent taken in
    /// the 30 days before the period's start, at that change's amount.
    pub(super) fn check_price(&self, attempt: &ChargeAttempt, next: &Subscription) {
        // The tax-free part is fixed with the amount, from the plan charged.
        let expected = next.plan.tax.tax_free_of(attempt.amount);
        if attempt.tax_free != expected && attempt.amount == next.plan.amount {
            self.violation(
                "tax split broken",
                format!(
                    "{} claimed with {} KRW tax-free of {} while its plan ({:?}) says {expected}",
                    attempt.merchant_uid, attempt.tax_free, attempt.amount, next.plan.tax
                ),
            );
        }
        // A period charged in part (decisions 76, 77) is a share of the
        // plan's price at its claim, and a coupon takes its part off that
        // (decision 78): prices are compared, not amounts.
        let partial = next
            .partial
            .filter(|p| next.anchor.period_id(p.index) == attempt.period);
        let covering = next.discount.as_ref().filter(|d| d.covers(&attempt.period));
        let price = if partial.is_some() || covering.is_some() {
            next.plan.amount
        } else {
            attempt.amount
        };
        // Every charged amount is the price after the coupon in force at
        // the claim, by the sim's own arithmetic over the world's coupons.
        let base = partial.map_or(next.plan.amount, |p| p.price(next.plan.amount));
        let expected = discounted(covering, &attempt.period, base);
        if covering.is_some() {
            self.count(if attempt.amount == 0 {
                "periods a coupon made free (recorded, not sent)"
            } else {
                "periods charged under a coupon"
            });
        }
        // A retry keeps its period's first amount (checked below), so only a
        // period's first claim is held to the price in force now.
        let retry = lock(&self.observed)
            .claimed
            .get(&next.id)
            .is_some_and(|c| c.0 == attempt.period);
        if attempt.amount != expected && !retry && (covering.is_some() || next.discount.is_some()) {
            self.violation(
                "charged off its coupon",
                format!(
                    "{}: {} claimed at {} KRW, the price after its coupon is {expected} ({:?})",
                    next.id, attempt.period, attempt.amount, next.discount
                ),
            );
        }
        // A sign-up's coupon covers its periods and no more (one applied
        // later lasts as long as its end's consent waits: its change's).
        if let Some(d) = covering {
            let months = |p: &PeriodId| {
                let n: i64 = p.as_str().parse().unwrap_or_default();
                n / 100 * 12 + n % 100
            };
            let per = i64::from(next.anchor.interval.months().max(1));
            let nth = (months(&attempt.period) - months(&d.from)) / per;
            let beyond = match super::actors::sim_coupon(&d.coupon).and_then(|c| c.1.periods()) {
                Some(n) if d.end_disclosed => nth >= i64::from(n),
                _ => next
                    .price_change
                    .as_ref()
                    .filter(|c| c.coupon.as_ref() == Some(&d.coupon) && c.is_open())
                    .is_some_and(|c| Some(&c.effective) != d.until.as_ref()),
            };
            if beyond {
                self.violation(
                    "coupon beyond its periods",
                    format!(
                        "{}: {} is period {nth} of coupon {:?}",
                        next.id, attempt.period, d
                    ),
                );
            }
        }
        if let Some(d) = covering {
            lock(&self.observed)
                .discounted
                .insert((next.id.clone(), attempt.period.clone()), d.clone());
        }
        let coupon = covering.map(|d| d.coupon.clone());
        let before = lock(&self.observed).claimed.insert(
            next.id.clone(),
            (attempt.period.clone(), attempt.amount, price, coupon),
        );
        let Some((period, amount, was_price, was_coupon)) = before else {
            return;
        };
        // A coupon's end raises the price: one applied after the sign-up
        // only with a consent taken in the 30 days before the period
        // (decision 69), one shown at the sign-up as it was.
        if period != attempt.period
            && let Some(c) = was_coupon.filter(|_| covering.is_none())
            && let Some(d) = next.discount.as_ref().filter(|d| d.coupon == c)
        {
            let starts = next.period_due();
            let window =
                chrono::Duration::days(i64::from(shared::billing::trials::MAX_CONSENT_WINDOW_DAYS));
            let consented = next.price_change.as_ref().is_some_and(|pc| {
                pc.coupon.as_ref() == Some(&c)
                    && pc
                        .closed
                        .is_some_and(|(o, _)| o == shared::billing::price_changes::Outcome::Applied)
                    && pc
                        .consent
                        .as_ref()
                        .is_some_and(|k| k.at >= starts - window && k.at < starts)
            });
            if d.end_disclosed {
                self.count("coupon ends charged as shown at sign-up");
            } else if consented {
                self.count("coupon ends charged with consent");
            } else if attempt.amount > amount {
                self.violation(
                    "coupon end charged without consent",
                    format!(
                        "{}: {} claimed at {} KRW after {} at {} KRW under coupon {c}, change {:?}",
                        next.id, attempt.period, attempt.amount, period, amount, next.price_change
                    ),
                );
            }
        }
        if period == attempt.period {
            if amount != attempt.amount {
                self.violation(
                    "retry at another amount",
                    format!(
                        "{}: {} claimed at {} KRW, then at {} KRW",
                        next.id, period, amount, attempt.amount
                    ),
                );
            }
            return;
        }
        if price <= was_price {
            return;
        }
        let starts = next.period_due();
        let window =
            chrono::Duration::days(i64::from(shared::billing::trials::MAX_CONSENT_WINDOW_DAYS));
        let consented = next.price_change.as_ref().is_some_and(|c| {
            c.closed
                .is_some_and(|(o, _)| o == shared::billing::price_changes::Outcome::Applied)
                && c.plan.amount == price
                && c.consent
                    .as_ref()
                    .is_some_and(|k| k.at >= starts - window && k.at < starts)
        });
        if consented {
            self.count("price increases charged with consent");
        } else {
            self.violation(
                "increase charged without consent",
                format!(
                    "{}: {} claimed at {} KRW (price {price}) after {} at {} KRW (price {was_price}), price change {:?}",
                    next.id, attempt.period, attempt.amount, period, amount, next.price_change
                ),
            );
        }
    }

    /// A price change that ended without a consent was just written: count
    /// how (once each).
    pub(super) fn count_price_lapse(&self, next: &Subscription) {
        use shared::billing::price_changes::Outcome;
        let Some(c) = &next.price_change else { return };
        let Some((Outcome::NotConsented, _)) = c.closed else {
            return;
        };
        let how = if next.status == SubscriptionStatus::Cancelled {
            "price increases not consented: ended"
        } else {
            "price increases not consented: old price kept"
        };
        if lock(&self.observed).lapsed.insert((next.id.clone(), how)) {
            self.count(how);
        }
    }

    /// A trial that ended without a consent was just written: extended, or
    /// cancelled, never charged (the claim check above catches a charge).
    /// A refund's outcome was lost: it waits for a person (decision 67)
    /// until it is finished.
    pub(super) fn refund_review(&self, merchant_uid: &str, key: &str, flagged: bool) {
        let mut obs = lock(&self.observed);
        let entry = (merchant_uid.to_owned(), key.to_owned());
        if flagged {
            if obs.refunds_in_review.insert(entry) {
                drop(obs);
                self.count("refunds put in the review queue");
            }
        } else {
            obs.refunds_in_review.remove(&entry);
        }
    }

    pub(super) fn count_lapse(&self, next: &Subscription) {
        let Some(trial) = &next.trial else { return };
        let how = if next.status == SubscriptionStatus::Cancelled
            && next.cancel_reason.as_deref() == Some(shared::billing::trials::LAPSED)
        {
            "trials ended without consent"
        } else if trial.extended && trial.consent.is_none() {
            "trials extended without consent"
        } else {
            return;
        };
        if lock(&self.observed).lapsed.insert((next.id.clone(), how)) {
            self.count(how);
        }
    }

    pub(super) fn check_claim(&self, id: &SubscriptionId, what: &str) {
        if let Some(s) = self.ledger.subscription_now(id)
            && s.status == SubscriptionStatus::Cancelled
        {
            self.violation(
                "charged after a cancel",
                format!("{what} for {id} after it was cancelled"),
            );
        }
    }

    /// An attempt was just settled as not paid (declined, rejected). The
    /// PG may still be processing a copy of it (its lookups lag, a copy of
    /// the request was late): the engine looks again before any new
    /// merchant uid for the period (see `check_send`). But when this
    /// settlement ended the subscription's access (suspended, cancelled, key
    /// missing), nothing would look again: the PG must have nothing paid or
    /// processing under it.
    pub(super) fn check_unpaid(&self, merchant_uid: &str, after: SubscriptionStatus) {
        let model = lock(&self.model);
        let processing = model.processing(merchant_uid);
        if !after.is_chargeable() && (model.kept_under(merchant_uid) > 0 || processing > 0) {
            drop(model);
            self.violation(
                "unsafe settlements",
                format!("{merchant_uid} settled as not paid, ending access ({}), while the PG has it paid or still processing ({processing})", after.as_str()),
            );
        } else if model.paid_under(merchant_uid) > 0 || processing > 0 {
            drop(model);
            self.record(format!(
                "NOTE {merchant_uid} settled as not paid while the PG may still pay it"
            ));
        }
    }

    /// Money was just taken under `merchant_uid`: at most one payment per
    /// (subscription, period), never before the period is due, and at most
    /// one period per subscription a day.
    pub(super) fn check_paid(&self, merchant_uid: &str) {
        let Some((sub, period)) = self.period_of(merchant_uid) else {
            // A card-replacement window's payment pays no period.
            return;
        };
        let paid = self
            .paid_per_period()
            .get(&(sub.clone(), period.clone()))
            .copied()
            .unwrap_or(0);
        if paid > 1 {
            // Counted at the end (`double charges`); marked in the trace now.
            self.record(format!("DOUBLE CHARGE {sub} {period} paid {paid} times"));
        }
        let is_charge = matches!(
            MerchantUid::parse(merchant_uid),
            Some(MerchantUid::Charge { .. })
        );
        if let (Some(s), true) = (self.ledger.subscription_now(&sub), is_charge) {
            let due = (0..600)
                .find(|&k| s.anchor.period_id(k) == period)
                .map(|k| s.anchor.period_start(k));
            if due.is_some_and(|due| self.now() < due) {
                self.violation(
                    "billed early",
                    format!("{merchant_uid} billed before its period was due ({due:?})"),
                );
            }
        }
        if is_charge {
            let day = seoul_date(self.now());
            let standing = self.ledger.subscription_now(&sub);
            let mut obs = lock(&self.observed);
            if let Some(s) = standing {
                obs.paid_while
                    .insert(merchant_uid.to_owned(), (s.status, s.cancel_at_period_end));
            }
            let periods = obs.paid_days.entry((sub.clone(), day)).or_default();
            periods.insert(period);
            if periods.len() > 1 {
                let list: Vec<String> = periods.iter().map(ToString::to_string).collect();
                drop(obs);
                self.violation(
                    "two periods a day",
                    format!("{sub} charged for {} on {day}", list.join(" and ")),
                );
            }
        }
    }

    /// (subscription, period) of one of our merchant uids: a charge uid
    /// names them; an issuance pays the sign-up period.
    fn period_of(&self, merchant_uid: &str) -> Option<(SubscriptionId, PeriodId)> {
        match MerchantUid::parse(merchant_uid)? {
            MerchantUid::Charge {
                subscription,
                period,
                ..
            } => Some((subscription, period)),
            MerchantUid::Issuance { subscription } => {
                let reg = self
                    .ledger
                    .all_registrations()
                    .into_iter()
                    .find(|r| r.merchant_uid == merchant_uid)?;
                if reg.replaces_key {
                    // A card-replacement window pays no period.
                    return None;
                }
                // The period the engine recorded the window's money for (a
                // billing-day plan's first period is the billing month
                // before the sign-up's, decision 77).
                if let Some(a) = self
                    .ledger
                    .all_attempts()
                    .into_iter()
                    .find(|a| a.merchant_uid == merchant_uid)
                {
                    return Some((subscription, a.period));
                }
                let period = Anchor::from_instant(reg.created_at).period_id(0);
                // The subscription's own first anchor when it exists
                // (activation may cross midnight in Seoul).
                let period = self
                    .ledger
                    .subscription_now(&subscription)
                    .map_or(period, |s| Anchor::from_instant(s.created_at).period_id(0));
                Some((subscription, period))
            }
        }
    }

    /// Payments that took money and were not refunded in full, per
    /// (subscription, period): what a customer keeps paying for one period,
    /// net of refunds.
    fn paid_per_period(&self) -> BTreeMap<(SubscriptionId, PeriodId), u64> {
        let payments: Vec<String> = lock(&self.model)
            .payments
            .iter()
            .filter(|p| p.kept() > 0)
            .map(|p| p.merchant_uid.clone())
            .collect();
        let mut out = BTreeMap::new();
        for uid in payments {
            if let Some(key) = self.period_of(&uid) {
                *out.entry(key).or_insert(0) += 1;
            }
        }
        out
    }
}

/// Whether a payment under `merchant_uid` was put right: refunded in full,
/// or waiting for (or decided by) a person.
fn put_right(attempts: &[ChargeAttempt], merchant_uid: &str, kept: i64) -> bool {
    kept == 0
        || attempts.iter().any(|a| {
            a.merchant_uid == merchant_uid
                && (a.state == AttemptState::NeedsReview || a.resolution.is_some())
        })
}

/// The end-of-world checks, from the model's ledger and ours.
pub(super) fn verdict(world: &World) -> SeedReport {
    let mut report = SeedReport {
        seed: world.seed,
        steps: world.steps.load(Ordering::SeqCst),
        ..SeedReport::default()
    };
    let attempts = world.ledger.all_attempts();
    let subs: BTreeMap<SubscriptionId, Subscription> = world
        .ledger
        .all_subscriptions()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let payments = lock(&world.model).payments.clone();
    let mut broken = |report: &mut SeedReport, which: &'static str, what: String| {
        *report.broken.entry(which).or_insert(0) += 1;
        report
            .violations
            .push(format!("seed {}: {which}: {what}", world.seed));
    };
    // Every charge the PG took is recorded as paid, or waits for a person.
    for p in payments.iter().filter(|p| p.took_money()) {
        let attempt = attempts.iter().find(|a| a.merchant_uid == p.merchant_uid);
        let sub_review = attempt
            .and_then(|a| subs.get(&a.subscription_id))
            .is_some_and(|s| s.status == SubscriptionStatus::NeedsReview);
        let replacement = p.usage == Usage::Issue
            && world
                .ledger
                .all_registrations()
                .iter()
                .any(|r| r.merchant_uid == p.merchant_uid && r.replaces_key);
        let recorded = match attempt {
            Some(a) if a.state == AttemptState::Paid => {
                a.imp_uid.as_deref() == Some(p.imp_uid.as_str())
            }
            Some(a) if a.state == AttemptState::NeedsReview => true,
            Some(a) if a.resolution.is_some() => true,
            Some(a) if a.state.is_open() && sub_review => true,
            // A card-replacement window's money is refunded at once.
            None if replacement => p.kept() == 0,
            _ => false,
        };
        if !recorded {
            report.unrecorded += 1;
            let usage = match p.usage {
                Usage::Issue => "issuance",
                Usage::Charge => "charge",
            };
            report.violations.push(format!(
                "seed {}: unrecorded {usage} {} {} ({} KRW, {} kept): ours {:?}",
                world.seed,
                p.merchant_uid,
                p.imp_uid,
                p.amount,
                p.kept(),
                attempt.map(|a| a.state.as_str())
            ));
        }
    }
    // Every paid charge's VAT split adds up to its amount and is the PG's
    // (V2 reports it; V1 reports none: what was sent), and what was
    // refunded of it splits the way the PG booked the refunds.
    for a in attempts.iter().filter(|a| a.state == AttemptState::Paid) {
        let Some(p) = payments
            .iter()
            .find(|p| Some(p.imp_uid.as_str()) == a.imp_uid.as_deref() && p.usage == Usage::Charge)
        else {
            continue;
        };
        let split = a.tax();
        let as_pg = if world.v2 {
            (a.tax_free, a.vat) == (p.tax_free, Some(p.vat))
        } else {
            a.tax_free == p.tax_free && a.vat.is_none()
        };
        let refunded_free = split.refunded_part(a.refunded).tax_free;
        if split.total() != a.amount
            || split.supply < 0
            || !as_pg
            || (a.refunded == p.cancelled && refunded_free != p.cancelled_tax_free)
        {
            broken(
                &mut report,
                "tax split broken",
                format!(
                    "{} recorded {split:?} (tax-free {}, VAT {:?}, refunded {} of which tax-free {refunded_free}); the PG booked tax-free {}, VAT {}, refunded {} of which tax-free {}",
                    a.merchant_uid,
                    a.tax_free,
                    a.vat,
                    a.refunded,
                    p.tax_free,
                    p.vat,
                    p.cancelled,
                    p.cancelled_tax_free
                ),
            );
        }
    }
    // Cash receipts (decision 74): every charge paid from an account has
    // one; at the end, the PG holds one live receipt for what is left of it
    // (none once it is refunded in full) and our record says the same, or
    // it waits for a person; and no charge was issued a receipt more often
    // than once plus once per refund of it.
    let receipts = lock(&world.model).receipts.clone();
    for a in attempts.iter().filter(|a| a.state == AttemptState::Paid) {
        let Some(pi) = payments
            .iter()
            .position(|p| Some(p.imp_uid.as_str()) == a.imp_uid.as_deref())
        else {
            continue;
        };
        let p = &payments[pi];
        let issued = receipts.iter().filter(|r| r.payment == pi).count();
        let live = receipts
            .iter()
            .filter(|r| r.payment == pi && r.cancelled_at.is_none())
            .collect::<Vec<_>>();
        let ours = a.cash_receipt.as_ref();
        let what = || {
            format!(
                "{} ({} KRW, {} kept, {} refunds): the PG issued {issued}, live {:?}; ours {:?}",
                a.merchant_uid,
                p.amount,
                p.kept(),
                a.refunded,
                live.iter().map(|r| r.amount).collect::<Vec<_>>(),
                ours.map(|r| (
                    r.state,
                    r.live.as_ref().map(|l| l.amount),
                    r.issues,
                    r.cancels
                ))
            )
        };
        if !p.cash {
            if ours.is_some() || issued > 0 {
                broken(&mut report, "cash receipt wrong", what());
            }
            continue;
        }
        let Some(r) = ours else {
            broken(&mut report, "cash receipt wrong", what());
            continue;
        };
        let refunds = lock(&world.model)
            .refunds
            .iter()
            .filter(|d| d.payment == pi)
            .count();
        if issued > 1 + refunds {
            broken(&mut report, "cash receipt issued twice", what());
        }
        if r.state == shared::billing::ReceiptState::Review {
            *lock(&world.stats)
                .entry("cash receipts waiting for a person at the end")
                .or_insert(0) += 1;
            continue;
        }
        let pg_live: Vec<i64> = live.iter().map(|r| r.amount).collect();
        // What the engine knows is left: a refund made at the PG that no
        // webhook or lookup has told it of yet is not on its record (the
        // receipt follows once it is), so the receipt covers what it knows.
        let left = a.amount - a.refunded;
        if left != p.kept() {
            *lock(&world.stats)
                .entry("cash receipts over a refund not yet on record")
                .or_insert(0) += 1;
        }
        let expected: Vec<i64> = if left > 0 { vec![left] } else { vec![] };
        let ours_live: Vec<i64> = r.live.iter().map(|l| l.amount).collect();
        if pg_live != expected || ours_live != expected {
            broken(&mut report, "cash receipt wrong", what());
        } else if left == 0 && issued > 0 {
            *lock(&world.stats)
                .entry("cash receipts cancelled with a full refund")
                .or_insert(0) += 1;
        } else if issued > 1 {
            *lock(&world.stats)
                .entry("cash receipts reissued after a partial refund")
                .or_insert(0) += 1;
        }
    }
    // Each coupon's redemptions are counted once: as many as the writes
    // that redeemed it succeeded, never more than its limit.
    // What redeemed each: the registrations written with it, and the
    // audited changes that applied it (a caller may have lost the answer:
    // the write is the truth, and what callers saw is at most that).
    let seen = lock(&world.observed).redeemed.clone();
    let audit = world.ledger.all_audit();
    for c in world.ledger.all_coupons() {
        let counted = u64::from(c.redeemed);
        let signups = world
            .ledger
            .all_registrations()
            .iter()
            .filter(|r| r.coupon.as_ref().is_some_and(|t| t.id == c.id))
            .count();
        let applied = audit
            .iter()
            .filter(|e| e.action == "coupon" && e.detail.starts_with(&format!("coupon {} ", c.id)))
            .count();
        let expected = (signups + applied) as u64;
        let told = seen.get(&c.id).copied().unwrap_or_default();
        if told > expected {
            broken(
                &mut report,
                "coupon redeemed off its count",
                format!(
                    "{}: callers were told of {told} redemptions, {expected} written",
                    c.id
                ),
            );
        }
        if counted != expected || c.max_redemptions.is_some_and(|m| c.redeemed > m) {
            broken(
                &mut report,
                "coupon redeemed off its count",
                format!(
                    "{}: {counted} counted, {expected} redeemed, limit {:?}",
                    c.id, c.max_redemptions
                ),
            );
        }
        if c.max_redemptions == Some(c.redeemed) {
            *lock(&world.stats)
                .entry("coupons redeemed up to their limit")
                .or_insert(0) += 1;
        }
    }
    // At most one payment per (subscription, period).
    for ((sub, period), n) in world.paid_per_period() {
        if n > 1 {
            report.double_charges += 1;
            report.violations.push(format!(
                "seed {}: double charge {sub} {period}: {n} payments",
                world.seed
            ));
        }
    }
    customer_side(world, &mut report, &attempts, &subs, &payments, &mut broken);
    // Nothing left open (an open attempt of a flagged subscription waits for its person).
    for a in attempts.iter().filter(|a| a.state.is_open()) {
        let review = subs
            .get(&a.subscription_id)
            .is_some_and(|s| s.status == SubscriptionStatus::NeedsReview);
        if !review {
            report.stuck += 1;
            report.violations.push(format!(
                "seed {}: stuck {} {} ({:?})",
                world.seed,
                a.merchant_uid,
                a.state.as_str(),
                a.fail_reason
            ));
        }
    }
    report.needs_review = attempts
        .iter()
        .filter(|a| a.state == AttemptState::NeedsReview)
        .count() as u64;
    for a in attempts
        .iter()
        .filter(|a| a.state == AttemptState::NeedsReview)
    {
        let reason = a.fail_reason.as_deref().unwrap_or_default();
        let why = if reason.starts_with("issuance payment") {
            "needs review at the end: sign-up window took an odd amount"
        } else if reason.contains("never recorded by the gateway") {
            "needs review at the end: sent the most times, never recorded"
        } else if reason.contains("still unsettled") {
            "needs review at the end: open for days"
        } else if reason.contains("after the subscription was cancelled") {
            "needs review at the end: paid after a cancel"
        } else if reason.contains("arrived after the attempt was settled") {
            "needs review at the end: late payment"
        } else if reason.contains("card replacement window") {
            "needs review at the end: card window took money"
        } else {
            "needs review at the end: other"
        };
        *lock(&world.stats).entry(why).or_insert(0) += 1;
    }
    // No period skipped: the paid periods of each subscription on its first
    // anchor are exactly the ones before its current period, and a
    // chargeable one is not behind.
    let end = world.now();
    let registrations = world.ledger.all_registrations();
    for s in subs.values() {
        // On its first calendar: anchored on its sign-up day, or on a billing
        // day's date before it (decision 77), whose free first period (or
        // one prorated under the smallest charge) is never charged.
        let first_calendar = match super::actors::sim_billing(&s.id).and_then(|b| {
            shared::billing::calendar::aligned(seoul_date(s.created_at), b, s.anchor.interval)
                .map(|a| (b, a))
        }) {
            Some((b, (anchor, days, of))) => (s.anchor == anchor).then(|| {
                let amount = registrations
                    .iter()
                    .find(|r| r.subscription_id == s.id && !r.replaces_key)
                    .map_or(0, |r| r.plan.amount);
                let free = b.first == shared::billing::FirstPeriod::Free
                    || (b.first == shared::billing::FirstPeriod::Prorated
                        && shared::billing::entities::prorated(amount, days, of).is_none());
                u32::from(free)
            }),
            None => (s.anchor == s.anchor.moved_to(s.created_at)).then_some(0),
        };
        // A billing-day subscription stays on its billing day until a
        // comeback re-anchors it (decision 77): one that was only ever
        // active, paused or cancelled is on the aligned calendar.
        if let Some(b) = super::actors::sim_billing(&s.id)
            && first_calendar.is_none()
        {
            let obs = lock(&world.observed);
            let only_on_time = obs.statuses.get(&s.id).is_some_and(|h| {
                h.iter().all(|(_, st)| {
                    matches!(
                        st,
                        SubscriptionStatus::Active
                            | SubscriptionStatus::Paused
                            | SubscriptionStatus::Cancelled
                    )
                })
            });
            drop(obs);
            if only_on_time {
                broken(
                    &mut report,
                    "off its billing day",
                    format!(
                        "{} (billing day {}) anchored on {:04}-{:02}-{:02}, never re-anchored",
                        s.id, b.day, s.anchor.year, s.anchor.month, s.anchor.day
                    ),
                );
            }
        }
        if let Some(first_k) = first_calendar {
            let paid: BTreeSet<PeriodId> = attempts
                .iter()
                .filter(|a| {
                    a.subscription_id == s.id && a.state == AttemptState::Paid && !a.is_window()
                })
                // A free first period is never charged; money the sign-up
                // window took for it that a person accepted (resolved as
                // paid) is theirs to keep ("first period charged wrong"
                // checks the engine never claimed it).
                .filter(|a| {
                    a.resolution.is_none()
                        || (0..first_k).all(|k| s.anchor.period_id(k) != a.period)
                })
                .map(|a| a.period.clone())
                .collect();
            // A period it was paused in and did not pay was skipped (decision
            // 76): never charged, so not expected ("charged inside a pause"
            // checks that none that began paused was charged).
            let obs = lock(&world.observed);
            let expected: BTreeSet<PeriodId> = (first_k..s.period_index)
                .filter(|&k| {
                    let id = s.anchor.period_id(k);
                    paid.contains(&id)
                        || !obs.paused_during(
                            &s.id,
                            s.anchor.period_start(k),
                            s.anchor.period_start(k + 1),
                        )
                })
                .map(|k| s.anchor.period_id(k))
                .collect();
            drop(obs);
            if paid != expected && s.status != SubscriptionStatus::Cancelled {
                report.violations.push(format!(
                    "seed {}: {} paid periods {paid:?}, expected {expected:?}",
                    world.seed, s.id
                ));
            }
        }

        // A pause with a date is over by the first run after it.
        if let Some(at) = s.pause.and_then(|p| p.resumes_at)
            && s.status == SubscriptionStatus::Paused
            && at + chrono::Duration::days(2) < end
        {
            broken(
                &mut report,
                "pause overran",
                format!("{} still paused, due to resume at {at}", s.id),
            );
        }
        // (One period a day: a period paid on the world's last day lets
        // the next, due already, wait for tomorrow's run.)
        if s.status.is_chargeable()
            && s.next_charge_at + chrono::Duration::days(2) < end
            && s.paid_on != Some(seoul_date(end))
        {
            report.stuck += 1;
            report.violations.push(format!(
                "seed {}: {} left behind: {} due {}",
                world.seed,
                s.id,
                s.status.as_str(),
                s.next_charge_at
            ));
        }
    }
    // Attempts recorded paid must be paid at the PG; a period a coupon
    // made free (0 KRW, decision 78) is recorded and never sent.
    for a in attempts.iter().filter(|a| a.state == AttemptState::Paid) {
        if a.amount == 0 && a.imp_uid.is_none() {
            if payments.iter().any(|p| p.merchant_uid == a.merchant_uid) {
                report.violations.push(format!(
                    "seed {}: {} free (0 KRW) but sent to the PG",
                    world.seed, a.merchant_uid
                ));
            }
            continue;
        }
        let at_pg = payments.iter().any(|p| {
            p.merchant_uid == a.merchant_uid
                && p.took_money()
                && a.imp_uid.as_deref() == Some(p.imp_uid.as_str())
        });
        if !at_pg {
            report.violations.push(format!(
                "seed {}: {} recorded paid without a payment at the PG",
                world.seed, a.merchant_uid
            ));
        }
    }
    report
        .violations
        .extend(lock(&world.violations).iter().cloned());
    for (k, v) in lock(&world.broken).iter() {
        *report.broken.entry(k).or_insert(0) += v;
    }
    let trace = lock(&world.trace);
    let mut h = trace.hasher.clone();
    report.steps.hash(&mut h);
    report.trace_hash = h.finish();
    report.trace = trace.lines.clone().unwrap_or_default();
    report.stats = lock(&world.stats).clone();
    report
}

/// The customer's side at the end: nothing charged after a cancel took
/// effect, no period without access billed, a refund request moves money
/// once, everything waiting for a person was counted by a metric.
fn customer_side(
    world: &World,
    report: &mut SeedReport,
    attempts: &[ChargeAttempt],
    subs: &BTreeMap<SubscriptionId, Subscription>,
    payments: &[crate::model::Payment],
    broken: &mut impl FnMut(&mut SeedReport, &'static str, String),
) {
    let obs = lock(&world.observed);
    for p in payments
        .iter()
        .filter(|p| p.took_money() && p.usage == Usage::Charge)
    {
        let Some(MerchantUid::Charge {
            subscription,
            period,
            ..
        }) = MerchantUid::parse(&p.merchant_uid)
        else {
            continue;
        };
        let Some(paid_at) = p.paid_at else { continue };
        if put_right(attempts, &p.merchant_uid, p.kept()) {
            continue;
        }
        match obs.paid_while.get(&p.merchant_uid) {
            Some((SubscriptionStatus::Cancelled, _)) => broken(
                report,
                "charged after a cancel",
                format!(
                    "{} paid at {paid_at} after its subscription was cancelled",
                    p.merchant_uid
                ),
            ),
            Some((_, true)) => broken(
                report,
                "charged after a cancel",
                format!(
                    "{} ({period}) paid at {paid_at} after a period-end cancel was accepted",
                    p.merchant_uid
                ),
            ),
            _ => {}
        }
        if let Some(s) = subs.get(&subscription)
            && let Some(k) = (0..600).find(|&k| s.anchor.period_id(k) == period)
        {
            let start = s.anchor.period_start(k);
            if let Some(back) = obs.access_back_after(&subscription, start)
                && seoul_date(start) < seoul_date(back)
                && paid_at >= back
            {
                let paused =
                    obs.status_at(&subscription, start) == Some(SubscriptionStatus::Paused);
                // A resume inside a period charges the rest of it, prorated
                // from the day of the resume at the price then (decision
                // 76): that much, no more.
                let end = s.anchor.period_date(k + 1);
                let rest = obs
                    .resumed
                    .get(&subscription)
                    .and_then(|r| r.iter().find(|(at, _, _)| *at == back))
                    .map(|(_, from, price)| {
                        let days = (end - seoul_date(*from)).num_days();
                        let of = (end - seoul_date(start)).num_days().max(1);
                        price * days / of
                    });
                if paused && rest.is_some_and(|most| p.amount <= most) {
                    continue;
                }
                broken(
                    report,
                    if paused {
                        "charged inside a pause"
                    } else {
                        "billed without access"
                    },
                    format!(
                        "{} billed for {period}, which began while it had no access (access back {back})",
                        p.merchant_uid
                    ),
                );
            }
        }
    }
    // A yearly (or N-month) subscription is charged once per period of its
    // interval: the periods whose money it kept are at least that many
    // months apart (a re-anchored comeback starts after a period it did
    // not bill, so it is never closer).
    let mut kept_periods: BTreeMap<SubscriptionId, BTreeSet<i64>> = BTreeMap::new();
    for p in payments
        .iter()
        .filter(|p| p.kept() > 0 && p.usage == Usage::Charge)
    {
        if let Some(MerchantUid::Charge {
            subscription,
            period,
            ..
        }) = MerchantUid::parse(&p.merchant_uid)
        {
            let text = period.as_str();
            let (y, m) = (text[..4].parse::<i64>(), text[4..].parse::<i64>());
            if let (Ok(y), Ok(m)) = (y, m) {
                kept_periods
                    .entry(subscription)
                    .or_default()
                    .insert(y * 12 + m);
            }
        }
    }
    for (id, months) in &kept_periods {
        // The interval it signed up to, from its id: a calendar that lost
        // it on the way (a re-anchor, a trial's extension) is caught too.
        let interval = super::actors::sim_interval(id);
        if subs.get(id).is_some_and(|s| s.anchor.interval != interval) {
            broken(
                report,
                "charged more often than its interval",
                format!(
                    "{id} signed up {interval}, its calendar is {:?}",
                    subs[id].anchor.interval
                ),
            );
        }
        let every = i64::from(interval.months());
        let months: Vec<i64> = months.iter().copied().collect();
        for pair in months.windows(2) {
            if pair[1] - pair[0] < every {
                broken(
                    report,
                    "charged more often than its interval",
                    format!(
                        "{id} ({interval}) kept money for periods {} months apart",
                        pair[1] - pair[0]
                    ),
                );
            }
        }
    }
    // A billing-day plan's first, partial period (decision 77): on its
    // billing calendar, prorated to the won from the sign-up's amount, or
    // never charged when free.
    let registrations = world.ledger.all_registrations();
    for s in subs.values() {
        let Some(billing) = super::actors::sim_billing(&s.id) else {
            continue;
        };
        let Some(reg) = registrations
            .iter()
            .find(|r| r.subscription_id == s.id && !r.replaces_key)
        else {
            continue;
        };
        let signed_up = seoul_date(s.created_at);
        let Some((anchor, days, of)) =
            shared::billing::calendar::aligned(signed_up, billing, s.anchor.interval)
        else {
            continue;
        };
        // A comeback re-anchors (decision 42): its first period is whole.
        if s.anchor.day != anchor.day {
            continue;
        }
        let first = anchor.period_id(0);
        // Less the sign-up's coupon when it covers the period (decision 78).
        let share = reg.plan.amount * i64::from(days) / i64::from(of);
        let prorated = if share < 100 {
            share
        } else {
            discounted(
                obs.discounted.get(&(s.id.clone(), first.clone())),
                &first,
                share,
            )
        };
        for a in attempts
            .iter()
            // (money a sign-up window took, accepted by a person, is theirs)
            .filter(|a| {
                a.subscription_id == s.id
                    && a.period == first
                    && !a.is_window()
                    && a.resolution.is_none()
            })
        {
            let wrong = match billing.first {
                shared::billing::FirstPeriod::Free => true,
                shared::billing::FirstPeriod::Prorated if share < 100 => true,
                shared::billing::FirstPeriod::Prorated => a.amount != prorated,
                shared::billing::FirstPeriod::Full => false,
            };
            if wrong {
                broken(
                    report,
                    "first period charged wrong",
                    format!(
                        "{} ({:?}, day {}) charged {} for its first period {first}; {days} of {of} days of {} is {prorated}",
                        s.id, billing.first, billing.day, a.amount, reg.plan.amount
                    ),
                );
            }
        }
    }
    // One refund request moves money at most once.
    let model = lock(&world.model);
    let mut per_key: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &model.refunds {
        if let Some(key) = obs.refund_keys.get(&r.by) {
            *per_key.entry(key.as_str()).or_insert(0) += 1;
        }
    }
    for (key, n) in per_key.into_iter().filter(|(_, n)| *n > 1) {
        broken(
            report,
            "refunded twice",
            format!("refund request {key} moved money {n} times"),
        );
    }
    // A mid-term cancel moves back no more than its quote said.
    let mut moved: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &model.refunds {
        if let Some(key) = obs.refund_keys.get(&r.by) {
            *moved.entry(key.as_str()).or_insert(0) += r.amount;
        }
    }
    for (key, quoted) in &obs.quoted {
        let back = moved.get(key.as_str()).copied().unwrap_or(0);
        if back > *quoted {
            broken(
                report,
                "refund beyond the quote",
                format!("mid-term cancel {key} refunded {back} KRW; its quote said {quoted}"),
            );
        }
    }
    // Everything waiting for a person shows in the metric the alarm
    // watches: the last run's count of the review queue.
    let waiting = attempts
        .iter()
        .filter(|a| a.state == AttemptState::NeedsReview)
        .count() as u64
        + obs.refunds_in_review.len() as u64;
    if obs.last_gauge != Some(waiting) {
        broken(
            report,
            "unalarmed reviews",
            format!(
                "{waiting} attempts wait for a person; the last run counted {:?} ({} flags, {} counted as they happened)",
                obs.last_gauge, obs.flags, obs.counted
            ),
        );
    }
    drop(model);
}
