//! The fault matrix: for each fault, a billing month of scheduled runs end
//! to end (handlers, moto_server, the i'mport simulator, webhooks), then the
//! invariants are checked from the simulator's ledger and our table:
//! zero double charges, zero lost attempts, every subscription legal.
//! `PAYMENT_API=v2` runs the same month against the simulator's PortOne V2
//! face (`scripts/test.sh` runs both).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use iamport_sim::{Fault, FaultKind, SimHandle, WebhookFormat, WebhookSettings};
use lambda_runtime::{Context, LambdaEvent};
use shared::app::App;
use shared::billing::{AttemptState, ChargeAttempt, Subscription};
use shared::billing::{BILLING_TZ, MerchantUid, SubscriptionStatus};
use shared::ledger::Ledger;
use shared::ledger::dynamodb::DynamoLedger;
use shared::run::RunReport;
use testkit::{
    FlakyProxy, app_for, local_gateway, seed_subscription, sim_credentials, start_sim, v2_mode,
};

const SUBS: usize = 6;
const DAYS: i64 = 36;

fn t0() -> DateTime<Utc> {
    BILLING_TZ
        .with_ymd_and_hms(2026, 12, 1, 10, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

async fn run(app: &App, t: DateTime<Utc>, id: &str) -> Result<RunReport, String> {
    testkit::clock_to(app, t);
    let payload = serde_json::json!({"scheduled_time": t.to_rfc3339(), "execution_id": id});
    Box::pin(scheduled_charge::handle(
        app,
        LambdaEvent::new(payload, Context::default()),
    ))
    .await
    .map_err(|e| e.to_string())
}

struct World {
    sim: SimHandle,
    app: Arc<App>,
    subs: Vec<Subscription>,
    /// Evidence that the fault was actually met (errors, ambiguous or reconciled outcomes…).
    hits: u64,
}

async fn world(extra: &[(&str, &str)]) -> World {
    let sim = start_sim().await;
    let app = Arc::new(app_for(&sim, extra).await);
    let mut subs = Vec::new();
    for _ in 0..SUBS {
        subs.push(seed_subscription(&app, &sim, t0() - chrono::Duration::hours(1)).await);
    }
    World {
        sim,
        app,
        subs,
        hits: 0,
    }
}

fn note(w: &mut World, r: &Result<RunReport, String>) {
    match r {
        Ok(r) => {
            w.hits += r.summary.ambiguous + r.summary.reconciled + u64::from(r.stopped.is_some())
        }
        Err(_) => w.hits += 1,
    }
}

/// A day passes between daily runs (for leases and quiet periods too; and
/// for the simulator in V2 mode, whose signed webhooks must stay within
/// five minutes of our clock).
fn next_day(w: &World) {
    w.app.engine.clock.advance(chrono::Duration::days(1));
    if v2_mode() {
        w.sim.advance_clock(86_400);
    }
}

/// Daily runs through the month; `before` may inject faults on a given day.
async fn month(w: &mut World, mut before: impl FnMut(&World, i64)) {
    for d in 0..DAYS {
        before(w, d);
        let r = run(
            &w.app,
            t0() + chrono::Duration::days(d),
            &format!("day-{d}"),
        )
        .await;
        note(w, &r);
        next_day(w);
    }
}

#[derive(Debug, Default)]
struct Verdict {
    double: usize,
    lost: usize,
    illegal: usize,
}

/// Checks the invariants. A final clean run first settles what a fault left open.
async fn check(w: &World) -> Verdict {
    let end = t0() + chrono::Duration::days(DAYS);
    let _ = run(&w.app, end, "final").await;
    let mut v = Verdict::default();
    let ledger = w.sim.ledger();
    let mut paid_per_muid: BTreeMap<String, usize> = BTreeMap::new();
    let mut paid_per_period: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in ledger
        .iter()
        .filter(|p| p.status == "paid" && p.customer_uid_usage.as_deref() == Some("payment"))
    {
        *paid_per_muid.entry(p.merchant_uid.clone()).or_default() += 1;
        if let Some(MerchantUid::Charge {
            subscription,
            period,
            ..
        }) = MerchantUid::parse(&p.merchant_uid)
        {
            *paid_per_period
                .entry((subscription.to_string(), period.to_string()))
                .or_default() += 1;
        }
    }
    v.double += paid_per_muid.values().filter(|&&n| n > 1).count();
    v.double += paid_per_period.values().filter(|&&n| n > 1).count();
    for sub in &w.subs {
        let now = w
            .app
            .engine
            .ledger
            .get_subscription(&sub.id)
            .await
            .unwrap()
            .unwrap();
        let attempts: Vec<ChargeAttempt> =
            w.app.engine.ledger.list_attempts(&sub.id).await.unwrap();
        // Both periods charged, exactly once each, and recorded with i'mport's imp_uid.
        for k in 0..2 {
            let period = sub.anchor.period_id(k).to_string();
            let ledger_paid: Vec<_> = ledger
                .iter()
                .filter(|p| {
                    p.status == "paid"
                        && p.merchant_uid
                            .starts_with(&format!("s{}{}", sub.id, period))
                })
                .collect();
            let ours: Vec<_> = attempts
                .iter()
                .filter(|a| a.period.as_str() == period && a.state == AttemptState::Paid)
                .collect();
            match (ledger_paid.as_slice(), ours.as_slice()) {
                ([l], [a]) if a.imp_uid.as_deref() == Some(l.imp_uid.as_str()) => {}
                _ => {
                    eprintln!(
                        "lost: {} {period}: ledger {ledger_paid:?} ours {ours:?}",
                        sub.id
                    );
                    v.lost += 1;
                }
            }
        }
        // Every attempt settled; every declined/failed payment at i'mport recorded.
        v.lost += attempts.iter().filter(|a| a.state.is_open()).count();
        for p in ledger
            .iter()
            .filter(|p| p.merchant_uid.starts_with(&format!("s{}", sub.id)))
        {
            if !attempts.iter().any(|a| a.merchant_uid == p.merchant_uid) {
                v.lost += 1;
            }
        }
        let legal = now.status == SubscriptionStatus::Active
            && now.period_index == 2
            && now.next_charge_at == now.anchor.period_start(2);
        if !legal {
            eprintln!("illegal: {now:?}");
            v.illegal += 1;
        }
    }
    v
}

async fn webhooks_to_handler(w: &World, duplicates: u32) {
    let app = Arc::clone(&w.app);
    let url = local_gateway("webhook-json.json", move |r| {
        let app = Arc::clone(&app);
        async move { payment_webhook::handle(&app, r).await.unwrap() }
    })
    .await;
    w.sim.set_webhook(WebhookSettings {
        url: Some(format!("{url}/webhooks/iamport")),
        format: WebhookFormat::Json,
        duplicates,
        delay: Duration::ZERO,
    });
}

/// A fault on the billing-key charge of the API in use.
fn again_fault(kind: FaultKind, times: u32) -> Fault {
    Fault::new(kind).on_charge().times(times)
}

async fn scenario(name: &str) -> (Verdict, u64) {
    // A failed run leaves its claims; they free up after the lease (a day
    // passes between runs).
    let mut w = world(&[]).await;
    match name {
        "i'mport 500" => {
            month(&mut w, |w, d| {
                if d == 0 {
                    w.sim.inject(again_fault(FaultKind::Http500, 3))
                }
            })
            .await
        }
        "hang before charge" => {
            month(&mut w, |w, d| {
                if d == 0 {
                    w.sim
                        .inject(again_fault(FaultKind::HangBefore { secs: 2 }, 2))
                }
            })
            .await
        }
        "hang after charge" => {
            month(&mut w, |w, d| {
                if d == 0 || d == 31 {
                    w.sim
                        .inject(again_fault(FaultKind::HangAfter { secs: 2 }, 2))
                }
            })
            .await
        }
        "malformed body" => {
            month(&mut w, |w, d| {
                if d == 0 {
                    w.sim.inject(again_fault(FaultKind::Corrupt, 2))
                }
            })
            .await
        }
        "token expiry mid-run" if v2_mode() => {
            // V2 has no token: the API secret is refused once, mid-run.
            w.sim.set_latency(Duration::from_millis(20));
            for d in 0..DAYS {
                let refuse = async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    if d == 0 {
                        w.sim.inject(Fault::new(FaultKind::Unauthorized));
                    }
                };
                let id = format!("day-{d}");
                let (r, ()) =
                    tokio::join!(run(&w.app, t0() + chrono::Duration::days(d), &id), refuse);
                note(&mut w, &r);
                next_day(&w);
            }
        }
        "token expiry mid-run" => {
            w.sim.set_latency(Duration::from_millis(20));
            for d in 0..DAYS {
                let sim_tokens_before = w.sim.token_requests();
                let expire = async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    w.sim.expire_tokens();
                };
                let id = format!("day-{d}");
                let (r, ()) =
                    tokio::join!(run(&w.app, t0() + chrono::Duration::days(d), &id), expire);
                note(&mut w, &r);
                w.hits += w.sim.token_requests() - sim_tokens_before;
                next_day(&w);
            }
        }
        "401 storm" => {
            month(&mut w, |w, d| {
                if d == 0 {
                    w.sim.inject(Fault {
                        times: 6,
                        ..Fault::new(FaultKind::Unauthorized)
                    })
                }
            })
            .await
        }
        "DynamoDB unreachable mid-run" => {
            let proxy = FlakyProxy::start(&testkit::dynamodb_endpoint()).await;
            let client = testkit::dynamodb_client_at(&proxy.url).await;
            let ledger = testkit::as_configured(
                DynamoLedger::new(
                    client,
                    w.app.engine.ledger.table_name(),
                    w.app.engine.ledger.shards(),
                ),
                &w.app.config,
            )
            .await;
            w.app = Arc::new(
                App::new(
                    w.app.config.clone(),
                    ledger,
                    sim_credentials(&w.sim),
                    w.app.engine.clock.clone(),
                )
                .unwrap(),
            );
            for d in 0..DAYS {
                if d == 0 || d == 31 {
                    proxy.fail_after(9);
                }
                let r = run(
                    &w.app,
                    t0() + chrono::Duration::days(d),
                    &format!("day-{d}"),
                )
                .await;
                note(&mut w, &r);
                if proxy.is_down() {
                    proxy.heal();
                }
                next_day(&w);
            }
        }
        "conditional-write conflict" => {
            // Webhooks settle attempts while the run records them; duplicates too.
            webhooks_to_handler(&w, 2).await;
            w.sim.set_latency(Duration::from_millis(5));
            month(&mut w, |_, _| {}).await;
            // Deliveries the handler accepted (V2: signatures verified).
            w.hits += w
                .sim
                .webhooks_sent()
                .iter()
                .filter(|d| d.http_status == Some(200))
                .count() as u64;
        }
        "duplicate scheduled event" => {
            for d in 0..DAYS {
                let t = t0() + chrono::Duration::days(d);
                for _ in 0..2 {
                    let r = run(&w.app, t, &format!("day-{d}")).await;
                    note(&mut w, &r);
                }
                next_day(&w);
            }
            w.hits += 1;
        }
        "two concurrent runs" => {
            for d in 0..DAYS {
                let t = t0() + chrono::Duration::days(d);
                let (ida, idb) = (format!("a-{d}"), format!("b-{d}"));
                let (a, b) = tokio::join!(run(&w.app, t, &ida), run(&w.app, t, &idb));
                if let (Ok(a), Ok(b)) = (&a, &b) {
                    w.hits += a.summary.skipped.min(1) + b.summary.skipped.min(1);
                }
                next_day(&w);
            }
        }
        "crash after claim" => {
            // A run claimed half the subscriptions and died; it had charged some of them.
            for (i, sub) in w.subs.iter().take(SUBS / 2).enumerate() {
                testkit::crashed_claim(&w.app, sub, i % 2 == 0).await;
            }
            next_day(&w);
            month(&mut w, |_, _| {}).await;
        }
        other => panic!("unknown scenario {other}"),
    }
    let hits = w.hits;
    (check(&w).await, hits)
}

