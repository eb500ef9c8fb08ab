//! The sign-up clicked through in a real browser: headless Chromium driven
//! over WebDriver (`chromedriver`, Debian's `chromium` and `chromium-driver`),
//! the example shop, the simulator's browser SDK and payment window, and the
//! billing-callback and subscription-api handlers behind local HTTP gateways
//! (moto_server holds the table). `PAYMENT_API=v2` runs it through
//! `PortOne.requestIssueBillingKey`.
//!
//! - subscribe → approve → the done page shows the active subscription;
//! - cancel in the window → the failed page;
//! - the callback URL reloaded → the same result, no second key or charge.
//!
//! Screenshots of each page go to `target/browser-screenshots/` (not
//! committed); `SCREENSHOTS_TO_DOCS=1` also writes them to
//! `docs/screenshots/` for the README. A missing browser fails the test.
//! Chromium is started with every background service off and a host
//! resolver that resolves nothing but 127.0.0.1: nothing leaves loopback.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use merchant_web::MerchantConfig;
use shared::app::App;
use shared::ledger::Ledger;
use testkit::{app_for, free_port, local_gateway, start_sim, v2_mode};

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromedriver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{bin} could not start ({e}): install Debian's chromium and chromium-driver \
                 (scripts/setup.sh does); the browser test does not skip"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = std::env::temp_dir().join(format!("merchant-web-chromium-{port}"));
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: TempDir(profile),
    }
}

async fn browser(driver: &Driver) -> Client {
    let profile = driver._profile.0.display().to_string();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=900,760",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--metrics-recording-only",
                "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                format!("--user-data-dir={profile}"),
            ]
        }),
    );
    // Plain HTTP to chromedriver on loopback: no TLS stack needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

fn screenshot_dirs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let mut dirs = vec![target.join("browser-screenshots")];
    if std::env::var("SCREENSHOTS_TO_DOCS").is_ok_and(|v| v == "1") {
        dirs.push(root.join("docs/screenshots"));
    }
    dirs
}

async fn snap(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let mode = if v2_mode() { "v2" } else { "v1" };
    for dir in screenshot_dirs() {
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        std::fs::write(dir.join(format!("{mode}-{name}.png")), &png).expect("write screenshot");
    }
}

