//! scheduled-charge end to end: the handler with real event payloads and
//! the i'mport simulator, on the in-memory ledger (the second
//! implementation of the ledger port, held to the DynamoDB adapter by the
//! contract suite) except in `on_dynamodb`, which keeps moto_server. Assertions read the simulator's
//! ledger (what i'mport charged), not only our table. `PAYMENT_API=v2`
//! runs them against the simulator's PortOne V2 face.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use iamport_sim::{CHARGE_PATHS, LOOKUP_PATHS};
use iamport_sim::{Fault, FaultKind, SimHandle};
use lambda_runtime::{Context, LambdaEvent};
use scheduled_charge::handle;
use shared::app::App;
use shared::billing::{AttemptState, Subscription};
use shared::billing::{BILLING_TZ, SubscriptionStatus};
use shared::ledger::Ledger;
use shared::management;
use shared::run::RunReport;
use testkit::{
    app_for, charge_directly, event_json, memory_app_for, seed_subscription, start_sim,
    wrong_secret,
};

/// 10:00 in Seoul on the given local date: the default schedule.
fn seoul_10am(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    BILLING_TZ
        .with_ymd_and_hms(y, m, d, 10, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// 10:00 in Seoul two days from now: the first day the tests play. Runs
/// happen at their billing time (the app's clock only moves forward), so
/// the days a test plays start after the wall clock.
fn day0() -> DateTime<Utc> {
    let today = Utc::now().with_timezone(&BILLING_TZ).date_naive();
    let d = today + chrono::Days::new(2);
    seoul_10am(d.year(), d.month(), d.day())
}

/// The next year after this one whose February has 28 days.
fn common_year() -> i32 {
    let mut y = Utc::now().year() + 1;
    while chrono::NaiveDate::from_ymd_opt(y, 2, 29).is_some() {
        y += 1;
    }
    y
}

async fn run_at<L: Ledger>(
    app: &App<L>,
    t: DateTime<Utc>,
    run_id: &str,
) -> Result<RunReport, String> {
    testkit::clock_to(app, t);
    let payload = serde_json::json!({"scheduled_time": t.to_rfc3339(), "execution_id": run_id});
    handle(app, LambdaEvent::new(payload, Context::default()))
        .await
        .map_err(|e| e.to_string())
}

/// Paid charges per merchant_uid, from the simulator's ledger.
fn paid_by_merchant_uid(sim: &SimHandle) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in sim.ledger() {
        if p.status == "paid" && p.customer_uid_usage.as_deref() == Some("payment") {
            *out.entry(p.merchant_uid.clone()).or_default() += 1;
        }
    }
    out
}

fn paid_count_for(sim: &SimHandle, sub: &Subscription) -> usize {
    paid_by_merchant_uid(sim)
        .iter()
        .filter(|(m, _)| m.starts_with(&format!("s{}", sub.id)))
        .map(|(_, n)| n)
        .sum()
}

async fn reload<L: Ledger>(app: &App<L>, sub: &Subscription) -> Subscription {
    app.engine
        .ledger
        .get_subscription(&sub.id)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn months_of_daily_runs_charge_each_period_once_with_anchors_on_28_to_31() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let year = common_year();
    let mut subs = Vec::new();
    for day in 28..=31 {
        for _ in 0..3 {
            subs.push(
                seed_subscription(
                    &app,
                    &sim,
                    seoul_10am(year, 1, day) - chrono::Duration::hours(1),
                )
                .await,
            );
        }
    }
    let mut charged_on: BTreeMap<String, u64> = BTreeMap::new();
    let mut noticed_on: BTreeMap<String, u64> = BTreeMap::new();
    let mut day = seoul_10am(year, 1, 28);
    while day <= seoul_10am(year, 5, 5) {
        let report = run_at(&app, day, &format!("run-{}", day.date_naive()))
            .await
            .unwrap();
        if report.summary.charged > 0 {
            charged_on.insert(
                day.with_timezone(&BILLING_TZ).format("%m-%d").to_string(),
                report.summary.charged,
            );
        }
        if report.summary.notices > 0 {
            noticed_on.insert(
                day.with_timezone(&BILLING_TZ).format("%m-%d").to_string(),
                report.summary.notices,
            );
        }
        assert_eq!(
            report.summary.declined + report.summary.ambiguous + report.summary.rejected,
            0
        );
        day += chrono::Duration::days(1);
    }
    let expected: BTreeMap<String, u64> = [
        ("01-28", 3),
        ("01-29", 3),
        ("01-30", 3),
        ("01-31", 3),
        ("02-28", 12), // 28, and 29/30/31 clamped to the month's end
        ("03-28", 3),
        ("03-29", 3),
        ("03-30", 3),
        ("03-31", 3),
        ("04-28", 3),
        ("04-29", 3),
        ("04-30", 6), // 30 and 31 clamp to Apr 30
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(charged_on, expected);
    // Each renewal was noticed once, 7 days (the default) before its charge;
    // May's charges are after the last run, and their notices too.
    let expected: BTreeMap<String, u64> = [
        ("02-21", 12),
        ("03-21", 3),
        ("03-22", 3),
        ("03-23", 3),
        ("03-24", 3),
        ("04-21", 3),
        ("04-22", 3),
        ("04-23", 6),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(noticed_on, expected);
    for sub in &subs {
        assert_eq!(paid_count_for(&sim, sub), 4, "Jan..Apr for {}", sub.id);
        let now = reload(&app, sub).await;
        assert_eq!(now.period_index, 4);
        assert_eq!(now.status, SubscriptionStatus::Active);
        // May's due date is the anchor day again: no drift after February.
        assert_eq!(
            now.anchor.period_date(4).format("%m-%d").to_string(),
            format!("05-{}", sub.anchor.day)
        );
    }
    assert!(
        paid_by_merchant_uid(&sim).values().all(|&n| n == 1),
        "a merchant_uid was paid twice"
    );
}

#[tokio::test]
async fn the_same_event_twice_and_two_concurrent_runs_charge_once() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let mut subs = Vec::new();
    for _ in 0..20 {
        subs.push(seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await);
    }
    let (a, b) = tokio::join!(
        run_at(&app, t0, "exec-1"),
        run_at(&app, t0, "exec-1-duplicate")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let c = run_at(&app, t0, "exec-1").await.unwrap();
    assert_eq!(
        a.summary.charged + b.summary.charged + c.summary.charged,
        20
    );
    assert_eq!(c.summary.charged, 0);
    let paid = paid_by_merchant_uid(&sim);
    assert_eq!(paid.len(), 20);
    assert!(paid.values().all(|&n| n == 1));
    for sub in &subs {
        assert_eq!(paid_count_for(&sim, sub), 1);
        assert_eq!(reload(&app, sub).await.period_index, 1);
    }
}

#[tokio::test]
async fn a_timeout_after_the_charge_is_settled_to_paid_without_a_second_charge() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    // i'mport charges, then hangs past our 1 s timeout; the lookup right
    // after fails too, so the run cannot tell.
    sim.inject(Fault {
        path_prefix: Some(CHARGE_PATHS.into()),
        ..Fault::new(FaultKind::HangAfter { secs: 3 })
    });
    sim.inject(Fault {
        path_prefix: Some(LOOKUP_PATHS.into()),
        ..Fault::new(FaultKind::Http500)
    });
    let first = run_at(&app, t0, "run-1").await.unwrap();
    assert_eq!(first.summary.ambiguous, 1, "{first:?}");
    let period = sub.current_period();
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &period, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Unknown);
    assert_eq!(paid_count_for(&sim, &sub), 1, "i'mport did charge");

    // The next run settles it from i'mport's record before anything else.
    let second = run_at(&app, t0 + chrono::Duration::hours(1), "run-2")
        .await
        .unwrap();
    assert_eq!(second.summary.reconciled, 1, "{second:?}");
    assert_eq!(second.summary.charged, 0);
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &period, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Paid);
    let muid = app.engine.settings.uid_key.charge_uid(&sub.id, &period, 1);
    let ledger_imp = sim
        .ledger()
        .into_iter()
        .find(|p| p.merchant_uid == muid)
        .unwrap()
        .imp_uid;
    assert_eq!(attempt.imp_uid.as_deref(), Some(ledger_imp.as_str()));
    assert_eq!(paid_count_for(&sim, &sub), 1, "no second charge");
    assert_eq!(reload(&app, &sub).await.period_index, 1);
}

