//! Chapter 6: the books: subscriptions and attempts from DynamoDB beside
//! the simulator's ledger, every attempt compared with i'mport's payments
//! for its merchant_uid, and double charges counted from the ledger alone.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::Value;
use shared::billing::{AttemptState, ChargeAttempt, MerchantUid, Subscription, SubscriptionStatus};
use shared::ledger::Ledger;

use super::Story;
use crate::Result;
use crate::people::*;
use crate::stack::*;

/// What the books showed, for the verdict and the summary.
pub(crate) struct Books<'m> {
    /// The simulator's ledger (every payment).
    pub(crate) ledger: Vec<Value>,
    /// Each customer with their subscription and attempts at the end.
    pub(crate) finals: Vec<(&'m Member, Subscription, Vec<ChargeAttempt>)>,
    pub(crate) mismatches: Vec<String>,
    pub(crate) doubles_muid: Vec<(String, u32)>,
    pub(crate) doubles_period: Vec<((String, String), u32)>,
}

impl Books<'_> {
    /// The ledger's payments under `merchant_uid`.
    pub(crate) fn payments_of(&self, merchant_uid: &str) -> usize {
        self.ledger
            .iter()
            .filter(|p| str_of(p, "merchant_uid") == merchant_uid)
            .count()
    }
}

