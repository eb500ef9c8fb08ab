//! Request and response shapes of the i'mport V1 API, as documented in
//! `v1.openapi.yml` (Swagger 2.0) and the official clients.

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Pii;

/// The envelope every V1 response uses: `{code, message, response}`.
/// `code == 0` means success; anything else carries a (Korean) `message`.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<T> {
    pub code: i64,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default = "none")]
    pub response: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

/// `POST /users/getToken` response body.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    pub now: i64,
    pub expired_at: i64,
}

/// Payment status as i'mport reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    Ready,
    Paid,
    Failed,
    Cancelled,
    /// A value this code does not know; never treated as money received.
    #[serde(other)]
    Unknown,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }
}

/// One entry of `cancel_history` (`PaymentCancelAnnotation`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CancelRecord {
    #[serde(deserialize_with = "krw")]
    pub amount: i64,
    #[serde(default, deserialize_with = "unix_or_zero")]
    pub cancelled_at: i64,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub cancellation_id: Option<String>,
    #[serde(default)]
    pub pg_tid: Option<String>,
}

/// A payment (`PaymentAnnotation`). Only the fields this system reads are
/// kept; unknown fields are ignored. Personal data is wrapped in [`Pii`] so
/// `Debug` masks it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Payment {
    pub imp_uid: String,
    pub merchant_uid: String,
    #[serde(deserialize_with = "krw")]
    pub amount: i64,
    #[serde(default, deserialize_with = "krw")]
    pub cancel_amount: i64,
    #[serde(default)]
    pub currency: Option<String>,
    pub status: PaymentStatus,
    #[serde(default)]
    pub pay_method: Option<String>,
    #[serde(default)]
    pub pg_provider: Option<String>,
    #[serde(default)]
    pub pg_tid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub customer_uid: Option<String>,
    #[serde(default)]
    pub customer_uid_usage: Option<String>,
    #[serde(default)]
    pub buyer_name: Option<Pii>,
    #[serde(default)]
    pub buyer_email: Option<Pii>,
    #[serde(default)]
    pub buyer_tel: Option<Pii>,
    #[serde(default)]
    pub custom_data: Option<String>,
    #[serde(default, deserialize_with = "unix_or_zero")]
    pub started_at: i64,
    #[serde(default, deserialize_with = "unix_or_zero")]
    pub paid_at: i64,
    #[serde(default, deserialize_with = "unix_or_zero")]
    pub failed_at: i64,
    #[serde(default, deserialize_with = "unix_or_zero")]
    pub cancelled_at: i64,
    #[serde(default)]
    pub fail_reason: Option<String>,
    #[serde(default)]
    pub cancel_reason: Option<String>,
    #[serde(default)]
    pub receipt_url: Option<String>,
    #[serde(default, deserialize_with = "vec_or_null")]
    pub cancel_history: Vec<CancelRecord>,
    #[serde(default)]
    pub card_name: Option<String>,
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub bank_name: Option<String>,
}

/// A billing key's public description (`CustomerAnnotation`). The key itself
/// never leaves i'mport.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BillingKey {
    pub customer_uid: String,
    pub pg_provider: String,
    #[serde(default)]
    pub pg_id: Option<String>,
    #[serde(default)]
    pub card_name: Option<String>,
    /// Masked by i'mport (e.g. `43302887****9512`).
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub customer_name: Option<Pii>,
    #[serde(default)]
    pub customer_tel: Option<Pii>,
    #[serde(default)]
    pub customer_email: Option<Pii>,
    #[serde(default, deserialize_with = "unix_or_zero")]
    pub inserted: i64,
    #[serde(default, deserialize_with = "unix_or_zero")]
    pub updated: i64,
}

/// Body of `POST /subscribe/payments/again`.
#[derive(Debug, Clone, Serialize)]
pub struct AgainRequest {
    pub customer_uid: String,
    pub merchant_uid: String,
    /// Whole KRW, sent as a JSON integer.
    pub amount: i64,
    /// The tax-free part (VAT is then `(amount − tax_free) / 11`); left out
    /// when 0, i'mport's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_free: Option<i64>,
    pub currency: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_name: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_email: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_tel: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice_url: Option<String>,
}

/// Body of `POST /payments/cancel`.
#[derive(Debug, Clone, Serialize)]
pub struct CancelRequest {
    pub imp_uid: String,
    /// `None` refunds what remains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// The refundable balance we believe in, so a stale view cannot refund twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<i64>,
    /// The refund's tax-free part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_free: Option<i64>,
    pub reason: String,
}

/// Body of `POST /receipts/{imp_uid}` (a cash receipt for a cash payment).
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptRequest {
    /// A mobile, cash-receipt card or business registration number (PII).
    pub identifier: Pii,
    /// `phone`, `taxcard` or `business` (some PGs need it; the others read
    /// the identifier).
    pub identifier_type: &'static str,
    /// `person` (소득공제) or `company` (지출증빙).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub tax_free: i64,
}

