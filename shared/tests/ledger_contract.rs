//! The ledger contract: every case runs against both implementations, the
//! DynamoDB adapter on a real DynamoDB API (moto_server, started by testkit,
//! a fresh table per case) and the in-memory ledger, so the in-memory one
//! (which the simulation and benchmarks rely on) cannot drift from the one
//! in production. Each case tries to break one conditional write.
//!
//! Races are proven in the simulation on the in-memory ledger; here two
//! competing writes are issued one after the other (moto_server is not
//! thread-safe), which exercises the same conditions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use chrono::{DateTime, Duration, Utc};
use shared::billing::coupons::{Coupon, CouponDuration, CouponId, Discount, Off};
use shared::billing::plans::{Interval, PlanId, PlanRecord, PlanRef};
use shared::billing::{
    AttemptResult, AttemptState, AuditEntry, Buyer, ChargeAttempt, DeclineClass, MerchantUid,
    PeriodId, Plan, Registration, RegistrationStatus, Resolution, Subscription, SubscriptionId,
    SubscriptionStatus, TaxSetting, TaxSplit, UidKey,
};
use shared::ledger::dynamodb::DynamoLedger;
use shared::ledger::memory::InMemoryLedger;
use shared::ledger::{
    Activation, Cursor, Guard, KeyReplacement, Ledger, LedgerError, LockChange, RequestState,
    ReviewDecision, ReviewFlag, Sent, Settlement, StoredResponse, SubscriptionChange, TakeOver,
    UnknownOutcome,
};
use shared::ledger::{Redeemer, Redemption};
use shared::secret::Pii;
use testkit::{fresh_ledger, sample_subscription};

/// The contract's one test hook: make a subscription's stored item unreadable.
trait Subject: Ledger {
    async fn corrupt(&self, id: &SubscriptionId);
}

impl Subject for InMemoryLedger {
    async fn corrupt(&self, id: &SubscriptionId) {
        self.corrupt_subscription(id);
    }
}

impl Subject for DynamoLedger {
    async fn corrupt(&self, id: &SubscriptionId) {
        self.corrupt_subscription(id, "plan_amount", "lots")
            .await
            .unwrap();
    }
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(shared::ledger::memory::InMemoryLedger::new()).await
            })*
        }
        mod dynamodb {
            $(#[tokio::test]
            async fn $case() {
                super::$case(testkit::fresh_ledger(3).await).await
            })*
        }
    };
}

contract!(
    a_coupon_is_written_once_and_redeemed_with_its_registration_up_to_its_limit,
    a_redemption_on_a_subscription_counts_only_with_its_change,
    registration_is_written_once_and_reads_back,
    activation_happens_once_and_clears_the_expiry,
    activation_writes_the_first_attempt_or_nothing,
    a_first_attempt_waiting_for_a_person_is_in_the_review_list,
    dunning_that_ends_in_cancelled_lets_go_of_the_plan_lock,
    activation_rolls_back_when_the_subscription_exists,
    one_live_subscription_per_user_and_plan_when_locked,
    a_refused_registration_leaves_the_sweep,
    a_refused_card_window_that_took_money_waits_for_a_person,
    a_new_card_completes_its_registration_and_bumps_the_subscription,
    a_claim_is_exclusive_and_loses_to_a_change_of_the_subscription,
    expired_lease_can_be_taken_over_but_a_live_one_cannot,
    unknown_attempt_is_taken_over_and_a_settled_one_never_reopens,
    only_the_holder_marks_sending_or_unknown,
    open_attempts_are_due_until_they_are_settled,
    settle_is_all_or_nothing_under_a_stale_version_or_a_stolen_claim,
    only_money_settles_without_the_claim,
    flagging_needs_the_claim_or_an_unclaimed_attempt_and_stops_charging,
    a_person_resolves_a_flagged_attempt_once,
    due_pages_carry_on_through_a_cursor_and_skip_what_is_not_due,
    a_cursor_that_is_not_the_ledgers_is_refused,
    attempts_list_in_period_and_attempt_order,
    changes_are_versioned_audited_and_release_the_plan_lock,
    instants_are_kept_to_the_second,
    refunds_only_ever_grow,
    a_refund_request_is_kept_under_its_key_and_finished_once,
    a_refund_whose_outcome_is_unknown_waits_for_review_until_it_is_finished,
    a_corrupt_subscription_is_reported_not_hidden,
    a_pending_registration_is_due_for_a_sweep_until_it_completes,
    an_idempotency_key_answers_its_first_answer_again,
    a_plan_version_is_written_once_and_the_newest_is_current,
    the_plan_catalogue_pages_by_id_through_a_cursor,
    a_sign_up_keeps_the_plan_version_it_agreed_to,
    a_renewal_is_due_at_its_notice_and_at_its_charge_once_noticed,
    a_trial_is_stored_with_its_terms_and_consent_and_due_at_its_notice,
    a_price_increase_is_due_at_its_consent_request_and_listed_until_answered,
    a_plan_rollout_comes_with_its_version_and_its_plan_lists_the_live_members,
    a_settlement_keeps_the_decline_class_and_the_receipt_link,
    tax_settings_and_a_charges_vat_split_read_back_as_written,
    a_cash_receipt_is_written_with_its_payment_worked_on_its_revision_and_requeued_by_a_refund,
);

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn key() -> UidKey {
    UidKey::new(b"contract-test-key-0123").unwrap()
}

fn registration(id: &SubscriptionId, now: DateTime<Utc>) -> Registration {
    Registration {
        merchant_uid: MerchantUid::issuance(id),
        subscription_id: id.clone(),
        customer_uid: shared::billing::generate_customer_uid(),
        user_id: format!("user-{id}"),
        plan: Plan {
            amount: 9900,
            name: "월간 구독".into(),
            notice_days: shared::billing::notices::DEFAULT_NOTICE_DAYS,
            tax: shared::billing::TaxSetting::Taxable,
        },
        plan_ref: None,
        pg: "chai".into(),
        buyer: Buyer {
            name: Some(Pii::new("홍길동")),
            email: Some(Pii::new("a@example.com")),
            tel: None,
            cash_receipt: Some(shared::billing::ReceiptHolder {
                kind: shared::billing::ReceiptKind::Corporate,
                identifier: Pii::new("1234567890"),
            }),
        },
        status: RegistrationStatus::Pending,
        created_at: now,
        expires_at: Some(now + Duration::hours(1)),
        imp_uid: None,
        sweep_at: Some(now + Duration::minutes(30)),
        replaces_key: false,
        // Stored and read back like every other field (decision 75).
        interval: shared::billing::Interval::Months(3),
        billing: None,
        trial: None,
        consent: None,
        coupon: None,
    }
}

fn activation<'a>(reg: &'a Registration, sub: &'a Subscription) -> Activation<'a> {
    Activation {
        reg,
        sub,
        imp_uid: "imp_000000000001",
        first_attempt: None,
        plan_lock: false,
    }
}

fn claimed(
    sub: &Subscription,
    period: &str,
    attempt: u32,
    token: &str,
    now: DateTime<Utc>,
) -> ChargeAttempt {
    let id = &sub.id;
    let period = PeriodId::parse(period).unwrap();
    ChargeAttempt {
        subscription_id: id.clone(),
        merchant_uid: key().charge_uid(id, &period, attempt),
        key_ref: key().key_ref(&sub.customer_uid),
        period,
        attempt,
        amount: 9900,
        state: AttemptState::Claimed,
        claim_token: Some(token.into()),
        lease_until: Some(now + Duration::minutes(5)),
        sent_at: Some(now),
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
        created_at: now,
        updated_at: now,
        tax_free: 0,
        vat: None,
    }
}

fn current(sub: &Subscription, token: &str, now: DateTime<Utc>) -> ChargeAttempt {
    claimed(
        sub,
        &sub.current_period().to_string(),
        sub.attempt,
        token,
        now,
    )
}

fn paid(imp_uid: &str, at: DateTime<Utc>) -> AttemptResult {
    AttemptResult {
        state: AttemptState::Paid,
        amount: None,
        imp_uid: Some(imp_uid.into()),
        paid_at: Some(at),
        fail_reason: None,
        retry_at: None,
        decline: None,
        receipt_url: None,
        tax: None,
        cash_receipt: None,
    }
}

fn declined(reason: &str) -> AttemptResult {
    AttemptResult {
        state: AttemptState::Failed,
        amount: None,
        imp_uid: Some("imps_declined".into()),
        paid_at: None,
        fail_reason: Some(reason.into()),
        retry_at: None,
        decline: None,
        receipt_url: None,
        tax: None,
        cash_receipt: None,
    }
}

fn audit(sub: &Subscription, action: &str, at: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        subscription_id: sub.id.clone(),
        at,
        actor: "ops@shop".into(),
        principal: Some("arn:aws:iam::123456789012:role/ops".into()),
        action: action.into(),
        detail: format!("{action} in a test"),
    }
}

/// A live subscription (registered and activated) created a month before `now`.
async fn live<L: Ledger>(l: &L, now: DateTime<Utc>) -> Subscription {
    let id = SubscriptionId::generate();
    let sub = sample_subscription(&id, now - Duration::days(31));
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    l.activate(&activation(&reg, &sub)).await.unwrap();
    sub
}

async fn attempt_of<L: Ledger>(l: &L, a: &ChargeAttempt) -> ChargeAttempt {
    l.get_attempt(&a.subscription_id, &a.period, a.attempt)
        .await
        .unwrap()
        .unwrap()
}

async fn due_attempts<L: Ledger>(l: &L, at: DateTime<Utc>) -> Vec<(SubscriptionId, PeriodId, u32)> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = l.due_page(at, 100, cursor.as_ref()).await.unwrap();
        out.extend(page.attempts);
        match page.next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Claims `a` with its subscription one version later (what a run writes);
/// returns the subscription as stored now.
async fn claim<L: Ledger>(
    l: &L,
    a: &ChargeAttempt,
    sub: &Subscription,
) -> Result<Subscription, LedgerError> {
    let next = Subscription {
        last_run: Some("contract-run".into()),
        ..sub.next_version(a.created_at)
    };
    l.claim_new(a, &next).await.map(|()| next)
}

fn conflict<T: std::fmt::Debug>(r: Result<T, LedgerError>) {
    assert!(matches!(r, Err(LedgerError::Conflict(_))), "{r:?}");
}

async fn registration_is_written_once_and_reads_back<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    conflict(
        l.put_registration(&Registration {
            user_id: "attacker".into(),
            ..reg.clone()
        })
        .await,
    );
    let back = l
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, reg);
    assert!(l.get_registration("rzzzzzzzzzzzz").await.unwrap().is_none());
    assert_eq!(
        l.user_items(&reg.user_id).await.unwrap().registrations,
        vec![reg.merchant_uid.clone()]
    );
}

async fn activation_happens_once_and_clears_the_expiry<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    let sub = sample_subscription(&id, now);
    l.activate(&activation(&reg, &sub)).await.unwrap();
    let back = l
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.status, RegistrationStatus::Completed);
    assert_eq!(back.imp_uid.as_deref(), Some("imp_000000000001"));
    assert_eq!(
        back.expires_at, None,
        "a completed registration must not expire"
    );
    assert_eq!(l.get_subscription(&id).await.unwrap().unwrap(), sub);
    assert_eq!(
        l.user_items(&sub.user_id).await.unwrap().subscriptions,
        vec![id.clone()]
    );

    // A second activation (refresh, second tab) changes nothing.
    let other = Subscription {
        plan: Plan {
            amount: 1,
            name: "x".into(),
            notice_days: shared::billing::notices::DEFAULT_NOTICE_DAYS,
            tax: shared::billing::TaxSetting::Taxable,
        },
        ..sub.clone()
    };
    conflict(l.activate(&activation(&reg, &other)).await);
    assert_eq!(l.get_subscription(&id).await.unwrap().unwrap(), sub);
}

