//! The i'mport V1 client against the in-process simulator (`iamport-sim`):
//! the same outcomes as `iamport_client.rs`, this time produced by a stateful
//! server, so the ledger can tell what really happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::sync::Arc;
use std::time::Duration;

use iamport_sim::{Fault, FaultKind, NewCustomer, SimConfig, SimHandle};
use shared::gateway::iamport::{
    AgainOutcome, AgainRequest, CancelRequest, ClientConfig, IamportClient, Payment, PaymentStatus,
};
use shared::gateway::{Ambiguity, AmbiguityKind, GatewayError, Rejection, RejectionKind};
use shared::secret::{Pii, Secret};
use url::Url;

const AGAIN: &str = "/subscribe/payments/again";
const CUSTOMER: &str = "u42_chai_1";
const MSG_UNKNOWN_BUYER: &str = "등록되지 않은 구매자입니다.";
const MSG_ALREADY_PAID: &str = "이미 결제 완료된 주문번호(merchant_uid)입니다.";
const MSG_NO_PAYMENT: &str = "존재하지 않는 결제정보입니다.";
const MSG_NOTHING_TO_CANCEL: &str = "취소할 결제건이 존재하지 않습니다.";

// ------------------------------------------------------------------ helpers

async fn start() -> SimHandle {
    iamport_sim::spawn(SimConfig::default(), "127.0.0.1:0")
        .await
        .expect("simulator starts")
}

fn client_with(sim: &SimHandle, imp_secret: &str, timeout: Duration) -> IamportClient {
    let mut config = ClientConfig::new(
        Url::parse(&sim.base_url()).expect("base url"),
        Secret::new("sim_imp_key"),
        Secret::new(imp_secret),
    );
    config.connect_timeout = Duration::from_secs(1);
    config.timeout = timeout;
    IamportClient::new(config).expect("client")
}

fn client(sim: &SimHandle) -> IamportClient {
    client_with(sim, "sim_imp_secret", Duration::from_secs(5))
}

