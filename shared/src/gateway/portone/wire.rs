//! How the V2 adapter reads PortOne's answers, as pure functions of (HTTP
//! status, body). The client reads every answer through them, and the
//! simulation's model of PortOne answers in V2's wire format through them
//! too, so the classification the simulation tests is the production one.

use chrono::DateTime;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::model::{
    BillingKeyInfo, CancelCashReceiptResponse, CashReceipt, ErrorBody, IssueCashReceiptResponse,
    Payment,
};
use crate::billing::receipts::{IssuedReceipt, Outcome};
use crate::billing::{PaymentRecord, RecordStatus};
use crate::gateway::{
    Ambiguity, AmbiguityKind, BillingKey, ChargeOutcome, ChargeRequest, GatewayError, Rejection,
    RejectionKind,
};

/// One answer of PortOne: the decoded body, or the typed error it sent.
#[derive(Debug)]
pub enum Answer<T> {
    Ok(T),
    /// `{type, message}` with its HTTP status (unknown types kept as text).
    Refused {
        status: u16,
        error: ErrorBody,
    },
    /// A transport failure, a 5xx without a typed body, or an unreadable one.
    Failed(GatewayError),
}

/// Reads one answer.
pub fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Answer<T> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_success() {
        return match serde_json::from_slice::<T>(body) {
            Ok(v) => Answer::Ok(v),
            Err(e) => Answer::Failed(GatewayError::Ambiguous(Ambiguity {
                kind: AmbiguityKind::Malformed,
                http_status: Some(status.as_u16()),
                detail: format!("unreadable PortOne answer: {e}"),
            })),
        };
    }
    // Throttled: PortOne did not take the request, whatever the body says.
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Answer::Failed(GatewayError::not_sent(format!("PortOne answered {status}")));
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) if !error.kind.is_empty() => Answer::Refused {
            status: status.as_u16(),
            error,
        },
        _ if status.is_server_error() => Answer::Failed(GatewayError::Ambiguous(Ambiguity {
            kind: AmbiguityKind::ServerError,
            http_status: Some(status.as_u16()),
            detail: format!("PortOne answered {status} without a typed error"),
        })),
        _ if status == StatusCode::REQUEST_TIMEOUT => {
            Answer::Failed(GatewayError::not_sent(format!("PortOne answered {status}")))
        }
        _ => Answer::Failed(GatewayError::Rejected(Rejection {
            kind: if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                RejectionKind::Unauthorized
            } else {
                RejectionKind::BadRequest
            },
            http_status: Some(status.as_u16()),
            code: None,
            message: format!("PortOne answered {status} without a typed error"),
        })),
    }
}

fn parse_time(text: Option<&str>) -> Option<DateTime<chrono::Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Nothing was done: never sent, or our credentials refused.
fn receipt_not_done(status: u16, error: &ErrorBody) -> Option<GatewayError> {
    matches!(error.kind.as_str(), "UNAUTHORIZED" | "FORBIDDEN")
        .then(|| GatewayError::Rejected(rejection(RejectionKind::Unauthorized, status, error)))
}

fn unclear_or_err(e: GatewayError) -> Result<Outcome, GatewayError> {
    match e {
        GatewayError::Ambiguous(a) => Ok(Outcome::Unclear(a.to_string())),
        e => Err(e),
    }
}

/// The answer to `POST /cash-receipts` for `request`: 409
/// `CASH_RECEIPT_ALREADY_ISSUED` when one is live; a 5xx (an issuance in
/// progress, or not) is unclear and looked up.
pub fn receipt_issued(
    answer: Answer<IssueCashReceiptResponse>,
    request: &crate::gateway::CashReceiptRequest,
    now: DateTime<chrono::Utc>,
) -> Result<Outcome, GatewayError> {
    match answer {
        Answer::Ok(r) => Ok(Outcome::Issued(IssuedReceipt {
            amount: request.amount,
            tax_free: request.tax_free,
            vat: crate::billing::TaxSplit::computed(request.amount, request.tax_free).vat,
            issue_number: r.cash_receipt.issue_number,
            url: r.cash_receipt.url,
            issued_at: now,
        })),
        Answer::Refused { status, error } => {
            if let Some(e) = receipt_not_done(status, &error) {
                return Err(e);
            }
            Ok(match error.kind.as_str() {
                "CASH_RECEIPT_ALREADY_ISSUED" => Outcome::AlreadyIssued(error.describe()),
                _ if status >= 500 => Outcome::Unclear(error.describe()),
                _ => Outcome::Refused(error.describe()),
            })
        }
        Answer::Failed(e) => unclear_or_err(e),
    }
}