async fn activation_writes_the_first_attempt_or_nothing<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let holder = live(&l, now).await;
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    let sub = sample_subscription(&id, now);
    // An attempt under this subscription's key exists already (written for
    // another subscription's test here): the whole activation is refused.
    let mut first = claimed(&holder, "202611", 1, "x", now);
    first.subscription_id = id.clone();
    first.state = AttemptState::Paid;
    first.claim_token = None;
    first.lease_until = None;
    first.merchant_uid = reg.merchant_uid.clone();
    let mut blocker = first.clone();
    blocker.subscription_id = holder.id.clone();
    let holder = claim(&l, &blocker, &holder).await.unwrap();
    let mut clash = first.clone();
    clash.subscription_id = holder.id.clone();
    let clash_activation = Activation {
        first_attempt: Some(&clash),
        ..activation(&reg, &sub)
    };
    conflict(l.activate(&clash_activation).await);
    assert!(l.get_subscription(&id).await.unwrap().is_none());
    assert_eq!(
        l.get_registration(&reg.merchant_uid)
            .await
            .unwrap()
            .unwrap()
            .status,
        RegistrationStatus::Pending
    );
    let with_first = Activation {
        first_attempt: Some(&first),
        ..activation(&reg, &sub)
    };
    l.activate(&with_first).await.unwrap();
    assert_eq!(attempt_of(&l, &first).await, first);
}

async fn a_first_attempt_waiting_for_a_person_is_in_the_review_list<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    let mut sub = sample_subscription(&id, now);
    sub.status = SubscriptionStatus::NeedsReview;
    let mut first = claimed(&sub, "202611", 1, "x", now);
    first.state = AttemptState::NeedsReview;
    first.claim_token = None;
    first.lease_until = None;
    first.merchant_uid = reg.merchant_uid.clone();
    first.fail_reason = Some("the window took 5000 KRW".into());
    l.activate(&Activation {
        first_attempt: Some(&first),
        ..activation(&reg, &sub)
    })
    .await
    .unwrap();
    assert_eq!(
        l.count_review().await.unwrap(),
        1,
        "the review queue's size"
    );
    let page = l.review_page(10, None).await.unwrap();
    assert_eq!(page.attempts, vec![(id.clone(), first.period.clone(), 1)]);
}

async fn dunning_that_ends_in_cancelled_lets_go_of_the_plan_lock<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    let sub = Subscription {
        user_id: reg.user_id.clone(),
        ..sample_subscription(&id, now)
    };
    l.put_registration(&reg).await.unwrap();
    l.activate(&Activation {
        plan_lock: true,
        ..activation(&reg, &sub)
    })
    .await
    .unwrap();
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let mut ended = sub.next_version(now);
    ended.status = SubscriptionStatus::Cancelled;
    ended.ended_at = Some(now);
    l.settle(&Settlement {
        attempt: &a,
        result: &declined("잔액부족"),
        guard: Guard::Claim("run-1"),
        next: &ended,
        now,
    })
    .await
    .unwrap();
    assert!(l.user_items(&sub.user_id).await.unwrap().locks.is_empty());
}

async fn activation_rolls_back_when_the_subscription_exists<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    let sub = sample_subscription(&id, now);
    let other_reg = Registration {
        merchant_uid: "rother0000000".into(),
        ..registration(&id, now)
    };
    l.put_registration(&other_reg).await.unwrap();
    l.activate(&activation(&other_reg, &sub)).await.unwrap();
    // Activating the first registration fails as a whole: it stays pending.
    conflict(l.activate(&activation(&reg, &sub)).await);
    assert_eq!(
        l.get_registration(&reg.merchant_uid)
            .await
            .unwrap()
            .unwrap()
            .status,
        RegistrationStatus::Pending,
        "transaction was not atomic"
    );
}

async fn one_live_subscription_per_user_and_plan_when_locked<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let (a, b) = (SubscriptionId::generate(), SubscriptionId::generate());
    let reg_a = Registration {
        user_id: "user-7".into(),
        ..registration(&a, now)
    };
    let reg_b = Registration {
        user_id: "user-7".into(),
        ..registration(&b, now)
    };
    let sub_a = Subscription {
        user_id: "user-7".into(),
        ..sample_subscription(&a, now)
    };
    let sub_b = Subscription {
        user_id: "user-7".into(),
        ..sample_subscription(&b, now)
    };
    l.put_registration(&reg_a).await.unwrap();
    l.put_registration(&reg_b).await.unwrap();
    let locked = |reg, sub| Activation {
        plan_lock: true,
        ..activation(reg, sub)
    };
    l.activate(&locked(&reg_a, &sub_a)).await.unwrap();
    conflict(l.activate(&locked(&reg_b, &sub_b)).await);
    assert!(l.get_subscription(&b).await.unwrap().is_none());
    let items = l.user_items("user-7").await.unwrap();
    assert_eq!(items.subscriptions, vec![a.clone()]);
    assert_eq!(items.locks, vec![(sub_a.plan.name.clone(), a.clone())]);
    let mut regs = items.registrations.clone();
    regs.sort();
    let mut expected = vec![reg_a.merchant_uid.clone(), reg_b.merchant_uid.clone()];
    expected.sort();
    assert_eq!(regs, expected);
    // Another plan is another lock.
    let other_plan = Subscription {
        plan: Plan {
            amount: 4900,
            name: "basic".into(),
            notice_days: shared::billing::notices::DEFAULT_NOTICE_DAYS,
            tax: shared::billing::TaxSetting::Taxable,
        },
        ..sub_b.clone()
    };
    l.activate(&locked(&reg_b, &other_plan)).await.unwrap();
    assert_eq!(l.user_items("user-7").await.unwrap().locks.len(), 2);

    // A plan change moves the lock, unless another subscription holds the
    // new name: then nothing is written.
    let mut to_basic = sub_a.next_version(now);
    to_basic.plan = other_plan.plan.clone();
    conflict(
        l.change_subscription(&SubscriptionChange {
            next: &to_basic,
            audit: None,
            lock: LockChange::Move {
                from: &sub_a.plan.name,
                to: "basic",
            },
        })
        .await,
    );
    assert_eq!(l.get_subscription(&a).await.unwrap().unwrap(), sub_a);
    let mut to_family = sub_a.next_version(now);
    to_family.plan.name = "family".into();
    l.change_subscription(&SubscriptionChange {
        next: &to_family,
        audit: None,
        lock: LockChange::Move {
            from: &sub_a.plan.name,
            to: "family",
        },
    })
    .await
    .unwrap();
    let mut locks = l.user_items("user-7").await.unwrap().locks;
    locks.sort();
    assert_eq!(
        locks,
        vec![("basic".into(), b.clone()), ("family".into(), a.clone())]
    );
    // Letting go of a lock another subscription holds leaves it alone.
    let mut ended = to_family.next_version(now);
    ended.status = SubscriptionStatus::Cancelled;
    l.change_subscription(&SubscriptionChange {
        next: &ended,
        audit: None,
        lock: LockChange::Release("basic"),
    })
    .await
    .unwrap();
    assert_eq!(l.user_items("user-7").await.unwrap().locks.len(), 2);
}

async fn a_refused_registration_leaves_the_sweep<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    l.refuse_registration(&reg, now, None).await.unwrap();
    conflict(l.refuse_registration(&reg, now, None).await);
    assert_eq!(
        l.get_registration(&reg.merchant_uid)
            .await
            .unwrap()
            .unwrap()
            .status,
        RegistrationStatus::Refused
    );
    let page = l
        .due_page(now + Duration::days(1), 100, None)
        .await
        .unwrap();
    assert!(page.registrations.is_empty());
    conflict(
        l.activate(&activation(&reg, &sample_subscription(&id, now)))
            .await,
    );
}

async fn a_refused_card_window_that_took_money_waits_for_a_person<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let reg = Registration {
        merchant_uid: MerchantUid::key_replacement(&sub.id, "abcd1234"),
        replaces_key: true,
        trial: None,
        consent: None,
        ..registration(&sub.id, now)
    };
    l.put_registration(&reg).await.unwrap();
    let window = ChargeAttempt {
        attempt: shared::billing::FIRST_WINDOW_SLOT,
        merchant_uid: reg.merchant_uid.to_string(),
        state: AttemptState::NeedsReview,
        claim_token: None,
        lease_until: None,
        imp_uid: Some("imp_9".into()),
        amount: 1000,
        fail_reason: Some("card replacement window imp_9 took 1000 KRW; refund it".into()),
        ..current(&sub, "none", now)
    };
    l.refuse_registration(&reg, now, Some(&window))
        .await
        .unwrap();
    let stored = l
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, RegistrationStatus::Refused);
    assert_eq!(attempt_of(&l, &window).await, window);
    let review = l.review_page(10, None).await.unwrap();
    assert_eq!(
        review.attempts,
        vec![(sub.id.clone(), window.period.clone(), window.attempt)]
    );
    // Written once: a second refusal (another delivery) changes nothing.
    conflict(l.refuse_registration(&reg, now, Some(&window)).await);
    assert_eq!(l.get_subscription(&sub.id).await.unwrap().unwrap(), sub);
}

async fn a_new_card_completes_its_registration_and_bumps_the_subscription<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let reg = Registration {
        merchant_uid: MerchantUid::key_replacement(&sub.id, "abcd1234"),
        replaces_key: true,
        trial: None,
        consent: None,
        ..registration(&sub.id, now)
    };
    l.put_registration(&reg).await.unwrap();
    let mut next = sub.next_version(now);
    next.customer_uid = reg.customer_uid.clone();
    let entry = audit(&sub, "payment_method", now);
    // A stale version changes nothing.
    let mut stale = next.clone();
    stale.version += 1;
    let replacement = |next| KeyReplacement {
        reg: &reg,
        next,
        imp_uid: "imp_2",
        audit: &entry,
        window_payment: None,
    };
    conflict(l.replace_key(&replacement(&stale)).await);
    assert_eq!(
        l.get_registration(&reg.merchant_uid)
            .await
            .unwrap()
            .unwrap()
            .status,
        RegistrationStatus::Pending
    );
    l.replace_key(&replacement(&next)).await.unwrap();
    assert_eq!(l.get_subscription(&sub.id).await.unwrap().unwrap(), next);
    let done = l
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.imp_uid.as_deref()),
        (RegistrationStatus::Completed, Some("imp_2"))
    );
    assert_eq!(l.history(&sub.id, 10).await.unwrap(), vec![entry.clone()]);
    conflict(l.replace_key(&replacement(&next.next_version(now))).await);
}

