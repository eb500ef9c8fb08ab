//! Charging one subscription, on the in-memory ledger and a scripted
//! gateway: what the engine asks of the PG and what it records, for each
//! kind of answer. (The whole run, on both ledgers and against the HTTP
//! simulator, is in the functions' tests and the simulation.)

use chrono::{Duration, Utc};

use super::{BillingRun, Outcome, charge_one};
use crate::billing::{
    Anchor, AttemptState, ChargeAttempt, PaymentRecord, RecordStatus, Subscription,
    SubscriptionStatus,
};
use crate::gateway::{Ambiguity, AmbiguityKind, ChargeOutcome};
use crate::ledger::Ledger;
use crate::ledger::memory::InMemoryLedger;
use crate::testing::{self, Call, ScriptedGateway};

type TestEngine = crate::engine::Engine<InMemoryLedger, ScriptedGateway>;

/// A subscription due an hour ago.
fn due() -> Subscription {
    let anchor = Anchor::from_instant(Utc::now() - Duration::hours(1));
    testing::subscription("sub0charging", anchor)
}

/// The engine over `gateway` with `sub` stored, and a run at now.
async fn engine_with(sub: &Subscription, gateway: ScriptedGateway) -> (TestEngine, BillingRun) {
    let engine = testing::engine(gateway);
    testing::store_subscription(&engine.ledger, sub).await;
    let run = BillingRun {
        billing_time: engine.clock.now(),
        run_id: "unit".into(),
    };
    (engine, run)
}

fn lost() -> ChargeOutcome {
    ChargeOutcome::Ambiguous(Ambiguity {
        kind: AmbiguityKind::Timeout,
        http_status: None,
        detail: "no answer in time".into(),
    })
}

/// The PG's record of `attempt` paid in full with `sub`'s key.
fn paid_record(attempt: &ChargeAttempt, sub: &Subscription) -> PaymentRecord {
    let at = Some(Utc::now());
    testing::record(
        attempt,
        RecordStatus::Paid,
        sub.plan.amount,
        at,
        &sub.customer_uid,
    )
}

/// The PG's record of `attempt` declined.
fn declined_record(attempt: &ChargeAttempt, sub: &Subscription) -> PaymentRecord {
    testing::record(
        attempt,
        RecordStatus::Failed,
        sub.plan.amount,
        None,
        &sub.customer_uid,
    )
}

async fn stored(engine: &TestEngine, sub: &Subscription) -> Subscription {
    match engine.ledger.get_subscription(&sub.id).await {
        Ok(Some(s)) => s,
        other => panic!("{} is not stored: {other:?}", sub.id),
    }
}

#[tokio::test]
async fn a_paid_charge_is_sent_once_under_the_attempts_merchant_uid_and_moves_the_period() {
    let sub = due();
    let expected = testing::attempt(&sub, AttemptState::Paid);
    let paid = paid_record(&expected, &sub);
    let gateway = ScriptedGateway::new().charge_answers(ChargeOutcome::Paid(paid));
    let (engine, run) = engine_with(&sub, gateway).await;

    let outcome = charge_one(&engine, &sub.id, &run).await;

    assert!(
        matches!(outcome, Ok(Outcome::Charged { .. })),
        "{outcome:?}"
    );
    let sent = engine.gateway.charges();
    assert_eq!(sent.len(), 1, "{:?}", engine.gateway.calls());
    assert_eq!(sent[0].merchant_uid, expected.merchant_uid);
    assert_eq!(sent[0].amount, sub.plan.amount);
    let after = stored(&engine, &sub).await;
    assert_eq!(after.period_index, sub.period_index + 1);
    assert_eq!(after.paid_through, Some(sub.current_period()));
    assert_eq!(engine.gateway.unused(), 0);
}

