//! An in-process model of the PG's billing-key API, as the simulation's
//! gateway sees it: billing keys, a ledger of payments, refunds, and the
//! rules that matter for money. Written from the V1 and V2 documentation
//! like the HTTP simulator, not from the client's types, and no kinder than
//! the PGs (design invariant I9):
//!
//! - one paid payment per `merchant_uid`; a second request while one is
//!   still processing is refused (V1 code 1 "in progress", V2 409);
//! - a charge may stay **pending** (V1 `ready`, V2 `PAY_PENDING`) and become
//!   paid or failed later;
//! - lookups **lag**: a fresh payment is invisible (404) for a while;
//! - refunds, full and partial, checked against the caller's `checksum`;
//!   V2 may leave `paidAt` out of a `CANCELLED` record;
//! - refusals with their documented codes and types, including one that
//!   hits every charge (a PG setting broken at the merchant).
//!
//! The model answers in each API's **wire format** (`v1_*`, `v2_*`): JSON
//! bodies with their HTTP statuses, read by the adapters' own `wire`
//! functions, so the classification under test is the production one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// What a payment was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    /// The payment window's billing-key issuance (`r…` merchant uids).
    Issue,
    /// A charge of a billing key.
    Charge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Still processing at the PG (V1 `ready`, V2 `PAY_PENDING`).
    Pending,
    Paid,
    Failed,
    /// Refunded in full after it was paid.
    Cancelled,
}

#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub status: Status,
    /// When money was taken (kept after a refund).
    pub paid_at: Option<DateTime<Utc>>,
    pub fail_reason: Option<String>,
    pub usage: Usage,
    /// Refunded so far.
    pub cancelled: i64,
    /// Lookups find it from this instant on (the PG's index lags).
    pub visible_at: DateTime<Utc>,
    /// V2: a `CANCELLED` record without `paidAt` (the spec allows it).
    pub hide_paid_at: bool,
    /// The tax-free part sent with the charge, and the VAT the PG booked on
    /// the rest (a tenth of the supply, rounded down: V2 reports both).
    pub tax_free: i64,
    pub vat: i64,
    /// Tax-free refunded so far.
    pub cancelled_tax_free: i64,
    /// Paid from an account (V1 `trans`; V2 an easy pay's transfer):
    /// a cash receipt is due.
    pub cash: bool,
}

impl Payment {
    /// Money was taken (whether or not it was refunded since).
    pub fn took_money(&self) -> bool {
        self.paid_at.is_some() && self.amount > 0
    }

    /// Money taken and not refunded.
    pub fn kept(&self) -> i64 {
        if self.paid_at.is_some() {
            self.amount - self.cancelled
        } else {
            0
        }
    }
}

/// What the PG does with one charge request (drawn by the world).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Pay,
    /// Declined with this message (the PG's `fail_reason` / `pgMessage`).
    Decline(&'static str),
    /// Pending first; the world lands it as paid or failed later.
    Pend,
}

/// Why the PG refused a charge without recording a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No such billing key (never issued, or deleted).
    UnknownKey,
    /// The `merchant_uid` is paid already.
    AlreadyPaid,
    /// Another request with the `merchant_uid` is still processing.
    InProgress,
    /// The merchant's PG setting is broken: every charge is refused alike.
    Setting,
    /// V2: this key may not be charged by this store (403 `FORBIDDEN`).
    Forbidden,
}

/// What a charge request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charged {
    /// A payment was recorded (paid, failed or pending): its index.
    Recorded(usize),
    Refused(Refusal),
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub deleted: bool,
    pub issue_id: Option<String>,
    pub customer_id: Option<String>,
    pub inserted: DateTime<Utc>,
}

/// One refund the PG carried out.
#[derive(Debug, Clone)]
pub(crate) struct RefundDone {
    /// The invocation that asked for it (the world maps it to a request).
    pub by: u32,
    /// Whole KRW moved back.
    pub amount: i64,
    /// The payment's index.
    pub payment: usize,
}

/// Why a refund was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundRefusal {
    NotFound,
    NotPaid,
    AlreadyCancelled,
    /// `checksum` is not what is left to refund.
    Checksum,
    TooMuch,
    /// The tax-free part asked for does not fit what is left of it (more
    /// than is left, more than the refund, or so little that the taxable
    /// rest could not cover what stays tax-free).
    TaxFree,
    /// The card company or bank refused it (its cancel period passed, the
    /// account cannot take it back): nothing moved.
    Provider,
}

