//! The management use cases on the in-memory ledger and a scripted gateway:
//! what they ask of the PG, in which order, and what they store.

use chrono::{Duration, Utc};

use super::{
    Actor, CancelInput, ManageError, NewPlanInput, RefundInput, cancel_quoted, cancellation_quote,
    needs_review,
};
use crate::billing::{
    Anchor, AttemptState, ChargeAttempt, RecordStatus, Subscription, SubscriptionStatus,
};
use crate::charging::{BillingRun, Outcome, charge_one};
use crate::gateway::{
    Ambiguity, AmbiguityKind, ChargeOutcome, GatewayError, Rejection, RejectionKind,
};
use crate::ledger::Ledger;
use crate::ledger::memory::InMemoryLedger;
use crate::testing::{self, Call, ScriptedGateway};

type TestEngine = crate::engine::Engine<InMemoryLedger, ScriptedGateway>;

/// A subscription whose sign-up period the scripted PG has just paid, and
/// the engine; `then` scripts what comes after the charge.
async fn paid(
    then: impl FnOnce(ScriptedGateway, &ChargeAttempt) -> ScriptedGateway,
) -> (TestEngine, Subscription) {
    let sub = testing::subscription(
        "sub0managing",
        Anchor::from_instant(Utc::now() - Duration::hours(1)),
    );
    let attempt = testing::attempt(&sub, AttemptState::Paid);
    let record = testing::record(&attempt, RecordStatus::Paid, 9900, Some(Utc::now()), "cu");
    let gateway = then(
        ScriptedGateway::new().charge_answers(ChargeOutcome::Paid(record)),
        &attempt,
    );
    let engine = testing::engine(gateway);
    testing::store_subscription(&engine.ledger, &sub).await;
    let run = BillingRun {
        billing_time: engine.clock.now(),
        run_id: "unit".into(),
    };
    let charged = charge_one(&engine, &sub.id, &run).await;
    assert!(
        matches!(charged, Ok(Outcome::Charged { .. })),
        "{charged:?}"
    );
    let stored = engine.ledger.get_subscription(&sub.id).await;
    (engine, stored.ok().flatten().unwrap_or(sub))
}

fn quoted(quote_id: &str) -> CancelInput {
    CancelInput {
        at: "now".into(),
        reason: "moving abroad".into(),
        refund: Some("quote".into()),
        quote_id: Some(quote_id.into()),
        unused: None,
    }
}

