//! How the V1 adapter reads i'mport's answers, as pure functions of (HTTP
//! status, body). The client reads every answer through them, and the
//! simulation's model of i'mport answers in V1's wire format through them
//! too, so the classification the simulation tests is the production one.
//! (A 401 never reaches these: the client refreshes its token and retries
//! first.)

use reqwest::StatusCode;

use super::client::{AgainOutcome, decode};
use super::model::{BillingKey, Payment, ReceiptAnnotation};
use crate::billing::PaymentRecord;
use crate::billing::receipts::{IssuedReceipt, Outcome};
use crate::gateway::{self, ChargeOutcome, GatewayError, RejectionKind};

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The answer to `POST /subscribe/payments/again`.
pub fn charge(status: u16, body: &[u8]) -> ChargeOutcome {
    outcome(AgainOutcome::from_result(decode::<Payment>(
        status_of(status),
        body,
    )))
}

/// A V1 charge outcome in the port's terms.
pub(crate) fn outcome(again: AgainOutcome) -> ChargeOutcome {
    match again {
        AgainOutcome::Paid(p) => ChargeOutcome::Paid(PaymentRecord::from(&p)),
        AgainOutcome::Declined(p) => ChargeOutcome::Declined(PaymentRecord::from(&p)),
        AgainOutcome::Rejected(r) => ChargeOutcome::Rejected(r),
        AgainOutcome::Ambiguous(a) => ChargeOutcome::Ambiguous(a),
    }
}

/// The answer to a payment lookup (`GET /payments/{imp_uid}`,
/// `GET /payments/find/{merchant_uid}[/{status}]`) or a refund
/// (`POST /payments/cancel`).
pub fn payment(status: u16, body: &[u8]) -> Result<PaymentRecord, GatewayError> {
    decode::<Payment>(status_of(status), body).map(|p| PaymentRecord::from(&p))
}

/// A receipt annotation in the core's terms: live, or cancelled (none live).
fn live_receipt(a: &ReceiptAnnotation, tax_free: i64) -> Option<IssuedReceipt> {
    (a.cancelled_at == 0).then(|| IssuedReceipt {
        amount: a.amount,
        tax_free,
        vat: a.vat,
        issue_number: a.apply_num.clone(),
        url: a.receipt_url.clone(),
        issued_at: chrono::DateTime::from_timestamp(a.applied_at, 0).unwrap_or_default(),
    })
}

/// Nothing was done: the request never arrived or our credentials were refused.
fn not_done(e: &GatewayError) -> bool {
    matches!(
        e,
        GatewayError::Rejected(r) if matches!(r.kind, RejectionKind::NotSent | RejectionKind::Unauthorized)
    )
}

/// The answer to `POST /receipts/{imp_uid}` (the tax-free part sent, which
/// the annotation does not echo). i'mport answers 400 to a payment that
/// has a live receipt already ("이미 … 발행"), and 500 when the PG failed
/// to issue, which may also be an issuance still in progress: looked up.
pub fn receipt_issued(
    answer: Result<ReceiptAnnotation, GatewayError>,
    tax_free: i64,
) -> Result<Outcome, GatewayError> {
    match answer {
        Ok(a) => Ok(live_receipt(&a, tax_free).map_or_else(
            || Outcome::Refused("the PG answered with a cancelled receipt".into()),
            Outcome::Issued,
        )),
        Err(e) if not_done(&e) => Err(e),
        Err(GatewayError::Rejected(r)) if r.message.contains("이미") => {
            Ok(Outcome::AlreadyIssued(r.message))
        }
        Err(GatewayError::Rejected(r)) => Ok(Outcome::Refused(r.to_string())),
        Err(GatewayError::Ambiguous(a)) => Ok(Outcome::Unclear(a.to_string())),
    }
}