fn charge(customer_uid: &str, merchant_uid: &str, amount: i64) -> AgainRequest {
    AgainRequest {
        customer_uid: customer_uid.into(),
        merchant_uid: merchant_uid.into(),
        amount,
        currency: "KRW",
        name: "월간 구독".into(),
        buyer_name: Some(Pii::new("홍길동")),
        buyer_email: Some(Pii::new("a@example.com")),
        buyer_tel: Some(Pii::new("01012345678")),
        custom_data: Some(r#"{"subscription_id":"sub_1"}"#.into()),
        notice_url: None,
        tax_free: None,
    }
}

fn paid(outcome: AgainOutcome) -> Payment {
    match outcome {
        AgainOutcome::Paid(p) => p,
        other => panic!("expected Paid, got {other:?}"),
    }
}

fn rejection_of(outcome: AgainOutcome) -> Rejection {
    match outcome {
        AgainOutcome::Rejected(r) => r,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn ambiguity_of(outcome: AgainOutcome) -> Ambiguity {
    match outcome {
        AgainOutcome::Ambiguous(a) => a,
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

fn rejected(err: GatewayError) -> Rejection {
    match err {
        GatewayError::Rejected(r) => r,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn is_api_imp_uid(imp_uid: &str) -> bool {
    imp_uid
        .strip_prefix("imps_")
        .is_some_and(|d| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit()))
}

// ------------------------------------------------------------------ again

#[tokio::test]
async fn paid_charge_is_paid_and_is_the_one_ledger_entry() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client(&sim);

    let p = paid(
        client
            .charge_again(&charge(CUSTOMER, "sub_2024_06_u42", 9900))
            .await,
    );
    assert!(is_api_imp_uid(&p.imp_uid), "{}", p.imp_uid);
    assert_eq!(p.merchant_uid, "sub_2024_06_u42");
    assert_eq!(p.amount, 9900);
    assert_eq!(p.status, PaymentStatus::Paid);
    assert!(p.paid_at > 0);
    assert_eq!(p.failed_at, 0);
    assert_eq!(p.pg_provider.as_deref(), Some("chai"));
    assert_eq!(p.pay_method.as_deref(), Some("trans"));
    assert_eq!(p.customer_uid.as_deref(), Some(CUSTOMER));
    assert_eq!(p.customer_uid_usage.as_deref(), Some("payment"));
    assert_eq!(p.buyer_tel.as_ref().map(Pii::expose), Some("01012345678"));
    assert_eq!(
        p.custom_data.as_deref(),
        Some(r#"{"subscription_id":"sub_1"}"#)
    );

    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].imp_uid, p.imp_uid);
    assert_eq!(ledger[0].amount, 9900);
    assert!(ledger[0].status == "paid");
    assert_eq!(sim.paid_count("sub_2024_06_u42"), 1);

    // The lookup by imp_uid answers the same payment.
    assert_eq!(client.payment(&p.imp_uid).await.expect("lookup"), p);
}

#[tokio::test]
async fn declined_customer_is_declined_with_fail_reason_and_no_money() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    sim.decline_customer(CUSTOMER, "잔액부족");

    match client(&sim)
        .charge_again(&charge(CUSTOMER, "sub_declined", 9900))
        .await
    {
        AgainOutcome::Declined(p) => {
            assert!(is_api_imp_uid(&p.imp_uid));
            assert_eq!(p.status, PaymentStatus::Failed);
            assert_eq!(p.fail_reason.as_deref(), Some("잔액부족"));
            assert!(p.failed_at > 0);
            assert_eq!(p.paid_at, 0);
            let ledger = sim.ledger();
            assert_eq!(ledger.len(), 1);
            assert_eq!(ledger[0].imp_uid, p.imp_uid);
            assert!(ledger[0].status == "failed");
        }
        other => panic!("expected Declined, got {other:?}"),
    }
    assert_eq!(sim.paid_count("sub_declined"), 0);
}

#[tokio::test]
async fn unknown_customer_is_a_business_rejection_and_nothing_is_recorded() {
    let sim = start().await;

    let r = rejection_of(
        client(&sim)
            .charge_again(&charge("u_never_issued", "sub_unknown", 9900))
            .await,
    );
    assert_eq!(r.kind, RejectionKind::Business);
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.code, Some(-1));
    assert_eq!(r.message, MSG_UNKNOWN_BUYER);
    assert!(sim.ledger().is_empty());
    assert_eq!(sim.request_count(AGAIN), 1);
}

#[tokio::test]
async fn duplicate_paid_merchant_uid_is_rejected_and_the_ledger_keeps_one_paid() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client(&sim);
    let request = charge(CUSTOMER, "sub_dup", 9900);

    let first = paid(client.charge_again(&request).await);
    let r = rejection_of(client.charge_again(&request).await);
    assert_eq!(r.kind, RejectionKind::Business);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.message, MSG_ALREADY_PAID);

    assert_eq!(sim.paid_count("sub_dup"), 1);
    assert_eq!(sim.ledger().len(), 1);
    assert_eq!(sim.request_count(AGAIN), 2);
    let found = client
        .find_payment("sub_dup", Some(PaymentStatus::Paid))
        .await
        .expect("the first charge");
    assert_eq!(found.imp_uid, first.imp_uid);
}

#[tokio::test]
async fn reject_fault_is_a_business_rejection_with_its_code_and_message() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    sim.inject(
        Fault::new(FaultKind::Reject {
            code: -1,
            message: "PG사 통신 오류가 발생했습니다.".into(),
        })
        .on_path(AGAIN),
    );

    let r = rejection_of(
        client(&sim)
            .charge_again(&charge(CUSTOMER, "sub_reject", 9900))
            .await,
    );
    assert_eq!(r.kind, RejectionKind::Business);
    assert_eq!(r.code, Some(-1));
    assert_eq!(r.message, "PG사 통신 오류가 발생했습니다.");
    assert!(sim.ledger().is_empty());
}

// ------------------------------------------------------------------ lookups

#[tokio::test]
async fn unknown_payment_merchant_uid_and_key_are_not_found() {
    let sim = start().await;
    let client = client(&sim);

    for err in [
        client.payment("imps_000000000000").await.unwrap_err(),
        client.find_payment("sub_nothing", None).await.unwrap_err(),
        client
            .find_payment("sub_nothing", Some(PaymentStatus::Paid))
            .await
            .unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err:?}");
        let r = rejected(err);
        assert_eq!(r.http_status, Some(404));
        assert_eq!(r.code, Some(-1));
        assert_eq!(r.message, MSG_NO_PAYMENT);
    }
    let err = client.billing_key("u404").await.unwrap_err();
    assert!(err.is_not_found());
    let r = rejected(err);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.message,
        "요청하신 customer_uid(u404)로 등록된 정보를 찾을 수 없습니다."
    );
}