#[derive(Debug, Default)]
pub(crate) struct Model {
    keys: BTreeMap<String, Key>,
    pub payments: Vec<Payment>,
    next_imp: u64,
    /// Requests for a `merchant_uid` the PG is still processing (sent, not
    /// yet landed).
    pub inflight: BTreeMap<String, u32>,
    /// Every key ever issued (deleted ones too).
    issued: BTreeSet<String>,
    pub refunds: Vec<RefundDone>,
    /// Cash receipts issued, in order (cancelled ones kept).
    pub receipts: Vec<CashReceipt>,
}

/// A cash receipt at the PG (decision 74).
#[derive(Debug, Clone)]
pub(crate) struct CashReceipt {
    /// The payment's index.
    pub payment: usize,
    pub amount: i64,
    pub tax_free: i64,
    pub issue_number: String,
    pub issued_at: DateTime<Utc>,
    /// Lookups see it from then on: an issuance still in progress is not
    /// shown, but is live (a second one is refused).
    pub visible_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// Why the PG refused a cash-receipt request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiptRefusal {
    /// No such payment, not paid, fully refunded, not a cash payment, or
    /// (V2) an amount that is not what is left of it.
    Invalid,
    /// A receipt is live already (issued or in progress).
    AlreadyIssued,
    /// Cancel: none is live.
    NotIssued,
}

pub(crate) const MSG_UNKNOWN_CUSTOMER: &str = "등록되지 않은 구매자입니다.";
pub(crate) const MSG_ALREADY_PAID: &str = "이미 결제 완료된 주문번호(merchant_uid)입니다.";
pub(crate) const MSG_IN_PROGRESS: &str = "동일한 주문번호로 결제가 진행 중입니다.";
pub(crate) const MSG_SETTING: &str = "비인증결제모듈 사용정보를 찾을 수 없습니다.";
pub(crate) const MSG_NOT_FOUND: &str = "존재하지 않는 결제정보입니다.";
pub(crate) const MSG_DECLINED: &str = "잔액부족";
/// A refund whose tax-free part does not fit (the engine's split is wrong).
pub(crate) const MSG_TAX_FREE: &str = "면세 취소금액이 취소 가능한 면세금액과 맞지 않습니다.";
/// Declines a card that works may meet another day, as Korean PGs word
/// them (the last one in no class the engine knows: retried as `unknown`).
pub(crate) const SOFT_DECLINES: [&str; 4] = [
    MSG_DECLINED,
    "[F113] 1회 한도초과",
    "카드사 시스템 점검 중입니다",
    "승인 거절(카드사 문의)",
];
/// Declines of a dead card: every charge of it meets one, until a new card.
pub(crate) const HARD_DECLINES: [&str; 5] = [
    "[8301] 분실카드입니다",
    "유효기간 경과 카드",
    "해지된 카드입니다",
    "유효하지 않은 카드입니다",
    "거래정지 카드",
];

impl Model {
    fn new_imp_uid(&mut self, prefix: &str) -> String {
        self.next_imp += 1;
        format!("{prefix}{:012}", self.next_imp)
    }

