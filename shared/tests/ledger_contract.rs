//! The ledger contract: every case runs against both implementations, the
//! DynamoDB adapter on a real DynamoDB API (moto_server, started by testkit,
//! a fresh table per case) and the in-memory ledger, so the in-memory one
//! (which the simulation and benchmarks rely on) cannot drift from the one
//! in production. Each case tries to break one conditional write.
//!
//! Races are proven in the simulation on the in-memory ledger; here two
//! competing writes are issued one after the other (moto_server is not
//! thread-safe), which exercises the same conditions.

use chrono::{DateTime, Duration, Utc};
use shared::billing::{
    AttemptResult, AttemptState, Buyer, ChargeAttempt, MerchantUid, PeriodId, Plan, Registration,
    RegistrationStatus, Subscription, SubscriptionId, SubscriptionStatus, UidKey,
};
use shared::ledger::dynamodb::DynamoLedger;
use shared::ledger::memory::InMemoryLedger;
use shared::ledger::{Cursor, Guard, Ledger, LedgerError, Sent};
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
    registration_is_written_once_and_reads_back,
    activation_happens_once_and_clears_the_expiry,
    activation_writes_the_first_attempt_or_nothing,
    activation_rolls_back_when_the_subscription_exists,
    a_claim_is_exclusive,
    expired_lease_can_be_taken_over_but_a_live_one_cannot,
    unknown_attempt_is_taken_over_and_a_settled_one_never_reopens,
    only_the_holder_marks_sending_or_unknown,
    settle_is_all_or_nothing_under_a_stale_version_or_a_stolen_claim,
    only_money_settles_without_the_claim,
    flagging_needs_the_claim_or_an_unclaimed_attempt_and_stops_charging,
    due_pages_carry_on_through_a_cursor_and_skip_what_is_not_due,
    attempts_list_in_period_and_attempt_order,
    instants_are_kept_to_the_second,
    refunds_only_ever_grow,
    a_corrupt_subscription_is_reported_not_hidden,
    a_pending_registration_is_due_for_a_sweep_until_it_completes,
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
        user_id: "user-42".into(),
        plan: Plan {
            amount: 9900,
            name: "월간 구독".into(),
        },
        pg: "chai".into(),
        buyer: Buyer {
            name: Some(Pii::new("홍길동")),
            email: Some(Pii::new("a@example.com")),
            tel: None,
        },
        status: RegistrationStatus::Pending,
        created_at: now,
        expires_at: Some(now + Duration::hours(1)),
        imp_uid: None,
        sweep_at: Some(now + Duration::minutes(30)),
    }
}

fn claimed(
    id: &SubscriptionId,
    period: &str,
    attempt: u32,
    token: &str,
    now: DateTime<Utc>,
) -> ChargeAttempt {
    let period = PeriodId::parse(period).unwrap();
    ChargeAttempt {
        subscription_id: id.clone(),
        merchant_uid: key().charge_uid(id, &period, attempt),
        period,
        attempt,
        amount: 9900,
        state: AttemptState::Claimed,
        claim_token: Some(token.into()),
        lease_until: Some(now + Duration::minutes(5)),
        sent_at: Some(now),
        imp_uid: None,
        paid_at: None,
        fail_reason: None,
        refunded: 0,
        created_at: now,
        updated_at: now,
    }
}

fn paid(imp_uid: &str, at: DateTime<Utc>) -> AttemptResult {
    AttemptResult {
        state: AttemptState::Paid,
        imp_uid: Some(imp_uid.into()),
        paid_at: Some(at),
        fail_reason: None,
    }
}

fn declined(reason: &str) -> AttemptResult {
    AttemptResult {
        state: AttemptState::Failed,
        imp_uid: Some("imps_declined".into()),
        paid_at: None,
        fail_reason: Some(reason.into()),
    }
}

/// A live subscription (registered and activated) created a month before `now`.
async fn live<L: Ledger>(l: &L, now: DateTime<Utc>) -> Subscription {
    let id = SubscriptionId::generate();
    let sub = sample_subscription(&id, now - Duration::days(31));
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    l.activate(&reg, &sub, "imp_000000000001", None)
        .await
        .unwrap();
    sub
}

async fn attempt_of<L: Ledger>(l: &L, a: &ChargeAttempt) -> ChargeAttempt {
    l.get_attempt(&a.subscription_id, &a.period, a.attempt)
        .await
        .unwrap()
        .unwrap()
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
}

async fn activation_happens_once_and_clears_the_expiry<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    let sub = sample_subscription(&id, now);
    l.activate(&reg, &sub, "imp_000000000001", None)
        .await
        .unwrap();
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

    // A second activation (refresh, second tab) changes nothing.
    let other = Subscription {
        plan: Plan {
            amount: 1,
            name: "x".into(),
        },
        ..sub.clone()
    };
    conflict(l.activate(&reg, &other, "imp_000000000002", None).await);
    assert_eq!(l.get_subscription(&id).await.unwrap().unwrap(), sub);
}

