//! The actors of a world: customers signing up (and replacing cards), the
//! schedule's daily runs (delivered twice, run twice at once), PG webhooks,
//! merchants using the management API while runs charge, operators
//! following `docs/operations.md` for what waits for a person, and the odd
//! manual run with a mistyped time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use shared::billing::coupons::{Coupon, CouponDuration, CouponId, CouponTerms, Off};
use shared::billing::trials::{Consent, ConversionConsent, OnNoConsent, TrialTerms};
use shared::billing::{
    Anchor, AttemptState, BillingDay, FirstPeriod, Interval, MerchantUid, Plan, Registration,
    RegistrationStatus, SubscriptionId, SubscriptionStatus,
};
use shared::charging::BillingRun;
use shared::engine::Budget;
use shared::gateway::{Notice, PaymentNotice};
use shared::ledger::{Ledger, Redeemer, Redemption, RequestState, StoredResponse};
use shared::management::{self, Actor, CancelInput, ManageError, RefundInput, ResolveInput};
use shared::notification;
use shared::registration::{self, CallbackParams};
use shared::run::{self as billing_run, RunOptions};
use shared::secret::Secret;

use super::{
    CALLBACK_TIMEOUT, Customer, MANAGE_TIMEOUT, Params, RUN_TIMEOUT, SimEngine, WEBHOOK_TIMEOUT,
    World, lock, ten_am, until,
};

/// A trace label for a notice (never the billing key).
/// The trial of a sign-up, from its id (no draw from the random stream):
/// an explicit 40-day trial that ends in a cancel without a consent, an
/// explicit 10-day one extended once, a 5-day one consented at sign-up, or
/// (five in eight) none.
/// A sign-up's billing interval, from its id (so the random stream is the
/// one it always was): a fifth yearly, a fifth every two months, the rest
/// monthly (decision 75).
pub(super) fn sim_interval(id: &SubscriptionId) -> Interval {
    match id.as_str().as_bytes()[9] % 5 {
        0 => Interval::Year,
        1 => Interval::Months(2),
        _ => Interval::Month,
    }
}

/// A sign-up's billing day, from its id (so the random stream is the one
/// it always was): a fifth of those without a trial bill on a fixed day,
/// the 1st, 15th, 25th or 31st, their first period free, prorated or full
/// (decision 77).
pub(super) fn sim_billing(id: &SubscriptionId) -> Option<BillingDay> {
    let b = id.as_str().as_bytes();
    if sim_trial(id).is_some() || !b[7].is_multiple_of(5) {
        return None;
    }
    Some(BillingDay {
        day: [1, 15, 25, 31][usize::from(b[6]) % 4],
        first: [FirstPeriod::Free, FirstPeriod::Prorated, FirstPeriod::Full][usize::from(b[5]) % 3],
    })
}

/// The world's coupons (decision 78): (id, off, duration, max
/// redemptions, redeemable for days from the origin). Small limits, so
/// sign-ups and merchants race for the last redemptions.
type SimCoupon = (&'static str, Off, CouponDuration, Option<u32>, Option<i64>);

pub(super) const SIM_COUPONS: [SimCoupon; 5] = [
    (
        "sim-half-3",
        Off::Percent(50),
        CouponDuration::Repeating(3),
        Some(2),
        None,
    ),
    (
        "sim-free-1",
        Off::Percent(100),
        CouponDuration::Once,
        Some(1),
        None,
    ),
    (
        "sim-3000",
        Off::Amount(3000),
        CouponDuration::Forever,
        None,
        None,
    ),
    (
        "sim-9850",
        Off::Amount(9850),
        CouponDuration::Repeating(2),
        Some(1),
        None,
    ),
    (
        "sim-late",
        Off::Percent(20),
        CouponDuration::Once,
        Some(3),
        Some(20),
    ),
];

/// The sim's coupon of that id.
pub(super) fn sim_coupon(id: &CouponId) -> Option<(Off, CouponDuration)> {
    SIM_COUPONS
        .iter()
        .find(|c| c.0 == id.as_str())
        .map(|c| (c.1, c.2))
}

/// A sixth of the sign-ups (by their id, so the world's random stream is
/// the one it always was) come with one of the world's coupons.
fn sim_signup_coupon(id: &SubscriptionId) -> Option<&'static str> {
    let b = id.as_str().as_bytes();
    b[7].is_multiple_of(6)
        .then(|| SIM_COUPONS[usize::from(b[6]) % SIM_COUPONS.len()].0)
}

fn sim_trial(id: &SubscriptionId) -> Option<TrialTerms> {
    let (days, consent, on_no_consent) = match id.as_str().as_bytes()[10] % 8 {
        0 => (40, ConversionConsent::Explicit, OnNoConsent::Cancel),
        1 => (
            10,
            ConversionConsent::Explicit,
            OnNoConsent::ExtendTrialOnce,
        ),
        2 => (5, ConversionConsent::Signup, OnNoConsent::Cancel),
        _ => return None,
    };
    Some(TrialTerms {
        days,
        consent,
        on_no_consent,
    })
}

fn notice_label(n: &Notice) -> String {
    match n {
        Notice::Payment(p) => format!("{} {}", p.payment_id, p.payment_ref),
        Notice::KeyIssued { .. } => "BillingKey.Issued".into(),
        Notice::Ignored { kind, .. } => kind.clone(),
    }
}

