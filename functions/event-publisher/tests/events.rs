//! event-publisher end to end on moto_server: the functions change the
//! table (with the i'mport simulator), the table's DynamoDB stream is read
//! the way a Lambda event source mapping reads it, the publisher puts the
//! events on an EventBridge bus, and a rule delivers them to an SQS queue
//! the test reads. Every event is checked against its JSON Schema in
//! `docs/events/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they did not expect

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use chrono::{DateTime, Utc};
use event_publisher::{Bus, Publisher, handle};
use iamport_sim::SimHandle;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use shared::app::App;
use shared::billing::{Subscription, SubscriptionId};
use shared::ledger::dynamodb::DynamoLedger;
use shared::ledger::{Ledger, LockChange, SubscriptionChange};
use testkit::{
    EventSink, FlakyProxy, StreamReader, app_for, dynamodb_client, dynamodb_endpoint, http_request,
    moto_sdk_config, open_v2_window, open_window, start_sim, v2_mode,
};

const SOURCE: &str = "subscription-billing";

struct World {
    app: Arc<App>,
    sim: SimHandle,
    sink: EventSink,
    stream: StreamReader,
    publisher: Publisher<DynamoLedger>,
}

impl World {
    async fn new() -> Self {
        let sim = start_sim().await;
        let app = Arc::new(app_for(&sim, &[("DUNNING_RETRY_DAYS", "1")]).await);
        let client = dynamodb_client().await;
        let table = app.config.table.name.clone();
        let stream = StreamReader::open(&client, &dynamodb_endpoint(), &table).await;
        let sink = EventSink::create(SOURCE).await;
        let publisher = Publisher {
            ledger: DynamoLedger::new(client, table, app.config.table.due_shards)
                .keys_left_sealed(),
            bus: Bus {
                client: sink.eventbridge.clone(),
                name: sink.bus.clone(),
                source: SOURCE.into(),
            },
        };
        Self {
            app,
            sim,
            sink,
            stream,
            publisher,
        }
    }

    /// The stream records written since the last call, as a Lambda event.
    async fn batch(&mut self) -> Value {
        self.stream.next_batch().await
    }

    async fn publish(&self, batch: &Value) -> DynamoDbEventResponse {
        Box::pin(publish_with(&self.publisher, batch)).await
    }

    /// Reads the stream, publishes it, and returns what the bus delivered.
    async fn pump(&mut self) -> Vec<Value> {
        let batch = self.batch().await;
        let response = self.publish(&batch).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        self.sink.drain().await
    }

