//! The simulator's state: clock, access token, billing keys, the payment ledger, declines,
//! faults, latency, request counts and webhook settings, behind one mutex.
//!
//! Every rule about money and tokens lives here; the HTTP modules only parse and answer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;
use tokio::sync::Notify;

use crate::SimConfig;
use crate::fault::{Fault, FaultKind};
use crate::model::{
    CancelHistory, Customer, NewCustomer, Payment, PaymentStatus, default_pay_method, pg_vat,
};
use crate::receipt::{
    CashReceiptKind, CashReceiptRecord, CashReceiptStatus, ReceiptMode, cash_receipt_url,
    is_cash_pay_method,
};
use crate::webhook::{WebhookDelivery, WebhookEvent, WebhookFormat, WebhookJob, WebhookSettings};

/// `user_agent` of API-originated payments (as in the documented sample response).
const API_USER_AGENT: &str = "sorry_not_supported_anymore";
/// Seconds before expiry in which a getToken call extends the token.
const TOKEN_EXTEND_WINDOW_SECS: i64 = 60;
/// How far such a call pushes the expiry out.
const TOKEN_EXTENSION_SECS: i64 = 300;

/// The access token of the (single) simulated merchant account.
#[derive(Debug, Clone)]
struct Token {
    access_token: String,
    expired_at: i64,
}

/// `AuthAnnotation`: what getToken answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TokenGrant {
    pub access_token: String,
    pub now: i64,
    pub expired_at: i64,
}

/// A ledger entry plus what the simulator needs to remember about it.
#[derive(Debug, Clone)]
struct Record {
    payment: Payment,
    notice_url: Option<String>,
    updated_at: i64,
    /// Made through the V2 face: its webhooks are V2's.
    v2: bool,
}

/// A billing key: the customer view plus how it charges.
#[derive(Debug, Clone)]
struct BillingKey {
    customer: Customer,
    pay_method: String,
    /// Issued through the V2 window: what PortOne keeps with the key.
    v2: Option<V2Key>,
}

/// What PortOne V2 keeps with a billing key besides the V1 customer view.
#[derive(Debug, Clone, Default)]
pub(crate) struct V2Key {
    pub issue_id: Option<String>,
    pub issue_name: Option<String>,
    pub customer_id: Option<String>,
    pub channel_key: String,
    pub method: String,
}

/// The V1 `pay_method` a V2 key of `billingKeyMethod` charges with:
/// `TRANSFER` and `EASY_PAY` (account-funded, like CHAI) are transfers,
/// the rest cards.
pub(crate) fn v1_pay_method(billing_key_method: &str) -> &'static str {
    match billing_key_method {
        "TRANSFER" | "EASY_PAY" => "trans",
        _ => "card",
    }
}

/// A V2 billing key as `GET /billing-keys/{billingKey}` shows it.
#[derive(Debug, Clone)]
pub(crate) struct V2KeyView {
    pub customer: Customer,
    pub meta: V2Key,
    pub deleted_at: Option<i64>,
}

/// Why `DELETE /billing-keys/{billingKey}` did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum V2DeleteError {
    NotFound,
    AlreadyDeleted,
}

struct SimState {
    clock_offset: i64,
    token: Option<Token>,
    keys: BTreeMap<String, BillingKey>,
    /// V2 keys deleted (V2 keeps them, `DELETED`), with when.
    deleted_keys: HashMap<String, (BillingKey, i64)>,
    records: Vec<Record>,
    /// Indexes into `records` (only ever appended to): lookups stay O(1)
    /// however many payments a benchmark makes.
    by_imp_uid: HashMap<String, usize>,
    by_merchant_uid: HashMap<String, Vec<usize>>,
    declines: BTreeMap<String, String>,
    faults: VecDeque<Fault>,
    latency: Duration,
    request_counts: BTreeMap<String, u64>,
    webhook: WebhookSettings,
    webhooks_sent: Vec<WebhookDelivery>,
    /// Cash receipts per `imp_uid`, oldest first (every issuance that reached the PG).
    receipts: HashMap<String, Vec<CashReceiptRecord>>,
    /// Approval numbers handed out (they are unique).
    apply_nums: HashSet<String>,
    receipt_mode: ReceiptMode,
}

impl SimState {
    fn new(config: &SimConfig) -> Self {
        Self {
            clock_offset: 0,
            token: None,
            keys: BTreeMap::new(),
            deleted_keys: HashMap::new(),
            records: Vec::new(),
            by_imp_uid: HashMap::new(),
            by_merchant_uid: HashMap::new(),
            declines: BTreeMap::new(),
            faults: VecDeque::new(),
            latency: config.latency,
            request_counts: BTreeMap::new(),
            webhook: WebhookSettings {
                url: config.webhook_url.clone(),
                format: config.webhook_format,
                duplicates: config.webhook_duplicates,
                delay: config.webhook_delay,
            },
            webhooks_sent: Vec::new(),
            receipts: HashMap::new(),
            apply_nums: HashSet::new(),
            receipt_mode: ReceiptMode::Normal,
        }
    }

    fn now(&self) -> i64 {
        real_now().saturating_add(self.clock_offset)
    }

    fn push_record(&mut self, record: Record) {
        let i = self.records.len();
        self.by_imp_uid.insert(record.payment.imp_uid.clone(), i);
        self.by_merchant_uid
            .entry(record.payment.merchant_uid.clone())
            .or_default()
            .push(i);
        self.records.push(record);
    }

    fn record_of(&self, imp_uid: &str) -> Option<usize> {
        self.by_imp_uid.get(imp_uid).copied()
    }