#[tokio::test]
async fn crashes_between_claim_and_record_are_settled_by_the_next_run() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let charged_then_crashed = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    let crashed_before_charge =
        seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    // The crashes happened moments before the run.
    testkit::clock_to(&app, t0);
    testkit::crashed_claim(&app, &charged_then_crashed, true).await;
    testkit::crashed_claim(&app, &crashed_before_charge, false).await;
    // While the lease is live, a run leaves both alone.
    let early = run_at(&app, t0, "run-early").await.unwrap();
    assert_eq!(early.summary.skipped, 2, "{early:?}");
    // Past the lease: the paid one is settled from i'mport's record; the other
    // is not at i'mport, but was sent only seconds ago and may still be in
    // flight there, so it is not sent again yet.
    app.engine.clock.advance(chrono::Duration::seconds(2));
    let after_lease = run_at(&app, t0, "run-after-lease").await.unwrap();
    assert_eq!(after_lease.summary.reconciled, 1, "{after_lease:?}");
    assert_eq!(after_lease.summary.charged, 0, "{after_lease:?}");
    assert_eq!(paid_count_for(&sim, &crashed_before_charge), 0);
    // Past the quiet period: sent again, with the same merchant_uid.
    testkit::after_quiet_period(&app);
    let report = run_at(&app, t0, "run-after-quiet").await.unwrap();
    assert_eq!(report.summary.charged, 1, "{report:?}");
    for sub in [&charged_then_crashed, &crashed_before_charge] {
        assert_eq!(paid_count_for(&sim, sub), 1);
        let a = app
            .engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.state, AttemptState::Paid);
        assert_eq!(reload(&app, sub).await.period_index, 1);
    }
}

