//! Test support shared by every crate's tests.
//!
//! - [`dynamodb`]: one `moto_server` per test process (a real DynamoDB API on
//!   127.0.0.1), started on first use, with a fresh table per test. A missing
//!   `moto_server` fails the test: it never skips.
//! - [`sim`]: the i'mport simulator, in-process on 127.0.0.1:0.
//! - [`sqs_source`]: Lambda's SQS event source, played by hand.

pub mod sqs_source;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use rand::Rng;
use shared::ledger::dynamodb::DynamoLedger;

/// Sets the variables every test needs so the AWS SDK never looks beyond
/// loopback (no instance-metadata probe, static test credentials).
pub fn safe_aws_env() {
    // SAFETY: called before any other thread reads the environment in the
    // tests that use it (first thing, guarded by a Once).
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| unsafe {
        std::env::set_var("AWS_REGION", "ap-northeast-2");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    });
}

struct Moto {
    endpoint: String,
    /// The watchdog shell; it ends (and kills moto_server) with this process.
    _watchdog: std::sync::Mutex<std::process::Child>,
}

/// The process-wide moto_server. It is started through a small shell
/// watchdog that kills it once this test process is gone, so no server
/// outlives the test run even if the harness exits abruptly.
fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let script = format!(
            "{bin} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done; kill $m 2>/dev/null",
            parent = std::process::id()
        );
        let probe = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {bin}"))
            .stdout(Stdio::null())
            .status();
        assert!(
            matches!(probe, Ok(s) if s.success()),
            "moto_server not found (install it with `pip install 'moto[server]'`, or set MOTO_SERVER); \
             DynamoDB tests need a real DynamoDB API and do not skip"
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server watchdog");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on 127.0.0.1:{port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _watchdog: std::sync::Mutex::new(watchdog),
        }
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The DynamoDB endpoint tests use: the process-wide moto_server (started
/// on first use) behind a proxy that hands it one request at a time.
///
/// moto_server is not thread-safe: two requests at once can fail with a 500
/// ("dictionary changed size during iteration"), and a cancelled transaction
/// restores a stale copy of the whole table, dropping other requests' writes.
/// Tests that run charges concurrently would then pass or fail for the wrong
/// reasons. Serialised, every request still sees DynamoDB's conditional
/// semantics; races themselves are proven in the simulation.
pub fn dynamodb_endpoint() -> String {
    safe_aws_env();
    static SERIAL: OnceLock<String> = OnceLock::new();
    SERIAL
        .get_or_init(|| serial_proxy(moto().endpoint.clone()))
        .clone()
}

/// Starts an HTTP proxy to `target` that forwards one request at a time, on
/// a thread (and runtime) of its own so it outlives every test's runtime.
fn serial_proxy(target: String) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        runtime.block_on(async move {
            use axum::body::Bytes;
            use axum::http::{HeaderMap, Method, Uri};
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("proxy client");
            let one_at_a_time = std::sync::Arc::new(tokio::sync::Mutex::new(()));
            let app = axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let http = http.clone();
                    let target = target.clone();
                    let one_at_a_time = std::sync::Arc::clone(&one_at_a_time);
                    async move {
                        let _turn = one_at_a_time.lock().await;
                        let url = format!(
                            "{target}{}",
                            uri.path_and_query().map_or("/", |p| p.as_str())
                        );
                        let mut request = http.request(
                            reqwest::Method::from_bytes(method.as_str().as_bytes())
                                .unwrap_or(reqwest::Method::POST),
                            url,
                        );
                        for (name, value) in &headers {
                            if name.as_str() != "host" && name.as_str() != "content-length" {
                                request = request.header(name.as_str(), value.as_bytes());
                            }
                        }
                        match request.body(body.to_vec()).send().await {
                            Ok(response) => {
                                let status =
                                    axum::http::StatusCode::from_u16(response.status().as_u16())
                                        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                                let mut out = HeaderMap::new();
                                for (name, value) in response.headers() {
                                    if let (Ok(n), Ok(v)) = (
                                        axum::http::HeaderName::from_bytes(
                                            name.as_str().as_bytes(),
                                        ),
                                        axum::http::HeaderValue::from_bytes(value.as_bytes()),
                                    ) && n != "content-length"
                                        && n != "transfer-encoding"
                                    {
                                        out.insert(n, v);
                                    }
                                }
                                let bytes = response.bytes().await.unwrap_or_default();
                                (status, out, bytes.to_vec())
                            }
                            Err(_) => (
                                axum::http::StatusCode::BAD_GATEWAY,
                                HeaderMap::new(),
                                Vec::new(),
                            ),
                        }
                    }
                },
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind serial proxy");
            let addr = listener.local_addr().expect("serial proxy address");
            let _ = tx.send(format!("http://{addr}"));
            let _ = axum::serve(listener, app).await;
        });
    });
    rx.recv().expect("serial proxy started")
}