    /// The records under `merchant_uid`, oldest first, with their indexes.
    fn records_for<'a>(
        &'a self,
        merchant_uid: &str,
    ) -> impl Iterator<Item = (usize, &'a Record)> + 'a {
        self.by_merchant_uid
            .get(merchant_uid)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.records.get(i).map(|r| (i, r)))
    }

    /// The record V2 means by `paymentId`: its paid (or refunded) try if
    /// any, else its latest.
    fn v2_record(&self, payment_id: &str) -> Option<usize> {
        let mut latest = None;
        for (i, r) in self.records_for(payment_id) {
            if matches!(
                r.payment.status,
                PaymentStatus::Paid | PaymentStatus::Cancelled
            ) {
                return Some(i);
            }
            latest = Some(i);
        }
        latest
    }

    /// A stored payment as the API shows it now: `cash_receipt_issued`
    /// says whether it has a live (issued, not cancelled) cash receipt.
    fn view(&self, i: usize) -> Option<Payment> {
        let mut payment = self.records.get(i)?.payment.clone();
        payment.cash_receipt_issued = self.live_receipt(&payment.imp_uid).is_some();
        Some(payment)
    }

    /// The cash receipts of `imp_uid` as they stand now (an in-progress
    /// one whose time has come reads issued), oldest first.
    fn receipts_of(&self, imp_uid: &str) -> Vec<CashReceiptRecord> {
        let now = self.now();
        self.receipts
            .get(imp_uid)
            .into_iter()
            .flatten()
            .map(|r| settled(r, now))
            .collect()
    }

    /// Index of the live receipt of `imp_uid` (issued and shown, not cancelled).
    fn live_receipt(&self, imp_uid: &str) -> Option<usize> {
        self.receipts_of(imp_uid)
            .iter()
            .rposition(|r| r.status == CashReceiptStatus::Issued)
    }

    fn new_apply_num(&mut self) -> String {
        loop {
            let candidate = random_digits(9);
            if self.apply_nums.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    fn new_imp_uid(&self, prefix: &str) -> String {
        let mut rng = rand::rng();
        loop {
            let candidate = format!("{prefix}{:012}", rng.random_range(0..1_000_000_000_000_u64));
            if !self.by_imp_uid.contains_key(&candidate) {
                return candidate;
            }
        }
    }

    fn webhook_job(
        &self,
        notice_url: Option<&str>,
        event: WebhookEvent,
        v2: bool,
    ) -> Option<WebhookJob> {
        let url = notice_url
            .map(str::to_owned)
            .or_else(|| self.webhook.url.clone())?;
        Some(WebhookJob {
            url,
            format: if v2 {
                WebhookFormat::PortOne
            } else {
                self.webhook.format
            },
            duplicates: self.webhook.duplicates,
            delay: self.webhook.delay,
            event,
        })
    }
}

/// `record` as it stands at `now`: an in-progress issuance whose time has come is issued.
fn settled(record: &CashReceiptRecord, now: i64) -> CashReceiptRecord {
    let mut record = record.clone();
    if record.status == CashReceiptStatus::InProgress && record.issued_at.is_some_and(|t| t <= now)
    {
        record.status = CashReceiptStatus::Issued;
    }
    record
}

/// Wall-clock UNIX seconds.
fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn random_hex(len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(HEX[rng.random_range(0..HEX.len())]))
        .collect()
}

fn random_digits(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10_u8)))
        .collect()
}

/// A validated `again` request.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChargeRequest {
    pub customer_uid: String,
    pub merchant_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: Option<String>,
    pub buyer_name: Option<String>,
    pub buyer_email: Option<String>,
    pub buyer_tel: Option<String>,
    pub buyer_addr: Option<String>,
    pub buyer_postcode: Option<String>,
    pub custom_data: Option<String>,
    pub notice_url: Option<String>,
    pub card_quota: i64,
    /// The tax-free part (V1 `tax_free`, V2 `amount.taxFree`), 0..=amount.
    pub tax_free: i64,
    /// Through the V2 face.
    pub v2: bool,
}

/// What `again` did.
#[derive(Debug)]
pub(crate) enum ChargeOutcome {
    /// No billing key under that `customer_uid`; nothing recorded.
    UnknownCustomer,
    /// The `merchant_uid` already has a paid payment; nothing recorded.
    AlreadyPaid,
    /// The `merchant_uid` was paid and has since been fully refunded; nothing recorded.
    AlreadyCancelled,
    /// A payment was recorded, `paid` or `failed`.
    Attempted {
        payment: Box<Payment>,
        webhook: Option<WebhookJob>,
    },
}

/// A validated cancel request.
#[derive(Debug, Clone, Default)]
pub(crate) struct CancelRequest {
    pub imp_uid: Option<String>,
    pub merchant_uid: Option<String>,
    /// `None` (or 0) refunds everything left.
    pub amount: Option<i64>,
    pub checksum: Option<i64>,
    /// The cancel's tax-free part (V1 `tax_free`, V2 `taxFreeAmount`).
    pub tax_free: Option<i64>,
    pub reason: Option<String>,
}

/// What a cancel request did.
#[derive(Debug)]
pub(crate) enum CancelOutcome {
    NotFound,
    NotPaid(PaymentStatus),
    AlreadyCancelled,
    NothingRefundable,
    ChecksumMismatch {
        checksum: i64,
        refundable: i64,
    },
    ExceedsRefundable {
        requested: i64,
        refundable: i64,
    },
    /// The tax-free part asked for is more than is left of it (or than the
    /// cancel), or too little: the taxable rest could not cover what would
    /// be left tax-free.
    TaxFreeMismatch {
        requested: i64,
        refundable: i64,
    },
    Cancelled {
        payment: Box<Payment>,
        webhook: Option<WebhookJob>,
    },
}

/// A billing-key issuance through the payment window.
#[derive(Debug, Clone, Default)]
pub(crate) struct IssueRequest {
    pub customer_uid: String,
    pub merchant_uid: String,
    pub amount: i64,
    pub name: Option<String>,
    pub pg_provider: String,
    pub pg_id: String,
    pub pay_method: String,
    pub buyer_name: Option<String>,
    pub buyer_email: Option<String>,
    pub buyer_tel: Option<String>,
    pub buyer_addr: Option<String>,
    pub buyer_postcode: Option<String>,
    pub custom_data: Option<String>,
    pub notice_url: Option<String>,
    pub user_agent: Option<String>,
}

