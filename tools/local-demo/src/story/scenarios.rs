//! Chapter 3: each customer's scenario, set in the simulator (declines,
//! a timeout after charging, webhooks twice and late) or asked of the
//! management API (a plan change, a cancel at period end).

use serde_json::json;

use super::Story;
use super::signups::shown;
use crate::Result;
use crate::people::*;
use crate::stack::*;

/// What the PG answers for a card reported lost (decision 72: `card_lost_or_stolen`).
pub(crate) const LOST_CARD: &str = "[8301] 분실카드입니다";

/// Whether the simulator sends webhooks, and how many charges were paid
/// (so notified) before the runs.
pub(crate) struct Webhooks {
    pub(crate) on: bool,
    pub(crate) signup_paid: usize,
}

pub(crate) async fn chapter(story: &mut Story<'_>, members: &[Member]) -> Result<Webhooks> {
    let Story {
        args,
        stack,
        checks,
        ..
    } = story;
    let stack: &Stack = stack;
    stack.step(3, "scenarios in the simulator");
    // Charges paid so far were notified once each (no duplicates yet).
    let signup_paid = paid_charges(&stack.ledger().await?);
    let hooks = stack.sim_get("/__sim/webhook").await?;
    // Webhooks go to the simulator's configured URL or to each charge's
    // notice_url (the functions' NOTICE_URL).
    let notice_url_set = read_env_file(&args.functions_env)
        .map(|env| env.iter().any(|(k, v)| k == "NOTICE_URL" && !v.is_empty()))
        .unwrap_or(false);
    let webhooks_on = hooks.get("url").is_some_and(|u| !u.is_null()) || notice_url_set;
    if webhooks_on {
        let mut settings = hooks.clone();
        settings["duplicates"] = json!(1);
        settings["delay_ms"] = json!(WEBHOOK_DELAY_MS);
        stack.sim_post("/__sim/webhook", &settings).await?;
        println!(
            "  all    POST /__sim/webhook: notifications arrive {} s after the charge, each twice (payment-webhook must be idempotent)",
            WEBHOOK_DELAY_MS / 1000
        );
    }
    for m in members {
        match m.p.scenario {
            Scenario::AlwaysDeclined => {
                stack
                    .sim_post(
                        "/__sim/decline",
                        &json!({"customer_uid": m.customer_uid, "reason": "잔액부족"}),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/decline: every charge of {} fails (잔액부족)",
                    m.p.label,
                    shown(&m.customer_uid)
                );
            }
            Scenario::DeclinedOnce => {
                stack
                    .sim_post(
                        "/__sim/faults",
                        &json!({"kind": "decline", "reason": "한도초과", "customer_uid": m.customer_uid, "times": 1}),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/faults decline ×1: the next charge fails (한도초과), the retry pays",
                    m.p.label
                );
            }
            Scenario::TimeoutAfterCharge => {
                stack
                    .sim_post(
                        "/__sim/faults",
                        &json!([
                            {"kind": "hang_after", "secs": 3, "path_prefix": "@charge", "customer_uid": m.customer_uid, "times": 1},
                            {"kind": "http500", "path_prefix": "@lookup", "times": 1},
                        ]),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/faults hang_after 3s on the charge (the charge is taken, the 1 s client timeout fires)",
                    m.p.label
                );
                println!(
                    "  {:<6}   + http500 ×1 on the payment lookup, so the run cannot settle it at once",
                    ""
                );
            }
            Scenario::NewCardAfterDecline => {
                stack
                    .sim_post(
                        "/__sim/decline",
                        &json!({"customer_uid": m.customer_uid, "reason": LOST_CARD}),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/decline: every charge of {} fails ({LOST_CARD}: a hard decline); a new card will follow",
                    m.p.label,
                    shown(&m.customer_uid)
                );
            }
            Scenario::PlanChange => {
                let (amount, name) = ERIN_NEW_PLAN;
                let (status, body, _) = stack
                    .api(
                        "POST",
                        &format!("/subscriptions/{}/plan", m.id),
                        // erin asked for the upgrade in the app: an increase
                        // needs the customer's own request as consent (decision 69).
                        Some(json!({"amount": amount, "name": name,
                                    "consent": {"channel": "app", "reference": format!("upgrade-{}", m.id)}})),
                        Some(&format!("plan-{}", m.id)),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /subscriptions/{}/plan {} KRW {name} with her upgrade request as consent → {status} (plan now {} KRW; applies from the next charge)",
                    m.p.label,
                    m.id,
                    won(amount),
                    won(body["plan"]["amount"].as_i64().unwrap_or_default())
                );
                checks.check(
                    status == 200 && body["plan"]["amount"] == json!(amount),
                    format!("{}: plan change answered {status}: {body}", m.p.label),
                );
            }
            Scenario::CancelAtPeriodEnd => {
                let (status, body, _) = stack
                    .api(
                        "POST",
                        &format!("/subscriptions/{}/cancel", m.id),
                        Some(json!({"at": "period_end", "reason": "customer asked in the app"})),
                        None,
                    )
                    .await?;
                println!(
                    "  {:<6} POST /subscriptions/{}/cancel at period_end → {status} (cancel_at_period_end {}, paid through {})",
                    m.p.label,
                    m.id,
                    body["subscription"]["cancel_at_period_end"],
                    body["subscription"]["paid_through"].as_str().unwrap_or("—")
                );
                checks.check(
                    status == 200 && body["subscription"]["cancel_at_period_end"] == json!(true),
                    format!(
                        "{}: cancel at period end answered {status}: {body}",
                        m.p.label
                    ),
                );
            }
            Scenario::MidTermCancel => mid_term_cancel(stack, checks, m).await?,
            Scenario::TrialConsented => {
                let evidence = json!({"evidence": {"channel": "web", "reference": format!("consent-{}", m.id)}});
                let (status, body, _) = stack
                    .api(
                        "POST",
                        &format!("/subscriptions/{}/consent", m.id),
                        Some(evidence),
                        Some(&format!("consent-{}", m.id)),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /subscriptions/{}/consent → {status} (trial ends {}; consent {})",
                    m.p.label,
                    m.id,
                    body["trial"]["ends_at"].as_str().unwrap_or("—"),
                    body["trial"]["consent"]["reference"]
                        .as_str()
                        .unwrap_or("none")
                );
                checks.check(
                    status == 200 && body["trial"]["consent"].is_object(),
                    format!(
                        "{}: the trial's consent answered {status}: {body}",
                        m.p.label
                    ),
                );
            }
            Scenario::TrialLapses => println!(
                "  {:<6} gives no consent: the trial must end uncharged",
                m.p.label
            ),
            Scenario::PriceIncreaseConsented | Scenario::PriceIncreaseDeclined => {
                let (status, body, _) = stack
                    .api(
                        "POST",
                        &format!("/subscriptions/{}/price-change", m.id),
                        Some(json!({"plan_id": PLUS_PLAN.0})),
                        Some(&format!("price-{}", m.id)),
                    )
                    .await?;
                let change = &body["price_change"];
                println!(
                    "  {:<6} the merchant  POST /subscriptions/{}/price-change {} → {status} ({} → {} KRW from {}; {}, consent asked {})",
                    m.p.label,
                    m.id,
                    PLUS_PLAN.0,
                    won(change["previous_amount"].as_i64().unwrap_or_default()),
                    won(change["plan"]["amount"].as_i64().unwrap_or_default()),
                    change["effective_period"].as_str().unwrap_or("?"),
                    change["state"].as_str().unwrap_or("?"),
                    change["consent_requested_at"].as_str().unwrap_or("?"),
                );
                checks.check(
                    status == 200 && change["state"] == "pending_consent",
                    format!(
                        "{}: the price increase answered {status}: {body}",
                        m.p.label
                    ),
                );
            }
            Scenario::Pauses => {
                // Until ten days into the second period: the first is skipped.
                let s = stack.sub(&m.id).await?;
                let resumes_at =
                    s.anchor.period_start(2) + chrono::Duration::days(PAUSE_RESUMES_AFTER_DAYS);
                let (status, body, _) = stack
                    .api(
                        "POST",
                        &format!("/subscriptions/{}/pause", m.id),
                        Some(json!({"resumes_at": resumes_at.to_rfc3339()})),
                        Some(&format!("pause-{}", m.id)),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /subscriptions/{}/pause until {} → {status} ({}, paid through {}: {} will be skipped, the rest of {} charged from the resume)",
                    m.p.label,
                    m.id,
                    resumes_at
                        .with_timezone(&shared::billing::BILLING_TZ)
                        .date_naive(),
                    body["status"].as_str().unwrap_or("?"),
                    body["paid_through"].as_str().unwrap_or("?"),
                    s.anchor.period_id(1),
                    s.anchor.period_id(2),
                );
                checks.check(
                    status == 200 && body["status"] == "paused",
                    format!("{}: the pause answered {status}: {body}", m.p.label),
                );
            }
            Scenario::Yearly => {
                let s = stack.sub(&m.id).await?;
                println!(
                    "  {:<6} on {} ({} KRW a year): next charge {}",
                    m.p.label,
                    YEARLY_PLAN.0,
                    won(s.plan.amount),
                    s.next_charge_at
                        .with_timezone(&shared::billing::BILLING_TZ)
                        .date_naive()
                );
            }
            Scenario::BillingDay => {
                let s = stack.sub(&m.id).await?;
                println!(
                    "  {:<6} on {} (day {}): anchored {}, next charge {}",
                    m.p.label,
                    BILLING_DAY_PLAN.0,
                    BILLING_DAY_PLAN.3,
                    s.anchor.period_date(0),
                    s.next_charge_at
                        .with_timezone(&shared::billing::BILLING_TZ)
                        .date_naive()
                );
            }
            Scenario::Coupon => {
                let s = stack.sub(&m.id).await?;
                let (status, coupon, _) = stack
                    .api("GET", &format!("/coupons/{}", LAUNCH_COUPON.0), None, None)
                    .await?;
                let d = s.discount.as_ref();
                println!(
                    "  {:<6} signed up with coupon {} → periods {} to {} at {} KRW (GET /coupons/{} → {status}, redeemed {})",
                    m.p.label,
                    LAUNCH_COUPON.0,
                    d.map_or("?".into(), |d| d.from.to_string()),
                    d.and_then(|d| d.until.as_ref())
                        .map_or("?".into(), |u| format!("before {u}")),
                    won(s.period_amount()),
                    LAUNCH_COUPON.0,
                    coupon["redeemed"]
                );
                checks.check(
                    status == 200 && coupon["redeemed"].as_i64().is_some_and(|n| n >= 1),
                    format!("{}: GET /coupons answered {status}: {coupon}", m.p.label),
                );
            }
            Scenario::Pays | Scenario::ClosesWindow => {}
        }
    }

    Ok(Webhooks {
        on: webhooks_on,
        signup_paid,
    })
}