#[tokio::test]
async fn find_by_merchant_uid_with_and_without_status() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client(&sim);
    // One declined attempt, then a paid retry, under the same merchant_uid.
    sim.inject(
        Fault::new(FaultKind::Decline {
            reason: "한도초과".into(),
        })
        .for_customer(CUSTOMER),
    );
    let declined = match client
        .charge_again(&charge(CUSTOMER, "sub_retry", 9900))
        .await
    {
        AgainOutcome::Declined(p) => p,
        other => panic!("expected Declined, got {other:?}"),
    };
    let paid_one = paid(
        client
            .charge_again(&charge(CUSTOMER, "sub_retry", 9900))
            .await,
    );
    assert_ne!(declined.imp_uid, paid_one.imp_uid);

    let by_paid = client
        .find_payment("sub_retry", Some(PaymentStatus::Paid))
        .await
        .expect("paid");
    assert_eq!(by_paid.imp_uid, paid_one.imp_uid);
    assert_eq!(by_paid.status, PaymentStatus::Paid);
    let by_failed = client
        .find_payment("sub_retry", Some(PaymentStatus::Failed))
        .await
        .expect("failed");
    assert_eq!(by_failed.imp_uid, declined.imp_uid);
    assert_eq!(by_failed.fail_reason.as_deref(), Some("한도초과"));
    // Without a status: the newest record (the paid retry).
    let newest = client
        .find_payment("sub_retry", None)
        .await
        .expect("newest");
    assert_eq!(newest.imp_uid, paid_one.imp_uid);
    let none = client
        .find_payment("sub_retry", Some(PaymentStatus::Cancelled))
        .await
        .unwrap_err();
    assert!(none.is_not_found());
    assert_eq!(sim.paid_count("sub_retry"), 1);
}

#[tokio::test]
async fn billing_key_get_then_delete_then_not_found() {
    let sim = start().await;
    sim.add_customer_with(NewCustomer {
        customer_name: Some("홍길동".into()),
        customer_tel: Some("01012345678".into()),
        customer_email: Some("a@example.com".into()),
        pg_id: Some("pk_chai".into()),
        ..NewCustomer::new(CUSTOMER, "chai")
    });
    let client = client(&sim);

    let key = client.billing_key(CUSTOMER).await.expect("key");
    assert_eq!(key.customer_uid, CUSTOMER);
    assert_eq!(key.pg_provider, "chai");
    assert_eq!(key.pg_id.as_deref(), Some("pk_chai"));
    assert_eq!(key.card_number, None);
    assert!(key.inserted > 0);
    assert_eq!(
        key.customer_email.as_ref().map(Pii::expose),
        Some("a@example.com")
    );

    let deleted = client.delete_billing_key(CUSTOMER).await.expect("delete");
    assert_eq!(deleted.customer_uid, CUSTOMER);
    assert!(sim.customer(CUSTOMER).is_none());

    assert!(
        client
            .billing_key(CUSTOMER)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        client
            .delete_billing_key(CUSTOMER)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // The key is gone for charges too.
    let r = rejection_of(
        client
            .charge_again(&charge(CUSTOMER, "sub_after_delete", 9900))
            .await,
    );
    assert_eq!(r.message, MSG_UNKNOWN_BUYER);
}

// ------------------------------------------------------------------ cancel

#[tokio::test]
async fn cancel_partial_then_full_and_unknown_payment() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client(&sim);
    let p = paid(
        client
            .charge_again(&charge(CUSTOMER, "sub_refund", 9900))
            .await,
    );

    let partial = client
        .cancel(&CancelRequest {
            imp_uid: p.imp_uid.clone(),
            amount: Some(3000),
            checksum: Some(9900),
            reason: "부분환불".into(),
            tax_free: None,
        })
        .await
        .expect("partial refund");
    assert_eq!(partial.imp_uid, p.imp_uid);
    assert_eq!(partial.status, PaymentStatus::Paid);
    assert_eq!(partial.cancel_amount, 3000);
    assert_eq!(partial.cancelled_at, 0);
    assert_eq!(partial.cancel_history.len(), 1);
    assert_eq!(partial.cancel_history[0].amount, 3000);
    assert_eq!(
        partial.cancel_history[0].reason.as_deref(),
        Some("부분환불")
    );
    assert!(
        partial.cancel_history[0]
            .cancellation_id
            .as_deref()
            .is_some_and(|id| id.starts_with("sim_cncl_"))
    );

    let full = client
        .cancel(&CancelRequest {
            imp_uid: p.imp_uid.clone(),
            amount: None,
            checksum: Some(6900),
            reason: "전액환불".into(),
            tax_free: None,
        })
        .await
        .expect("full refund");
    assert_eq!(full.status, PaymentStatus::Cancelled);
    assert_eq!(full.cancel_amount, 9900);
    assert!(full.cancelled_at > 0);
    let amounts: Vec<i64> = full.cancel_history.iter().map(|c| c.amount).collect();
    assert_eq!(amounts, [3000, 6900]);
    assert!(sim.payment(&p.imp_uid).expect("in ledger").status == "cancelled");
    assert_eq!(sim.paid_count("sub_refund"), 0);

    let err = client
        .cancel(&CancelRequest {
            imp_uid: "imps_000000000000".into(),
            amount: None,
            checksum: None,
            reason: "환불".into(),
            tax_free: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.label(), "rejected_business");
    let r = rejected(err);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.message, MSG_NOTHING_TO_CANCEL);
}

