//! The V2 shapes this code reads and writes (a subset of the official
//! spec). Reading is tolerant: unknown fields are ignored and unknown enum
//! values are kept as text, never a failure to decode.

use serde::{Deserialize, Serialize};

/// `{type, message}` of every V2 error (plus PG details where given).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(rename = "pgCode", default)]
    pub pg_code: Option<String>,
    #[serde(rename = "pgMessage", default)]
    pub pg_message: Option<String>,
}

impl ErrorBody {
    /// A text for people: the type and the messages, no ids.
    pub fn describe(&self) -> String {
        let mut text = self.kind.clone();
        for part in [&self.pg_message, &self.message].into_iter().flatten() {
            text.push_str(": ");
            text.push_str(part);
        }
        text
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub total: i64,
    /// The tax-free part; left out when 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_free: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CustomerInput {
    pub id: Option<String>,
}

/// `POST /payments/{paymentId}/billing-key`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingKeyPaymentInput {
    pub store_id: String,
    pub billing_key: String,
    pub channel_key: String,
    pub order_name: String,
    pub amount: Amount,
    pub currency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice_urls: Option<Vec<String>>,
}

/// `POST /payments/{paymentId}/cancel`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelPaymentBody {
    pub store_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    pub reason: String,
    /// The checksum: what we believe is still cancellable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_cancellable_amount: Option<i64>,
    /// The cancel's tax-free part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_free_amount: Option<i64>,
}

/// `POST /cash-receipts` (`IssueCashReceiptBody`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueCashReceiptBody {
    pub store_id: String,
    pub payment_id: String,
    pub channel_key: String,
    /// `PERSONAL` or `CORPORATE`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub order_name: String,
    pub currency: &'static str,
    pub amount: CashReceiptAmount,
    pub customer: CashReceiptCustomer,
    /// `TRANSFER` (what a billing payment from an account is).
    pub payment_method: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CashReceiptAmount {
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_free: Option<i64>,
}

/// `IssueCashReceiptCustomerInput`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CashReceiptCustomer {
    /// PII (masked in `Debug`).
    pub identity_number: crate::secret::Pii,
    /// `PHONE`, `CARD` or `BUSINESS`.
    pub identity_number_type: &'static str,
}

/// `IssueCashReceiptResponse`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueCashReceiptResponse {
    pub cash_receipt: CashReceiptSummary,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CashReceiptSummary {
    #[serde(default)]
    pub issue_number: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// `CashReceipt` (`GET /payments/{paymentId}/cash-receipt`), a oneOf on
/// `status`: `ISSUED`, `CANCELLED`, `ISSUE_FAILED`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CashReceipt {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub tax_free_amount: Option<i64>,
    #[serde(default)]
    pub vat_amount: Option<i64>,
    #[serde(default)]
    pub issue_number: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub issued_at: Option<String>,
}

/// `CancelCashReceiptResponse`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelCashReceiptResponse {
    #[serde(default)]
    pub cancelled_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAmount {
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub cancelled: i64,
    #[serde(default)]
    pub tax_free: Option<i64>,
    #[serde(default)]
    pub vat: Option<i64>,
    #[serde(default)]
    pub cancelled_tax_free: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailure {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub pg_code: Option<String>,
    #[serde(default)]
    pub pg_message: Option<String>,
}

/// A payment (`GET /payments/{paymentId}`): the union on `status`, read as
/// one struct (every variant's fields optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    #[serde(default)]
    pub status: String,
    /// The paymentId (our `merchant_uid`).
    #[serde(default)]
    pub id: String,
    /// This attempt's transaction (V1's `imp_uid`).
    #[serde(default)]
    pub transaction_id: String,
    #[serde(default)]
    pub amount: PaymentAmount,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub billing_key: Option<String>,
    #[serde(default)]
    pub paid_at: Option<String>,
    #[serde(default)]
    pub failure: Option<PaymentFailure>,
    #[serde(default)]
    pub channel: Option<SelectedChannel>,
    #[serde(default)]
    pub receipt_url: Option<String>,
    /// How it was paid (`PaymentMethod`, a oneOf on `type`).
    #[serde(default)]
    pub method: Option<PaymentMethod>,
}

/// A payment's method: only what tells a cash payment (decision 74).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethod {
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `PaymentMethodEasyPay`'s own method (card, transfer, charged balance).
    #[serde(default)]
    pub easy_pay_method: Option<Box<PaymentMethod>>,
}

impl PaymentMethod {
    /// Paid from an account: a transfer, a virtual account, or an easy
    /// pay's transfer or charged balance (all call for a cash receipt).
    pub fn is_cash(&self) -> bool {
        match self.kind.as_str() {
            "PaymentMethodTransfer" | "PaymentMethodVirtualAccount" => true,
            "PaymentMethodEasyPayMethodCharge" => true,
            "PaymentMethodEasyPay" => self.easy_pay_method.as_deref().is_some_and(Self::is_cash),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectedChannel {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub pg_provider: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CardInfo {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub number: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyMethod {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub card: Option<CardInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyCustomer {
    #[serde(default)]
    pub id: Option<String>,
}

/// `GET /billing-keys/{billingKey}`: `ISSUED` or `DELETED`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingKeyInfo {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub billing_key: String,
    #[serde(default)]
    pub store_id: Option<String>,
    #[serde(default)]
    pub methods: Vec<KeyMethod>,
    #[serde(default)]
    pub channels: Vec<SelectedChannel>,
    #[serde(default)]
    pub customer: KeyCustomer,
    #[serde(default)]
    pub issue_id: Option<String>,
    #[serde(default)]
    pub issued_at: Option<String>,
}

/// Any 200 body this code does not read further.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Ignored {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_fields_and_types_are_read_not_refused() {
        let p: Payment = serde_json::from_str(
            r#"{"status":"SOMETHING_NEW","id":"p1","transactionId":"t1","amount":{"total":9900,"paid":9900,"cancelled":0,"newField":1},"novel":{"x":[1]}}"#,
        )
        .unwrap();
        assert_eq!((p.status.as_str(), p.amount.total), ("SOMETHING_NEW", 9900));
        let e: ErrorBody =
            serde_json::from_str(r#"{"type":"BRAND_NEW_ERROR","message":"m","extra":true}"#)
                .unwrap();
        assert_eq!(e.kind, "BRAND_NEW_ERROR");
        let k: BillingKeyInfo = serde_json::from_str(
            r#"{"status":"ISSUED","billingKey":"bk","methods":[{"type":"BillingKeyPaymentMethodNew"}],"channels":[],"customer":{}}"#,
        )
        .unwrap();
        assert_eq!(k.methods[0].kind, "BillingKeyPaymentMethodNew");
    }
}