/// The answer to `POST /payments/{paymentId}/cash-receipt/cancel`:
/// `CASH_RECEIPT_NOT_FOUND` / `CASH_RECEIPT_NOT_ISSUED` mean none is live.
pub fn receipt_cancelled(
    answer: Answer<CancelCashReceiptResponse>,
    now: DateTime<chrono::Utc>,
) -> Result<Outcome, GatewayError> {
    match answer {
        Answer::Ok(r) => Ok(Outcome::Cancelled(
            parse_time(r.cancelled_at.as_deref()).unwrap_or(now),
        )),
        Answer::Refused { status, error } => {
            if let Some(e) = receipt_not_done(status, &error) {
                return Err(e);
            }
            Ok(match error.kind.as_str() {
                "CASH_RECEIPT_NOT_FOUND" | "CASH_RECEIPT_NOT_ISSUED" => Outcome::Found(None),
                _ if status >= 500 => Outcome::Unclear(error.describe()),
                _ => Outcome::Refused(error.describe()),
            })
        }
        Answer::Failed(e) => unclear_or_err(e),
    }
}

/// The answer to `GET /payments/{paymentId}/cash-receipt`: the live one
/// when its status is `ISSUED`.
pub fn receipt_found(answer: Answer<CashReceipt>) -> Result<Outcome, GatewayError> {
    match answer {
        Answer::Ok(r) if r.status == "ISSUED" => {
            let amount = r.amount.unwrap_or(0);
            let tax_free = r.tax_free_amount.unwrap_or(0);
            Ok(Outcome::Found(Some(IssuedReceipt {
                amount,
                tax_free,
                vat: r
                    .vat_amount
                    .unwrap_or_else(|| crate::billing::TaxSplit::computed(amount, tax_free).vat),
                issue_number: r.issue_number.unwrap_or_default(),
                url: r.url,
                issued_at: parse_time(r.issued_at.as_deref()).unwrap_or_default(),
            })))
        }
        Answer::Ok(_) => Ok(Outcome::Found(None)),
        Answer::Refused { error, .. } if error.kind == "CASH_RECEIPT_NOT_FOUND" => {
            Ok(Outcome::Found(None))
        }
        Answer::Refused { status, error } => Err(refused(status, &error)),
        Answer::Failed(e) => Err(e),
    }
}

/// A V2 payment in the engine's terms. `imp_uid` is the transaction id
/// (V2's equivalent of V1's `imp_uid`); the billing key is the record's key.
pub fn record_of(p: &Payment) -> PaymentRecord {
    let status = match p.status.as_str() {
        "PAID" | "PARTIAL_CANCELLED" => RecordStatus::Paid,
        "FAILED" => RecordStatus::Failed,
        "CANCELLED" => RecordStatus::Cancelled,
        "READY" | "PAY_PENDING" | "VIRTUAL_ACCOUNT_ISSUED" => RecordStatus::Ready,
        _ => RecordStatus::Other,
    };
    let failure = p.failure.as_ref();
    PaymentRecord {
        imp_uid: p.transaction_id.clone(),
        merchant_uid: p.id.clone(),
        status,
        amount: p.amount.total,
        cancelled_amount: p.amount.cancelled,
        currency: p.currency.clone(),
        customer_uid: p.billing_key.clone(),
        paid_at: parse_time(p.paid_at.as_deref()),
        fail_reason: failure.and_then(|f| f.pg_message.clone().or_else(|| f.reason.clone())),
        pg_code: failure.and_then(|f| f.pg_code.clone()),
        cancel_reason: None,
        receipt_url: p.receipt_url.clone(),
        tax_free: p.amount.tax_free,
        vat: p.amount.vat,
        cash: p
            .method
            .as_ref()
            .is_some_and(super::model::PaymentMethod::is_cash),
    }
}

fn rejection(kind: RejectionKind, status: u16, error: &ErrorBody) -> Rejection {
    Rejection {
        kind,
        http_status: Some(status),
        code: None,
        message: error.describe(),
    }
}

fn ambiguous(status: u16, error: &ErrorBody) -> Ambiguity {
    Ambiguity {
        kind: AmbiguityKind::ServerError,
        http_status: Some(status),
        detail: format!("PortOne answered {status} {}", error.describe()),
    }
}

