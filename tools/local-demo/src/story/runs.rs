//! Chapter 4: the daily runs of scheduled-charge at 10:00 KST over the
//! months the story plays, each due subscription's attempt printed after
//! the run; the customer whose card was declined gives a new one.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::Value;
use shared::billing::{AttemptState, BILLING_TZ, ChargeAttempt, Subscription, SubscriptionStatus};
use shared::ledger::Ledger;

use super::Story;
use crate::people::*;
use crate::stack::*;
use crate::{Result, fail};

use super::scenarios::Webhooks;
use super::signups::{new_card, shown};

/// What the runs saw that the verdict checks.
pub(crate) struct Runs {
    /// The charge whose answer was lost happened.
    pub(crate) timeout_seen: bool,
    /// Who settled it.
    pub(crate) settled_by: Option<&'static str>,
    /// New billing keys given through the management API, by persona.
    pub(crate) new_cards: BTreeMap<&'static str, String>,
}

pub(crate) async fn chapter(story: &mut Story<'_>, members: &[Member]) -> Result<Runs> {
    let Story {
        args,
        stack,
        checks,
        ..
    } = story;
    let stack: &Stack = stack;
    let mut subs: BTreeMap<String, Subscription> = BTreeMap::new();
    for m in members {
        subs.insert(m.id.to_string(), stack.sub(&m.id).await?);
    }
    let first_day = Utc::now().with_timezone(&BILLING_TZ).date_naive() + chrono::Days::new(1);
    // The last period's charge day, and at least past the dunning of the first
    // recurring period (declines on its day, +1, +3 and +7 days).
    // (Counted in months whatever a plan's interval: a yearly plan's
    // next charge is past the story.)
    let last_day = subs
        .values()
        .map(|s| s.anchor.every(shared::billing::Interval::Month))
        .map(|a| {
            a.period_date(args.months)
                .max(a.period_date(1) + chrono::Days::new(8))
        })
        .max()
        .ok_or_else(|| fail("nobody signed up"))?;
    stack.step(
        4,
        &format!(
            "scheduled-charge, daily at 10:00 KST from {first_day} to {last_day} (billing clock = the event's scheduled_time)"
        ),
    );
    warm_up_charger(stack).await?;
    let by_id: HashMap<String, &Member> = members.iter().map(|m| (m.id.to_string(), m)).collect();
    let mut day = first_day;
    let mut quiet: Option<(NaiveDate, NaiveDate, u32)> = None;
    let mut runs = 0u32;
    let mut run_errors = 0u32;
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    // How the timed-out charge was settled: by a run's reconciliation or by the webhook.
    let mut timeout_seen = false;
    let mut settled_by: Option<&'static str> = None;
    // New billing keys given through the management API, by persona.
    let mut new_cards: BTreeMap<&'static str, String> = BTreeMap::new();
    while day <= last_day {
        let at = seoul_10am(day);
        // Fresh copies: the webhook may have changed a subscription between runs.
        for (id, s) in subs.iter_mut() {
            if let Some(m) = by_id.get(id) {
                *s = stack.sub(&m.id).await?;
            }
        }
        let due_before: Vec<(Subscription, Option<ChargeAttempt>)> = {
            let mut v = Vec::new();
            // In the order the customers signed up.
            let due = members
                .iter()
                .filter_map(|m| subs.get(m.id.as_str()))
                .filter(|s| s.is_due(at));
            for s in due {
                let open = stack
                    .store
                    .get_attempt(&s.id, &s.current_period(), s.attempt)
                    .await?;
                v.push((s.clone(), open));
            }
            v
        };
        // Renewal notices owed at this run (issue 23 §1), in sign-up order.
        let notices_before: Vec<&Subscription> = members
            .iter()
            .filter_map(|m| subs.get(m.id.as_str()))
            .filter(|s| s.notice_due(at))
            .collect();
        let notices_before: Vec<Subscription> = notices_before.into_iter().cloned().collect();
        // Paused ones the run works at (a period to skip, a resume).
        let paused_before: Vec<Subscription> = members
            .iter()
            .filter_map(|m| subs.get(m.id.as_str()))
            .filter(|s| {
                s.status == SubscriptionStatus::Paused && s.due_at().is_some_and(|d| d <= at)
            })
            .cloned()
            .collect();
        let run = stack.charge_run(at, &format!("local-demo-{day}")).await?;
        runs += 1;
        let active = run.error.is_some()
            || run.count("due") > 0
            || !due_before.is_empty()
            || !notices_before.is_empty()
            || !paused_before.is_empty();
        if !active && !args.verbose {
            quiet = Some(match quiet {
                Some((from, _, n)) => (from, day, n + 1),
                None => (day, day, 1),
            });
            day = day + chrono::Days::new(1);
            continue;
        }
        if let Some((from, to, n)) = quiet.take() {
            println!("  {from} … {to}  {n} daily run(s), nothing due");
        }
        if run.error.is_some() {
            run_errors += 1;
        }
        for key in std::iter::once("due").chain(RUN_COUNTS) {
            *totals.entry(key).or_default() += run.count(key);
        }
        println!(
            "  {}  {}  ({:.1}s)",
            kst(at),
            run.summary(),
            run.took.as_secs_f64()
        );
        for before in &notices_before {
            let m = by_id[before.id.as_str()];
            let after = stack.sub(&before.id).await?;
            let what = match &after.notice {
                Some(n) if n.period == before.current_period() => format!(
                    "notice  {} for {} won at {}",
                    n.kind.as_str(),
                    n.amount,
                    kst(n.charge_at)
                ),
                _ => "notice  not recorded".to_owned(),
            };
            println!("      {:<6} {} {what}", m.p.label, before.current_period());
        }
        for before in &paused_before {
            let m = by_id[before.id.as_str()];
            let after = stack.sub(&before.id).await?;
            // Resumed: the period it resumed in, charged in this run.
            let mut charged = None;
            if after.status != SubscriptionStatus::Paused {
                for k in before.period_index..=after.period_index {
                    let period = after.anchor.period_id(k);
                    if let Some(a) = stack.store.get_attempt(&after.id, &period, 1).await? {
                        charged = Some((k, a));
                        break;
                    }
                }
            }
            let skipped_to = charged.as_ref().map_or(after.period_index, |(k, _)| *k);
            let skipped: Vec<String> = (before.period_index..skipped_to)
                .map(|k| before.anchor.period_id(k).as_str().to_owned())
                .collect();
            let mut what = if skipped.is_empty() {
                String::new()
            } else {
                format!("skipped {} (never charged); ", skipped.join(", "))
            };
            match charged {
                _ if after.status == SubscriptionStatus::Paused => what.push_str("still paused"),
                None => {
                    let _ = write!(what, "resumed ({})", after.status.as_str());
                }
                Some((_, a)) => {
                    let _ = write!(
                        what,
                        "resumed ({}): {} a1 {} {} KRW{}",
                        after.status.as_str(),
                        a.period,
                        a.state.as_str(),
                        won(a.amount),
                        if a.amount < after.plan.amount {
                            " (the rest of the period, prorated)"
                        } else {
                            ""
                        }
                    );
                }
            }
            println!("      {:<6} paused  {what}", m.p.label);
        }
        for (before, open_before) in &due_before {
            let m = by_id[before.id.as_str()];
            let after = stack.sub(&before.id).await?;
            let period = before.current_period();
            let attempt = stack
                .store
                .get_attempt(&before.id, &period, before.attempt)
                .await?;
            let what = match &attempt {
                None if after.cancel_reason.as_deref() == Some(shared::billing::trials::LAPSED) => {
                    "not charged: the trial ended without a consent to convert".to_owned()
                }
                None if after.cancel_reason.as_deref()
                    == Some(shared::billing::price_changes::NOT_CONSENTED) =>
                {
                    "not charged: the price increase was not consented, the subscription ended"
                        .to_owned()
                }
                None if after.status == SubscriptionStatus::Cancelled => {
                    "not charged: the subscription ended (cancelled at period end)".to_owned()
                }
                None => "no attempt recorded".to_owned(),
                Some(a) => {
                    let mut w = format!("{:<8}", a.state.as_str());
                    if let Some(i) = &a.imp_uid {
                        let _ = write!(w, " {i}");
                    }
                    if let Some(r) = a
                        .fail_reason
                        .as_ref()
                        .filter(|_| a.state != AttemptState::Paid)
                    {
                        let _ = write!(w, " ({})", clip(r, 48));
                    }
                    if open_before.as_ref().is_some_and(|o| o.state.is_open()) && !a.state.is_open()
                    {
                        w.push_str(" ← settled from i'mport's record (reconciliation)");
                        if m.p.scenario == Scenario::TimeoutAfterCharge && settled_by.is_none() {
                            settled_by = Some("the next run's reconciliation");
                        }
                    }
                    if a.state == AttemptState::Unknown {
                        w.push_str(" ← answer lost; left open for the next run");
                        if m.p.scenario == Scenario::TimeoutAfterCharge {
                            timeout_seen = true;
                        }
                    }
                    if m.p.scenario == Scenario::TimeoutAfterCharge
                        && run.count("ambiguous") + run.count("reconciled") > 0
                        && a.state == AttemptState::Paid
                        && open_before.is_none()
                    {
                        // The answer was lost; the run looked the merchant_uid up at
                        // once (or the webhook had settled it meanwhile).
                        timeout_seen = true;
                        if settled_by.is_none() {
                            settled_by = Some(
                                "the run's lookup right after the timeout (or the webhook, whichever came first)",
                            );
                            w.push_str(
                                " ← the answer was lost; settled from i'mport's record at once",
                            );
                        }
                    }
                    w
                }
            };
            let next = match after.status {
                SubscriptionStatus::Active
                | SubscriptionStatus::PastDue
                | SubscriptionStatus::Trialing => format!(
                    "→ {} {}, next {}",
                    after.status.as_str(),
                    after.current_period(),
                    kst(after.next_charge_at)
                ),
                other => format!("→ {}", other.as_str()),
            };
            println!(
                "      {:<6} {} a{}  {what}  {next}",
                m.p.label, period, before.attempt
            );
            // The lost card stopped the subscription at once (no retry):
            // the customer gives a new card.
            if m.p.scenario == Scenario::NewCardAfterDecline
                && after.status == SubscriptionStatus::ActionRequired
                && !new_cards.contains_key(m.p.label)
            {
                let (key, landed) = new_card(stack, m).await?;
                let after_card = stack.sub(&m.id).await?;
                println!(
                    "      {:<6} POST /subscriptions/{}/payment-method 201 → window → callback 302 → {}  (key {}… → {}…; {} {})",
                    m.p.label,
                    m.id,
                    short_url(&landed),
                    shown(&m.customer_uid),
                    shown(&key),
                    after_card.status.as_str(),
                    after_card
                        .paid_through
                        .as_ref()
                        .map(|p| format!("paid through {p}"))
                        .unwrap_or_default()
                );
                checks.check(
                    landed
                        .query_pairs()
                        .any(|(k, v)| k == "first_charge" && v == "paid"),
                    format!(
                        "{}: the new card should be charged at once (landed on {})",
                        m.p.label,
                        short_url(&landed)
                    ),
                );
                new_cards.insert(m.p.label, key);
            }
        }
        // The customers the merchant asked for a dearer price answer the
        // consent request once the run has sent it.
        for m in members.iter().filter(|m| m.p.scenario.is_price_increase()) {
            answer_price_change(stack, checks, m, at).await?;
        }
        day = day + chrono::Days::new(1);
    }
    if let Some((from, to, n)) = quiet.take() {
        println!("  {from} … {to}  {n} daily run(s), nothing due");
    }
    println!(
        "  {runs} runs; totals: {}",
        totals
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    checks.check(
        run_errors == 0,
        format!("{run_errors} charge run(s) failed"),
    );

    Ok(Runs {
        timeout_seen,
        settled_by,
        new_cards,
    })
}

/// Consents to (or declines) a price increase whose consent request the run
/// at `at` sent, a couple of hours later on the story's clock.
async fn answer_price_change(
    stack: &Stack,
    checks: &mut Checks,
    m: &Member,
    at: chrono::DateTime<Utc>,
) -> Result<()> {
    let sub = stack.sub(&m.id).await?;
    let Some(change) = sub.price_change.as_ref().filter(|c| {
        c.asked_at.is_some() && c.consent.is_none() && c.declined_at.is_none() && c.is_open()
    }) else {
        return Ok(());
    };
    stack.advance_story_clock(chrono::Duration::hours(2));
    let (path, body) = match m.p.scenario {
        Scenario::PriceIncreaseConsented => (
            "consent",
            Some(
                serde_json::json!({"evidence": {"channel": "app", "reference": format!("price-consent-{}", m.id)}}),
            ),
        ),
        _ => ("decline", None),
    };
    let route = format!("/subscriptions/{}/price-change/{path}", m.id);
    let (status, answer, _) = stack
        .api(
            "POST",
            &route,
            body,
            Some(&format!("price-{path}-{}", m.id)),
        )
        .await?;
    let state = answer["price_change"]["state"].as_str().unwrap_or("?");
    println!(
        "      {:<6} asked at {} to pay {} KRW from {}: POST {route} → {status} ({state})",
        m.p.label,
        kst(at),
        won(change.plan.amount),
        change.effective,
    );
    let expected = if path == "consent" {
        "consented"
    } else {
        "declined"
    };
    checks.check(
        status == 200 && state == expected,
        format!(
            "{}: the price change's {path} answered {status}: {answer}",
            m.p.label
        ),
    );
    Ok(())
}

/// Lets the last notifications land before the table is read.
pub(crate) async fn await_webhooks(stack: &Stack, webhooks: &Webhooks) -> Result<()> {
    if webhooks.on {
        // Let the last notifications land before reading the table.
        let expected = {
            let paid = paid_charges(&stack.ledger().await?);
            webhooks.signup_paid + 2 * paid.saturating_sub(webhooks.signup_paid)
        };
        let t = Instant::now();
        let mut seen = 0;
        while t.elapsed() < Duration::from_secs(20) {
            if let Value::Array(h) = stack.sim_get("/__sim/webhooks").await? {
                seen = h.len();
            }
            if seen >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!(
            "  waited {:.1}s for the last webhooks ({seen} of {expected} delivered)",
            t.elapsed().as_secs_f64()
        );
    }

    Ok(())
}