async fn activation_writes_the_first_attempt_or_nothing<L: Subject>(l: L) {
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    let sub = sample_subscription(&id, now);
    let mut first = claimed(&id, "202611", 1, "x", now);
    first.state = AttemptState::Paid;
    first.claim_token = None;
    first.lease_until = None;
    first.merchant_uid = reg.merchant_uid.clone();
    // The attempt exists already: the whole activation is refused.
    l.claim_new(&first).await.unwrap();
    conflict(l.activate(&reg, &sub, "imp_1", Some(&first)).await);
    assert!(l.get_subscription(&id).await.unwrap().is_none());
    assert_eq!(
        l.get_registration(&reg.merchant_uid)
            .await
            .unwrap()
            .unwrap()
            .status,
        RegistrationStatus::Pending
    );

    let id2 = SubscriptionId::generate();
    let reg2 = registration(&id2, now);
    l.put_registration(&reg2).await.unwrap();
    let sub2 = sample_subscription(&id2, now);
    let mut first2 = first.clone();
    first2.subscription_id = id2.clone();
    l.activate(&reg2, &sub2, "imp_2", Some(&first2))
        .await
        .unwrap();
    assert_eq!(attempt_of(&l, &first2).await, first2);
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
    l.activate(&other_reg, &sub, "imp_000000000001", None)
        .await
        .unwrap();
    // Activating the first registration fails as a whole: it stays pending.
    conflict(l.activate(&reg, &sub, "imp_000000000001", None).await);
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

async fn a_claim_is_exclusive<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let a = claimed(&id, "202701", 1, "run-a", now);
    let b = claimed(&id, "202701", 1, "run-b", now);
    l.claim_new(&a).await.unwrap();
    conflict(l.claim_new(&b).await);
    assert_eq!(
        attempt_of(&l, &a).await.claim_token.as_deref(),
        Some("run-a")
    );
}

async fn expired_lease_can_be_taken_over_but_a_live_one_cannot<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let a = claimed(&id, "202612", 1, "crashed-run", now);
    l.claim_new(&a).await.unwrap();
    let over = |token: &'static str, at: DateTime<Utc>| {
        l.take_over(&id, &a.period, 1, token, at + Duration::minutes(5), at)
    };
    // Lease still running (also at its very last second): no take-over.
    conflict(over("run-2", now + Duration::minutes(1)).await);
    conflict(over("run-2", now + Duration::minutes(5)).await);
    // After the lease: the first taker wins, the second finds a live claim.
    let later = now + Duration::minutes(6);
    let taken = over("run-3", later).await.unwrap();
    conflict(over("run-4", later).await);
    assert_eq!(taken.state, AttemptState::Claimed);
    assert_eq!(taken.claim_token.as_deref(), Some("run-3"));
    assert_eq!(taken.lease_until, Some(later + Duration::minutes(5)));
    assert_eq!(attempt_of(&l, &a).await, taken);
    // A missing attempt cannot be taken over.
    conflict(
        l.take_over(
            &id,
            &PeriodId::parse("203001").unwrap(),
            1,
            "x",
            later,
            later,
        )
        .await,
    );
}

async fn unknown_attempt_is_taken_over_and_a_settled_one_never_reopens<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let id = sub.id.clone();
    // A versioned save cannot create a subscription out of nothing.
    let orphan = Subscription {
        id: SubscriptionId::generate(),
        version: 1,
        ..sub.clone()
    };
    conflict(l.save_subscription(&orphan).await);

    let a = claimed(&id, &sub.current_period().to_string(), 1, "run-1", now);
    l.claim_new(&a).await.unwrap();
    l.mark_unknown(&a, "run-1", "timeout", Sent::Maybe, now)
        .await
        .unwrap();
    let unknown = attempt_of(&l, &a).await;
    assert_eq!(unknown.state, AttemptState::Unknown);
    assert_eq!(unknown.lease_until, None);
    assert_eq!(unknown.claim_token, None);
    assert_eq!(unknown.fail_reason.as_deref(), Some("timeout"));

    // Any later run may take an unknown attempt over, even within a lease's length.
    let taken = l
        .take_over(&id, &a.period, 1, "run-2", now + Duration::minutes(5), now)
        .await
        .unwrap();
    assert_eq!(taken.claim_token.as_deref(), Some("run-2"));

    let mut next = sub.next_version(now);
    next.period_index += 1;
    l.settle(
        &taken,
        &paid("imps_1", now),
        Guard::Claim("run-2"),
        &next,
        now,
    )
    .await
    .unwrap();
    let settled = attempt_of(&l, &a).await;
    assert_eq!(settled.state, AttemptState::Paid);
    assert_eq!(settled.imp_uid.as_deref(), Some("imps_1"));
    assert_eq!(settled.claim_token, None);
    assert_eq!(settled.lease_until, None);
    let late = now + Duration::hours(1);
    conflict(l.take_over(&id, &a.period, 1, "run-3", late, late).await);
}

