//! `local-demo`: plays the whole billing story against a running local stack
//! (moto_server, the i'mport simulator and the functions under
//! `cargo lambda watch`), as `scripts/local-stack.sh` starts it.
//!
//! 1. creates the table from the one Rust definition (`create_table`);
//! 2. registers customers: `POST …/billing/prepare`, the simulator's payment
//!    window, then the real callback, exactly as a browser would;
//! 3. sets scenarios in the simulator (always declined, declined once,
//!    a timeout after charging) and asks the management API
//!    (`subscription-api`) for a plan change and a cancel at period end;
//! 4. invokes `scheduled-charge` once a day (10:00 Asia/Seoul) for a few
//!    months of billing clock; a customer whose card is declined gets a new
//!    card through the API and the payment window, charged at once;
//! 5. refunds part of a charge through the API (the same request twice);
//! 6. prints subscriptions and charge attempts from DynamoDB beside the
//!    simulator's ledger, and checks that nothing was charged twice;
//! 7. plays the event source mapping (the table's stream to
//!    `event-publisher`) and prints each customer's lifecycle events as
//!    EventBridge delivered them.
//!
//! Exit status: 0 when every check passed, 1 when a check failed, 2 when the
//! stack could not be driven at all.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use clap::Parser;
use serde_json::{Value, json};
use shared::billing::{
    AttemptState, BILLING_TZ, ChargeAttempt, MerchantUid, Subscription, SubscriptionId,
    SubscriptionStatus,
};
use shared::ledger::Ledger;
use shared::ledger::dynamodb::{DynamoLedger, table};
use url::Url;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

fn fail(msg: impl Into<String>) -> Error {
    msg.into().into()
}

#[derive(Debug, Parser)]
#[command(
    name = "local-demo",
    about = "Plays the billing story against the local stack started by scripts/local-stack.sh"
)]
struct Args {
    /// DynamoDB API (moto_server).
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL_DYNAMODB",
        default_value = "http://127.0.0.1:8000"
    )]
    dynamodb: String,
    /// The i'mport simulator.
    #[arg(
        long,
        env = "IAMPORT_BASE_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    sim: String,
    /// `cargo lambda watch` (function URLs and the Lambda invoke API).
    #[arg(
        long,
        env = "LOCAL_LAMBDA_URL",
        default_value = "http://127.0.0.1:9000"
    )]
    lambda: String,
    /// Table the functions use (their TABLE_NAME).
    #[arg(long, env = "TABLE_NAME", default_value = "billing-local")]
    table: String,
    /// Due-index shards the functions use (their DUE_SHARDS).
    #[arg(long, env = "DUE_SHARDS", default_value_t = 4)]
    shards: u32,
    #[arg(long, env = "AWS_REGION", default_value = "ap-northeast-2")]
    region: String,
    /// Months of billing clock to play after the sign-up month.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=12))]
    months: u32,
    /// Print every daily run, not only the ones that had work.
    #[arg(long)]
    verbose: bool,
    /// The functions' environment (KEY=VALUE lines): tells whether webhooks
    /// are on (NOTICE_URL).
    #[arg(long, default_value = ".local/functions.env")]
    functions_env: PathBuf,
    /// Instead of the story: one charge run at this billing time (RFC 3339),
    /// printing the function's answer.
    #[arg(long, value_name = "RFC3339")]
    charge_at: Option<String>,
    /// Instead of the story: create the table and the local KMS key (if
    /// missing) and stop
    /// (`scripts/sam-local.sh` uses it).
    #[arg(long)]
    create_table: bool,
}

/// What a customer will go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Pays every period.
    Pays,
    /// Every recurring charge is declined: walks the dunning schedule to `suspended`.
    AlwaysDeclined,
    /// The first recurring charge is declined; the retry a day later pays.
    DeclinedOnce,
    /// The first recurring charge is taken but the answer times out (and the
    /// immediate look-up fails): `unknown`, settled by the next run.
    TimeoutAfterCharge,
    /// Closes the payment window: no billing key, failure page.
    ClosesWindow,
    /// Pays; the merchant moves the subscription to another plan right
    /// after sign-up: the new price applies from the next period.
    PlanChange,
    /// Pays for the sign-up period; the merchant cancels at period end right
    /// away: never charged again, cancelled when the next period would begin.
    CancelAtPeriodEnd,
    /// The card is declined; after the first decline the customer gives a
    /// new card (management API + payment window), charged at once.
    NewCardAfterDecline,
}

impl Scenario {
    fn describe(self) -> &'static str {
        match self {
            Self::Pays => "pays every month",
            Self::AlwaysDeclined => "card always declined",
            Self::DeclinedOnce => "declined once, then pays on the retry",
            Self::TimeoutAfterCharge => "i'mport times out after charging",
            Self::ClosesWindow => "closes the payment window",
            Self::PlanChange => "moves to another plan after sign-up",
            Self::CancelAtPeriodEnd => "cancels at period end",
            Self::NewCardAfterDecline => "declined, then a new card",
        }
    }
}

struct Persona {
    label: &'static str,
    user_id: &'static str,
    buyer_name: &'static str,
    email: &'static str,
    tel: &'static str,
    amount: i64,
    plan: &'static str,
    scenario: Scenario,
    /// Which i'mport SDK generation the browser plays (success flag shape).
    sdk: Option<&'static str>,
}

const PEOPLE: [Persona; 8] = [
    Persona {
        label: "alice",
        user_id: "user-1001",
        buyer_name: "김하나",
        email: "hana@example.com",
        tel: "010-1111-0001",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::Pays,
        sdk: None,
    },
    Persona {
        label: "bob",
        user_id: "user-1002",
        buyer_name: "이두리",
        email: "duri@example.com",
        tel: "010-1111-0002",
        amount: 14900,
        plan: "프로 월간",
        scenario: Scenario::AlwaysDeclined,
        sdk: Some("new"),
    },
    Persona {
        label: "carol",
        user_id: "user-1003",
        buyer_name: "박세진",
        email: "sejin@example.com",
        tel: "010-1111-0003",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::DeclinedOnce,
        sdk: Some("legacy_success"),
    },
    Persona {
        label: "dave",
        user_id: "user-1004",
        buyer_name: "최네오",
        email: "neo@example.com",
        tel: "010-1111-0004",
        amount: 29900,
        plan: "팀 월간",
        scenario: Scenario::TimeoutAfterCharge,
        sdk: None,
    },
    Persona {
        label: "erin",
        user_id: "user-1005",
        buyer_name: "정다섯",
        email: "daseot@example.com",
        tel: "010-1111-0005",
        amount: 4900,
        plan: "라이트 월간",
        scenario: Scenario::PlanChange,
        sdk: Some("new"),
    },
    Persona {
        label: "frank",
        user_id: "user-1006",
        buyer_name: "한여섯",
        email: "yeoseot@example.com",
        tel: "010-1111-0006",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::ClosesWindow,
        sdk: None,
    },
    Persona {
        label: "gina",
        user_id: "user-1007",
        buyer_name: "윤일곱",
        email: "ilgop@example.com",
        tel: "010-1111-0007",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::CancelAtPeriodEnd,
        sdk: None,
    },
    Persona {
        label: "hana",
        user_id: "user-1008",
        buyer_name: "서여덟",
        email: "yeodeol@example.com",
        tel: "010-1111-0008",
        amount: 14900,
        plan: "프로 월간",
        scenario: Scenario::NewCardAfterDecline,
        sdk: None,
    },
];

/// The plan erin moves to.
const ERIN_NEW_PLAN: (i64, &str) = (9900, "베이직 월간");
/// What is refunded of alice's last charge.
const ALICE_REFUND: i64 = 3000;

/// A customer after the sign-up round trip.
struct Member {
    p: &'static Persona,
    id: SubscriptionId,
    customer_uid: String,
    /// The callback URL i'mport redirected the browser to.
    callback: Url,
    /// Where the callback sent the browser.
    landed: Url,
}

impl Member {
    fn landed_param(&self, key: &str) -> Option<String> {
        self.landed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    fn signed_up(&self) -> bool {
        self.landed_param("subscription_id").is_some()
    }
}

/// The outcome of the checks, printed at the end.
#[derive(Default)]
struct Checks {
    passed: u32,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if ok {
            self.passed += 1;
        } else {
            let what = what.into();
            println!("  ✗ {what}");
            self.failed.push(what);
        }
    }
}

