//! `prepare` on the in-memory ledger and a scripted gateway (which is asked
//! nothing: preparing only writes the registration and builds the window).

use chrono::Utc;

use super::{PlanInput, PrepareError, PrepareRequest, prepare};
use crate::billing::plans::{Interval, PlanId, PlanRecord};
use crate::billing::{MerchantUid, SubscriptionId};
use crate::ledger::Ledger;
use crate::testing::{self, ScriptedGateway};

type TestEngine = crate::engine::Engine<crate::ledger::memory::InMemoryLedger, ScriptedGateway>;

fn engine() -> TestEngine {
    testing::engine_with(
        ScriptedGateway::new(),
        &[("CALLBACK_URL", "https://shop.example/billing/callback")],
    )
}

fn asked(plan_id: Option<&str>, plan: Option<(i64, &str)>) -> PrepareRequest {
    PrepareRequest {
        user_id: "user-1".into(),
        plan_id: plan_id.map(str::to_owned),
        plan: plan.map(|(amount, name)| PlanInput {
            amount,
            name: name.into(),
        }),
        buyer: None,
        consent: None,
        coupon_id: None,
    }
}

async fn catalogue(engine: &TestEngine) -> PlanRecord {
    let plan = PlanRecord {
        id: PlanId::parse("basic-monthly").unwrap_or_else(|| unreachable!()),
        version: 1,
        name: "베이직 월간".into(),
        amount: 9900,
        interval: Interval::Month,
        notice_days: 3,
        trial: None,
        billing: None,
        created_at: Utc::now(),
        tax: crate::billing::TaxSetting::Taxable,
    };
    if let Err(e) = engine.ledger.put_plan(&plan).await {
        panic!("{e}");
    }
    plan
}

#[tokio::test]
async fn a_sign_up_by_plan_id_is_charged_the_versions_price_and_keeps_the_version() {
    let engine = engine();
    let plan = catalogue(&engine).await;
    let prepared = prepare(&engine, asked(Some("basic-monthly"), None)).await;
    let prepared = prepared.unwrap_or_else(|e| panic!("{e}"));
    let id = SubscriptionId::parse(&prepared.subscription_id).unwrap_or_else(|| unreachable!());
    let reg = engine
        .ledger
        .get_registration(&MerchantUid::issuance(&id))
        .await;
    let reg = reg
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no registration"));
    assert_eq!(reg.plan, plan.plan());
    assert_eq!(reg.plan_ref, Some(plan.reference()));
    let window = prepared
        .request_pay
        .unwrap_or_else(|| panic!("a V1 window"));
    assert_eq!(window.name, "베이직 월간");
    assert!(
        engine.gateway.calls().is_empty(),
        "preparing asks the PG nothing"
    );
}

#[tokio::test]
async fn an_unknown_plan_or_both_forms_are_refused_and_nothing_is_written() {
    let engine = engine();
    catalogue(&engine).await;
    let unknown = prepare(&engine, asked(Some("nothing-here"), None)).await;
    assert!(matches!(unknown, Err(PrepareError::UnknownPlan(ref id)) if id == "nothing-here"));
    let bad_id = prepare(&engine, asked(Some("Not An Id"), None)).await;
    assert!(matches!(bad_id, Err(PrepareError::UnknownPlan(_))));
    let both = prepare(&engine, asked(Some("basic-monthly"), Some((9900, "x")))).await;
    assert!(matches!(both, Err(PrepareError::Invalid(_))));
    let items = engine.ledger.user_items("user-1").await;
    assert!(
        items.is_ok_and(|i| i.registrations.is_empty()),
        "nothing written"
    );
    // The deprecated form keeps working, with no version.
    let old = prepare(&engine, asked(None, Some((4900, "라이트")))).await;
    assert!(old.is_ok());
}