/// A DynamoDB client for the test moto_server.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let endpoint = dynamodb_endpoint();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("ap-northeast-2"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

/// A fresh, uniquely named table (created from the one table definition).
pub async fn fresh_table(client: &aws_sdk_dynamodb::Client) -> String {
    let suffix: u64 = rand::rng().random();
    let name = format!("test-{suffix:016x}");
    shared::ledger::dynamodb::table::create_table(client, &name)
        .await
        .expect("create test table");
    name
}

/// A DynamoDB ledger over a fresh table, with `shards` due-index shards,
/// sealing billing keys with a KMS key of the test moto_server (as every
/// V2 deployment does).
pub async fn fresh_ledger(shards: u32) -> DynamoLedger {
    let client = dynamodb_client().await;
    let name = fresh_table(&client).await;
    let key_id = kms_key().await;
    DynamoLedger::new(client, name, shards).with_sealed_keys(kms_client().await, &key_id)
}

/// `ledger` sealing billing keys as `config` says (`BILLING_KEY_KMS_KEY_ID`),
/// with the test moto_server's KMS: for a test that builds its own ledger
/// (through a proxy, on a missing table) for an app's configuration.
pub async fn as_configured(ledger: DynamoLedger, config: &shared::config::Config) -> DynamoLedger {
    match &config.table.billing_key_kms_key_id {
        Some(key_id) => ledger.with_sealed_keys(kms_client().await, key_id),
        None => ledger,
    }
}

