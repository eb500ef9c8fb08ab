//! Chapter 5: the merchant refunds part of a charge through the
//! management API, and sends the same request again (one refund).

use serde_json::json;
use shared::billing::AttemptState;
use shared::ledger::Ledger;

use super::Story;
use crate::people::*;
use crate::stack::*;
use crate::{Result, fail};

pub(crate) async fn chapter(story: &mut Story<'_>, members: &[Member]) -> Result<()> {
    let Story { stack, checks, .. } = story;
    let stack: &Stack = stack;
    stack.step(5, "the merchant's API: a partial refund, asked twice");
    let alice = members
        .iter()
        .find(|m| m.p.label == "alice")
        .ok_or_else(|| fail("alice did not sign up"))?;
    let last_paid = stack
        .store
        .list_attempts(&alice.id)
        .await?
        .into_iter()
        .rev()
        .find(|a| a.state == AttemptState::Paid)
        .ok_or_else(|| fail("alice has no paid charge"))?;
    let path = format!("/charges/{}/refund", last_paid.merchant_uid);
    let body = json!({"amount": ALICE_REFUND, "reason": "service outage, goodwill credit"});
    let key = format!("refund-{}", last_paid.merchant_uid);
    let (first_status, first, _) = stack
        .api("POST", &path, Some(body.clone()), Some(&key))
        .await?;
    let (again_status, again, replayed) = stack.api("POST", &path, Some(body), Some(&key)).await?;
    let refunded_at_sim = stack
        .ledger()
        .await?
        .iter()
        .filter(|p| str_of(p, "merchant_uid") == last_paid.merchant_uid)
        .map(|p| i64_of(p, "cancel_amount"))
        .sum::<i64>();
    let refunded_in_table = stack
        .store
        .get_attempt(&alice.id, &last_paid.period, last_paid.attempt)
        .await?
        .map(|a| a.refunded)
        .unwrap_or_default();
    println!(
        "  alice  POST {path} {} KRW → {first_status} (refunded {}); the same request again → {again_status}{}",
        won(ALICE_REFUND),
        won(first["refunded"].as_i64().unwrap_or_default()),
        if replayed { ", replayed" } else { "" }
    );
    println!(
        "         refunded at i'mport: {} KRW; in the table: {} KRW",
        won(refunded_at_sim),
        won(refunded_in_table)
    );
    checks.check(
        first_status == 200
            && again_status == 200
            && replayed
            && again == first
            && refunded_at_sim == ALICE_REFUND
            && refunded_in_table == ALICE_REFUND,
        format!(
            "alice: one refund of {ALICE_REFUND} KRW expected (got {first_status}/{again_status}, replayed {replayed}, i'mport {refunded_at_sim}, table {refunded_in_table})"
        ),
    );

    Ok(())
}