// ------------------------------------------------------------------ faults

#[tokio::test]
async fn http500_is_ambiguous_server_error_and_nothing_is_charged() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    sim.inject(Fault::new(FaultKind::Http500).on_path(AGAIN));
    let client = client(&sim);

    let a = ambiguity_of(
        client
            .charge_again(&charge(CUSTOMER, "sub_500", 9900))
            .await,
    );
    assert_eq!(a.kind, AmbiguityKind::ServerError);
    assert_eq!(a.http_status, Some(500));
    assert!(sim.ledger().is_empty());
    assert_eq!(sim.request_count(AGAIN), 1, "a 5xx charge is not retried");

    // Settling by merchant_uid says nothing happened; the same merchant_uid then charges once.
    assert!(
        client
            .find_payment("sub_500", None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    paid(
        client
            .charge_again(&charge(CUSTOMER, "sub_500", 9900))
            .await,
    );
    assert_eq!(sim.paid_count("sub_500"), 1);
}

#[tokio::test]
async fn hang_before_past_the_client_timeout_is_ambiguous_timeout_and_nothing_charged() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client_with(&sim, "sim_imp_secret", Duration::from_secs(1));
    client.billing_key(CUSTOMER).await.expect("token warmed up");
    sim.inject(Fault::new(FaultKind::HangBefore { secs: 3 }).on_path(AGAIN));

    let a = ambiguity_of(
        client
            .charge_again(&charge(CUSTOMER, "sub_hang_before", 9900))
            .await,
    );
    assert_eq!(a.kind, AmbiguityKind::Timeout);
    assert_eq!(a.http_status, None);
    assert!(sim.ledger().is_empty());
    assert!(
        client
            .find_payment("sub_hang_before", None)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn hang_after_past_the_client_timeout_is_ambiguous_but_find_shows_it_paid() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client_with(&sim, "sim_imp_secret", Duration::from_secs(1));
    client.billing_key(CUSTOMER).await.expect("token warmed up");
    sim.inject(Fault::new(FaultKind::HangAfter { secs: 3 }).on_path(AGAIN));

    let a = ambiguity_of(
        client
            .charge_again(&charge(CUSTOMER, "sub_hang_after", 9900))
            .await,
    );
    assert_eq!(a.kind, AmbiguityKind::Timeout);

    // The charge happened although the client never heard of it.
    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].merchant_uid, "sub_hang_after");
    assert!(ledger[0].status == "paid");
    let found = client
        .find_payment("sub_hang_after", Some(PaymentStatus::Paid))
        .await
        .expect("settled by merchant_uid");
    assert_eq!(found.imp_uid, ledger[0].imp_uid);
    assert_eq!(found.amount, 9900);
    assert_eq!(found.status, PaymentStatus::Paid);
}

