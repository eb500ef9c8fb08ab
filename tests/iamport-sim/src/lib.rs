//! # iamport-sim
//!
//! A stateful local stand-in for the i'mport (PortOne V1) REST API, like stripe-mock is for
//! Stripe: token issuance with the documented reuse rules, billing-key charges
//! (`/subscribe/payments/again`) with declines as `status: failed`, payment and billing-key
//! lookups, refunds, cash receipts (현금영수증, `/receipts/{imp_uid}`), a payment window that
//! redirects like the JS SDK, webhooks, and faults (500s, hangs before/after charging, corrupt
//! bodies, rejections, a PG slow or failing to issue cash receipts) for testing clients.
//!
//! Its types are written from the docs (`/work/shared/iamport-v1/README.md`) and checked against
//! the official spec (`spec/v1.openapi.yml`); it shares nothing with the client crate.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use iamport_sim::{Fault, FaultKind, SimConfig};
//! let sim = iamport_sim::spawn(SimConfig::default(), "127.0.0.1:0").await?;
//! sim.add_customer("cust_1", "chai");
//! sim.inject(Fault::new(FaultKind::HangAfter { secs: 3 }).on_path("/subscribe/payments/again"));
//! // point the client at sim.base_url() …
//! assert_eq!(sim.paid_count("order_1"), 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod browser;
mod control;
mod fault;
mod model;
mod params;
mod receipt;
mod reply;
mod state;
mod v2;
mod webhook;
mod window;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fault::{CHARGE_PATHS, Fault, FaultKind, LOOKUP_PATHS};
pub use model::{
    CancelHistory, Customer, LedgerEntry, NewCustomer, Payment, PaymentStatus, Promotion,
    UnknownStatus,
};
pub use receipt::{
    CashReceiptKind, CashReceiptRecord, CashReceiptStatus, ReceiptMode, mask_identifier,
};
pub use webhook::{UnknownWebhookFormat, WebhookDelivery, WebhookFormat, WebhookSettings};

use state::Sim;

/// How long [`SimHandle::shutdown`] waits for in-flight requests (e.g. a hanging fault).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Simulator settings. `Default` gives the credentials `sim_imp_key` / `sim_imp_secret`,
/// 30-minute tokens, CHAI as the PG and no webhook URL.
#[derive(Clone)]
pub struct SimConfig {
    /// The REST API key getToken accepts.
    pub imp_key: String,
    /// The REST API secret getToken accepts.
    pub imp_secret: String,
    /// Lifetime of a newly issued token (the real service: 1800 s).
    pub token_ttl_secs: i64,
    /// Default ("console") webhook URL; a request's `notice_url` overrides it.
    pub webhook_url: Option<String>,
    pub webhook_format: WebhookFormat,
    /// Extra identical deliveries per webhook (0 = once).
    pub webhook_duplicates: u32,
    /// Wait before delivering a webhook.
    pub webhook_delay: Duration,
    /// PG used when the window gets no `pg` and for keys added without one.
    pub pg_provider: String,
    /// `pg_id` (MID / CHAI public key) when `pg` carries none (`chai` rather than `chai.{id}`).
    pub pg_id: String,
    /// Delay before every API answer.
    pub latency: Duration,
    /// PortOne V2: the API secret (`Authorization: PortOne <it>`).
    pub portone_api_secret: String,
    /// PortOne V2: the store id the window and the API accept.
    pub portone_store_id: String,
    /// PortOne V2: the channel key the window issues keys on.
    pub portone_channel_key: String,
    /// PortOne V2: the channel's PG (`pgProvider`).
    pub portone_pg_provider: String,
    /// PortOne V2: the `whsec_` secret V2 webhooks are signed with.
    pub portone_webhook_secret: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            imp_key: "sim_imp_key".to_owned(),
            imp_secret: "sim_imp_secret".to_owned(),
            token_ttl_secs: 1800,
            webhook_url: None,
            webhook_format: WebhookFormat::Json,
            webhook_duplicates: 0,
            webhook_delay: Duration::ZERO,
            pg_provider: "chai".to_owned(),
            pg_id: "sim_pg_id".to_owned(),
            latency: Duration::ZERO,
            portone_api_secret: "sim_portone_api_secret".to_owned(),
            portone_store_id: "store-iamport-sim".to_owned(),
            portone_channel_key: "channel-key-iamport-sim".to_owned(),
            portone_pg_provider: "TOSSPAYMENTS".to_owned(),
            portone_webhook_secret: "whsec_aWFtcG9ydC1zaW0gd2ViaG9vayBzZWNyZXQgMDAwMQ==".to_owned(),
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("imp_key", &self.imp_key)
            .field("imp_secret", &"***")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_format", &self.webhook_format)
            .field("webhook_duplicates", &self.webhook_duplicates)
            .field("webhook_delay", &self.webhook_delay)
            .field("pg_provider", &self.pg_provider)
            .field("pg_id", &self.pg_id)
            .field("latency", &self.latency)
            .field("portone_api_secret", &"***")
            .field("portone_store_id", &self.portone_store_id)
            .field("portone_channel_key", &self.portone_channel_key)
            .field("portone_pg_provider", &self.portone_pg_provider)
            .field("portone_webhook_secret", &"***")
            .finish()
    }
}