pub(super) async fn play(world: &Arc<World>, params: &Params) {
    let origin = world.origin;
    // The world's coupons, before anyone signs up.
    for (id, off, duration, max, days) in SIM_COUPONS {
        let coupon = Coupon {
            id: CouponId::parse(id).unwrap_or_else(|| panic!("coupon id {id}")),
            name: id.into(),
            off,
            duration,
            max_redemptions: max,
            redeem_by: days.map(|d| origin + chrono::Duration::days(d)),
            redeemed: 0,
            created_at: origin,
        };
        if world.ledger.put_coupon(&coupon).await.is_err() {
            world.violation("setup", format!("coupon {id} could not be written"));
        }
    }
    let days = i64::from(params.months) * 30 + 5;
    // Sign-ups through the first month, at any time of day (anchors on 29–31 included).
    for _ in 0..params.subscriptions {
        let at = Duration::from_secs(world.rand(|r| r.random_range(0..31 * 86_400)));
        tokio::spawn(Arc::clone(world).sign_up(at));
    }
    // Some merchants change a catalogue plan's price for everyone on it
    // (decision 71), and chase the consents the runs ask for.
    if world.rand(|r| r.random_bool(0.5)) {
        let at = Duration::from_secs(world.rand(|r| r.random_range(3..40) * 86_400 + 3 * 3600));
        tokio::spawn(Arc::clone(world).plan_price_change(at));
    }
    // Some merchants break their PG setting for a day or a few: every
    // charge is refused alike until someone fixes it.
    if world.strikes(0.1) {
        let at = Duration::from_secs(world.rand(|r| r.random_range(20..100) * 86_400));
        let days = world.rand(|r| r.random_range(1..=4));
        tokio::spawn(Arc::clone(world).broken_setting(at, days));
    }
    // Now and then somebody starts a run by hand and mistypes its time.
    if world.strikes(0.1) {
        let at = Duration::from_secs(world.rand(|r| r.random_range(5..100) * 86_400 + 5 * 3600));
        tokio::spawn(Arc::clone(world).mistyped_run(at));
    }
    // The daily schedule: sometimes delivered twice (same execution id), and
    // sometimes a second run at the same time (another execution).
    for day in 0..days {
        let t = ten_am(origin, day);
        tokio::time::sleep(until(t, world.now())).await;
        let run_id = format!("day-{day}");
        tokio::spawn(Arc::clone(world).run(t, run_id.clone(), Duration::ZERO));
        if world.strikes(0.1) {
            world.count("duplicate deliveries");
            // Mostly within a lease's length of the first delivery.
            let delay = Duration::from_secs(world.rand(|r| r.random_range(1..1200)));
            tokio::spawn(Arc::clone(world).run(t, run_id.clone(), delay));
        }
        if world.strikes(0.05) {
            world.count("concurrent runs");
            let delay = Duration::from_millis(world.rand(|r| r.random_range(0..3000)));
            tokio::spawn(Arc::clone(world).run(t, format!("{run_id}-b"), delay));
        }
        // The operators' afternoon: what waits for a person, by the runbook;
        // and customers behind on payment who come back.
        tokio::spawn(Arc::clone(world).operator_day(t + chrono::Duration::hours(4)));
        if day % 7 == 3 {
            tokio::spawn(Arc::clone(world).customer_service(t + chrono::Duration::hours(6)));
        }
        if day == 20 {
            // Some customers lose their key at the PG in the months that follow.
            let customers: Vec<String> = lock(&world.customers).keys().cloned().collect();
            for cu in customers {
                if world.strikes(0.05) {
                    let at = Duration::from_secs(world.rand(|r| r.random_range(0..90 * 86_400)));
                    tokio::spawn(Arc::clone(world).lose_key(cu, at));
                }
            }
        }
    }
    // Quiet down: no more faults or crashes; what is in flight lands, leases
    // and quiet periods pass; then clean runs settle what was left open, and
    // the operators clear what waits for them.
    world.faults.store(false, Ordering::SeqCst);
    world.setting_broken.store(false, Ordering::SeqCst);
    world.record("QUIESCE".into());
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let end = ten_am(origin, days);
    tokio::time::sleep(until(end, world.now())).await;
    for i in 0..3 {
        Arc::clone(world)
            .run(
                end + chrono::Duration::hours(i),
                format!("final-{i}"),
                Duration::ZERO,
            )
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    // Whatever is still open at the end is open for good (a payment whose
    // lookups keep failing): the last look comes days later, past the
    // engine's escalation threshold.
    let later = end + chrono::Duration::days(5);
    // Hourly runs until one finds nothing due (a last retry's decline
    // waits out its quiet period; a retry may follow another).
    for i in 0..8 {
        let at = later + chrono::Duration::hours(i);
        tokio::time::sleep(until(at, world.now())).await;
        let due = Arc::clone(world)
            .run(at, format!("final-late-{i}"), Duration::ZERO)
            .await;
        if due == Some(0) {
            break;
        }
    }
}

impl World {
    /// A customer signs up: `prepare`'s registration, the payment window at
    /// the PG (V1: usually a 0-won key issuance; sometimes the page asks for
    /// the plan amount, or another amount), then the browser's redirect,
    /// sent zero to three times (refresh, back button, second tab), and
    /// possibly the PG's webhook.
    async fn sign_up(self: Arc<Self>, at: Duration) {
        tokio::time::sleep(at).await;
        let id = self.rand(SubscriptionId::random);
        let customer_uid = self.rand(shared::billing::random_customer_uid);
        let amount = self.rand(|r| [4900, 9900, 9900, 19_900][r.random_range(0..4)]);
        let plan = Plan {
            amount,
            name: "월간 구독".into(),
            // From the id, as the catalogue's half, so the random stream is
            // the one it always was: notices off, 3, 7 or 14 days ahead.
            notice_days: [0, 3, 7, 14][usize::from(id.as_str().as_bytes()[11]) % 4],
            // Taxable, exempt or mixed, from the id too (decision 73).
            tax: super::invariants::sim_tax(&id, amount),
        };
        // V2: PortOne will issue this key in the window; it is what is charged.
        let v2_key = self
            .v2
            .then(|| format!("billing-key-{:032x}", self.rand(|r| r.random::<u128>())));
        let charged_as = v2_key.clone().unwrap_or_else(|| customer_uid.clone());
        self.new_customer(&charged_as);
        let now = self.now();
        let reg = Registration {
            merchant_uid: MerchantUid::issuance(&id),
            subscription_id: id.clone(),
            customer_uid: customer_uid.clone(),
            user_id: format!("user-{id}"),
            plan: plan.clone(),
            plan_ref: super::invariants::catalogue_ref(&id, &plan),
            pg: "chai".into(),
            buyer: Default::default(),
            status: RegistrationStatus::Pending,
            created_at: now,
            expires_at: Some(now + chrono::Duration::days(1)),
            imp_uid: None,
            sweep_at: Some(now + registration::SWEEP_AFTER),
            replaces_key: false,
            interval: sim_interval(&id),
            billing: sim_billing(&id),
            trial: sim_trial(&id),
            consent: None,
            coupon: None,
        };
        // A trial that converts on the sign-up's consent carries it.
        let mut reg = reg;
        if reg
            .trial
            .is_some_and(|t| t.consent == ConversionConsent::Signup)
        {
            reg.consent = Some(Consent {
                channel: "web".into(),
                reference: format!("signup-{id}"),
                at: now,
                recorded_at: now,
            });
        }
        // With a coupon, the registration is written with its redemption;
        // one used up or past its date is refused, and the merchant signs
        // the customer up without it (as `prepare` answers 409 / 422).
        let coupon = sim_signup_coupon(&id).and_then(CouponId::parse);
        let redeemed = match &coupon {
            None => false,
            Some(c) => {
                let (off, duration) =
                    sim_coupon(c).unwrap_or((Off::Percent(1), CouponDuration::Once));
                reg.coupon = Some(CouponTerms {
                    id: c.clone(),
                    off,
                    duration,
                });
                let redemption = Redemption {
                    coupon: c,
                    now,
                    into: Redeemer::Registration(&reg),
                };
                match self.ledger.redeem(&redemption).await {
                    Ok(()) => true,
                    Err(_) => {
                        self.count("sign-up coupons refused (used up or expired)");
                        reg.coupon = None;
                        false
                    }
                }
            }
        };
        if redeemed {
            self.redeemed(coupon.as_ref(), "sign-ups with a coupon");
        } else if self.ledger.put_registration(&reg).await.is_err() {
            self.violation(
                "setup",
                format!("registration {} could not be written", reg.merchant_uid),
            );
            return;
        }
        // The window, a few seconds later.
        tokio::time::sleep(Duration::from_secs(self.rand(|r| r.random_range(5..60)))).await;
        self.count("sign-ups");
        match reg.billing.map(|b| b.first) {
            Some(FirstPeriod::Free) => self.count("sign-ups on a billing day: first period free"),
            Some(FirstPeriod::Prorated) => {
                self.count("sign-ups on a billing day: first period prorated")
            }
            Some(FirstPeriod::Full) => self.count("sign-ups on a billing day: first period full"),
            None => {}
        }
        match v2_key {
            Some(key) => self.v2_window(&reg, key).await,
            None => {
                let amount = self.rand(|r| match r.random_range(0..100) {
                    0..80 => 0,
                    // A trial's window takes nothing (one that does is for a person).
                    80..95 if reg.trial.is_some() => 0,
                    80..95 => plan.amount,
                    _ => 100,
                });
                self.v1_window(&reg, &customer_uid, amount).await;
            }
        }
        // Some merchants change the subscription later (while runs charge it).
        // Most of them just as a run charges the subscription, to race its claims.
        if self.rand(|r| r.random_bool(0.4)) {
            let at = Duration::from_secs(self.rand(|r| r.random_range(60..90 * 86_400)));
            let racing = self.rand(|r| r.random_bool(0.7));
            tokio::spawn(Arc::clone(&self).manage(id.clone(), at, racing));
        }
        // Some merchants change the price a while later (issue 23 §3): up
        // or down, some asking for a period too soon.
        if self.rand(|r| r.random_bool(0.3)) {
            let at = Duration::from_secs(self.rand(|r| r.random_range(10..60) * 86_400 + 7200));
            tokio::spawn(Arc::clone(&self).price_change(id.clone(), at));
        }
        // Some merchants apply a coupon later (a win-back), some twice at
        // once; the customer answers its end's consent request, or not.
        if id.as_str().as_bytes()[3].is_multiple_of(5) {
            let at = Duration::from_secs(self.rand(|r| r.random_range(2..70) * 86_400 + 5_400));
            let twice = self.rand(|r| r.random_bool(0.3));
            tokio::spawn(Arc::clone(&self).apply_coupon(id.clone(), at, twice));
        }
        // Most customers of an explicit trial consent, some too early, some
        // after it ended; the others let it lapse.
        if reg
            .trial
            .is_some_and(|t| t.consent == ConversionConsent::Explicit)
            && self.rand(|r| r.random_bool(0.7))
        {
            let at = Duration::from_secs(self.rand(|r| r.random_range(3_600..50 * 86_400)));
            tokio::spawn(Arc::clone(&self).consent(id.clone(), at));
        }
        // A quarter of the customers pause for a while (decision 76), by
        // their id so the draws before are the ones they always were.
        if id.as_str().as_bytes()[8].is_multiple_of(4) {
            let at = Duration::from_secs(self.rand(|r| r.random_range(2..70) * 86_400 + 3_600));
            let racing = self.rand(|r| r.random_bool(0.5));
            tokio::spawn(Arc::clone(&self).pause(id, at, racing));
        }
    }

    /// A merchant applies one of the world's coupons to a running
    /// subscription through the management API at `at`; `twice`: two
    /// requests at once (a retry racing the first). Each redemption the API
    /// says it counted is counted here too; the ledger's count must match.
    async fn apply_coupon(self: Arc<Self>, id: SubscriptionId, at: Duration, twice: bool) {
        tokio::time::sleep(at).await;
        let coupon = self.rand(|r| SIM_COUPONS[r.random_range(0..SIM_COUPONS.len())].0);
        let on_no_consent = self
            .rand(|r| ["cancel_at_period_end", "keep_old_price"][r.random_range(0..2)].to_owned());
        let request = |world: Arc<Self>| {
            let id = id.clone();
            let on_no_consent = on_no_consent.clone();
            async move {
                let input = management::ApplyCouponInput {
                    coupon_id: coupon.into(),
                    on_no_consent: Some(on_no_consent),
                };
                let (inv, engine) = world.engine("coupon");
                let done = world
                    .call(
                        inv,
                        &format!("{id} coupon {coupon}"),
                        management::apply_coupon(
                            &engine,
                            id.as_str(),
                            input,
                            &Actor::named("merchant"),
                        ),
                    )
                    .await;
                match done {
                    Some(Ok((_, true))) => {
                        world.redeemed(CouponId::parse(coupon).as_ref(), "coupons applied");
                        true
                    }
                    Some(Ok((_, false))) => {
                        world.count("coupons asked again (counted once)");
                        false
                    }
                    Some(Err(ManageError::Conflict(_))) => {
                        world.count("coupons refused (409)");
                        false
                    }
                    Some(Err(ManageError::Unprocessable(_))) => {
                        world.count("coupons past their date (422)");
                        false
                    }
                    Some(Err(_)) => {
                        world.count("management calls refused");
                        false
                    }
                    None => false,
                }
            }
        };
        let applied = if twice {
            let (a, b) = tokio::join!(request(Arc::clone(&self)), request(Arc::clone(&self)));
            a || b
        } else {
            request(Arc::clone(&self)).await
        };
        let ends = self
            .ledger
            .subscription_now(&id)
            .and_then(|s| s.price_change)
            .is_some_and(|c| c.coupon.is_some() && c.is_open());
        if !applied || !ends {
            return;
        }
        // The customer's answer to its end, at any time in the months after.
        let answer = self.rand(|r| r.random_range(0..10));
        let later = Duration::from_secs(self.rand(|r| r.random_range(3_600..100 * 86_400)));
        tokio::time::sleep(later).await;
        let (inv, engine) = self.engine("coupon-answer");
        self.answer_price(
            inv,
            &engine,
            id.as_str(),
            answer,
            [
                "coupon end consents recorded",
                "coupon end declines recorded",
            ],
        )
        .await;
    }

    /// A redemption the sim saw counted (by the ledger's write).
    fn redeemed(&self, coupon: Option<&CouponId>, label: &'static str) {
        if let Some(c) = coupon {
            *lock(&self.observed).redeemed.entry(c.clone()).or_default() += 1;
            self.count(label);
        }
    }

    /// A customer pauses through the management API at `at` (some just as
    /// a run charges them), until a date (sometimes a period's start) or
    /// until they resume by hand weeks later; some pause again.
    async fn pause(self: Arc<Self>, id: SubscriptionId, at: Duration, racing: bool) {
        tokio::time::sleep(at).await;
        if racing && let Some(sub) = self.ledger.subscription_now(&id) {
            let first = ten_am(self.origin, 0);
            let days = ((sub.next_charge_at - first).num_seconds().max(0) + 86_399) / 86_400;
            let jitter = chrono::Duration::milliseconds(self.rand(|r| r.random_range(0..150)));
            tokio::time::sleep(until(ten_am(self.origin, days) + jitter, self.now())).await;
        }
        let Some(sub) = self.ledger.subscription_now(&id) else {
            return;
        };
        let now = self.now();
        let resumes_at = match self.rand(|r| r.random_range(0..4)) {
            // By hand, later.
            0 => None,
            // On a period's start two periods on.
            1 => Some(sub.anchor.period_start(sub.period_index + 2)),
            // Any time in the next ten weeks.
            _ => Some(
                now + chrono::Duration::seconds(self.rand(|r| r.random_range(3_600..70 * 86_400))),
            ),
        };
        let (inv, engine) = self.engine("manage");
        let actor = Actor::named("customer");
        let input = management::PauseInput {
            resumes_at: resumes_at.map(|t| t.to_rfc3339()),
        };
        let done = self
            .call(
                inv,
                &format!("{id} pause until {resumes_at:?}"),
                management::pause(&engine, id.as_str(), input, &actor),
            )
            .await;
        match done {
            Some(Ok(_)) => self.count("paused"),
            Some(Err(_)) => self.count("pauses refused"),
            None => {}
        }
        if resumes_at.is_none() && matches!(done, Some(Ok(_))) {
            let later = Duration::from_secs(self.rand(|r| r.random_range(5..60) * 86_400 + 7_200));
            tokio::time::sleep(later).await;
            let (inv, engine) = self.engine("manage");
            let done = self
                .call(
                    inv,
                    &format!("{id} resume from pause"),
                    management::resume(&engine, id.as_str(), &actor),
                )
                .await;
            self.count_outcome(
                done.as_ref().map(|r| r.is_ok()),
                "resumed from a pause by hand",
            );
        }
    }

    /// The customer's consent to convert a trial, through the management
    /// API, at `at` (perhaps before its window, perhaps once it ended).
    async fn consent(self: Arc<Self>, id: SubscriptionId, at: Duration) {
        tokio::time::sleep(at).await;
        let (inv, engine) = self.engine("consent");
        let input = management::ConsentInput {
            evidence: shared::registration::EvidenceInput {
                channel: "app".into(),
                reference: format!("consent-{id}"),
                at: None,
            },
        };
        let done = self
            .call(
                inv,
                &format!("{id} consent"),
                management::consent(&engine, id.as_str(), input, &Actor::named("customer")),
            )
            .await;
        match done {
            Some(Ok(_)) => self.count("trial consents recorded"),
            Some(Err(ManageError::Conflict(_))) => {
                self.count("trial consents refused (early or over)")
            }
            Some(Err(_)) => self.count("management calls refused"),
            None => {}
        }
    }

    /// A merchant's price change at `at`, through the management API, to a
    /// catalogue version of the subscription's plan name; then the
    /// customer's answer to an increase: a consent (perhaps too early or
    /// too late), a decline, or nothing.
    async fn price_change(self: Arc<Self>, id: SubscriptionId, at: Duration) {
        tokio::time::sleep(at).await;
        let Some(sub) = self.ledger.subscription_now(&id) else {
            return;
        };
        let amount = self.rand(|r| [4900, 14_900, 19_900][r.random_range(0..3)]);
        let plan = Plan {
            amount,
            name: "월간 구독".into(),
            notice_days: sub.plan.notice_days,
            // The same product at another price: its tax setting stays.
            tax: sub.plan.tax,
        };
        // The catalogue's naming (`catalogue_ref`): the plan of that amount, notice and tax.
        let Some(plan_id) = super::invariants::catalogue_id(&plan) else {
            return;
        };
        let record = shared::billing::plans::PlanRecord {
            id: plan_id.clone(),
            version: 1,
            name: plan.name.clone(),
            amount,
            interval: shared::billing::plans::Interval::Month,
            notice_days: plan.notice_days,
            trial: None,
            billing: None,
            created_at: self.now(),
            tax: plan.tax,
        };
        // The catalogue's plan of that amount, once.
        let _ = self.ledger.put_plan(&record).await;
        let soon = self.rand(|r| r.random_bool(0.15));
        let on_no_consent = self
            .rand(|r| ["cancel_at_period_end", "keep_old_price"][r.random_range(0..2)].to_owned());
        let input = management::PriceChangeInput {
            plan_id: plan_id.to_string(),
            // Too soon for an increase: the period charged next.
            effective_period: soon.then(|| sub.current_period().to_string()),
            on_no_consent: Some(on_no_consent),
        };
        let (inv, engine) = self.engine("price-change");
        let done = self
            .call(
                inv,
                &format!("{id} price-change {amount}"),
                management::request_price_change(
                    &engine,
                    id.as_str(),
                    input,
                    &Actor::named("merchant"),
                ),
            )
            .await;
        match done {
            Some(Ok(_)) => self.count("price changes asked for"),
            Some(Err(ManageError::Unprocessable(_))) => self.count("price changes too soon (422)"),
            Some(Err(_)) => {
                self.count("management calls refused");
                return;
            }
            None => return,
        }
        if amount <= sub.plan.amount {
            return;
        }
        // The customer's answer: most consent, at any time in the two months
        // after (before the window, inside it, or too late); some decline.
        let answer = self.rand(|r| r.random_range(0..10));
        let later = Duration::from_secs(self.rand(|r| r.random_range(3_600..60 * 86_400)));
        tokio::time::sleep(later).await;
        let (inv, engine) = self.engine("price-answer");
        self.answer_price(
            inv,
            &engine,
            id.as_str(),
            answer,
            ["price consents recorded", "price declines recorded"],
        )
        .await;
    }

    /// The customer's answer to a price increase through the management
    /// API: `answer` 0–5 a consent, 6–7 a decline, else none; counted under
    /// `labels` (consents, declines).
    async fn answer_price(
        self: &Arc<Self>,
        inv: u32,
        engine: &SimEngine,
        id: &str,
        answer: u32,
        labels: [&'static str; 2],
    ) {
        let customer = Actor::named("customer");
        let done = match answer {
            0..6 => {
                let input = management::PriceConsentInput {
                    evidence: shared::registration::EvidenceInput {
                        channel: "app".into(),
                        reference: format!("price-{id}"),
                        at: None,
                    },
                };
                self.call(
                    inv,
                    &format!("{id} price consent"),
                    management::consent_price_change(engine, id, input, &customer),
                )
                .await
                .map(|r| r.map(|_| labels[0]))
            }
            6..8 => self
                .call(
                    inv,
                    &format!("{id} price decline"),
                    management::decline_price_change(engine, id, &customer),
                )
                .await
                .map(|r| r.map(|_| labels[1])),
            _ => return,
        };
        match done {
            Some(Ok(what)) => self.count(what),
            Some(Err(ManageError::Conflict(_))) => {
                self.count("price answers refused (early, late or over)")
            }
            Some(Err(_)) => self.count("management calls refused"),
            None => {}
        }
    }

    /// A merchant's plan-wide price change at `at` (decision 71), up or
    /// down, some for a month too soon; then, three times a fortnight
    /// apart, the merchant chases the customers the runs asked (the
    /// pending-consent list), who consent (perhaps before their window
    /// opened), decline, or stay silent.
    async fn plan_price_change(self: Arc<Self>, at: Duration) {
        use shared::billing::plans::{Interval, PlanRecord};
        use shared::billing::rollouts;
        tokio::time::sleep(at).await;
        // The plan of a subscriber who signed up from the catalogue.
        let members: Vec<Plan> = self
            .ledger
            .all_subscriptions()
            .iter()
            .filter(|s| s.plan_ref.as_ref().is_some_and(|r| r.version == 1))
            .map(|s| s.plan.clone())
            .collect();
        if members.is_empty() {
            return;
        }
        let member = members[self.rand(|r| r.random_range(0..members.len()))].clone();
        let Some(plan_id) = super::invariants::catalogue_id(&member) else {
            return;
        };
        // The catalogue's version 1, as the sign-ups name it, once.
        let _ = self
            .ledger
            .put_plan(&PlanRecord {
                id: plan_id.clone(),
                version: 1,
                name: "월간 구독".into(),
                amount: member.amount,
                interval: Interval::Month,
                notice_days: member.notice_days,
                trial: None,
                billing: None,
                created_at: self.now(),
                tax: member.tax,
            })
            .await;
        let to = self.rand(|r| [4900, 9900, 14_900, 19_900][r.random_range(0..4)]);
        let earliest = rollouts::earliest(self.now(), self.settings.charging.consent_window_days);
        let effective = if self.rand(|r| r.random_bool(0.15)) {
            // A month too soon.
            let start = rollouts::month_start(&earliest).unwrap_or_else(|| self.now());
            Anchor::from_instant(start - chrono::Duration::days(1)).period_id(0)
        } else {
            earliest
        };
        let input = management::PlanPriceChangeInput {
            amount: to,
            effective_period: effective.to_string(),
            on_no_consent: Some(
                self.rand(|r| ["cancel_at_period_end", "keep_old_price"][r.random_range(0..2)])
                    .to_owned(),
            ),
        };
        let (inv, engine) = self.engine("plan-price-change");
        let done = self
            .call(
                inv,
                &format!("{plan_id} plan-wide price-change {to}"),
                management::request_plan_price_change(&engine, plan_id.as_str(), input),
            )
            .await;
        let version = match done {
            Some(Ok(view)) => {
                self.count("plan-wide price changes asked for");
                view.version
            }
            Some(Err(ManageError::Unprocessable(_))) => {
                self.count("plan-wide price changes too soon (422)");
                return;
            }
            Some(Err(_)) => {
                self.count("management calls refused");
                return;
            }
            None => return,
        };
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(14 * 86_400)).await;
            self.chase(&plan_id, version).await;
        }
    }

    /// The merchant's chase of the consents its plan-wide change waits for.
    async fn chase(self: &Arc<Self>, plan_id: &shared::billing::plans::PlanId, version: u32) {
        let (inv, engine) = self.engine("chase");
        let mut cursor: Option<String> = None;
        let mut waiting = Vec::new();
        loop {
            let page = self
                .call(
                    inv,
                    "pending consent list",
                    management::pending_consent(&engine, cursor.as_deref()),
                )
                .await;
            let Some(Ok(page)) = page else { return };
            waiting.extend(page.subscriptions.into_iter().filter(|s| {
                s.price_change.as_ref().is_some_and(|c| {
                    c.plan_id.as_deref() == Some(plan_id.as_str())
                        && c.plan_version == Some(version)
                        && c.consent_request_sent
                })
            }));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        for s in waiting {
            let answer = self.rand(|r| r.random_range(0..10));
            self.answer_price(
                inv,
                &engine,
                &s.id,
                answer,
                [
                    "plan-wide price consents recorded",
                    "plan-wide price declines recorded",
                ],
            )
            .await;
        }
    }

    fn new_customer(&self, key: &str) {
        let decline_rate = self.rand(|r| [0.0, 0.0, 0.0, 0.25, 1.0][r.random_range(0..5)]);
        // A key this store may not charge is a fault of the world, not of
        // the engine: none in a clean world.
        let forbidden = self.v2 && self.strikes(0.01);
        // One card in twelve dies within a few months: lost, expired, closed.
        let dies = self.rand(|r| {
            r.random_bool(1.0 / 12.0).then(|| {
                (
                    chrono::Duration::days(r.random_range(0..120)),
                    crate::model::HARD_DECLINES
                        [r.random_range(0..crate::model::HARD_DECLINES.len())],
                )
            })
        });
        let dies = dies.map(|(after, message)| (self.now() + after, message));
        lock(&self.customers).insert(
            key.to_owned(),
            Customer {
                decline_rate,
                dies,
                forbidden,
            },
        );
    }

    /// i'mport's window for `reg` (a sign-up or a new card): the key is
    /// issued under our `customer_uid`, with an issuance payment of `amount`.
    async fn v1_window(self: &Arc<Self>, reg: &Registration, customer_uid: &str, amount: i64) {
        let imp_uid = lock(&self.model).issue(customer_uid, &reg.merchant_uid, amount, self.now());
        self.record(format!(
            "I issued {} {imp_uid} amount {amount}",
            reg.merchant_uid
        ));
        if amount > 0 {
            self.count("issuances that took money");
            self.check_paid(&reg.merchant_uid);
        }
        if self.rand(|r| r.random_bool(0.5)) {
            self.schedule_webhooks(&reg.merchant_uid, &imp_uid, "paid");
        }
        let params = CallbackParams {
            billing_key: None,
            imp_uid: Some(imp_uid),
            merchant_uid: reg.merchant_uid.clone(),
            claimed_success: Some(true),
            error_code: None,
        };
        self.redirects(params);
    }

    /// The V2 window: PortOne issues the key (no payment), sends
    /// `BillingKey.Issued` (sometimes), and the browser comes back zero to
    /// three times with `billingKey` in the query.
    async fn v2_window(self: &Arc<Self>, reg: &Registration, key: String) {
        lock(&self.model).issue_v2(&key, &reg.merchant_uid, &reg.customer_uid, self.now());
        self.record(format!("I issued {} (V2 key)", reg.merchant_uid));
        if self.rand(|r| r.random_bool(0.5)) {
            let notice = Notice::KeyIssued {
                billing_key: Secret::new(key.clone()),
            };
            self.schedule_notice(notice);
        }
        let params = CallbackParams {
            billing_key: Some(Secret::new(key)),
            imp_uid: None,
            merchant_uid: reg.merchant_uid.clone(),
            claimed_success: None,
            error_code: None,
        };
        self.redirects(params);
    }

    /// The browser comes back zero to three times (refresh, back button,
    /// second tab).
    fn redirects(self: &Arc<Self>, params: CallbackParams) {
        let redirects = self.rand(|r| match r.random_range(0..10) {
            0 => 0,
            1..7 => 1,
            7..9 => 2,
            _ => 3,
        });
        for _ in 0..redirects {
            let delay = Duration::from_millis(self.rand(|r| r.random_range(0..3000)));
            tokio::spawn(Arc::clone(self).callback(params.clone(), delay));
        }
        if redirects == 0 {
            self.count("browsers that never came back");
        }
    }

    async fn callback(self: Arc<Self>, params: CallbackParams, delay: Duration) {
        tokio::time::sleep(delay).await;
        let (inv, engine) = self.engine("callback");
        self.record(format!("{inv} CALLBACK {}", params.merchant_uid));
        let budget = Budget::until(tokio::time::Instant::now() + CALLBACK_TIMEOUT);
        let started = tokio::time::Instant::now();
        let out = tokio::time::timeout(
            CALLBACK_TIMEOUT + Duration::from_secs(1),
            registration::complete(&engine, &params, budget),
        )
        .await;
        self.count("callbacks");
        if let Ok(registration::CallbackOutcome::Failed(registration::FailureReason::NeedsReview)) =
            &out
        {
            // billing-callback counts it (`NeedsReview` metric).
            self.review_counted(inv);
        }
        match &out {
            Ok(_) if started.elapsed() > CALLBACK_TIMEOUT => {
                self.violation(
                    "unanswered calls",
                    format!("{inv} callback answered after the function's timeout"),
                );
            }
            Err(_) if !self.crashed(inv) => {
                self.violation("unanswered calls", format!("{inv} callback never answered"));
            }
            _ => {}
        }
        self.record(format!("{inv} CALLBACK done {out:?}"));
    }

    /// The PG's webhook for a payment of `merchant_uid` (`status`: paid, or
    /// cancelled after a refund): one delivery, sometimes two or three, each
    /// after its own delay (so they arrive reordered), re-sent up to five
    /// times a minute apart while the receiver fails.
    pub(super) fn schedule_webhooks(
        self: &Arc<Self>,
        merchant_uid: &str,
        imp_uid: &str,
        status: &str,
    ) {
        if !self.rand(|r| r.random_bool(0.8)) {
            return;
        }
        let copies = if self.strikes(0.2) {
            self.rand(|r| r.random_range(2..=3))
        } else {
            1
        };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rand(|r| r.random_range(0..600_000)));
            // V2's webhook types say paid, failed or cancelled; V1 passes
            // its status through.
            let status = match status {
                "paid" | "failed" => status,
                _ if self.v2 => "cancelled",
                _ => status,
            };
            let notice = Notice::Payment(PaymentNotice {
                payment_ref: imp_uid.to_owned(),
                payment_id: merchant_uid.to_owned(),
                status: status.to_owned(),
                cancellation_id: None,
            });
            tokio::spawn(Arc::clone(self).deliver_webhook(notice, delay));
        }
    }

    /// A notice, delivered like a payment's webhooks (maybe late, maybe twice).
    fn schedule_notice(self: &Arc<Self>, notice: Notice) {
        let copies = if self.strikes(0.2) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rand(|r| r.random_range(0..600_000)));
            tokio::spawn(Arc::clone(self).deliver_webhook(notice.clone(), delay));
        }
    }

    async fn deliver_webhook(self: Arc<Self>, notice: Notice, delay: Duration) {
        tokio::time::sleep(delay).await;
        for try_no in 0..6 {
            if try_no > 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            self.count("webhook deliveries");
            let (inv, engine) = self.engine("webhook");
            let api = if self.v2 { "V2 " } else { "" };
            self.record(format!("{inv} WEBHOOK {api}{}", notice_label(&notice)));
            let handled =
                tokio::time::timeout(WEBHOOK_TIMEOUT, notification::handle(&engine, &notice)).await;
            if let Ok(Ok(notification::Handled::NeedsReview(_))) = &handled {
                // payment-webhook counts it (`NeedsReview` metric).
                self.review_counted(inv);
            }
            self.record(format!("{inv} WEBHOOK done {handled:?}"));
            if matches!(handled, Ok(Ok(_))) {
                return;
            }
        }
    }

    /// One scheduled run (a Lambda invocation killed at its timeout, unless
    /// `zombie`: a process that outlives its timeout, to put a run in flight
    /// past its lease).
    /// Returns how much was due, if the run finished.
    async fn run(
        self: Arc<Self>,
        billing_time: DateTime<Utc>,
        run_id: String,
        delay: Duration,
    ) -> Option<u64> {
        tokio::time::sleep(delay).await;
        let zombie = self.strikes(0.05);
        let (inv, engine) = self.engine("run");
        self.count("runs");
        self.record(format!(
            "{inv} RUN {run_id} at {billing_time}{}",
            if zombie { " (zombie)" } else { "" }
        ));
        let options = RunOptions {
            run: BillingRun {
                billing_time,
                run_id,
            },
            budget: Budget::until(tokio::time::Instant::now() + RUN_TIMEOUT),
        };
        let report = if zombie {
            Some(billing_run::run(&engine, options).await)
        } else {
            tokio::time::timeout(RUN_TIMEOUT, billing_run::run(&engine, options))
                .await
                .ok()
        };
        if let Some(r) = &report {
            let s = &r.summary;
            // scheduled-charge emits the summary as metrics.
            for _ in 0..s.needs_review {
                self.review_counted(inv);
            }
            if s.waiting_for_review.is_some() {
                lock(&self.observed).last_gauge = s.waiting_for_review;
            }
            for _ in 0..r.price_changes.planned {
                self.count("plan-wide price changes planned by a run");
            }
            self.record(format!(
                "{inv} RUN done due {} charged {} declined {} rejected {} ambiguous {} reconciled {} deferred {} review {} skipped {} signups {} error {:?}",
                s.due, s.charged, s.declined, s.rejected, s.ambiguous, s.reconciled, s.deferred, s.needs_review, s.skipped, s.signups_completed, r.error
            ));
        }
        report.map(|r| r.summary.due)
    }

    /// Somebody starts a run by hand with a time a month or a year ahead
    /// (a slip of the keyboard, or a forged message): nothing may be billed
    /// before it is due.
    async fn mistyped_run(self: Arc<Self>, at: Duration) {
        tokio::time::sleep(at).await;
        self.count("runs with a mistyped time");
        let ahead = self.rand(|r| [31, 365][r.random_range(0..2)]);
        let t = self.now() + chrono::Duration::days(ahead);
        self.run(t, "manual-mistyped".into(), Duration::ZERO).await;
    }

    /// The merchant's PG setting breaks for `days`: every charge is refused
    /// alike (V1 code 1 `비인증결제모듈 사용정보를 찾을 수 없습니다`, V2 404
    /// `CHANNEL_NOT_FOUND`).
    async fn broken_setting(self: Arc<Self>, at: Duration, days: u64) {
        tokio::time::sleep(at).await;
        if !self.faults_on() {
            return;
        }
        self.count("days with a broken PG setting");
        self.record("I PG setting broken".into());
        self.setting_broken.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(days * 86_400)).await;
        self.setting_broken.store(false, Ordering::SeqCst);
        self.record("I PG setting fixed".into());
    }

    /// Some customers delete their billing key at the PG (or it expires).
    async fn lose_key(self: Arc<Self>, customer_uid: String, at: Duration) {
        tokio::time::sleep(at).await;
        if lock(&self.model).delete_key(&customer_uid) {
            self.count("keys deleted");
            self.record(format!("I key {customer_uid} deleted"));
        }
    }

    /// Runs one management call within the API's timeout; a crash is the
    /// caller's timeout, an answer that never comes otherwise is a bug.
    async fn call<T: std::fmt::Debug>(
        &self,
        inv: u32,
        what: &str,
        call: impl Future<Output = Result<T, ManageError>>,
    ) -> Option<Result<T, ManageError>> {
        self.record(format!("{inv} MANAGE {what}"));
        let out = tokio::time::timeout(MANAGE_TIMEOUT, call).await;
        self.record(format!("{inv} MANAGE done {out:?}"));
        match out {
            Ok(r) => Some(r),
            Err(_) if !self.crashed(inv) => {
                self.violation(
                    "unanswered calls",
                    format!("{inv} management call never answered"),
                );
                None
            }
            Err(_) => None,
        }
    }

    /// One merchant action at `at`: cancel now or at period end, a plan
    /// change, a resume, a new card or a refund, racing whatever runs are
    /// under way.
    async fn manage(self: Arc<Self>, id: SubscriptionId, at: Duration, racing: bool) {
        tokio::time::sleep(at).await;
        if racing && let Some(sub) = self.ledger.subscription_now(&id) {
            // The first run at or after its next charge, a moment after it starts.
            let first = ten_am(self.origin, 0);
            let days = ((sub.next_charge_at - first).num_seconds().max(0) + 86_399) / 86_400;
            let jitter = chrono::Duration::milliseconds(self.rand(|r| r.random_range(0..150)));
            tokio::time::sleep(until(ten_am(self.origin, days) + jitter, self.now())).await;
        }
        let action = self.rand(|r| r.random_range(0..12));
        let (inv, engine) = self.engine("manage");
        let actor = Actor::named("merchant");
        let cancel = |at: &str| CancelInput {
            at: at.into(),
            reason: "simulated".into(),
            refund: None,
            quote_id: None,
            unused: None,
        };
        let name = id.to_string();
        match action {
            0..2 => {
                self.cancel(inv, &engine, &id, "now").await;
            }
            2 => self.cancel_quoted(inv, &engine, &id).await,
            3..6 => {
                let done = self
                    .call(
                        inv,
                        &format!("{id} cancel period_end"),
                        management::cancel(&engine, &name, cancel("period_end"), &actor),
                    )
                    .await;
                self.count_outcome(done.as_ref().map(|r| r.is_ok()), "cancelled at period end");
            }
            6..8 => {
                let amount = self.rand(|r| [4900, 14_900][r.random_range(0..2)]);
                let plan = management::PlanInput {
                    amount,
                    name: "월간 구독".into(),
                    consent: None,
                };
                let done = self
                    .call(
                        inv,
                        &format!("{id} plan {amount}"),
                        management::change_plan(&engine, &name, plan, &actor),
                    )
                    .await;
                self.count_outcome(done.as_ref().map(|r| r.is_ok()), "plan changed");
            }
            8 => {
                let done = self
                    .call(
                        inv,
                        &format!("{id} resume"),
                        management::resume(&engine, &name, &actor),
                    )
                    .await;
                self.count_outcome(done.as_ref().map(|r| r.is_ok()), "resumed");
            }
            9 => self.new_card(inv, &engine, &id).await,
            _ => self.refund_some(inv, &engine, &id).await,
        }
    }

    fn count_outcome(&self, done: Option<bool>, what: &'static str) {
        match done {
            Some(true) => self.count(what),
            Some(false) => self.count("management calls refused"),
            None => {}
        }
    }

    async fn cancel(&self, inv: u32, engine: &SimEngine, id: &SubscriptionId, at: &str) {
        let input = CancelInput {
            at: at.into(),
            reason: "simulated".into(),
            refund: None,
            quote_id: None,
            unused: None,
        };
        let actor = Actor::named("merchant");
        let done = self
            .call(
                inv,
                &format!("{id} cancel {at}"),
                management::cancel(engine, id.as_str(), input, &actor),
            )
            .await;
        self.count_outcome(done.as_ref().map(|r| r.is_ok()), "cancelled now");
    }

    /// A mid-term cancel: the quote, read by the customer for a while (runs
    /// and webhooks go on), then the cancel with its refund, retried with
    /// the same key after a crash or a 5xx.
    async fn cancel_quoted(self: &Arc<Self>, inv: u32, engine: &SimEngine, id: &SubscriptionId) {
        let quote = self
            .call(
                inv,
                &format!("{id} cancellation quote"),
                management::cancellation_quote(engine, id.as_str(), false),
            )
            .await;
        let Some(Ok(quote)) = quote else {
            self.count_outcome(quote.map(|r| r.is_ok()), "quoted cancels");
            return;
        };
        tokio::time::sleep(Duration::from_secs(self.rand(|r| r.random_range(1..900)))).await;
        let key = format!("midterm-{id}-{}", self.rand(|r| r.random::<u32>()));
        lock(&self.observed)
            .quoted
            .insert(format!("cancel-{key}"), quote.refund_amount);
        for try_no in 0..4 {
            if try_no > 0 {
                tokio::time::sleep(Duration::from_secs([0, 60, 600, 3600][try_no])).await;
            }
            let (inv, engine) = self.engine("manage");
            lock(&self.observed)
                .refund_keys
                .insert(inv, format!("cancel-{key}"));
            let input = CancelInput {
                at: "now".into(),
                reason: "simulated mid-term".into(),
                refund: Some("quote".into()),
                quote_id: Some(quote.quote_id.clone()),
                unused: Some(false),
            };
            let actor = Actor::named("customer");
            let done = self
                .call(
                    inv,
                    &format!("{id} cancel quoted {}", quote.refund_amount),
                    management::cancel_quoted(&engine, id.as_str(), input, &key, &actor),
                )
                .await;
            match done {
                Some(Ok(c)) => {
                    let state = c.refund.map(|r| r.state).unwrap_or("none");
                    self.count(match state {
                        "done" => "quoted cancels refunded",
                        "unclear" => "quoted cancels with a lost refund",
                        "refused" => "quoted cancels with a refused refund",
                        _ => "quoted cancels with nothing to refund",
                    });
                    return;
                }
                Some(Err(ManageError::StaleQuote { .. })) => {
                    self.count("stale quotes");
                    return;
                }
                Some(Err(e)) if e.http_status() < 500 => {
                    self.count("management calls refused");
                    return;
                }
                _ => self.count("quoted cancels retried with the same key"),
            }
        }
    }

    /// A new card: the payment-method window (a 0-won issuance; now and then
    /// the page takes money anyway), then the browser's redirect.
    async fn new_card(self: &Arc<Self>, inv: u32, engine: &SimEngine, id: &SubscriptionId) {
        let done = self
            .call(
                inv,
                &format!("{id} payment-method"),
                management::payment_method(engine, id.as_str()),
            )
            .await;
        let Some(Ok(prepared)) = done else {
            self.count_outcome(done.map(|r| r.is_ok()), "new cards");
            return;
        };
        self.count("new cards");
        let Some(reg) = self
            .ledger
            .all_registrations()
            .into_iter()
            .find(|r| r.merchant_uid == prepared.merchant_uid())
        else {
            return;
        };
        tokio::time::sleep(Duration::from_secs(self.rand(|r| r.random_range(10..120)))).await;
        if self.v2 {
            let key = format!("billing-key-{:032x}", self.rand(|r| r.random::<u128>()));
            self.new_customer(&key);
            self.v2_window(&reg, key).await;
        } else {
            self.new_customer(&reg.customer_uid);
            let amount = if self.rand(|r| r.random_bool(0.1)) {
                1000
            } else {
                0
            };
            self.v1_window(&reg, &reg.customer_uid, amount).await;
        }
    }

    /// A refund of one of the subscription's paid charges, asked with an
    /// `Idempotency-Key` and retried with the same key after a crash or a
    /// 5xx (what a merchant's backend does).
    async fn refund_some(self: &Arc<Self>, _inv: u32, _engine: &SimEngine, id: &SubscriptionId) {
        let paid: Vec<_> = self
            .ledger
            .all_attempts()
            .into_iter()
            .filter(|a| {
                &a.subscription_id == id && a.state == AttemptState::Paid && a.refunded < a.amount
            })
            .collect();
        let Some(a) = paid.last() else { return };
        let partial = self.rand(|r| r.random_bool(0.5));
        let input = RefundInput {
            amount: partial.then_some((a.amount - a.refunded).min(1000)),
            reason: "goodwill".into(),
        };
        let key = format!(
            "refund-{}-{}",
            a.merchant_uid,
            self.rand(|r| r.random::<u32>())
        );
        self.refund_with_retries(&a.merchant_uid, input, &key).await;
    }

    /// One refund request and its retries with the same key.
    async fn refund_with_retries(
        self: &Arc<Self>,
        merchant_uid: &str,
        input: RefundInput,
        key: &str,
    ) -> bool {
        for try_no in 0..4 {
            if try_no > 0 {
                let wait = [0, 60, 600, 3600][try_no];
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            let (inv, engine) = self.engine("manage");
            lock(&self.observed).refund_keys.insert(inv, key.to_owned());
            let done = self
                .call(
                    inv,
                    &format!("refund {merchant_uid} key {key}"),
                    http_refund(&engine, key, merchant_uid, &input),
                )
                .await;
            match done {
                Some(Ok(_)) => {
                    self.count("refunds");
                    return true;
                }
                // "Nothing is left to refund": refunded already (the
                // runbook's next step goes on).
                Some(Err(ManageError::Conflict(m)))
                    if m.contains("nothing is left to refund")
                        || m.contains("no payment to refund") =>
                {
                    self.count("refunds found done already");
                    return true;
                }
                Some(Err(e))
                    if e.http_status() < 500
                        && !matches!(e, ManageError::Conflict(ref m) if m.contains("still being handled")) =>
                {
                    self.count("refunds refused");
                    return false;
                }
                _ => self.count("refunds retried with the same key"),
            }
        }
        false
    }

    /// Customer service, once a week: a few customers behind on payment
    /// (suspended, or without a working key) come back, weeks or months
    /// later: a resume, or a new card.
    async fn customer_service(self: Arc<Self>, at: DateTime<Utc>) {
        tokio::time::sleep(until(at, self.now())).await;
        let behind: Vec<_> = self
            .ledger
            .all_subscriptions()
            .into_iter()
            .filter(|s| {
                matches!(
                    s.status,
                    SubscriptionStatus::Suspended
                        | SubscriptionStatus::KeyMissing
                        | SubscriptionStatus::ActionRequired
                        | SubscriptionStatus::PastDue
                )
            })
            .collect();
        for s in behind {
            if !self.rand(|r| r.random_bool(0.3)) {
                continue;
            }
            let (inv, engine) = self.engine("manage");
            match (s.status, self.rand(|r| r.random_range(0..3))) {
                (SubscriptionStatus::Suspended, 0) => {
                    let done = self
                        .call(
                            inv,
                            &format!("{} resume", s.id),
                            management::resume(&engine, s.id.as_str(), &Actor::named("support")),
                        )
                        .await;
                    self.count_outcome(
                        done.as_ref().map(|r| r.is_ok()),
                        "resumed after a suspension",
                    );
                }
                (_, 1) => {
                    // Giving up on the customer during dunning.
                    let at = if self.rand(|r| r.random_bool(0.5)) {
                        "now"
                    } else {
                        "period_end"
                    };
                    let input = CancelInput {
                        at: at.into(),
                        reason: "behind on payment".into(),
                        refund: None,
                        quote_id: None,
                        unused: None,
                    };
                    let done = self
                        .call(
                            inv,
                            &format!("{} cancel {at} while {}", s.id, s.status.as_str()),
                            management::cancel(
                                &engine,
                                s.id.as_str(),
                                input,
                                &Actor::named("support"),
                            ),
                        )
                        .await;
                    self.count_outcome(done.as_ref().map(|r| r.is_ok()), "cancelled while behind");
                }
                _ => self.new_card(inv, &engine, &s.id).await,
            }
        }
    }

    /// The operators' daily look at what waits for a person, following
    /// `docs/operations.md` §5.4 to the letter.
    async fn operator_day(self: Arc<Self>, at: DateTime<Utc>) {
        tokio::time::sleep(until(at, self.now())).await;
        let (inv, engine) = self.engine("operator");
        let Some(Ok(list)) = self
            .call(inv, "needs-review", management::needs_review(&engine, None))
            .await
        else {
            return;
        };
        for charge in list.charges {
            let reason = charge.reason.clone().unwrap_or_default();
            let step = runbook(&reason);
            self.count(match step {
                Step::OddAmount => "reviews: odd sign-up amount",
                Step::RefundCancelFailed => "reviews: sign-up without a usable key",
                Step::LatePayment => "reviews: late payment",
                Step::RefundFailed => "reviews: payment that does not match",
                Step::LookThenDecide => "reviews: nothing to settle on",
                Step::NoEntry => "reviews: no runbook entry",
            });
            if step == Step::NoEntry {
                self.violation(
                    "runbook gaps",
                    format!(
                        "{} waits for a person for a reason the runbook does not cover: {reason}",
                        charge.merchant_uid
                    ),
                );
                continue;
            }
            let (inv, engine) = self.engine("operator");
            self.follow(inv, &engine, &charge, step).await;
        }
        // A refund whose outcome is unknown (docs/operations.md): the same
        // refund again, with the same key; the checksum keeps it to one.
        for waiting in list.refunds {
            let (inv, engine) = self.engine("operator");
            // A refused one (a mid-term cancel's): the money is moved by
            // hand, then it is dismissed (docs/operations.md).
            if waiting.state == "refused" {
                let done = self
                    .call(
                        inv,
                        &format!("{} refused refund dismissed", waiting.merchant_uid),
                        management::dismiss_refund(
                            &engine,
                            &waiting.merchant_uid,
                            &waiting.idempotency_key,
                            management::DismissInput {
                                note: "refunded by hand (runbook)".into(),
                            },
                            &Actor::named("ops"),
                        ),
                    )
                    .await;
                self.count(match done {
                    Some(Ok(_)) => "reviews: refused refund dismissed",
                    _ => "reviews: refused refund left",
                });
                continue;
            }
            let input = RefundInput {
                amount: Some(waiting.amount),
                reason: waiting.reason.clone(),
            };
            let done = self
                .call(
                    inv,
                    &format!("{} refund resumed", waiting.merchant_uid),
                    management::refund(
                        &engine,
                        &waiting.merchant_uid,
                        input,
                        &waiting.idempotency_key,
                        &Actor::named("ops"),
                    ),
                )
                .await;
            self.count(match done {
                Some(Ok(_)) => "reviews: refund resumed with its key",
                _ => "reviews: refund still unclear",
            });
        }
    }

    async fn follow(
        self: &Arc<Self>,
        inv: u32,
        engine: &SimEngine,
        charge: &management::ChargeView,
        step: Step,
    ) {
        let uid = charge.merchant_uid.clone();
        let id = SubscriptionId::parse(&charge.subscription_id);
        let resolve = |how: &str, note: &str| ResolveInput {
            resolve_as: how.into(),
            note: note.into(),
        };
        let actor = Actor::named("ops");
        let refund_all = || RefundInput {
            amount: None,
            reason: "runbook".into(),
        };
        let key = format!("ops-{uid}-{}", self.now().timestamp());
        match step {
            Step::OddAmount if self.rand(|r| r.random_bool(0.5)) => {
                self.call(
                    inv,
                    &format!("resolve {uid} paid"),
                    management::resolve(engine, &uid, resolve("paid", "accepted"), &actor),
                )
                .await;
            }
            Step::OddAmount | Step::RefundFailed => {
                if self.refund_with_retries(&uid, refund_all(), &key).await {
                    let (inv, engine) = self.engine("operator");
                    self.call(
                        inv,
                        &format!("resolve {uid} failed"),
                        management::resolve(&engine, &uid, resolve("failed", "refunded"), &actor),
                    )
                    .await;
                }
            }
            Step::RefundCancelFailed => {
                if self.refund_with_retries(&uid, refund_all(), &key).await
                    && let Some(id) = &id
                {
                    let (inv, engine) = self.engine("operator");
                    self.cancel(inv, &engine, id, "now").await;
                    self.call(
                        inv,
                        &format!("resolve {uid} failed"),
                        management::resolve(
                            &engine,
                            &uid,
                            resolve("failed", "refunded, cancelled"),
                            &actor,
                        ),
                    )
                    .await;
                }
            }
            Step::LatePayment => {
                let other_paid = self.ledger.all_attempts().iter().any(|a| {
                    a.subscription_id.as_str() == charge.subscription_id
                        && a.period.as_str() == charge.period
                        && a.attempt != charge.attempt
                        && a.state == AttemptState::Paid
                });
                if other_paid {
                    if self.refund_with_retries(&uid, refund_all(), &key).await {
                        let (inv, engine) = self.engine("operator");
                        self.call(
                            inv,
                            &format!("resolve {uid} failed"),
                            management::resolve(
                                &engine,
                                &uid,
                                resolve("failed", "paid twice; refunded"),
                                &actor,
                            ),
                        )
                        .await;
                    }
                } else {
                    self.call(
                        inv,
                        &format!("resolve {uid} paid"),
                        management::resolve(
                            engine,
                            &uid,
                            resolve("paid", "late payment accepted"),
                            &actor,
                        ),
                    )
                    .await;
                }
            }
            Step::LookThenDecide => {
                // "Look at X at the PG. Not paid: resolve as failed. Paid by now: resolve as paid."
                let paid = lock(&self.model)
                    .find(&uid, self.now())
                    .is_some_and(|p| p.paid_at.is_some());
                let how = if paid { "paid" } else { "failed" };
                self.call(
                    inv,
                    &format!("resolve {uid} {how}"),
                    management::resolve(engine, &uid, resolve(how, "looked at the PG"), &actor),
                )
                .await;
            }
            Step::NoEntry => {}
        }
    }
}