#[tokio::test]
async fn corrupt_answer_is_ambiguous_malformed_but_find_shows_it_paid() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    sim.inject(Fault::new(FaultKind::Corrupt).on_path(AGAIN));
    let client = client(&sim);

    let a = ambiguity_of(
        client
            .charge_again(&charge(CUSTOMER, "sub_corrupt", 9900))
            .await,
    );
    assert_eq!(a.kind, AmbiguityKind::Malformed);
    assert_eq!(a.http_status, Some(200));
    assert_eq!(sim.paid_count("sub_corrupt"), 1);
    let found = client
        .find_payment("sub_corrupt", Some(PaymentStatus::Paid))
        .await
        .expect("settled by merchant_uid");
    assert_eq!(found.imp_uid, sim.ledger()[0].imp_uid);
    assert_eq!(found.amount, 9900);
}

// ------------------------------------------------------------------ tokens

#[tokio::test]
async fn token_expired_by_the_sim_is_refreshed_transparently() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client(&sim);
    let first = paid(client.charge_again(&charge(CUSTOMER, "sub_t1", 9900)).await);
    assert_eq!(sim.token_requests(), 1);

    sim.expire_tokens();
    let p = client.payment(&first.imp_uid).await.expect("after expiry");
    assert_eq!(p.imp_uid, first.imp_uid);
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(
        sim.request_count(&format!("/payments/{}", first.imp_uid)),
        2
    );

    // And the fresh token is kept.
    paid(client.charge_again(&charge(CUSTOMER, "sub_t2", 9900)).await);
    assert_eq!(sim.token_requests(), 2);
}

#[tokio::test]
async fn sim_clock_past_thirty_minutes_expires_the_token_and_it_is_refreshed() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client(&sim);
    paid(client.charge_again(&charge(CUSTOMER, "sub_c1", 9900)).await);
    assert_eq!(sim.token_requests(), 1);

    sim.advance_clock(1801);
    let p = paid(client.charge_again(&charge(CUSTOMER, "sub_c2", 9900)).await);
    assert_eq!(p.merchant_uid, "sub_c2");
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(sim.request_count(AGAIN), 3, "one 401, one retry");
    assert_eq!(sim.paid_count("sub_c2"), 1);
}

#[tokio::test]
async fn unauthorized_fault_is_retried_once_with_a_refreshed_token() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client(&sim);
    client.billing_key(CUSTOMER).await.expect("token warmed up");
    sim.inject(Fault::new(FaultKind::Unauthorized).on_path(AGAIN));

    let p = paid(
        client
            .charge_again(&charge(CUSTOMER, "sub_401", 9900))
            .await,
    );
    assert_eq!(p.amount, 9900);
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(sim.request_count(AGAIN), 2);
    assert_eq!(sim.paid_count("sub_401"), 1);
}

#[tokio::test]
async fn bad_secret_is_unauthorized_and_nothing_is_sent() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let client = client_with(&sim, "wrong_secret", Duration::from_secs(5));

    let r = rejection_of(
        client
            .charge_again(&charge(CUSTOMER, "sub_badkey", 9900))
            .await,
    );
    assert_eq!(r.kind, RejectionKind::Unauthorized);
    assert_eq!(r.http_status, Some(401));
    assert!(
        r.message
            .contains("imp_key, imp_secret 인증에 실패하였습니다."),
        "{}",
        r.message
    );
    assert!(!r.message.contains("wrong_secret"));
    let err = client.payment("imps_000000000000").await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(sim.request_count(AGAIN), 0);
    assert_eq!(sim.request_count("/payments/"), 0);
    assert_eq!(sim.token_requests(), 2);
    assert!(sim.ledger().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_calls_share_one_token_request() {
    let sim = start().await;
    sim.add_customer(CUSTOMER, "chai");
    let imp_uid = paid(
        client(&sim)
            .charge_again(&charge(CUSTOMER, "sub_many", 9900))
            .await,
    )
    .imp_uid;
    assert_eq!(sim.token_requests(), 1);

    // A fresh client (empty cache) and a slow service, so all 32 wait for one token.
    sim.set_latency(Duration::from_millis(150));
    let client = Arc::new(client(&sim));
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let client = Arc::clone(&client);
            let barrier = Arc::clone(&barrier);
            let imp_uid = imp_uid.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client.payment(&imp_uid).await
            })
        })
        .collect();
    for task in tasks {
        let p = task.await.expect("task").expect("payment");
        assert_eq!(p.imp_uid, imp_uid);
        assert_eq!(p.status, PaymentStatus::Paid);
    }
    assert_eq!(
        sim.token_requests(),
        2,
        "one for the charge, one for the 32"
    );
    assert_eq!(sim.request_count(&format!("/payments/{imp_uid}")), 32);
}