fn router(sim: Arc<Sim>) -> Router {
    let authenticated = Router::new()
        .route("/subscribe/payments/again", post(api::again))
        .route("/payments/cancel", post(api::cancel))
        .route("/payments/{imp_uid}", get(api::payment))
        .route("/payments/find/{merchant_uid}", get(api::find))
        .route(
            "/payments/find/{merchant_uid}/{payment_status}",
            get(api::find_with_status),
        )
        .route(
            "/subscribe/customers/{customer_uid}",
            get(api::customer).delete(api::delete_customer),
        )
        .route(
            "/receipts/{imp_uid}",
            get(api::receipt)
                .post(api::issue_receipt)
                .delete(api::cancel_receipt),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&sim),
            api::require_token,
        ));
    let public = Router::new()
        .route("/users/getToken", post(api::get_token))
        .route("/window", get(window::window))
        .route("/window/page", get(browser::window_page))
        .route("/portone/window/page", get(browser::portone_window_page))
        .route("/sdk/iamport.js", get(browser::iamport_js))
        .route("/sdk/portone.js", get(browser::portone_js))
        .merge(authenticated)
        .merge(v2::router(Arc::clone(&sim)))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&sim),
            api::observe,
        ));
    Router::new()
        .merge(public)
        .nest("/__sim", control::router())
        .with_state(sim)
}