    async fn sign_up(&self, user: &str, amount_in_window: i64) -> SubscriptionId {
        let body = format!(r#"{{"user_id":"{user}","plan":{{"amount":9900,"name":"월간 구독"}}}}"#);
        let response = Box::pin(billing_callback::handle(
            &self.app,
            http_request("prepare.json", None, Some(&body)),
        ))
        .await
        .unwrap();
        let prepared: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        if v2_mode() {
            assert_eq!(amount_in_window, 0, "V2 windows take no money");
            self.window(&prepared["request_issue_billing_key"]).await;
        } else {
            let mut rp = prepared["request_pay"].clone();
            rp["amount"] = json!(amount_in_window);
            self.window(&rp).await;
        }
        SubscriptionId::parse(prepared["subscription_id"].as_str().unwrap()).unwrap()
    }

    /// The window of the API in use, from its SDK parameters, and back.
    async fn window(&self, params: &Value) {
        let query = if v2_mode() {
            open_v2_window(&self.sim, params, &[]).await
        } else {
            open_window(&self.sim.base_url(), params, &[]).await
        };
        // Boxed, as the other calls: the scenario's future stays small
        // enough for a debug build's test thread.
        let redirect = Box::pin(billing_callback::handle(
            &self.app,
            http_request("callback-success.json", Some(&query), None),
        ))
        .await
        .unwrap();
        assert_eq!(redirect.status().as_u16(), 302);
    }

    /// A new card through the management API and the payment window.
    async fn new_card(&self, id: &SubscriptionId) {
        let card = self
            .api(
                "api-payment-method.json",
                &format!("/subscriptions/{id}/payment-method"),
                json!({}),
                None,
            )
            .await;
        self.window(if v2_mode() {
            &card["request_issue_billing_key"]
        } else {
            &card["request_pay"]
        })
        .await;
    }

    async fn sub(&self, id: &SubscriptionId) -> Subscription {
        self.app
            .engine
            .ledger
            .get_subscription(id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn run_at(&self, at: DateTime<Utc>) {
        testkit::clock_to(&self.app, at);
        let payload = json!({"scheduled_time": at.to_rfc3339(), "execution_id": format!("run-{}", at.timestamp())});
        Box::pin(scheduled_charge::handle(
            &self.app,
            LambdaEvent::new(payload, Context::default()),
        ))
        .await
        .unwrap();
    }

    async fn api(&self, fixture: &str, path: &str, body: Value, key: Option<&str>) -> Value {
        let mut event = testkit::event_json(fixture);
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        event["body"] = json!(body.to_string());
        event["isBase64Encoded"] = json!(false);
        if let Some(h) = event["headers"].as_object_mut() {
            h.remove("idempotency-key");
            if let Some(k) = key {
                h.insert("idempotency-key".into(), json!(k));
            }
        }
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        let response = Box::pin(subscription_api::handle(&self.app, request))
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert!(status < 300, "{path}: {status} {body}");
        body
    }
}

async fn publish_with(publisher: &Publisher<DynamoLedger>, batch: &Value) -> DynamoDbEventResponse {
    let event: StreamEvent =
        serde_json::from_value(batch.clone()).expect("a DynamoDB stream event");
    handle(publisher, LambdaEvent::new(event, Context::default()))
        .await
        .expect("the publisher answers")
}

/// The schemas of `docs/events/`, by event type.
fn schemas() -> BTreeMap<String, jsonschema::Validator> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events");
    shared::events::TYPES
        .iter()
        .map(|t| {
            let text = std::fs::read_to_string(dir.join(format!("{t}.json")))
                .unwrap_or_else(|e| panic!("docs/events/{t}.json: {e}"));
            let schema: Value = serde_json::from_str(&text).expect("schema JSON");
            let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
            ((*t).to_owned(), validator)
        })
        .collect()
}

/// Checks each delivered envelope against its schema and returns the details.
fn details(delivered: &[Value], schemas: &BTreeMap<String, jsonschema::Validator>) -> Vec<Value> {
    delivered
        .iter()
        .map(|envelope| {
            assert_eq!(envelope["source"], SOURCE);
            let kind = envelope["detail-type"]
                .as_str()
                .expect("detail-type")
                .to_owned();
            let detail = envelope["detail"].clone();
            assert_eq!(detail["type"], kind.as_str());
            let validator = schemas
                .get(&kind)
                .unwrap_or_else(|| panic!("no schema for {kind}"));
            let errors: Vec<String> = validator
                .iter_errors(&detail)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{kind} does not match its schema: {errors:?}\n{detail}"
            );
            let text = detail.to_string();
            assert!(
                !text.contains("cu_") && !text.contains("billing-key-"),
                "a billing key in an event: {text}"
            );
            detail
        })
        .collect()
}

/// Event types per subscription, in delivery order.
fn per_subscription(details: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in details {
        out.entry(d["subscription_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(d["type"].as_str().unwrap().to_owned());
    }
    out
}

/// The flows' futures (every handler of every function, nested) are deep
/// for a debug build's 2 MiB test thread: they run on a thread of their own
/// with room to spare.
#[test]
fn every_flow_publishes_exactly_its_events_in_order() {
    std::thread::Builder::new()
        .name("flows".into())
        .stack_size(64 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(every_flow())
        })
        .expect("the flows' thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

async fn every_flow() {
    let mut w = World::new().await;
    let schemas = schemas();
    let mut all = Vec::new();

    // alice pays, is charged next month, and gets part of it back.
    let alice = w.sign_up("alice", 0).await;
    // bob is declined until suspended; erin is declined, then gives a new card.
    let bob = w.sign_up("bob", 0).await;
    let erin = w.sign_up("erin", 0).await;
    // carol cancels at period end; dave changes plan; frank's window took an odd amount.
    let carol = w.sign_up("carol", 0).await;
    let dave = w.sign_up("dave", 0).await;
    // (V2 windows take no money: no frank there.)
    let frank = if v2_mode() {
        None
    } else {
        Some(w.sign_up("frank", 5000).await)
    };
    // gina's key is deleted at the PG before her renewal notice.
    let gina = w.sign_up("gina", 0).await;
    // hana's card is reported lost: declined for good, then replaced.
    let hana = w.sign_up("hana", 0).await;
    // ivy pauses before her renewal: not told, not charged; resumed later.
    let ivy = w.sign_up("ivy", 0).await;
    // jay gets a coupon for his next period, 100 % off: recorded at 0 KRW.
    let jay = w.sign_up("jay", 0).await;
    all.extend(w.pump().await);
    w.api(
        "api-create-coupon.json",
        "/coupons",
        json!({"id": "free-month", "percent_off": 100, "duration": "once"}),
        Some("coupon-free-month"),
    )
    .await;
    w.api(
        "api-apply-coupon.json",
        &format!("/subscriptions/{jay}/coupon"),
        json!({"coupon_id": "free-month"}),
        None,
    )
    .await;
    w.api(
        "api-pause.json",
        &format!("/subscriptions/{ivy}/pause"),
        json!({}),
        None,
    )
    .await;

    w.api(
        "api-cancel.json",
        &format!("/subscriptions/{carol}/cancel"),
        json!({"at": "period_end", "reason": "moving"}),
        None,
    )
    .await;
    w.api(
        "api-change-plan.json",
        &format!("/subscriptions/{dave}/plan"),
        // dave asked for the dearer plan himself: his request is the consent.
        json!({"amount": 14900, "name": "프로", "consent": {"channel": "app", "reference": "upgrade-dave"}}),
        None,
    )
    .await;
    // The renewal notices, 7 days before the charge: everyone renewing
    // (not carol, who ends; not frank, who waits for a person).
    let due = w.sub(&alice).await.next_charge_at;
    let gina_key = w.sub(&gina).await.customer_uid;
    w.sim.remove_customer(&gina_key);
    w.run_at(due - chrono::Duration::days(7)).await;
    for who in [&bob, &erin] {
        let key = w.sub(who).await.customer_uid;
        w.sim.decline_customer(&key, "잔액부족");
    }
    let hana_key = w.sub(&hana).await.customer_uid;
    w.sim.decline_customer(&hana_key, "[8301] 분실카드입니다");
    w.run_at(due).await;
    all.extend(w.pump().await);

    // erin gives a new card: charged at once.
    w.new_card(&erin).await;
    // bob's retry a day later is declined too: suspended by the next run,
    // once that request's quiet period has passed.
    w.run_at(due + chrono::Duration::days(1)).await;
    testkit::after_quiet_period(&w.app);
    let later = w.app.engine.now();
    w.run_at(later).await;
    all.extend(w.pump().await);
    // hana's lost card stopped her at once: no retry is due, and the retry
    // days' runs charge nothing more of it.
    assert_eq!(
        w.sub(&hana).await.status,
        shared::billing::SubscriptionStatus::ActionRequired
    );
    for day in [1, 3, 7] {
        w.run_at(due + chrono::Duration::days(day)).await;
    }
    let charged_lost = w
        .sim
        .ledger()
        .iter()
        .filter(|p| p.customer_uid.as_deref() == Some(hana_key.as_str()) && p.amount > 0)
        .count();
    assert_eq!(
        charged_lost, 2,
        "the card was charged for its first period at sign-up and once more, declined"
    );
    // ivy's period was skipped while paused; she resumes by hand.
    assert_eq!(
        w.sub(&ivy).await.status,
        shared::billing::SubscriptionStatus::Paused
    );
    w.api(
        "api-resume.json",
        &format!("/subscriptions/{ivy}/resume"),
        json!({}),
        None,
    )
    .await;
    // A new card charges the period at once.
    w.new_card(&hana).await;
    assert_eq!(
        w.sub(&hana).await.status,
        shared::billing::SubscriptionStatus::Active
    );
    let paid = w
        .app
        .engine
        .ledger
        .list_attempts(&alice)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find(|a| a.state == shared::billing::AttemptState::Paid)
        .unwrap();
    w.api(
        "api-refund.json",
        &format!("/charges/{}/refund", paid.merchant_uid),
        json!({"amount": 3000, "reason": "goodwill"}),
        Some("refund-alice"),
    )
    .await;
    all.extend(w.pump().await);

    let details = details(&all, &schemas);
    let got = per_subscription(&details);
    let expect = |types: &[&str]| types.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        got[alice.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.renewal_upcoming",
            "charge.succeeded",
            "charge.refunded"
        ])
    );
    assert_eq!(
        got[bob.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.renewal_upcoming",
            "charge.failed",
            "subscription.past_due",
            "charge.failed",
            "subscription.suspended"
        ])
    );
    assert_eq!(
        got[erin.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.renewal_upcoming",
            "charge.failed",
            "subscription.past_due",
            "subscription.payment_method_updated",
            "charge.succeeded"
        ])
    );
    assert_eq!(
        got[carol.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.cancelled"
        ])
    );
    assert_eq!(
        got[hana.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.renewal_upcoming",
            "charge.failed",
            "payment_method.action_required",
            // The new card: the period outstanding, due now (as after a
            // suspension), then paid.
            "subscription.past_due",
            "subscription.payment_method_updated",
            "charge.succeeded"
        ])
    );
    assert_eq!(
        got[dave.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.plan_changed",
            "subscription.renewal_upcoming",
            "charge.succeeded"
        ])
    );
    assert_eq!(
        got[ivy.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.paused",
            "subscription.resumed",
            // The rest of the period the pause ended in, prorated.
            "charge.succeeded"
        ])
    );
    assert_eq!(
        got[jay.as_str()],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "subscription.coupon_applied",
            "subscription.renewal_upcoming",
            "charge.succeeded",
            // Its end raises the price back: asked like a price increase.
            "subscription.price_change_requested"
        ])
    );
    let free = details
        .iter()
        .rfind(|d| d["subscription_id"] == jay.as_str() && d["type"] == "charge.succeeded")
        .unwrap();
    assert_eq!(
        (&free["data"]["amount"], &free["data"]["imp_uid"]),
        (&json!(0), &Value::Null),
        "a free period is recorded, never sent: {free}"
    );
    let asked = details
        .iter()
        .find(|d| {
            d["subscription_id"] == jay.as_str()
                && d["type"] == "subscription.price_change_requested"
        })
        .unwrap();
    assert_eq!(asked["data"]["coupon_id"], "free-month", "{asked}");
    let resumed = details
        .iter()
        .find(|d| d["subscription_id"] == ivy.as_str() && d["type"] == "subscription.resumed")
        .unwrap();
    let ivy_sub = w.sub(&ivy).await;
    assert_eq!(
        resumed["data"]["current_period"],
        ivy_sub.anchor.period_id(1).to_string(),
        "the period the pause ended in is charged for its rest"
    );
    if let Some(frank) = &frank {
        assert_eq!(
            got[frank.as_str()],
            expect(&["subscription.activated", "charge.needs_review"])
        );
    }
    assert_eq!(
        got[gina.as_str()][..3],
        expect(&[
            "subscription.activated",
            "charge.succeeded",
            "payment_method.action_required"
        ])
    );
    // What the events say, for the ones a merchant acts on.
    let of = |id: &SubscriptionId, kind: &str| -> Vec<&Value> {
        details
            .iter()
            .filter(|d| d["subscription_id"] == id.as_str() && d["type"] == kind)
            .collect()
    };
    let bob_failed = of(&bob, "charge.failed");
    assert_eq!(bob_failed[0]["data"]["final"], false);
    assert!(bob_failed[0]["data"]["next_retry_at"].is_string());
    assert_eq!(bob_failed[1]["data"]["final"], true);
    assert_eq!(
        of(&carol, "subscription.cancelled")[0]["data"]["mode"],
        "period_end"
    );
    assert_eq!(of(&dave, "charge.succeeded")[1]["data"]["amount"], 14900);
    let dave_notice = of(&dave, "subscription.renewal_upcoming")[0];
    assert_eq!(
        dave_notice["data"]["amount"], 14900,
        "the price it will charge"
    );
    assert_eq!(
        dave_notice["id"],
        format!(
            "subscription.renewal_upcoming:{dave}:{}",
            dave_notice["data"]["period"].as_str().unwrap()
        )
    );
    assert_eq!(
        of(&gina, "payment_method.action_required")[0]["data"]["reason"],
        "billing_key_missing"
    );
    let hana_failed = &of(&hana, "charge.failed")[0]["data"];
    assert_eq!(
        (
            hana_failed["decline_class"].as_str(),
            hana_failed["final"].as_bool()
        ),
        (Some("card_lost_or_stolen"), Some(true))
    );
    assert_eq!(
        of(&hana, "payment_method.action_required")[0]["data"]["reason"],
        "card_lost_or_stolen"
    );
    assert_eq!(bob_failed[0]["data"]["decline_class"], "insufficient_funds");
    assert!(
        of(&alice, "charge.succeeded")[1]["data"]["receipt_url"].is_string(),
        "a paid charge carries the PG's receipt link"
    );
    let refunded = &of(&alice, "charge.refunded")[0]["data"];
    assert_eq!(
        (refunded["refunded"].as_i64(), refunded["reason"].as_str()),
        (Some(3000), Some("requested"))
    );
    if let Some(frank) = &frank {
        assert_eq!(
            of(frank, "subscription.activated")[0]["data"]["status"],
            "needs_review"
        );
    }
    assert!(details.iter().all(|d| d["user_id"].is_string()));
    // Nothing twice.
    let ids: BTreeSet<&str> = details.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), details.len());
}