/// The answer to `DELETE /receipts/{imp_uid}`: a 400 or 404 means there is
/// no live receipt to cancel.
pub fn receipt_cancelled(
    answer: Result<ReceiptAnnotation, GatewayError>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, GatewayError> {
    match answer {
        Ok(a) => Ok(Outcome::Cancelled(
            chrono::DateTime::from_timestamp(a.cancelled_at, 0)
                .filter(|_| a.cancelled_at > 0)
                .unwrap_or(now),
        )),
        Err(e) if not_done(&e) => Err(e),
        Err(GatewayError::Rejected(r))
            if matches!(r.kind, RejectionKind::BadRequest | RejectionKind::NotFound) =>
        {
            Ok(Outcome::Found(None))
        }
        Err(GatewayError::Rejected(r)) => Ok(Outcome::Refused(r.to_string())),
        Err(GatewayError::Ambiguous(a)) => Ok(Outcome::Unclear(a.to_string())),
    }
}

/// The answer to `GET /receipts/{imp_uid}`: 404 is "none issued".
pub fn receipt_found(
    answer: Result<ReceiptAnnotation, GatewayError>,
    tax_free: i64,
) -> Result<Outcome, GatewayError> {
    match answer {
        Ok(a) => Ok(Outcome::Found(live_receipt(&a, tax_free))),
        Err(e) if e.is_not_found() => Ok(Outcome::Found(None)),
        Err(e) => Err(e),
    }
}

/// Decodes a receipt answer of i'mport (for the simulation's model).
pub fn receipt(status: u16, body: &[u8]) -> Result<ReceiptAnnotation, GatewayError> {
    decode::<ReceiptAnnotation>(status_of(status), body)
}

/// The answer to `GET /subscribe/customers/{customer_uid}`.
pub fn billing_key(status: u16, body: &[u8]) -> Result<gateway::BillingKey, GatewayError> {
    decode::<BillingKey>(status_of(status), body).map(port_key)
}

pub(crate) fn port_key(k: BillingKey) -> gateway::BillingKey {
    gateway::BillingKey {
        customer_uid: k.customer_uid,
        pg_provider: k.pg_provider,
        pg_id: k.pg_id,
        card_name: k.card_name,
        card_number: k.card_number,
        inserted: k.inserted,
        issue_id: None,
        customer_id: None,
        on_our_channel: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i64, message: &str, response: &str) -> Vec<u8> {
        format!(r#"{{"code":{code},"message":"{message}","response":{response}}}"#).into_bytes()
    }

    const ANNOTATION: &str = r#"{"imp_uid":"imps_1","apply_num":"123456789","type":"person","amount":9900,"vat":900,"receipt_url":"https://r.example/1","applied_at":1790000000,"cancelled_at":0}"#;

    #[test]
    fn cash_receipt_answers_read_as_the_core_needs_them() {
        let issued = receipt_issued(receipt(200, &body(0, "", ANNOTATION)), 0).unwrap();
        assert!(
            matches!(issued, Outcome::Issued(ref l) if l.amount == 9900 && l.issue_number == "123456789")
        );
        let twice = receipt_issued(
            receipt(
                400,
                &body(-1, "이미 현금영수증이 발급된 결제건입니다.", "null"),
            ),
            0,
        )
        .unwrap();
        assert!(matches!(twice, Outcome::AlreadyIssued(_)));
        // A 500 may be a failure or an issuance still in progress: looked up.
        let failed = receipt_issued(receipt(500, &body(-1, "[PG] 발급 실패", "null")), 0).unwrap();
        assert!(matches!(failed, Outcome::Unclear(_)));
        let card =
            receipt_issued(receipt(400, &body(-1, "현금성 거래가 아닙니다", "null")), 0).unwrap();
        assert!(matches!(card, Outcome::Refused(_)));
        // Cancel: a 400 says none is live.
        let none = receipt_cancelled(
            receipt(400, &body(-1, "발급된 현금영수증이 없습니다.", "null")),
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(none, Outcome::Found(None));
        // Lookup: 404 is "none"; a cancelled one is none live.
        let missing = receipt_found(receipt(404, &body(-1, "없음", "null")), 0).unwrap();
        assert_eq!(missing, Outcome::Found(None));
        let was = ANNOTATION.replace(r#""cancelled_at":0"#, r#""cancelled_at":1790000100"#);
        assert_eq!(
            receipt_found(receipt(200, &body(0, "", &was)), 0).unwrap(),
            Outcome::Found(None)
        );
        // Throttled: nothing was done.
        assert!(receipt_issued(receipt(429, &body(-1, "slow down", "null")), 0).is_err());
    }
}