async fn only_the_holder_marks_sending_or_unknown<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let a = claimed(&id, "202612", 1, "run-1", now);
    l.claim_new(&a).await.unwrap();
    let later = now + Duration::minutes(2);
    conflict(l.mark_sending(&a, "run-x", later).await);
    conflict(
        l.mark_unknown(&a, "run-x", "timeout", Sent::Maybe, later)
            .await,
    );
    assert_eq!(attempt_of(&l, &a).await, a);
    l.mark_sending(&a, "run-1", later).await.unwrap();
    let sending = attempt_of(&l, &a).await;
    assert_eq!(sending.sent_at, Some(later));
    assert_eq!(sending.state, AttemptState::Claimed);
    l.mark_unknown(&a, "run-1", "lost", Sent::Maybe, later)
        .await
        .unwrap();
    // Released: nobody holds it any more, not even the old holder.
    conflict(l.mark_sending(&a, "run-1", later).await);
    conflict(
        l.mark_unknown(&a, "run-1", "again", Sent::Maybe, later)
            .await,
    );
    // A request that may have been sent keeps its time; one that certainly
    // never left forgets it (nothing can be in flight).
    assert_eq!(attempt_of(&l, &a).await.sent_at, Some(later));
    l.take_over(
        &a.subscription_id,
        &a.period,
        1,
        "run-2",
        later + Duration::minutes(5),
        later,
    )
    .await
    .unwrap();
    l.mark_unknown(&a, "run-2", "connection refused", Sent::Never, later)
        .await
        .unwrap();
    assert_eq!(attempt_of(&l, &a).await.sent_at, None);
}

async fn settle_is_all_or_nothing_under_a_stale_version_or_a_stolen_claim<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let id = sub.id.clone();
    let a = claimed(&id, &sub.current_period().to_string(), 1, "run-1", now);
    l.claim_new(&a).await.unwrap();

    // Stale subscription version: the attempt stays claimed.
    let stale = Subscription {
        version: sub.version + 5,
        period_index: 1,
        ..sub.clone()
    };
    conflict(
        l.settle(&a, &paid("imps_1", now), Guard::Claim("run-1"), &stale, now)
            .await,
    );
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Claimed);

    // Someone else's claim token: the subscription stays as it was.
    let mut next = sub.next_version(now);
    next.period_index = 1;
    conflict(
        l.settle(
            &a,
            &paid("imps_1", now),
            Guard::Claim("run-other"),
            &next,
            now,
        )
        .await,
    );
    assert_eq!(l.get_subscription(&id).await.unwrap().unwrap(), sub);

    // The right claim and version: both change together.
    l.settle(&a, &paid("imps_1", now), Guard::Claim("run-1"), &next, now)
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
        l.settle(&a, &paid("imps_1", now), Guard::PaidFact, &next2, now)
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
    let a = claimed(&sub.id, &sub.current_period().to_string(), 1, "run-b", now);
    l.claim_new(&a).await.unwrap();
    let next = sub.next_version(now);
    // A decline without the claim is refused whatever the state (another
    // run holds it and will record its own answer).
    assert!(
        l.settle(&a, &declined("잔액부족"), Guard::PaidFact, &next, now)
            .await
            .is_err()
    );
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Claimed);
    // Money is recorded over another run's claim.
    l.settle(&a, &paid("imps_9", now), Guard::PaidFact, &next, now)
        .await
        .unwrap();
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Paid);
    // And on an unknown attempt.
    let sub2 = live(&l, now).await;
    let b = claimed(
        &sub2.id,
        &sub2.current_period().to_string(),
        1,
        "run-c",
        now,
    );
    l.claim_new(&b).await.unwrap();
    l.mark_unknown(&b, "run-c", "timeout", Sent::Maybe, now)
        .await
        .unwrap();
    l.settle(
        &b,
        &paid("imps_10", now),
        Guard::PaidFact,
        &sub2.next_version(now),
        now,
    )
    .await
    .unwrap();
    assert_eq!(attempt_of(&l, &b).await.state, AttemptState::Paid);
}