    /// i'mport's payment window: issues a billing key under our
    /// `customer_uid` and records the issuance payment (`amount` may be 0,
    /// the plan's, or anything the page asked for). Returns its `imp_uid`.
    pub fn issue(
        &mut self,
        customer_uid: &str,
        merchant_uid: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> String {
        self.issued.insert(customer_uid.to_owned());
        self.keys.insert(
            customer_uid.to_owned(),
            Key {
                deleted: false,
                issue_id: None,
                customer_id: None,
                inserted: now,
            },
        );
        let imp_uid = self.new_imp_uid("imp_");
        self.payments.push(Payment {
            imp_uid: imp_uid.clone(),
            merchant_uid: merchant_uid.to_owned(),
            customer_uid: customer_uid.to_owned(),
            amount,
            status: Status::Paid,
            paid_at: Some(now),
            fail_reason: None,
            usage: Usage::Issue,
            cancelled: 0,
            visible_at: now,
            hide_paid_at: false,
            tax_free: 0,
            vat: amount / 11,
            cancelled_tax_free: 0,
            cash: cash_key(customer_uid),
        });
        imp_uid
    }

    /// PortOne V2's window: issues `billing_key` for the registration
    /// `issue_id` and our `customer_id`; no payment is made.
    pub fn issue_v2(
        &mut self,
        billing_key: &str,
        issue_id: &str,
        customer_id: &str,
        now: DateTime<Utc>,
    ) {
        self.issued.insert(billing_key.to_owned());
        self.keys.insert(
            billing_key.to_owned(),
            Key {
                deleted: false,
                issue_id: Some(issue_id.to_owned()),
                customer_id: Some(customer_id.to_owned()),
                inserted: now,
            },
        );
    }

    fn live_key(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(|k| !k.deleted)
    }

    /// A charge of `customer_uid`'s key under `merchant_uid`, reaching the
    /// PG now. `lag`: how long lookups take to see the new payment.
    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &mut self,
        customer_uid: &str,
        merchant_uid: &str,
        amount: i64,
        tax_free: i64,
        decision: Decision,
        setting_broken: bool,
        now: DateTime<Utc>,
        lag: chrono::Duration,
        hide_paid_at: bool,
    ) -> Charged {
        if setting_broken {
            return Charged::Refused(Refusal::Setting);
        }
        if !self.live_key(customer_uid) {
            return Charged::Refused(Refusal::UnknownKey);
        }
        let of_uid = || {
            self.payments
                .iter()
                .filter(|p| p.merchant_uid == merchant_uid)
        };
        if of_uid().any(|p| p.paid_at.is_some()) {
            return Charged::Refused(Refusal::AlreadyPaid);
        }
        if of_uid().any(|p| p.status == Status::Pending) {
            return Charged::Refused(Refusal::InProgress);
        }
        let imp_uid = self.new_imp_uid("imps_");
        let (status, paid_at, fail_reason) = match decision {
            Decision::Pay => (Status::Paid, Some(now), None),
            Decision::Decline(message) => (Status::Failed, None, Some(message.to_owned())),
            Decision::Pend => (Status::Pending, None, None),
        };
        self.payments.push(Payment {
            imp_uid,
            merchant_uid: merchant_uid.to_owned(),
            customer_uid: customer_uid.to_owned(),
            amount,
            status,
            paid_at,
            fail_reason,
            usage: Usage::Charge,
            cancelled: 0,
            visible_at: now + lag,
            hide_paid_at,
            tax_free,
            vat: (amount - tax_free) / 11,
            cancelled_tax_free: 0,
            cash: cash_key(customer_uid),
        });
        Charged::Recorded(self.payments.len() - 1)
    }

    /// A pending payment ends, paid or failed.
    pub fn land_pending(&mut self, index: usize, pay: bool, now: DateTime<Utc>) -> bool {
        let Some(p) = self.payments.get_mut(index) else {
            return false;
        };
        if p.status != Status::Pending {
            return false;
        }
        if pay {
            p.status = Status::Paid;
            p.paid_at = Some(now);
        } else {
            p.status = Status::Failed;
            p.fail_reason = Some(MSG_DECLINED.to_owned());
        }
        true
    }

    /// What lookups see of `merchant_uid` now: its paid payment if there is
    /// one, else its newest.
    pub fn find(&self, merchant_uid: &str, now: DateTime<Utc>) -> Option<&Payment> {
        let visible = || {
            self.payments
                .iter()
                .filter(|p| p.merchant_uid == merchant_uid && p.visible_at <= now)
        };
        visible()
            .find(|p| p.paid_at.is_some())
            .or_else(|| visible().next_back())
    }

    pub fn by_imp(&self, imp_uid: &str, now: DateTime<Utc>) -> Option<&Payment> {
        self.payments
            .iter()
            .find(|p| p.imp_uid == imp_uid && p.visible_at <= now)
    }

