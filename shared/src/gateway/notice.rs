//! A PG's notification (V1's unsigned `notice_url` POST, V2's signed
//! Standard Webhook), decoded by the vendor's adapter into one neutral
//! notice. A notice is only a hint: the payment it names is fetched from
//! the gateway before anything counts (`crate::notification`).

use crate::secret::Secret;

/// The largest body accepted (V1's documented body is three short fields;
/// V2's a small JSON object).
pub const MAX_BODY: usize = 8 * 1024;

/// A notification as the webhook receiver got it.
#[derive(Debug, Clone, Copy)]
pub struct InboundNotice<'a> {
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    /// UNIX seconds, for a signature's tolerance.
    pub now: i64,
}

impl InboundNotice<'_> {
    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a notification is about, in the engine's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A payment changed at the PG.
    Payment(PaymentNotice),
    /// A billing key was issued (the window finished, perhaps without the
    /// browser coming back): V2's `BillingKey.Issued`.
    KeyIssued { billing_key: Secret },
    /// Nothing the engine acts on: acknowledged, no state.
    Ignored { kind: String, why: &'static str },
}

/// A payment notice: which payment to fetch, and the PG's status hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotice {
    /// The PG's own id of the payment (V1 `imp_uid`, V2 `transactionId`).
    pub payment_ref: String,
    /// Our payment id (V1 `merchant_uid`, V2 `paymentId`).
    pub payment_id: String,
    /// `paid`, `failed`, `cancelled`, `ready`, … (a hint, never believed).
    pub status: String,
    pub cancellation_id: Option<String>,
}

/// Why a notification was refused (nothing read, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadNotice {
    #[error("empty body")]
    Empty,
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("unsupported content type (use application/json or application/x-www-form-urlencoded)")]
    ContentType,
    #[error("body is not valid UTF-8")]
    Encoding,
    #[error("body is malformed or misses imp_uid, merchant_uid or status")]
    Fields,
    /// A signed notice whose signature, timestamp or headers do not verify.
    #[error("signature not valid: {0}")]
    Signature(String),
    /// Verified, but not a webhook body of this PG.
    #[error("not a webhook body of this PG: {0}")]
    Body(String),
}

/// Letters, digits, `_` and `-`, at most 64: the ids of either PG.
pub(crate) fn valid_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