#[tokio::test]
async fn a_quoted_cancel_refunds_the_quote_first_and_then_cancels() {
    let (engine, sub) = paid(|g, attempt| {
        let mut refunded = testing::record(
            attempt,
            RecordStatus::Cancelled,
            9900,
            Some(Utc::now()),
            "cu",
        );
        refunded.cancelled_amount = 9000;
        g.refund_answers(Ok(refunded)).delete_answers(Ok(()))
    })
    .await;
    let quote = cancellation_quote(&engine, sub.id.as_str(), false).await;
    let quote = quote.unwrap_or_else(|e| panic!("{e}"));
    let done = cancel_quoted(
        &engine,
        sub.id.as_str(),
        quoted(&quote.quote_id),
        "k1",
        &Actor::named("t"),
    )
    .await;
    let done = done.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.subscription.status, "cancelled");
    let calls = engine.gateway.calls();
    let asked: Vec<&str> = calls
        .iter()
        .map(|c| match c {
            Call::Charge(_) => "charge",
            Call::Refund(_) => "refund",
            Call::DeleteBillingKey(_) => "delete key",
            _ => "other",
        })
        .collect();
    assert_eq!(
        asked,
        ["charge", "refund", "delete key"],
        "the refund before the cancel"
    );
    let refund = calls.iter().find_map(|c| match c {
        Call::Refund(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        refund.and_then(|r| r.amount),
        Some(quote.refund_amount),
        "the quoted amount"
    );
    assert_eq!(engine.gateway.unused(), 0);
}

/// Issue 23 §4: a quoted cancel whose refund answer is lost still cancels,
/// and the refund waits in the review queue (never retried blindly) until
/// the same key resumes it and the PG's record shows it done.
#[tokio::test]
async fn a_lost_refund_answer_leaves_the_cancel_standing_and_the_refund_in_review() {
    let (engine, sub) = paid(|g, _| {
        g.refund_answers(Err(GatewayError::Ambiguous(Ambiguity {
            kind: AmbiguityKind::Timeout,
            http_status: None,
            detail: "read timed out".into(),
        })))
        .delete_answers(Ok(()))
    })
    .await;
    let quote = cancellation_quote(&engine, sub.id.as_str(), false).await;
    let quote = quote.unwrap_or_else(|e| panic!("{e}"));
    assert!(quote.refund_amount > 0, "{quote:?}");
    let done = cancel_quoted(
        &engine,
        sub.id.as_str(),
        quoted(&quote.quote_id),
        "k3",
        &Actor::named("t"),
    )
    .await;
    let done = done.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.subscription.status, "cancelled");
    let refund = done
        .refund
        .unwrap_or_else(|| panic!("no refund in {:?}", done.subscription));
    assert_eq!(refund.state, "unclear");
    let review = needs_review(&engine, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(review.charges.is_empty(), "{review:?}");
    assert_eq!(review.refunds.len(), 1, "{review:?}");
    let waiting = &review.refunds[0];
    assert_eq!(waiting.idempotency_key, refund.refund_key);
    assert_eq!(waiting.amount, quote.refund_amount);
    assert!(waiting.review_reason.contains("timed out"), "{waiting:?}");

    // Resumed with the same key: the PG refuses a second refund with that
    // checksum, and its record shows the first one went through.
    engine.gateway.and_then(|g| {
        let attempt = testing::attempt(&sub, AttemptState::Paid);
        let mut shown = testing::record(
            &attempt,
            RecordStatus::Cancelled,
            9900,
            Some(Utc::now()),
            "cu",
        );
        shown.cancelled_amount = quote.refund_amount;
        g.refund_answers(Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::Business,
            http_status: Some(200),
            code: Some(1),
            message: "취소할 금액이 취소가능금액을 초과합니다".into(),
        })))
        .record_answers(Ok(shown))
    });
    let resumed = super::refund(
        &engine,
        &refund.merchant_uid,
        RefundInput {
            amount: Some(refund.amount),
            reason: refund.reason.clone(),
        },
        &refund.refund_key,
        &Actor::named("operator"),
    )
    .await;
    let resumed = resumed.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resumed.refunded, quote.refund_amount);
    let review = needs_review(&engine, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(review.refunds.is_empty(), "{review:?}");
    assert_eq!(engine.ledger.count_review().await.ok(), Some(0));
    let refunds = engine
        .gateway
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Refund(_)))
        .count();
    assert_eq!(refunds, 2, "asked once, and once more by the same key");
}

#[tokio::test]
async fn a_stale_quote_changes_nothing_and_asks_the_pg_nothing() {
    let (engine, sub) = paid(|g, _| g).await;
    let quote = cancellation_quote(&engine, sub.id.as_str(), false).await;
    let quote = quote.unwrap_or_else(|e| panic!("{e}"));
    // The quote, altered by the caller: one character of its tag.
    let mut forged = quote.quote_id.clone();
    let last = forged
        .pop()
        .map_or('0', |c| if c == '0' { '1' } else { '0' });
    forged.push(last);
    let stale = cancel_quoted(
        &engine,
        sub.id.as_str(),
        quoted(&forged),
        "k2",
        &Actor::named("t"),
    )
    .await;
    match stale {
        Err(ManageError::StaleQuote { fresh, .. }) => {
            assert_eq!(fresh.refund_amount, quote.refund_amount)
        }
        other => panic!("{other:?}"),
    }
    let now = engine.ledger.get_subscription(&sub.id).await.ok().flatten();
    assert_eq!(now.map(|s| s.status), Some(SubscriptionStatus::Active));
    assert_eq!(
        engine.gateway.calls().len(),
        1,
        "only the charge: {:?}",
        engine.gateway.calls()
    );
}