pub(crate) async fn chapter<'m>(story: &mut Story<'_>, members: &'m [Member]) -> Result<Books<'m>> {
    let Story { stack, checks, .. } = story;
    let stack: &Stack = stack;
    let by_id: HashMap<String, &Member> = members.iter().map(|m| (m.id.to_string(), m)).collect();
    stack.step(
        6,
        "subscriptions and charges (DynamoDB) beside the simulator's ledger",
    );
    let ledger = stack.ledger().await?;
    let mut by_merchant_uid: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for p in &ledger {
        by_merchant_uid
            .entry(str_of(p, "merchant_uid").to_owned())
            .or_default()
            .push(p);
    }
    let mut finals = Vec::new();
    for m in members {
        let s = stack.sub(&m.id).await?;
        let attempts = stack.store.list_attempts(&m.id).await?;
        finals.push((m, s, attempts));
    }

    println!(
        "  {:<6} {:<12} {:<10} {:>7} {:<11} {:<6} {:<20} {:<12}",
        "user", "subscription", "status", "KRW", "plan", "period", "next charge", "paid through"
    );
    for (m, s, _) in &finals {
        println!(
            "  {:<6} {:<12} {:<10} {:>7} {} {:<6} {:<20} {:<12}",
            m.p.label,
            s.id.as_str(),
            s.status.as_str(),
            won(s.plan.amount),
            pad_display(&s.plan.name, 11),
            s.current_period().as_str(),
            if matches!(
                s.status,
                SubscriptionStatus::Active | SubscriptionStatus::PastDue
            ) {
                kst(s.next_charge_at)
            } else {
                "—".to_owned()
            },
            s.paid_through
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "—".into()),
        );
    }
    println!();
    println!(
        "  {:<34} {:<8} {:<17} │ {:<34} │ reason",
        "merchant_uid", "table", "imp_uid", "simulator ledger (status imp_uid KRW)"
    );
    let mut mismatches: Vec<String> = Vec::new();
    let mut shown: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (m, s, attempts) in &finals {
        println!("  ── {} ({}, {})", m.p.label, s.id, m.p.scenario.describe());
        // The sign-up's issuance, and any new card's (payment-method).
        let mut rows: Vec<(String, Option<&ChargeAttempt>)> =
            vec![(MerchantUid::issuance(&s.id), None)];
        for uid in stack.store.user_items(&s.user_id).await?.registrations {
            if uid != MerchantUid::issuance(&s.id)
                && matches!(MerchantUid::parse(&uid), Some(MerchantUid::Issuance { ref subscription }) if subscription == &s.id)
            {
                rows.push((uid, None));
            }
        }
        rows.extend(attempts.iter().map(|a| (a.merchant_uid.clone(), Some(a))));
        for (muid, a) in rows {
            shown.insert(muid.clone());
            let entries = by_merchant_uid.get(&muid).cloned().unwrap_or_default();
            let ledger_text = if entries.is_empty() {
                "(none)".to_owned()
            } else {
                entries
                    .iter()
                    .map(|p| {
                        let mut t = format!(
                            "{} {} {}",
                            str_of(p, "status"),
                            str_of(p, "imp_uid"),
                            won(i64_of(p, "amount"))
                        );
                        if i64_of(p, "cancel_amount") > 0 {
                            let _ = write!(t, " −{}", won(i64_of(p, "cancel_amount")));
                        }
                        t
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let reason = match a {
                Some(a) if a.refunded > 0 => format!("refunded {} KRW", won(a.refunded)),
                Some(a) => a.fail_reason.clone().unwrap_or_default(),
                None => entries
                    .iter()
                    .filter_map(|p| p.get("fail_reason").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let (state, imp) = match a {
                Some(a) => (
                    a.state.as_str().to_owned(),
                    a.imp_uid.clone().unwrap_or_else(|| "—".into()),
                ),
                None => ("issuance".to_owned(), "—".to_owned()),
            };
            println!(
                "  {:<34} {:<8} {:<17} │ {:<34} │ {}",
                muid, state, imp, ledger_text, reason
            );
            if let Some(a) = a {
                mismatches.extend(compare(a, &entries));
            }
        }
    }
    // Charges i'mport took for our subscriptions that the table does not show.
    for (muid, entries) in &by_merchant_uid {
        if shown.contains(muid) {
            continue;
        }
        let ours = matches!(MerchantUid::parse(muid), Some(MerchantUid::Charge { ref subscription, .. }) if by_id.contains_key(subscription.as_str()));
        if ours && entries.iter().any(|p| ever_paid(p)) {
            mismatches.push(format!("{muid}: paid at i'mport but not in the table"));
        }
    }

    // Double charges, from the ledger alone.
    let (doubles_muid, doubles_period) = double_charges(&ledger);
    let charges = ledger
        .iter()
        .filter(|p| str_of(p, "customer_uid_usage") == "payment")
        .count();
    let charges_paid = paid_charges(&ledger);
    println!();
    println!(
        "  ledger: {} payments ({} billing-key issuances, {} charges: {} paid, {} failed)",
        ledger.len(),
        ledger.len() - charges,
        charges,
        charges_paid,
        charges - charges_paid
    );
    if let Ok(Value::Array(hooks)) = stack.sim_get("/__sim/webhooks").await {
        let bad = hooks
            .iter()
            .filter(|h| {
                !h.get("http_status")
                    .and_then(Value::as_u64)
                    .is_some_and(|c| (200..300).contains(&c))
            })
            .count();
        checks.check(
            bad == 0,
            format!("{bad} webhook deliveries were not answered 2xx by payment-webhook"),
        );
        if !hooks.is_empty() {
            let mut by_status: BTreeMap<String, u32> = BTreeMap::new();
            for h in &hooks {
                let k = match h.get("http_status").and_then(Value::as_u64) {
                    Some(code) => format!("HTTP {code}"),
                    None => "transport error".into(),
                };
                *by_status.entry(k).or_default() += 1;
            }
            println!(
                "  webhooks the simulator sent: {} ({})",
                hooks.len(),
                by_status
                    .iter()
                    .map(|(k, v)| format!("{v}× {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    Ok(Books {
        ledger,
        finals,
        mismatches,
        doubles_muid,
        doubles_period,
    })
}

/// Double charges in the simulator's ledger: `merchant_uid`s that took money
/// more than once, and (subscription, period) pairs paid more than once
/// across their attempts.
#[allow(clippy::type_complexity)]
pub(crate) fn double_charges(
    ledger: &[Value],
) -> (Vec<(String, u32)>, Vec<((String, String), u32)>) {
    let mut per_muid: BTreeMap<String, u32> = BTreeMap::new();
    let mut per_period: BTreeMap<(String, String), u32> = BTreeMap::new();
    for p in ledger.iter().filter(|p| ever_paid(p)) {
        let muid = str_of(p, "merchant_uid");
        *per_muid.entry(muid.to_owned()).or_default() += 1;
        if let Some(MerchantUid::Charge {
            subscription,
            period,
            ..
        }) = MerchantUid::parse(muid)
        {
            *per_period
                .entry((subscription.to_string(), period.to_string()))
                .or_default() += 1;
        }
    }
    (
        per_muid.into_iter().filter(|(_, n)| *n > 1).collect(),
        per_period.into_iter().filter(|(_, n)| *n > 1).collect(),
    )
}

/// Differences between one attempt in the table and i'mport's payments for its merchant_uid.
pub(crate) fn compare(a: &ChargeAttempt, entries: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    let paid: Vec<&&Value> = entries.iter().filter(|p| ever_paid(p)).collect();
    match a.state {
        AttemptState::Paid => match paid.as_slice() {
            [p] => {
                if a.imp_uid.as_deref() != Some(str_of(p, "imp_uid")) {
                    out.push(format!(
                        "{}: table says imp_uid {:?}, i'mport {}",
                        a.merchant_uid,
                        a.imp_uid,
                        str_of(p, "imp_uid")
                    ));
                }
                if i64_of(p, "amount") != a.amount {
                    out.push(format!(
                        "{}: table amount {}, i'mport {}",
                        a.merchant_uid,
                        a.amount,
                        i64_of(p, "amount")
                    ));
                }
            }
            [] => out.push(format!(
                "{}: paid in the table, not at i'mport",
                a.merchant_uid
            )),
            _ => {} // counted as a double charge
        },
        AttemptState::Failed | AttemptState::Rejected => {
            if !paid.is_empty() {
                out.push(format!(
                    "{}: {} in the table but paid at i'mport",
                    a.merchant_uid,
                    a.state.as_str()
                ));
            }
        }
        AttemptState::Claimed | AttemptState::Unknown | AttemptState::NeedsReview => out.push(
            format!("{}: still {} at the end", a.merchant_uid, a.state.as_str()),
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn payment(muid: &str, imp_uid: &str, status: &str, paid_at: i64) -> Value {
        json!({"merchant_uid": muid, "imp_uid": imp_uid, "status": status, "paid_at": paid_at,
               "amount": 9900, "customer_uid_usage": "payment"})
    }

    #[test]
    fn double_charges_are_found_per_merchant_uid_and_per_period() {
        let clean = vec![
            payment("sabcdefghij01202612a1", "imps_1", "failed", 0),
            payment("sabcdefghij01202612a2", "imps_2", "paid", 1),
            payment("sabcdefghij01202701a1", "imps_3", "paid", 2),
        ];
        assert_eq!(double_charges(&clean), (vec![], vec![]));

        let twice = vec![
            payment("sabcdefghij01202612a1", "imps_1", "paid", 1),
            payment("sabcdefghij01202612a1", "imps_2", "paid", 2),
        ];
        let (by_muid, by_period) = double_charges(&twice);
        assert_eq!(by_muid, vec![("sabcdefghij01202612a1".to_owned(), 2)]);
        assert_eq!(by_period.len(), 1);

        // Two attempts of one period both took money (refunded later or not).
        let across = vec![
            payment("sabcdefghij01202612a1", "imps_1", "cancelled", 1),
            payment("sabcdefghij01202612a2", "imps_2", "paid", 2),
        ];
        let (by_muid, by_period) = double_charges(&across);
        assert!(by_muid.is_empty());
        assert_eq!(
            by_period,
            vec![(("abcdefghij01".to_owned(), "202612".to_owned()), 2)]
        );
    }
}
