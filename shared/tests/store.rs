//! The store against a real DynamoDB API (moto_server, started by testkit),
//! one fresh table per test. Each test tries to break one invariant.

use chrono::{DateTime, Duration, Utc};
use shared::billing::{MerchantUid, PeriodId, SubscriptionId, SubscriptionStatus};
use shared::secret::Pii;
use shared::store::{
    AttemptResult, AttemptState, Buyer, ChargeAttempt, Plan, Registration, RegistrationStatus,
    StoreError, keys,
};
use testkit::{fresh_store, sample_subscription};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
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
        merchant_uid: MerchantUid::charge(id, &period, attempt),
        period,
        attempt,
        amount: 9900,
        state: AttemptState::Claimed,
        claim_token: Some(token.into()),
        lease_until: Some(now + Duration::minutes(5)),
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

#[tokio::test]
async fn registration_is_written_once_and_reads_back() {
    let store = fresh_store(4).await;
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    store.put_registration(&reg).await.unwrap();
    let again = store
        .put_registration(&Registration {
            user_id: "attacker".into(),
            ..reg.clone()
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let back = store
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, reg);
    assert_eq!(back.user_id, "user-42");
    assert!(
        store
            .get_registration("rzzzzzzzzzzzz")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn activation_happens_once_and_clears_the_ttl() {
    let store = fresh_store(4).await;
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    store.put_registration(&reg).await.unwrap();
    let sub = sample_subscription(&id, now);
    store
        .activate(&reg, &sub, "imp_000000000001")
        .await
        .unwrap();

    let back = store
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.status, RegistrationStatus::Completed);
    assert_eq!(
        back.expires_at, None,
        "a completed registration must not expire"
    );
    assert_eq!(store.get_subscription(&id).await.unwrap().unwrap(), sub);

    // A second activation (refresh, second tab) changes nothing.
    let other = shared::store::Subscription {
        plan: Plan {
            amount: 1,
            name: "x".into(),
        },
        ..sub.clone()
    };
    let second = store.activate(&reg, &other, "imp_000000000001").await;
    assert!(matches!(second, Err(StoreError::Conflict(_))), "{second:?}");
    assert_eq!(
        store
            .get_subscription(&id)
            .await
            .unwrap()
            .unwrap()
            .plan
            .amount,
        9900
    );
}

#[tokio::test]
async fn activation_rolls_back_when_the_subscription_exists() {
    let store = fresh_store(4).await;
    let now = t("2026-11-25T01:00:00Z");
    let id = SubscriptionId::generate();
    let reg = registration(&id, now);
    store.put_registration(&reg).await.unwrap();
    // The subscription item is already there (e.g. written by a bug or a race).
    let sub = sample_subscription(&id, now);
    let other_reg = registration(&id, now);
    let other_reg = Registration {
        merchant_uid: "rother0000000".into(),
        ..other_reg
    };
    store.put_registration(&other_reg).await.unwrap();
    store
        .activate(&other_reg, &sub, "imp_000000000001")
        .await
        .unwrap();
    // Activating the first registration must fail as a whole: it stays pending.
    assert!(
        store
            .activate(&reg, &sub, "imp_000000000001")
            .await
            .unwrap_err()
            .is_conflict()
    );
    let back = store
        .get_registration(&reg.merchant_uid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        back.status,
        RegistrationStatus::Pending,
        "transaction was not atomic"
    );
}

#[tokio::test]
async fn two_concurrent_claims_one_wins() {
    let store = fresh_store(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    for round in 0..5u32 {
        let period = format!("2027{:02}", round + 1);
        let a = claimed(&id, &period, 1, "run-a", now);
        let b = claimed(&id, &period, 1, "run-b", now);
        let (ra, rb) = tokio::join!(store.claim_new(&a), store.claim_new(&b));
        assert_eq!(
            ra.is_ok() as u8 + rb.is_ok() as u8,
            1,
            "round {round}: {ra:?} {rb:?}"
        );
        let winner = store.get_attempt(&id, &a.period, 1).await.unwrap().unwrap();
        let expected = if ra.is_ok() { "run-a" } else { "run-b" };
        assert_eq!(winner.claim_token.as_deref(), Some(expected));
    }
}

#[tokio::test]
async fn expired_lease_can_be_taken_over_but_a_live_one_cannot() {
    let store = fresh_store(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let a = claimed(&id, "202612", 1, "crashed-run", now);
    store.claim_new(&a).await.unwrap();

    // Lease still running: no takeover.
    let early = store
        .take_over(
            &id,
            &a.period,
            1,
            "run-2",
            now + Duration::minutes(10),
            now + Duration::minutes(1),
        )
        .await;
    assert!(matches!(early, Err(StoreError::Conflict(_))), "{early:?}");

    // After the lease: exactly one of two concurrent takers wins.
    let later = now + Duration::minutes(6);
    let (r3, r4) = tokio::join!(
        store.take_over(
            &id,
            &a.period,
            1,
            "run-3",
            later + Duration::minutes(5),
            later
        ),
        store.take_over(
            &id,
            &a.period,
            1,
            "run-4",
            later + Duration::minutes(5),
            later
        ),
    );
    assert_eq!(r3.is_ok() as u8 + r4.is_ok() as u8, 1, "{r3:?} {r4:?}");
    let taken = r3.or(r4).unwrap();
    assert_eq!(taken.state, AttemptState::Claimed);
    assert_eq!(taken.lease_until, Some(later + Duration::minutes(5)));
}

#[tokio::test]
async fn unknown_attempt_is_taken_over_and_settled_attempt_is_not() {
    let store = fresh_store(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let mut sub = sample_subscription(&id, now - Duration::days(31));
    // A versioned save cannot create a subscription out of nothing.
    let orphan = store
        .save_subscription(&shared::store::Subscription {
            version: 1,
            ..sub.clone()
        })
        .await;
    assert!(orphan.unwrap_err().is_conflict());
    let reg = registration(&id, now);
    store.put_registration(&reg).await.unwrap();
    store
        .activate(&reg, &sub, "imp_000000000001")
        .await
        .unwrap();

    let a = claimed(&id, "202612", 1, "run-1", now);
    store.claim_new(&a).await.unwrap();
    // Wrong token cannot mark it unknown.
    assert!(
        store
            .mark_unknown(&a, "run-x", "timeout", now)
            .await
            .unwrap_err()
            .is_conflict()
    );
    store
        .mark_unknown(&a, "run-1", "timeout", now)
        .await
        .unwrap();
    let unknown = store.get_attempt(&id, &a.period, 1).await.unwrap().unwrap();
    assert_eq!(unknown.state, AttemptState::Unknown);
    assert_eq!(unknown.lease_until, None);

    // Any later run may take an unknown attempt over, even before a lease would expire.
    let taken = store
        .take_over(&id, &a.period, 1, "run-2", now + Duration::minutes(5), now)
        .await
        .unwrap();
    assert_eq!(taken.claim_token.as_deref(), Some("run-2"));

    sub.version += 1;
    sub.period_index += 1;
    store
        .settle(
            &taken,
            &paid("imps_000000000001", now),
            Some("run-2"),
            &sub,
            now,
        )
        .await
        .unwrap();
    let settled = store.get_attempt(&id, &a.period, 1).await.unwrap().unwrap();
    assert_eq!(settled.state, AttemptState::Paid);
    assert_eq!(settled.imp_uid.as_deref(), Some("imps_000000000001"));
    assert_eq!(settled.claim_token, None);
    let late = store
        .take_over(
            &id,
            &a.period,
            1,
            "run-3",
            now + Duration::hours(1),
            now + Duration::hours(1),
        )
        .await;
    assert!(
        late.unwrap_err().is_conflict(),
        "a paid attempt must never be reopened"
    );
}

#[tokio::test]
async fn settle_is_atomic_under_a_stale_version_or_a_stolen_claim() {
    let store = fresh_store(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let sub = sample_subscription(&id, now - Duration::days(31));
    let reg = registration(&id, now);
    store.put_registration(&reg).await.unwrap();
    store
        .activate(&reg, &sub, "imp_000000000001")
        .await
        .unwrap();
    let a = claimed(&id, "202612", 1, "run-1", now);
    store.claim_new(&a).await.unwrap();

    // Stale subscription version: the attempt must stay claimed.
    let stale = shared::store::Subscription {
        version: sub.version + 5,
        period_index: 1,
        ..sub.clone()
    };
    let err = store
        .settle(&a, &paid("imps_1", now), Some("run-1"), &stale, now)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(
        store
            .get_attempt(&id, &a.period, 1)
            .await
            .unwrap()
            .unwrap()
            .state,
        AttemptState::Claimed
    );

    // Someone else's claim token: the subscription must stay as it was.
    let next = shared::store::Subscription {
        version: sub.version + 1,
        period_index: 1,
        ..sub.clone()
    };
    let err = store
        .settle(&a, &paid("imps_1", now), Some("run-other"), &next, now)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(store.get_subscription(&id).await.unwrap().unwrap(), sub);

    // The right claim and version: both change together.
    store
        .settle(&a, &paid("imps_1", now), Some("run-1"), &next, now)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_subscription(&id)
            .await
            .unwrap()
            .unwrap()
            .period_index,
        1
    );
    // A second settle of the same attempt (e.g. a webhook) is refused.
    let next2 = shared::store::Subscription {
        version: next.version + 1,
        period_index: 2,
        ..next.clone()
    };
    assert!(
        store
            .settle(&a, &paid("imps_1", now), None, &next2, now)
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert_eq!(
        store
            .get_subscription(&id)
            .await
            .unwrap()
            .unwrap()
            .period_index,
        1
    );
}

#[tokio::test]
async fn due_query_pages_through_shards_and_skips_what_is_not_due() {
    let store = fresh_store(3).await;
    let now = t("2026-12-24T15:00:00Z");
    let mut due = std::collections::BTreeSet::new();
    for i in 0..23 {
        let id = SubscriptionId::generate();
        let mut sub = sample_subscription(&id, now - Duration::days(40));
        let reg = Registration {
            merchant_uid: MerchantUid::issuance(&id),
            ..registration(&id, now)
        };
        match i % 4 {
            // future: not due
            0 => sub.next_charge_at = now + Duration::days(2),
            // suspended: absent from the sparse index
            1 => sub.status = SubscriptionStatus::Suspended,
            _ => {
                sub.next_charge_at = now - Duration::hours(i);
                due.insert(id.clone());
            }
        }
        store.put_registration(&reg).await.unwrap();
        store
            .activate(&reg, &sub, "imp_000000000001")
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    for shard in 0..store.shards() {
        let mut start = None;
        loop {
            let page = store.due_page(shard, now, 2, start).await.unwrap();
            pages += 1;
            for id in page.ids {
                assert!(seen.insert(id), "a subscription came twice");
            }
            match page.next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
    }
    assert_eq!(seen, due);
    assert!(
        pages > store.shards() as usize,
        "expected more than one page per shard, got {pages}"
    );
    let due_item = store
        .raw_item(&keys::sub_pk(due.iter().next().unwrap()), keys::META)
        .await
        .unwrap()
        .unwrap();
    assert!(due_item.contains_key("gsi1pk"));
}

#[tokio::test]
async fn refunds_only_ever_grow() {
    let store = fresh_store(4).await;
    let now = t("2026-12-24T15:00:00Z");
    let id = SubscriptionId::generate();
    let a = claimed(&id, "202612", 1, "run-1", now);
    store.claim_new(&a).await.unwrap();
    assert!(store.record_refund(&a, 3000, now).await.unwrap());
    assert!(
        !store.record_refund(&a, 3000, now).await.unwrap(),
        "duplicate must change nothing"
    );
    assert!(
        !store.record_refund(&a, 1000, now).await.unwrap(),
        "out of order must change nothing"
    );
    assert!(store.record_refund(&a, 9900, now).await.unwrap());
    assert_eq!(
        store
            .get_attempt(&id, &a.period, 1)
            .await
            .unwrap()
            .unwrap()
            .refunded,
        9900
    );
    let missing = claimed(&id, "203001", 1, "x", now);
    assert!(
        !store.record_refund(&missing, 100, now).await.unwrap(),
        "no record is created by a refund"
    );
    assert!(
        store
            .get_attempt(&id, &missing.period, 1)
            .await
            .unwrap()
            .is_none()
    );
}