/// Defect (a) of the engine issue: an attempt left `unknown` after a
/// timeout used to be taken over and sent again at once, while i'mport may
/// still be processing the first request.
#[tokio::test]
async fn an_unanswered_charge_is_not_sent_again_until_the_quiet_period_has_passed() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    // i'mport takes the request and does not answer within our 1 s timeout.
    sim.inject(Fault {
        path_prefix: Some(CHARGE_PATHS.into()),
        ..Fault::new(FaultKind::HangBefore { secs: 2 })
    });
    let first = run_at(&app, t0, "run-1").await.unwrap();
    assert_eq!(first.summary.ambiguous, 1, "{first:?}");
    assert_eq!(sim.charge_requests(), 1);
    // A run moments later finds nothing at i'mport yet: it waits.
    let second = run_at(&app, t0 + chrono::Duration::seconds(30), "run-2")
        .await
        .unwrap();
    assert_eq!(second.summary.skipped, 1, "{second:?}");
    assert_eq!(
        sim.charge_requests(),
        1,
        "sent again while i'mport may still be processing the first request"
    );
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Unknown);
    // Once the quiet period has passed, nothing at i'mport means it never
    // arrived: the same merchant_uid is sent again.
    testkit::after_quiet_period(&app);
    let third = run_at(&app, t0 + chrono::Duration::hours(2), "run-3")
        .await
        .unwrap();
    assert_eq!(third.summary.charged, 1, "{third:?}");
    assert_eq!(sim.charge_requests(), 2);
    assert_eq!(paid_count_for(&sim, &sub), 1);
    assert_eq!(sim.paid_count(&attempt.merchant_uid), 1);
}

#[tokio::test]
async fn declines_walk_the_dunning_schedule_to_suspension() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let always = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    let recovers = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    sim.decline_customer(&always.customer_uid, "잔액부족");
    sim.inject(Fault {
        customer_uid: Some(recovers.customer_uid.clone()),
        ..Fault::new(FaultKind::Decline {
            reason: "한도초과".into(),
        })
    });
    let mut declined_days = Vec::new();
    for d in 0..12 {
        let t = t0 + chrono::Duration::days(d);
        let r = run_at(&app, t, &format!("run-{d}")).await.unwrap();
        for _ in 0..r.summary.declined {
            declined_days.push(d);
        }
    }
    // attempt 1 on day 0 (both), retries on +1 (always; recovers is paid), +3, +7.
    assert_eq!(declined_days, vec![0, 0, 1, 3, 7]);
    let failed: Vec<_> = sim
        .ledger()
        .into_iter()
        .filter(|p| p.customer_uid.as_deref() == Some(always.customer_uid.as_str()))
        .collect();
    assert_eq!(failed.len(), 4);
    assert!(
        failed
            .iter()
            .all(|p| p.status == "failed" && p.fail_reason.as_deref() == Some("잔액부족"))
    );
    let now = reload(&app, &always).await;
    assert_eq!(now.status, SubscriptionStatus::Suspended);
    let attempts = app.engine.ledger.list_attempts(&always.id).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt, a.state))
            .collect::<Vec<_>>(),
        vec![
            (1, AttemptState::Failed),
            (2, AttemptState::Failed),
            (3, AttemptState::Failed),
            (4, AttemptState::Failed)
        ]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.imp_uid.is_some() && a.fail_reason.as_deref() == Some("잔액부족"))
    );

    let r = reload(&app, &recovers).await;
    assert_eq!(r.status, SubscriptionStatus::Active);
    assert_eq!(r.period_index, 1);
    assert_eq!(paid_count_for(&sim, &recovers), 1);
}