#[tokio::test]
async fn a_plan_version_is_created_once_and_bad_input_writes_nothing() {
    let engine = testing::engine(ScriptedGateway::new());
    let input = |id: &str, amount: i64| NewPlanInput {
        id: Some(id.into()),
        name: "베이직 월간".into(),
        amount,
        currency: None,
        interval: None,
        notice_days: None,
        trial_days: None,
        conversion_consent: None,
        on_no_consent: None,
        tax: None,
        tax_free_amount: None,
        billing_day: None,
        first_period: None,
    };
    let created = super::create_plan(&engine, input("basic", 9900)).await;
    assert_eq!(
        created.map(|p| (p.id, p.version)),
        Ok(("basic".to_owned(), 1))
    );
    let again = super::create_plan(&engine, input("basic", 12900)).await;
    assert!(matches!(again, Err(ManageError::Conflict(_))), "{again:?}");
    let bad = super::create_plan(&engine, input("cheap", 99)).await;
    assert!(matches!(bad, Err(ManageError::Invalid(_))), "{bad:?}");
    let list = super::list_plans(&engine, None).await;
    let ids: Vec<String> = list
        .map(|l| l.plans.into_iter().map(|p| p.id).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["basic"]);
    let kept = super::get_plan(&engine, "basic").await;
    assert_eq!(kept.map(|p| p.amount), Ok(9900), "a version never changes");
}

/// Found by the simulation: a trial's upgrade as its conversion was being
/// charged went to the next period, a renewal at a higher price that no
/// consent covered.
#[tokio::test]
async fn a_trials_upgrade_once_its_conversion_is_claimed_needs_the_customers_consent() {
    use crate::billing::trials::{ConversionConsent, OnNoConsent, TrialTerms};
    let engine = testing::engine(ScriptedGateway::new());
    let terms = TrialTerms {
        days: 14,
        consent: ConversionConsent::Explicit,
        on_no_consent: OnNoConsent::Cancel,
    };
    let up = |sub: &Subscription| super::PlanInput {
        amount: sub.plan.amount + 5000,
        name: sub.plan.name.clone(),
        consent: None,
    };
    let merchant = Actor::named("merchant");
    // Its conversion claimed: the new price would start a period later.
    let converting = testing::trialing("sub0trialup1", terms, engine.now() - Duration::days(14));
    testing::store_subscription(&engine.ledger, &converting).await;
    let mut claim = testing::attempt(&converting, AttemptState::Claimed);
    claim.claim_token = Some("run-1".into());
    claim.lease_until = Some(engine.now() + Duration::minutes(15));
    let mut claimed = converting.clone();
    claimed.version += 1;
    engine.ledger.claim_new(&claim, &claimed).await.unwrap();
    let refused =
        super::change_plan(&engine, converting.id.as_str(), up(&converting), &merchant).await;
    assert!(
        matches!(refused, Err(ManageError::Conflict(_))),
        "{refused:?}"
    );
    let kept = engine
        .ledger
        .get_subscription(&converting.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.pending_plan, kept.version),
        (None, claimed.version),
        "nothing changed"
    );
    // Before its conversion: the trial's consent is asked again at the new price (decision 68).
    let early = testing::trialing("sub0trialup2", terms, engine.now() - Duration::days(3));
    testing::store_subscription(&engine.ledger, &early).await;
    let changed = super::change_plan(&engine, early.id.as_str(), up(&early), &merchant).await;
    assert_eq!(
        changed.map(|v| v.plan.amount).ok(),
        Some(early.plan.amount + 5000)
    );
}