/// A step of the runbook's decision guide for `needs_review`, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// "The sign-up window took an odd amount": refund it and resolve as
    /// failed, or accept it (resolve as paid).
    OddAmount,
    /// "A second sign-up…" / "could not be verified": refund, cancel now,
    /// resolve as failed.
    RefundCancelFailed,
    /// "A late payment": another attempt paid the period → refund and
    /// resolve as failed; otherwise accept it.
    LatePayment,
    /// "A payment that does not match the charge": refund, resolve as failed.
    RefundFailed,
    /// "Nothing to settle on": look at the PG, then resolve.
    LookThenDecide,
    /// The runbook has no entry for this reason.
    NoEntry,
}

fn runbook(reason: &str) -> Step {
    if reason.starts_with("issuance payment") && reason.contains("while the plan is") {
        Step::OddAmount
    } else if reason.contains("the user already has subscription")
        || reason.contains("issued for another")
        || reason.contains("has no billing key")
        || reason.contains("from another PG")
    {
        Step::RefundCancelFailed
    } else if reason.contains("arrived after the attempt was settled as") {
        Step::LatePayment
    } else if reason.contains("does not match the charge")
        || reason.contains("arrived after the subscription was cancelled")
        || reason.contains("card replacement window")
    {
        Step::RefundFailed
    } else if reason.contains("nothing to settle on")
        || reason.contains("charge answered with status")
        || reason.contains("still unsettled")
        || reason.contains("never recorded by the gateway")
    {
        Step::LookThenDecide
    } else {
        Step::NoEntry
    }
}