/// Which payment a cash-receipt request names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReceiptTarget<'a> {
    /// V1: an `imp_uid`.
    ImpUid(&'a str),
    /// V2: a `paymentId` (a `merchant_uid`: its paid try).
    PaymentId(&'a str),
}

/// A validated cash-receipt issuance request, of either face.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptRequest {
    pub kind: CashReceiptKind,
    pub identifier: String,
    pub identifier_type: Option<String>,
    /// The tax-free part (V1 `tax_free`, V2 `amount.taxFree`), default 0.
    pub tax_free: i64,
    /// V2 `amount.vat`; when absent the PG's: a tenth of the taxable supply, rounded down.
    pub vat: Option<i64>,
    /// V2 `amount.total`: must equal what is left of the payment.
    pub total: Option<i64>,
    /// V2 `orderName`; V1 takes the payment's `name`.
    pub order_name: Option<String>,
    pub v2: bool,
}

/// What an issuance request did.
#[derive(Debug)]
pub(crate) enum IssueOutcome {
    UnknownPayment,
    /// An issuance of this payment is in progress: accepted just now under
    /// [`ReceiptMode::InProgress`], or earlier and not shown yet. Nothing new issued.
    InProgress,
    NotPaid(PaymentStatus),
    /// Not a cash transaction (`pay_method` other than `trans`/`vbank`).
    NotCash(Option<String>),
    /// The payment has a live receipt.
    AlreadyIssued,
    /// V2 `amount.total` is not what is left of the payment.
    AmountMismatch {
        total: i64,
        remaining: i64,
    },
    TaxFreeExceeds {
        tax_free: i64,
        amount: i64,
    },
    VatExceeds {
        vat: i64,
        taxable: i64,
    },
    /// The PG refused ([`ReceiptMode::Fail`]); recorded as failed.
    Failed,
    Issued(Box<CashReceiptRecord>),
}

/// What a cash-receipt lookup found.
#[derive(Debug)]
pub(crate) enum ReceiptLookup {
    UnknownPayment,
    /// Nothing shown for the payment (never issued, or still in progress).
    None,
    Found(Box<CashReceiptRecord>),
}

/// What a cash-receipt cancel did.
#[derive(Debug)]
pub(crate) enum ReceiptCancelOutcome {
    UnknownPayment,
    /// Nothing shown for the payment (never issued, or still in progress).
    NotFound,
    /// The newest receipt is already cancelled, or the issuance failed.
    NotIssued,
    Cancelled(Box<CashReceiptRecord>),
}

/// Order of `GET /payments/find/…` candidates (`sorting` query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sorting {
    key: SortKey,
    descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Started,
    Paid,
    Updated,
}

impl Default for Sorting {
    fn default() -> Self {
        Self {
            key: SortKey::Started,
            descending: true,
        }
    }
}

impl FromStr for Sorting {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let key = match name {
            "started" => SortKey::Started,
            "paid" => SortKey::Paid,
            "updated" => SortKey::Updated,
            _ => return Err(()),
        };
        Ok(Self { key, descending })
    }
}

/// The shared simulator: configuration, state and the webhook HTTP client.
pub(crate) struct Sim {
    config: SimConfig,
    state: Mutex<SimState>,
    http: reqwest::Client,
    webhook_recorded: Notify,
}

