//! The simulator's own view of i'mport's resources, written from the docs
//! (`/work/shared/iamport-v1/README.md` §3.2, §5.2, §9) and the official spec
//! (`spec/v1.openapi.yml`: `PaymentAnnotation`, `PaymentCancelAnnotation`, `CustomerAnnotation`).
//!
//! Field names and order follow the spec. Empty values are serialised the way the real API
//! sends them: `null` for absent strings, `0` for times that did not happen, `[]` for lists.
//! These types are deliberately independent of the `shared` client crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `status` of a payment (`ready|paid|failed|cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    /// Not paid yet (virtual accounts; the simulator never creates it).
    Ready,
    /// Approved. Stays `paid` after a partial refund.
    Paid,
    /// Declined or abandoned; `fail_reason` and `failed_at` say why and when.
    Failed,
    /// Fully refunded.
    Cancelled,
}

impl PaymentStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a status string outside `ready|paid|failed|cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payment status {0:?} (expected ready, paid, failed or cancelled)")]
pub struct UnknownStatus(pub String);

impl FromStr for PaymentStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ready" => Ok(Self::Ready),
            "paid" => Ok(Self::Paid),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

impl PartialEq<&str> for PaymentStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One refund of a payment (`PaymentCancelAnnotation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelHistory {
    pub pg_tid: String,
    pub amount: i64,
    pub cancelled_at: i64,
    /// The `reason` sent with the cancel request, `""` when none was sent
    /// (the spec marks the field required).
    pub reason: String,
    pub cancellation_id: String,
    pub receipt_url: Option<String>,
    /// Its tax-free part (V2 `taxFreeAmount`; V1's annotation has none).
    #[serde(skip)]
    pub tax_free: i64,
}

/// `promotion` of a payment (`{id, discount}`); the simulator never applies promotions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub id: String,
    pub discount: i64,
}

/// A payment record (`PaymentAnnotation`): what `GET /payments/{imp_uid}` answers,
/// and one entry of the simulator's ledger.
///
/// Every charge attempt is one record with its own `imp_uid`, paid or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub pay_method: Option<String>,
    pub channel: Option<String>,
    pub pg_provider: Option<String>,
    pub emb_pg_provider: Option<String>,
    pub pg_tid: Option<String>,
    pub pg_id: Option<String>,
    pub escrow: bool,
    pub apply_num: Option<String>,
    pub bank_code: Option<String>,
    pub bank_name: Option<String>,
    pub card_code: Option<String>,
    pub card_name: Option<String>,
    pub card_issuer_code: Option<String>,
    pub card_issuer_name: Option<String>,
    pub card_publisher_code: Option<String>,
    pub card_publisher_name: Option<String>,
    pub card_quota: i64,
    pub card_number: Option<String>,
    pub card_type: Option<i64>,
    pub vbank_code: Option<String>,
    pub vbank_name: Option<String>,
    pub vbank_num: Option<String>,
    pub vbank_holder: Option<String>,
    pub vbank_date: i64,
    pub vbank_issued_at: i64,
    pub name: Option<String>,
    pub amount: i64,
    pub cancel_amount: i64,
    pub currency: String,
    pub buyer_name: Option<String>,
    pub buyer_email: Option<String>,
    pub buyer_tel: Option<String>,
    pub buyer_addr: Option<String>,
    pub buyer_postcode: Option<String>,
    pub custom_data: Option<String>,
    pub user_agent: Option<String>,
    pub status: PaymentStatus,
    pub started_at: i64,
    pub paid_at: i64,
    pub failed_at: i64,
    pub cancelled_at: i64,
    pub fail_reason: Option<String>,
    pub cancel_reason: Option<String>,
    pub receipt_url: Option<String>,
    pub cancel_history: Vec<CancelHistory>,
    pub cancel_receipt_urls: Vec<String>,
    pub cash_receipt_issued: bool,
    pub customer_uid: Option<String>,
    /// `issue` (billing-key issuance in the window), `payment` (`again`), or null.
    pub customer_uid_usage: Option<String>,
    pub promotion: Option<Promotion>,
    /// The tax-free part sent with the charge, and the VAT booked on the
    /// rest (V2 `amount.taxFree`, `amount.vat`; V1's annotation shows
    /// neither). VAT is the PG's: a tenth of the supply, rounded down.
    #[serde(skip)]
    pub tax_free: i64,
    #[serde(skip)]
    pub vat: i64,
    /// Tax-free refunded so far (V2 `amount.cancelledTaxFree`).
    #[serde(skip)]
    pub cancelled_tax_free: i64,
}

