//! i'mport V1 as the engine's payment gateway: maps the port's calls onto
//! V1's endpoints and V1's payments onto [`PaymentRecord`]s.

use chrono::DateTime;

use super::client::IamportClient;
use super::model::{AgainRequest, CancelRequest, Payment, PaymentStatus, ReceiptRequest};
use crate::billing::ReceiptKind;
use crate::billing::receipts::Outcome;
use crate::billing::{PaymentRecord, RecordStatus, Registration};
use crate::gateway::CashReceiptRequest;
use crate::gateway::{
    BadNotice, BillingKey, ChargeOutcome, ChargeRequest, GatewayError, InboundNotice, Notice,
    PaymentGateway, PaymentWindow, RefundRequest, WindowProof,
};

impl From<&Payment> for PaymentRecord {
    fn from(p: &Payment) -> Self {
        let status = match p.status {
            PaymentStatus::Ready => RecordStatus::Ready,
            PaymentStatus::Paid => RecordStatus::Paid,
            PaymentStatus::Failed => RecordStatus::Failed,
            PaymentStatus::Cancelled => RecordStatus::Cancelled,
            PaymentStatus::Unknown => RecordStatus::Other,
        };
        Self {
            imp_uid: p.imp_uid.clone(),
            merchant_uid: p.merchant_uid.clone(),
            status,
            amount: p.amount,
            cancelled_amount: p.cancel_amount,
            currency: p.currency.clone(),
            customer_uid: p.customer_uid.clone(),
            // V1 uses 0 for "did not happen".
            paid_at: (p.paid_at > 0)
                .then(|| DateTime::from_timestamp(p.paid_at, 0))
                .flatten(),
            fail_reason: p.fail_reason.clone(),
            pg_code: None,
            cancel_reason: p.cancel_reason.clone(),
            receipt_url: p.receipt_url.clone(),
            // i'mport's payment reports no VAT split: it is what we sent.
            tax_free: None,
            vat: None,
            // Account transfer and virtual account are cash payments.
            cash: matches!(p.pay_method.as_deref(), Some("trans" | "vbank")),
        }
    }
}

impl PaymentGateway for IamportClient {
    fn window(&self, reg: &Registration, redirect_url: &str) -> PaymentWindow {
        PaymentWindow::RequestPay(super::window::request_pay(
            reg,
            &self.config.pay_method,
            redirect_url,
        ))
    }

    fn window_proof(&self) -> WindowProof {
        WindowProof::Payment
    }

    fn decode_notice(&self, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
        super::notice::decode(inbound)
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let again = AgainRequest {
            customer_uid: request.customer_uid.clone(),
            merchant_uid: request.merchant_uid.clone(),
            amount: request.amount,
            tax_free: (request.tax_free > 0).then_some(request.tax_free),
            currency: "KRW",
            name: request.name.clone(),
            buyer_name: request.buyer.name.clone(),
            buyer_email: request.buyer.email.clone(),
            buyer_tel: request.buyer.tel.clone(),
            custom_data: request.custom_data.clone(),
            notice_url: request.notice_url.clone(),
        };
        super::wire::outcome(self.charge_again(&again).await)
    }

    async fn payment(&self, imp_uid: &str) -> Result<PaymentRecord, GatewayError> {
        IamportClient::payment(self, imp_uid)
            .await
            .map(|p| PaymentRecord::from(&p))
    }

    /// V1 webhooks carry the `imp_uid`: `GET /payments/{imp_uid}`.
    async fn notified_payment(
        &self,
        imp_uid: &str,
        _merchant_uid: &str,
    ) -> Result<PaymentRecord, GatewayError> {
        PaymentGateway::payment(self, imp_uid).await
    }

    /// `GET /payments/find/{merchant_uid}/paid`, then, when there is no paid
    /// one, `GET /payments/find/{merchant_uid}` (the newest of any status).
    async fn find_payment(&self, merchant_uid: &str) -> Result<PaymentRecord, GatewayError> {
        let found = match IamportClient::find_payment(self, merchant_uid, Some(PaymentStatus::Paid))
            .await
        {
            Err(e) if e.is_not_found() => {
                IamportClient::find_payment(self, merchant_uid, None).await
            }
            other => other,
        };
        found.map(|p| PaymentRecord::from(&p))
    }

    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        IamportClient::billing_key(self, customer_uid)
            .await
            .map(super::wire::port_key)
    }

    async fn delete_billing_key(&self, customer_uid: &str) -> Result<(), GatewayError> {
        IamportClient::delete_billing_key(self, customer_uid)
            .await
            .map(|_| ())
    }

    async fn issue_cash_receipt(
        &self,
        request: &CashReceiptRequest,
    ) -> Result<Outcome, GatewayError> {
        let holder = &request.holder;
        let digits = holder.identifier.expose();
        let body = ReceiptRequest {
            identifier: holder.identifier.clone(),
            identifier_type: match holder.kind {
                ReceiptKind::Corporate => "business",
                ReceiptKind::Personal if digits.starts_with("01") => "phone",
                ReceiptKind::Personal => "taxcard",
            },
            kind: match holder.kind {
                ReceiptKind::Personal => "person",
                ReceiptKind::Corporate => "company",
            },
            tax_free: request.tax_free,
        };
        super::wire::receipt_issued(
            self.issue_receipt(&request.imp_uid, &body).await,
            request.tax_free,
        )
    }

    async fn cancel_cash_receipt(
        &self,
        imp_uid: &str,
        _merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        super::wire::receipt_cancelled(self.revoke_receipt(imp_uid).await, chrono::Utc::now())
    }

    async fn cash_receipt(
        &self,
        imp_uid: &str,
        _merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        // i'mport's annotation has no tax-free part: the VAT tells the rest.
        super::wire::receipt_found(self.receipt(imp_uid).await, 0)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        self.cancel(&CancelRequest {
            imp_uid: request.imp_uid.clone(),
            amount: request.amount,
            checksum: request.checksum,
            tax_free: request.tax_free,
            reason: request.reason.clone(),
        })
        .await
        .map(|p| PaymentRecord::from(&p))
    }
}