#[tokio::test]
async fn a_change_that_did_not_commit_publishes_nothing() {
    let mut w = World::new().await;
    let id = w.sign_up("ann", 0).await;
    assert!(!w.pump().await.is_empty());
    // A change written against a stale version is refused: no record, no event.
    let sub = w.sub(&id).await;
    let mut stale = sub.clone();
    stale.cancel_at_period_end = true;
    let refused = w
        .app
        .engine
        .ledger
        .change_subscription(&SubscriptionChange {
            next: &stale, // same version as stored: not next
            audit: None,
            lock: LockChange::Keep,
        })
        .await;
    assert!(refused.is_err());
    let batch = w.batch().await;
    assert_eq!(batch["Records"].as_array().map(Vec::len), Some(0));
    assert!(w.pump().await.is_empty());
}

#[tokio::test]
async fn a_replayed_or_interrupted_batch_loses_nothing_and_repeats_ids_only() {
    let mut w = World::new().await;
    let schemas = schemas();
    let id = w.sign_up("bo", 0).await;
    let due = w.sub(&id).await.next_charge_at;
    w.run_at(due).await;
    let batch = w.batch().await;
    let records = batch["Records"].as_array().cloned().unwrap();

    // The function died after publishing part of the batch; Lambda retries it whole.
    let head = json!({"Records": records[..records.len() / 2]});
    assert!(w.publish(&head).await.batch_item_failures.is_empty());
    assert!(w.publish(&batch).await.batch_item_failures.is_empty());
    // And the same batch delivered again (a replayed shard).
    assert!(w.publish(&batch).await.batch_item_failures.is_empty());
    let delivered = details(&w.sink.drain().await, &schemas);
    let distinct: BTreeMap<&str, &Value> = delivered
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d))
        .collect();
    let kinds: Vec<&str> = distinct
        .values()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 3, "{kinds:?}");
    assert!(delivered.len() > distinct.len(), "duplicates share ids");
    // Duplicates are byte for byte the same event.
    for d in &delivered {
        assert_eq!(&distinct[d["id"].as_str().unwrap()], &d);
    }

    // EventBridge unreachable mid-batch: the batch stops at the first record
    // it could not publish, and the retry from there delivers the rest.
    let card = w
        .api(
            "api-cancel.json",
            &format!("/subscriptions/{id}/cancel"),
            json!({"at": "now", "reason": "test"}),
            None,
        )
        .await;
    assert_eq!(card["subscription"]["status"], "cancelled");
    let batch = w.batch().await;
    let flaky = FlakyProxy::start(&dynamodb_endpoint()).await;
    let broken = Publisher {
        ledger: DynamoLedger::new(
            dynamodb_client().await,
            w.app.config.table.name.clone(),
            w.app.config.table.due_shards,
        )
        .keys_left_sealed(),
        bus: Bus {
            client: aws_sdk_eventbridge::Client::new(&moto_sdk_config(&flaky.url).await),
            name: w.sink.bus.clone(),
            source: SOURCE.into(),
        },
    };
    flaky.fail_after(0);
    let response = publish_with(&broken, &batch).await;
    let failed_at = response.batch_item_failures[0]
        .item_identifier
        .clone()
        .expect("the first record not published");
    assert!(
        w.sink.drain().await.is_empty(),
        "nothing published while down"
    );
    flaky.heal();
    let records = batch["Records"].as_array().cloned().unwrap();
    let from = records
        .iter()
        .position(|r| r["dynamodb"]["SequenceNumber"] == failed_at.as_str())
        .unwrap();
    let retry = json!({"Records": records[from..]});
    assert!(
        publish_with(&broken, &retry)
            .await
            .batch_item_failures
            .is_empty()
    );
    let after = details(&w.sink.drain().await, &schemas);
    let kinds: Vec<&str> = after.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["subscription.cancelled"]);
}