/// A typed refusal of a lookup, delete or refund.
pub fn refused(status: u16, error: &ErrorBody) -> GatewayError {
    match error.kind.as_str() {
        "PAYMENT_NOT_FOUND" | "BILLING_KEY_NOT_FOUND" => {
            GatewayError::Rejected(rejection(RejectionKind::NotFound, status, error))
        }
        "UNAUTHORIZED" | "FORBIDDEN" => {
            GatewayError::Rejected(rejection(RejectionKind::Unauthorized, status, error))
        }
        "INVALID_REQUEST" => {
            GatewayError::Rejected(rejection(RejectionKind::BadRequest, status, error))
        }
        _ if status >= 500 => GatewayError::Ambiguous(ambiguous(status, error)),
        _ => GatewayError::Rejected(rejection(RejectionKind::Business, status, error)),
    }
}

/// What a charge's typed refusal means. Declines are confirmed by the
/// engine's lookup; "already paid" and "key gone" by its lookups too.
pub fn charge_refused(request: &ChargeRequest, status: u16, error: &ErrorBody) -> ChargeOutcome {
    match error.kind.as_str() {
        // Likely a decline: the payment should now read FAILED.
        "PG_PROVIDER" => ChargeOutcome::Declined(PaymentRecord {
            imp_uid: String::new(),
            merchant_uid: request.merchant_uid.clone(),
            status: RecordStatus::Failed,
            amount: request.amount,
            cancelled_amount: 0,
            currency: Some("KRW".into()),
            customer_uid: Some(request.customer_uid.clone()),
            paid_at: None,
            fail_reason: error.pg_message.clone().or_else(|| error.message.clone()),
            pg_code: error.pg_code.clone(),
            cancel_reason: None,
            receipt_url: None,
            tax_free: None,
            vat: None,
            cash: false,
        }),
        "UNAUTHORIZED" => {
            ChargeOutcome::Rejected(rejection(RejectionKind::Unauthorized, status, error))
        }
        // The request was refused for this payment (the key, the store):
        // a refusal of one charge, not of our credentials, which would stop
        // every run at this subscription (defect S6).
        "FORBIDDEN"
        | "ALREADY_PAID"
        | "BILLING_KEY_NOT_FOUND"
        | "BILLING_KEY_ALREADY_DELETED"
        | "CHANNEL_NOT_FOUND"
        | "INVALID_REQUEST"
        | "MAX_TRANSACTION_COUNT_REACHED"
        | "PAYMENT_SCHEDULE_ALREADY_EXISTS"
        | "DISCOUNT_AMOUNT_EXCEEDS_TOTAL_AMOUNT"
        | "PROMOTION_PAY_METHOD_DOES_NOT_MATCH"
        | "SUM_OF_PARTS_EXCEEDS_TOTAL_AMOUNT" => {
            ChargeOutcome::Rejected(rejection(RejectionKind::Business, status, error))
        }
        // An error type this code does not know: money may have moved.
        _ => ChargeOutcome::Ambiguous(ambiguous(status, error)),
    }
}

/// What the answer to `POST /payments/{paymentId}/billing-key` says:
/// `None` for a 200, after which the payment is read back ([`read_back`]:
/// the 200 carries only `{pgTxId, paidAt}`); otherwise its outcome.
pub fn charge(
    request: &ChargeRequest,
    answer: Answer<super::model::Ignored>,
) -> Option<ChargeOutcome> {
    match answer {
        Answer::Ok(_) => None,
        Answer::Refused { status, error } => Some(charge_refused(request, status, &error)),
        Answer::Failed(GatewayError::Rejected(r)) => Some(ChargeOutcome::Rejected(r)),
        Answer::Failed(GatewayError::Ambiguous(a)) => Some(ChargeOutcome::Ambiguous(a)),
    }
}

/// What a charge answered 200 is, once its payment was read back: only a
/// record that reads paid is a payment; anything else is settled by the
/// engine's lookup rules.
pub fn read_back(payment: Result<PaymentRecord, GatewayError>) -> ChargeOutcome {
    match payment {
        Ok(p) if p.status == RecordStatus::Paid => ChargeOutcome::Paid(p),
        Ok(p) => ChargeOutcome::Ambiguous(Ambiguity {
            kind: AmbiguityKind::Malformed,
            http_status: Some(200),
            detail: format!(
                "charge answered 200 but the payment reads {}",
                p.status.as_str()
            ),
        }),
        Err(e) => ChargeOutcome::Ambiguous(Ambiguity {
            kind: AmbiguityKind::Connection,
            http_status: None,
            detail: format!("paid, but the payment could not be read back: {e}"),
        }),
    }
}