/// A KMS client on the test moto_server (it serves KMS too).
pub async fn kms_client() -> aws_sdk_kms::Client {
    let endpoint = dynamodb_endpoint();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("ap-northeast-2"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await;
    aws_sdk_kms::Client::new(&config)
}

/// A new symmetric KMS key on the test moto_server; its id.
pub async fn kms_key() -> String {
    kms_client()
        .await
        .create_key()
        .description("billing keys of a test table")
        .send()
        .await
        .expect("CreateKey on moto_server")
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .expect("a key id")
}

/// A subscription as the callback would create it, for store tests:
/// `shared::testing::subscription` with a fresh billing key, the user and
/// plan name a sign-up gives, created at `created`.
pub fn sample_subscription(
    id: &shared::billing::SubscriptionId,
    created: chrono::DateTime<chrono::Utc>,
) -> shared::billing::Subscription {
    let mut sub =
        shared::testing::subscription(id.as_str(), shared::billing::Anchor::from_instant(created));
    sub.id = id.clone();
    sub.user_id = format!("user-{id}");
    sub.customer_uid = shared::billing::generate_customer_uid();
    sub.plan.name = "월간 구독".into();
    sub.key.inserted_at = created;
    sub.created_at = created;
    sub.updated_at = created;
    sub
}

/// Moves the app's clock (the tests' shifted clock) forward to `at` when it
/// is behind: a run of billing time `at` happens at `at`, so leases and
/// quiet periods pass with the days a test plays.
pub fn clock_to<L>(app: &shared::app::App<L>, at: chrono::DateTime<chrono::Utc>) {
    let now = app.engine.now();
    if at > now {
        app.engine.clock.advance(at - now);
    }
}

/// Credentials the simulator accepts by default.
pub const SIM_KEY: &str = "sim_imp_key";
pub const SIM_SECRET: &str = "sim_imp_secret";
pub const SUCCESS_URL: &str = "https://shop.example/billing/done";
pub const FAILURE_URL: &str = "https://shop.example/billing/failed";

/// An [`shared::app::App`] wired to a fresh table on the test moto_server
/// and to the simulator at `iamport_base_url`, configured from the same
/// variables as production (`extra` overrides or adds to them). Its clock
/// is the system's plus an offset the test moves with
/// `app.engine.clock.advance(..)` (lease expiry, quiet periods).
pub async fn test_app(iamport_base_url: &str, extra: &[(&str, &str)]) -> shared::app::App {
    let client = dynamodb_client().await;
    let table = fresh_table(&client).await;
    let mut vars = base_vars(&table, iamport_base_url);
    // The events' times are the tests' clock (months in seconds): a test
    // clock, allowed because the ledger is the local moto_server.
    vars.insert("BILLING_CLOCK".into(), "event".into());
    vars.insert("AWS_ENDPOINT_URL_DYNAMODB".into(), dynamodb_endpoint());
    // Billing keys sealed at rest, as production does (required with V2).
    vars.insert("BILLING_KEY_KMS_KEY_ID".into(), kms_key().await);
    let (config, credentials) = config_of(vars, extra);
    let ledger = as_configured(
        DynamoLedger::new(client, table, config.table.due_shards),
        &config,
    )
    .await;
    shared::app::App::new(config, ledger, credentials, shared::clock::Clock::shifted())
        .expect("test app")
}

/// The production handlers over the in-memory ledger (the second
/// implementation of the ledger port, held to the DynamoDB adapter by the
/// contract suite) and the real gateway client talking to the simulator.
pub type MemoryApp = shared::app::App<shared::ledger::memory::InMemoryLedger>;

/// Like [`test_app`] on the in-memory ledger: no moto_server. Its billing
/// clock is the real one, as in production (a test moves it with
/// [`clock_to`]); billing keys stay in process memory, unsealed.
pub fn memory_app(iamport_base_url: &str, extra: &[(&str, &str)]) -> MemoryApp {
    let mut vars = base_vars("in-memory", iamport_base_url);
    // Required with V2; the in-memory ledger has nothing to seal with.
    vars.insert(
        "BILLING_KEY_KMS_KEY_ID".into(),
        "alias/unused-by-the-in-memory-ledger".into(),
    );
    let (config, credentials) = config_of(vars, extra);
    shared::app::App::on_ledger(
        config,
        shared::ledger::memory::InMemoryLedger::new(),
        credentials,
        shared::clock::Clock::shifted(),
    )
    .expect("test app")
}

/// [`memory_app`] for the tests that run in both modes ([`v2_mode`]).
pub fn memory_app_for(sim: &iamport_sim::SimHandle, extra: &[(&str, &str)]) -> MemoryApp {
    let owned = if v2_mode() { v2_vars(sim) } else { Vec::new() };
    let mut vars: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend_from_slice(extra);
    memory_app(&sim.base_url(), &vars)
}

/// The variables every test app shares (production's, aimed at the
/// simulator, with short timeouts).
fn base_vars(table: &str, iamport_base_url: &str) -> std::collections::HashMap<String, String> {
    [
        ("TABLE_NAME", table),
        ("IAMPORT_BASE_URL", iamport_base_url),
        ("IAMPORT_KEY", SIM_KEY),
        ("IAMPORT_SECRET", SIM_SECRET),
        ("IAMPORT_TIMEOUT_MS", "1000"),
        ("PORTONE_TIMEOUT_MS", "1000"),
        ("IAMPORT_CONNECT_TIMEOUT_MS", "500"),
        // Handler tests post from wherever their fixture says; the
        // allow-list has its own tests.
        ("WEBHOOK_ALLOWED_IPS", "any"),
        ("CALLBACK_URL", "http://127.0.0.1:9000/billing/callback"),
        ("SUCCESS_REDIRECT_URL", SUCCESS_URL),
        ("FAILURE_REDIRECT_URL", FAILURE_URL),
        ("CHARGE_CONCURRENCY", "8"),
        ("RESEND_QUIET_SECS", "120"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The configuration and credentials of `vars` with `extra` over them, read
/// as production reads its environment.
fn config_of(
    mut vars: std::collections::HashMap<String, String>,
    extra: &[(&str, &str)],
) -> (shared::config::Config, shared::app::Credentials) {
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let config =
        shared::config::Config::from_lookup(|k| vars.get(k).cloned()).expect("test config");
    let portone = vars
        .get("PORTONE_API_SECRET")
        .map(|s| shared::app::PortOneCredentials {
            api_secret: shared::secret::Secret::new(s.clone()),
            webhook_secrets: vars
                .get("PORTONE_WEBHOOK_SECRETS")
                .into_iter()
                .flat_map(|v| v.split(','))
                .map(|s| shared::secret::Secret::new(s.trim().to_owned()))
                .collect(),
        });
    let credentials = shared::app::Credentials {
        imp_key: shared::secret::Secret::new(vars["IAMPORT_KEY"].clone()),
        imp_secret: shared::secret::Secret::new(vars["IAMPORT_SECRET"].clone()),
        uid_key: config.charging.uid_key.clone(),
        api_keys: Default::default(),
        portone,
    };
    (config, credentials)
}

/// Whether the tests that run in both modes run against PortOne V2 this
/// time: `PAYMENT_API=v2` in the environment (`v1`, the default, otherwise).
pub fn v2_mode() -> bool {
    std::env::var("PAYMENT_API").is_ok_and(|v| v == "v2")
}

/// The app for the tests that run in both modes ([`v2_mode`]).
pub async fn app_for(sim: &iamport_sim::SimHandle, extra: &[(&str, &str)]) -> shared::app::App {
    if v2_mode() {
        test_app_v2(sim, extra).await
    } else {
        test_app(&sim.base_url(), extra).await
    }
}

/// The credentials [`app_for`] used, to build another app on the same
/// table (e.g. behind a flaky DynamoDB proxy).
pub fn sim_credentials(sim: &iamport_sim::SimHandle) -> shared::app::Credentials {
    let config = sim.config();
    shared::app::Credentials {
        imp_key: shared::secret::Secret::new(SIM_KEY),
        imp_secret: shared::secret::Secret::new(SIM_SECRET),
        uid_key: None,
        api_keys: Default::default(),
        portone: v2_mode().then(|| shared::app::PortOneCredentials {
            api_secret: shared::secret::Secret::new(config.portone_api_secret.clone()),
            webhook_secrets: vec![shared::secret::Secret::new(
                config.portone_webhook_secret.clone(),
            )],
        }),
    }
}

/// A charge sent straight through the app's gateway (as a customer, or a
/// crashed run, might have made it), outside the engine.
pub async fn charge_directly<L>(
    app: &shared::app::App<L>,
    customer_uid: &str,
    merchant_uid: &str,
    amount: i64,
) -> shared::gateway::ChargeOutcome {
    use shared::gateway::PaymentGateway;
    app.engine
        .gateway
        .charge(&shared::gateway::ChargeRequest {
            customer_uid: customer_uid.to_owned(),
            merchant_uid: merchant_uid.to_owned(),
            amount,
            name: "x".into(),
            buyer: Default::default(),
            custom_data: None,
            notice_url: None,
            tax_free: 0,
        })
        .await
}

/// Standard Webhooks headers for `body`, signed at `timestamp` with the
/// simulator's V2 webhook secret (as PortOne would send them).
pub fn v2_signature_headers(
    sim: &iamport_sim::SimHandle,
    timestamp: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let secret = sim.config().portone_webhook_secret.clone();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("whsec_ secret");
    let id = format!("msg_test{timestamp}");
    let signature = shared::gateway::portone::webhook::sign(&key, &id, timestamp, body.as_bytes());
    vec![
        ("webhook-id", id),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

/// The setting that makes the app's gateway credentials wrong, for the API in use.
pub fn wrong_secret() -> (&'static str, &'static str) {
    if v2_mode() {
        ("PORTONE_API_SECRET", "wrong")
    } else {
        ("IAMPORT_SECRET", "wrong")
    }
}

/// Like [`test_app`], with `PAYMENT_API=v2` against the simulator's
/// PortOne V2 face (its default store, channel, API secret and webhook
/// secret).
pub async fn test_app_v2(sim: &iamport_sim::SimHandle, extra: &[(&str, &str)]) -> shared::app::App {
    let owned = v2_vars(sim);
    let mut vars: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend_from_slice(extra);
    test_app(&sim.base_url(), &vars).await
}

/// The variables that point an app at the simulator's PortOne V2 face.
fn v2_vars(sim: &iamport_sim::SimHandle) -> Vec<(&'static str, String)> {
    let config = sim.config();
    vec![
        ("PAYMENT_API", "v2".into()),
        ("PORTONE_BASE_URL", sim.portone_base_url()),
        ("PORTONE_API_SECRET", config.portone_api_secret.clone()),
        (
            "PORTONE_WEBHOOK_SECRETS",
            config.portone_webhook_secret.clone(),
        ),
        ("PORTONE_STORE_ID", config.portone_store_id.clone()),
        ("PORTONE_CHANNEL_KEY", config.portone_channel_key.clone()),
    ]
}

/// Plays the browser for V2: opens the simulator's billing-key window with
/// the `PortOne.requestIssueBillingKey` parameters (nested `customer`
/// flattened as `customer.customerId`), plus `extra` pairs such as
/// `scenario=user_cancel`; returns the raw query of the redirect.
pub async fn open_v2_window(
    sim: &iamport_sim::SimHandle,
    params: &serde_json::Value,
    extra: &[(&str, &str)],
) -> String {
    let mut flat = serde_json::Map::new();
    for (k, v) in params.as_object().into_iter().flatten() {
        match v {
            serde_json::Value::Object(inner) => {
                for (ik, iv) in inner {
                    flat.insert(format!("{k}.{ik}"), iv.clone());
                }
            }
            other => {
                flat.insert(k.clone(), other.clone());
            }
        }
    }
    let base = format!("{}/portone", sim.base_url());
    open_window(&base, &serde_json::Value::Object(flat), extra).await
}

/// Starts the i'mport simulator in this test's runtime on 127.0.0.1:0.
pub async fn start_sim() -> iamport_sim::SimHandle {
    iamport_sim::spawn(iamport_sim::SimConfig::default(), "127.0.0.1:0")
        .await
        .expect("start simulator")
}

/// The path of an event fixture under `infra/events/` (the same files
/// `sam local invoke -e` and `cargo lambda invoke --data-file` use).
pub fn event_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/events")
        .join(name)
}

/// Loads an event fixture as JSON.
pub fn event_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(event_path(name)).expect("read event fixture");
    serde_json::from_str(&text).expect("event fixture is JSON")
}

/// An API Gateway v2 request built from a fixture, with the query string
/// (raw, as the browser sent it) and body replaced.
pub fn http_request(
    fixture: &str,
    raw_query: Option<&str>,
    body: Option<&str>,
) -> lambda_http::Request {
    let mut event = event_json(fixture);
    if let Some(q) = raw_query {
        let params: serde_json::Map<String, serde_json::Value> =
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
                .collect();
        event["rawQueryString"] = serde_json::Value::String(q.to_owned());
        event["queryStringParameters"] = if params.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::Object(params)
        };
    }
    if let Some(b) = body {
        event["body"] = serde_json::Value::String(b.to_owned());
        event["isBase64Encoded"] = serde_json::Value::Bool(false);
    }
    lambda_http::request::from_str(&event.to_string()).expect("fixture is an API Gateway v2 event")
}

/// Plays the browser: opens the simulator's payment window with the
/// `IMP.request_pay` parameters (plus `extra` query pairs such as
/// `scenario=user_cancel` or `sdk=new`), and returns the raw query string of
/// the redirect to `m_redirect_url`.
pub async fn open_window(
    sim_base_url: &str,
    request_pay: &serde_json::Value,
    extra: &[(&str, &str)],
) -> String {
    let mut url = url::Url::parse(&format!("{sim_base_url}/window")).expect("sim URL");
    {
        let mut q = url.query_pairs_mut();
        if let Some(obj) = request_pay.as_object() {
            for (k, v) in obj {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                q.append_pair(k, &text);
            }
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser client");
    let response = browser.get(url).send().await.expect("open payment window");
    assert_eq!(
        response.status().as_u16(),
        302,
        "the payment window must redirect"
    );
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect location")
        .to_owned();
    url::Url::parse(&location)
        .expect("redirect URL")
        .query()
        .unwrap_or_default()
        .to_owned()
}

/// Creates an active subscription that signed up at `created` (period 0 due
/// then), with its billing key registered in the simulator: what a
/// completed callback leaves behind, without the browser round trip.
pub async fn seed_subscription<L: shared::ledger::Ledger>(
    app: &shared::app::App<L>,
    sim: &iamport_sim::SimHandle,
    created: chrono::DateTime<chrono::Utc>,
) -> shared::billing::Subscription {
    seed_with(app, sim, created, None).await
}

/// [`seed_subscription`] of a sign-up to a free trial of `terms`, as the
/// callback activates one: `trialing`, period 0 at the trial's end, with
/// `consent` if the sign-up carried one.
pub async fn seed_trial<L: shared::ledger::Ledger>(
    app: &shared::app::App<L>,
    sim: &iamport_sim::SimHandle,
    created: chrono::DateTime<chrono::Utc>,
    terms: shared::billing::trials::TrialTerms,
    consent: Option<shared::billing::trials::Consent>,
) -> shared::billing::Subscription {
    seed_with(app, sim, created, Some((terms, consent))).await
}

async fn seed_with<L: shared::ledger::Ledger>(
    app: &shared::app::App<L>,
    sim: &iamport_sim::SimHandle,
    created: chrono::DateTime<chrono::Utc>,
    trial: Option<(
        shared::billing::trials::TrialTerms,
        Option<shared::billing::trials::Consent>,
    )>,
) -> shared::billing::Subscription {
    use shared::billing::{MerchantUid, Registration, RegistrationStatus, SubscriptionId};

    let id = SubscriptionId::generate();
    let mut sub = sample_subscription(&id, created);
    sub.next_charge_at = created;
    if let Some((terms, consent)) = &trial {
        let (anchor, ends_at) = shared::billing::trials::trial_end(terms.days, created);
        sub.anchor = anchor;
        sub.next_charge_at = ends_at;
        sub.status = shared::billing::SubscriptionStatus::Trialing;
        sub.trial = Some(shared::billing::trials::Trial {
            terms: *terms,
            ends_at,
            extended: false,
            consent: consent.clone(),
        });
    }
    let customer_id = sub.customer_uid.clone();
    if app.config.gateway.payment_api() == shared::config::PaymentApi::V2 {
        // PortOne issued a key for our registration and customer id; the
        // subscription charges the key.
        let issue_id = MerchantUid::issuance(&id);
        sub.customer_uid = sim.add_v2_key(Some(&issue_id), Some(&customer_id));
        sub.pg = "portone".into();
    } else {
        sim.add_customer(&sub.customer_uid, "chai");
    }
    let reg = Registration {
        merchant_uid: MerchantUid::issuance(&id),
        subscription_id: id.clone(),
        customer_uid: customer_id,
        user_id: sub.user_id.clone(),
        plan: sub.plan.clone(),
        plan_ref: None,
        pg: sub.pg.clone(),
        buyer: sub.buyer.clone(),
        status: RegistrationStatus::Pending,
        created_at: created,
        expires_at: None,
        imp_uid: None,
        sweep_at: None,
        replaces_key: false,
        interval: Default::default(),
        billing: None,
        trial: trial.as_ref().map(|(t, _)| *t),
        consent: trial.and_then(|(_, c)| c),
        coupon: None,
    };
    let ledger = &app.engine.ledger;
    ledger
        .put_registration(&reg)
        .await
        .expect("seed registration");
    ledger
        .activate(&shared::ledger::Activation {
            reg: &reg,
            sub: &sub,
            imp_uid: &format!("imp_seed{id}"),
            first_attempt: None,
            plan_lock: !app
                .engine
                .settings
                .registration
                .allow_multiple_subscriptions,
        })
        .await
        .expect("seed subscription");
    sub
}

/// An API Gateway v2 request built from a fixture with every part that
/// matters to an HTTP handler replaced (for a local gateway in tests).
pub fn http_event(
    fixture: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
    source_ip: &str,
) -> lambda_http::Request {
    http_event_with_query(fixture, method, path, None, content_type, body, source_ip)
}

/// [`http_event`] with a raw query string as the browser sent it.
pub fn http_event_with_query(
    fixture: &str,
    method: &str,
    path: &str,
    raw_query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    source_ip: &str,
) -> lambda_http::Request {
    use base64::Engine;
    let mut event = event_json(fixture);
    let q = raw_query.unwrap_or_default();
    let params: serde_json::Map<String, serde_json::Value> =
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect();
    event["rawQueryString"] = serde_json::Value::String(q.to_owned());
    event["queryStringParameters"] = if params.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Object(params)
    };
    event["rawPath"] = serde_json::json!(path);
    event["requestContext"]["http"]["method"] = serde_json::json!(method);
    event["requestContext"]["http"]["path"] = serde_json::json!(path);
    event["requestContext"]["http"]["sourceIp"] = serde_json::json!(source_ip);
    match content_type {
        Some(ct) => event["headers"]["content-type"] = serde_json::json!(ct),
        None => {
            if let Some(h) = event["headers"].as_object_mut() {
                h.remove("content-type");
            }
        }
    }
    event["body"] = serde_json::json!(base64::engine::general_purpose::STANDARD.encode(body));
    event["isBase64Encoded"] = serde_json::json!(true);
    lambda_http::request::from_str(&event.to_string()).expect("API Gateway v2 event")
}

/// A local stand-in for API Gateway: an HTTP server on 127.0.0.1:0 that
/// turns each request into an API Gateway v2 event (shaped like `fixture`)
/// and answers with what `handler` returns. Lets the simulator's webhook
/// sender reach a Lambda handler over real HTTP.
pub async fn local_gateway<F, Fut>(fixture: &'static str, handler: F) -> String
where
    F: Fn(lambda_http::Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = lambda_http::Response<lambda_http::Body>> + Send,
{
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let handler = handler.clone();
            async move {
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
                let mut request = http_event_with_query(
                    fixture,
                    method.as_str(),
                    uri.path(),
                    uri.query(),
                    ct,
                    &body,
                    "127.0.0.1",
                );
                // Every other header as sent (V2 webhook signatures).
                for (name, value) in &headers {
                    if name.as_str() != "content-type"
                        && let Ok(v) = lambda_http::http::HeaderValue::from_bytes(value.as_bytes())
                        && let Ok(n) =
                            lambda_http::http::HeaderName::from_bytes(name.as_str().as_bytes())
                    {
                        request.headers_mut().insert(n, v);
                    }
                }
                let response = handler(request).await;
                let status = axum::http::StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                // The handler's headers too (a redirect's Location, content types).
                let mut out_headers = axum::http::HeaderMap::new();
                for (name, value) in response.headers() {
                    if let (Ok(n), Ok(v)) = (
                        axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
                        axum::http::HeaderValue::from_bytes(value.as_bytes()),
                    ) {
                        out_headers.append(n, v);
                    }
                }
                (status, out_headers, response.body().as_ref().to_vec())
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("gateway address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A TCP proxy in front of a server (moto_server) that can be made to fail:
/// after `fail_after` HTTP requests have passed through it, it drops every
/// connection and refuses new ones until [`FlakyProxy::heal`] — "DynamoDB
/// unreachable mid-run".
pub struct FlakyProxy {
    pub url: String,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    requests: std::sync::atomic::AtomicU64,
    fail_after: std::sync::atomic::AtomicU64,
}

impl ProxyState {
    fn down(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.requests.load(SeqCst) >= self.fail_after.load(SeqCst)
    }
}

impl FlakyProxy {
    pub async fn start(target: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = std::sync::Arc::new(ProxyState {
            requests: AtomicU64::new(0),
            fail_after: AtomicU64::new(u64::MAX),
        });
        let shared = std::sync::Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if shared.down() {
                    continue; // dropped: connection reset
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let state = std::sync::Arc::clone(&shared);
                tokio::spawn(async move {
                    let (mut ri, mut wi) = inbound.split();
                    let (mut ro, mut wo) = outbound.split();
                    let mut a = [0u8; 16384];
                    let mut b = [0u8; 16384];
                    loop {
                        if state.down() {
                            return;
                        }
                        tokio::select! {
                            n = ri.read(&mut a) => {
                                let Ok(n) = n else { return };
                                if n == 0 { return; }
                                let chunk = &a[..n];
                                let posts = chunk.windows(5).filter(|w| w == b"POST ").count() as u64;
                                state.requests.fetch_add(posts, SeqCst);
                                if state.down() || wo.write_all(chunk).await.is_err() { return; }
                            }
                            n = ro.read(&mut b) => {
                                let Ok(n) = n else { return };
                                if n == 0 || wi.write_all(&b[..n]).await.is_err() { return; }
                            }
                            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                        }
                    }
                });
            }
        });
        Self { url, state }
    }

    /// Fail once `n` more requests have passed.
    pub fn fail_after(&self, n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.state.requests.load(SeqCst);
        self.state.fail_after.store(now + n, SeqCst);
    }

    pub fn heal(&self) {
        self.state
            .fail_after
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.state.down()
    }
}

/// A DynamoDB client for any endpoint (e.g. a [`FlakyProxy`] in front of moto).
pub async fn dynamodb_client_at(endpoint: &str) -> aws_sdk_dynamodb::Client {
    safe_aws_env();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("ap-northeast-2"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

/// Leaves what a run that died right after its claim leaves behind: attempt
/// 1 of the current period `claimed` by a dead run whose lease ends in one
/// second; with `charged`, i'mport had also taken the money (same
/// `merchant_uid`). Move the app's clock past the lease (and, to have it sent
/// again, past the quiet period) to let the next run take it over.
pub async fn crashed_claim<L: shared::ledger::Ledger>(
    app: &shared::app::App<L>,
    sub: &shared::billing::Subscription,
    charged: bool,
) -> shared::billing::ChargeAttempt {
    use shared::billing::{AttemptState, ChargeAttempt};

    let now = app.engine.now();
    let period = sub.current_period();
    let claim = ChargeAttempt {
        subscription_id: sub.id.clone(),
        merchant_uid: app
            .engine
            .settings
            .uid_key
            .charge_uid(&sub.id, &period, sub.attempt),
        key_ref: app.engine.settings.uid_key.key_ref(&sub.customer_uid),
        period,
        attempt: sub.attempt,
        amount: sub.plan.amount,
        state: AttemptState::Claimed,
        claim_token: Some("crashed-run".into()),
        lease_until: Some(now + chrono::Duration::seconds(1)),
        sent_at: Some(now),
        sends: 1,
        imp_uid: None,
        paid_at: None,
        fail_reason: None,
        decline: None,
        receipt_url: None,
        refunded: 0,
        cash_receipt: None,
        refund_cause: None,
        resolution: None,
        retry_at: None,
        created_at: now,
        updated_at: now,
        tax_free: 0,
        vat: None,
    };
    app.engine
        .ledger
        .claim_new(&claim, &sub.next_version(now))
        .await
        .expect("crashed run's claim");
    if charged {
        use shared::gateway::PaymentGateway;
        let outcome = app
            .engine
            .gateway
            .charge(&shared::gateway::ChargeRequest {
                customer_uid: sub.customer_uid.clone(),
                merchant_uid: claim.merchant_uid.clone(),
                amount: claim.amount,
                name: sub.plan.name.clone(),
                buyer: Default::default(),
                custom_data: None,
                notice_url: None,
                tax_free: 0,
            })
            .await;
        assert!(
            matches!(outcome, shared::gateway::ChargeOutcome::Paid(_)),
            "{outcome:?}"
        );
    }
    claim
}

/// Moves the app's clock past a crashed claim's lease and the quiet period
/// after its send, so the next run may take it over and send it again.
pub fn after_quiet_period<L>(app: &shared::app::App<L>) {
    app.engine.clock.advance(
        chrono::Duration::from_std(app.engine.settings.charging.resend_quiet).unwrap_or_default()
            + chrono::Duration::seconds(2),
    );
}

/// The AWS SDK's configuration for the test moto_server (any service).
pub async fn moto_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("ap-northeast-2"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await
}

/// An EventBridge bus on moto_server with a rule sending every event of
/// `source` to an SQS queue, so a test can read what was published.
pub struct EventSink {
    pub bus: String,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl EventSink {
    /// On the test moto_server.
    pub async fn create(source: &str) -> Self {
        Self::create_at(&moto_sdk_config(&dynamodb_endpoint()).await, source).await
    }

    /// On the server `config` points at, with a bus of its own.
    pub async fn create_at(config: &aws_config::SdkConfig, source: &str) -> Self {
        let suffix: u64 = rand::rng().random();
        Self::create_named(config, &format!("events-{suffix:016x}"), source).await
    }

    /// The bus `bus` (created unless it exists) with its rule and queue, on
    /// the server `config` points at (the local stack's moto_server).
    pub async fn create_named(config: &aws_config::SdkConfig, bus: &str, source: &str) -> Self {
        let eventbridge = aws_sdk_eventbridge::Client::new(config);
        let sqs = aws_sdk_sqs::Client::new(config);
        let suffix: u64 = rand::rng().random();
        let bus = bus.to_owned();
        if eventbridge
            .describe_event_bus()
            .name(&bus)
            .send()
            .await
            .is_err()
        {
            eventbridge
                .create_event_bus()
                .name(&bus)
                .send()
                .await
                .expect("create event bus");
        }
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("sink-{suffix:016x}"))
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .expect("queue arn");
        eventbridge
            .put_rule()
            .name("all")
            .event_bus_name(&bus)
            .event_pattern(serde_json::json!({"source": [source]}).to_string())
            .send()
            .await
            .expect("put rule");
        eventbridge
            .put_targets()
            .rule("all")
            .event_bus_name(&bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("sink")
                    .arn(queue_arn)
                    .build()
                    .expect("target"),
            )
            .send()
            .await
            .expect("put targets");
        Self {
            bus,
            eventbridge,
            sqs,
            queue_url,
        }
    }

    /// Every event delivered so far (EventBridge envelopes), in the order
    /// the queue gives them, removed from the queue.
    pub async fn drain(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                if let Some(body) = m.body() {
                    out.push(serde_json::from_str(body).expect("an EventBridge envelope"));
                }
                if let Some(h) = m.receipt_handle() {
                    let _ = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(h)
                        .send()
                        .await;
                }
            }
        }
    }
}

/// Reads a table's change stream on moto_server the way a Lambda event
/// source mapping does, and hands the records over as the Lambda event
/// (`{"Records": [...]}`) the publisher receives in AWS.
pub struct StreamReader {
    http: reqwest::Client,
    endpoint: String,
    arn: String,
    iterators: Vec<String>,
}

impl StreamReader {
    async fn call(
        http: &reqwest::Client,
        endpoint: &str,
        action: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let response = http
            .post(endpoint)
            .header("x-amz-target", format!("DynamoDBStreams_20120810.{action}"))
            .header("content-type", "application/x-amz-json-1.0")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20261128/ap-northeast-2/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .expect("DynamoDB Streams call");
        let status = response.status();
        let text = response.text().await.expect("DynamoDB Streams answer");
        assert!(status.is_success(), "{action}: {status} {text}");
        serde_json::from_str(&text).expect("DynamoDB Streams JSON")
    }

    /// Opens `table`'s stream from its beginning.
    pub async fn open(client: &aws_sdk_dynamodb::Client, endpoint: &str, table: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let arn = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe table")
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the table has a stream");
        let described = Self::call(
            &http,
            endpoint,
            "DescribeStream",
            serde_json::json!({"StreamArn": arn}),
        )
        .await;
        let mut iterators = Vec::new();
        for shard in described["StreamDescription"]["Shards"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let it = Self::call(
                &http,
                endpoint,
                "GetShardIterator",
                serde_json::json!({"StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
            )
            .await;
            if let Some(i) = it["ShardIterator"].as_str() {
                iterators.push(i.to_owned());
            }
        }
        Self {
            http,
            endpoint: endpoint.to_owned(),
            arn,
            iterators,
        }
    }

    /// The records written since the last call, as one Lambda event.
    pub async fn next_batch(&mut self) -> serde_json::Value {
        let mut records = Vec::new();
        for it in &mut self.iterators {
            let got = Self::call(
                &self.http,
                &self.endpoint,
                "GetRecords",
                serde_json::json!({"ShardIterator": it}),
            )
            .await;
            for mut r in got["Records"].as_array().cloned().unwrap_or_default() {
                r["eventSourceARN"] = serde_json::json!(self.arn);
                records.push(r);
            }
            if let Some(next) = got["NextShardIterator"].as_str() {
                *it = next.to_owned();
            }
        }
        serde_json::json!({ "Records": records })
    }
}
