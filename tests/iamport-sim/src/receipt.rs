//! Cash receipts (현금영수증): what the simulator keeps of each issuance, the
//! PG behaviour a test can choose ([`ReceiptMode`]), and the V1
//! `ReceiptAnnotation` answer (`spec/v1.openapi.yml`).
//!
//! The rules (who may get one, when it shows) live in `state.rs`; the V1
//! routes in `api.rs`, the V2 ones in `v2.rs`.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A V1 `pay_method` that is a cash transaction (현금성 거래), the only kind
/// a cash receipt may be issued for: account transfer and virtual account.
pub(crate) fn is_cash_pay_method(pay_method: Option<&str>) -> bool {
    matches!(pay_method, Some("trans" | "vbank"))
}

/// `identifier` with all but its last 4 characters replaced by `*` (all of
/// it when it has 4 or fewer): identity numbers are PII.
pub fn mask_identifier(identifier: &str) -> String {
    let chars: Vec<char> = identifier.chars().collect();
    let keep = if chars.len() > 4 { 4 } else { 0 };
    let hidden = chars.len() - keep;
    let mut out = "*".repeat(hidden);
    out.extend(&chars[hidden..]);
    out
}

fn serialize_masked<S: Serializer>(identifier: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_identifier(identifier))
}

/// Who the receipt is for: V1 `type` `person|company`, V2 `type`
/// `PERSONAL|CORPORATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CashReceiptKind {
    /// 소득공제용 (V1 `person`, V2 `PERSONAL`).
    Person,
    /// 지출증빙용 (V1 `company`, V2 `CORPORATE`).
    Company,
}

impl CashReceiptKind {
    /// The V1 spelling.
    pub fn as_v1(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Company => "company",
        }
    }

    /// The V2 spelling.
    pub fn as_v2(self) -> &'static str {
        match self {
            Self::Person => "PERSONAL",
            Self::Company => "CORPORATE",
        }
    }

    pub(crate) fn from_v1(s: &str) -> Option<Self> {
        match s {
            "person" => Some(Self::Person),
            "company" => Some(Self::Company),
            _ => None,
        }
    }

    pub(crate) fn from_v2(s: &str) -> Option<Self> {
        match s {
            "PERSONAL" => Some(Self::Person),
            "CORPORATE" => Some(Self::Company),
            _ => None,
        }
    }
}

/// Where an issuance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CashReceiptStatus {
    /// Accepted under [`ReceiptMode::InProgress`]: issued at `issued_at`,
    /// which the simulator clock has not reached yet; lookups do not show it.
    InProgress,
    /// Issued and not cancelled (the payment's live receipt).
    Issued,
    /// Issued, then cancelled (`cancelled_at`).
    Cancelled,
    /// Refused by the PG ([`ReceiptMode::Fail`]); nothing was issued.
    Failed,
}

/// One issuance request that reached the PG, kept per payment in order
/// ([`crate::SimHandle::cash_receipts`], `GET /__sim/receipts`).
///
/// `identifier` holds the identity number in full; `Debug` and the JSON
/// form show only its last 4 characters.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct CashReceiptRecord {
    /// The payment's `imp_uid` (V2 `transactionId`).
    pub imp_uid: String,
    /// The payment's `merchant_uid` (V2 `paymentId`).
    pub payment_id: String,
    pub status: CashReceiptStatus,
    pub kind: CashReceiptKind,
    #[serde(serialize_with = "serialize_masked")]
    pub identifier: String,
    /// As sent: V1 `identifier_type` (`person|business|phone|taxcard`) or
    /// V2 `customer.identityNumberType` (`PHONE|CARD|BUSINESS`).
    pub identifier_type: Option<String>,
    /// The amount issued for: the payment's amount less what was refunded.
    pub amount: i64,
    pub tax_free: i64,
    pub vat: i64,
    pub order_name: Option<String>,
    /// 국세청 approval number (V1 `apply_num`, V2 `issueNumber`); unique. `None` when failed.
    pub apply_num: Option<String>,
    /// The PG's id of the receipt (V1 `receipt_tid`, V2 `pgReceiptId`). `None` when failed.
    pub receipt_tid: Option<String>,
    pub receipt_url: Option<String>,
    /// When the request reached the simulator (UNIX seconds, simulator clock).
    pub requested_at: i64,
    /// When it was (or, in progress, will be) issued. `None` when failed.
    pub issued_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    /// Requested through the V2 face.
    pub v2: bool,
}

impl fmt::Debug for CashReceiptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CashReceiptRecord")
            .field("imp_uid", &self.imp_uid)
            .field("payment_id", &self.payment_id)
            .field("status", &self.status)
            .field("kind", &self.kind)
            .field("identifier", &mask_identifier(&self.identifier))
            .field("identifier_type", &self.identifier_type)
            .field("amount", &self.amount)
            .field("tax_free", &self.tax_free)
            .field("vat", &self.vat)
            .field("order_name", &self.order_name)
            .field("apply_num", &self.apply_num)
            .field("receipt_tid", &self.receipt_tid)
            .field("receipt_url", &self.receipt_url)
            .field("requested_at", &self.requested_at)
            .field("issued_at", &self.issued_at)
            .field("cancelled_at", &self.cancelled_at)
            .field("v2", &self.v2)
            .finish()
    }
}