#[tokio::test]
async fn a_deleted_billing_key_stops_charging() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    sim.remove_customer(&sub.customer_uid);
    // The charge is refused; a refusal may still hide a payment made by an
    // earlier copy of the request, so it is settled once the quiet period
    // has passed: nothing at the PG, and the key lookup finds no key.
    let r = run_at(&app, t0, "run-1").await.unwrap();
    assert_eq!(r.summary.refused, 1, "{r:?}");
    assert_eq!(reload(&app, &sub).await.status, SubscriptionStatus::Active);
    let r = run_at(&app, t0 + chrono::Duration::hours(1), "run-1b")
        .await
        .unwrap();
    assert_eq!(r.summary.rejected, 1, "{r:?}");
    let now = reload(&app, &sub).await;
    assert_eq!(now.status, SubscriptionStatus::KeyMissing);
    let later = run_at(&app, t0 + chrono::Duration::days(3), "run-2")
        .await
        .unwrap();
    assert_eq!(
        later.summary.due, 0,
        "a key-less subscription leaves the due index"
    );
    assert!(
        sim.ledger()
            .iter()
            .all(|p| p.customer_uid.as_deref() != Some(sub.customer_uid.as_str()))
    );
}

/// Issue 23 §1: the notice of a renewal goes out once, the plan's notice
/// days before the charge, after a look at the key; a key the PG no longer
/// has is told then, not when the charge fails.
#[tokio::test]
async fn a_renewal_is_noticed_once_days_before_its_charge_and_a_missing_key_is_told_then() {
    use shared::billing::notices::NoticeKind;
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let kept = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    let lost = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    let r = run_at(&app, t0, "run-signup").await.unwrap();
    assert_eq!((r.summary.charged, r.summary.notices), (2, 0), "{r:?}");
    sim.remove_customer(&lost.customer_uid);
    let charge_at = reload(&app, &kept).await.next_charge_at;
    let notice_at = charge_at - chrono::Duration::days(7);
    let early = run_at(&app, notice_at - chrono::Duration::seconds(1), "run-early")
        .await
        .unwrap();
    assert_eq!(
        (early.summary.due, early.summary.notices),
        (0, 0),
        "{early:?}"
    );
    let r = run_at(&app, notice_at, "run-notice").await.unwrap();
    assert_eq!(
        (
            r.summary.notices,
            r.summary.notices_action_required,
            r.summary.charged
        ),
        (2, 1, 0),
        "{r:?}"
    );
    for (sub, kind) in [
        (&kept, NoticeKind::RenewalUpcoming),
        (&lost, NoticeKind::ActionRequired),
    ] {
        let now = reload(&app, sub).await;
        let n = now.notice.clone().expect("a notice recorded");
        assert_eq!(
            (n.kind, n.period, n.amount, n.charge_at, n.key_checked),
            (kind, now.current_period(), now.plan.amount, charge_at, true)
        );
        assert_eq!(
            now.status,
            SubscriptionStatus::Active,
            "a notice changes no status"
        );
    }
    // Once per period: not again the same day, the next days, or by a replay.
    for (t, run) in [
        (notice_at, "run-notice"),
        (notice_at + chrono::Duration::hours(1), "run-notice-2"),
        (notice_at + chrono::Duration::days(1), "run-next-day"),
    ] {
        let r = run_at(&app, t, run).await.unwrap();
        assert_eq!((r.summary.due, r.summary.notices), (0, 0), "{run}: {r:?}");
    }
    let r = run_at(&app, charge_at, "run-charge").await.unwrap();
    assert_eq!(r.summary.charged, 1, "the kept key is charged: {r:?}");
    assert_eq!(paid_count_for(&sim, &kept), 2);
    assert_eq!(
        paid_count_for(&sim, &lost),
        1,
        "the lost key is not charged"
    );
}

