//! PortOne V2 as the engine's payment gateway, with V1's rules: a charge is
//! paid only on a verified record, declined only after a lookup says
//! FAILED (the engine confirms every decline), "the key is gone" only
//! after the key lookup says so, and anything unclear (5xx, timeouts, an
//! error type this code does not know) is ambiguous: settled by looking the
//! `paymentId` up before anything else. A re-send uses the same `paymentId`,
//! which V2 pays at most once. How each answer reads is in `wire`.

use reqwest::Method;

use super::PortOneClient;
use super::model::{
    Amount, BillingKeyInfo, BillingKeyPaymentInput, CancelCashReceiptResponse, CancelPaymentBody,
    CashReceipt as V2CashReceipt, CashReceiptAmount, CashReceiptCustomer, Ignored,
    IssueCashReceiptBody, IssueCashReceiptResponse, Payment,
};
use super::wire::{self, Answer, record_of, refused};
use crate::billing::ReceiptKind;
use crate::billing::receipts::Outcome;
use crate::billing::{PaymentRecord, Registration};
use crate::gateway::CashReceiptRequest;
use crate::gateway::{
    BadNotice, BillingKey, ChargeOutcome, ChargeRequest, GatewayError, InboundNotice, Notice,
    PaymentGateway, PaymentWindow, RefundRequest, Rejection, RejectionKind, WindowProof,
};

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
}

impl PaymentGateway for PortOneClient {
    fn window(&self, reg: &Registration, redirect_url: &str) -> PaymentWindow {
        let settings = super::window::WindowSettings {
            store_id: self.config.store_id.clone(),
            channel_key: self.config.channel_key.clone(),
            billing_key_method: self.config.billing_key_method.clone(),
        };
        PaymentWindow::IssueBillingKey(super::window::issue_billing_key(
            reg,
            &settings,
            redirect_url,
        ))
    }

    fn window_proof(&self) -> WindowProof {
        WindowProof::BillingKey
    }

    fn decode_notice(&self, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
        super::webhook::decode(&self.config.webhook_secrets, inbound)
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let body = BillingKeyPaymentInput {
            store_id: self.config.store_id.clone(),
            billing_key: request.customer_uid.clone(),
            channel_key: self.config.channel_key.clone(),
            order_name: request.name.clone(),
            amount: Amount {
                total: request.amount,
                tax_free: (request.tax_free > 0).then_some(request.tax_free),
            },
            currency: "KRW",
            custom_data: request.custom_data.clone(),
            notice_urls: request.notice_url.clone().map(|u| vec![u]),
        };
        let segments = ["payments", request.merchant_uid.as_str(), "billing-key"];
        let answer = self
            .call::<Ignored, _>(Method::POST, &segments, Some(&body))
            .await;
        match wire::charge(request, answer) {
            Some(outcome) => outcome,
            None => wire::read_back(
                self.payment_by_id(&request.merchant_uid)
                    .await
                    .map(|p| record_of(&p)),
            ),
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

    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        let info = self.key_info(customer_uid).await?;
        wire::key_of(&info, &self.config.channel_key)
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

    async fn issue_cash_receipt(
        &self,
        request: &CashReceiptRequest,
    ) -> Result<Outcome, GatewayError> {
        let holder = &request.holder;
        let body = IssueCashReceiptBody {
            store_id: self.config.store_id.clone(),
            payment_id: request.merchant_uid.clone(),
            channel_key: self.config.channel_key.clone(),
            kind: match holder.kind {
                ReceiptKind::Personal => "PERSONAL",
                ReceiptKind::Corporate => "CORPORATE",
            },
            order_name: request.order_name.clone(),
            currency: "KRW",
            amount: CashReceiptAmount {
                total: request.amount,
                tax_free: (request.tax_free > 0).then_some(request.tax_free),
            },
            customer: CashReceiptCustomer {
                identity_number: holder.identifier.clone(),
                identity_number_type: match holder.kind {
                    ReceiptKind::Corporate => "BUSINESS",
                    ReceiptKind::Personal if holder.identifier.expose().starts_with("01") => {
                        "PHONE"
                    }
                    ReceiptKind::Personal => "CARD",
                },
            },
            payment_method: "TRANSFER",
        };
        let answer = self
            .call::<IssueCashReceiptResponse, _>(Method::POST, &["cash-receipts"], Some(&body))
            .await;
        wire::receipt_issued(answer, request, chrono::Utc::now())
    }

    async fn cancel_cash_receipt(
        &self,
        _imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        let segments = ["payments", merchant_uid, "cash-receipt", "cancel"];
        let answer = self
            .call::<CancelCashReceiptResponse, ()>(Method::POST, &segments, None)
            .await;
        wire::receipt_cancelled(answer, chrono::Utc::now())
    }

    async fn cash_receipt(
        &self,
        _imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        let segments = ["payments", merchant_uid, "cash-receipt"];
        wire::receipt_found(
            self.call::<V2CashReceipt, ()>(Method::GET, &segments, None)
                .await,
        )
    }

    async fn refund(&self, request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        let body = CancelPaymentBody {
            store_id: self.config.store_id.clone(),
            amount: request.amount,
            reason: request.reason.clone(),
            current_cancellable_amount: request.checksum,
            tax_free_amount: request.tax_free,
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