/// The merchant shows the cancellation quote and the customer takes it: a
/// cancel now with the quoted refund.
async fn mid_term_cancel(stack: &Stack, checks: &mut Checks, m: &Member) -> Result<()> {
    let quote_path = format!("/subscriptions/{}/cancellation-quote", m.id);
    let (status, quote, _) = stack.api("GET", &quote_path, None, None).await?;
    println!(
        "  {:<6} GET {quote_path} → {status}: {} of {} days used, {} → {} KRW back ({})",
        m.p.label,
        quote["days_used"],
        quote["days_total"],
        quote["rule"].as_str().unwrap_or("?"),
        won(quote["refund_amount"].as_i64().unwrap_or_default()),
        quote["period_last_day"].as_str().unwrap_or("?"),
    );
    let body = json!({"at": "now", "reason": "customer cancelled in the app", "refund": "quote", "quote_id": quote["quote_id"]});
    let (status, answer, _) = stack
        .api(
            "POST",
            &format!("/subscriptions/{}/cancel", m.id),
            Some(body),
            Some(&format!("midterm-{}", m.id)),
        )
        .await?;
    println!(
        "  {:<6} POST /subscriptions/{}/cancel now with the quote → {status} ({}, refund {} {} KRW)",
        m.p.label,
        m.id,
        answer["subscription"]["status"].as_str().unwrap_or("?"),
        answer["refund"]["state"].as_str().unwrap_or("?"),
        won(answer["refund"]["amount"].as_i64().unwrap_or_default()),
    );
    // A refund whose answer was lost (a fault the story left on the
    // simulator) waits in the review queue; the runbook resumes it with
    // its own key (decision 67), and the checksum keeps it to one refund.
    let mut state = answer["refund"]["state"].as_str().unwrap_or("?").to_owned();
    if state == "unclear" {
        let (queued, list, _) = stack
            .api("GET", "/charges/needs-review", None, None)
            .await?;
        let waiting = list["refunds"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["idempotency_key"] == answer["refund"]["refund_key"])
        });
        let resume =
            json!({"amount": answer["refund"]["amount"], "reason": answer["refund"]["reason"]});
        let key = answer["refund"]["refund_key"].as_str().unwrap_or_default();
        let (again, charge, _) = stack
            .api(
                "POST",
                &format!(
                    "/charges/{}/refund",
                    answer["refund"]["merchant_uid"]
                        .as_str()
                        .unwrap_or_default()
                ),
                Some(resume),
                Some(key),
            )
            .await?;
        println!(
            "  {:<6} the refund's answer was lost: in the review queue ({queued}, listed {waiting}); POST /charges/…/refund with its key {key} → {again} (refunded {} KRW)",
            m.p.label,
            won(charge["refunded"].as_i64().unwrap_or_default())
        );
        checks.check(
            waiting && again == 200,
            format!(
                "{}: the unclear refund should be queued and resumed by its key: {again} {charge}",
                m.p.label
            ),
        );
        if again == 200 && charge["refunded"] == answer["refund"]["amount"] {
            state = "done".into();
        }
    }
    checks.check(
        status == 200
            && answer["subscription"]["status"] == "cancelled"
            && state == "done"
            && answer["refund"]["amount"] == quote["refund_amount"]
            && quote["refund_amount"].as_i64().is_some_and(|a| a > 0),
        format!(
            "{}: a mid-term cancel with its quote answered {status}: {answer}",
            m.p.label
        ),
    );
    Ok(())
}