const FAULTS: [&str; 11] = [
    "i'mport 500",
    "hang before charge",
    "hang after charge",
    "malformed body",
    "token expiry mid-run",
    "401 storm",
    "DynamoDB unreachable mid-run",
    "conditional-write conflict",
    "duplicate scheduled event",
    "two concurrent runs",
    "crash after claim",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_billing_month_under_each_fault_keeps_every_invariant() {
    let results = futures::future::join_all(
        FAULTS
            .iter()
            .map(|name| async move { (*name, Box::pin(scenario(name)).await) }),
    )
    .await;
    let (mut double, mut lost, mut illegal) = (0, 0, 0);
    for (name, (v, hits)) in &results {
        println!(
            "fault {name:<30} hits {hits:>3}  double {}  lost {}  illegal {}",
            v.double, v.lost, v.illegal
        );
        double += v.double;
        lost += v.lost;
        illegal += v.illegal;
        assert!(
            *hits > 0,
            "fault {name:?} was never met: the scenario does not test it"
        );
    }
    println!(
        "faults tried ({}): {}, double charges: {double}, lost: {lost}, illegal states: {illegal}",
        if v2_mode() {
            "PortOne V2"
        } else {
            "i'mport V1"
        },
        results.len()
    );
    assert_eq!((double, lost, illegal), (0, 0, 0));
}