/// Issue 23 §2: a trial is told 7 days before its end; it converts (its
/// first period charged) only with a consent recorded in the window, and
/// without one ends uncharged, or runs once more when the plan says so.
#[tokio::test]
async fn a_trial_converts_only_with_a_consent_and_otherwise_ends_uncharged() {
    use shared::billing::notices::NoticeKind;
    use shared::billing::trials::{ConversionConsent, OnNoConsent, TrialTerms};
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let terms = |on_no_consent| TrialTerms {
        days: 14,
        consent: ConversionConsent::Explicit,
        on_no_consent,
    };
    let created = t0 - chrono::Duration::hours(2);
    let agreeing = testkit::seed_trial(&app, &sim, created, terms(OnNoConsent::Cancel), None).await;
    let silent = testkit::seed_trial(&app, &sim, created, terms(OnNoConsent::Cancel), None).await;
    let extended = testkit::seed_trial(
        &app,
        &sim,
        created,
        terms(OnNoConsent::ExtendTrialOnce),
        None,
    )
    .await;
    let ends_at = agreeing.next_charge_at;
    assert_eq!(ends_at, shared::billing::trials::trial_end(14, created).1);
    let r = run_at(&app, t0, "run-signup").await.unwrap();
    assert_eq!((r.summary.due, r.summary.charged), (0, 0), "{r:?}");
    let told_at = ends_at - chrono::Duration::days(7);
    let r = run_at(&app, told_at, "run-notice").await.unwrap();
    assert_eq!((r.summary.notices, r.summary.charged), (3, 0), "{r:?}");
    for sub in [&agreeing, &silent, &extended] {
        let now = reload(&app, sub).await;
        assert_eq!(now.notice.map(|n| n.kind), Some(NoticeKind::TrialWillEnd));
        assert_eq!(now.status, SubscriptionStatus::Trialing);
    }
    // The customer consents (inside the 30 days before the end).
    let input = management::ConsentInput {
        evidence: shared::registration::EvidenceInput {
            channel: "web".into(),
            reference: "consent-log-1".into(),
            at: None,
        },
    };
    let consent = management::consent(
        &app.engine,
        agreeing.id.as_str(),
        input.clone(),
        &management::Actor::named("customer"),
    )
    .await;
    assert!(consent.is_ok(), "{consent:?}");
    let r = run_at(&app, ends_at, "run-conversion").await.unwrap();
    assert_eq!(r.summary.charged, 1, "only the consented trial: {r:?}");
    assert_eq!(paid_count_for(&sim, &agreeing), 1);
    assert_eq!(
        reload(&app, &agreeing).await.status,
        SubscriptionStatus::Active
    );
    for sub in [&silent, &extended] {
        assert_eq!(paid_count_for(&sim, sub), 0, "no consent, no charge");
    }
    let ended = reload(&app, &silent).await;
    assert_eq!(ended.status, SubscriptionStatus::Cancelled);
    assert_eq!(
        ended.cancel_reason.as_deref(),
        Some("trial ended without consent to convert")
    );
    let longer = reload(&app, &extended).await;
    assert_eq!(longer.status, SubscriptionStatus::Trialing);
    assert_eq!(longer.next_charge_at, ends_at + chrono::Duration::days(14));
    // A consent for the cancelled trial is a conflict; the extended one
    // is told again, and without a consent ends at its new end.
    let late = management::consent(
        &app.engine,
        silent.id.as_str(),
        input,
        &management::Actor::named("customer"),
    )
    .await;
    assert!(
        matches!(late, Err(management::ManageError::Conflict(_))),
        "{late:?}"
    );
    let r = run_at(
        &app,
        longer.next_charge_at - chrono::Duration::days(7),
        "run-notice-2",
    )
    .await
    .unwrap();
    assert_eq!(r.summary.notices, 1, "{r:?}");
    let r = run_at(&app, longer.next_charge_at, "run-end-2")
        .await
        .unwrap();
    assert_eq!(r.summary.charged, 0, "{r:?}");
    assert_eq!(
        reload(&app, &extended).await.status,
        SubscriptionStatus::Cancelled
    );
    assert_eq!(paid_count_for(&sim, &extended), 0);
}

#[tokio::test]
async fn the_event_fixtures_are_accepted() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    for name in ["scheduled-event.json", "scheduler-input.json"] {
        let report = handle(&app, LambdaEvent::new(event_json(name), Context::default()))
            .await
            .unwrap();
        assert_eq!(
            report.billing_time.to_rfc3339(),
            "2026-11-25T01:00:00+00:00",
            "{name}"
        );
    }
}

/// Defect (c): merchant uids were guessable from the subscription id the
/// customer sees (`s{id}{YYYYMM}a1`): paying 100 won under next month's uid in
/// the browser stopped one's own billing forever while staying `active`.
#[tokio::test]
async fn a_payment_under_a_uid_guessed_from_the_subscription_id_does_not_stop_billing() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    // What a customer can build from what they see.
    let guessed = format!("s{}{}a1", sub.id, sub.current_period());
    let foreign = charge_directly(&app, &sub.customer_uid, &guessed, 100).await;
    assert!(matches!(foreign, shared::gateway::ChargeOutcome::Paid(_)));
    let r = run_at(&app, t0, "run-1").await.unwrap();
    assert_eq!(r.summary.charged, 1, "{r:?}");
    let now = reload(&app, &sub).await;
    assert_eq!(now.status, SubscriptionStatus::Active);
    assert_eq!(now.paid_through, Some(sub.current_period()));
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(attempt.merchant_uid, guessed);
    assert!(app.engine.settings.uid_key.verifies(&attempt.merchant_uid));
}