#[tokio::test]
async fn a_decline_records_the_attempt_failed_and_schedules_the_retry() {
    let sub = due();
    let mut declined = declined_record(&testing::attempt(&sub, AttemptState::Failed), &sub);
    declined.fail_reason = Some("잔액부족".into());
    // A decline is final when the PG's record of the merchant_uid agrees.
    let gateway = ScriptedGateway::new()
        .charge_answers(ChargeOutcome::Declined(declined.clone()))
        .record_answers(Ok(declined.clone()));
    let (engine, run) = engine_with(&sub, gateway).await;

    let outcome = charge_one(&engine, &sub.id, &run).await;

    assert!(
        matches!(outcome, Ok(Outcome::Declined { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        engine.gateway.calls()[1..],
        [Call::FindPayment(declined.merchant_uid.clone())],
        "the decline is confirmed by a lookup"
    );
    let after = stored(&engine, &sub).await;
    assert_eq!(after.status, SubscriptionStatus::PastDue);
    assert_eq!(
        after.attempt,
        sub.attempt + 1,
        "the retry is the next attempt"
    );
    assert!(after.next_charge_at > run.billing_time, "{after:?}");
    let attempts = engine.ledger.list_attempts(&sub.id).await;
    let states: Vec<AttemptState> = attempts
        .unwrap_or_default()
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, vec![AttemptState::Failed]);
}

#[tokio::test]
async fn a_decline_the_pgs_record_contradicts_is_recorded_paid() {
    // The same request reached the PG twice (a retried connection): one copy
    // was declined, the other paid. The lookup finds the paid one.
    let sub = due();
    let attempt = testing::attempt(&sub, AttemptState::Paid);
    let declined = declined_record(&attempt, &sub);
    let paid = paid_record(&attempt, &sub);
    let gateway = ScriptedGateway::new()
        .charge_answers(ChargeOutcome::Declined(declined))
        .record_answers(Ok(paid));
    let (engine, run) = engine_with(&sub, gateway).await;

    let outcome = charge_one(&engine, &sub.id, &run).await;

    assert!(
        matches!(
            outcome,
            Ok(Outcome::Charged { .. } | Outcome::Reconciled { .. })
        ),
        "{outcome:?}"
    );
    let after = stored(&engine, &sub).await;
    assert_eq!(after.paid_through, Some(sub.current_period()));
    assert_eq!(after.status, SubscriptionStatus::Active);
}

#[tokio::test]
async fn a_lost_answer_is_settled_from_the_pgs_record_at_once() {
    let sub = due();
    let attempt = testing::attempt(&sub, AttemptState::Paid);
    let paid_at_pg = paid_record(&attempt, &sub);
    let gateway = ScriptedGateway::new()
        .charge_answers(lost())
        .record_answers(Ok(paid_at_pg));
    let (engine, run) = engine_with(&sub, gateway).await;

    let outcome = charge_one(&engine, &sub.id, &run).await;

    assert!(
        matches!(outcome, Ok(Outcome::Reconciled { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        engine.gateway.calls()[1..],
        [Call::FindPayment(attempt.merchant_uid.clone())],
        "looked up by its merchant_uid right after the lost answer"
    );
    assert_eq!(
        stored(&engine, &sub).await.paid_through,
        Some(sub.current_period())
    );
}

#[tokio::test]
async fn a_lost_answer_that_cannot_be_looked_up_is_never_sent_again_while_the_pg_has_it() {
    let sub = due();
    let attempt = testing::attempt(&sub, AttemptState::Paid);
    let paid_at_pg = paid_record(&attempt, &sub);
    let down = crate::gateway::GatewayError::Ambiguous(Ambiguity {
        kind: AmbiguityKind::ServerError,
        http_status: Some(500),
        detail: "lookup failed".into(),
    });
    // The answer is lost and the lookup right after fails; the next run's
    // lookup finds the payment.
    let gateway = ScriptedGateway::new()
        .charge_answers(lost())
        .record_answers(Err(down))
        .record_answers(Ok(paid_at_pg));
    let (engine, run) = engine_with(&sub, gateway).await;

    let first = charge_one(&engine, &sub.id, &run).await;
    let left = engine
        .ledger
        .list_attempts(&sub.id)
        .await
        .unwrap_or_default();
    engine
        .clock
        .advance(engine.settings.lease() + engine.settings.quiet() + Duration::seconds(2));
    let next_run = BillingRun {
        billing_time: engine.clock.now(),
        run_id: "unit-2".into(),
    };
    let second = charge_one(&engine, &sub.id, &next_run).await;

    assert!(matches!(first, Ok(Outcome::Ambiguous { .. })), "{first:?}");
    assert!(
        left.iter().all(|a| a.state.is_open()),
        "left open for the next run: {left:?}"
    );
    assert!(
        matches!(second, Ok(Outcome::Reconciled { .. })),
        "{second:?}"
    );
    assert_eq!(
        engine.gateway.charges().len(),
        1,
        "never sent twice: {:?}",
        engine.gateway.calls()
    );
    assert_eq!(
        stored(&engine, &sub).await.paid_through,
        Some(sub.current_period())
    );
    assert_eq!(engine.gateway.unused(), 0);
}

fn discounted(sub: &Subscription, off: crate::billing::coupons::Off) -> Subscription {
    use crate::billing::coupons::{CouponDuration, CouponId, Discount};
    let mut s = sub.clone();
    s.discount = Some(Discount {
        coupon: CouponId::parse("launch").unwrap_or_else(|| panic!("id")),
        off,
        duration: CouponDuration::Once,
        from: s.current_period(),
        until: Some(s.anchor.period_id(s.period_index + 1)),
        redeemed_at: s.created_at,
        end_disclosed: true,
    });
    s
}

/// Decision 78: the claim charges the price after the coupon covering the
/// period, and fixes it on the attempt.
#[tokio::test]
async fn a_period_a_coupon_covers_is_charged_its_discounted_amount() {
    let sub = discounted(&due(), crate::billing::coupons::Off::Amount(3000));
    let expected = testing::attempt(&sub, AttemptState::Paid);
    let mut paid = paid_record(&expected, &sub);
    paid.amount = 6900;
    let gateway = ScriptedGateway::new().charge_answers(ChargeOutcome::Paid(paid));
    let (engine, run) = engine_with(&sub, gateway).await;

    let outcome = charge_one(&engine, &sub.id, &run).await;

    assert!(
        matches!(outcome, Ok(Outcome::Charged { .. })),
        "{outcome:?}"
    );
    let sent = engine.gateway.charges();
    assert_eq!(sent.iter().map(|c| c.amount).collect::<Vec<_>>(), [6900]);
    let attempts = engine.ledger.list_attempts(&sub.id).await;
    let amounts: Vec<(i64, AttemptState)> = attempts
        .unwrap_or_default()
        .iter()
        .map(|a| (a.amount, a.state))
        .collect();
    assert_eq!(amounts, [(6900, AttemptState::Paid)]);
}

/// Decision 78: a period a coupon leaves nothing to pay for is recorded
/// as paid at 0 KRW; nothing goes to the PG, and the next period is the
/// plan's price again.
#[tokio::test]
async fn a_period_a_coupon_leaves_nothing_to_pay_is_recorded_and_never_sent() {
    let sub = discounted(&due(), crate::billing::coupons::Off::Percent(100));
    let (engine, run) = engine_with(&sub, ScriptedGateway::new()).await;

    let outcome = charge_one(&engine, &sub.id, &run).await;

    assert!(matches!(outcome, Ok(Outcome::Free { .. })), "{outcome:?}");
    assert_eq!(engine.gateway.calls(), [], "nothing is sent to the PG");
    let after = stored(&engine, &sub).await;
    assert_eq!(after.period_index, sub.period_index + 1);
    assert_eq!(after.paid_through, Some(sub.current_period()));
    assert_eq!(after.period_amount(), sub.plan.amount);
    let attempts = engine
        .ledger
        .list_attempts(&sub.id)
        .await
        .unwrap_or_default();
    let a = &attempts[0];
    assert_eq!(
        (a.amount, a.state, a.imp_uid.as_deref(), a.paid_at.is_some()),
        (0, AttemptState::Paid, None, true)
    );
}