/// Waits until `css` has text containing `want` (pages fill in from fetches).
async fn wait_text(client: &Client, css: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = client.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
            && text.contains(want)
        {
            return text;
        }
        if Instant::now() > deadline {
            let url = client
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let source = client.source().await.unwrap_or_default();
            panic!("{css} never showed {want:?} on {url}:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_url(client: &Client, part: &str) -> url::Url {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(u) = client.current_url().await
            && u.as_str().contains(part)
        {
            return u;
        }
        assert!(
            Instant::now() < deadline,
            "never reached a URL with {part:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Stack {
    sim: iamport_sim::SimHandle,
    app: Arc<App>,
    shop: String,
}

/// The simulator, the app (callback and redirects pointing at the local
/// gateways and the shop), the two handlers behind gateways, and the shop.
async fn stack() -> Stack {
    let sim = start_sim().await;
    let app_cell: Arc<OnceLock<Arc<App>>> = Arc::new(OnceLock::new());
    let cell = Arc::clone(&app_cell);
    let callback_gw = local_gateway("callback-success.json", move |r| {
        let app = Arc::clone(cell.get().expect("app"));
        async move {
            billing_callback::handle(&app, r)
                .await
                .expect("callback answers")
        }
    })
    .await;
    let cell = Arc::clone(&app_cell);
    let api_gw = local_gateway("api-get-subscription.json", move |r| {
        let app = Arc::clone(cell.get().expect("app"));
        async move {
            subscription_api::handle(&app, r)
                .await
                .expect("api answers")
        }
    })
    .await;
    let shop_port = free_port();
    let shop = format!("http://127.0.0.1:{shop_port}");
    let callback = format!("{callback_gw}/billing/callback");
    let done = format!("{shop}/billing/done");
    let failed = format!("{shop}/billing/failed");
    let app = Arc::new(
        app_for(
            &sim,
            &[
                ("CALLBACK_URL", callback.as_str()),
                ("SUCCESS_REDIRECT_URL", done.as_str()),
                ("FAILURE_REDIRECT_URL", failed.as_str()),
            ],
        )
        .await,
    );
    let _ = app_cell.set(Arc::clone(&app));
    merchant_web::serve(
        MerchantConfig {
            prepare_url: format!("{callback_gw}/billing/prepare"),
            subscriptions_url: api_gw,
            iamport_sdk: format!("{}/sdk/iamport.js", sim.base_url()),
            portone_sdk: format!("{}/sdk/portone.js", sim.base_url()),
            imp_code: "imp00000000".into(),
            plan_amount: 9900,
            plan_name: "월간 구독".into(),
            api_key: None,
        },
        &format!("127.0.0.1:{shop_port}"),
    )
    .await
    .expect("the shop starts");
    Stack { sim, app, shop }
}

fn paid_charges(sim: &iamport_sim::SimHandle) -> usize {
    sim.ledger()
        .iter()
        .filter(|p| p.status == "paid" && p.customer_uid_usage.as_deref() == Some("payment"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_subscribes_cancels_and_reloads_in_a_real_browser() {
    let s = stack().await;
    let driver = chromedriver();
    let client = browser(&driver).await;

    // Subscribe → the PG's window → approve → done page with the subscription.
    client.goto(&s.shop).await.expect("the shop");
    wait_text(&client, "h1", "월간 구독").await;
    snap(&client, "1-shop").await;
    client
        .find(Locator::Css("#user"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    client
        .find(Locator::Css("#user"))
        .await
        .unwrap()
        .send_keys("user-browser-1")
        .await
        .unwrap();
    client
        .find(Locator::Css("#subscribe"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&client, "/window/page").await;
    wait_text(&client, "#approve", "승인").await;
    snap(&client, "2-window").await;
    client
        .find(Locator::Css("#approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = wait_url(&client, "/billing/done").await;
    wait_text(&client, "#status", "active").await;
    let plan = wait_text(&client, "#plan", "9,900").await;
    assert!(plan.contains("월간 구독"), "{plan}");
    snap(&client, "3-done").await;
    let id = done
        .query_pairs()
        .find(|(k, _)| k == "subscription_id")
        .map(|(_, v)| v.into_owned())
        .expect("subscription id in the done URL");
    assert!(done.as_str().contains("first_charge=paid"), "{done}");
    assert_eq!(paid_charges(&s.sim), 1);
    assert_eq!(s.sim.customers().len(), 1);

    // The callback URL again (reload, back button): the same page, nothing new.
    let callback = callback_url_of(&s).await;
    client.goto(&callback).await.unwrap();
    let again = wait_url(&client, "/billing/done").await;
    assert!(
        again.as_str().contains(&format!("subscription_id={id}")),
        "{again}"
    );
    wait_text(&client, "#status", "active").await;
    assert_eq!(paid_charges(&s.sim), 1, "no second charge");
    assert_eq!(s.sim.customers().len(), 1, "no second key");

    // Another customer closes the window: the failed page.
    client.goto(&s.shop).await.unwrap();
    let user = client.find(Locator::Css("#user")).await.unwrap();
    user.clear().await.unwrap();
    user.send_keys("user-browser-2").await.unwrap();
    client
        .find(Locator::Css("#subscribe"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&client, "/window/page").await;
    client
        .find(Locator::Css("#cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&client, "/billing/failed").await;
    wait_text(&client, "#reason", "payment_failed").await;
    snap(&client, "4-failed").await;
    assert_eq!(paid_charges(&s.sim), 1);
    assert_eq!(s.sim.customers().len(), 1);

    // The shop shows a subscription only to the browser that subscribed.
    let other = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = other
        .get(format!("{}/api/subscriptions/{id}", s.shop))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    let sub = s
        .app
        .engine
        .ledger
        .get_subscription(&shared::billing::SubscriptionId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.user_id, "user-browser-1");
    client.close().await.unwrap();
}

/// The callback URL the PG sent the first customer to, rebuilt from the
/// simulator's records (a redirect leaves no history entry to go back to).
async fn callback_url_of(s: &Stack) -> String {
    let callback = s
        .app
        .engine
        .settings
        .registration
        .callback_url
        .as_ref()
        .map(ToString::to_string)
        .expect("CALLBACK_URL");
    let regs = s
        .app
        .engine
        .ledger
        .user_items("user-browser-1")
        .await
        .unwrap()
        .registrations;
    let merchant_uid = regs.last().expect("a registration").clone();
    if v2_mode() {
        let key = s
            .sim
            .customers()
            .into_iter()
            .next()
            .expect("a key")
            .customer_uid;
        format!(
            "{callback}?merchant_uid={merchant_uid}&transactionType=ISSUE_BILLING_KEY&billingKey={key}"
        )
    } else {
        let issuance = s
            .sim
            .payments_for(&merchant_uid)
            .into_iter()
            .next()
            .expect("the issuance payment");
        format!(
            "{callback}?imp_uid={}&merchant_uid={merchant_uid}&imp_success=true",
            issuance.imp_uid
        )
    }
}
