//! Builders for tests: a subscription, its attempts and the gateway's
//! records in a plain, valid state, so a test says only what matters to it
//! and an entity that gains a field changes here, once. Compiled for this
//! crate's tests and behind the `testing` feature for the other crates'.
//! [`ScriptedGateway`] answers as the test says; [`engine`] puts it (or any
//! gateway) over the in-memory ledger.

mod scripted;

use chrono::{DateTime, Utc};

pub use scripted::{Call, ScriptedGateway};

use crate::billing::{
    Anchor, AttemptState, ChargeAttempt, KeyInfo, PaymentRecord, Plan, RecordStatus, Subscription,
    SubscriptionId, SubscriptionStatus, UidKey,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::{Engine, Settings};
use crate::gateway::PaymentGateway;
use crate::ledger::memory::InMemoryLedger;

/// The instant an RFC 3339 text names (`2027-02-11T12:00:00+09:00`).
pub fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The engine over an empty in-memory ledger and `gateway`, with the
/// configuration's defaults, a shifted clock (advance it) and [`refs`].
pub fn engine<G: PaymentGateway>(gateway: G) -> Engine<InMemoryLedger, G> {
    engine_with(gateway, &[])
}

/// [`engine`] with configuration variables of the test's own (`CALLBACK_URL`,
/// `CANCEL_FEE_PERCENT`, …) over the defaults.
pub fn engine_with<G: PaymentGateway>(
    gateway: G,
    vars: &[(&str, &str)],
) -> Engine<InMemoryLedger, G> {
    let base = [
        ("TABLE_NAME", "test"),
        ("IAMPORT_KEY", "test-key"),
        ("IAMPORT_SECRET", "test-secret"),
    ];
    let config = Config::from_lookup(|name| {
        vars.iter()
            .chain(base.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap_or_else(|e| panic!("the tests' configuration: {e}"));
    Engine::new(
        InMemoryLedger::new(),
        gateway,
        Clock::shifted(),
        Settings::from_config(&config, refs()),
    )
}

/// The key of tests' merchant uids and key references.
pub fn refs() -> UidKey {
    UidKey::new(b"a-test-key-of-16b").unwrap_or_else(|| UidKey::derived_from(b"test"))
}

/// [`subscription`] `id` in a free trial of `terms` signed up at `now`, as
/// the activation makes one: `trialing`, period 0 at the trial's end, no
/// consent yet.
pub fn trialing(
    id: &str,
    terms: crate::billing::trials::TrialTerms,
    now: chrono::DateTime<chrono::Utc>,
) -> Subscription {
    let (anchor, ends_at) = crate::billing::trials::trial_end(terms.days, now);
    let mut s = subscription(id, anchor);
    s.status = SubscriptionStatus::Trialing;
    s.next_charge_at = ends_at;
    s.trial = Some(crate::billing::trials::Trial {
        terms,
        ends_at,
        extended: false,
        consent: None,
    });
    s
}

/// An active subscription `id` (12 characters `[0-9a-z]`) anchored on
/// `anchor`, in its sign-up period, due at the period's start, 9,900 KRW a
/// month, its key `cu`.
pub fn subscription(id: &str, anchor: Anchor) -> Subscription {
    let t = anchor.period_start(0);
    Subscription {
        id: SubscriptionId::parse(id).unwrap_or_else(SubscriptionId::generate),
        user_id: "u".into(),
        customer_uid: "cu".into(),
        pg: "chai".into(),
        plan: Plan {
            amount: 9900,
            name: "p".into(),
            notice_days: crate::billing::notices::DEFAULT_NOTICE_DAYS,
            tax: crate::billing::TaxSetting::Taxable,
        },
        plan_ref: None,
        buyer: Default::default(),
        status: SubscriptionStatus::Active,
        anchor,
        period_index: 0,
        attempt: 1,
        next_charge_at: t,
        paid_through: None,
        key: KeyInfo {
            pg_provider: "chai".into(),
            pg_id: None,
            card_name: None,
            card_number: None,
            inserted_at: t,
        },
        version: 1,
        created_at: t,
        updated_at: t,
        cancel_at_period_end: false,
        pending_plan: None,
        ended_at: None,
        cancel_reason: None,
        review_from: None,
        last_run: None,
        paid_on: None,
        reanchor_on_payment: false,
        action_reason: None,
        price_change: None,
        pause: None,
        partial: None,
        discount: None,
        notice: None,
        trial: None,
    }
}

/// `sub`'s current attempt in `state`, as sent with its current key at its
/// last update.
pub fn attempt(sub: &Subscription, state: AttemptState) -> ChargeAttempt {
    let period = sub.current_period();
    let refs = refs();
    ChargeAttempt {
        subscription_id: sub.id.clone(),
        merchant_uid: refs.charge_uid(&sub.id, &period, sub.attempt),
        key_ref: refs.key_ref(&sub.customer_uid),
        period,
        attempt: sub.attempt,
        amount: sub.plan.amount,
        state,
        claim_token: None,
        lease_until: None,
        sent_at: Some(sub.updated_at),
        sends: 1,
        imp_uid: None,
        paid_at: None,
        fail_reason: None,
        refunded: 0,
        cash_receipt: None,
        refund_cause: None,
        resolution: None,
        retry_at: None,
        decline: None,
        receipt_url: None,
        created_at: sub.updated_at,
        updated_at: sub.updated_at,
        tax_free: 0,
        vat: None,
    }
}

/// The gateway's record of `attempt` in `status`, for `amount`, charged to
/// `key`; `paid_at` when money was taken.
pub fn record(
    attempt: &ChargeAttempt,
    status: RecordStatus,
    amount: i64,
    paid_at: Option<DateTime<Utc>>,
    key: &str,
) -> PaymentRecord {
    PaymentRecord {
        imp_uid: "imps_1".into(),
        merchant_uid: attempt.merchant_uid.clone(),
        status,
        amount,
        cancelled_amount: 0,
        currency: Some("KRW".into()),
        customer_uid: Some(key.into()),
        paid_at,
        fail_reason: None,
        pg_code: None,
        cancel_reason: None,
        receipt_url: None,
        tax_free: None,
        vat: None,
        cash: false,
    }
}

/// Stores `sub` as a completed sign-up would (its registration, then the
/// activation), without a first attempt.
pub async fn store_subscription<L: crate::ledger::Ledger>(ledger: &L, sub: &Subscription) {
    use crate::billing::{MerchantUid, Registration, RegistrationStatus};
    let reg = Registration {
        merchant_uid: MerchantUid::issuance(&sub.id),
        subscription_id: sub.id.clone(),
        customer_uid: sub.customer_uid.clone(),
        user_id: sub.user_id.clone(),
        plan: sub.plan.clone(),
        plan_ref: None,
        pg: sub.pg.clone(),
        buyer: sub.buyer.clone(),
        status: RegistrationStatus::Pending,
        created_at: sub.created_at,
        expires_at: None,
        imp_uid: None,
        sweep_at: None,
        replaces_key: false,
        interval: Default::default(),
        billing: None,
        trial: None,
        consent: None,
        coupon: None,
    };
    let activation = crate::ledger::Activation {
        reg: &reg,
        sub,
        imp_uid: "imps_issuance",
        first_attempt: None,
        plan_lock: false,
    };
    let stored = match ledger.put_registration(&reg).await {
        Ok(()) => ledger.activate(&activation).await,
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        panic!("storing the test subscription {}: {e}", sub.id);
    }
}