async fn flagging_needs_the_claim_or_an_unclaimed_attempt_and_stops_charging<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let sub = live(&l, now).await;
    let a = claimed(&sub.id, &sub.current_period().to_string(), 1, "run-1", now);
    l.claim_new(&a).await.unwrap();
    let mut flagged = sub.next_version(now);
    flagged.status = SubscriptionStatus::NeedsReview;
    // Someone else's live claim: left to its holder.
    conflict(l.flag_review(&a, None, "foreign", &flagged, now).await);
    conflict(
        l.flag_review(&a, Some("run-x"), "foreign", &flagged, now)
            .await,
    );
    // A stale version: nothing written.
    let mut stale = flagged.clone();
    stale.version += 3;
    conflict(
        l.flag_review(&a, Some("run-1"), "foreign", &stale, now)
            .await,
    );
    assert_eq!(attempt_of(&l, &a).await.state, AttemptState::Claimed);
    // The holder flags it: attempt and subscription change together, and the
    // subscription leaves the due index.
    l.flag_review(&a, Some("run-1"), "foreign payment", &flagged, now)
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
    // Paid and flagged attempts are not flagged (again).
    conflict(
        l.flag_review(&a, None, "again", &flagged.next_version(now), now)
            .await,
    );

    // A failed attempt (a payment arriving after it was settled as declined) is flagged without a claim.
    let sub2 = live(&l, now).await;
    let b = claimed(
        &sub2.id,
        &sub2.current_period().to_string(),
        1,
        "run-2",
        now,
    );
    l.claim_new(&b).await.unwrap();
    let mut after_decline = sub2.next_version(now);
    after_decline.attempt = 2;
    after_decline.status = SubscriptionStatus::PastDue;
    l.settle(
        &b,
        &declined("잔액부족"),
        Guard::Claim("run-2"),
        &after_decline,
        now,
    )
    .await
    .unwrap();
    let mut flagged2 = after_decline.next_version(now);
    flagged2.status = SubscriptionStatus::NeedsReview;
    l.flag_review(&b, None, "late payment", &flagged2, now)
        .await
        .unwrap();
    assert_eq!(attempt_of(&l, &b).await.state, AttemptState::NeedsReview);
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
        l.activate(&reg, &sub, "imp_000000000001", None)
            .await
            .unwrap();
    }
    // Due exactly now counts as due.
    let id = SubscriptionId::generate();
    let mut sub = sample_subscription(&id, now - Duration::days(40));
    sub.next_charge_at = now;
    let reg = registration(&id, now);
    l.put_registration(&reg).await.unwrap();
    l.activate(&reg, &sub, "imp_000000000001", None)
        .await
        .unwrap();
    due.insert(id);

    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = l.due_page(now, 2, cursor.as_ref()).await.unwrap();
        pages += 1;
        assert!(page.ids.len() <= 2);
        assert!(page.corrupt.is_empty());
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

async fn attempts_list_in_period_and_attempt_order<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    for (period, attempt) in [("202702", 1), ("202612", 2), ("202612", 1), ("202701", 10)] {
        l.claim_new(&claimed(&id, period, attempt, "r", now))
            .await
            .unwrap();
    }
    l.claim_new(&claimed(&SubscriptionId::generate(), "202612", 1, "r", now))
        .await
        .unwrap();
    let listed: Vec<(String, u32)> = l
        .list_attempts(&id)
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

async fn instants_are_kept_to_the_second<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00.750Z");
    let id = SubscriptionId::generate();
    let a = claimed(&id, "202612", 1, "r", now);
    l.claim_new(&a).await.unwrap();
    let back = attempt_of(&l, &a).await;
    assert_eq!(back.created_at, t("2026-12-24T15:00:00Z"));
    assert_eq!(back.lease_until, Some(t("2026-12-24T15:05:00Z")));
}

async fn refunds_only_ever_grow<L: Subject>(l: L) {
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let a = claimed(&id, "202612", 1, "run-1", now);
    l.claim_new(&a).await.unwrap();
    assert!(l.record_refund(&a, 3000, now).await.unwrap());
    assert!(
        !l.record_refund(&a, 3000, now).await.unwrap(),
        "a duplicate changes nothing"
    );
    assert!(
        !l.record_refund(&a, 1000, now).await.unwrap(),
        "out of order changes nothing"
    );
    assert!(l.record_refund(&a, 9900, now).await.unwrap());
    assert_eq!(attempt_of(&l, &a).await.refunded, 9900);
    let missing = claimed(&id, "203001", 1, "x", now);
    assert!(
        !l.record_refund(&missing, 100, now).await.unwrap(),
        "a refund creates no record"
    );
    assert!(
        l.get_attempt(&id, &missing.period, 1)
            .await
            .unwrap()
            .is_none()
    );
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
    l.activate(&reg, &sub, "imp_1", None).await.unwrap();
    let (ids, regs) = due_at(later + Duration::days(400)).await;
    assert!(regs.is_empty(), "a completed registration leaves the index");
    assert_eq!(ids, vec![id]);
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
    l.save_subscription(&suspended).await.unwrap();
    let item = l.raw_item(&pk, &sk).await.unwrap().unwrap();
    assert!(!item.contains_key("gsi1pk") && !item.contains_key("gsi1sk"));
}
