//! PortOne V2 as the engine's payment gateway, with V1's rules: a charge is
//! paid only on a verified record, declined only after a lookup says
//! FAILED (the engine confirms every decline), "the key is gone" only
//! after the key lookup says so, and anything unclear (5xx, timeouts, an
//! error type this code does not know) is ambiguous: settled by looking the
//! `paymentId` up before anything else. A re-send uses the same `paymentId`,
//! which V2 pays at most once.

use chrono::DateTime;
use reqwest::Method;

use super::model::{
    Amount, BillingKeyInfo, BillingKeyPaymentInput, CancelPaymentBody, ErrorBody, Ignored, Payment,
};
use super::{Answer, PortOneClient};
use crate::billing::{PaymentRecord, RecordStatus};
use crate::gateway::{
    Ambiguity, AmbiguityKind, BillingKey, ChargeOutcome, ChargeRequest, GatewayError,
    PaymentGateway, RefundRequest, Rejection, RejectionKind,
};

fn parse_time(text: Option<&str>) -> Option<DateTime<chrono::Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
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
        cancel_reason: None,
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
fn refused(status: u16, error: &ErrorBody) -> GatewayError {
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

impl PortOneClient {
    /// `GET /payments/{paymentId}`.
    pub async fn payment_by_id(&self, payment_id: &str) -> Result<Payment, GatewayError> {
        match self
            .call::<Payment, ()>(Method::GET, &["payments", payment_id], None)
            .await
        {
            Answer::Ok(p) => Ok(p),
            Answer::Refused { status, error } => Err(refused(status, &error)),
            Answer::Failed(e) => Err(e),
        }
    }

    /// `GET /billing-keys/{billingKey}`.
    pub async fn key_info(&self, billing_key: &str) -> Result<BillingKeyInfo, GatewayError> {
        match self
            .call::<BillingKeyInfo, ()>(Method::GET, &["billing-keys", billing_key], None)
            .await
        {
            Answer::Ok(k) => Ok(k),
            Answer::Refused { status, error } => Err(refused(status, &error)),
            Answer::Failed(e) => Err(e),
        }
    }

    /// What a charge's typed refusal means. Declines are confirmed by the
    /// engine's lookup; "already paid" and "key gone" by its lookups too.
    fn charge_refused(
        &self,
        request: &ChargeRequest,
        status: u16,
        error: &ErrorBody,
    ) -> ChargeOutcome {
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
                cancel_reason: None,
            }),
            "UNAUTHORIZED" | "FORBIDDEN" => {
                ChargeOutcome::Rejected(rejection(RejectionKind::Unauthorized, status, error))
            }
            "ALREADY_PAID"
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
}

impl PaymentGateway for PortOneClient {
    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let body = BillingKeyPaymentInput {
            store_id: self.config.store_id.clone(),
            billing_key: request.customer_uid.clone(),
            channel_key: self.config.channel_key.clone(),
            order_name: request.name.clone(),
            amount: Amount {
                total: request.amount,
            },
            currency: "KRW",
            custom_data: request.custom_data.clone(),
            notice_urls: request.notice_url.clone().map(|u| vec![u]),
        };
        let segments = ["payments", request.merchant_uid.as_str(), "billing-key"];
        match self
            .call::<Ignored, _>(Method::POST, &segments, Some(&body))
            .await
        {
            // 200 carries only {pgTxId, paidAt}: the record decides, and
            // only a record that reads paid is a payment; anything else
            // is settled by the engine's lookup rules.
            Answer::Ok(_) => match self.payment_by_id(&request.merchant_uid).await {
                Ok(p) if record_of(&p).status == RecordStatus::Paid => {
                    ChargeOutcome::Paid(record_of(&p))
                }
                Ok(p) => ChargeOutcome::Ambiguous(Ambiguity {
                    kind: AmbiguityKind::Malformed,
                    http_status: Some(200),
                    detail: format!("charge answered 200 but the payment reads {}", p.status),
                }),
                Err(e) => ChargeOutcome::Ambiguous(Ambiguity {
                    kind: AmbiguityKind::Connection,
                    http_status: None,
                    detail: format!("paid, but the payment could not be read back: {e}"),
                }),
            },
            Answer::Refused { status, error } => self.charge_refused(request, status, &error),
            Answer::Failed(GatewayError::Rejected(r)) => ChargeOutcome::Rejected(r),
            Answer::Failed(GatewayError::Ambiguous(a)) => ChargeOutcome::Ambiguous(a),
        }
    }

    /// V2 looks payments up by `paymentId` only: a transaction id alone
    /// cannot be read (nothing here needs it: see `notified_payment`).
    async fn payment(&self, _imp_uid: &str) -> Result<PaymentRecord, GatewayError> {
        Err(GatewayError::Rejected(Rejection {
            kind: RejectionKind::BadRequest,
            http_status: None,
            code: None,
            message: "PortOne V2 looks payments up by paymentId".into(),
        }))
    }

    async fn notified_payment(
        &self,
        _imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<PaymentRecord, GatewayError> {
        self.find_payment(merchant_uid).await
    }

    async fn find_payment(&self, merchant_uid: &str) -> Result<PaymentRecord, GatewayError> {
        self.payment_by_id(merchant_uid)
            .await
            .map(|p| record_of(&p))
    }

    /// `DELETED` is a key that is gone, like a missing one.
    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        let info = self.key_info(customer_uid).await?;
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
            .find(|c| c.key.as_deref() == Some(self.config.channel_key.as_str()));
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

    async fn delete_billing_key(&self, customer_uid: &str) -> Result<(), GatewayError> {
        match self
            .call::<Ignored, ()>(Method::DELETE, &["billing-keys", customer_uid], None)
            .await
        {
            Answer::Ok(_) => Ok(()),
            Answer::Refused { error, .. } if error.kind == "BILLING_KEY_ALREADY_DELETED" => Ok(()),
            Answer::Refused { status, error } => Err(refused(status, &error)),
            Answer::Failed(e) => Err(e),
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        let body = CancelPaymentBody {
            store_id: self.config.store_id.clone(),
            amount: request.amount,
            reason: request.reason.clone(),
            current_cancellable_amount: request.checksum,
        };
        let segments = ["payments", request.merchant_uid.as_str(), "cancel"];
        match self
            .call::<Ignored, _>(Method::POST, &segments, Some(&body))
            .await
        {
            Answer::Ok(_) => self.find_payment(&request.merchant_uid).await,
            Answer::Refused { status, error } => Err(refused(status, &error)),
            Answer::Failed(e) => Err(e),
        }
    }
}
