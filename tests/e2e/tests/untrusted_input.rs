//! Property tests over arbitrary bytes for every untrusted parser: the
//! callback query, the webhook body (through the handler), and i'mport's
//! answers (through the client against a server that answers garbage).
//! No panic, a clear error, no state. Case counts are fixed so CI runs a
//! short, deterministic corpus (`PROPTEST_CASES` raises them locally).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use shared::registration::{FailureReason, parse_callback};

fn id_like(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn callback_query_never_panics_and_only_ids_get_through(
        pairs in proptest::collection::vec((prop_oneof![
            Just("merchant_uid".to_owned()), Just("imp_uid".to_owned()), Just("imp_success".to_owned()),
            Just("success".to_owned()), Just("error_code".to_owned()), Just("error_msg".to_owned()), ".{0,12}"
        ], ".{0,90}"), 0..8)
    ) {
        let query: HashMap<String, String> = pairs.into_iter().collect();
        match parse_callback(&query) {
            Ok(p) => {
                prop_assert!(id_like(&p.merchant_uid));
                if let Some(imp) = &p.imp_uid { prop_assert!(id_like(imp)); }
                if let Some(code) = &p.error_code { prop_assert!(code.len() <= 32); }
            }
            Err(reason) => prop_assert_eq!(reason, FailureReason::BadRequest),
        }
    }

    #[test]
    fn webhook_parser_never_panics_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..10_000),
        ct in prop_oneof![Just(None), Just(Some("application/json".to_owned())), Just(Some("application/x-www-form-urlencoded".to_owned())), ".{0,40}".prop_map(Some)],
    ) {
        if let Ok(n) = shared::gateway::iamport::notice::parse(ct.as_deref(), &body) {
            prop_assert!(id_like(&n.imp_uid) && id_like(&n.merchant_uid));
            prop_assert!(body.len() <= shared::gateway::notice::MAX_BODY);
        }
    }

    #[test]
    fn webhook_parser_accepts_structured_garbage_only_when_valid(
        imp in ".{0,80}", muid in ".{0,80}", status in ".{0,20}", form in any::<bool>()
    ) {
        let (ct, body) = if form {
            ("application/x-www-form-urlencoded", serde_urlencoded_pairs(&imp, &muid, &status))
        } else {
            ("application/json", serde_json::json!({"imp_uid": imp, "merchant_uid": muid, "status": status}).to_string())
        };
        let parsed = shared::gateway::iamport::notice::parse(Some(ct), body.as_bytes());
        let valid = id_like(&imp) && id_like(&muid) && !status.is_empty() && status.len() <= 16;
        prop_assert_eq!(parsed.is_ok(), valid, "{:?}", parsed);
    }
}

fn serde_urlencoded_pairs(imp: &str, muid: &str, status: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("imp_uid", imp)
        .append_pair("merchant_uid", muid)
        .append_pair("status", status)
        .finish()
}