    /// A refund of `imp_uid` (V1) or of `merchant_uid`'s paid payment (V2).
    pub fn refund(
        &mut self,
        imp_uid: Option<&str>,
        merchant_uid: &str,
        amount: Option<i64>,
        checksum: Option<i64>,
        tax_free: Option<i64>,
        by: u32,
    ) -> Result<usize, RefundRefusal> {
        let index = self
            .payments
            .iter()
            .position(|p| match imp_uid {
                Some(i) => p.imp_uid == i,
                None => p.merchant_uid == merchant_uid && p.paid_at.is_some(),
            })
            .ok_or(RefundRefusal::NotFound)?;
        let p = &mut self.payments[index];
        if p.paid_at.is_none() {
            return Err(RefundRefusal::NotPaid);
        }
        let left = p.amount - p.cancelled;
        if left == 0 {
            return Err(RefundRefusal::AlreadyCancelled);
        }
        if checksum.is_some_and(|c| c != left) {
            return Err(RefundRefusal::Checksum);
        }
        let amount = amount.filter(|a| *a > 0).unwrap_or(left);
        if amount > left {
            return Err(RefundRefusal::TooMuch);
        }
        let free_left = p.tax_free - p.cancelled_tax_free;
        let free = match tax_free {
            // A refund of all that is left takes all that is left tax-free.
            None if amount == left => free_left,
            asked => asked.unwrap_or(0),
        };
        if free < 0 || free > free_left || free > amount || free_left - free > left - amount {
            return Err(RefundRefusal::TaxFree);
        }
        p.cancelled_tax_free += free;
        p.cancelled += amount;
        if p.cancelled == p.amount {
            p.status = Status::Cancelled;
        }
        self.refunds.push(RefundDone {
            by,
            amount,
            payment: index,
        });
        Ok(index)
    }

    /// The payment a cash-receipt request names (V1 by `imp_uid`, V2 by
    /// `paymentId`).
    fn receipt_payment(&self, imp_uid: Option<&str>, merchant_uid: &str) -> Option<usize> {
        self.payments.iter().position(|p| match imp_uid {
            Some(i) => p.imp_uid == i,
            None => p.merchant_uid == merchant_uid && p.paid_at.is_some(),
        })
    }

    /// The payment's live receipt (issued, in progress or not, not cancelled).
    pub fn live_receipt(&self, payment: usize) -> Option<usize> {
        self.receipts
            .iter()
            .rposition(|r| r.payment == payment && r.cancelled_at.is_none())
    }

    /// Issues a cash receipt for what is left of a cash payment. V1 issues
    /// for that itself (`amount` is `None`); V2 is told and refuses another
    /// amount. Shown from `visible_at`.
    pub fn issue_receipt(
        &mut self,
        imp_uid: Option<&str>,
        merchant_uid: &str,
        amount: Option<i64>,
        tax_free: i64,
        now: DateTime<Utc>,
        visible_at: DateTime<Utc>,
    ) -> Result<usize, ReceiptRefusal> {
        let i = self
            .receipt_payment(imp_uid, merchant_uid)
            .ok_or(ReceiptRefusal::Invalid)?;
        let p = &self.payments[i];
        let left = p.kept();
        if p.status != Status::Paid || left <= 0 || !cash_payment(p) {
            return Err(ReceiptRefusal::Invalid);
        }
        if amount.is_some_and(|a| a != left) || tax_free > left {
            return Err(ReceiptRefusal::Invalid);
        }
        if self.live_receipt(i).is_some() {
            return Err(ReceiptRefusal::AlreadyIssued);
        }
        let n = self.receipts.len();
        self.receipts.push(CashReceipt {
            payment: i,
            amount: left,
            tax_free,
            issue_number: format!("{:09}", 100_000_000 + n),
            issued_at: now,
            visible_at,
            cancelled_at: None,
        });
        Ok(n)
    }