/// A charge's cash receipt as its attempt's images change (decision 74):
/// issued, reissued after a partial refund (a cancel and an issue in one
/// change), cancelled after a full one, a refused try that gives up: each
/// event matches its schema, has a stable id, and masks the holder.
#[test]
fn cash_receipt_events_follow_the_receipt_and_match_their_schemas() {
    use shared::billing::receipts::{self, IssuedReceipt, Outcome, Target};
    use shared::billing::{
        Anchor, AttemptState, CashReceipt, ReceiptHolder, ReceiptKind, ReceiptState,
    };
    use shared::secret::Pii;
    let now: DateTime<Utc> = "2026-12-24T15:00:00Z".parse().unwrap();
    let sub = shared::testing::subscription("abcdefghij01", Anchor::new(2026, 12, 1).unwrap());
    let mut paid = shared::testing::attempt(&sub, AttemptState::Paid);
    paid.imp_uid = Some("imps_1".into());
    let holder = ReceiptHolder {
        kind: ReceiptKind::Personal,
        identifier: Pii::new("01012345678"),
    };
    let fresh = CashReceipt::new(holder, now);
    let live = |amount: i64, n: &str| IssuedReceipt {
        amount,
        tax_free: 0,
        vat: amount / 11,
        issue_number: n.into(),
        url: Some(format!("https://receipts.example/{n}")),
        issued_at: now,
    };
    let target = |amount| Target {
        amount,
        tax_free: 0,
    };
    let issued = receipts::after(
        &fresh,
        &Outcome::Issued(live(9900, "A1")),
        target(9900),
        now,
    );
    let cancelled = receipts::after(&issued, &Outcome::Cancelled(now), target(6600), now);
    let reissued = receipts::after(
        &cancelled,
        &Outcome::Issued(live(6600, "A2")),
        target(6600),
        now,
    );
    let gone = receipts::after(&reissued, &Outcome::Cancelled(now), target(0), now);
    let mut refused = fresh.clone();
    for _ in 0..receipts::MAX_TRIES {
        refused = receipts::after(
            &refused,
            &Outcome::Refused("[PG] 발급 실패".into()),
            target(9900),
            now,
        );
    }
    assert_eq!(refused.state, ReceiptState::Review);
    let image = |r: &CashReceipt, refunded: i64| shared::billing::ChargeAttempt {
        cash_receipt: Some(r.clone()),
        refunded,
        ..paid.clone()
    };
    let steps = [
        (image(&fresh, 0), image(&issued, 0)),
        (image(&issued, 3300), image(&reissued, 3300)),
        (image(&reissued, 9900), image(&gone, 9900)),
        (image(&fresh, 0), image(&refused, 0)),
    ];
    let schemas = schemas();
    let mut kinds = Vec::new();
    for (old, new) in &steps {
        for event in shared::events::of_attempt(Some(old), Some(new), "user-7") {
            let detail = serde_json::to_value(&event).unwrap();
            let errors: Vec<String> = schemas[event.kind]
                .iter_errors(&detail)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}\n{detail}", event.kind);
            assert!(
                !detail.to_string().contains("01012345678"),
                "PII in {detail}"
            );
            kinds.push((event.kind, event.id.clone()));
        }
    }
    let uid = &paid.merchant_uid;
    assert_eq!(
        kinds,
        [
            (
                "receipt.cash_issued",
                format!("receipt.cash_issued:{uid}:1")
            ),
            (
                "receipt.cash_cancelled",
                format!("receipt.cash_cancelled:{uid}:1")
            ),
            (
                "receipt.cash_issued",
                format!("receipt.cash_issued:{uid}:2")
            ),
            (
                "receipt.cash_cancelled",
                format!("receipt.cash_cancelled:{uid}:2")
            ),
            (
                "receipt.cash_failed",
                format!("receipt.cash_failed:{uid}:5")
            ),
        ]
    );
}