async fn a_claim_is_exclusive_and_loses_to_a_change_of_the_subscription<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-a", now);
    let b = current(&sub, "run-b", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    conflict(claim(&l, &b, &sub).await);
    assert_eq!(
        attempt_of(&l, &a).await.claim_token.as_deref(),
        Some("run-a")
    );
    // A claim made on an older copy of the subscription loses to a change.
    let sub2 = live(&l, now).await;
    let mut cancelled = sub2.next_version(now);
    cancelled.status = SubscriptionStatus::Cancelled;
    l.change_subscription(&SubscriptionChange {
        next: &cancelled,
        audit: None,
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    conflict(claim(&l, &current(&sub2, "stale-run", now), &sub2).await);
    assert!(l.list_attempts(&sub2.id).await.unwrap().is_empty());
    // And on a subscription that does not exist.
    let ghost = sample_subscription(&SubscriptionId::generate(), now);
    conflict(claim(&l, &current(&ghost, "run", now), &ghost).await);
}

async fn expired_lease_can_be_taken_over_but_a_live_one_cannot<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "crashed-run", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let (ledger, sub_ref, a_ref) = (&l, &sub, &a);
    let over = |token: &'static str, at: DateTime<Utc>, v: u64| async move {
        ledger
            .take_over(&TakeOver {
                id: &sub_ref.id,
                period: &a_ref.period,
                attempt: a_ref.attempt,
                token,
                lease_until: at + Duration::minutes(5),
                now: at,
                sub_version: v,
            })
            .await
    };
    // Lease still running (also at its very last second): no take-over.
    conflict(over("run-2", now + Duration::minutes(1), sub.version).await);
    conflict(over("run-2", now + Duration::minutes(5), sub.version).await);
    // After the lease: a stale copy of the subscription loses; the first
    // taker wins, the second finds a live claim.
    let later = now + Duration::minutes(6);
    conflict(over("run-3", later, sub.version + 1).await);
    let taken = over("run-3", later, sub.version).await.unwrap();
    conflict(over("run-4", later, sub.version).await);
    assert_eq!(taken.state, AttemptState::Claimed);
    assert_eq!(taken.claim_token.as_deref(), Some("run-3"));
    assert_eq!(taken.lease_until, Some(later + Duration::minutes(5)));
    assert_eq!(taken.sent_at, a.sent_at);
    assert_eq!(attempt_of(&l, &a).await, taken);
    // A missing attempt cannot be taken over.
    conflict(
        l.take_over(&TakeOver {
            id: &sub.id,
            period: &PeriodId::parse("203001").unwrap(),
            attempt: 1,
            token: "x",
            lease_until: later,
            now: later,
            sub_version: sub.version,
        })
        .await,
    );
}

async fn unknown_attempt_is_taken_over_and_a_settled_one_never_reopens<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    l.mark_unknown(&UnknownOutcome {
        attempt: &a,
        token: "run-1",
        detail: "timeout",
        sent: Sent::Maybe,
        now,
        due_at: now + Duration::minutes(10),
    })
    .await
    .unwrap();
    let unknown = attempt_of(&l, &a).await;
    assert_eq!(unknown.state, AttemptState::Unknown);
    assert_eq!(
        (unknown.lease_until, unknown.claim_token.as_deref()),
        (None, None)
    );
    assert_eq!(unknown.fail_reason.as_deref(), Some("timeout"));

    // Any later run may take an unknown attempt over, even within a lease's length.
    let taken = l
        .take_over(&TakeOver {
            id: &sub.id,
            period: &a.period,
            attempt: a.attempt,
            token: "run-2",
            lease_until: now + Duration::minutes(5),
            now,
            sub_version: sub.version,
        })
        .await
        .unwrap();
    assert_eq!(taken.claim_token.as_deref(), Some("run-2"));

    let mut next = sub.next_version(now);
    next.period_index += 1;
    l.settle(&Settlement {
        attempt: &taken,
        result: &paid("imps_1", now),
        guard: Guard::Claim("run-2"),
        next: &next,
        now,
    })
    .await
    .unwrap();
    let settled = attempt_of(&l, &a).await;
    assert_eq!(settled.state, AttemptState::Paid);
    assert_eq!(settled.imp_uid.as_deref(), Some("imps_1"));
    assert_eq!((settled.claim_token, settled.lease_until), (None, None));
    let late = now + Duration::hours(1);
    conflict(
        l.take_over(&TakeOver {
            id: &sub.id,
            period: &a.period,
            attempt: a.attempt,
            token: "run-3",
            lease_until: late,
            now: late,
            sub_version: next.version,
        })
        .await,
    );
}

async fn only_the_holder_marks_sending_or_unknown<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let later = now + Duration::minutes(2);
    let due = later + Duration::minutes(10);
    conflict(l.mark_sending(&a, "run-x", later, sub.version).await);
    conflict(l.mark_sending(&a, "run-1", later, sub.version + 1).await);
    conflict(
        l.mark_unknown(&UnknownOutcome {
            attempt: &a,
            token: "run-x",
            detail: "timeout",
            sent: Sent::Maybe,
            now: later,
            due_at: due,
        })
        .await,
    );
    assert_eq!(attempt_of(&l, &a).await, a);
    // A re-send records the key it charges (the card may have changed)
    // and counts itself.
    let resent = ChargeAttempt {
        key_ref: key().key_ref("cu_new_card"),
        ..a.clone()
    };
    l.mark_sending(&resent, "run-1", later, sub.version)
        .await
        .unwrap();
    let sending = attempt_of(&l, &a).await;
    assert_eq!(
        (sending.sent_at, sending.state, sending.sends),
        (Some(later), AttemptState::Claimed, 2)
    );
    assert!(sending.charged("cu_new_card", &key()));
    l.mark_unknown(&UnknownOutcome {
        attempt: &a,
        token: "run-1",
        detail: "lost",
        sent: Sent::Maybe,
        now: later,
        due_at: due,
    })
    .await
    .unwrap();
    // Released: nobody holds it any more, not even the old holder.
    conflict(l.mark_sending(&a, "run-1", later, sub.version).await);
    conflict(
        l.mark_unknown(&UnknownOutcome {
            attempt: &a,
            token: "run-1",
            detail: "again",
            sent: Sent::Maybe,
            now: later,
            due_at: due,
        })
        .await,
    );
    // A request that may have been sent keeps its time; one that certainly
    // never left forgets it (nothing can be in flight).
    assert_eq!(attempt_of(&l, &a).await.sent_at, Some(later));
    l.take_over(&TakeOver {
        id: &sub.id,
        period: &a.period,
        attempt: a.attempt,
        token: "run-2",
        lease_until: later + Duration::minutes(5),
        now: later,
        sub_version: sub.version,
    })
    .await
    .unwrap();
    l.mark_unknown(&UnknownOutcome {
        attempt: &a,
        token: "run-2",
        detail: "connection refused",
        sent: Sent::Never,
        now: later,
        due_at: later,
    })
    .await
    .unwrap();
    assert_eq!(attempt_of(&l, &a).await.sent_at, None);
}

async fn open_attempts_are_due_until_they_are_settled<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let key = (sub.id.clone(), a.period.clone(), a.attempt);
    let sub = claim(&l, &a, &sub).await.unwrap();
    // Claimed: due once its lease ends, whatever the subscription's status.
    assert!(
        due_attempts(&l, now + Duration::minutes(4))
            .await
            .is_empty()
    );
    assert_eq!(
        due_attempts(&l, now + Duration::minutes(5)).await,
        vec![key.clone()]
    );
    // Released as unknown: due at the time it was given.
    let look_again = now + Duration::minutes(20);
    l.mark_unknown(&UnknownOutcome {
        attempt: &a,
        token: "run-1",
        detail: "timeout",
        sent: Sent::Maybe,
        now,
        due_at: look_again,
    })
    .await
    .unwrap();
    assert!(
        due_attempts(&l, now + Duration::minutes(19))
            .await
            .is_empty()
    );
    assert_eq!(due_attempts(&l, look_again).await, vec![key.clone()]);
    // Settled: out of the index.
    let taken = l
        .take_over(&TakeOver {
            id: &sub.id,
            period: &a.period,
            attempt: a.attempt,
            token: "run-2",
            lease_until: look_again + Duration::minutes(5),
            now: look_again,
            sub_version: sub.version,
        })
        .await
        .unwrap();
    l.settle(&Settlement {
        attempt: &taken,
        result: &paid("imps_1", now),
        guard: Guard::Claim("run-2"),
        next: &sub.next_version(now),
        now,
    })
    .await
    .unwrap();
    assert!(due_attempts(&l, now + Duration::days(30)).await.is_empty());
}

async fn settle_is_all_or_nothing_under_a_stale_version_or_a_stolen_claim<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let id = sub.id.clone();
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();

    // Stale subscription version: the attempt stays claimed.
    let stale = Subscription {
        version: sub.version + 5,
        period_index: 1,
        ..sub.clone()
    };
    conflict(
        l.settle(&Settlement {
            attempt: &a,
            result: &paid("imps_1", now),
            guard: Guard::Claim("run-1"),
            next: &stale,
            now,
        })
        .await,
    );
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Claimed);

    // Someone else's claim token: the subscription stays as it was.
    let mut next = sub.next_version(now);
    next.period_index = 1;
    conflict(
        l.settle(&Settlement {
            attempt: &a,
            result: &paid("imps_1", now),
            guard: Guard::Claim("run-other"),
            next: &next,
            now,
        })
        .await,
    );
    assert_eq!(l.get_subscription(&id).await.unwrap().unwrap(), sub);
    // Only final results are written.
    let not_final = AttemptResult {
        state: AttemptState::Unknown,
        ..paid("imps_1", now)
    };
    assert!(
        l.settle(&Settlement {
            attempt: &a,
            result: &not_final,
            guard: Guard::Claim("run-1"),
            next: &next,
            now
        })
        .await
        .is_err()
    );

    // The right claim and version: both change together.
    l.settle(&Settlement {
        attempt: &a,
        result: &paid("imps_1", now),
        guard: Guard::Claim("run-1"),
        next: &next,
        now,
    })
    .await
    .unwrap();
    assert_eq!(
        l.get_subscription(&id).await.unwrap().unwrap().period_index,
        1
    );
    // A second settle of the same attempt (e.g. a webhook) is refused.
    let mut next2 = next.next_version(now);
    next2.period_index = 2;
    conflict(
        l.settle(&Settlement {
            attempt: &a,
            result: &paid("imps_1", now),
            guard: Guard::PaidFact,
            next: &next2,
            now,
        })
        .await,
    );
    assert_eq!(
        l.get_subscription(&id).await.unwrap().unwrap().period_index,
        1
    );
}

async fn only_money_settles_without_the_claim<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-b", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let next = sub.next_version(now);
    // A decline without the claim is refused whatever the state (another
    // run holds it and will record its own answer).
    assert!(
        l.settle(&Settlement {
            attempt: &a,
            result: &declined("잔액부족"),
            guard: Guard::PaidFact,
            next: &next,
            now
        })
        .await
        .is_err()
    );
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Claimed);
    // Money is recorded over another run's claim.
    l.settle(&Settlement {
        attempt: &a,
        result: &paid("imps_9", now),
        guard: Guard::PaidFact,
        next: &next,
        now,
    })
    .await
    .unwrap();
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Paid);
    // And on an unknown attempt.
    let sub2 = live(&l, now).await;
    let b = current(&sub2, "run-c", now);
    let sub2 = claim(&l, &b, &sub2).await.unwrap();
    l.mark_unknown(&UnknownOutcome {
        attempt: &b,
        token: "run-c",
        detail: "timeout",
        sent: Sent::Maybe,
        now,
        due_at: now,
    })
    .await
    .unwrap();
    l.settle(&Settlement {
        attempt: &b,
        result: &paid("imps_10", now),
        guard: Guard::PaidFact,
        next: &sub2.next_version(now),
        now,
    })
    .await
    .unwrap();
    assert_eq!(attempt_of(&l, &b).await.state, AttemptState::Paid);
}