    /// Cancels the payment's live receipt.
    pub fn cancel_receipt(
        &mut self,
        imp_uid: Option<&str>,
        merchant_uid: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, ReceiptRefusal> {
        let i = self
            .receipt_payment(imp_uid, merchant_uid)
            .ok_or(ReceiptRefusal::NotIssued)?;
        let r = self
            .live_receipt(i)
            .filter(|r| self.receipts[*r].visible_at <= now)
            .ok_or(ReceiptRefusal::NotIssued)?;
        self.receipts[r].cancelled_at = Some(now);
        Ok(r)
    }

    /// The newest receipt of a payment a lookup shows at `now`.
    pub fn shown_receipt(
        &self,
        imp_uid: Option<&str>,
        merchant_uid: &str,
        now: DateTime<Utc>,
    ) -> Option<&CashReceipt> {
        let i = self.receipt_payment(imp_uid, merchant_uid)?;
        self.receipts
            .iter()
            .rev()
            .find(|r| r.payment == i && r.visible_at <= now)
    }

    /// Whether the PG ever issued this key.
    pub fn ever_issued(&self, key: &str) -> bool {
        self.issued.contains(key)
    }

    pub fn key(&self, key: &str) -> Option<&Key> {
        self.keys.get(key)
    }

    /// Deletes a key; whether it was live.
    pub fn delete_key(&mut self, key: &str) -> bool {
        match self.keys.get_mut(key) {
            Some(k) if !k.deleted => {
                k.deleted = true;
                true
            }
            _ => false,
        }
    }

    /// Paid charge payments (money taken) of one merchant_uid.
    pub fn paid_under(&self, merchant_uid: &str) -> usize {
        self.payments
            .iter()
            .filter(|p| p.merchant_uid == merchant_uid && p.took_money())
            .count()
    }

    /// Payments of one merchant_uid that took money and keep some of it.
    pub fn kept_under(&self, merchant_uid: &str) -> usize {
        self.payments
            .iter()
            .filter(|p| p.merchant_uid == merchant_uid && p.kept() > 0)
            .count()
    }

    /// Requests of `merchant_uid` still processing (in flight or pending).
    pub fn processing(&self, merchant_uid: &str) -> u32 {
        let pending = self
            .payments
            .iter()
            .filter(|p| p.merchant_uid == merchant_uid && p.status == Status::Pending)
            .count() as u32;
        pending + self.inflight.get(merchant_uid).copied().unwrap_or(0)
    }
}

// ---- the wire: V1 (i'mport) ----------------------------------------------

fn unix(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(0, |t| t.timestamp())
}

/// `{code, message, response}` with an HTTP status.
pub(crate) fn v1_envelope(
    status: u16,
    code: i64,
    message: Option<&str>,
    response: Value,
) -> (u16, Vec<u8>) {
    let body = json!({"code": code, "message": message, "response": response});
    (status, body.to_string().into_bytes())
}

/// A V1 `PaymentAnnotation`.
pub(crate) fn v1_payment(p: &Payment) -> Value {
    let status = match p.status {
        Status::Pending => "ready",
        Status::Paid => "paid",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
    };
    json!({
        "imp_uid": p.imp_uid,
        "merchant_uid": p.merchant_uid,
        "amount": p.amount,
        "cancel_amount": p.cancelled,
        "currency": "KRW",
        "status": status,
        "pay_method": if p.cash { "trans" } else { "card" },
        "pg_provider": "chai",
        "customer_uid": p.customer_uid,
        "customer_uid_usage": match p.usage { Usage::Issue => "issue", Usage::Charge => "payment" },
        "paid_at": unix(p.paid_at),
        "failed_at": if p.status == Status::Failed { p.visible_at.timestamp() } else { 0 },
        "cancelled_at": 0,
        "fail_reason": p.fail_reason,
        "cancel_reason": null,
        "cancel_history": [],
    })
}

/// 404 with i'mport's envelope (the documented "not found").
pub(crate) fn v1_not_found() -> (u16, Vec<u8>) {
    v1_envelope(404, -1, Some(MSG_NOT_FOUND), Value::Null)
}

/// 404 from a proxy in front of the API: an HTML page, no envelope.
pub(crate) fn html_404() -> (u16, Vec<u8>) {
    (
        404,
        b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"
            .to_vec(),
    )
}

/// A V1 refusal of a charge: HTTP 200, `code != 0`, no payment.
pub(crate) fn v1_refusal(r: Refusal) -> (u16, Vec<u8>) {
    let (code, message) = match r {
        Refusal::UnknownKey => (-1, MSG_UNKNOWN_CUSTOMER),
        Refusal::AlreadyPaid => (1, MSG_ALREADY_PAID),
        Refusal::InProgress => (1, MSG_IN_PROGRESS),
        Refusal::Setting => (1, MSG_SETTING),
        Refusal::Forbidden => (-1, "권한이 없습니다."),
    };
    v1_envelope(200, code, Some(message), Value::Null)
}

pub(crate) fn v1_key(customer_uid: &str, k: &Key) -> Value {
    json!({
        "customer_uid": customer_uid,
        "pg_provider": "chai",
        "pg_id": "sim_pg",
        "card_name": null,
        "card_number": null,
        "inserted": k.inserted.timestamp(),
        "updated": k.inserted.timestamp(),
    })
}

pub(crate) fn v1_key_missing(customer_uid: &str) -> (u16, Vec<u8>) {
    let message =
        format!("요청하신 customer_uid({customer_uid})로 등록된 정보를 찾을 수 없습니다.");
    v1_envelope(404, 1, Some(&message), Value::Null)
}

pub(crate) fn v1_refund_refusal(r: RefundRefusal) -> (u16, Vec<u8>) {
    let message = match r {
        RefundRefusal::NotFound | RefundRefusal::NotPaid => "취소할 결제건이 존재하지 않습니다.",
        RefundRefusal::AlreadyCancelled => "이미 전액취소된 주문입니다.",
        RefundRefusal::Checksum => "취소가능잔액이 일치하지 않습니다.",
        RefundRefusal::TooMuch => "취소요청금액이 취소가능잔액을 초과합니다.",
        RefundRefusal::TaxFree => MSG_TAX_FREE,
        RefundRefusal::Provider => "PG사 취소 실패: 취소 가능 기간이 지났습니다.",
    };
    v1_envelope(200, 1, Some(message), Value::Null)
}

// ---- the wire: V2 (PortOne) ----------------------------------------------

/// Whether a key pays from an account (V1 `pay_method: trans`, CHAI's; V2
/// an easy pay's transfer) or by card: about half and half, by the key.
pub(crate) fn cash_key(customer_uid: &str) -> bool {
    customer_uid.bytes().last().is_some_and(|b| b % 2 == 0)
}

pub(crate) fn cash_payment(p: &Payment) -> bool {
    p.cash
}

/// A V1 `ReceiptAnnotation`.
pub(crate) fn v1_receipt(p: &Payment, r: &CashReceipt) -> Value {
    json!({
        "imp_uid": p.imp_uid,
        "receipt_tid": format!("rcpt_{}", r.issue_number),
        "apply_num": r.issue_number,
        "type": "person",
        "amount": r.amount,
        "vat": (r.amount - r.tax_free) / 11,
        "receipt_url": format!("https://receipts.iamport-sim.invalid/cash/{}", r.issue_number),
        "applied_at": r.issued_at.timestamp(),
        "cancelled_at": r.cancelled_at.map_or(0, |t| t.timestamp()),
    })
}

/// A V2 `CashReceipt` (the union on `status`).
pub(crate) fn v2_receipt(p: &Payment, r: &CashReceipt) -> Value {
    let mut v = json!({
        "status": if r.cancelled_at.is_some() { "CANCELLED" } else { "ISSUED" },
        "merchantId": "merchant-simulation",
        "storeId": "store-simulation",
        "paymentId": p.merchant_uid,
        "channel": {"key": "channel-key-simulation", "pgProvider": "TOSSPAYMENTS"},
        "amount": r.amount,
        "taxFreeAmount": r.tax_free,
        "vatAmount": (r.amount - r.tax_free) / 11,
        "currency": "KRW",
        "orderName": "월간 구독",
        "isManual": false,
        "type": "PERSONAL",
        "issueNumber": r.issue_number,
        "url": format!("https://receipts.portone-sim.invalid/cash/{}", r.issue_number),
        "issuedAt": rfc3339(r.issued_at),
    });
    if let Some(t) = r.cancelled_at {
        v["cancelledAt"] = json!(rfc3339(t));
    }
    v
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn v2_error(status: u16, kind: &str, message: &str) -> (u16, Vec<u8>) {
    (
        status,
        json!({"type": kind, "message": message})
            .to_string()
            .into_bytes(),
    )
}

/// A V2 `Payment` (the union on `status`).
pub(crate) fn v2_payment(p: &Payment) -> Value {
    let status = match p.status {
        Status::Pending => "PAY_PENDING",
        Status::Paid if p.cancelled > 0 => "PARTIAL_CANCELLED",
        Status::Paid => "PAID",
        Status::Failed => "FAILED",
        Status::Cancelled => "CANCELLED",
    };
    let mut v = json!({
        "status": status,
        "id": p.merchant_uid,
        "transactionId": p.imp_uid,
        "amount": {
            "total": p.amount,
            "taxFree": p.tax_free,
            "vat": p.vat,
            "supply": p.amount - p.tax_free - p.vat,
            "paid": if p.paid_at.is_some() { p.amount } else { 0 },
            "cancelled": p.cancelled,
            "cancelledTaxFree": p.cancelled_tax_free,
        },
        "currency": "KRW",
        "billingKey": p.customer_uid,
        "channel": {"key": "channel-key-simulation", "pgProvider": "TOSSPAYMENTS"},
        "method": if p.cash {
            json!({"type": "PaymentMethodEasyPay", "provider": "TOSSPAY", "easyPayMethod": {"type": "PaymentMethodTransfer", "bank": "KOOKMIN"}})
        } else {
            json!({"type": "PaymentMethodCard", "card": {"name": "신한카드"}})
        },
    });
    let show_paid_at = !(p.hide_paid_at && p.status == Status::Cancelled);
    if let (Some(t), true) = (p.paid_at, show_paid_at) {
        v["paidAt"] = json!(rfc3339(t));
    }
    if p.status == Status::Failed {
        v["failure"] =
            json!({"reason": "카드사 거절", "pgCode": "CARD_DECLINED", "pgMessage": p.fail_reason});
    }
    v
}

/// A V2 refusal of a charge.
pub(crate) fn v2_refusal(r: Refusal, deleted_key: bool) -> (u16, Vec<u8>) {
    match r {
        Refusal::UnknownKey if deleted_key => v2_error(
            409,
            "BILLING_KEY_ALREADY_DELETED",
            "빌링키가 이미 삭제되었습니다.",
        ),
        Refusal::UnknownKey => {
            v2_error(404, "BILLING_KEY_NOT_FOUND", "빌링키가 존재하지 않습니다.")
        }
        Refusal::AlreadyPaid | Refusal::InProgress => v2_error(
            409,
            "ALREADY_PAID",
            "결제가 이미 완료되었거나 대기중입니다.",
        ),
        Refusal::Setting => v2_error(404, "CHANNEL_NOT_FOUND", "채널이 존재하지 않습니다."),
        Refusal::Forbidden => v2_error(403, "FORBIDDEN", "요청이 거절되었습니다."),
    }
}

pub(crate) fn v2_key(billing_key: &str, k: &Key) -> Value {
    json!({
        "status": if k.deleted { "DELETED" } else { "ISSUED" },
        "billingKey": billing_key,
        "storeId": "store-simulation",
        "methods": [{"type": "BillingKeyPaymentMethodCard", "card": {"name": "시뮬레이션카드", "number": "4092********1234"}}],
        "channels": [{"key": "channel-key-simulation", "pgProvider": "TOSSPAYMENTS"}],
        "customer": {"id": k.customer_id},
        "issueId": k.issue_id,
        "issuedAt": rfc3339(k.inserted),
    })
}

pub(crate) fn v2_refund_refusal(r: RefundRefusal) -> (u16, Vec<u8>) {
    match r {
        RefundRefusal::NotFound => {
            v2_error(404, "PAYMENT_NOT_FOUND", "결제건이 존재하지 않습니다.")
        }
        RefundRefusal::NotPaid => v2_error(409, "PAYMENT_NOT_PAID", "결제가 완료되지 않았습니다."),
        RefundRefusal::AlreadyCancelled => v2_error(
            409,
            "PAYMENT_ALREADY_CANCELLED",
            "결제가 이미 취소되었습니다.",
        ),
        RefundRefusal::Checksum => v2_error(
            409,
            "CANCELLABLE_AMOUNT_CONSISTENCY_BROKEN",
            "취소 가능 잔액 검증에 실패했습니다.",
        ),
        RefundRefusal::TooMuch => v2_error(
            400,
            "CANCEL_AMOUNT_EXCEEDS_CANCELLABLE_AMOUNT",
            "취소 금액이 취소 가능 금액을 초과했습니다.",
        ),
        RefundRefusal::TaxFree => v2_error(
            400,
            "CANCEL_TAX_FREE_AMOUNT_EXCEEDS_CANCELLABLE_TAX_FREE_AMOUNT",
            MSG_TAX_FREE,
        ),
        RefundRefusal::Provider => v2_error(
            400,
            "PG_PROVIDER",
            "PG사 취소 실패: 취소 가능 기간이 지났습니다.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn charge(m: &mut Model, key: &str, uid: &str, d: Decision, lag: i64) -> Charged {
        m.charge(
            key,
            uid,
            9900,
            0,
            d,
            false,
            now(),
            chrono::Duration::seconds(lag),
            false,
        )
    }

    #[test]
    fn one_paid_payment_per_merchant_uid_and_declines_may_be_retried() {
        let mut m = Model::default();
        m.issue("cu_1", "r1", 0, now());
        assert!(matches!(
            charge(&mut m, "cu_1", "s1", Decision::Decline(MSG_DECLINED), 0),
            Charged::Recorded(_)
        ));
        assert!(matches!(
            charge(&mut m, "cu_1", "s1", Decision::Pay, 0),
            Charged::Recorded(_)
        ));
        assert_eq!(
            charge(&mut m, "cu_1", "s1", Decision::Pay, 0),
            Charged::Refused(Refusal::AlreadyPaid)
        );
        assert_eq!(m.paid_under("s1"), 1);
        assert!(m.find("s1", now()).unwrap().paid_at.is_some());
        m.delete_key("cu_1");
        assert_eq!(
            charge(&mut m, "cu_1", "s2", Decision::Pay, 0),
            Charged::Refused(Refusal::UnknownKey)
        );
        assert!(m.find("s2", now()).is_none());
    }

    #[test]
    fn pending_payments_refuse_a_second_request_and_lookups_lag() {
        let mut m = Model::default();
        m.issue("cu_1", "r1", 0, now());
        let Charged::Recorded(i) = charge(&mut m, "cu_1", "s1", Decision::Pend, 30) else {
            panic!()
        };
        assert_eq!(
            charge(&mut m, "cu_1", "s1", Decision::Pay, 0),
            Charged::Refused(Refusal::InProgress)
        );
        assert!(m.find("s1", now()).is_none(), "not visible yet");
        let later = now() + chrono::Duration::seconds(31);
        assert_eq!(m.find("s1", later).unwrap().status, Status::Pending);
        assert!(m.land_pending(i, true, later));
        assert_eq!(m.paid_under("s1"), 1);
    }

    #[test]
    fn refunds_check_the_checksum_and_never_exceed_what_was_paid() {
        let mut m = Model::default();
        m.issue("cu_1", "r1", 0, now());
        charge(&mut m, "cu_1", "s1", Decision::Pay, 0);
        let imp = m.find("s1", now()).unwrap().imp_uid.clone();
        assert_eq!(
            m.refund(Some(&imp), "s1", Some(1000), Some(9000), None, 1),
            Err(RefundRefusal::Checksum)
        );
        assert!(
            m.refund(Some(&imp), "s1", Some(1000), Some(9900), None, 1)
                .is_ok()
        );
        assert_eq!(
            m.refund(Some(&imp), "s1", Some(1000), Some(9900), None, 1),
            Err(RefundRefusal::Checksum)
        );
        assert_eq!(
            m.refund(None, "s1", Some(9000), Some(8900), None, 1),
            Err(RefundRefusal::TooMuch)
        );
        assert!(m.refund(None, "s1", None, Some(8900), None, 1).is_ok());
        let p = m.find("s1", now()).unwrap();
        assert_eq!(
            (p.status, p.kept(), m.refunds.len()),
            (Status::Cancelled, 0, 2)
        );
        assert_eq!(
            m.refund(None, "s1", None, None, None, 1),
            Err(RefundRefusal::AlreadyCancelled)
        );
    }

    #[test]
    fn the_wire_reads_back_through_the_adapters() {
        let mut m = Model::default();
        m.issue("cu_1", "r1", 0, now());
        charge(&mut m, "cu_1", "s1", Decision::Pay, 0);
        let p = m.find("s1", now()).unwrap().clone();
        let (status, body) = v1_envelope(200, 0, None, v1_payment(&p));
        let record = shared::gateway::iamport::wire::payment(status, &body).unwrap();
        assert_eq!((record.amount, record.merchant_uid.as_str()), (9900, "s1"));
        let body = json!(v2_payment(&p)).to_string();
        let record = shared::gateway::portone::wire::payment(200, body.as_bytes()).unwrap();
        assert_eq!(record.imp_uid, p.imp_uid);
        let (status, body) = v1_not_found();
        assert!(
            shared::gateway::iamport::wire::payment(status, &body)
                .unwrap_err()
                .is_not_found()
        );
    }
}