/// A record under our own (keyed) uid that is not our charge — possible only
/// with the key — never pays the period: the attempt and the subscription go
/// to `needs_review` (no access, no charges, a metric), not left `unknown`
/// and retried every day.
#[tokio::test]
async fn a_foreign_payment_under_our_merchant_uid_goes_to_a_person() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    let muid = app
        .engine
        .settings
        .uid_key
        .charge_uid(&sub.id, &sub.current_period(), 1);
    let foreign = charge_directly(&app, &sub.customer_uid, &muid, 100).await;
    assert!(matches!(foreign, shared::gateway::ChargeOutcome::Paid(_)));
    let r = run_at(&app, t0, "run-1").await.unwrap();
    assert_eq!((r.summary.charged, r.summary.needs_review), (0, 1), "{r:?}");
    assert!(r.error.is_none() && r.stopped.is_none(), "{r:?}");
    let line: serde_json::Value =
        serde_json::from_str(&shared::run::emf_line(&r, "scheduled-charge", 0)).unwrap();
    assert_eq!(line["NeedsReview"], 1);
    let now = reload(&app, &sub).await;
    assert_eq!(now.status, SubscriptionStatus::NeedsReview);
    assert_eq!(now.paid_through, None, "the period must not count as paid");
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::NeedsReview);
    assert!(
        attempt
            .fail_reason
            .as_deref()
            .unwrap_or_default()
            .contains("does not match"),
        "{attempt:?}"
    );
    // Out of the due index: the next run leaves it alone.
    let later = run_at(&app, t0 + chrono::Duration::days(1), "run-2")
        .await
        .unwrap();
    assert_eq!(later.summary.due, 0, "{later:?}");
    assert_eq!(
        sim.paid_count(&muid),
        1,
        "no second payment under that merchant_uid"
    );
}

/// Defect (f): one throttled or refused connection used to stop the whole
/// run. It now defers that one subscription (claim released, nothing counted
/// against the customer), backs off, and bills the rest.
#[tokio::test]
async fn a_throttled_charge_is_deferred_and_the_run_goes_on() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[("CHARGE_CONCURRENCY", "1")]);
    let t0 = day0();
    let mut subs = Vec::new();
    for _ in 0..4 {
        subs.push(seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await);
    }
    sim.inject(Fault {
        path_prefix: Some(CHARGE_PATHS.into()),
        ..Fault::new(FaultKind::TooManyRequests)
    });
    let r = run_at(&app, t0, "run-1").await.unwrap();
    assert_eq!((r.summary.charged, r.summary.deferred), (3, 1), "{r:?}");
    assert!(r.error.is_none() && r.stopped.is_none(), "{r:?}");
    // The next run sends the deferred one at once: it never reached i'mport.
    let r = run_at(&app, t0 + chrono::Duration::hours(1), "run-2")
        .await
        .unwrap();
    assert_eq!(r.summary.charged, 1, "{r:?}");
    for sub in &subs {
        assert_eq!(paid_count_for(&sim, sub), 1);
    }
}

/// Defect (f): a 401 while classifying a refusal used to leave the attempt
/// claimed for the whole lease. The claim is released before the run stops.
#[tokio::test]
async fn a_401_while_classifying_a_refusal_releases_the_claim() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    sim.inject(Fault {
        path_prefix: Some(CHARGE_PATHS.into()),
        ..Fault::new(FaultKind::Reject {
            code: 1,
            message: "카드사 통신 오류".into(),
        })
    });
    // The lookup is refused, also after the V1 client's forced token
    // refresh (V2 has no token: one refusal).
    sim.inject(Fault {
        path_prefix: Some(LOOKUP_PATHS.into()),
        times: if testkit::v2_mode() { 1 } else { 2 },
        ..Fault::new(FaultKind::Unauthorized)
    });
    let err = run_at(&app, t0, "run-1").await.unwrap_err();
    assert!(err.contains("credentials"), "{err}");
    let attempt = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.state, AttemptState::Unknown, "{attempt:?}");
    assert_eq!(attempt.claim_token, None);
    // Nothing was charged; the next run settles it (a refusal left nothing at i'mport).
    testkit::after_quiet_period(&app);
    let r = run_at(&app, t0 + chrono::Duration::hours(1), "run-2")
        .await
        .unwrap();
    assert_eq!(r.summary.charged, 1, "{r:?}");
    assert_eq!(paid_count_for(&sim, &sub), 1);
}

