//! The verdict: each customer's end state checked against their scenario.

use shared::billing::{AttemptState, ChargeAttempt, Subscription, SubscriptionStatus};

use super::Story;
use crate::Result;
use crate::people::*;
use crate::stack::*;

use super::books::Books;
use super::runs::Runs;

pub(crate) async fn check(story: &mut Story<'_>, books: &Books<'_>, runs: &Runs) -> Result<()> {
    let Story {
        args,
        stack,
        checks,
        ..
    } = story;
    let stack: &Stack = stack;
    let (timeout_seen, settled_by, new_cards) =
        (runs.timeout_seen, runs.settled_by, &runs.new_cards);
    let finals = &books.finals;
    // The story, checked.
    let last_period = |s: &Subscription| s.anchor.period_id(args.months);
    for (m, s, attempts) in finals {
        let paid = attempts
            .iter()
            .filter(|a| a.state == AttemptState::Paid)
            .count();
        let first = s.anchor.period_id(1);
        let of_first: Vec<&ChargeAttempt> = attempts.iter().filter(|a| a.period == first).collect();
        let states = |v: &[&ChargeAttempt]| {
            v.iter()
                .map(|a| a.state.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        if m.p.scenario == Scenario::Pays {
            // A mixed-tax plan: each charge sent its tax-free part, and the
            // PG's receipt link is kept (decision 73, issue 24 §2).
            let paid_ones: Vec<&ChargeAttempt> = attempts
                .iter()
                .filter(|a| a.state == AttemptState::Paid)
                .collect();
            if let Some(a) = paid_ones.first() {
                let t = a.tax();
                println!(
                    "  {:<6} each charge: supply {} + VAT {} + tax-free {} = {} KRW ({}); receipt {}",
                    m.p.label,
                    won(t.supply),
                    won(t.vat),
                    won(t.tax_free),
                    won(a.amount),
                    if a.tax_reported() {
                        "as the PG reported it"
                    } else {
                        "computed: V1 reports none"
                    },
                    a.receipt_url.as_deref().unwrap_or("none")
                );
            }
            checks.check(
                !paid_ones.is_empty()
                    && paid_ones.iter().all(|a| {
                        a.tax_free == TAX_FREE
                            && a.tax().total() == a.amount
                            && a.receipt_url.is_some()
                    }),
                format!(
                    "{}: expected every charge with {TAX_FREE} KRW tax-free and a receipt link (got {:?})",
                    m.p.label,
                    paid_ones
                        .iter()
                        .map(|a| (a.tax_free, a.receipt_url.is_some()))
                        .collect::<Vec<_>>()
                ),
            );
        }
        if m.p.scenario == Scenario::Pays {
            // An account payment (CHAI's trans, V1) gets a cash receipt, worked
            // by the run after its charge (decision 74); a card (the V2
            // story's keys) gets none: its slip is the receipt.
            let with_receipt: Vec<&ChargeAttempt> = attempts
                .iter()
                .filter(|a| a.state == AttemptState::Paid && a.cash_receipt.is_some())
                .collect();
            let settled: Vec<&ChargeAttempt> = with_receipt
                .iter()
                .copied()
                .filter(|a| {
                    a.cash_receipt
                        .as_ref()
                        .is_some_and(|r| r.state == shared::billing::ReceiptState::Settled)
                })
                .collect();
            if let Some(r) = settled
                .first()
                .and_then(|a| a.cash_receipt.as_ref().map(|r| (a, r)))
            {
                let (a, r) = r;
                println!(
                    "  {:<6} cash receipt of {}: {} to {}, {} issuance(s), {} cancel(s), live: {}",
                    m.p.label,
                    a.period,
                    r.holder.kind.as_str(),
                    r.holder.identifier.masked(),
                    r.issues,
                    r.cancels,
                    r.live
                        .as_ref()
                        .map(|l| format!("{} KRW, approval {}", won(l.amount), l.issue_number))
                        .unwrap_or_else(|| "none (refunded in full)".into())
                );
            }
            let right = |a: &&ChargeAttempt| {
                let left = a.amount - a.refunded;
                a.cash_receipt.as_ref().is_some_and(|r| {
                    r.live.as_ref().map(|l| l.amount) == (left > 0).then_some(left)
                })
            };
            checks.check(
                with_receipt.is_empty() || (!settled.is_empty() && settled.iter().all(right)),
                format!(
                    "{}: expected the account payments' cash receipts issued for what is left of each (got {:?})",
                    m.p.label,
                    with_receipt
                        .iter()
                        .map(|a| (
                            a.amount - a.refunded,
                            a.cash_receipt.as_ref().map(|r| (r.state, r.live.as_ref().map(|l| l.amount)))
                        ))
                        .collect::<Vec<_>>()
                ),
            );
        }
        match m.p.scenario {
            Scenario::Pays => checks.check(
                s.status == SubscriptionStatus::Active
                    && s.paid_through.as_ref() == Some(&last_period(s))
                    && paid == args.months as usize + 1
                    && attempts.len() == paid,
                format!(
                    "{}: expected active, paid through {}, {} paid attempts only (got {}, {:?}, {} attempts)",
                    m.p.label,
                    last_period(s),
                    args.months + 1,
                    s.status.as_str(),
                    s.paid_through.as_ref().map(|p| p.as_str().to_owned()),
                    attempts.len()
                ),
            ),
            Scenario::AlwaysDeclined => checks.check(
                s.status == SubscriptionStatus::Suspended
                    && s.paid_through.as_ref() == Some(&s.anchor.period_id(0))
                    && states(&of_first) == "failed,failed,failed,failed",
                format!(
                    "{}: expected suspended after 4 declines of {first} (got {}, {first}: {})",
                    m.p.label,
                    s.status.as_str(),
                    states(&of_first)
                ),
            ),
            Scenario::DeclinedOnce => checks.check(
                s.status == SubscriptionStatus::Active
                    && s.paid_through.as_ref() == Some(&last_period(s))
                    && states(&of_first) == "failed,paid",
                format!(
                    "{}: expected {first} declined then paid on the retry, active to the end (got {}, {first}: {})",
                    m.p.label,
                    s.status.as_str(),
                    states(&of_first)
                ),
            ),
            Scenario::TimeoutAfterCharge => {
                let muid = of_first
                    .first()
                    .map(|a| a.merchant_uid.clone())
                    .unwrap_or_default();
                let at_imp = books.payments_of(&muid);
                checks.check(
                    s.status == SubscriptionStatus::Active
                        && s.paid_through.as_ref() == Some(&last_period(s))
                        && states(&of_first) == "paid"
                        && at_imp == 1,
                    format!(
                        "{}: expected {muid} paid exactly once at i'mport and in the table (got {}, {first}: {}, ledger entries {at_imp})",
                        m.p.label,
                        s.status.as_str(),
                        states(&of_first)
                    ),
                );
                checks.check(
                    timeout_seen,
                    format!("{}: the timeout after charging did not happen (fault not hit?)", m.p.label),
                );
                let by = match settled_by {
                    Some(by) => by,
                    // Paid without a run settling it: the notification got there first.
                    None if states(&of_first) == "paid" => "payment-webhook (the notification came first)",
                    None => "nobody (still open)",
                };
                println!(
                    "  {}'s timed-out charge {muid}: {at_imp} payment at i'mport, settled by {by}",
                    m.p.label
                );
            }
            Scenario::PlanChange => {
                let amounts: Vec<i64> = attempts.iter().map(|a| a.amount).collect();
                let expected: Vec<i64> = std::iter::once(m.p.amount)
                    .chain(std::iter::repeat_n(ERIN_NEW_PLAN.0, args.months as usize))
                    .collect();
                checks.check(
                    s.status == SubscriptionStatus::Active
                        && s.paid_through.as_ref() == Some(&last_period(s))
                        && paid == attempts.len()
                        && amounts == expected,
                    format!(
                        "{}: expected the sign-up at {} KRW and every later period at {} KRW (got {}, amounts {amounts:?})",
                        m.p.label,
                        m.p.amount,
                        ERIN_NEW_PLAN.0,
                        s.status.as_str()
                    ),
                );
            }
            Scenario::CancelAtPeriodEnd => checks.check(
                s.status == SubscriptionStatus::Cancelled
                    && s.paid_through.as_ref() == Some(&s.anchor.period_id(0))
                    && attempts.len() == 1,
                format!(
                    "{}: expected cancelled when {first} began, never charged for it (got {}, {} attempts)",
                    m.p.label,
                    s.status.as_str(),
                    attempts.len()
                ),
            ),
            Scenario::NewCardAfterDecline => {
                let new_key = new_cards.get(m.p.label).cloned().unwrap_or_default();
                // Attempts keep a reference to the key they charged, made
                // with the stack's merchant-uid key (scripts/local-stack.sh).
                let refs = shared::billing::UidKey::new(b"local-merchant-uid-key-not-secret")
                    .unwrap_or_else(|| shared::billing::UidKey::derived_from(b"local"));
                // The declined period: the new card came after access had
                // ended, so the calendar re-anchored on its day (`RESUME_POLICY`
                // reanchor) and the period keeps its id and its attempts.
                let declined = attempts
                    .iter()
                    .find(|a| a.state == AttemptState::Failed)
                    .map(|a| a.period.clone())
                    .unwrap_or_else(|| first.clone());
                let first = declined;
                let of_first: Vec<&ChargeAttempt> =
                    attempts.iter().filter(|a| a.period == first).collect();
                let paid_with_new = of_first
                    .iter()
                    .any(|a| a.state == AttemptState::Paid && a.charged(&new_key, &refs));
                let keys = stack.sim_get("/__sim/customers").await?;
                let old_key_kept = keys.as_array().is_some_and(|k| {
                    k.iter()
                        .any(|c| str_of(c, "customer_uid") == m.customer_uid)
                });
                checks.check(
                    s.status == SubscriptionStatus::Active
                        // Charged on from the new anchor, to the story's end.
                        && s.paid_through.as_ref().is_some_and(|p| *p > first)
                        && states(&of_first) == "failed,paid"
                        && paid_with_new
                        && s.customer_uid == new_key
                        && !old_key_kept,
                    format!(
                        "{}: expected {first} declined once as a lost card (no retry), then paid at once with the new card, the old key deleted (got {}, {first}: {}, paid with the new key {paid_with_new}, old key kept {old_key_kept})",
                        m.p.label,
                        s.status.as_str(),
                        states(&of_first)
                    ),
                );
            }
            Scenario::MidTermCancel => {
                let refunded = attempts.first().map(|a| (a.amount, a.refunded));
                checks.check(
                    s.status == SubscriptionStatus::Cancelled
                        && attempts.len() == 1
                        && refunded.is_some_and(|(paid, back)| back > 0 && back < paid),
                    format!(
                        "{}: expected cancelled mid-term with part of the sign-up charge refunded, never charged again (got {}, {} attempts, paid and refunded {refunded:?})",
                        m.p.label,
                        s.status.as_str(),
                        attempts.len()
                    ),
                );
            }
            Scenario::TrialConsented => checks.check(
                s.status == SubscriptionStatus::Active
                    && s.trial.as_ref().is_some_and(|t| t.consent.is_some())
                    && s.paid_through.as_ref() == Some(&last_period(s))
                    && paid == args.months as usize + 1
                    && attempts.len() == paid
                    && attempts
                        .iter()
                        .all(|a| s.trial.as_ref().is_some_and(|t| a.created_at >= t.ends_at)),
                format!(
                    "{}: expected the consented trial converted at its end and paid through {} ({} paid attempts, none before the end; got {}, {:?}, {} attempts)",
                    m.p.label,
                    last_period(s),
                    args.months + 1,
                    s.status.as_str(),
                    s.paid_through.as_ref().map(|p| p.as_str().to_owned()),
                    attempts.len()
                ),
            ),
            Scenario::TrialLapses => checks.check(
                s.status == SubscriptionStatus::Cancelled
                    && attempts.is_empty()
                    && s.cancel_reason.as_deref() == Some(shared::billing::trials::LAPSED),
                format!(
                    "{}: expected the trial without a consent cancelled at its end, never charged (got {}, {} attempts, reason {:?})",
                    m.p.label,
                    s.status.as_str(),
                    attempts.len(),
                    s.cancel_reason
                ),
            ),
            Scenario::PriceIncreaseConsented | Scenario::PriceIncreaseDeclined => {
                price_increase(checks, m, s, attempts, args.months)
            }
            Scenario::Yearly => checks.check(
                s.status == SubscriptionStatus::Active
                    && s.anchor.interval == shared::billing::Interval::Year
                    && s.paid_through.as_ref() == Some(&s.anchor.period_id(0))
                    && paid == 1
                    && attempts.len() == 1
                    && attempts[0].amount == YEARLY_PLAN.2
                    && s.next_charge_at == s.anchor.period_start(1),
                format!(
                    "{}: expected one yearly charge of {} KRW at sign-up and the next a year on (got {}, interval {:?}, {} attempts, next {})",
                    m.p.label,
                    YEARLY_PLAN.2,
                    s.status.as_str(),
                    s.anchor.interval,
                    attempts.len(),
                    s.next_charge_at
                ),
            ),
            Scenario::BillingDay => billing_day(checks, m, s, attempts, args.months),
            Scenario::Pauses => paused_a_month(checks, m, s, attempts, args.months),
            Scenario::Coupon => launch_coupon(checks, m, s, attempts, args.months),
            Scenario::ClosesWindow => {}
        }
    }
    Ok(())
}

/// A consented increase: the old price before the change's period, the new
/// one from it on, the change applied. A declined one: the old price until
/// that period, then cancelled without a charge for it.
fn price_increase(
    checks: &mut Checks,
    m: &Member,
    s: &Subscription,
    attempts: &[ChargeAttempt],
    months: u32,
) {
    use shared::billing::price_changes::{NOT_CONSENTED, Outcome};
    let Some(change) = s.price_change.as_ref() else {
        checks.check(false, format!("{}: the price change is gone", m.p.label));
        return;
    };
    let amounts: Vec<(String, i64, &str)> = attempts
        .iter()
        .map(|a| (a.period.to_string(), a.amount, a.state.as_str()))
        .collect();
    let priced_right = attempts.iter().all(|a| {
        a.amount
            == if a.period < change.effective {
                CATALOGUE_PLAN.2
            } else {
                PLUS_PLAN.2
            }
    });
    let all_paid = attempts.iter().all(|a| a.state == AttemptState::Paid);
    let outcome = change.closed.as_ref().map(|(o, _)| *o);
    if m.p.scenario == Scenario::PriceIncreaseConsented {
        checks.check(
            s.status == SubscriptionStatus::Active
                && change.consent.is_some()
                && outcome == Some(Outcome::Applied)
                && s.plan.amount == PLUS_PLAN.2
                && s.paid_through.as_ref() == Some(&s.anchor.period_id(months))
                && all_paid
                && priced_right
                && attempts.iter().any(|a| a.amount == PLUS_PLAN.2),
            format!(
                "{}: expected {} KRW until {}, {} KRW from it with the consent recorded (got {}, change {outcome:?}, attempts {amounts:?})",
                m.p.label,
                CATALOGUE_PLAN.2,
                change.effective,
                PLUS_PLAN.2,
                s.status.as_str(),
            ),
        );
    } else {
        checks.check(
            s.status == SubscriptionStatus::Cancelled
                && s.cancel_reason.as_deref() == Some(NOT_CONSENTED)
                && change.declined_at.is_some()
                && outcome == Some(Outcome::NotConsented)
                && all_paid
                && !attempts.is_empty()
                && attempts.iter().all(|a| a.period < change.effective && a.amount == CATALOGUE_PLAN.2),
            format!(
                "{}: expected {} KRW until {}, then cancelled without a charge (got {}, reason {:?}, change {outcome:?}, attempts {amounts:?})",
                m.p.label,
                CATALOGUE_PLAN.2,
                change.effective,
                s.status.as_str(),
                s.cancel_reason,
            ),
        );
    }
}

/// oscar, on [`BILLING_DAY_PLAN`]: the sign-up charged the days to the
/// next billing date, ⌊price × days ÷ the billing period's days⌋ (the full
/// price when the sign-up fell on the billing day), and every later period
/// the price, each claimed on the billing day.
fn billing_day(
    checks: &mut Checks,
    m: &Member,
    s: &Subscription,
    attempts: &[ChargeAttempt],
    months: u32,
) {
    use chrono::Datelike;
    let (_, _, price, day) = BILLING_DAY_PLAN;
    let signed_up = s
        .created_at
        .with_timezone(&shared::billing::BILLING_TZ)
        .date_naive();
    // The story's own arithmetic: the billing dates around the sign-up.
    let start = signed_up.with_day(u32::from(day)).unwrap_or(signed_up);
    let start = if start > signed_up {
        start - chrono::Months::new(1)
    } else {
        start
    };
    let next = start + chrono::Months::new(1);
    let first = if start == signed_up {
        price
    } else {
        price * (next - signed_up).num_days() / (next - start).num_days()
    };
    let amounts: Vec<i64> = attempts.iter().map(|a| a.amount).collect();
    let expected: Vec<i64> = std::iter::once(first)
        .chain(std::iter::repeat_n(price, months as usize))
        .collect();
    let on_the_day = attempts.iter().skip(1).all(|a| {
        a.created_at
            .with_timezone(&shared::billing::BILLING_TZ)
            .day()
            == u32::from(day)
    });
    println!(
        "  {:<6} signed up {signed_up}: first charge {} KRW for {} of {} days, then {} KRW on every {}st",
        m.p.label,
        won(first),
        (next - signed_up).num_days(),
        (next - start).num_days(),
        won(price),
        day
    );
    checks.check(
        s.status == SubscriptionStatus::Active
            && s.anchor.period_date(0) == start
            && s.paid_through.as_ref() == Some(&s.anchor.period_id(months))
            && attempts.iter().all(|a| a.state == AttemptState::Paid)
            && amounts == expected
            && on_the_day,
        format!(
            "{}: expected anchored on {start}, charged {expected:?} (later ones on day {day}) (got {}, anchor {}, amounts {amounts:?}, on the day {on_the_day})",
            m.p.label,
            s.status.as_str(),
            s.anchor.period_date(0)
        ),
    );
}

/// pia paused at sign-up until [`PAUSE_RESUMES_AFTER_DAYS`] into her
/// second period: the first never charged, the second charged for the rest
/// of its days from the resume's day, ⌊price × days ÷ period days⌋, every
/// later one in full; the anchor kept.
fn paused_a_month(
    checks: &mut Checks,
    m: &Member,
    s: &Subscription,
    attempts: &[ChargeAttempt],
    months: u32,
) {
    let price = m.p.amount;
    if months < 3 {
        // The story ends before the resume: still paused, charged once.
        checks.check(
            s.status == SubscriptionStatus::Paused && attempts.len() == 1,
            format!(
                "{}: expected still paused with only the sign-up charged (the resume is past --months {months}; got {}, {} attempts)",
                m.p.label,
                s.status.as_str(),
                attempts.len()
            ),
        );
        return;
    }
    let (start, end) = (s.anchor.period_date(2), s.anchor.period_date(3));
    let resumed = start + chrono::Days::new(PAUSE_RESUMES_AFTER_DAYS as u64);
    let rest = price * (end - resumed).num_days() / (end - start).num_days();
    let charged: Vec<(String, i64)> = attempts
        .iter()
        .map(|a| (a.period.as_str().to_owned(), a.amount))
        .collect();
    let mut expected = vec![
        (s.anchor.period_id(0).as_str().to_owned(), price),
        (s.anchor.period_id(2).as_str().to_owned(), rest),
    ];
    expected.extend((3..=months).map(|k| (s.anchor.period_id(k).as_str().to_owned(), price)));
    println!(
        "  {:<6} paused: {} skipped; resumed {resumed}: {} charged {} KRW for {} of {} days",
        m.p.label,
        s.anchor.period_id(1),
        s.anchor.period_id(2),
        won(rest),
        (end - resumed).num_days(),
        (end - start).num_days()
    );
    checks.check(
        s.status == SubscriptionStatus::Active
            && s.pause.is_none()
            && s.anchor.period_date(0)
                == s.created_at
                    .with_timezone(&shared::billing::BILLING_TZ)
                    .date_naive()
            && attempts.iter().all(|a| a.state == AttemptState::Paid)
            && charged == expected
            && s.paid_through.as_ref() == Some(&s.anchor.period_id(months)),
        format!(
            "{}: expected {expected:?}, the anchor kept (got {}, {charged:?}, paid through {:?})",
            m.p.label,
            s.status.as_str(),
            s.paid_through.as_ref().map(|p| p.as_str().to_owned())
        ),
    );
}

/// quinn, signed up with [`LAUNCH_COUPON`]: the coupon's periods charged
/// at the price less its percent (rounded down to the won), every later one
/// at the price, with no price change asked (its end was shown with the
/// sign-up, decision 78).
fn launch_coupon(
    checks: &mut Checks,
    m: &Member,
    s: &Subscription,
    attempts: &[ChargeAttempt],
    months: u32,
) {
    let (id, _, percent, periods) = LAUNCH_COUPON;
    let price = m.p.amount;
    let half = price - price * percent / 100;
    let expected: Vec<i64> = (0..=months)
        .map(|k| if k < periods { half } else { price })
        .collect();
    let amounts: Vec<i64> = attempts.iter().map(|a| a.amount).collect();
    println!(
        "  {:<6} coupon {id}: charged {} (periods {}–{} at {} KRW, then {} KRW; its end shown at sign-up, no consent asked)",
        m.p.label,
        amounts
            .iter()
            .map(|a| won(*a))
            .collect::<Vec<_>>()
            .join(", "),
        s.anchor.period_id(0),
        s.anchor.period_id(periods - 1),
        won(half),
        won(price)
    );
    checks.check(
        s.status == SubscriptionStatus::Active
            && s.discount.as_ref().is_some_and(|d| d.coupon.as_str() == id && d.end_disclosed)
            && s.price_change.is_none()
            && attempts.iter().all(|a| a.state == AttemptState::Paid)
            && amounts == expected,
        format!(
            "{}: expected {expected:?} under coupon {id} and no price change (got {}, {amounts:?}, discount {:?}, change {:?})",
            m.p.label,
            s.status.as_str(),
            s.discount,
            s.price_change
        ),
    );
}