async fn flagging_needs_the_claim_or_an_unclaimed_attempt_and_stops_charging<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let mut flagged = sub.next_version(now);
    flagged.status = SubscriptionStatus::NeedsReview;
    // Someone else's live claim: left to its holder.
    conflict(
        l.flag_review(&ReviewFlag {
            attempt: &a,
            token: None,
            reason: "foreign",
            next: &flagged,
            now,
        })
        .await,
    );
    conflict(
        l.flag_review(&ReviewFlag {
            attempt: &a,
            token: Some("run-x"),
            reason: "foreign",
            next: &flagged,
            now,
        })
        .await,
    );
    // A stale version: nothing written.
    let mut stale = flagged.clone();
    stale.version += 3;
    conflict(
        l.flag_review(&ReviewFlag {
            attempt: &a,
            token: Some("run-1"),
            reason: "foreign",
            next: &stale,
            now,
        })
        .await,
    );
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Claimed);
    // The holder flags it: attempt and subscription change together, the
    // subscription leaves the due index, the attempt joins the review list.
    l.flag_review(&ReviewFlag {
        attempt: &a,
        token: Some("run-1"),
        reason: "foreign payment",
        next: &flagged,
        now,
    })
    .await
    .unwrap();
    let stored = attempt_of(&l, &a).await;
    assert_eq!(stored.state, AttemptState::NeedsReview);
    assert_eq!(stored.fail_reason.as_deref(), Some("foreign payment"));
    assert_eq!(stored.claim_token, None);
    assert_eq!(
        l.get_subscription(&sub.id).await.unwrap().unwrap().status,
        SubscriptionStatus::NeedsReview
    );
    let due = l
        .due_page(now + Duration::days(400), 100, None)
        .await
        .unwrap();
    assert!(!due.ids.contains(&sub.id));
    assert!(due.attempts.is_empty());
    let review = l.review_page(10, None).await.unwrap();
    assert_eq!(
        review.attempts,
        vec![(sub.id.clone(), a.period.clone(), a.attempt)]
    );
    // Paid and flagged attempts are not flagged (again).
    conflict(
        l.flag_review(&ReviewFlag {
            attempt: &a,
            token: None,
            reason: "again",
            next: &flagged.next_version(now),
            now,
        })
        .await,
    );

    // A failed attempt (a payment arriving after it was settled as declined) is flagged without a claim.
    let sub2 = live(&l, now).await;
    let b = current(&sub2, "run-2", now);
    let sub2 = claim(&l, &b, &sub2).await.unwrap();
    let mut after_decline = sub2.next_version(now);
    after_decline.attempt = 2;
    after_decline.status = SubscriptionStatus::PastDue;
    let retry = t("2026-12-25T15:00:00Z");
    l.settle(&Settlement {
        attempt: &b,
        result: &AttemptResult {
            retry_at: Some(retry),
            ..declined("잔액부족")
        },
        guard: Guard::Claim("run-2"),
        next: &after_decline,
        now,
    })
    .await
    .unwrap();
    assert_eq!(
        attempt_of(&l, &b).await.retry_at,
        Some(retry),
        "a settlement keeps when the period is charged again"
    );
    let mut flagged2 = after_decline.next_version(now);
    flagged2.status = SubscriptionStatus::NeedsReview;
    l.flag_review(&ReviewFlag {
        attempt: &b,
        token: None,
        reason: "late payment",
        next: &flagged2,
        now: now + Duration::seconds(5),
    })
    .await
    .unwrap();
    assert_eq!(attempt_of(&l, &b).await.state, AttemptState::NeedsReview);
    // Oldest flag first, page by page.
    let first = l.review_page(1, None).await.unwrap();
    assert_eq!(first.attempts.len(), 1);
    assert_eq!(first.attempts[0].0, sub.id);
    let second = l.review_page(1, first.next.as_ref()).await.unwrap();
    assert_eq!(second.attempts[0].0, sub2.id);
}

async fn a_person_resolves_a_flagged_attempt_once<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let mut flagged = sub.next_version(now);
    flagged.status = SubscriptionStatus::NeedsReview;
    // Not flagged yet: nothing to resolve.
    let resolution = Resolution {
        state: AttemptState::Paid,
        note: "customer confirmed".into(),
        actor: "ops@shop".into(),
        at: now,
    };
    let mut resolved = flagged.next_version(now);
    resolved.status = SubscriptionStatus::Active;
    let entry = audit(&sub, "resolve", now);
    conflict(
        l.resolve(&ReviewDecision {
            attempt: &a,
            result: &paid("imps_7", now),
            resolution: &resolution,
            next: &resolved,
            audit: &entry,
        })
        .await,
    );
    l.flag_review(&ReviewFlag {
        attempt: &a,
        token: Some("run-1"),
        reason: "mismatch",
        next: &flagged,
        now,
    })
    .await
    .unwrap();
    // A stale version: nothing written.
    let mut stale = resolved.clone();
    stale.version += 1;
    conflict(
        l.resolve(&ReviewDecision {
            attempt: &a,
            result: &paid("imps_7", now),
            resolution: &resolution,
            next: &stale,
            audit: &entry,
        })
        .await,
    );
    l.resolve(&ReviewDecision {
        attempt: &a,
        result: &paid("imps_7", now),
        resolution: &resolution,
        next: &resolved,
        audit: &entry,
    })
    .await
    .unwrap();
    let stored = attempt_of(&l, &a).await;
    assert_eq!(stored.state, AttemptState::Paid);
    assert_eq!(stored.imp_uid.as_deref(), Some("imps_7"));
    assert_eq!(stored.resolution, Some(resolution.clone()));
    assert!(l.review_page(10, None).await.unwrap().attempts.is_empty());
    assert_eq!(l.history(&sub.id, 5).await.unwrap(), vec![entry.clone()]);
    conflict(
        l.resolve(&ReviewDecision {
            attempt: &a,
            result: &paid("imps_7", now),
            resolution: &resolution,
            next: &resolved.next_version(now),
            audit: &entry,
        })
        .await,
    );
}

async fn due_pages_carry_on_through_a_cursor_and_skip_what_is_not_due<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let mut due = std::collections::BTreeSet::new();
    for i in 0..23 {
        let id = SubscriptionId::generate();
        let mut sub = sample_subscription(&id, now - Duration::days(40));
        match i % 5 {
            0 => sub.next_charge_at = now + Duration::days(2),
            1 => sub.status = SubscriptionStatus::Suspended,
            2 => sub.status = SubscriptionStatus::NeedsReview,
            _ => {
                sub.next_charge_at = now - Duration::hours(i);
                due.insert(id.clone());
            }
        }
        let reg = registration(&id, now);
        l.put_registration(&reg).await.unwrap();
        l.activate(&activation(&reg, &sub)).await.unwrap();
    }
    // Due exactly now counts as due.
    let id = SubscriptionId::generate();
    let mut sub = sample_subscription(&id, now - Duration::days(40));
    sub.next_charge_at = now;
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    l.activate(&activation(&reg, &sub)).await.unwrap();
    due.insert(id);

    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = l.due_page(now, 2, cursor.as_ref()).await.unwrap();
        pages += 1;
        assert!(page.ids.len() <= 2);
        assert!(
            page.corrupt.is_empty() && page.attempts.is_empty() && page.registrations.is_empty()
        );
        for id in page.ids {
            assert!(seen.insert(id), "a subscription came twice");
        }
        match page.next {
            // A cursor survives being carried as text.
            Some(c) => cursor = Some(Cursor::from_text(c.as_str())),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen, due);
    assert!(pages >= due.len() / 2, "expected pages of two, got {pages}");
}

async fn a_cursor_that_is_not_the_ledgers_is_refused<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    live(&l, now).await;
    for text in ["garbage", "x|y|z"] {
        let foreign = Cursor::from_text(text);
        assert!(
            matches!(
                l.due_page(now, 2, Some(&foreign)).await,
                Err(LedgerError::Fatal(_))
            ),
            "due page with {text:?}"
        );
        assert!(
            matches!(
                l.review_page(2, Some(&foreign)).await,
                Err(LedgerError::Fatal(_))
            ),
            "review page with {text:?}"
        );
    }
}

async fn attempts_list_in_period_and_attempt_order<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let mut sub = sub;
    for (period, attempt) in [("202702", 1), ("202612", 2), ("202612", 1), ("202701", 10)] {
        sub = claim(&l, &claimed(&sub, period, attempt, "r", now), &sub)
            .await
            .unwrap();
    }
    let other = live(&l, now).await;
    claim(&l, &claimed(&other, "202612", 1, "r", now), &other)
        .await
        .unwrap();
    let listed: Vec<(String, u32)> = l
        .list_attempts(&sub.id)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.period.to_string(), a.attempt))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("202612".into(), 1),
            ("202612".into(), 2),
            ("202701".into(), 10),
            ("202702".into(), 1)
        ]
    );
}

async fn changes_are_versioned_audited_and_release_the_plan_lock<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    let sub = sample_subscription(&id, now);
    let sub = Subscription {
        user_id: reg.user_id.clone(),
        ..sub
    };
    l.put_registration(&reg).await.unwrap();
    l.activate(&Activation {
        plan_lock: true,
        ..activation(&reg, &sub)
    })
    .await
    .unwrap();
    // A versioned change cannot create a subscription out of nothing.
    let orphan = Subscription {
        id: SubscriptionId::generate(),
        version: 1,
        ..sub.clone()
    };
    conflict(
        l.change_subscription(&SubscriptionChange {
            next: &orphan,
            audit: None,
            lock: LockChange::Keep,
        })
        .await,
    );
    let mut period_end = sub.next_version(now);
    period_end.cancel_at_period_end = true;
    let first = audit(&sub, "cancel", now);
    l.change_subscription(&SubscriptionChange {
        next: &period_end,
        audit: Some(&first),
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    // Two changes from one copy: the second loses and writes nothing.
    let mut racing = sub.next_version(now);
    racing.plan.amount = 1;
    let lost = audit(&sub, "plan", now + Duration::seconds(1));
    conflict(
        l.change_subscription(&SubscriptionChange {
            next: &racing,
            audit: Some(&lost),
            lock: LockChange::Keep,
        })
        .await,
    );
    assert_eq!(l.history(&id, 10).await.unwrap(), vec![first.clone()]);
    // Ending it releases the user's lock on the plan.
    let mut ended = period_end.next_version(now);
    ended.status = SubscriptionStatus::Cancelled;
    let second = audit(&sub, "cancel", now + Duration::seconds(2));
    l.change_subscription(&SubscriptionChange {
        next: &ended,
        audit: Some(&second),
        lock: LockChange::Release(&sub.plan.name),
    })
    .await
    .unwrap();
    assert!(l.user_items(&sub.user_id).await.unwrap().locks.is_empty());
    assert_eq!(l.history(&id, 10).await.unwrap(), vec![second, first]);
    assert_eq!(l.get_subscription(&id).await.unwrap().unwrap(), ended);
}

async fn instants_are_kept_to_the_second<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00.750Z");
    let sub = live(&l, t("2026-12-24T15:00:00Z")).await;
    let a = claimed(&sub, "202612", 1, "r", now);
    claim(&l, &a, &sub).await.unwrap();
    let back = attempt_of(&l, &a).await;
    assert_eq!(back.created_at, t("2026-12-24T15:00:00Z"));
    assert_eq!(back.lease_until, Some(t("2026-12-24T15:05:00Z")));
}