impl Sim {
    pub(crate) fn new(config: SimConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            state: Mutex::new(SimState::new(&config)),
            config,
            http,
            webhook_recorded: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters for a test double, so keep serving rather than poisoning every request.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    // ---- clock ----

    pub(crate) fn now(&self) -> i64 {
        self.lock().now()
    }

    pub(crate) fn clock_offset(&self) -> i64 {
        self.lock().clock_offset
    }

    pub(crate) fn set_clock(&self, unix_secs: i64) {
        self.lock().clock_offset = unix_secs.saturating_sub(real_now());
    }

    pub(crate) fn advance_clock(&self, secs: i64) {
        let mut st = self.lock();
        st.clock_offset = st.clock_offset.saturating_add(secs);
    }

    // ---- tokens ----

    /// getToken: the current token while it is valid (extended by 5 minutes when asked for
    /// in its last minute), else a new one. `None` for wrong credentials.
    pub(crate) fn issue_token(&self, imp_key: &str, imp_secret: &str) -> Option<TokenGrant> {
        if imp_key != self.config.imp_key || imp_secret != self.config.imp_secret {
            return None;
        }
        let mut st = self.lock();
        let now = st.now();
        let token = match st.token.take() {
            Some(mut token) if now < token.expired_at => {
                if token.expired_at.saturating_sub(now) <= TOKEN_EXTEND_WINDOW_SECS {
                    token.expired_at = token.expired_at.saturating_add(TOKEN_EXTENSION_SECS);
                }
                token
            }
            _ => Token {
                access_token: random_hex(40),
                expired_at: now.saturating_add(self.config.token_ttl_secs),
            },
        };
        let grant = TokenGrant {
            access_token: token.access_token.clone(),
            now,
            expired_at: token.expired_at,
        };
        st.token = Some(token);
        Some(grant)
    }

    /// Whether `access_token` is the current, unexpired token (by the simulator clock).
    pub(crate) fn token_valid(&self, access_token: &str) -> bool {
        let st = self.lock();
        let now = st.now();
        st.token
            .as_ref()
            .is_some_and(|t| t.access_token == access_token && now < t.expired_at)
    }

    pub(crate) fn expire_tokens(&self) {
        self.lock().token = None;
    }

    // ---- faults, latency, request counts ----

    pub(crate) fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub(crate) fn pending_faults(&self) -> Vec<Fault> {
        self.lock().faults.iter().cloned().collect()
    }

    /// Consume one use of the first queued fault that hits this request.
    pub(crate) fn take_fault(&self, path: &str, customer_uid: Option<&str>) -> Option<FaultKind> {
        let mut st = self.lock();
        let index = st
            .faults
            .iter()
            .position(|f| f.matches(path, customer_uid))?;
        let fault = st.faults.get_mut(index)?;
        fault.times = fault.times.saturating_sub(1);
        let kind = fault.kind.clone();
        if fault.times == 0 {
            st.faults.remove(index);
        }
        Some(kind)
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub(crate) fn count_request(&self, path: &str) {
        *self
            .lock()
            .request_counts
            .entry(path.to_owned())
            .or_insert(0) += 1;
    }

    pub(crate) fn request_count(&self, path_prefix: &str) -> u64 {
        self.lock()
            .request_counts
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn request_counts(&self) -> BTreeMap<String, u64> {
        self.lock().request_counts.clone()
    }

    // ---- billing keys and declines ----

    pub(crate) fn add_customer(&self, new: NewCustomer) -> Customer {
        let pg_provider = new
            .pg_provider
            .unwrap_or_else(|| self.config.pg_provider.clone());
        let pay_method = new
            .pay_method
            .unwrap_or_else(|| default_pay_method(&pg_provider).to_owned());
        let mut st = self.lock();
        let now = st.now();
        let inserted = st
            .keys
            .get(&new.customer_uid)
            .map_or(now, |k| k.customer.inserted);
        let customer = Customer {
            customer_uid: new.customer_uid.clone(),
            pg_provider,
            pg_id: new.pg_id.unwrap_or_else(|| self.config.pg_id.clone()),
            customer_id: new.customer_id,
            card_name: new.card_name,
            card_code: new.card_code,
            card_issuer_code: None,
            card_issuer_name: None,
            card_publisher_code: None,
            card_publisher_name: None,
            card_number: new.card_number,
            card_type: new.card_type,
            customer_name: new.customer_name,
            customer_tel: new.customer_tel,
            customer_email: new.customer_email,
            customer_addr: new.customer_addr,
            customer_postcode: new.customer_postcode,
            inserted,
            updated: now,
        };
        st.keys.insert(
            new.customer_uid,
            BillingKey {
                customer: customer.clone(),
                pay_method,
                v2: None,
            },
        );
        customer
    }

    // ---- PortOne V2 billing keys ----

    /// Issue a V2 billing key (`billing-key-` + a random UUID) with what
    /// PortOne keeps about it; returns the key.
    pub(crate) fn issue_v2_key(&self, meta: V2Key, pg_provider: &str) -> String {
        let billing_key = format!(
            "billing-key-{}-{}-{}-{}-{}",
            random_hex(8),
            random_hex(4),
            random_hex(4),
            random_hex(4),
            random_hex(12)
        );
        self.add_customer(NewCustomer {
            customer_uid: billing_key.clone(),
            pg_provider: Some(pg_provider.to_owned()),
            pay_method: Some(v1_pay_method(&meta.method).to_owned()),
            customer_id: meta.customer_id.clone(),
            card_name: Some("시뮬레이터카드".to_owned()),
            card_number: Some("53275000****1234".to_owned()),
            ..NewCustomer::default()
        });
        if let Some(key) = self.lock().keys.get_mut(&billing_key) {
            key.v2 = Some(meta);
        }
        billing_key
    }

    /// A V2 key, issued or deleted.
    pub(crate) fn v2_key(&self, billing_key: &str) -> Option<V2KeyView> {
        let st = self.lock();
        let view = |k: &BillingKey, deleted_at| {
            Some(V2KeyView {
                customer: k.customer.clone(),
                meta: k.v2.clone()?,
                deleted_at,
            })
        };
        match (st.keys.get(billing_key), st.deleted_keys.get(billing_key)) {
            (Some(k), _) => view(k, None),
            (None, Some((k, at))) => view(k, Some(*at)),
            (None, None) => None,
        }
    }

    /// `DELETE /billing-keys/{billingKey}`: V2 keeps the key as `DELETED`.
    pub(crate) fn delete_v2_key(&self, billing_key: &str) -> Result<i64, V2DeleteError> {
        let mut st = self.lock();
        if st.deleted_keys.contains_key(billing_key) {
            return Err(V2DeleteError::AlreadyDeleted);
        }
        match st.keys.get(billing_key) {
            Some(k) if k.v2.is_some() => {}
            _ => return Err(V2DeleteError::NotFound),
        }
        let now = st.now();
        let key = st.keys.remove(billing_key).ok_or(V2DeleteError::NotFound)?;
        st.deleted_keys.insert(billing_key.to_owned(), (key, now));
        Ok(now)
    }

    /// Whether `billing_key` was a V2 key and has been deleted.
    pub(crate) fn v2_key_deleted(&self, billing_key: &str) -> bool {
        self.lock().deleted_keys.contains_key(billing_key)
    }

    /// The V2 view of `paymentId`: its paid (or refunded) record if any,
    /// else its latest attempt, with when it last changed.
    pub(crate) fn v2_payment(&self, payment_id: &str) -> Option<(Payment, i64)> {
        let st = self.lock();
        let i = st.v2_record(payment_id)?;
        let updated_at = st.records.get(i)?.updated_at;
        Some((st.view(i)?, updated_at))
    }

    /// A `BillingKey.Issued` webhook for a V2 key just issued.
    pub(crate) fn key_issued_webhook(&self, billing_key: &str) -> Option<WebhookJob> {
        self.lock().webhook_job(
            None,
            WebhookEvent {
                imp_uid: String::new(),
                merchant_uid: billing_key.to_owned(),
                status: crate::webhook::KEY_ISSUED.to_owned(),
                cancellation_id: None,
            },
            true,
        )
    }

    pub(crate) fn customer(&self, customer_uid: &str) -> Option<Customer> {
        self.lock()
            .keys
            .get(customer_uid)
            .map(|k| k.customer.clone())
    }

    pub(crate) fn customers(&self) -> Vec<Customer> {
        self.lock()
            .keys
            .values()
            .map(|k| k.customer.clone())
            .collect()
    }

    pub(crate) fn delete_customer(&self, customer_uid: &str) -> Option<Customer> {
        self.lock().keys.remove(customer_uid).map(|k| k.customer)
    }

    pub(crate) fn decline_customer(&self, customer_uid: &str, reason: &str) {
        self.lock()
            .declines
            .insert(customer_uid.to_owned(), reason.to_owned());
    }

    pub(crate) fn clear_decline(&self, customer_uid: &str) -> bool {
        self.lock().declines.remove(customer_uid).is_some()
    }

    pub(crate) fn declines(&self) -> BTreeMap<String, String> {
        self.lock().declines.clone()
    }

    // ---- payments ----

    /// `again`: charge the key of `req.customer_uid`, declined when `forced_decline` is set
    /// or the customer is on the decline list.
    pub(crate) fn charge(
        &self,
        req: ChargeRequest,
        forced_decline: Option<String>,
    ) -> ChargeOutcome {
        let mut st = self.lock();
        let now = st.now();
        let Some(key) = st.keys.get(&req.customer_uid).cloned() else {
            return ChargeOutcome::UnknownCustomer;
        };
        let settled = st
            .records_for(&req.merchant_uid)
            .map(|(_, r)| r.payment.status)
            .find(|s| matches!(s, PaymentStatus::Paid | PaymentStatus::Cancelled));
        match settled {
            Some(PaymentStatus::Paid) => return ChargeOutcome::AlreadyPaid,
            Some(_) => return ChargeOutcome::AlreadyCancelled,
            None => {}
        }
        let decline = forced_decline.or_else(|| st.declines.get(&req.customer_uid).cloned());
        let imp_uid = st.new_imp_uid("imps_");
        let customer = &key.customer;
        let is_card = key.pay_method == "card";
        let paid = decline.is_none();
        let receipt = paid.then(|| receipt_url(&imp_uid));
        let payment = Payment {
            imp_uid,
            merchant_uid: req.merchant_uid,
            pay_method: Some(key.pay_method.clone()),
            channel: Some("api".to_owned()),
            pg_provider: Some(customer.pg_provider.clone()),
            emb_pg_provider: None,
            pg_tid: Some(format!("{}_{}", customer.pg_provider, random_hex(20))),
            pg_id: Some(customer.pg_id.clone()),
            escrow: false,
            apply_num: (is_card && paid).then(|| random_digits(8)),
            bank_code: None,
            bank_name: None,
            card_code: customer.card_code.clone().filter(|_| is_card),
            card_name: customer.card_name.clone().filter(|_| is_card),
            card_issuer_code: None,
            card_issuer_name: None,
            card_publisher_code: None,
            card_publisher_name: None,
            card_quota: req.card_quota,
            card_number: customer.card_number.clone().filter(|_| is_card),
            card_type: customer.card_type.filter(|_| is_card),
            vbank_code: None,
            vbank_name: None,
            vbank_num: None,
            vbank_holder: None,
            vbank_date: 0,
            vbank_issued_at: 0,
            name: req.name,
            amount: req.amount,
            cancel_amount: 0,
            currency: req.currency,
            buyer_name: req.buyer_name,
            buyer_email: req.buyer_email,
            buyer_tel: req.buyer_tel,
            buyer_addr: req.buyer_addr,
            buyer_postcode: req.buyer_postcode,
            custom_data: req.custom_data,
            user_agent: Some(API_USER_AGENT.to_owned()),
            status: if paid {
                PaymentStatus::Paid
            } else {
                PaymentStatus::Failed
            },
            started_at: now,
            paid_at: if paid { now } else { 0 },
            failed_at: if paid { 0 } else { now },
            cancelled_at: 0,
            fail_reason: decline,
            cancel_reason: None,
            // The PG's card slip; `.invalid` never resolves, so nothing follows it off this machine.
            receipt_url: receipt,
            cancel_history: Vec::new(),
            cancel_receipt_urls: Vec::new(),
            cash_receipt_issued: false,
            customer_uid: Some(req.customer_uid),
            customer_uid_usage: Some("payment".to_owned()),
            promotion: None,
            tax_free: req.tax_free,
            vat: crate::model::pg_vat(req.amount - req.tax_free),
            cancelled_tax_free: 0,
        };
        // Failed payments trigger no webhook (docs §7).
        // V2 sends Transaction.Failed as well.
        let webhook = if paid || req.v2 {
            st.webhook_job(
                req.notice_url.as_deref(),
                WebhookEvent {
                    imp_uid: payment.imp_uid.clone(),
                    merchant_uid: payment.merchant_uid.clone(),
                    status: payment.status.as_str().to_owned(),
                    cancellation_id: None,
                },
                req.v2,
            )
        } else {
            None
        };
        st.push_record(Record {
            payment: payment.clone(),
            notice_url: req.notice_url,
            updated_at: now,
            v2: req.v2,
        });
        ChargeOutcome::Attempted {
            payment: Box::new(payment),
            webhook,
        }
    }

    /// Payment window: issue (or replace) the key of `req.customer_uid` and record the
    /// issuance as a `paid` payment, or record a `failed` one and leave keys untouched.
    pub(crate) fn issue_in_window(&self, req: IssueRequest, failure: Option<String>) -> Payment {
        let ok = failure.is_none();
        if ok {
            self.add_customer(NewCustomer {
                customer_uid: req.customer_uid.clone(),
                pg_provider: Some(req.pg_provider.clone()),
                pg_id: Some(req.pg_id.clone()),
                pay_method: Some(req.pay_method.clone()),
                customer_name: req.buyer_name.clone(),
                customer_tel: req.buyer_tel.clone(),
                customer_email: req.buyer_email.clone(),
                customer_addr: req.buyer_addr.clone(),
                customer_postcode: req.buyer_postcode.clone(),
                ..NewCustomer::default()
            });
        }
        let mut st = self.lock();
        let now = st.now();
        let payment = Payment {
            imp_uid: st.new_imp_uid("imp_"),
            merchant_uid: req.merchant_uid,
            pay_method: Some(req.pay_method),
            channel: Some("pc".to_owned()),
            pg_provider: Some(req.pg_provider.clone()),
            emb_pg_provider: None,
            pg_tid: Some(format!("{}_{}", req.pg_provider, random_hex(20))),
            pg_id: Some(req.pg_id),
            escrow: false,
            apply_num: None,
            bank_code: None,
            bank_name: None,
            card_code: None,
            card_name: None,
            card_issuer_code: None,
            card_issuer_name: None,
            card_publisher_code: None,
            card_publisher_name: None,
            card_quota: 0,
            card_number: None,
            card_type: None,
            vbank_code: None,
            vbank_name: None,
            vbank_num: None,
            vbank_holder: None,
            vbank_date: 0,
            vbank_issued_at: 0,
            name: req.name,
            amount: req.amount,
            cancel_amount: 0,
            currency: "KRW".to_owned(),
            buyer_name: req.buyer_name,
            buyer_email: req.buyer_email,
            buyer_tel: req.buyer_tel,
            buyer_addr: req.buyer_addr,
            buyer_postcode: req.buyer_postcode,
            custom_data: req.custom_data,
            user_agent: req.user_agent,
            status: if ok {
                PaymentStatus::Paid
            } else {
                PaymentStatus::Failed
            },
            started_at: now,
            paid_at: if ok { now } else { 0 },
            failed_at: if ok { 0 } else { now },
            cancelled_at: 0,
            fail_reason: failure,
            cancel_reason: None,
            receipt_url: None,
            cancel_history: Vec::new(),
            cancel_receipt_urls: Vec::new(),
            cash_receipt_issued: false,
            customer_uid: Some(req.customer_uid),
            customer_uid_usage: Some("issue".to_owned()),
            promotion: None,
            tax_free: 0,
            vat: crate::model::pg_vat(req.amount),
            cancelled_tax_free: 0,
        };
        st.push_record(Record {
            payment: payment.clone(),
            notice_url: req.notice_url,
            updated_at: now,
            v2: false,
        });
        payment
    }

    pub(crate) fn payment(&self, imp_uid: &str) -> Option<Payment> {
        let st = self.lock();
        st.record_of(imp_uid).and_then(|i| st.view(i))
    }

    /// `GET /payments/find/{merchant_uid}[/{status}]`: the first record by `sorting`.
    pub(crate) fn find_payment(
        &self,
        merchant_uid: &str,
        status: Option<PaymentStatus>,
        sorting: Sorting,
    ) -> Option<Payment> {
        let st = self.lock();
        let key = |r: &Record| match sorting.key {
            SortKey::Started => r.payment.started_at,
            SortKey::Paid => r.payment.paid_at,
            SortKey::Updated => r.updated_at,
        };
        // Records are in insertion order: among equal keys the later one is the newer.
        let mut candidates: Vec<(usize, &Record)> = st
            .records_for(merchant_uid)
            .filter(|(_, r)| status.is_none_or(|s| r.payment.status == s))
            .collect();
        candidates.sort_by_key(|&(i, r)| (key(r), i));
        let chosen = if sorting.descending {
            candidates.last()
        } else {
            candidates.first()
        };
        chosen.and_then(|&(i, _)| st.view(i))
    }

    /// `POST /payments/cancel`.
    pub(crate) fn cancel(&self, req: CancelRequest) -> CancelOutcome {
        let mut st = self.lock();
        let now = st.now();
        let index = match (&req.imp_uid, &req.merchant_uid) {
            (Some(imp_uid), _) => st.record_of(imp_uid),
            (None, Some(merchant_uid)) => {
                let latest = |status: PaymentStatus| {
                    st.records_for(merchant_uid)
                        .filter(|(_, r)| r.payment.status == status)
                        .map(|(i, _)| i)
                        .last()
                };
                latest(PaymentStatus::Paid).or_else(|| latest(PaymentStatus::Cancelled))
            }
            (None, None) => None,
        };
        let Some(index) = index else {
            return CancelOutcome::NotFound;
        };
        let Some(record) = st.records.get(index) else {
            return CancelOutcome::NotFound;
        };
        let payment = &record.payment;
        match payment.status {
            PaymentStatus::Paid => {}
            PaymentStatus::Cancelled => return CancelOutcome::AlreadyCancelled,
            other => return CancelOutcome::NotPaid(other),
        }
        let refundable = payment.refundable();
        if let Some(checksum) = req.checksum
            && checksum != refundable
        {
            return CancelOutcome::ChecksumMismatch {
                checksum,
                refundable,
            };
        }
        if refundable <= 0 {
            return CancelOutcome::NothingRefundable;
        }
        let requested = req.amount.filter(|&a| a > 0).unwrap_or(refundable);
        if requested > refundable {
            return CancelOutcome::ExceedsRefundable {
                requested,
                refundable,
            };
        }
        // The tax-free part: as asked (default 0), never more than is left
        // of it or than the cancel, and never so little that what is left
        // tax-free would pass what is left to refund.
        let tax_free_left = payment.refundable_tax_free();
        // A cancel of all that is left takes all that is left tax-free.
        let tax_free = match req.tax_free {
            None if requested == refundable => tax_free_left,
            asked => asked.unwrap_or(0),
        };
        if tax_free < 0
            || tax_free > tax_free_left
            || tax_free > requested
            || tax_free_left - tax_free > refundable - requested
        {
            return CancelOutcome::TaxFreeMismatch {
                requested: tax_free,
                refundable: tax_free_left,
            };
        }
        let cancellation_id = format!("sim_cncl_{}", random_hex(16));
        let notice_url = record.notice_url.clone();
        let v2 = record.v2;
        let mut payment = payment.clone();
        payment.cancel_amount += requested;
        payment.cancelled_tax_free += tax_free;
        payment.cancel_reason.clone_from(&req.reason);
        payment.cancel_history.push(CancelHistory {
            pg_tid: payment.pg_tid.clone().unwrap_or_default(),
            amount: requested,
            cancelled_at: now,
            reason: req.reason.unwrap_or_default(),
            cancellation_id: cancellation_id.clone(),
            receipt_url: None,
            tax_free,
        });
        if payment.refundable() == 0 {
            payment.status = PaymentStatus::Cancelled;
            payment.cancelled_at = now;
        }
        let webhook = st.webhook_job(
            notice_url.as_deref(),
            WebhookEvent {
                imp_uid: payment.imp_uid.clone(),
                merchant_uid: payment.merchant_uid.clone(),
                status: payment.status.as_str().to_owned(),
                cancellation_id: Some(cancellation_id),
            },
            v2,
        );
        if let Some(record) = st.records.get_mut(index) {
            record.payment = payment.clone();
            record.updated_at = now;
        }
        let payment = st.view(index).unwrap_or(payment);
        CancelOutcome::Cancelled {
            payment: Box::new(payment),
            webhook,
        }
    }

    pub(crate) fn ledger(&self) -> Vec<Payment> {
        let st = self.lock();
        (0..st.records.len()).filter_map(|i| st.view(i)).collect()
    }

    pub(crate) fn paid_count(&self, merchant_uid: &str) -> usize {
        self.lock()
            .records_for(merchant_uid)
            .filter(|(_, r)| r.payment.status == PaymentStatus::Paid)
            .count()
    }

    // ---- cash receipts ----

    fn receipt_index(st: &SimState, target: ReceiptTarget<'_>) -> Option<usize> {
        match target {
            ReceiptTarget::ImpUid(imp_uid) => st.record_of(imp_uid),
            ReceiptTarget::PaymentId(payment_id) => st.v2_record(payment_id),
        }
    }

    /// Issue a cash receipt for the payment `target` names, as the mode says.
    pub(crate) fn issue_receipt(
        &self,
        target: ReceiptTarget<'_>,
        req: ReceiptRequest,
    ) -> IssueOutcome {
        let mut st = self.lock();
        let now = st.now();
        let Some(payment) = Self::receipt_index(&st, target)
            .and_then(|i| st.records.get(i))
            .map(|r| r.payment.clone())
        else {
            return IssueOutcome::UnknownPayment;
        };
        let existing = st.receipts_of(&payment.imp_uid);
        if existing
            .iter()
            .any(|r| r.status == CashReceiptStatus::InProgress)
        {
            return IssueOutcome::InProgress;
        }
        if payment.status != PaymentStatus::Paid {
            return IssueOutcome::NotPaid(payment.status);
        }
        if !is_cash_pay_method(payment.pay_method.as_deref()) {
            return IssueOutcome::NotCash(payment.pay_method);
        }
        if existing
            .iter()
            .any(|r| r.status == CashReceiptStatus::Issued)
        {
            return IssueOutcome::AlreadyIssued;
        }
        // A partly refunded payment is issued for what is left (V1 docs).
        let amount = payment.refundable();
        if let Some(total) = req.total
            && total != amount
        {
            return IssueOutcome::AmountMismatch {
                total,
                remaining: amount,
            };
        }
        if !(0..=amount).contains(&req.tax_free) {
            return IssueOutcome::TaxFreeExceeds {
                tax_free: req.tax_free,
                amount,
            };
        }
        let taxable = amount - req.tax_free;
        let vat = req.vat.unwrap_or_else(|| pg_vat(taxable));
        if !(0..=taxable).contains(&vat) {
            return IssueOutcome::VatExceeds { vat, taxable };
        }
        let mut record = CashReceiptRecord {
            imp_uid: payment.imp_uid.clone(),
            payment_id: payment.merchant_uid.clone(),
            status: CashReceiptStatus::Failed,
            kind: req.kind,
            identifier: req.identifier,
            identifier_type: req.identifier_type,
            amount,
            tax_free: req.tax_free,
            vat,
            order_name: req.order_name.or(payment.name),
            apply_num: None,
            receipt_tid: None,
            receipt_url: None,
            requested_at: now,
            issued_at: None,
            cancelled_at: None,
            v2: req.v2,
        };
        let (status, issued_at, mode) = match st.receipt_mode {
            ReceiptMode::Fail { times } if times > 0 => {
                let left = times - 1;
                let mode = if left == 0 {
                    ReceiptMode::Normal
                } else {
                    ReceiptMode::Fail { times: left }
                };
                (CashReceiptStatus::Failed, None, mode)
            }
            ReceiptMode::InProgress { secs } => {
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                (
                    CashReceiptStatus::InProgress,
                    Some(now.saturating_add(secs)),
                    ReceiptMode::Normal,
                )
            }
            ReceiptMode::Normal | ReceiptMode::Fail { .. } => {
                (CashReceiptStatus::Issued, Some(now), ReceiptMode::Normal)
            }
        };
        st.receipt_mode = mode;
        record.status = status;
        record.issued_at = issued_at;
        if status != CashReceiptStatus::Failed {
            let apply_num = st.new_apply_num();
            let pg = payment.pg_provider.as_deref().unwrap_or("pg");
            record.receipt_tid = Some(format!("{pg}_cr_{}", random_hex(16)));
            record.receipt_url = Some(cash_receipt_url(&apply_num));
            record.apply_num = Some(apply_num);
        }
        st.receipts
            .entry(payment.imp_uid)
            .or_default()
            .push(record.clone());
        match status {
            CashReceiptStatus::Failed => IssueOutcome::Failed,
            CashReceiptStatus::InProgress => IssueOutcome::InProgress,
            CashReceiptStatus::Issued | CashReceiptStatus::Cancelled => {
                IssueOutcome::Issued(Box::new(record))
            }
        }
    }

    /// The newest receipt shown for the payment (issued or cancelled; with
    /// `include_failed`, a failed issuance too).
    pub(crate) fn receipt(&self, target: ReceiptTarget<'_>, include_failed: bool) -> ReceiptLookup {
        let st = self.lock();
        let Some(payment) = Self::receipt_index(&st, target).and_then(|i| st.records.get(i)) else {
            return ReceiptLookup::UnknownPayment;
        };
        st.receipts_of(&payment.payment.imp_uid)
            .into_iter()
            .rev()
            .find(|r| r.visible() || (include_failed && r.status == CashReceiptStatus::Failed))
            .map_or(ReceiptLookup::None, |r| ReceiptLookup::Found(Box::new(r)))
    }

    /// Cancel the payment's live receipt.
    pub(crate) fn cancel_receipt(&self, target: ReceiptTarget<'_>) -> ReceiptCancelOutcome {
        let mut st = self.lock();
        let now = st.now();
        let Some(imp_uid) = Self::receipt_index(&st, target)
            .and_then(|i| st.records.get(i))
            .map(|r| r.payment.imp_uid.clone())
        else {
            return ReceiptCancelOutcome::UnknownPayment;
        };
        let current = st.receipts_of(&imp_uid);
        let Some(live) = st.live_receipt(&imp_uid) else {
            return if current
                .iter()
                .any(|r| r.visible() || r.status == CashReceiptStatus::Failed)
            {
                ReceiptCancelOutcome::NotIssued
            } else {
                ReceiptCancelOutcome::NotFound
            };
        };
        let Some(stored) = st
            .receipts
            .get_mut(&imp_uid)
            .and_then(|rs| rs.get_mut(live))
        else {
            return ReceiptCancelOutcome::NotFound;
        };
        stored.status = CashReceiptStatus::Cancelled;
        stored.cancelled_at = Some(now);
        ReceiptCancelOutcome::Cancelled(Box::new(stored.clone()))
    }

    /// The cash receipts of a payment, by `imp_uid` or else by
    /// `merchant_uid` (V2 `paymentId`), oldest first, failed ones included.
    pub(crate) fn cash_receipts(&self, id: &str) -> Vec<CashReceiptRecord> {
        let st = self.lock();
        if st.record_of(id).is_some() {
            return st.receipts_of(id);
        }
        st.records_for(id)
            .flat_map(|(_, r)| st.receipts_of(&r.payment.imp_uid))
            .collect()
    }

    /// Every cash receipt, payment by payment in ledger order.
    pub(crate) fn all_cash_receipts(&self) -> Vec<CashReceiptRecord> {
        let st = self.lock();
        st.records
            .iter()
            .flat_map(|r| st.receipts_of(&r.payment.imp_uid))
            .collect()
    }

    pub(crate) fn receipt_mode(&self) -> ReceiptMode {
        self.lock().receipt_mode
    }

    pub(crate) fn set_receipt_mode(&self, mode: ReceiptMode) {
        self.lock().receipt_mode = mode;
    }

    // ---- webhooks ----

    pub(crate) fn webhook_settings(&self) -> WebhookSettings {
        self.lock().webhook.clone()
    }

    pub(crate) fn set_webhook_settings(&self, settings: WebhookSettings) {
        self.lock().webhook = settings;
    }

    /// A webhook for the payment's current status (the manual "send a webhook" control).
    pub(crate) fn webhook_for(&self, imp_uid: &str, url: Option<&str>) -> Option<WebhookJob> {
        let st = self.lock();
        let record = st.records.get(st.record_of(imp_uid)?)?;
        let cancellation_id = record
            .payment
            .cancel_history
            .last()
            .filter(|_| record.payment.status == PaymentStatus::Cancelled)
            .map(|c| c.cancellation_id.clone());
        st.webhook_job(
            url.or(record.notice_url.as_deref()),
            WebhookEvent {
                imp_uid: record.payment.imp_uid.clone(),
                merchant_uid: record.payment.merchant_uid.clone(),
                status: record.payment.status.as_str().to_owned(),
                cancellation_id,
            },
            record.v2,
        )
    }

    pub(crate) fn record_webhook(&self, delivery: WebhookDelivery) {
        self.lock().webhooks_sent.push(delivery);
        self.webhook_recorded.notify_waiters();
    }

    pub(crate) fn webhooks_sent(&self) -> Vec<WebhookDelivery> {
        self.lock().webhooks_sent.clone()
    }

    /// Wait until at least `count` deliveries are recorded or `timeout` passes; returns them all.
    pub(crate) async fn wait_for_webhooks(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Vec<WebhookDelivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.webhook_recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let sent = self.webhooks_sent();
            if sent.len() >= count {
                return sent;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.webhooks_sent();
            }
        }
    }

    /// Back to the state right after start (configuration kept).
    pub(crate) fn reset(&self) {
        *self.lock() = SimState::new(&self.config);
    }
}

/// The receipt link the simulated PG gives a paid payment (V1 `receipt_url`,
/// V2 `receiptUrl`): a real PG's points at its receipt page; this one is on
/// a reserved domain that never resolves.
pub(crate) fn receipt_url(imp_uid: &str) -> String {
    format!("https://receipts.iamport-sim.invalid/{imp_uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Sim {
        match Sim::new(SimConfig::default()) {
            Ok(sim) => sim,
            Err(err) => panic!("client: {err}"),
        }
    }

    fn grant(sim: &Sim) -> TokenGrant {
        match sim.issue_token("sim_imp_key", "sim_imp_secret") {
            Some(grant) => grant,
            None => panic!("default credentials refused"),
        }
    }

    #[test]
    fn token_is_reused_then_extended_then_replaced() {
        let sim = sim();
        sim.set_clock(1_700_000_000);
        let first = grant(&sim);
        assert_eq!(first.expired_at - first.now, 1800);
        sim.advance_clock(1000);
        let again = grant(&sim);
        assert_eq!(again.access_token, first.access_token);
        assert_eq!(again.expired_at, first.expired_at);
        sim.advance_clock(760); // 40 s left
        let extended = grant(&sim);
        assert_eq!(extended.access_token, first.access_token);
        assert_eq!(extended.expired_at, first.expired_at + 300);
        sim.advance_clock(340); // expired
        assert!(!sim.token_valid(&first.access_token));
        let fresh = grant(&sim);
        assert_ne!(fresh.access_token, first.access_token);
        assert_eq!(fresh.expired_at - fresh.now, 1800);
        assert!(sim.token_valid(&fresh.access_token));
        assert!(sim.issue_token("sim_imp_key", "wrong").is_none());
    }

    #[test]
    fn faults_are_consumed_in_order_and_counted_down() {
        let sim = sim();
        sim.inject(Fault::new(FaultKind::Http500).times(2));
        sim.inject(Fault::new(FaultKind::Corrupt));
        assert_eq!(
            sim.take_fault("/payments/x", None),
            Some(FaultKind::Http500)
        );
        assert_eq!(sim.take_fault("/users/getToken", None), None);
        assert_eq!(
            sim.take_fault("/payments/x", None),
            Some(FaultKind::Http500)
        );
        assert_eq!(
            sim.take_fault("/payments/x", None),
            Some(FaultKind::Corrupt)
        );
        assert_eq!(sim.take_fault("/payments/x", None), None);
    }

    #[test]
    fn sorting_parses_the_documented_values() {
        assert_eq!("-started".parse::<Sorting>(), Ok(Sorting::default()));
        assert!(matches!(
            "paid".parse::<Sorting>(),
            Ok(Sorting {
                key: SortKey::Paid,
                descending: false
            })
        ));
        assert!("-amount".parse::<Sorting>().is_err());
    }
}