struct Stack {
    http: reqwest::Client,
    store: DynamoLedger,
    sim: String,
    lambda: String,
    started: Instant,
    /// Queued mode (CHARGE_MODE=queued): the charge queue on moto_server.
    queue: Option<(aws_sdk_sqs::Client, String)>,
    /// The time the story has reached (the last run's billing time): sent
    /// to the HTTP functions as `x-billing-clock`, which they follow on the
    /// event's clock, so a card replaced after January's decline is
    /// replaced in January for them too.
    story_clock: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Stack {
    fn callback_fn(&self, path: &str) -> String {
        format!("{}/lambda-url/billing-callback{path}", self.lambda)
    }

    /// Moves the story's time on (an action some hours after a run).
    fn advance_story_clock(&self, by: chrono::Duration) {
        let mut clock = self
            .story_clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *clock = clock.map(|t| t + by);
    }

    /// `r` with the story's time, once a run has played one.
    fn on_story_clock(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let at = *self
            .story_clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match at {
            Some(t) => r.header("x-billing-clock", t.to_rfc3339()),
            None => r,
        }
    }

    /// Calls the management API (`subscription-api`): status, JSON body and
    /// whether the answer was a replay of an earlier one (`Idempotency-Key`).
    async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value, bool)> {
        let url = format!("{}/lambda-url/subscription-api{path}", self.lambda);
        let mut r = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        r = self.on_story_clock(r.header("x-actor", "local-demo"));
        if let Some(k) = idempotency_key {
            r = r.header("idempotency-key", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        let replayed = r.headers().contains_key("idempotent-replayed");
        let text = r.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value, replayed))
    }

    fn elapsed(&self) -> String {
        format!("{:>5.1}s", self.started.elapsed().as_secs_f64())
    }

    fn step(&self, n: u32, title: &str) {
        println!();
        println!("[{}] ── {n}. {title}", self.elapsed());
    }

    async fn sim_get(&self, path: &str) -> Result<Value> {
        let r = self.http.get(format!("{}{path}", self.sim)).send().await?;
        let status = r.status();
        let body = r.text().await?;
        if !status.is_success() {
            return Err(fail(format!("GET {path} → {status}: {body}")));
        }
        Ok(serde_json::from_str(&body)?)
    }