impl Payment {
    /// What is left to refund.
    pub fn refundable(&self) -> i64 {
        self.amount - self.cancel_amount
    }

    /// The tax-free part left to refund.
    pub fn refundable_tax_free(&self) -> i64 {
        self.tax_free - self.cancelled_tax_free
    }
}

/// The VAT a PG books on a taxable amount when none is sent: a tenth of
/// the supply value, rounded down (`taxable / 11`).
pub fn pg_vat(taxable: i64) -> i64 {
    taxable.max(0) / 11
}

/// An entry of [`crate::SimHandle::ledger`]: every payment record the simulator holds.
pub type LedgerEntry = Payment;

/// A stored billing key (`CustomerAnnotation`), as `GET /subscribe/customers/{customer_uid}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_uid: String,
    pub pg_provider: String,
    pub pg_id: String,
    pub customer_id: Option<String>,
    pub card_name: Option<String>,
    pub card_code: Option<String>,
    pub card_issuer_code: Option<String>,
    pub card_issuer_name: Option<String>,
    pub card_publisher_code: Option<String>,
    pub card_publisher_name: Option<String>,
    pub card_number: Option<String>,
    pub card_type: Option<i64>,
    pub customer_name: Option<String>,
    pub customer_tel: Option<String>,
    pub customer_email: Option<String>,
    pub customer_addr: Option<String>,
    pub customer_postcode: Option<String>,
    pub inserted: i64,
    pub updated: i64,
}

/// A billing key to register directly, without the payment window
/// ([`crate::SimHandle::add_customer_with`], `POST /__sim/customers`).
///
/// Unset optional fields stay `null`; `pg_provider`/`pg_id` default to the simulator's
/// configured PG, and `pay_method` to `trans` for CHAI and `card` otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewCustomer {
    pub customer_uid: String,
    pub pg_provider: Option<String>,
    pub pg_id: Option<String>,
    pub pay_method: Option<String>,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub customer_tel: Option<String>,
    pub customer_email: Option<String>,
    pub customer_addr: Option<String>,
    pub customer_postcode: Option<String>,
    pub card_name: Option<String>,
    pub card_code: Option<String>,
    pub card_number: Option<String>,
    pub card_type: Option<i64>,
}

impl NewCustomer {
    /// A key for `customer_uid` at `pg_provider` (e.g. `chai`); everything else unset.
    pub fn new(customer_uid: impl Into<String>, pg_provider: impl Into<String>) -> Self {
        Self {
            customer_uid: customer_uid.into(),
            pg_provider: Some(pg_provider.into()),
            ..Self::default()
        }
    }
}

/// The `pay_method` a key issued at `pg_provider` charges with when none was given.
pub(crate) fn default_pay_method(pg_provider: &str) -> &'static str {
    if pg_provider == "chai" {
        "trans"
    } else {
        "card"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_wire_spelling() {
        for status in [
            PaymentStatus::Ready,
            PaymentStatus::Paid,
            PaymentStatus::Failed,
            PaymentStatus::Cancelled,
        ] {
            assert_eq!(status.as_str().parse::<PaymentStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::String(status.as_str().to_owned()))
            );
        }
        assert!("all".parse::<PaymentStatus>().is_err());
        assert!(PaymentStatus::Paid == "paid");
    }

    #[test]
    fn chai_keys_charge_by_transfer() {
        assert_eq!(default_pay_method("chai"), "trans");
        assert_eq!(default_pay_method("nice"), "card");
    }
}