/// The answer to `GET /payments/{paymentId}` (or a refund's read-back).
pub fn payment(status: u16, body: &[u8]) -> Result<PaymentRecord, GatewayError> {
    match decode::<Payment>(status, body) {
        Answer::Ok(p) => Ok(record_of(&p)),
        Answer::Refused { status, error } => Err(refused(status, &error)),
        Answer::Failed(e) => Err(e),
    }
}

/// The answer to `GET /billing-keys/{billingKey}`, for a deployment that
/// charges through `channel_key`. `DELETED` is a key that is gone, like a
/// missing one.
pub fn billing_key(
    status: u16,
    body: &[u8],
    channel_key: &str,
) -> Result<BillingKey, GatewayError> {
    let info = match decode::<BillingKeyInfo>(status, body) {
        Answer::Ok(k) => k,
        Answer::Refused { status, error } => return Err(refused(status, &error)),
        Answer::Failed(e) => return Err(e),
    };
    key_of(&info, channel_key)
}

pub(crate) fn key_of(info: &BillingKeyInfo, channel_key: &str) -> Result<BillingKey, GatewayError> {
    if info.status != "ISSUED" {
        return Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::NotFound,
            http_status: Some(200),
            code: None,
            message: format!("billing key is {}", info.status),
        }));
    }
    let channel = info
        .channels
        .iter()
        .find(|c| c.key.as_deref() == Some(channel_key));
    let card = info.methods.iter().find_map(|m| m.card.clone());
    Ok(BillingKey {
        customer_uid: info.billing_key.clone(),
        pg_provider: channel
            .and_then(|c| c.pg_provider.clone())
            .unwrap_or_default()
            .to_ascii_lowercase(),
        pg_id: channel.and_then(|c| c.key.clone()),
        card_name: card.as_ref().and_then(|c| c.name.clone()),
        card_number: card.and_then(|c| c.number),
        inserted: parse_time(info.issued_at.as_deref()).map_or(0, |t| t.timestamp()),
        issue_id: info.issue_id.clone(),
        customer_id: info.customer.id.clone(),
        on_our_channel: channel.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{ReceiptHolder, ReceiptKind};
    use crate::gateway::CashReceiptRequest;

    #[test]
    fn cash_receipt_answers_read_as_the_core_needs_them() {
        let now = chrono::Utc::now();
        let request = CashReceiptRequest {
            imp_uid: "tx".into(),
            merchant_uid: "pay1".into(),
            holder: ReceiptHolder {
                kind: ReceiptKind::Corporate,
                identifier: crate::secret::Pii::new("1234567890"),
            },
            amount: 9900,
            tax_free: 4000,
            order_name: "월간".into(),
        };
        let ok = decode(
            200,
            br#"{"cashReceipt":{"issueNumber":"A1","url":"u","pgReceiptId":"p"}}"#,
        );
        let Ok(Outcome::Issued(live)) = receipt_issued(ok, &request, now) else {
            panic!("issued");
        };
        assert_eq!((live.amount, live.tax_free, live.vat), (9900, 4000, 536));
        let twice = decode(409, br#"{"type":"CASH_RECEIPT_ALREADY_ISSUED"}"#);
        assert!(matches!(
            receipt_issued(twice, &request, now),
            Ok(Outcome::AlreadyIssued(_))
        ));
        // The spec's 502 PG_PROVIDER: unclear, looked up (ISSUE_FAILED reads as none).
        let pg = decode(502, br#"{"type":"PG_PROVIDER","pgCode":"CR01"}"#);
        assert!(matches!(
            receipt_issued(pg, &request, now),
            Ok(Outcome::Unclear(_))
        ));
        let bad = decode(400, br#"{"type":"INVALID_REQUEST","message":"amount"}"#);
        assert!(matches!(
            receipt_issued(bad, &request, now),
            Ok(Outcome::Refused(_))
        ));
        let who = decode(401, br#"{"type":"UNAUTHORIZED"}"#);
        assert!(
            receipt_issued(who, &request, now).is_err(),
            "nothing was done"
        );
        let none = decode(404, br#"{"type":"CASH_RECEIPT_NOT_ISSUED"}"#);
        assert_eq!(receipt_cancelled(none, now).unwrap(), Outcome::Found(None));
        let failed = decode(200, br#"{"status":"ISSUE_FAILED"}"#);
        assert_eq!(receipt_found(failed).unwrap(), Outcome::Found(None));
        let shown = decode(200, br#"{"status":"ISSUED","amount":6600,"taxFreeAmount":2666,"vatAmount":357,"issueNumber":"A2"}"#);
        assert!(
            matches!(receipt_found(shown), Ok(Outcome::Found(Some(ref l))) if l.amount == 6600 && l.vat == 357)
        );
    }
}
