//! The payment gateway `PAYMENT_API` chose: one arm per vendor folder
//! (`iamport/`, `portone/`). A third PG is one folder and one arm here.

use super::iamport::IamportClient;
use super::portone::PortOneClient;
use super::{
    BadNotice, BillingKey, ChargeOutcome, ChargeRequest, GatewayError, InboundNotice, Notice,
    PaymentGateway, PaymentWindow, RefundRequest, WindowProof,
};
use crate::billing::receipts::Outcome;
use crate::billing::{PaymentRecord, Registration};
use crate::gateway::CashReceiptRequest;

/// The payment gateway `PAYMENT_API` chose.
#[derive(Debug)]
pub enum AnyGateway {
    V1(IamportClient),
    V2(PortOneClient),
}

impl PaymentGateway for AnyGateway {
    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        match self {
            Self::V1(c) => c.charge(request).await,
            Self::V2(c) => c.charge(request).await,
        }
    }

    async fn payment(&self, imp_uid: &str) -> Result<PaymentRecord, GatewayError> {
        match self {
            Self::V1(c) => PaymentGateway::payment(c, imp_uid).await,
            Self::V2(c) => PaymentGateway::payment(c, imp_uid).await,
        }
    }

    async fn notified_payment(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<PaymentRecord, GatewayError> {
        match self {
            Self::V1(c) => c.notified_payment(imp_uid, merchant_uid).await,
            Self::V2(c) => c.notified_payment(imp_uid, merchant_uid).await,
        }
    }

    async fn find_payment(&self, merchant_uid: &str) -> Result<PaymentRecord, GatewayError> {
        match self {
            Self::V1(c) => PaymentGateway::find_payment(c, merchant_uid).await,
            Self::V2(c) => PaymentGateway::find_payment(c, merchant_uid).await,
        }
    }

    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        match self {
            Self::V1(c) => PaymentGateway::billing_key(c, customer_uid).await,
            Self::V2(c) => PaymentGateway::billing_key(c, customer_uid).await,
        }
    }

    async fn delete_billing_key(&self, customer_uid: &str) -> Result<(), GatewayError> {
        match self {
            Self::V1(c) => PaymentGateway::delete_billing_key(c, customer_uid).await,
            Self::V2(c) => PaymentGateway::delete_billing_key(c, customer_uid).await,
        }
    }

    async fn issue_cash_receipt(
        &self,
        request: &CashReceiptRequest,
    ) -> Result<Outcome, GatewayError> {
        match self {
            Self::V1(c) => c.issue_cash_receipt(request).await,
            Self::V2(c) => c.issue_cash_receipt(request).await,
        }
    }

    async fn cancel_cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        match self {
            Self::V1(c) => c.cancel_cash_receipt(imp_uid, merchant_uid).await,
            Self::V2(c) => c.cancel_cash_receipt(imp_uid, merchant_uid).await,
        }
    }

    async fn cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        match self {
            Self::V1(c) => c.cash_receipt(imp_uid, merchant_uid).await,
            Self::V2(c) => c.cash_receipt(imp_uid, merchant_uid).await,
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        match self {
            Self::V1(c) => c.refund(request).await,
            Self::V2(c) => c.refund(request).await,
        }
    }

    fn window(&self, reg: &Registration, redirect_url: &str) -> PaymentWindow {
        match self {
            Self::V1(c) => c.window(reg, redirect_url),
            Self::V2(c) => c.window(reg, redirect_url),
        }
    }

    fn window_proof(&self) -> WindowProof {
        match self {
            Self::V1(c) => c.window_proof(),
            Self::V2(c) => c.window_proof(),
        }
    }

    fn decode_notice(&self, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
        match self {
            Self::V1(c) => c.decode_notice(inbound),
            Self::V2(c) => c.decode_notice(inbound),
        }
    }
}