/// Defect S2: a refusal that hits every charge alike (a PG setting broken
/// at the merchant) used to march every subscription along dunning. The
/// run stops after five alike, nobody loses access, and once the setting is
/// fixed each subscription is charged once.
#[tokio::test]
async fn a_refusal_of_every_charge_stops_the_run_and_dunns_nobody() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[("CHARGE_CONCURRENCY", "1")]);
    let t0 = day0();
    let mut subs = Vec::new();
    for _ in 0..8 {
        subs.push(seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await);
    }
    sim.inject(Fault {
        path_prefix: Some(CHARGE_PATHS.into()),
        times: 100,
        ..Fault::new(FaultKind::Reject {
            code: -1,
            message: "비인증결제모듈 사용정보를 찾을 수 없습니다".into(),
        })
    });
    let err = run_at(&app, t0, "run-1").await.unwrap_err();
    assert!(err.contains("refused alike"), "{err}");
    assert!(sim.ledger().is_empty(), "nothing was charged");
    let sent = sim.charge_requests();
    assert!(
        (5..8).contains(&sent),
        "stopped after five alike, not after all eight: {sent}"
    );
    for s in &subs {
        assert_eq!(
            reload(&app, s).await.status,
            SubscriptionStatus::Active,
            "nobody dunned"
        );
    }
    // The merchant fixes the setting; after the quiet period the refused
    // ones are sent again (same merchant_uid) and the others claimed.
    sim.clear_faults();
    testkit::after_quiet_period(&app);
    let r = run_at(&app, t0 + chrono::Duration::hours(1), "run-2")
        .await
        .unwrap();
    assert_eq!(r.summary.charged, 8, "{r:?}");
    for s in &subs {
        assert_eq!(paid_count_for(&sim, s), 1);
    }
}

/// Defect S4: a charge the PG keeps refusing without recording anything
/// (V2: a decline that leaves no FAILED payment) used to be re-sent every
/// day forever. After three sends it goes to a person, counted and listed.
#[tokio::test]
async fn a_charge_refused_three_times_goes_to_a_person() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[]);
    let t0 = day0();
    let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
    sim.inject(Fault {
        path_prefix: Some(CHARGE_PATHS.into()),
        customer_uid: Some(sub.customer_uid.clone()),
        times: 100,
        ..Fault::new(FaultKind::Reject {
            code: -1,
            message: "카드사 요청 거절".into(),
        })
    });
    let mut flagged_on = None;
    for d in 0..5 {
        let r = run_at(&app, t0 + chrono::Duration::days(d), &format!("run-{d}"))
            .await
            .unwrap();
        if r.summary.needs_review > 0 {
            flagged_on = Some(d);
            assert_eq!(r.summary.waiting_for_review, Some(1), "{r:?}");
            break;
        }
    }
    assert_eq!(
        flagged_on,
        Some(3),
        "sent on days 0, 1 and 2, then a person on day 3"
    );
    assert_eq!(sim.charge_requests(), 3);
    let a = app
        .engine
        .ledger
        .get_attempt(&sub.id, &sub.current_period(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.state, a.sends), (AttemptState::NeedsReview, 3), "{a:?}");
    assert!(a.fail_reason.unwrap_or_default().contains("never recorded"));
    assert_eq!(
        reload(&app, &sub).await.status,
        SubscriptionStatus::NeedsReview
    );
}