/// `ReceiptAnnotation`: a cash receipt at i'mport.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceiptAnnotation {
    #[serde(default)]
    pub imp_uid: String,
    #[serde(default)]
    pub receipt_tid: Option<String>,
    /// 국세청 approval number.
    #[serde(default)]
    pub apply_num: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(deserialize_with = "krw")]
    pub amount: i64,
    #[serde(default, deserialize_with = "krw_or_zero")]
    pub vat: i64,
    #[serde(default)]
    pub receipt_url: Option<String>,
    /// UNIX seconds.
    #[serde(default)]
    pub applied_at: i64,
    /// UNIX seconds; 0 while it is live.
    #[serde(default)]
    pub cancelled_at: i64,
}

fn krw_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?.map_or(Ok(0), |v| {
        v.as_i64()
            .ok_or_else(|| serde::de::Error::custom("not whole KRW"))
    })
}

/// Amounts are `number` in the spec; KRW has no minor unit, so anything with
/// a fraction is refused rather than rounded.
fn krw<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = serde_json::Number::deserialize(d)?;
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "amount {v} is not a whole KRW value"
        ))),
    }
}

/// UNIX seconds, where `0` (or `null`) means "did not happen".
fn unix_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or(0))
}

fn vec_or_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAID: &str = r#"{"code":0,"message":null,"response":{
 "imp_uid":"imps_410000000001","merchant_uid":"sub_2024_06_u42","pay_method":"trans","channel":"api",
 "pg_provider":"chai","emb_pg_provider":null,"pg_tid":"chai_tx_123","pg_id":"pk","escrow":false,
 "apply_num":null,"bank_code":null,"bank_name":null,"card_code":null,"card_name":null,"card_quota":0,
 "card_number":null,"card_type":null,"vbank_code":null,"vbank_name":null,"vbank_num":null,"vbank_holder":null,
 "vbank_date":0,"vbank_issued_at":0,"name":"월간 구독","amount":9900,"cancel_amount":0,"currency":"KRW",
 "buyer_name":"홍길동","buyer_email":"a@example.com","buyer_tel":"01012345678","buyer_addr":null,"buyer_postcode":null,
 "custom_data":null,"user_agent":"sorry_not_supported_anymore","status":"paid","started_at":1700000100,
 "paid_at":1700000101,"failed_at":0,"cancelled_at":0,"fail_reason":null,"cancel_reason":null,
 "receipt_url":null,"cancel_history":[],"cancel_receipt_urls":[],"cash_receipt_issued":false,
 "customer_uid":"u42_chai_1","customer_uid_usage":"payment"}}"#;

    #[test]
    fn documented_paid_payment_decodes_with_real_values() {
        let env: Envelope<Payment> = serde_json::from_str(PAID).unwrap();
        assert_eq!(env.code, 0);
        let p = env.response.unwrap();
        assert_eq!(p.imp_uid, "imps_410000000001");
        assert_eq!(p.amount, 9900);
        assert_eq!(p.status, PaymentStatus::Paid);
        assert_eq!(p.paid_at, 1_700_000_101);
        assert_eq!(p.failed_at, 0);
        assert_eq!(p.customer_uid.as_deref(), Some("u42_chai_1"));
        assert_eq!(p.buyer_tel.as_ref().unwrap().expose(), "01012345678");
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("01012345678"),
            "phone leaked in Debug: {debug}"
        );
        assert!(
            !debug.contains("a@example.com"),
            "email leaked in Debug: {debug}"
        );
    }

    #[test]
    fn fractional_amount_is_refused() {
        let body = PAID.replace("\"amount\":9900", "\"amount\":9900.5");
        assert!(serde_json::from_str::<Envelope<Payment>>(&body).is_err());
        let body = PAID.replace("\"amount\":9900", "\"amount\":9900.0");
        let env: Envelope<Payment> = serde_json::from_str(&body).unwrap();
        assert_eq!(env.response.unwrap().amount, 9900);
    }

    #[test]
    fn unknown_status_is_not_paid() {
        let body = PAID.replace("\"status\":\"paid\"", "\"status\":\"partial_cancelled\"");
        let env: Envelope<Payment> = serde_json::from_str(&body).unwrap();
        assert_eq!(env.response.unwrap().status, PaymentStatus::Unknown);
    }

    #[test]
    fn rejection_envelope_has_no_response() {
        let env: Envelope<Payment> = serde_json::from_str(
            r#"{"code":-1,"message":"등록되지 않은 구매자입니다.","response":null}"#,
        )
        .unwrap();
        assert_eq!(env.code, -1);
        assert!(env.response.is_none());
        assert_eq!(env.message.as_deref(), Some("등록되지 않은 구매자입니다."));
    }
}