async fn refunds_only_ever_grow<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    assert!(l.record_refund(&a, 3000, now, None).await.unwrap());
    assert!(
        !l.record_refund(&a, 3000, now, None).await.unwrap(),
        "a duplicate changes nothing"
    );
    assert!(
        !l.record_refund(&a, 1000, now, None).await.unwrap(),
        "out of order changes nothing"
    );
    let entry = audit(&sub, "refund", now);
    assert!(l.record_refund(&a, 9900, now, Some(&entry)).await.unwrap());
    let seen = attempt_of(&l, &a).await;
    assert_eq!(
        (seen.refunded, seen.refund_cause),
        (9900, Some(shared::billing::RefundCause::PgReported)),
        "a refund seen at the PG says so"
    );
    assert_eq!(l.history(&sub.id, 5).await.unwrap(), vec![entry.clone()]);
    // A refund that changes nothing leaves no audit entry either.
    let late = audit(&sub, "refund", now + Duration::seconds(9));
    assert!(!l.record_refund(&a, 9900, now, Some(&late)).await.unwrap());
    assert_eq!(l.history(&sub.id, 5).await.unwrap().len(), 1);
    let missing = claimed(&sub, "203001", 1, "x", now);
    assert!(
        !l.record_refund(&missing, 100, now, None).await.unwrap(),
        "a refund creates no record"
    );
    assert!(
        l.get_attempt(&sub.id, &missing.period, 1)
            .await
            .unwrap()
            .is_none()
    );
}

/// Defect D3: a refund request is written before the gateway hears of it,
/// a retry with the same key gets that very request back (never a fresh
/// checksum), and it is finished once, with the refunded total and the
/// audit entry together.
async fn a_refund_request_is_kept_under_its_key_and_finished_once<L: Subject>(l: L) {
    use shared::ledger::{RefundIntent, RefundState};
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    assert_eq!(l.get_refund(&a, "key-1").await.unwrap(), None);
    let first = RefundIntent {
        key: "key-1".into(),
        merchant_uid: a.merchant_uid.clone(),
        imp_uid: "imps_1".into(),
        amount: 3000,
        checksum: 9900,
        reason: "goodwill".into(),
        cause: shared::billing::RefundCause::Requested,
        state: RefundState::Requested,
        refunded_total: None,
        review_reason: None,
        created_at: now,
        updated_at: now,
    };
    assert_eq!(l.begin_refund(&a, &first).await.unwrap(), first);
    // A retry after a crash, with a newer view: the first request stands.
    let retry = RefundIntent {
        checksum: 6900,
        updated_at: now + Duration::minutes(10),
        ..first.clone()
    };
    assert_eq!(l.begin_refund(&a, &retry).await.unwrap(), first);
    assert_eq!(
        l.get_refund(&a, "key-1").await.unwrap(),
        Some(first.clone())
    );
    let done = RefundIntent {
        state: RefundState::Done,
        refunded_total: Some(3000),
        updated_at: now + Duration::seconds(5),
        ..first.clone()
    };
    let entry = audit(&sub, "refund", now);
    l.finish_refund(&a, &done, Some(&entry)).await.unwrap();
    let refunded = attempt_of(&l, &a).await;
    assert_eq!(
        (refunded.refunded, refunded.refund_cause),
        (3000, Some(shared::billing::RefundCause::Requested)),
        "the attempt says what the refund was"
    );
    assert_eq!(l.history(&sub.id, 5).await.unwrap(), vec![entry]);
    assert_eq!(l.get_refund(&a, "key-1").await.unwrap(), Some(done.clone()));
    // Finished once: a second finish (a racing retry) is a conflict and
    // writes nothing; beginning it again answers the finished one.
    conflict(l.finish_refund(&a, &done, None).await);
    assert_eq!(l.begin_refund(&a, &retry).await.unwrap(), done);
    // A refused request raises the refunded total to what the gateway showed,
    // and leaves no audit entry.
    let other = RefundIntent {
        key: "key-2".into(),
        ..first.clone()
    };
    l.begin_refund(&a, &other).await.unwrap();
    let refused = RefundIntent {
        state: RefundState::Refused,
        refunded_total: Some(5000),
        ..other
    };
    l.finish_refund(&a, &refused, None).await.unwrap();
    assert_eq!(attempt_of(&l, &a).await.refunded, 5000);
    assert_eq!(l.history(&sub.id, 5).await.unwrap().len(), 1);
}

/// A refund whose outcome was lost is in the review queue (counted and
/// paged beside the flagged attempts) with its reason, until it is
/// finished; only a stored, still requested refund can be flagged.
async fn a_refund_whose_outcome_is_unknown_waits_for_review_until_it_is_finished<L: Subject>(l: L) {
    use shared::ledger::{RefundIntent, RefundState};
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    claim(&l, &a, &sub).await.unwrap();
    let asked = RefundIntent {
        key: "key-1".into(),
        merchant_uid: a.merchant_uid.clone(),
        imp_uid: "imps_1".into(),
        amount: 3000,
        checksum: 9900,
        reason: "prorated cancel".into(),
        cause: shared::billing::RefundCause::ProratedCancel,
        state: RefundState::Requested,
        refunded_total: None,
        review_reason: None,
        created_at: now,
        updated_at: now,
    };
    conflict(l.flag_refund(&a, "key-1", "lost", now).await);
    l.begin_refund(&a, &asked).await.unwrap();
    assert_eq!(l.count_review().await.unwrap(), 0);
    let later = now + Duration::seconds(30);
    l.flag_refund(&a, "key-1", "refund outcome unknown: timeout", later)
        .await
        .unwrap();
    // Flagged twice (a retry that lost its answer again): still one entry.
    l.flag_refund(&a, "key-1", "refund outcome unknown: timeout", later)
        .await
        .unwrap();
    assert_eq!(l.count_review().await.unwrap(), 1);
    let page = l.review_page(10, None).await.unwrap();
    assert!(page.attempts.is_empty());
    assert_eq!(
        page.refunds,
        vec![(sub.id.clone(), a.merchant_uid.clone(), "key-1".to_owned())]
    );
    let stored = l.get_refund(&a, "key-1").await.unwrap().unwrap();
    assert_eq!(
        stored.review_reason.as_deref(),
        Some("refund outcome unknown: timeout")
    );
    assert_eq!(stored.state, RefundState::Requested);
    // The same key resumed it and the PG's record showed it done.
    let done = RefundIntent {
        state: RefundState::Done,
        refunded_total: Some(3000),
        updated_at: later + Duration::seconds(5),
        ..stored
    };
    l.finish_refund(&a, &done, None).await.unwrap();
    assert_eq!(l.count_review().await.unwrap(), 0);
    assert!(l.review_page(10, None).await.unwrap().refunds.is_empty());
    assert_eq!(l.get_refund(&a, "key-1").await.unwrap(), Some(done));
    conflict(l.flag_refund(&a, "key-1", "late", later).await);
    assert_eq!(l.count_review().await.unwrap(), 0);
    // A refused one a person must see to waits until it is dismissed.
    let other = RefundIntent {
        key: "key-2".into(),
        ..asked.clone()
    };
    l.begin_refund(&a, &other).await.unwrap();
    let refused = RefundIntent {
        state: RefundState::Refused,
        refunded_total: Some(0),
        updated_at: later,
        ..other
    };
    l.finish_refund(&a, &refused, None).await.unwrap();
    let entry = audit(&sub, "refund dismissed", later + Duration::minutes(5));
    conflict(l.dismiss_refund(&a, "key-2", &entry).await);
    l.flag_refund(&a, "key-2", "refused by the PG", later)
        .await
        .unwrap();
    assert_eq!(l.count_review().await.unwrap(), 1);
    assert_eq!(
        l.get_refund(&a, "key-2").await.unwrap().unwrap().state,
        RefundState::Refused
    );
    conflict(l.dismiss_refund(&a, "key-1", &entry).await);
    l.dismiss_refund(&a, "key-2", &entry).await.unwrap();
    assert_eq!(l.count_review().await.unwrap(), 0);
    assert!(l.review_page(10, None).await.unwrap().refunds.is_empty());
    assert!(l.history(&sub.id, 10).await.unwrap().contains(&entry));
    conflict(l.dismiss_refund(&a, "key-2", &entry).await);
}

async fn a_corrupt_subscription_is_reported_not_hidden<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let other = live(&l, now).await;
    l.corrupt(&sub.id).await;
    assert!(matches!(
        l.get_subscription(&sub.id).await,
        Err(LedgerError::Corrupt(_))
    ));
    // The others read as ever.
    assert_eq!(l.get_subscription(&other.id).await.unwrap().unwrap(), other);
}

async fn a_pending_registration_is_due_for_a_sweep_until_it_completes<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    let without_sweep = Registration {
        merchant_uid: "rnosweep00000".into(),
        sweep_at: None,
        ..registration(&SubscriptionId::generate(), now)
    };
    l.put_registration(&without_sweep).await.unwrap();
    let l = &l;
    let due_at = |at| async move {
        let page = l.due_page(at, 100, None).await.unwrap();
        (page.ids, page.registrations)
    };
    assert_eq!(
        due_at(now).await,
        (vec![], vec![]),
        "not before its sweep_at"
    );
    let later = now + Duration::minutes(31);
    assert_eq!(
        due_at(later).await,
        (vec![], vec![reg.merchant_uid.clone()])
    );
    let sub = sample_subscription(&id, now);
    l.activate(&activation(&reg, &sub)).await.unwrap();
    let (ids, regs) = due_at(later + Duration::days(400)).await;
    assert!(regs.is_empty(), "a completed registration leaves the index");
    assert_eq!(ids, vec![id]);
}

async fn an_idempotency_key_answers_its_first_answer_again<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let key = format!("key-{}", SubscriptionId::generate());
    assert_eq!(
        l.begin_request(&key, "fp-1", now).await.unwrap(),
        RequestState::Fresh
    );
    // While the first is handled: in progress; another request: mismatch.
    assert_eq!(
        l.begin_request(&key, "fp-1", now).await.unwrap(),
        RequestState::InProgress
    );
    assert_eq!(
        l.begin_request(&key, "fp-2", now).await.unwrap(),
        RequestState::Mismatch
    );
    let answer = StoredResponse {
        status: 200,
        body: r#"{"ok":true}"#.into(),
    };
    l.finish_request(&key, &answer, now).await.unwrap();
    assert_eq!(
        l.begin_request(&key, "fp-1", now + Duration::hours(1))
            .await
            .unwrap(),
        RequestState::Replay(answer.clone())
    );
    assert_eq!(
        l.begin_request(&key, "fp-2", now).await.unwrap(),
        RequestState::Mismatch
    );
    // A key whose handler died is free again after a while; one abandoned at once.
    let stuck = format!("stuck-{}", SubscriptionId::generate());
    l.begin_request(&stuck, "fp", now).await.unwrap();
    assert_eq!(
        l.begin_request(&stuck, "fp", now + Duration::minutes(6))
            .await
            .unwrap(),
        RequestState::Fresh
    );
    l.abandon_request(&stuck).await.unwrap();
    assert_eq!(
        l.begin_request(&stuck, "fp", now).await.unwrap(),
        RequestState::Fresh
    );
    // Forgotten after a day.
    assert_eq!(
        l.begin_request(&key, "fp-9", now + Duration::hours(25))
            .await
            .unwrap(),
        RequestState::Fresh
    );
}