    async fn sim_post(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.sim))
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            return Err(fail(format!("POST {path} {body} → {status}: {text}")));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ledger(&self) -> Result<Vec<Value>> {
        match self.sim_get("/__sim/ledger").await? {
            Value::Array(a) => Ok(a),
            other => Err(fail(format!("ledger is not an array: {other}"))),
        }
    }

    /// Invokes a function through the Lambda invoke API of `cargo lambda
    /// watch`: its answer, or why it failed.
    async fn invoke(&self, function: &str, payload: &Value) -> Result<(Value, Option<String>)> {
        let url = format!(
            "{}/2015-03-31/functions/{function}/invocations",
            self.lambda
        );
        let r = self.http.post(url).json(payload).send().await?;
        let status = r.status();
        let function_error = r
            .headers()
            .get("x-amz-function-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let error =
            (!status.is_success() || function_error.is_some() || body.get("errorType").is_some())
                .then(|| {
                    format!(
                        "HTTP {status}{}: {text}",
                        function_error
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )
                });
        Ok((body, error))
    }

    /// Queued mode: plays the queue's event source mapping until the queue
    /// is empty (receive ≤ 10 messages, invoke charge-worker with them,
    /// delete what it did, let the rest come back), adding up the workers'
    /// summaries into one run's.
    async fn drain_queue(&self, planned: &Value) -> Result<(Value, Option<String>)> {
        let Some((sqs, url)) = &self.queue else {
            return Ok((planned.clone(), None));
        };
        let mut total: BTreeMap<String, u64> = BTreeMap::new();
        let (mut invocations, mut error) = (0u32, None);
        for _ in 0..200 {
            let got = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            let records: Vec<Value> = messages
                .iter()
                .map(|m| json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:ap-northeast-2:000000000000:charge-local", "awsRegion": "ap-northeast-2"}))
                .collect();
            let (answer, failed) = self
                .invoke("charge-worker", &json!({ "Records": records }))
                .await?;
            invocations += 1;
            if failed.is_some() {
                error = failed;
                break;
            }
            if let Some(summary) = answer["summary"].as_object() {
                for (k, v) in summary {
                    *total.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
            let again: Vec<&str> = answer["batchItemFailures"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|i| i["itemIdentifier"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for m in &messages {
                let handle = m.receipt_handle().unwrap_or_default();
                if again.contains(&m.message_id().unwrap_or_default()) {
                    sqs.change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .send()
                        .await?;
                } else {
                    sqs.delete_message()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
        let mut body = json!(total);
        body["planned"] = planned["planned"].clone();
        body["messages"] = planned["messages"].clone();
        body["worker_invocations"] = json!(invocations);
        Ok((body, error))
    }

    /// Invokes scheduled-charge with the Scheduler input of `infra/template.yaml`:
    /// through the Lambda invoke API of `cargo lambda watch`. In queued mode
    /// it plans the run, and the charge queue is then drained by workers.
    async fn charge_run(&self, billing_time: DateTime<Utc>, run_id: &str) -> Result<RunResult> {
        let payload = json!({
            "scheduled_time": billing_time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "execution_id": run_id,
        });
        {
            let mut clock = self
                .story_clock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *clock = (*clock).max(Some(billing_time));
        }
        let started = Instant::now();
        let (mut body, mut error) = self.invoke("scheduled-charge", &payload).await?;
        if error.is_none() && body["mode"] == "queued" {
            (body, error) = self.drain_queue(&body).await?;
        }
        Ok(RunResult {
            body,
            error,
            took: started.elapsed(),
        })
    }

    async fn sub(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.store
            .get_subscription(id)
            .await?
            .ok_or_else(|| fail(format!("subscription {id} is not in the table")))
    }
}

struct RunResult {
    body: Value,
    error: Option<String>,
    took: Duration,
}

impl RunResult {
    fn count(&self, key: &str) -> u64 {
        self.body.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("FAILED: {e}");
        }
        let mut parts = Vec::new();
        for key in [
            "charged",
            "declined",
            "rejected",
            "ambiguous",
            "reconciled",
            "deferred",
            "needs_review",
            "corrupt",
            "signups_completed",
            "skipped",
        ] {
            let n = self.count(key);
            if n > 0 {
                parts.push(format!("{key} {n}"));
            }
        }
        let mut s = format!("due {}", self.count("due"));
        if !parts.is_empty() {
            let _ = write!(s, ": {}", parts.join(", "));
        }
        if let Some(planned) = self.body.get("planned").and_then(Value::as_u64) {
            let _ = write!(
                s,
                " [queued: planned {planned} in {} message(s), {} worker invocation(s)]",
                self.count("messages"),
                self.count("worker_invocations")
            );
        }
        if let Some(stopped) = self.body.get("stopped").and_then(Value::as_str) {
            let _ = write!(s, " (stopped: {stopped})");
        }
        s
    }
}

/// Delay of the simulator's webhooks in the story: long enough that the run
/// after a lost answer settles it before the notification arrives.
const WEBHOOK_DELAY_MS: u64 = 3000;

fn paid_charges(ledger: &[Value]) -> usize {
    ledger
        .iter()
        .filter(|p| str_of(p, "customer_uid_usage") == "payment" && ever_paid(p))
        .count()
}

/// Starts scheduled-charge under `cargo lambda watch` with a run at a
/// billing time where nothing can be due.
async fn warm_up_charger(stack: &Stack) -> Result<()> {
    let t = Instant::now();
    let warm = stack.charge_run(probe_time(), "local-demo-warm-up").await?;
    println!(
        "  scheduled-charge under cargo lambda watch answers (a run at 2000-01-01: {}) after {:.1}s",
        warm.summary(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn probe_time() -> DateTime<Utc> {
    seoul_10am(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default())
}

/// `KEY=VALUE` lines (blank lines and `#` comments skipped).
/// The KMS key (an alias) the local stacks seal billing keys with.
const LOCAL_KMS_KEY: &str = "alias/billing-keys-local";

/// Creates the local KMS key behind `alias` on moto_server, unless it exists.
async fn ensure_kms_key(kms: &aws_sdk_kms::Client, alias: &str) -> Result<()> {
    if kms.describe_key().key_id(alias).send().await.is_ok() || !alias.starts_with("alias/") {
        return Ok(());
    }
    let key = kms
        .create_key()
        .description("billing keys of the local stack")
        .send()
        .await
        .map_err(|e| fail(format!("KMS CreateKey: {e}")))?;
    let id = key
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .ok_or_else(|| fail("KMS CreateKey answered without a key"))?;
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(id)
        .send()
        .await
        .map_err(|e| fail(format!("KMS CreateAlias {alias}: {e}")))?;
    Ok(())
}

fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

fn kst(t: DateTime<Utc>) -> String {
    t.with_timezone(&BILLING_TZ)
        .format("%Y-%m-%d %H:%M KST")
        .to_string()
}

fn won(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

fn seoul_10am(date: NaiveDate) -> DateTime<Utc> {
    let local = date.and_hms_opt(10, 0, 0).unwrap_or_default();
    BILLING_TZ
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| local.and_utc())
}

fn short_url(u: &Url) -> String {
    let mut s = u.path().to_owned();
    if let Some(q) = u.query() {
        let _ = write!(s, "?{q}");
    }
    s
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn i64_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// A ledger payment that took money at some point (paid, possibly refunded later).
fn ever_paid(p: &Value) -> bool {
    i64_of(p, "paid_at") > 0 && matches!(str_of(p, "status"), "paid" | "cancelled")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match play(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("\nlocal-demo: {e}");
            ExitCode::from(2)
        }
    }
}

async fn play(args: Args) -> Result<bool> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&args.dynamodb)
        .region(Region::new(args.region.clone()))
        .credentials_provider(Credentials::new("test", "test", None, None, "local-demo"))
        .load()
        .await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    // The functions seal billing keys with this KMS key (moto serves KMS on
    // the same endpoint); the story reads the table as they do.
    let kms = aws_sdk_kms::Client::new(&sdk);
    let kms_key = read_env_file(&args.functions_env)
        .ok()
        .and_then(|env| env.into_iter().find(|(k, _)| k == "BILLING_KEY_KMS_KEY_ID"))
        .map_or_else(|| LOCAL_KMS_KEY.to_owned(), |(_, v)| v);
    ensure_kms_key(&kms, &kms_key).await?;
    let mut stack = Stack {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // The first request to each function may wait for `cargo lambda watch` to start it.
            .timeout(Duration::from_secs(900))
            .build()?,
        store: DynamoLedger::new(ddb.clone(), args.table.clone(), args.shards)
            .with_sealed_keys(kms.clone(), &kms_key),
        sim: args.sim.trim_end_matches('/').to_owned(),
        lambda: args.lambda.trim_end_matches('/').to_owned(),
        started: Instant::now(),
        queue: None,
        story_clock: std::sync::Mutex::new(None),
    };
    let mut checks = Checks::default();
    // Where event-publisher puts the lifecycle events (its EVENT_BUS_NAME).
    let event_bus = read_env_file(&args.functions_env).ok().and_then(|env| {
        env.into_iter()
            .find(|(k, _)| k == "EVENT_BUS_NAME")
            .map(|(_, v)| v)
    });

    if args.create_table {
        if ddb
            .describe_table()
            .table_name(&args.table)
            .send()
            .await
            .is_err()
        {
            table::create_table(&ddb, &args.table)
                .await
                .map_err(|e| fail(format!("create_table {}: {e}", args.table)))?;
        }
        println!("local-demo: table {} ready", args.table);
        return Ok(true);
    }
    if let Some(at) = &args.charge_at {
        let at = DateTime::parse_from_rfc3339(at)
            .map_err(|e| fail(format!("--charge-at {at}: {e}")))?
            .with_timezone(&Utc);
        warm_up_charger(&stack).await?;
        let run_id = format!("manual-{}", at.format("%Y%m%dT%H%M%S"));
        let run = stack.charge_run(at, &run_id).await?;
        println!("{}  {}", kst(at), run.summary());
        println!("{}", run.body);
        return Ok(run.error.is_none());
    }

    println!(
        "local-demo: DynamoDB {} · i'mport simulator {} · functions {}",
        args.dynamodb, stack.sim, stack.lambda
    );

    // ── 1 ────────────────────────────────────────────────────────────────
    stack.step(1, "table");
    let t = Instant::now();
    match ddb.describe_table().table_name(&args.table).send().await {
        Ok(_) => println!(
            "  table {} exists already: reusing it (earlier rows stay)",
            args.table
        ),
        Err(_) => {
            table::create_table(&ddb, &args.table)
                .await
                .map_err(|e| fail(format!("create_table {}: {e}", args.table)))?;
            println!(
                "  created {} with shared::ledger::dynamodb::table::create_table (pk/sk, GSI `{}` = {}/{}, TTL `{}`) in {:.2}s",
                args.table,
                table::DUE_INDEX,
                table::DUE_PK,
                table::DUE_SK,
                table::TTL_ATTRIBUTE,
                t.elapsed().as_secs_f64()
            );
        }
    }

    let queue_url = read_env_file(&args.functions_env).ok().and_then(|env| {
        let queued = env.iter().any(|(k, v)| k == "CHARGE_MODE" && v == "queued");
        env.into_iter()
            .find(|(k, _)| queued && k == "CHARGE_QUEUE_URL")
            .map(|(_, v)| v)
    });
    if let Some(url) = &queue_url {
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let name = url.rsplit('/').next().unwrap_or("charge-local");
        sqs.create_queue().queue_name(name).send().await?;
        println!(
            "  queued mode: scheduled-charge plans each run into {url}; the story drains it through charge-worker"
        );
        stack.queue = Some((sqs, url.clone()));
    }
    let events = match &event_bus {
        Some(bus) => {
            let sink = testkit::EventSink::create_named(&sdk, bus, EVENT_SOURCE).await;
            println!(
                "  event bus {bus} with a rule sending every lifecycle event to an SQS queue (moto_server)"
            );
            Some(sink)
        }
        None => None,
    };

    // ── 2 ────────────────────────────────────────────────────────────────
    stack.step(
        2,
        "sign-ups: prepare → payment window (simulator) → callback (billing-callback)",
    );
    let t = Instant::now();
    let r = stack
        .http
        .get(stack.callback_fn("/billing/callback"))
        .send()
        .await
        .map_err(|e| fail(format!("billing-callback under cargo lambda watch: {e}")))?;
    println!(
        "  billing-callback is up (a bare GET /billing/callback answers {}) after {:.1}s",
        r.status().as_u16(),
        t.elapsed().as_secs_f64()
    );
    let mut members = Vec::new();
    for p in &PEOPLE {
        let m = register(&stack, p).await?;
        let ok = match p.scenario {
            Scenario::ClosesWindow => m.landed_param("reason").as_deref() == Some("payment_failed"),
            _ => m.signed_up() && m.landed_param("first_charge").as_deref() == Some("paid"),
        };
        checks.check(
            ok,
            format!(
                "{}: sign-up landed on {} (expected {})",
                p.label,
                short_url(&m.landed),
                if p.scenario == Scenario::ClosesWindow {
                    "the failure page with reason=payment_failed"
                } else {
                    "the success page with first_charge=paid"
                }
            ),
        );
        members.push(m);
    }
    // The browser comes back with the same redirect (refresh, back button).
    let paid_before = stack
        .ledger()
        .await?
        .iter()
        .filter(|p| ever_paid(p))
        .count();
    let alice = &members[0];
    let again = stack.http.get(alice.callback.clone()).send().await?;
    let again_to = again
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| Url::parse(l).ok());
    let paid_after = stack
        .ledger()
        .await?
        .iter()
        .filter(|p| ever_paid(p))
        .count();
    println!(
        "  alice refreshes the callback page: {} → {} (payments in the ledger: {paid_before} before, {paid_after} after)",
        again.status().as_u16(),
        again_to.as_ref().map(short_url).unwrap_or_default()
    );
    checks.check(
        again.status().as_u16() == 302
            && again_to.as_ref().is_some_and(|u| {
                u.query_pairs()
                    .any(|(k, v)| k == "subscription_id" && v == alice.id.as_str())
            })
            && paid_before == paid_after,
        "a repeated callback redirect must land on success again and charge nothing",
    );
    let members: Vec<Member> = members.into_iter().filter(Member::signed_up).collect();

    // ── 3 ────────────────────────────────────────────────────────────────
    stack.step(3, "scenarios in the simulator");
    // Charges paid so far were notified once each (no duplicates yet).
    let signup_paid = paid_charges(&stack.ledger().await?);
    let hooks = stack.sim_get("/__sim/webhook").await?;
    // Webhooks go to the simulator's configured URL or to each charge's
    // notice_url (the functions' NOTICE_URL).
    let notice_url_set = read_env_file(&args.functions_env)
        .map(|env| env.iter().any(|(k, v)| k == "NOTICE_URL" && !v.is_empty()))
        .unwrap_or(false);
    let webhooks_on = hooks.get("url").is_some_and(|u| !u.is_null()) || notice_url_set;
    if webhooks_on {
        let mut settings = hooks.clone();
        settings["duplicates"] = json!(1);
        settings["delay_ms"] = json!(WEBHOOK_DELAY_MS);
        stack.sim_post("/__sim/webhook", &settings).await?;
        println!(
            "  all    POST /__sim/webhook: notifications arrive {} s after the charge, each twice (payment-webhook must be idempotent)",
            WEBHOOK_DELAY_MS / 1000
        );
    }
    for m in &members {
        match m.p.scenario {
            Scenario::AlwaysDeclined => {
                stack
                    .sim_post(
                        "/__sim/decline",
                        &json!({"customer_uid": m.customer_uid, "reason": "잔액부족"}),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/decline: every charge of {} fails (잔액부족)",
                    m.p.label,
                    shown(&m.customer_uid)
                );
            }
            Scenario::DeclinedOnce => {
                stack
                    .sim_post(
                        "/__sim/faults",
                        &json!({"kind": "decline", "reason": "한도초과", "customer_uid": m.customer_uid, "times": 1}),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/faults decline ×1: the next charge fails (한도초과), the retry pays",
                    m.p.label
                );
            }
            Scenario::TimeoutAfterCharge => {
                stack
                    .sim_post(
                        "/__sim/faults",
                        &json!([
                            {"kind": "hang_after", "secs": 3, "path_prefix": "@charge", "customer_uid": m.customer_uid, "times": 1},
                            {"kind": "http500", "path_prefix": "@lookup", "times": 1},
                        ]),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/faults hang_after 3s on the charge (the charge is taken, the 1 s client timeout fires)",
                    m.p.label
                );
                println!(
                    "  {:<6}   + http500 ×1 on the payment lookup, so the run cannot settle it at once",
                    ""
                );
            }
            Scenario::NewCardAfterDecline => {
                stack
                    .sim_post(
                        "/__sim/decline",
                        &json!({"customer_uid": m.customer_uid, "reason": "카드 정지"}),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /__sim/decline: every charge of {} fails (카드 정지); a new card will follow",
                    m.p.label,
                    shown(&m.customer_uid)
                );
            }
            Scenario::PlanChange => {
                let (amount, name) = ERIN_NEW_PLAN;
                let (status, body, _) = stack
                    .api(
                        "POST",
                        &format!("/subscriptions/{}/plan", m.id),
                        Some(json!({"amount": amount, "name": name})),
                        Some(&format!("plan-{}", m.id)),
                    )
                    .await?;
                println!(
                    "  {:<6} POST /subscriptions/{}/plan {} KRW {name} → {status} (plan now {} KRW; applies from the next charge)",
                    m.p.label,
                    m.id,
                    won(amount),
                    won(body["plan"]["amount"].as_i64().unwrap_or_default())
                );
                checks.check(
                    status == 200 && body["plan"]["amount"] == json!(amount),
                    format!("{}: plan change answered {status}: {body}", m.p.label),
                );
            }
            Scenario::CancelAtPeriodEnd => {
                let (status, body, _) = stack
                    .api(
                        "POST",
                        &format!("/subscriptions/{}/cancel", m.id),
                        Some(json!({"at": "period_end", "reason": "customer asked in the app"})),
                        None,
                    )
                    .await?;
                println!(
                    "  {:<6} POST /subscriptions/{}/cancel at period_end → {status} (cancel_at_period_end {}, paid through {})",
                    m.p.label,
                    m.id,
                    body["subscription"]["cancel_at_period_end"],
                    body["subscription"]["paid_through"].as_str().unwrap_or("—")
                );
                checks.check(
                    status == 200 && body["subscription"]["cancel_at_period_end"] == json!(true),
                    format!(
                        "{}: cancel at period end answered {status}: {body}",
                        m.p.label
                    ),
                );
            }
            Scenario::Pays | Scenario::ClosesWindow => {}
        }
    }

    // ── 4 ────────────────────────────────────────────────────────────────
    let mut subs: BTreeMap<String, Subscription> = BTreeMap::new();
    for m in &members {
        subs.insert(m.id.to_string(), stack.sub(&m.id).await?);
    }
    let first_day = Utc::now().with_timezone(&BILLING_TZ).date_naive() + chrono::Days::new(1);
    // The last period's charge day, and at least past the dunning of the first
    // recurring period (declines on its day, +1, +3 and +7 days).
    let last_day = subs
        .values()
        .map(|s| {
            s.anchor
                .period_date(args.months)
                .max(s.anchor.period_date(1) + chrono::Days::new(8))
        })
        .max()
        .ok_or_else(|| fail("nobody signed up"))?;
    stack.step(
        4,
        &format!(
            "scheduled-charge, daily at 10:00 KST from {first_day} to {last_day} (billing clock = the event's scheduled_time)"
        ),
    );
    warm_up_charger(&stack).await?;
    let by_id: HashMap<String, &Member> = members.iter().map(|m| (m.id.to_string(), m)).collect();
    let mut day = first_day;
    let mut quiet: Option<(NaiveDate, NaiveDate, u32)> = None;
    let mut runs = 0u32;
    let mut run_errors = 0u32;
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    // How the timed-out charge was settled: by a run's reconciliation or by the webhook.
    let mut timeout_seen = false;
    let mut settled_by: Option<&'static str> = None;
    // New billing keys given through the management API, by persona.
    let mut new_cards: BTreeMap<&'static str, String> = BTreeMap::new();
    while day <= last_day {
        let at = seoul_10am(day);
        // Fresh copies: the webhook may have changed a subscription between runs.
        for (id, s) in subs.iter_mut() {
            if let Some(m) = by_id.get(id) {
                *s = stack.sub(&m.id).await?;
            }
        }
        let due_before: Vec<(Subscription, Option<ChargeAttempt>)> = {
            let mut v = Vec::new();
            // In the order the customers signed up.
            let due = members
                .iter()
                .filter_map(|m| subs.get(m.id.as_str()))
                .filter(|s| s.is_due(at));
            for s in due {
                let open = stack
                    .store
                    .get_attempt(&s.id, &s.current_period(), s.attempt)
                    .await?;
                v.push((s.clone(), open));
            }
            v
        };
        let run = stack.charge_run(at, &format!("local-demo-{day}")).await?;
        runs += 1;
        let active = run.error.is_some() || run.count("due") > 0 || !due_before.is_empty();
        if !active && !args.verbose {
            quiet = Some(match quiet {
                Some((from, _, n)) => (from, day, n + 1),
                None => (day, day, 1),
            });
            day = day + chrono::Days::new(1);
            continue;
        }
        if let Some((from, to, n)) = quiet.take() {
            println!("  {from} … {to}  {n} daily run(s), nothing due");
        }
        if run.error.is_some() {
            run_errors += 1;
        }
        for key in [
            "due",
            "charged",
            "declined",
            "rejected",
            "ambiguous",
            "reconciled",
            "deferred",
            "needs_review",
            "corrupt",
            "signups_completed",
            "skipped",
        ] {
            *totals.entry(key).or_default() += run.count(key);
        }
        println!(
            "  {}  {}  ({:.1}s)",
            kst(at),
            run.summary(),
            run.took.as_secs_f64()
        );
        for (before, open_before) in &due_before {
            let m = by_id[before.id.as_str()];
            let after = stack.sub(&before.id).await?;
            let period = before.current_period();
            let attempt = stack
                .store
                .get_attempt(&before.id, &period, before.attempt)
                .await?;
            let what = match &attempt {
                None if after.status == SubscriptionStatus::Cancelled => {
                    "not charged: the subscription ended (cancelled at period end)".to_owned()
                }
                None => "no attempt recorded".to_owned(),
                Some(a) => {
                    let mut w = format!("{:<8}", a.state.as_str());
                    if let Some(i) = &a.imp_uid {
                        let _ = write!(w, " {i}");
                    }
                    if let Some(r) = a
                        .fail_reason
                        .as_ref()
                        .filter(|_| a.state != AttemptState::Paid)
                    {
                        let _ = write!(w, " ({})", clip(r, 48));
                    }
                    if open_before.as_ref().is_some_and(|o| o.state.is_open()) && !a.state.is_open()
                    {
                        w.push_str(" ← settled from i'mport's record (reconciliation)");
                        if m.p.scenario == Scenario::TimeoutAfterCharge && settled_by.is_none() {
                            settled_by = Some("the next run's reconciliation");
                        }
                    }
                    if a.state == AttemptState::Unknown {
                        w.push_str(" ← answer lost; left open for the next run");
                        if m.p.scenario == Scenario::TimeoutAfterCharge {
                            timeout_seen = true;
                        }
                    }
                    if m.p.scenario == Scenario::TimeoutAfterCharge
                        && run.count("ambiguous") + run.count("reconciled") > 0
                        && a.state == AttemptState::Paid
                        && open_before.is_none()
                    {
                        // The answer was lost; the run looked the merchant_uid up at
                        // once (or the webhook had settled it meanwhile).
                        timeout_seen = true;
                        if settled_by.is_none() {
                            settled_by = Some(
                                "the run's lookup right after the timeout (or the webhook, whichever came first)",
                            );
                            w.push_str(
                                " ← the answer was lost; settled from i'mport's record at once",
                            );
                        }
                    }
                    w
                }
            };
            let next = match after.status {
                SubscriptionStatus::Active | SubscriptionStatus::PastDue => format!(
                    "→ {} {}, next {}",
                    after.status.as_str(),
                    after.current_period(),
                    kst(after.next_charge_at)
                ),
                other => format!("→ {}", other.as_str()),
            };
            println!(
                "      {:<6} {} a{}  {what}  {next}",
                m.p.label, period, before.attempt
            );
            // After the first decline, the customer gives a new card.
            if m.p.scenario == Scenario::NewCardAfterDecline
                && after.status == SubscriptionStatus::PastDue
                && !new_cards.contains_key(m.p.label)
            {
                let (key, landed) = new_card(&stack, m).await?;
                let after_card = stack.sub(&m.id).await?;
                println!(
                    "      {:<6} POST /subscriptions/{}/payment-method 201 → window → callback 302 → {}  (key {}… → {}…; {} {})",
                    m.p.label,
                    m.id,
                    short_url(&landed),
                    shown(&m.customer_uid),
                    shown(&key),
                    after_card.status.as_str(),
                    after_card
                        .paid_through
                        .as_ref()
                        .map(|p| format!("paid through {p}"))
                        .unwrap_or_default()
                );
                checks.check(
                    landed
                        .query_pairs()
                        .any(|(k, v)| k == "first_charge" && v == "paid"),
                    format!(
                        "{}: the new card should be charged at once (landed on {})",
                        m.p.label,
                        short_url(&landed)
                    ),
                );
                new_cards.insert(m.p.label, key);
            }
        }
        day = day + chrono::Days::new(1);
    }
    if let Some((from, to, n)) = quiet.take() {
        println!("  {from} … {to}  {n} daily run(s), nothing due");
    }
    println!(
        "  {runs} runs; totals: {}",
        totals
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    checks.check(
        run_errors == 0,
        format!("{run_errors} charge run(s) failed"),
    );

    // ── 5 ────────────────────────────────────────────────────────────────
    if webhooks_on {
        // Let the last notifications land before reading the table.
        let expected = {
            let paid = paid_charges(&stack.ledger().await?);
            signup_paid + 2 * paid.saturating_sub(signup_paid)
        };
        let t = Instant::now();
        let mut seen = 0;
        while t.elapsed() < Duration::from_secs(20) {
            if let Value::Array(h) = stack.sim_get("/__sim/webhooks").await? {
                seen = h.len();
            }
            if seen >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!(
            "  waited {:.1}s for the last webhooks ({seen} of {expected} delivered)",
            t.elapsed().as_secs_f64()
        );
    }

    // ── 5 ────────────────────────────────────────────────────────────────
    stack.step(5, "the merchant's API: a partial refund, asked twice");
    let alice = members
        .iter()
        .find(|m| m.p.label == "alice")
        .ok_or_else(|| fail("alice did not sign up"))?;
    let last_paid = stack
        .store
        .list_attempts(&alice.id)
        .await?
        .into_iter()
        .rev()
        .find(|a| a.state == AttemptState::Paid)
        .ok_or_else(|| fail("alice has no paid charge"))?;
    let path = format!("/charges/{}/refund", last_paid.merchant_uid);
    let body = json!({"amount": ALICE_REFUND, "reason": "service outage, goodwill credit"});
    let key = format!("refund-{}", last_paid.merchant_uid);
    let (first_status, first, _) = stack
        .api("POST", &path, Some(body.clone()), Some(&key))
        .await?;
    let (again_status, again, replayed) = stack.api("POST", &path, Some(body), Some(&key)).await?;
    let refunded_at_sim = stack
        .ledger()
        .await?
        .iter()
        .filter(|p| str_of(p, "merchant_uid") == last_paid.merchant_uid)
        .map(|p| i64_of(p, "cancel_amount"))
        .sum::<i64>();
    let refunded_in_table = stack
        .store
        .get_attempt(&alice.id, &last_paid.period, last_paid.attempt)
        .await?
        .map(|a| a.refunded)
        .unwrap_or_default();
    println!(
        "  alice  POST {path} {} KRW → {first_status} (refunded {}); the same request again → {again_status}{}",
        won(ALICE_REFUND),
        won(first["refunded"].as_i64().unwrap_or_default()),
        if replayed { ", replayed" } else { "" }
    );
    println!(
        "         refunded at i'mport: {} KRW; in the table: {} KRW",
        won(refunded_at_sim),
        won(refunded_in_table)
    );
    checks.check(
        first_status == 200
            && again_status == 200
            && replayed
            && again == first
            && refunded_at_sim == ALICE_REFUND
            && refunded_in_table == ALICE_REFUND,
        format!(
            "alice: one refund of {ALICE_REFUND} KRW expected (got {first_status}/{again_status}, replayed {replayed}, i'mport {refunded_at_sim}, table {refunded_in_table})"
        ),
    );

    stack.step(
        6,
        "subscriptions and charges (DynamoDB) beside the simulator's ledger",
    );
    let ledger = stack.ledger().await?;
    let mut by_merchant_uid: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for p in &ledger {
        by_merchant_uid
            .entry(str_of(p, "merchant_uid").to_owned())
            .or_default()
            .push(p);
    }
    let mut finals = Vec::new();
    for m in &members {
        let s = stack.sub(&m.id).await?;
        let attempts = stack.store.list_attempts(&m.id).await?;
        finals.push((m, s, attempts));
    }

    println!(
        "  {:<6} {:<12} {:<10} {:>7} {:<11} {:<6} {:<20} {:<12}",
        "user", "subscription", "status", "KRW", "plan", "period", "next charge", "paid through"
    );
    for (m, s, _) in &finals {
        println!(
            "  {:<6} {:<12} {:<10} {:>7} {} {:<6} {:<20} {:<12}",
            m.p.label,
            s.id.as_str(),
            s.status.as_str(),
            won(s.plan.amount),
            pad_display(&s.plan.name, 11),
            s.current_period().as_str(),
            if matches!(
                s.status,
                SubscriptionStatus::Active | SubscriptionStatus::PastDue
            ) {
                kst(s.next_charge_at)
            } else {
                "—".to_owned()
            },
            s.paid_through
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "—".into()),
        );
    }
    println!();
    println!(
        "  {:<34} {:<8} {:<17} │ {:<34} │ reason",
        "merchant_uid", "table", "imp_uid", "simulator ledger (status imp_uid KRW)"
    );
    let mut mismatches: Vec<String> = Vec::new();
    let mut shown: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (m, s, attempts) in &finals {
        println!("  ── {} ({}, {})", m.p.label, s.id, m.p.scenario.describe());
        // The sign-up's issuance, and any new card's (payment-method).
        let mut rows: Vec<(String, Option<&ChargeAttempt>)> =
            vec![(MerchantUid::issuance(&s.id), None)];
        for uid in stack.store.user_items(&s.user_id).await?.registrations {
            if uid != MerchantUid::issuance(&s.id)
                && matches!(MerchantUid::parse(&uid), Some(MerchantUid::Issuance { ref subscription }) if subscription == &s.id)
            {
                rows.push((uid, None));
            }
        }
        rows.extend(attempts.iter().map(|a| (a.merchant_uid.clone(), Some(a))));
        for (muid, a) in rows {
            shown.insert(muid.clone());
            let entries = by_merchant_uid.get(&muid).cloned().unwrap_or_default();
            let ledger_text = if entries.is_empty() {
                "(none)".to_owned()
            } else {
                entries
                    .iter()
                    .map(|p| {
                        let mut t = format!(
                            "{} {} {}",
                            str_of(p, "status"),
                            str_of(p, "imp_uid"),
                            won(i64_of(p, "amount"))
                        );
                        if i64_of(p, "cancel_amount") > 0 {
                            let _ = write!(t, " −{}", won(i64_of(p, "cancel_amount")));
                        }
                        t
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let reason = match a {
                Some(a) if a.refunded > 0 => format!("refunded {} KRW", won(a.refunded)),
                Some(a) => a.fail_reason.clone().unwrap_or_default(),
                None => entries
                    .iter()
                    .filter_map(|p| p.get("fail_reason").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let (state, imp) = match a {
                Some(a) => (
                    a.state.as_str().to_owned(),
                    a.imp_uid.clone().unwrap_or_else(|| "—".into()),
                ),
                None => ("issuance".to_owned(), "—".to_owned()),
            };
            println!(
                "  {:<34} {:<8} {:<17} │ {:<34} │ {}",
                muid, state, imp, ledger_text, reason
            );
            if let Some(a) = a {
                mismatches.extend(compare(a, &entries));
            }
        }
    }
    // Charges i'mport took for our subscriptions that the table does not show.
    for (muid, entries) in &by_merchant_uid {
        if shown.contains(muid) {
            continue;
        }
        let ours = matches!(MerchantUid::parse(muid), Some(MerchantUid::Charge { ref subscription, .. }) if by_id.contains_key(subscription.as_str()));
        if ours && entries.iter().any(|p| ever_paid(p)) {
            mismatches.push(format!("{muid}: paid at i'mport but not in the table"));
        }
    }

    // Double charges, from the ledger alone.
    let (doubles_muid, doubles_period) = double_charges(&ledger);
    let charges = ledger
        .iter()
        .filter(|p| str_of(p, "customer_uid_usage") == "payment")
        .count();
    let charges_paid = paid_charges(&ledger);
    println!();
    println!(
        "  ledger: {} payments ({} billing-key issuances, {} charges: {} paid, {} failed)",
        ledger.len(),
        ledger.len() - charges,
        charges,
        charges_paid,
        charges - charges_paid
    );
    if let Ok(Value::Array(hooks)) = stack.sim_get("/__sim/webhooks").await {
        let bad = hooks
            .iter()
            .filter(|h| {
                !h.get("http_status")
                    .and_then(Value::as_u64)
                    .is_some_and(|c| (200..300).contains(&c))
            })
            .count();
        checks.check(
            bad == 0,
            format!("{bad} webhook deliveries were not answered 2xx by payment-webhook"),
        );
        if !hooks.is_empty() {
            let mut by_status: BTreeMap<String, u32> = BTreeMap::new();
            for h in &hooks {
                let k = match h.get("http_status").and_then(Value::as_u64) {
                    Some(code) => format!("HTTP {code}"),
                    None => "transport error".into(),
                };
                *by_status.entry(k).or_default() += 1;
            }
            println!(
                "  webhooks the simulator sent: {} ({})",
                hooks.len(),
                by_status
                    .iter()
                    .map(|(k, v)| format!("{v}× {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    // The story, checked.
    let last_period = |s: &Subscription| s.anchor.period_id(args.months);
    for (m, s, attempts) in &finals {
        let paid = attempts
            .iter()
            .filter(|a| a.state == AttemptState::Paid)
            .count();
        let first = s.anchor.period_id(1);
        let of_first: Vec<&ChargeAttempt> = attempts.iter().filter(|a| a.period == first).collect();
        let states = |v: &[&ChargeAttempt]| {
            v.iter()
                .map(|a| a.state.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        match m.p.scenario {
            Scenario::Pays => checks.check(
                s.status == SubscriptionStatus::Active
                    && s.paid_through.as_ref() == Some(&last_period(s))
                    && paid == args.months as usize + 1
                    && attempts.len() == paid,
                format!(
                    "{}: expected active, paid through {}, {} paid attempts only (got {}, {:?}, {} attempts)",
                    m.p.label,
                    last_period(s),
                    args.months + 1,
                    s.status.as_str(),
                    s.paid_through.as_ref().map(|p| p.as_str().to_owned()),
                    attempts.len()
                ),
            ),
            Scenario::AlwaysDeclined => checks.check(
                s.status == SubscriptionStatus::Suspended
                    && s.paid_through.as_ref() == Some(&s.anchor.period_id(0))
                    && states(&of_first) == "failed,failed,failed,failed",
                format!(
                    "{}: expected suspended after 4 declines of {first} (got {}, {first}: {})",
                    m.p.label,
                    s.status.as_str(),
                    states(&of_first)
                ),
            ),
            Scenario::DeclinedOnce => checks.check(
                s.status == SubscriptionStatus::Active
                    && s.paid_through.as_ref() == Some(&last_period(s))
                    && states(&of_first) == "failed,paid",
                format!(
                    "{}: expected {first} declined then paid on the retry, active to the end (got {}, {first}: {})",
                    m.p.label,
                    s.status.as_str(),
                    states(&of_first)
                ),
            ),
            Scenario::TimeoutAfterCharge => {
                let muid = of_first
                    .first()
                    .map(|a| a.merchant_uid.clone())
                    .unwrap_or_default();
                let at_imp = by_merchant_uid.get(&muid).map(Vec::len).unwrap_or(0);
                checks.check(
                    s.status == SubscriptionStatus::Active
                        && s.paid_through.as_ref() == Some(&last_period(s))
                        && states(&of_first) == "paid"
                        && at_imp == 1,
                    format!(
                        "{}: expected {muid} paid exactly once at i'mport and in the table (got {}, {first}: {}, ledger entries {at_imp})",
                        m.p.label,
                        s.status.as_str(),
                        states(&of_first)
                    ),
                );
                checks.check(
                    timeout_seen,
                    format!("{}: the timeout after charging did not happen (fault not hit?)", m.p.label),
                );
                let by = match settled_by {
                    Some(by) => by,
                    // Paid without a run settling it: the notification got there first.
                    None if states(&of_first) == "paid" => "payment-webhook (the notification came first)",
                    None => "nobody (still open)",
                };
                println!(
                    "  {}'s timed-out charge {muid}: {at_imp} payment at i'mport, settled by {by}",
                    m.p.label
                );
            }
            Scenario::PlanChange => {
                let amounts: Vec<i64> = attempts.iter().map(|a| a.amount).collect();
                let expected: Vec<i64> = std::iter::once(m.p.amount)
                    .chain(std::iter::repeat_n(ERIN_NEW_PLAN.0, args.months as usize))
                    .collect();
                checks.check(
                    s.status == SubscriptionStatus::Active
                        && s.paid_through.as_ref() == Some(&last_period(s))
                        && paid == attempts.len()
                        && amounts == expected,
                    format!(
                        "{}: expected the sign-up at {} KRW and every later period at {} KRW (got {}, amounts {amounts:?})",
                        m.p.label,
                        m.p.amount,
                        ERIN_NEW_PLAN.0,
                        s.status.as_str()
                    ),
                );
            }
            Scenario::CancelAtPeriodEnd => checks.check(
                s.status == SubscriptionStatus::Cancelled
                    && s.paid_through.as_ref() == Some(&s.anchor.period_id(0))
                    && attempts.len() == 1,
                format!(
                    "{}: expected cancelled when {first} began, never charged for it (got {}, {} attempts)",
                    m.p.label,
                    s.status.as_str(),
                    attempts.len()
                ),
            ),
            Scenario::NewCardAfterDecline => {
                let new_key = new_cards.get(m.p.label).cloned().unwrap_or_default();
                // Attempts keep a reference to the key they charged, made
                // with the stack's merchant-uid key (scripts/local-stack.sh).
                let refs = shared::billing::UidKey::new(b"local-merchant-uid-key-not-secret")
                    .unwrap_or_else(|| shared::billing::UidKey::derived_from(b"local"));
                let paid_with_new = of_first
                    .iter()
                    .any(|a| a.state == AttemptState::Paid && a.charged(&new_key, &refs));
                let keys = stack.sim_get("/__sim/customers").await?;
                let old_key_kept = keys.as_array().is_some_and(|k| {
                    k.iter()
                        .any(|c| str_of(c, "customer_uid") == m.customer_uid)
                });
                checks.check(
                    s.status == SubscriptionStatus::Active
                        && s.paid_through.as_ref() == Some(&last_period(s))
                        && states(&of_first) == "failed,paid"
                        && paid_with_new
                        && s.customer_uid == new_key
                        && !old_key_kept,
                    format!(
                        "{}: expected {first} declined, then paid at once with the new card, the old key deleted (got {}, {first}: {}, paid with the new key {paid_with_new}, old key kept {old_key_kept})",
                        m.p.label,
                        s.status.as_str(),
                        states(&of_first)
                    ),
                );
            }
            Scenario::ClosesWindow => {}
        }
    }
    for m in &mismatches {
        println!("  ✗ table vs ledger: {m}");
    }
    checks.check(
        mismatches.is_empty(),
        format!("{} table/ledger mismatch(es)", mismatches.len()),
    );
    let doubles = doubles_muid.len() + doubles_period.len();
    for (muid, n) in &doubles_muid {
        println!("  ✗ {muid} was paid {n} times");
    }
    for ((sub, period), n) in &doubles_period {
        println!("  ✗ subscription {sub} paid {n} times for period {period}");
    }
    if let Some(sink) = &events {
        let members: Vec<&Member> = finals.iter().map(|(m, _, _)| *m).collect();
        lifecycle_events(&stack, &ddb, &args, sink, &members, &mut checks).await?;
    }
    println!();
    println!("  table vs ledger: {} mismatches", mismatches.len());
    println!("  double charges: {doubles}");
    println!(
        "  story checks: {} passed, {} failed",
        checks.passed,
        checks.failed.len()
    );
    println!("[{}] done", stack.elapsed());
    Ok(doubles == 0 && checks.failed.is_empty())
}

/// The events' `source` (event-publisher's EVENT_SOURCE default).
const EVENT_SOURCE: &str = "subscription-billing";

/// Step 7: plays the event source mapping (the table's stream, read from
/// its start, in batches of 100, to event-publisher under `cargo lambda
/// watch`), then prints each customer's event log as the bus delivered it.
async fn lifecycle_events(
    stack: &Stack,
    ddb: &aws_sdk_dynamodb::Client,
    args: &Args,
    sink: &testkit::EventSink,
    members: &[&Member],
    checks: &mut Checks,
) -> Result<()> {
    stack.step(
        7,
        "lifecycle events: the table's stream → event-publisher → EventBridge → SQS",
    );
    let mut stream = testkit::StreamReader::open(ddb, &args.dynamodb, &args.table).await;
    let all = stream.next_batch().await;
    let records = all["Records"].as_array().cloned().unwrap_or_default();
    let url = format!(
        "{}/2015-03-31/functions/event-publisher/invocations",
        stack.lambda
    );
    let mut failures = 0;
    for batch in records.chunks(100) {
        let r = stack
            .http
            .post(&url)
            .json(&json!({ "Records": batch }))
            .send()
            .await?;
        let answer: Value = r.json().await.unwrap_or(Value::Null);
        failures += answer["batchItemFailures"].as_array().map_or(1, Vec::len);
    }
    let delivered = sink.drain().await;
    println!(
        "  {} stream records in {} batch(es) → {} events delivered",
        records.len(),
        records.len().div_ceil(100),
        delivered.len()
    );
    checks.check(
        failures == 0,
        format!("{failures} stream batch(es) reported records event-publisher could not publish"),
    );
    let mut ids = std::collections::HashSet::new();
    let mut log: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &delivered {
        let d = &e["detail"];
        ids.insert(d["id"].as_str().unwrap_or_default().to_owned());
        let data = &d["data"];
        let what = match d["type"].as_str().unwrap_or_default() {
            t @ ("charge.succeeded" | "charge.refunded" | "charge.needs_review") => format!(
                "{t} {} {} KRW{}",
                data["period"].as_str().unwrap_or_default(),
                won(data["amount"].as_i64().unwrap_or_default()),
                data["refunded"]
                    .as_i64()
                    .map(|r| format!(", refunded {}", won(r)))
                    .unwrap_or_default()
            ),
            "charge.failed" => format!(
                "charge.failed {} a{} ({}){}",
                data["period"].as_str().unwrap_or_default(),
                data["attempt"],
                data["reason"].as_str().unwrap_or_default(),
                data["next_retry_at"]
                    .as_str()
                    .map(|t| format!(", retry {t}"))
                    .unwrap_or_else(|| ", final".into())
            ),
            "subscription.cancelled" => format!(
                "subscription.cancelled ({})",
                data["mode"].as_str().unwrap_or_default()
            ),
            "subscription.plan_changed" => format!(
                "subscription.plan_changed → {} KRW ({})",
                won(data["plan"]["amount"].as_i64().unwrap_or_default()),
                data["effective"].as_str().unwrap_or_default()
            ),
            other => other.to_owned(),
        };
        log.entry(d["subscription_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(format!(
                "{} {what}",
                d["occurred_at"].as_str().unwrap_or_default()
            ));
    }
    checks.check(
        ids.len() == delivered.len(),
        "every delivered event has its own id",
    );
    for m in members {
        println!("  ── {} ({})", m.p.label, m.id);
        let lines = log.get(m.id.as_str()).cloned().unwrap_or_default();
        for l in &lines {
            println!("     {l}");
        }
        let has = |t: &str| lines.iter().any(|l| l.contains(t));
        let expected: &[&str] = match m.p.scenario {
            Scenario::Pays => &[
                "subscription.activated",
                "charge.succeeded",
                "charge.refunded",
            ],
            Scenario::AlwaysDeclined => &[
                "charge.failed",
                "subscription.past_due",
                "subscription.suspended",
            ],
            Scenario::DeclinedOnce => {
                &["charge.failed", "subscription.past_due", "charge.succeeded"]
            }
            Scenario::TimeoutAfterCharge => &["subscription.activated", "charge.succeeded"],
            Scenario::PlanChange => &["subscription.plan_changed"],
            Scenario::CancelAtPeriodEnd => &["subscription.cancelled (period_end)"],
            Scenario::NewCardAfterDecline => &[
                "charge.failed",
                "subscription.payment_method_updated",
                "charge.succeeded",
            ],
            Scenario::ClosesWindow => &[],
        };
        let missing: Vec<&&str> = expected.iter().filter(|t| !has(t)).collect();
        checks.check(
            missing.is_empty(),
            format!("{}: events missing from the log: {missing:?}", m.p.label),
        );
    }
    Ok(())
}

/// Registers one customer the way a browser would, printing each hop.
async fn register(stack: &Stack, p: &'static Persona) -> Result<Member> {
    let t = Instant::now();
    let body = json!({
        "user_id": p.user_id,
        "plan": {"amount": p.amount, "name": p.plan},
        "buyer": {"name": p.buyer_name, "email": p.email, "tel": p.tel},
    });
    let r = stack
        .http
        .post(stack.callback_fn("/billing/prepare"))
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    if status.as_u16() != 201 {
        return Err(fail(format!(
            "POST /billing/prepare for {} → {status}: {text}",
            p.label
        )));
    }
    let prepared: Value = serde_json::from_str(&text)?;
    let id = SubscriptionId::parse(str_of(&prepared, "subscription_id"))
        .ok_or_else(|| fail(format!("prepare answered no subscription_id: {text}")))?;
    let params = sdk_params(&prepared)
        .ok_or_else(|| fail(format!("prepare answered no SDK parameters: {text}")))?;

    let mut extra = Vec::new();
    if p.scenario == Scenario::ClosesWindow {
        extra.push(("scenario", "user_cancel"));
    }
    if let Some(sdk) = p.sdk {
        extra.push(("sdk", sdk));
    }
    let (callback, landed) = window_and_callback(stack, params, &extra).await?;
    let customer_uid = key_of(params, &callback);
    println!(
        "  {:<6} {:<9} {:>6} KRW  {}  →  prepare 201 (subscription {id}, {})",
        p.label,
        p.user_id,
        won(p.amount),
        pad_display(p.plan, 11),
        shown(&customer_uid),
    );
    println!("  {:<6} window 302 {}", "", masked_query(&callback));
    println!(
        "  {:<6} callback 302 → {}   ({:.1}s)",
        "",
        short_url(&landed),
        t.elapsed().as_secs_f64()
    );
    Ok(Member {
        p,
        id,
        customer_uid,
        callback,
        landed,
    })
}

/// The SDK parameters `prepare` (or `payment-method`) answered: V1's
/// `request_pay` or V2's `request_issue_billing_key`.
fn sdk_params(answer: &Value) -> Option<&serde_json::Map<String, Value>> {
    answer
        .get("request_issue_billing_key")
        .or_else(|| answer.get("request_pay"))
        .and_then(Value::as_object)
}

/// Whether these are V2's `PortOne.requestIssueBillingKey` parameters.
fn is_v2(params: &serde_json::Map<String, Value>) -> bool {
    params.contains_key("storeId")
}

/// The key the window issued: V1's `customer_uid` (ours, in the
/// parameters), V2's `billingKey` (in PortOne's redirect; empty on failure).
fn key_of(params: &serde_json::Map<String, Value>, callback: &Url) -> String {
    if is_v2(params) {
        callback
            .query_pairs()
            .find(|(k, _)| k == "billingKey")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    } else {
        str_of(&Value::Object(params.clone()), "customer_uid").to_owned()
    }
}

/// A key reference for the screen: V2 billing keys are secret-grade, so
/// only their last four characters show.
fn shown(key: &str) -> String {
    match key.strip_prefix("billing-key-") {
        Some(rest) => format!("billing-key-…{}", &rest[rest.len().saturating_sub(4)..]),
        None => format!("{}…", &key[..key.len().min(11)]),
    }
}

/// The redirect's query for the screen, the billing key masked.
fn masked_query(callback: &Url) -> String {
    callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "billingKey" {
                shown(&v)
            } else {
                v.into_owned()
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The payment window with exactly these parameters (V1's `/window` for
/// `IMP.request_pay`, V2's `/portone/window` for
/// `PortOne.requestIssueBillingKey`, nested objects flattened as `a.b`), then
/// the redirect to the callback: the real callback. Returns the callback URL
/// and where the callback sent the browser.
async fn window_and_callback(
    stack: &Stack,
    params: &serde_json::Map<String, Value>,
    extra: &[(&str, &str)],
) -> Result<(Url, Url)> {
    let path = if is_v2(params) {
        "portone/window"
    } else {
        "window"
    };
    let mut window = Url::parse(&format!("{}/{path}", stack.sim))?;
    {
        let mut q = window.query_pairs_mut();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for (k, v) in params {
            match v {
                Value::Object(inner) => {
                    for (ik, iv) in inner {
                        q.append_pair(&format!("{k}.{ik}"), &text(iv));
                    }
                }
                other => {
                    q.append_pair(k, &text(other));
                }
            }
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    let r = stack.http.get(window).send().await?;
    let callback = location(&r, "the payment window")?;
    let r = stack
        .on_story_clock(stack.http.get(callback.clone()))
        .send()
        .await?;
    let landed = location(&r, "billing-callback")?;
    Ok((callback, landed))
}

/// A new card for `m`: `POST /subscriptions/{id}/payment-method`, the
/// payment window with the new `customer_uid`, the callback. Returns the
/// new `customer_uid` and where the browser landed.
async fn new_card(stack: &Stack, m: &Member) -> Result<(String, Url)> {
    // The customer hears of the decline and comes back that afternoon.
    stack.advance_story_clock(chrono::Duration::hours(4));
    let (status, body, _) = stack
        .api(
            "POST",
            &format!("/subscriptions/{}/payment-method", m.id),
            Some(json!({})),
            None,
        )
        .await?;
    let params = sdk_params(&body)
        .filter(|_| status == 201)
        .ok_or_else(|| fail(format!("payment-method answered {status}: {body}")))?;
    let (callback, landed) = window_and_callback(stack, params, &[]).await?;
    Ok((key_of(params, &callback), landed))
}

fn location(r: &reqwest::Response, what: &str) -> Result<Url> {
    if r.status().as_u16() != 302 {
        return Err(fail(format!(
            "{what} answered {} instead of a 302 redirect",
            r.status()
        )));
    }
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| fail(format!("{what} redirected without a Location")))?;
    Ok(Url::parse(loc)?)
}

/// Double charges in the simulator's ledger: `merchant_uid`s that took money
/// more than once, and (subscription, period) pairs paid more than once
/// across their attempts.
#[allow(clippy::type_complexity)]
fn double_charges(ledger: &[Value]) -> (Vec<(String, u32)>, Vec<((String, String), u32)>) {
    let mut per_muid: BTreeMap<String, u32> = BTreeMap::new();
    let mut per_period: BTreeMap<(String, String), u32> = BTreeMap::new();
    for p in ledger.iter().filter(|p| ever_paid(p)) {
        let muid = str_of(p, "merchant_uid");
        *per_muid.entry(muid.to_owned()).or_default() += 1;
        if let Some(MerchantUid::Charge {
            subscription,
            period,
            ..
        }) = MerchantUid::parse(muid)
        {
            *per_period
                .entry((subscription.to_string(), period.to_string()))
                .or_default() += 1;
        }
    }
    (
        per_muid.into_iter().filter(|(_, n)| *n > 1).collect(),
        per_period.into_iter().filter(|(_, n)| *n > 1).collect(),
    )
}

/// At most `n` characters, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Pads to a display width, counting Hangul as two columns.
fn pad_display(s: &str, width: usize) -> String {
    let w: usize = s
        .chars()
        .map(|c| if (c as u32) >= 0x1100 { 2 } else { 1 })
        .sum();
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

/// Differences between one attempt in the table and i'mport's payments for its merchant_uid.
fn compare(a: &ChargeAttempt, entries: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    let paid: Vec<&&Value> = entries.iter().filter(|p| ever_paid(p)).collect();
    match a.state {
        AttemptState::Paid => match paid.as_slice() {
            [p] => {
                if a.imp_uid.as_deref() != Some(str_of(p, "imp_uid")) {
                    out.push(format!(
                        "{}: table says imp_uid {:?}, i'mport {}",
                        a.merchant_uid,
                        a.imp_uid,
                        str_of(p, "imp_uid")
                    ));
                }
                if i64_of(p, "amount") != a.amount {
                    out.push(format!(
                        "{}: table amount {}, i'mport {}",
                        a.merchant_uid,
                        a.amount,
                        i64_of(p, "amount")
                    ));
                }
            }
            [] => out.push(format!(
                "{}: paid in the table, not at i'mport",
                a.merchant_uid
            )),
            _ => {} // counted as a double charge
        },
        AttemptState::Failed | AttemptState::Rejected => {
            if !paid.is_empty() {
                out.push(format!(
                    "{}: {} in the table but paid at i'mport",
                    a.merchant_uid,
                    a.state.as_str()
                ));
            }
        }
        AttemptState::Claimed | AttemptState::Unknown | AttemptState::NeedsReview => out.push(
            format!("{}: still {} at the end", a.merchant_uid, a.state.as_str()),
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(muid: &str, imp_uid: &str, status: &str, paid_at: i64) -> Value {
        json!({"merchant_uid": muid, "imp_uid": imp_uid, "status": status, "paid_at": paid_at,
               "amount": 9900, "customer_uid_usage": "payment"})
    }

    #[test]
    fn double_charges_are_found_per_merchant_uid_and_per_period() {
        let clean = vec![
            payment("sabcdefghij01202612a1", "imps_1", "failed", 0),
            payment("sabcdefghij01202612a2", "imps_2", "paid", 1),
            payment("sabcdefghij01202701a1", "imps_3", "paid", 2),
        ];
        assert_eq!(double_charges(&clean), (vec![], vec![]));

        let twice = vec![
            payment("sabcdefghij01202612a1", "imps_1", "paid", 1),
            payment("sabcdefghij01202612a1", "imps_2", "paid", 2),
        ];
        let (by_muid, by_period) = double_charges(&twice);
        assert_eq!(by_muid, vec![("sabcdefghij01202612a1".to_owned(), 2)]);
        assert_eq!(by_period.len(), 1);

        // Two attempts of one period both took money (refunded later or not).
        let across = vec![
            payment("sabcdefghij01202612a1", "imps_1", "cancelled", 1),
            payment("sabcdefghij01202612a2", "imps_2", "paid", 2),
        ];
        let (by_muid, by_period) = double_charges(&across);
        assert!(by_muid.is_empty());
        assert_eq!(
            by_period,
            vec![(("abcdefghij01".to_owned(), "202612".to_owned()), 2)]
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(won(9900), "9,900");
        assert_eq!(won(1_234_567), "1,234,567");
        assert_eq!(won(0), "0");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(pad_display("베이직", 8), "베이직  ");
        assert_eq!(
            kst(DateTime::parse_from_rfc3339("2026-12-24T15:00:00Z")
                .unwrap()
                .with_timezone(&Utc)),
            "2026-12-25 00:00 KST"
        );
    }
}