/// Start a simulator on `addr` (e.g. `127.0.0.1:0` for a free port) in a task of the
/// caller's tokio runtime. It stops on [`SimHandle::shutdown`] or when the handle is dropped.
pub async fn spawn(config: SimConfig, addr: &str) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let sim = Arc::new(Sim::new(config).map_err(std::io::Error::other)?);
    let app = router(Arc::clone(&sim));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            // A dropped sender means the handle is gone: stop as well.
            let _ = stopped.await;
        };
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "simulator server failed");
        }
    });
    tracing::debug!(%local, "iamport-sim started");
    Ok(SimHandle {
        sim,
        addr: local,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running simulator. Its methods act on the same state as the `/__sim/` control endpoints.
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`: the i'mport base URL to give the client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/portone`: the PortOne V2 base URL to give the client.
    pub fn portone_base_url(&self) -> String {
        format!("http://{}/portone", self.addr)
    }

    /// Issue a V2 billing key as the window would (for `issue_id` and
    /// `customer_id`, `billingKeyMethod` `CARD`); returns the key.
    pub fn add_v2_key(&self, issue_id: Option<&str>, customer_id: Option<&str>) -> String {
        self.add_v2_key_with_method(issue_id, customer_id, "CARD")
    }

    /// [`SimHandle::add_v2_key`] with another `billingKeyMethod` (`CARD`,
    /// `TRANSFER`, `EASY_PAY`, `MOBILE`, `PAYPAL`). `TRANSFER` and `EASY_PAY`
    /// keys charge by account transfer (V1 `pay_method: trans`), so their
    /// payments may get cash receipts; the others charge as cards.
    pub fn add_v2_key_with_method(
        &self,
        issue_id: Option<&str>,
        customer_id: Option<&str>,
        billing_key_method: &str,
    ) -> String {
        let config = self.sim.config();
        self.sim.issue_v2_key(
            state::V2Key {
                issue_id: issue_id.map(str::to_owned),
                issue_name: None,
                customer_id: customer_id.map(str::to_owned),
                channel_key: config.portone_channel_key.clone(),
                method: billing_key_method.to_owned(),
            },
            &config.portone_pg_provider,
        )
    }

    /// Whether the V2 key was deleted (`DELETE /billing-keys/{billingKey}`).
    pub fn v2_key_deleted(&self, billing_key: &str) -> bool {
        self.sim.v2_key_deleted(billing_key)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        self.sim.config()
    }

    // ---- billing keys and declines ----

    /// Register a billing key for `customer_uid` at `pg_provider` (e.g. `chai`), as if issued
    /// in the window. Replaces an existing key of that `customer_uid`.
    pub fn add_customer(&self, customer_uid: &str, pg_provider: &str) -> Customer {
        self.sim
            .add_customer(NewCustomer::new(customer_uid, pg_provider))
    }

    /// Register a billing key with more details (buyer info, card fields, pay_method).
    pub fn add_customer_with(&self, customer: NewCustomer) -> Customer {
        self.sim.add_customer(customer)
    }

    /// The stored key of `customer_uid`.
    pub fn customer(&self, customer_uid: &str) -> Option<Customer> {
        self.sim.customer(customer_uid)
    }

    /// Every stored key.
    pub fn customers(&self) -> Vec<Customer> {
        self.sim.customers()
    }

    /// Remove a key, as `DELETE /subscribe/customers/{customer_uid}` would.
    pub fn remove_customer(&self, customer_uid: &str) -> Option<Customer> {
        self.sim.delete_customer(customer_uid)
    }

    /// Every `again` for `customer_uid` answers `status: failed` with `fail_reason = reason`
    /// until [`SimHandle::clear_decline`].
    pub fn decline_customer(&self, customer_uid: &str, reason: &str) {
        self.sim.decline_customer(customer_uid, reason);
    }

    /// Stop declining `customer_uid`; `true` if it was declined.
    pub fn clear_decline(&self, customer_uid: &str) -> bool {
        self.sim.clear_decline(customer_uid)
    }

    // ---- faults, latency, tokens, clock ----

    /// Queue a fault; faults are consumed in order by the requests they match.
    pub fn inject(&self, fault: Fault) {
        self.sim.inject(fault);
    }

    /// Faults not used up yet.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.sim.pending_faults()
    }

    /// Drop every queued fault.
    pub fn clear_faults(&self) {
        self.sim.clear_faults();
    }

    /// Delay every API answer by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.sim.set_latency(latency);
    }

    /// Invalidate the current access token: it answers 401, and getToken issues a new one.
    pub fn expire_tokens(&self) {
        self.sim.expire_tokens();
    }

    /// Set the simulator clock to `unix_secs` (it keeps ticking from there).
    pub fn set_clock(&self, unix_secs: i64) {
        self.sim.set_clock(unix_secs);
    }

    /// Move the simulator clock by `secs` (negative to go back).
    pub fn advance_clock(&self, secs: i64) {
        self.sim.advance_clock(secs);
    }

    /// The simulator clock, UNIX seconds (real time plus the offset).
    pub fn now(&self) -> i64 {
        self.sim.now()
    }

    // ---- inspection ----

    /// Every payment record, in the order they were made (paid, failed and issuance ones).
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.sim.ledger()
    }

    /// The payment `imp_uid`.
    pub fn payment(&self, imp_uid: &str) -> Option<Payment> {
        self.sim.payment(imp_uid)
    }

    /// Every payment record of `merchant_uid`.
    pub fn payments_for(&self, merchant_uid: &str) -> Vec<Payment> {
        self.sim
            .ledger()
            .into_iter()
            .filter(|p| p.merchant_uid == merchant_uid)
            .collect()
    }

    /// How many records of `merchant_uid` are `paid` (partially refunded included).
    pub fn paid_count(&self, merchant_uid: &str) -> usize {
        self.sim.paid_count(merchant_uid)
    }

    /// API requests received whose path starts with `path_prefix`, whatever their answer
    /// (e.g. `request_count("/subscribe/payments/again")`).
    pub fn request_count(&self, path_prefix: &str) -> u64 {
        self.sim.request_count(path_prefix)
    }

    /// Billing-key charge requests of either API (V1 `again`, V2
    /// `POST /portone/payments/{id}/billing-key`), whatever their answer.
    pub fn charge_requests(&self) -> u64 {
        self.sim
            .request_counts()
            .iter()
            .filter(|(path, _)| {
                path.as_str() == fault::AGAIN_PATH || fault::is_v2_charge_path(path)
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests per exact path.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.sim.request_counts()
    }

    /// Calls of `POST /users/getToken`.
    pub fn token_requests(&self) -> u64 {
        self.sim.request_count(fault::TOKEN_PATH)
    }

    // ---- cash receipts ----

    /// How the simulated PG answers the next cash-receipt issuances (both
    /// faces); [`ReceiptMode::Normal`] after start and [`SimHandle::reset`].
    pub fn set_receipt_mode(&self, mode: ReceiptMode) {
        self.sim.set_receipt_mode(mode);
    }

    /// The cash-receipt mode in force (`InProgress` and `Fail` fall back to
    /// `Normal` once used up).
    pub fn receipt_mode(&self) -> ReceiptMode {
        self.sim.receipt_mode()
    }

    /// Every issuance that reached the PG for a payment, oldest first, by
    /// `imp_uid` or else `merchant_uid` (V2 `paymentId`): issued,
    /// cancelled, in progress and failed ones (see [`CashReceiptStatus`]).
    pub fn cash_receipts(&self, imp_uid_or_payment_id: &str) -> Vec<CashReceiptRecord> {
        self.sim.cash_receipts(imp_uid_or_payment_id)
    }

    /// Every cash-receipt record, payment by payment in ledger order.
    pub fn all_cash_receipts(&self) -> Vec<CashReceiptRecord> {
        self.sim.all_cash_receipts()
    }

    // ---- webhooks ----

    /// Replace the webhook settings (URL, format, duplicates, delay).
    pub fn set_webhook(&self, settings: WebhookSettings) {
        self.sim.set_webhook_settings(settings);
    }

    /// The webhook settings in force.
    pub fn webhook_settings(&self) -> WebhookSettings {
        self.sim.webhook_settings()
    }

    /// Webhook deliveries made so far (completed requests, in completion order).
    pub fn webhooks_sent(&self) -> Vec<WebhookDelivery> {
        self.sim.webhooks_sent()
    }

    /// Wait until at least `count` deliveries completed or `timeout` passed; returns them all.
    pub async fn wait_for_webhooks(&self, count: usize, timeout: Duration) -> Vec<WebhookDelivery> {
        self.sim.wait_for_webhooks(count, timeout).await
    }

    /// Send a webhook for the payment's current status now, to `url` or else its `notice_url`
    /// or the configured URL. `false` if the payment is unknown or there is no URL.
    pub fn send_webhook(&self, imp_uid: &str, url: Option<&str>) -> bool {
        match self.sim.webhook_for(imp_uid, url) {
            Some(job) => {
                webhook::dispatch(Arc::clone(&self.sim), job);
                true
            }
            None => false,
        }
    }

    /// Forget everything: keys, payments, cash receipts, declines, faults, the receipt mode,
    /// latency, clock offset, token, request counts, webhook deliveries; webhook settings go
    /// back to the configuration.
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// Stop accepting connections and wait (briefly) for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