/// Defect D7: a run given a time a month ahead (a mistyped manual run, a
/// forged event) made every subscription due at once and charged it early.
/// On the real clock a time beyond the allowed skew is refused before
/// anything is read; on its due day the subscription is charged once.
#[tokio::test]
async fn a_run_given_a_time_ahead_of_the_clock_is_refused_and_charges_nobody() {
    let sim = start_sim().await;
    let app = memory_app_for(&sim, &[("BILLING_CLOCK", "wall")]);
    let t0 = day0();
    let due = t0 + chrono::Duration::days(10);
    let sub = seed_subscription(&app, &sim, due).await;
    testkit::clock_to(&app, t0);
    let typo = t0 + chrono::Duration::days(31);
    let payload = serde_json::json!({"scheduled_time": typo.to_rfc3339(), "execution_id": "typo"});
    let err = handle(&app, LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ahead of the clock"), "{err}");
    assert_eq!(sim.charge_requests(), 0, "nothing charged early");
    assert_eq!(reload(&app, &sub).await, sub, "nothing changed");
    // On the due day (a time within the skew is the scheduler's minute).
    let r = run_at(&app, due, "due-day").await.unwrap();
    assert_eq!(r.summary.charged, 1, "{r:?}");
    assert_eq!(paid_count_for(&sim, &sub), 1);
}

/// On moto_server: what needs the DynamoDB adapter itself (an unreadable
/// item, a missing table, a second app on the same table) or the event's
/// clock (`--skip on_dynamodb::` leaves these out of the fast loop).
mod on_dynamodb {
    use super::*;

    /// Defect (d): one unreadable item used to halt the whole run, every day.
    #[tokio::test]
    async fn a_corrupt_item_is_skipped_and_counted_and_everyone_else_is_billed() {
        let sim = start_sim().await;
        let app = app_for(&sim, &[]).await;
        let t0 = day0();
        let mut subs = Vec::new();
        for _ in 0..4 {
            subs.push(seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await);
        }
        app.engine
            .ledger
            .corrupt_subscription(&subs[1].id, "plan_amount", "lots")
            .await
            .unwrap();
        let report = run_at(&app, t0, "run-1").await.unwrap();
        assert_eq!(report.summary.charged, 3, "{report:?}");
        assert_eq!(report.summary.corrupt, 1, "{report:?}");
        assert!(
            report.error.is_none() && report.stopped.is_none(),
            "{report:?}"
        );
        for (i, sub) in subs.iter().enumerate() {
            assert_eq!(paid_count_for(&sim, sub), usize::from(i != 1));
        }
        let line: serde_json::Value =
            serde_json::from_str(&shared::run::emf_line(&report, "scheduled-charge", 0)).unwrap();
        assert_eq!(line["Corrupt"], 1);
    }

    #[tokio::test]
    async fn bad_credentials_end_the_run_with_an_error_and_lose_nothing() {
        let sim = start_sim().await;
        let app = app_for(&sim, &[wrong_secret()]).await;
        let t0 = day0();
        let sub = seed_subscription(&app, &sim, t0 - chrono::Duration::hours(2)).await;
        let err = run_at(&app, t0, "run-1").await.unwrap_err();
        assert!(err.contains("run stopped"), "{err}");
        assert!(sim.ledger().is_empty());
        // The attempt is released, not held for its lease; with the right secret
        // the next run charges it once.
        let attempt = app
            .engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempt.state, AttemptState::Unknown, "{attempt:?}");
        assert_eq!(attempt.sent_at, None, "a refused request was never sent");
        let fixed = App::new(
            app.config.clone(),
            app.engine.ledger.clone(),
            shared::app::Credentials {
                uid_key: Some(shared::secret::Secret::new("a-fixed-uid-key-for-tests")),
                ..testkit::sim_credentials(&sim)
            },
            shared::clock::Clock::system(),
        )
        .unwrap();
        let r = run_at(&fixed, t0 + chrono::Duration::hours(1), "run-2")
            .await
            .unwrap();
        assert_eq!(r.summary.charged, 1, "{r:?}");
        assert_eq!(paid_count_for(&sim, &sub), 1);
    }

    #[tokio::test]
    async fn dynamodb_failure_ends_the_run_with_an_error_status() {
        let sim = start_sim().await;
        let app = app_for(&sim, &[]).await;
        let broken = testkit::as_configured(
            shared::ledger::dynamodb::DynamoLedger::new(
                testkit::dynamodb_client().await,
                "no-such-table",
                4,
            ),
            &app.config,
        )
        .await;
        let broken = App::new(
            app.config.clone(),
            broken,
            testkit::sim_credentials(&sim),
            shared::clock::Clock::system(),
        )
        .unwrap();
        let err = run_at(&broken, day0(), "run-1").await.unwrap_err();
        assert!(err.contains("ledger"), "{err}");
        assert!(sim.ledger().is_empty());
    }

    /// The event's time as the billing clock (`BILLING_CLOCK=event`, the local
    /// story): runs months ahead of the process clock. "One period a day" and
    /// the quiet periods read the process clock, so after a payment today every
    /// later run was refused as a second period today, and the local story
    /// charged nothing after its sign-ups. On the event's clock the process
    /// clock now follows the runs (`run::follow_the_event`).
    #[tokio::test]
    async fn on_the_event_clock_a_run_months_ahead_charges_its_own_day() {
        let sim = start_sim().await;
        let app = app_for(&sim, &[]).await;
        let now = app.engine.now();
        let sub = seed_subscription(&app, &sim, now).await;
        let run = |t: DateTime<Utc>, id: &str| {
            let payload = serde_json::json!({"scheduled_time": t.to_rfc3339(), "execution_id": id});
            handle(&app, LambdaEvent::new(payload, Context::default()))
        };
        let first = run(now, "today").await.unwrap();
        assert_eq!(first.summary.charged, 1, "{first:?}");
        let next = reload(&app, &sub).await.next_charge_at;
        assert!(next > now + chrono::Duration::days(27), "{next}");
        // The process clock stays today; the event is next month's due time.
        let second = run(next, "next-month").await.unwrap();
        assert_eq!(second.summary.charged, 1, "{second:?}");
        assert_eq!(paid_count_for(&sim, &sub), 2);
    }
}