impl CashReceiptRecord {
    /// Whether lookups show it: not failed, and not in progress.
    pub(crate) fn visible(&self) -> bool {
        matches!(
            self.status,
            CashReceiptStatus::Issued | CashReceiptStatus::Cancelled
        )
    }

    /// When it last changed: cancelled, else issued, else requested.
    pub(crate) fn status_updated_at(&self) -> i64 {
        self.cancelled_at
            .or(self.issued_at)
            .unwrap_or(self.requested_at)
    }
}

/// How the simulated PG answers the next cash-receipt issuances (V1
/// `POST /receipts/{imp_uid}`, V2 `POST /cash-receipts`), set with
/// [`crate::SimHandle::set_receipt_mode`] or `POST /__sim/receipts`.
/// Requests refused before the PG (validation, already issued, …) do not use it up.
///
/// As JSON: `{"mode":"normal"}`, `{"mode":"in_progress","secs":30}`, `{"mode":"fail","times":2}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReceiptMode {
    /// Issue at once.
    #[default]
    Normal,
    /// The next issuance is accepted and completes, but is answered 504 (V1
    /// `{code:-1, message:"현금영수증 발행 처리 중"}`, V2 `PG_PROVIDER`); lookups
    /// answer 404 until `secs` of simulator-clock time have passed, and a
    /// retry meanwhile gets the same 504 without a second issuance. Then
    /// back to `Normal`.
    InProgress { secs: u64 },
    /// The next `times` issuances are refused by the PG (V1 HTTP 500, V2
    /// 502 `PG_PROVIDER` with `pgCode: "CR01"`); each is recorded as
    /// [`CashReceiptStatus::Failed`]. Then back to `Normal`.
    Fail { times: u32 },
}

/// `ReceiptAnnotation`: what `GET|POST|DELETE /receipts/{imp_uid}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ReceiptAnnotation {
    pub imp_uid: String,
    pub receipt_tid: String,
    pub apply_num: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub amount: i64,
    pub vat: i64,
    pub receipt_url: String,
    pub applied_at: i64,
    /// 0 while not cancelled.
    pub cancelled_at: i64,
}

impl From<&CashReceiptRecord> for ReceiptAnnotation {
    fn from(r: &CashReceiptRecord) -> Self {
        Self {
            imp_uid: r.imp_uid.clone(),
            receipt_tid: r.receipt_tid.clone().unwrap_or_default(),
            apply_num: r.apply_num.clone().unwrap_or_default(),
            kind: r.kind.as_v1(),
            amount: r.amount,
            vat: r.vat,
            receipt_url: r.receipt_url.clone().unwrap_or_default(),
            applied_at: r.issued_at.unwrap_or_default(),
            cancelled_at: r.cancelled_at.unwrap_or(0),
        }
    }
}

/// The receipt link of a cash receipt (same reserved domain as the card slips).
pub(crate) fn cash_receipt_url(apply_num: &str) -> String {
    format!("https://receipts.iamport-sim.invalid/cash/{apply_num}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_masked_to_their_last_four() {
        assert_eq!(mask_identifier("01012345678"), "*******5678");
        assert_eq!(mask_identifier("1234"), "****");
        assert_eq!(mask_identifier(""), "");
        assert_eq!(mask_identifier("가나다라마바"), "**다라마바");
    }

    #[test]
    fn modes_are_tagged_by_mode() {
        let parse = |s: &str| serde_json::from_str::<ReceiptMode>(s).ok();
        assert_eq!(parse(r#"{"mode":"normal"}"#), Some(ReceiptMode::Normal));
        assert_eq!(
            parse(r#"{"mode":"in_progress","secs":30}"#),
            Some(ReceiptMode::InProgress { secs: 30 })
        );
        assert_eq!(
            parse(r#"{"mode":"fail","times":2}"#),
            Some(ReceiptMode::Fail { times: 2 })
        );
        assert_eq!(parse(r#"{"mode":"explode"}"#), None);
    }

    #[test]
    fn records_never_show_the_identifier_in_full() {
        let record = CashReceiptRecord {
            imp_uid: "imps_1".into(),
            payment_id: "m1".into(),
            status: CashReceiptStatus::Issued,
            kind: CashReceiptKind::Person,
            identifier: "01012345678".into(),
            identifier_type: None,
            amount: 1100,
            tax_free: 0,
            vat: 100,
            order_name: None,
            apply_num: Some("123456789".into()),
            receipt_tid: None,
            receipt_url: None,
            requested_at: 0,
            issued_at: Some(0),
            cancelled_at: None,
            v2: false,
        };
        let debug = format!("{record:?}");
        let json = serde_json::to_string(&record).unwrap_or_default();
        for shown in [debug, json] {
            assert!(!shown.contains("01012345678"), "{shown}");
            assert!(shown.contains("*******5678"), "{shown}");
        }
    }
}