/// A raw TCP server on 127.0.0.1 that answers every request with bytes the
/// test chooses (status line and body), to feed the client garbage.
struct Garbage {
    url: String,
    answer: Arc<std::sync::Mutex<(u16, Vec<u8>)>>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// One stand-in server per property test: the tests run in parallel, and a
/// shared answer would let one test's case be answered with another's.
static V1_GARBAGE: OnceLock<Garbage> = OnceLock::new();
static V2_GARBAGE: OnceLock<Garbage> = OnceLock::new();

fn garbage_server(slot: &'static OnceLock<Garbage>) -> &'static Garbage {
    slot.get_or_init(|| {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let answer: Arc<std::sync::Mutex<(u16, Vec<u8>)>> = Arc::new(std::sync::Mutex::new((200, Vec::new())));
        let shared = Arc::clone(&answer);
        let listener = runtime().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime().spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let token = buf[..n].starts_with(b"POST /users/getToken");
                    let (status, body) = if token {
                        (200, br#"{"code":0,"message":null,"response":{"access_token":"t","now":1,"expired_at":1801}}"#.to_vec())
                    } else {
                        shared.lock().unwrap().clone()
                    };
                    let head = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        Garbage { url, answer }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever i'mport answers to a charge, the outcome is one of the four
    /// typed outcomes, and only a well-formed `paid` payment counts as money.
    #[test]
    fn any_answer_to_a_charge_is_typed_and_never_mistaken_for_paid(
        status in prop_oneof![Just(200u16), Just(201), Just(400), Just(404), Just(500), Just(502), 100u16..600],
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            ".{0,200}".prop_map(String::into_bytes),
            (any::<i64>(), ".{0,20}", prop_oneof![Just("paid"), Just("failed"), Just("ready"), Just("cancelled"), Just("x")], any::<i64>())
                .prop_map(|(code, msg, st, amount)| serde_json::json!({"code": code, "message": msg, "response": {"imp_uid": "imps_1", "merchant_uid": "m", "amount": amount, "status": st}}).to_string().into_bytes()),
        ],
    ) {
        let g = garbage_server(&V1_GARBAGE);
        *g.answer.lock().unwrap() = (status, body.clone());
        let outcome = runtime().block_on(async {
            let mut config = shared::gateway::iamport::ClientConfig::new(url::Url::parse(&g.url).unwrap(), shared::secret::Secret::new("k"), shared::secret::Secret::new("s"));
            config.timeout = std::time::Duration::from_secs(2);
            let client = shared::gateway::iamport::IamportClient::new(config).unwrap();
            shared::gateway::PaymentGateway::charge(&client, &shared::gateway::ChargeRequest {
                customer_uid: "cu".into(), merchant_uid: "m".into(), amount: 1000, name: "n".into(),
                buyer: Default::default(), custom_data: None, notice_url: None,
                tax_free: 0,
            }).await
        });
        if let shared::gateway::ChargeOutcome::Paid(p) = &outcome {
            prop_assert_eq!(status, 200);
            prop_assert_eq!(p.status, shared::billing::RecordStatus::Paid);
        }
    }
}

#[tokio::test]
async fn the_webhook_handler_answers_arbitrary_bodies_with_4xx_or_an_acknowledgement() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let sim = testkit::start_sim().await;
    let app = testkit::test_app(&sim.base_url(), &[]).await;
    let mut runner = TestRunner::deterministic();
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..2000),
        prop_oneof![
            Just("application/json"),
            Just("application/x-www-form-urlencoded"),
            Just("text/html")
        ],
    );
    for _ in 0..200 {
        let (body, ct) = strategy.new_tree(&mut runner).unwrap().current();
        let request = testkit::http_event(
            "webhook-json.json",
            "POST",
            "/webhooks/iamport",
            Some(ct),
            &body,
            "127.0.0.1",
        );
        let response = payment_webhook::handle(&app, request).await.unwrap();
        let status = response.status().as_u16();
        assert!(
            matches!(status, 200 | 400 | 413 | 415),
            "status {status} for {body:?}"
        );
    }
    assert!(sim.ledger().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// PortOne V2: whatever it answers to a charge (and to the lookup that
    /// follows a 200), the outcome is typed, and only a 200 whose payment
    /// reads PAID counts as money.
    #[test]
    fn any_v2_answer_to_a_charge_is_typed_and_never_mistaken_for_paid(
        status in prop_oneof![Just(200u16), Just(400), Just(404), Just(409), Just(429), Just(500), Just(502), 100u16..600],
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            ".{0,200}".prop_map(String::into_bytes),
            (prop_oneof![Just("PAID"), Just("FAILED"), Just("READY"), Just("CANCELLED"), Just("NEW_STATUS"), Just("")], any::<i64>(), ".{0,12}")
                .prop_map(|(st, amount, kind)| serde_json::json!({"status": st, "id": "m", "transactionId": "t", "amount": {"total": amount}, "type": kind}).to_string().into_bytes()),
        ],
    ) {
        let g = garbage_server(&V2_GARBAGE);
        *g.answer.lock().unwrap() = (status, body.clone());
        let outcome = runtime().block_on(async {
            let client = shared::gateway::portone::PortOneClient::new(shared::gateway::portone::PortOneConfig {
                base_url: url::Url::parse(&g.url).unwrap(),
                api_secret: shared::secret::Secret::new("s"),
                store_id: "store".into(),
                channel_key: "channel".into(),
                billing_key_method: "CARD".into(),
                webhook_secrets: Default::default(),
                connect_timeout: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_secs(2),
            }).unwrap();
            shared::gateway::PaymentGateway::charge(&client, &shared::gateway::ChargeRequest {
                customer_uid: "billing-key-x".into(), merchant_uid: "m".into(), amount: 1000, name: "n".into(),
                buyer: Default::default(), custom_data: None, notice_url: None,
                tax_free: 0,
            }).await
        });
        if let shared::gateway::ChargeOutcome::Paid(p) = &outcome {
            prop_assert!((200..300).contains(&status), "paid on HTTP {}", status);
            prop_assert_eq!(p.status, shared::billing::RecordStatus::Paid);
        }
    }

    /// V2 webhooks: arbitrary headers and bodies never panic, and only the
    /// right signature over the exact body, in time, is accepted.
    #[test]
    fn v2_webhook_verification_accepts_only_the_right_signature(
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        id in "[a-z_0-9]{0,20}",
        skew in -400i64..400,
        garbage_sig in ".{0,120}",
        use_real in any::<bool>(),
    ) {
        let key = b"0123456789abcdef0123456789abcdef";
        let secrets = shared::gateway::portone::webhook::WebhookSecrets::parse(&[shared::secret::Secret::new(
            "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )]).unwrap();
        let now = 1_800_000_000;
        let ts = now + skew;
        let sig = if use_real { shared::gateway::portone::webhook::sign(key, &id, ts, &body) } else { garbage_sig };
        let verdict = shared::gateway::portone::webhook::verify(&secrets, Some(&id), Some(&ts.to_string()), Some(&sig), &body, now);
        prop_assert_eq!(verdict.is_ok(), use_real && skew.abs() <= 300, "{:?}", verdict);
        let _ = shared::gateway::portone::webhook::parse(&body);
    }
}