/// Not part of the contract: the DynamoDB adapter's own item layout.
#[tokio::test]
async fn dynamodb_due_index_attributes_are_present_only_while_chargeable() {
    let l = fresh_ledger(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let (pk, sk) = DynamoLedger::subscription_key(&sub.id);
    let item = l.raw_item(&pk, &sk).await.unwrap().unwrap();
    assert!(item.contains_key("gsi1pk") && item.contains_key("gsi1sk"));
    let mut suspended = sub.next_version(now);
    suspended.status = SubscriptionStatus::Suspended;
    l.change_subscription(&SubscriptionChange {
        next: &suspended,
        audit: None,
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    let item = l.raw_item(&pk, &sk).await.unwrap().unwrap();
    assert!(!item.contains_key("gsi1pk") && !item.contains_key("gsi1sk"));
}

/// Not part of the contract: the DynamoDB adapter seals billing keys at
/// rest (defect X3). The stored item holds no key; a ledger without the
/// KMS key refuses to read it rather than handing out the sealed text; a
/// key written before sealing was on is read as it is and sealed on the
/// next write; every process of the table shares one data key.
#[tokio::test]
async fn dynamodb_billing_keys_are_sealed_at_rest() {
    let l = fresh_ledger(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let (pk, sk) = DynamoLedger::subscription_key(&sub.id);
    let item = l.raw_item(&pk, &sk).await.unwrap().unwrap();
    let stored = match item.get("customer_uid") {
        Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => v.clone(),
        other => panic!("{other:?}"),
    };
    assert!(stored.starts_with("sealed1:"), "{stored}");
    assert!(
        !format!("{item:?}").contains(&sub.customer_uid),
        "the key is nowhere in the item"
    );
    assert_eq!(l.get_subscription(&sub.id).await.unwrap().unwrap(), sub);
    // Without the KMS key: refused, never the sealed text as a key.
    let bare = DynamoLedger::new(l.client().clone(), l.table_name(), 4);
    assert!(matches!(
        bare.get_subscription(&sub.id).await,
        Err(shared::ledger::LedgerError::Corrupt(_))
    ));
    // Another process of the same table (the same KMS key) reads it: the
    // keyring item holds the one wrapped data key.
    let kms_key_id = match l
        .raw_item("KEYRING", "billing-keys")
        .await
        .unwrap()
        .unwrap()
        .get("kms_key_id")
    {
        Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => v.clone(),
        other => panic!("{other:?}"),
    };
    let other = DynamoLedger::new(l.client().clone(), l.table_name(), 4)
        .with_sealed_keys(testkit::kms_client().await, &kms_key_id);
    assert_eq!(other.get_subscription(&sub.id).await.unwrap().unwrap(), sub);
    // Written before sealing was on: read as it is, sealed when next written.
    let plain = live(&bare, now).await;
    assert_eq!(l.get_subscription(&plain.id).await.unwrap().unwrap(), plain);
    let next = plain.next_version(now);
    l.change_subscription(&SubscriptionChange {
        next: &next,
        audit: None,
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    let (pk, sk) = DynamoLedger::subscription_key(&plain.id);
    let item = l.raw_item(&pk, &sk).await.unwrap().unwrap();
    assert!(!format!("{item:?}").contains(&plain.customer_uid));
    assert_eq!(l.get_subscription(&plain.id).await.unwrap().unwrap(), next);
}

/// Not part of the contract: DynamoDB deletes a registration days after it
/// expired, so a run that failed for a day still sweeps it.
#[tokio::test]
async fn dynamodb_keeps_an_expired_registration_for_the_sweep() {
    let l = fresh_ledger(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let reg = registration(&SubscriptionId::generate(), now);
    l.put_registration(&reg).await.unwrap();
    let item = l
        .raw_item(&format!("REG#{}", reg.merchant_uid), "META")
        .await
        .unwrap()
        .unwrap();
    let ttl: i64 = match item.get("ttl") {
        Some(aws_sdk_dynamodb::types::AttributeValue::N(v)) => v.parse().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(ttl >= (reg.expires_at.unwrap() + Duration::days(3)).timestamp());
    assert_eq!(
        l.get_registration(&reg.merchant_uid)
            .await
            .unwrap()
            .unwrap(),
        reg
    );
}

fn plan(id: &str, version: u32, amount: i64, at: DateTime<Utc>) -> PlanRecord {
    PlanRecord {
        id: PlanId::parse(id).unwrap(),
        version,
        name: format!("{id} v{version}"),
        amount,
        interval: Interval::Month,
        notice_days: 3 + (version % 2) as u16,
        // Odd versions have a trial: its terms are kept with the version.
        trial: (version % 2 == 1).then_some(shared::billing::trials::TrialTerms {
            days: 14,
            consent: shared::billing::trials::ConversionConsent::Explicit,
            on_no_consent: shared::billing::trials::OnNoConsent::ExtendTrialOnce,
        }),
        created_at: at,
        tax: shared::billing::TaxSetting::Taxable,
        // Even versions bill on a fixed day: kept with the version too.
        billing: version
            .is_multiple_of(2)
            .then_some(shared::billing::BillingDay {
                day: 31,
                first: shared::billing::FirstPeriod::Free,
            }),
    }
}

async fn a_plan_version_is_written_once_and_the_newest_is_current<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00.750Z");
    let id = PlanId::parse("basic-monthly").unwrap();
    assert_eq!(l.get_plan(&id, None).await.unwrap(), None);
    let v1 = plan("basic-monthly", 1, 9900, now);
    l.put_plan(&v1).await.unwrap();
    let mut rewritten = v1.clone();
    rewritten.amount = 1;
    assert!(
        matches!(l.put_plan(&rewritten).await, Err(LedgerError::Conflict(_))),
        "a version is never rewritten"
    );
    let stored = l.get_plan(&id, None).await.unwrap().unwrap();
    assert_eq!(stored.amount, 9900);
    assert_eq!(
        stored.created_at,
        t("2026-12-24T15:00:00Z"),
        "kept to the second"
    );
    let v2 = plan("basic-monthly", 2, 12900, now);
    l.put_plan(&v2).await.unwrap();
    assert_eq!(l.get_plan(&id, None).await.unwrap().unwrap().version, 2);
    assert_eq!(
        l.get_plan(&id, Some(1)).await.unwrap().unwrap().amount,
        9900
    );
    assert_eq!(l.get_plan(&id, Some(3)).await.unwrap(), None);
    // The current version never moves back.
    let other = PlanId::parse("basic").unwrap();
    assert_eq!(
        l.get_plan(&other, None).await.unwrap(),
        None,
        "ids are not prefixes"
    );
}

async fn the_plan_catalogue_pages_by_id_through_a_cursor<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    for id in ["team", "basic", "pro", "lite", "family"] {
        l.put_plan(&plan(id, 1, 9900, now)).await.unwrap();
    }
    l.put_plan(&plan("pro", 2, 19900, now)).await.unwrap();
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = l.plans_page(2, cursor.as_ref()).await.unwrap();
        pages += 1;
        assert!(page.plans.len() <= 2);
        seen.extend(
            page.plans
                .into_iter()
                .map(|p| (p.id.to_string(), p.version)),
        );
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            ("basic", 1),
            ("family", 1),
            ("lite", 1),
            ("pro", 2),
            ("team", 1)
        ]
        .map(|(id, v)| (id.to_owned(), v))
        .to_vec(),
        "by id, the newest version of each, once"
    );
    assert!(pages >= 3, "pages of two: {pages}");
    for text in ["garbage", "plans|Not An Id", "0|x|y|z|1"] {
        assert!(
            matches!(
                l.plans_page(2, Some(&Cursor::from_text(text))).await,
                Err(LedgerError::Fatal(_))
            ),
            "plans page with {text:?}"
        );
    }
}

async fn a_sign_up_keeps_the_plan_version_it_agreed_to<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let agreed = PlanRef {
        id: PlanId::parse("basic-monthly").unwrap(),
        version: 3,
    };
    let mut reg = registration(&id, now);
    reg.plan_ref = Some(agreed.clone());
    l.put_registration(&reg).await.unwrap();
    assert_eq!(
        l.get_registration(&reg.merchant_uid)
            .await
            .unwrap()
            .unwrap()
            .plan_ref,
        Some(agreed.clone())
    );
    let mut sub = sample_subscription(&id, now);
    sub.plan_ref = Some(agreed.clone());
    l.activate(&activation(&reg, &sub)).await.unwrap();
    assert_eq!(
        l.get_subscription(&id).await.unwrap().unwrap().plan_ref,
        Some(agreed)
    );
}

/// Issue 23 §1: a subscription's place in the due index is the earlier of
/// its renewal notice and its charge; a recorded notice (a version-checked
/// change) moves it back to the charge, and a stale one writes nothing.
async fn a_renewal_is_due_at_its_notice_and_at_its_charge_once_noticed<L: Subject>(l: L) {
    use shared::billing::notices::{KeyCheck, noticed};
    let now = t("2026-12-24T01:00:00Z");
    let sub = live(&l, now).await;
    let renewing = Subscription {
        period_index: 1,
        attempt: 1,
        next_charge_at: now + Duration::days(5),
        ..sub.next_version(now)
    };
    l.change_subscription(&SubscriptionChange {
        next: &renewing,
        audit: None,
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    let due = |at: DateTime<Utc>| {
        let l = &l;
        async move { l.due_page(at, 100, None).await.unwrap().ids }
    };
    // 7 days' notice, 5 days before the charge: due now, not a second
    // before the notice's time.
    let notice_at = renewing.next_charge_at - Duration::days(7);
    assert_eq!(due(now).await, vec![sub.id.clone()]);
    assert_eq!(due(notice_at - Duration::seconds(1)).await, vec![]);
    assert_eq!(due(notice_at).await, vec![sub.id.clone()]);
    let sent = noticed(&renewing, KeyCheck::OnFile, now);
    let stale = Subscription {
        version: renewing.version,
        ..sent.clone()
    };
    assert!(
        l.change_subscription(&SubscriptionChange {
            next: &stale,
            audit: None,
            lock: LockChange::Keep,
        })
        .await
        .unwrap_err()
        .is_conflict()
    );
    l.change_subscription(&SubscriptionChange {
        next: &sent,
        audit: None,
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    let stored = l.get_subscription(&sub.id).await.unwrap().unwrap();
    assert_eq!(stored.notice, sent.notice, "the notice reads back whole");
    assert_eq!(due(now).await, vec![], "noticed: out until its charge");
    assert_eq!(
        due(renewing.next_charge_at).await,
        vec![sub.id.clone()],
        "due for its charge"
    );
}

/// Issue 23 §2: a trial's terms and the sign-up's consent round-trip on the
/// registration; the trialing subscription keeps its trial (end, extension,
/// consent), and sits in the due index at its notice, then at its end.
async fn a_trial_is_stored_with_its_terms_and_consent_and_due_at_its_notice<L: Subject>(l: L) {
    use shared::billing::notices::{KeyCheck, noticed};
    use shared::billing::trials::{
        Consent, ConversionConsent, OnNoConsent, Trial, TrialTerms, trial_end,
    };
    let now = t("2026-12-03T01:00:00Z");
    let id = SubscriptionId::generate();
    let terms = TrialTerms {
        days: 21,
        consent: ConversionConsent::Signup,
        on_no_consent: OnNoConsent::ExtendTrialOnce,
    };
    let consent = Consent {
        channel: "web".into(),
        reference: "tick-1".into(),
        at: now - Duration::minutes(3),
        recorded_at: now,
    };
    let reg = Registration {
        trial: Some(terms),
        consent: Some(consent.clone()),
        ..registration(&id, now)
    };
    l.put_registration(&reg).await.unwrap();
    assert_eq!(
        l.get_registration(&reg.merchant_uid).await.unwrap(),
        Some(reg.clone())
    );
    let (anchor, ends_at) = trial_end(21, now);
    let sub = Subscription {
        status: SubscriptionStatus::Trialing,
        anchor,
        next_charge_at: ends_at,
        trial: Some(Trial {
            terms,
            ends_at,
            extended: true,
            consent: Some(consent),
        }),
        ..sample_subscription(&id, now)
    };
    l.activate(&activation(&reg, &sub)).await.unwrap();
    assert_eq!(l.get_subscription(&id).await.unwrap(), Some(sub.clone()));
    let due = |at: DateTime<Utc>| {
        let l = &l;
        async move { l.due_page(at, 100, None).await.unwrap().ids }
    };
    let notice_at = ends_at - Duration::days(7);
    assert_eq!(due(notice_at - Duration::seconds(1)).await, vec![]);
    assert_eq!(due(notice_at).await, vec![id.clone()]);
    let told = noticed(&sub, KeyCheck::OnFile, notice_at);
    l.change_subscription(&SubscriptionChange {
        next: &told,
        audit: None,
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    assert_eq!(l.get_subscription(&id).await.unwrap(), Some(told));
    assert_eq!(due(ends_at - Duration::seconds(1)).await, vec![]);
    assert_eq!(due(ends_at).await, vec![id]);
}

async fn a_price_increase_is_due_at_its_consent_request_and_listed_until_answered<L: Subject>(
    l: L,
) {
    use shared::billing::price_changes::{self, OnNoConsent, Request};
    use shared::billing::trials::Consent;
    let now = t("2026-12-03T01:00:00Z");
    let mut pending = Vec::new();
    for _ in 0..3 {
        let sub = live(&l, now).await;
        let request = Request {
            plan: Plan {
                amount: sub.plan.amount + 5000,
                ..sub.plan.clone()
            },
            plan_ref: Some(PlanRef {
                id: PlanId::parse("monthly-plus").unwrap(),
                version: 2,
            }),
            effective: None,
            on_no_consent: OnNoConsent::KeepOldPrice,
            window_days: 30,
            started: false,
        };
        let next = price_changes::requested(&sub, request, now).unwrap();
        l.change_subscription(&SubscriptionChange {
            next: &next,
            audit: None,
            lock: LockChange::Keep,
        })
        .await
        .unwrap();
        assert_eq!(
            l.get_subscription(&sub.id).await.unwrap(),
            Some(next.clone())
        );
        pending.push(next);
    }
    // Due at the earlier of its charge and its consent request.
    let first = &pending[0];
    let due_at = first.due_at().unwrap();
    let asks_at = first.consent_request_at().unwrap();
    assert!(due_at <= asks_at);
    // Three subscriptions spread over the shards: read every page.
    let due = |at: DateTime<Utc>| {
        let l = &l;
        async move {
            let mut ids = Vec::new();
            let mut cursor: Option<Cursor> = None;
            loop {
                let page = l.due_page(at, 100, cursor.as_ref()).await.unwrap();
                ids.extend(page.ids);
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => return ids,
                }
            }
        }
    };
    assert!(due(due_at).await.contains(&first.id));
    assert!(!due(due_at - Duration::seconds(1)).await.contains(&first.id));
    // Listed, page by page, until answered.
    let listed = |limit: usize| {
        let l = &l;
        async move {
            let mut ids = Vec::new();
            let mut cursor: Option<Cursor> = None;
            for _ in 0..10 {
                let page = l
                    .pending_consent_page(limit, cursor.as_ref())
                    .await
                    .unwrap();
                ids.extend(page.ids);
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            ids.sort();
            ids
        }
    };
    let mut all: Vec<SubscriptionId> = pending.iter().map(|s| s.id.clone()).collect();
    all.sort();
    assert_eq!(listed(2).await, all);
    assert_eq!(listed(100).await, all);
    // Asked: still waiting. Consented or declined: off the list.
    let asked = price_changes::asked(&pending[0], asks_at);
    let starts = asked
        .coming_period(&asked.price_change.as_ref().unwrap().effective)
        .unwrap()
        .1;
    let consent = Consent {
        channel: "app".into(),
        reference: "ok-1".into(),
        at: asks_at + Duration::days(1),
        recorded_at: asks_at + Duration::days(1),
    };
    let yes = price_changes::consented(&asked, consent, 30, asks_at + Duration::days(1))
        .unwrap()
        .unwrap();
    assert!(starts > asks_at);
    let no = price_changes::declined(&pending[1], asks_at)
        .unwrap()
        .unwrap();
    for next in [&asked, &yes, &no] {
        l.change_subscription(&SubscriptionChange {
            next,
            audit: None,
            lock: LockChange::Keep,
        })
        .await
        .unwrap();
    }
    assert_eq!(
        l.get_subscription(&yes.id).await.unwrap(),
        Some(yes.clone())
    );
    assert_eq!(listed(100).await, vec![pending[2].id.clone()]);
    assert!(
        l.pending_consent_page(10, Some(&Cursor::from_text("nonsense|x|y")))
            .await
            .is_err()
    );
}

async fn a_plan_rollout_comes_with_its_version_and_its_plan_lists_the_live_members<L: Subject>(
    l: L,
) {
    use shared::billing::price_changes::OnNoConsent;
    use shared::billing::rollouts::Rollout;
    let now = t("2026-12-03T01:00:00Z");
    let id = PlanId::parse("basic-monthly").unwrap();
    let v1 = plan("basic-monthly", 1, 9900, now);
    l.put_plan(&v1).await.unwrap();
    // Five subscriptions: three of the plan, one cancelled, one of another plan.
    let mut members = Vec::new();
    for k in 0..5 {
        let sub = live(&l, now).await;
        let mut next = sub.clone();
        next.version += 1;
        next.plan_ref = Some(PlanRef {
            id: PlanId::parse(if k == 4 { "pro" } else { "basic-monthly" }).unwrap(),
            version: 1,
        });
        if k == 3 {
            next.status = SubscriptionStatus::Cancelled;
        }
        l.change_subscription(&SubscriptionChange {
            next: &next,
            audit: None,
            lock: LockChange::Keep,
        })
        .await
        .unwrap();
        if k < 3 {
            members.push(next.id.clone());
        }
    }
    members.sort();
    let listed = |limit: usize| {
        let (l, id) = (&l, &id);
        async move {
            let mut ids = Vec::new();
            let mut cursor: Option<Cursor> = None;
            for _ in 0..20 {
                let page = l
                    .plan_members_page(id, limit, cursor.as_ref())
                    .await
                    .unwrap();
                assert!(page.ids.len() <= limit);
                ids.extend(page.ids);
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            ids.sort();
            ids
        }
    };
    assert_eq!(listed(1).await, members, "one a page");
    assert_eq!(listed(100).await, members);

    assert_eq!(l.get_rollout(&id).await.unwrap(), None);
    assert_eq!(l.open_rollouts().await.unwrap(), vec![]);
    let v2 = plan("basic-monthly", 2, 12900, now);
    let rollout = Rollout {
        plan_id: id.clone(),
        to_version: 2,
        plan: v2.plan(),
        effective: PeriodId::parse("202702").unwrap(),
        on_no_consent: OnNoConsent::KeepOldPrice,
        requested_at: t("2026-12-03T01:00:00.400Z"),
        cursor: None,
        planned: 0,
        skipped: 0,
        done_at: None,
        rev: 1,
    };
    l.put_plan_rollout(&v2, &rollout).await.unwrap();
    let kept = Rollout {
        requested_at: now,
        ..rollout.clone()
    };
    assert_eq!(
        l.get_rollout(&id).await.unwrap(),
        Some(kept.clone()),
        "to the second"
    );
    assert_eq!(l.get_plan(&id, None).await.unwrap().unwrap().version, 2);
    assert_eq!(l.open_rollouts().await.unwrap(), vec![kept.clone()]);
    // One open at a time, and a version is written once.
    let v3 = plan("basic-monthly", 3, 14900, now);
    let third = Rollout {
        to_version: 3,
        plan: v3.plan(),
        ..kept.clone()
    };
    assert!(matches!(
        l.put_plan_rollout(&v3, &third).await,
        Err(LedgerError::Conflict(_))
    ));
    assert!(matches!(
        l.put_plan_rollout(&v2, &kept).await,
        Err(LedgerError::Conflict(_))
    ));
    assert_eq!(
        l.get_plan(&id, None).await.unwrap().unwrap().version,
        2,
        "nothing written"
    );
    // Progress is saved after the one before it only.
    let page = Rollout {
        cursor: Some("somewhere".into()),
        planned: 2,
        skipped: 1,
        rev: 2,
        ..kept.clone()
    };
    l.save_rollout(&page).await.unwrap();
    assert!(
        matches!(l.save_rollout(&page).await, Err(LedgerError::Conflict(_))),
        "the same page twice"
    );
    let done = Rollout {
        done_at: Some(now),
        rev: 3,
        ..page.clone()
    };
    l.save_rollout(&done).await.unwrap();
    assert_eq!(l.open_rollouts().await.unwrap(), vec![]);
    assert_eq!(l.get_rollout(&id).await.unwrap(), Some(done));
    // Once done, the plan's next one may begin.
    l.put_plan_rollout(&v3, &third).await.unwrap();
    assert_eq!(l.open_rollouts().await.unwrap().len(), 1);
}

/// A hard decline's class is kept on the attempt, and the class that
/// stopped the subscription on it; a retry's paid result replaces the
/// decline with its receipt link (decision 72).
/// Settles `a`, claimed by `run-1`, with `result`, moving its subscription to `next`.
async fn settle_under_run_1<L: Ledger>(
    l: &L,
    a: &ChargeAttempt,
    result: &AttemptResult,
    next: &Subscription,
    now: DateTime<Utc>,
) {
    l.settle(&Settlement {
        attempt: a,
        result,
        guard: Guard::Claim("run-1"),
        next,
        now,
    })
    .await
    .unwrap();
}

async fn a_settlement_keeps_the_decline_class_and_the_receipt_link<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let mut stopped = sub.next_version(now);
    stopped.status = SubscriptionStatus::ActionRequired;
    stopped.action_reason = Some(DeclineClass::CardLostOrStolen);
    let lost = AttemptResult {
        decline: Some(DeclineClass::CardLostOrStolen),
        ..declined("[8301] 분실카드입니다")
    };
    settle_under_run_1(&l, &a, &lost, &stopped, now).await;
    let stored = attempt_of(&l, &a).await;
    assert_eq!(
        (stored.state, stored.decline, stored.receipt_url),
        (
            AttemptState::Failed,
            Some(DeclineClass::CardLostOrStolen),
            None
        )
    );
    let after = l.get_subscription(&sub.id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.action_reason),
        (
            SubscriptionStatus::ActionRequired,
            Some(DeclineClass::CardLostOrStolen)
        )
    );
    // Another subscription's charge paid, with the PG's receipt link.
    let other = live(&l, now).await;
    let b = current(&other, "run-1", now);
    let other = claim(&l, &b, &other).await.unwrap();
    let mut next = other.next_version(now);
    next.period_index += 1;
    let receipt = "https://receipts.example/imps_2";
    settle_under_run_1(
        &l,
        &b,
        &AttemptResult {
            receipt_url: Some(receipt.into()),
            ..paid("imps_2", now)
        },
        &next,
        now,
    )
    .await;
    let stored = attempt_of(&l, &b).await;
    assert_eq!(
        (stored.decline, stored.receipt_url.as_deref()),
        (None, Some(receipt))
    );
}

/// A plan's tax setting is kept wherever a plan is (the catalogue, a
/// registration, a subscription and its pending plan); an attempt keeps
/// the tax-free part it was claimed with, and its settlement the split the
/// PG reported (decision 73).
async fn tax_settings_and_a_charges_vat_split_read_back_as_written<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let mixed = TaxSetting::Mixed { tax_free: 4000 };
    let record = PlanRecord {
        tax: mixed,
        ..plan("books-monthly", 1, 9900, now)
    };
    l.put_plan(&record).await.unwrap();
    let stored = l.get_plan(&record.id, Some(1)).await.unwrap().unwrap();
    assert_eq!(stored.tax, mixed);
    let id = SubscriptionId::generate();
    let mut reg = registration(&id, now);
    reg.plan.tax = TaxSetting::Exempt;
    l.put_registration(&reg).await.unwrap();
    let back = l
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.plan.tax, TaxSetting::Exempt);

    let sub = live(&l, now).await;
    let mut next = sub.next_version(now);
    next.plan.tax = mixed;
    next.pending_plan = Some(Plan {
        tax: TaxSetting::Exempt,
        ..next.plan.clone()
    });
    l.change_subscription(&SubscriptionChange {
        next: &next,
        audit: None,
        lock: LockChange::Keep,
    })
    .await
    .unwrap();
    let sub = l.get_subscription(&sub.id).await.unwrap().unwrap();
    assert_eq!(
        (sub.plan.tax, sub.pending_plan.as_ref().map(|p| p.tax)),
        (mixed, Some(TaxSetting::Exempt))
    );
    let a = ChargeAttempt {
        tax_free: 4000,
        ..current(&sub, "run-1", now)
    };
    let sub = claim(&l, &a, &sub).await.unwrap();
    assert_eq!(attempt_of(&l, &a).await.tax_free, 4000);
    let mut paid_next = sub.next_version(now);
    paid_next.period_index += 1;
    let reported = TaxSplit {
        supply: 5365,
        vat: 535,
        tax_free: 4000,
    };
    settle_under_run_1(
        &l,
        &a,
        &AttemptResult {
            tax: Some(reported),
            ..paid("imps_tax", now)
        },
        &paid_next,
        now,
    )
    .await;
    let stored = attempt_of(&l, &a).await;
    assert_eq!((stored.tax_free, stored.vat), (4000, Some(535)));
    assert_eq!(stored.tax(), reported);
}

/// A paid charge's cash receipt is written with the settlement and queued
/// at once; each later write is made on the revision read (a claim and a
/// stale claim cannot both win), and on the refunded total read; a refund
/// puts a settled receipt back in the queue; one that gives up is listed
/// for a person only (decision 74).
async fn a_cash_receipt_is_written_with_its_payment_worked_on_its_revision_and_requeued_by_a_refund<
    L: Subject,
>(
    l: L,
) {
    use shared::billing::receipts::{self, IssuedReceipt, Outcome, Target};
    use shared::billing::{CashReceipt, ReceiptHolder, ReceiptState};
    use shared::ledger::ReceiptQueue;
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = current(&sub, "run-1", now);
    let sub = claim(&l, &a, &sub).await.unwrap();
    let mut next = sub.next_version(now);
    next.period_index += 1;
    let fresh = CashReceipt::new(ReceiptHolder::self_issued(), now);
    settle_under_run_1(
        &l,
        &a,
        &AttemptResult {
            cash_receipt: Some(fresh.clone()),
            ..paid("imps_cash", now)
        },
        &next,
        now,
    )
    .await;
    let stored = attempt_of(&l, &a).await;
    assert_eq!(stored.cash_receipt.as_ref(), Some(&fresh));
    async fn due<L: Ledger>(l: &L, at: DateTime<Utc>) -> Vec<shared::ledger::AttemptKey> {
        l.receipt_page(ReceiptQueue::Due(at), 10, None)
            .await
            .unwrap()
            .attempts
    }
    let key = (a.subscription_id.clone(), a.period.clone(), a.attempt);
    assert_eq!(due(&l, now).await, vec![key.clone()]);
    assert!(due(&l, now - Duration::seconds(1)).await.is_empty());

    // A claim wins once; a second on the same revision loses.
    let claimed = fresh.claimed("tok-1", now);
    l.save_receipt(&stored, &claimed, None).await.unwrap();
    let stale = fresh.claimed("tok-2", now);
    assert!(
        l.save_receipt(&stored, &stale, None)
            .await
            .unwrap_err()
            .is_conflict()
    );
    // Claimed: due again only when its lease ends.
    assert!(due(&l, now).await.is_empty());
    assert_eq!(due(&l, now + receipts::LEASE).await, vec![key.clone()]);

    // Issued: settled, out of the queue, written only on the refunded total read.
    let target = Target {
        amount: 9900,
        tax_free: 0,
    };
    let live_receipt = IssuedReceipt {
        amount: 9900,
        tax_free: 0,
        vat: 900,
        issue_number: "123456789".into(),
        url: Some("https://receipts.example/cash/123456789".into()),
        issued_at: now,
    };
    let issued = receipts::after(
        &claimed,
        &Outcome::Issued(live_receipt.clone()),
        target,
        now,
    );
    assert_eq!(issued.state, ReceiptState::Settled);
    assert!(
        l.save_receipt(&stored, &issued, Some(500))
            .await
            .unwrap_err()
            .is_conflict(),
        "a refunded total that moved"
    );
    l.save_receipt(&stored, &issued, Some(0)).await.unwrap();
    let back = attempt_of(&l, &a).await;
    assert_eq!(back.cash_receipt.as_ref(), Some(&issued));
    assert!(due(&l, now + Duration::days(1)).await.is_empty());

    // A refund queues it again, in the same write.
    let later = now + Duration::hours(1);
    assert!(l.record_refund(&back, 3300, later, None).await.unwrap());
    assert_eq!(due(&l, later).await, vec![key.clone()]);
    let back = attempt_of(&l, &a).await;
    assert_eq!(
        (back.refunded, back.cash_receipt.as_ref().map(|r| r.state)),
        (3300, Some(ReceiptState::Settled))
    );

    // Given up: listed for a person, not as due.
    let mut review = back.cash_receipt.clone().unwrap();
    review.rev += 1;
    review.state = ReceiptState::Review;
    review.next_at = None;
    l.save_receipt(&back, &review, Some(3300)).await.unwrap();
    assert!(due(&l, later + Duration::days(1)).await.is_empty());
    let waiting = l
        .receipt_page(ReceiptQueue::Review, 10, None)
        .await
        .unwrap();
    assert_eq!(waiting.attempts, vec![key]);
}

fn coupon(id: &str, max: Option<u32>, by: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Coupon {
    Coupon {
        id: CouponId::parse(id).unwrap(),
        name: "런칭 50%".into(),
        off: Off::Percent(50),
        duration: CouponDuration::Repeating(3),
        max_redemptions: max,
        redeem_by: by,
        redeemed: 0,
        created_at: at,
    }
}

/// Decision 78: a coupon is one record, written once; a redemption counts
/// only in the write that stores what redeemed it, under the coupon's
/// limit and date, and nothing is written or counted when any part fails.
async fn a_coupon_is_written_once_and_redeemed_with_its_registration_up_to_its_limit<L: Subject>(
    l: L,
) {
    let now = t("2026-12-24T15:00:00Z");
    let c = coupon("launch-3m", Some(2), Some(now + Duration::days(30)), now);
    l.put_coupon(&c).await.unwrap();
    conflict(
        l.put_coupon(&Coupon {
            name: "again".into(),
            ..c.clone()
        })
        .await,
    );
    assert_eq!(l.get_coupon(&c.id).await.unwrap().unwrap(), c);
    let missing = CouponId::parse("nothing-here").unwrap();
    assert_eq!(l.get_coupon(&missing).await.unwrap(), None);
    let terms = Some(c.terms());
    let regs: Vec<Registration> = (0..3)
        .map(|_| Registration {
            coupon: terms.clone(),
            ..registration(&SubscriptionId::generate(), now)
        })
        .collect();
    let redeem = |reg, coupon, at| Redemption {
        coupon,
        now: at,
        into: Redeemer::Registration(reg),
    };
    l.redeem(&redeem(&regs[0], &c.id, now)).await.unwrap();
    // The same registration again: its own condition fails, nothing counted.
    conflict(l.redeem(&redeem(&regs[0], &c.id, now)).await);
    assert_eq!(l.get_coupon(&c.id).await.unwrap().unwrap().redeemed, 1);
    l.redeem(&redeem(&regs[1], &c.id, now)).await.unwrap();
    // Its limit reached: refused, and the registration is not written.
    conflict(l.redeem(&redeem(&regs[2], &c.id, now)).await);
    assert_eq!(
        l.get_registration(&regs[2].merchant_uid).await.unwrap(),
        None
    );
    let stored = l
        .get_registration(&regs[0].merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.coupon, terms);
    assert_eq!(l.get_coupon(&c.id).await.unwrap().unwrap().redeemed, 2);
    // An unknown coupon, or one past its date, redeems nothing.
    let late = coupon("late", None, Some(now + Duration::hours(1)), now);
    l.put_coupon(&late).await.unwrap();
    conflict(l.redeem(&redeem(&regs[2], &missing, now)).await);
    conflict(
        l.redeem(&redeem(&regs[2], &late.id, now + Duration::hours(1)))
            .await,
    );
    assert_eq!(
        l.get_registration(&regs[2].merchant_uid).await.unwrap(),
        None
    );
    l.redeem(&redeem(&regs[2], &late.id, now + Duration::minutes(59)))
        .await
        .unwrap();
    assert_eq!(l.get_coupon(&late.id).await.unwrap().unwrap().redeemed, 1);
}

async fn a_redemption_on_a_subscription_counts_only_with_its_change<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let c = coupon("winback", None, None, now);
    l.put_coupon(&c).await.unwrap();
    let mut next = sub.next_version(now);
    next.discount = Some(Discount {
        coupon: c.id.clone(),
        off: c.off,
        duration: c.duration,
        from: sub.current_period(),
        until: Some(sub.anchor.period_id(sub.period_index + 3)),
        redeemed_at: now,
        end_disclosed: false,
    });
    let entry = audit(&sub, "coupon", now);
    let change = SubscriptionChange {
        next: &next,
        audit: Some(&entry),
        lock: LockChange::Keep,
    };
    let redemption = Redemption {
        coupon: &c.id,
        now,
        into: Redeemer::Subscription(change),
    };
    l.redeem(&redemption).await.unwrap();
    // A second request from the same copy loses its version: not counted.
    conflict(l.redeem(&redemption).await);
    assert_eq!(l.get_coupon(&c.id).await.unwrap().unwrap().redeemed, 1);
    assert_eq!(l.get_subscription(&sub.id).await.unwrap().unwrap(), next);
    assert_eq!(l.history(&sub.id, 10).await.unwrap(), vec![entry]);
}