/// `POST /charges/{merchant_uid}/refund` as subscription-api handles it:
/// the `Idempotency-Key` is held for the request's fingerprint, the refund
/// runs, and its answer is kept (or the key let go after a 5xx).
async fn http_refund(
    engine: &SimEngine,
    key: &str,
    merchant_uid: &str,
    input: &RefundInput,
) -> Result<management::ChargeView, ManageError> {
    let fingerprint = format!(
        "POST /charges/{merchant_uid}/refund {:?} {}",
        input.amount, input.reason
    );
    match engine
        .ledger
        .begin_request(key, &fingerprint, engine.now())
        .await?
    {
        RequestState::Fresh => {}
        RequestState::Replay(stored) if stored.status < 300 => {
            return serde_json::from_str::<serde_json::Value>(&stored.body)
                .map(|_| placeholder_view(merchant_uid))
                .map_err(|e| ManageError::Internal(e.to_string()));
        }
        RequestState::Replay(stored) => return Err(ManageError::Conflict(stored.body)),
        RequestState::InProgress => {
            return Err(ManageError::Conflict(
                "a request with this Idempotency-Key is still being handled".into(),
            ));
        }
        RequestState::Mismatch => return Err(ManageError::Unprocessable("key reused".into())),
    }
    let answered = management::refund(
        engine,
        merchant_uid,
        input.clone(),
        key,
        &Actor::named("merchant"),
    )
    .await;
    let kept = match &answered {
        Err(e) if e.http_status() >= 500 => engine.ledger.abandon_request(key).await,
        Err(e) => {
            let stored = StoredResponse {
                status: e.http_status(),
                body: e.to_string(),
            };
            engine
                .ledger
                .finish_request(key, &stored, engine.now())
                .await
        }
        Ok(view) => {
            let stored = StoredResponse {
                status: 200,
                body: serde_json::to_string(view).unwrap_or_default(),
            };
            engine
                .ledger
                .finish_request(key, &stored, engine.now())
                .await
        }
    };
    let _ = kept;
    answered
}

fn placeholder_view(merchant_uid: &str) -> management::ChargeView {
    management::ChargeView {
        subscription_id: String::new(),
        merchant_uid: merchant_uid.to_owned(),
        period: String::new(),
        attempt: 0,
        imp_uid: None,
        amount: 0,
        state: "paid".into(),
        reason: None,
        decline_class: None,
        refunded: 0,
        paid_at: None,
        receipt_url: None,
        tax: management::TaxView {
            supply: 0,
            vat: 0,
            tax_free: 0,
            source: "computed",
            refunded: shared::billing::TaxSplit::computed(0, 0),
        },
        cash_receipt: None,
        next_retry_at: None,
        resolution: None,
        created_at: String::new(),
    }
}
