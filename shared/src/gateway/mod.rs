//! The payment-gateway port: what the engine asks of a PG. One folder per
//! vendor holds its wire types, its client and its implementation of the
//! port (`iamport/` for i'mport V1, `portone/` for PortOne V2); `any.rs`
//! picks one by `PAYMENT_API`. Nothing outside `gateway/` branches on the
//! vendor: the payment window's parameters and the decoding of a PG's
//! notification are the port's too. The deterministic simulation
//! implements the port with an in-process model of either PG.
//!
//! Every failure says whether money may have moved ([`GatewayError`]); a
//! charge's outcome is one of paid, declined, rejected (nothing happened) or
//! ambiguous (settle it by looking the `merchant_uid` up before anything
//! else).

mod any;
mod error;
pub mod iamport;
pub mod limit;
pub mod notice;
pub mod portone;
pub mod window;

use std::future::Future;

pub use any::AnyGateway;
pub use error::{Ambiguity, AmbiguityKind, GatewayError, Rejection, RejectionKind};

pub use notice::{BadNotice, InboundNotice, Notice, PaymentNotice};
pub use window::{PaymentWindow, WindowProof};

use crate::billing::{Buyer, PaymentRecord, Registration};

/// A charge of a stored billing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub customer_uid: String,
    /// The attempt's stored `merchant_uid`: a re-send always uses the same one.
    pub merchant_uid: String,
    /// Whole KRW.
    pub amount: i64,
    /// The tax-free part of `amount` (decision 73): V1 `tax_free`, V2
    /// `amount.taxFree`; 0 sends none (VAT on all of it).
    pub tax_free: i64,
    pub name: String,
    pub buyer: Buyer,
    pub custom_data: Option<String>,
    pub notice_url: Option<String>,
}

/// What became of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Money was taken.
    Paid(PaymentRecord),
    /// The attempt was made and declined by the PG.
    Declined(PaymentRecord),
    /// No attempt was made.
    Rejected(Rejection),
    /// May or may not have charged.
    Ambiguous(Ambiguity),
}

/// A billing key's public description. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingKey {
    pub customer_uid: String,
    pub pg_provider: String,
    pub pg_id: Option<String>,
    pub card_name: Option<String>,
    /// Masked by the gateway.
    pub card_number: Option<String>,
    /// UNIX seconds; 0 when unknown.
    pub inserted: i64,
    /// V2: the `issueId` the window was opened with (our registration's
    /// `merchant_uid`); V1: none.
    pub issue_id: Option<String>,
    /// V2: the customer id the window was opened with; V1: none.
    pub customer_id: Option<String>,
    /// Issued on the channel this deployment charges through (always for V1,
    /// whose PG is checked by `pg_provider`).
    pub on_our_channel: bool,
}

/// A full or partial refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The payment (V1 refunds by it).
    pub imp_uid: String,
    /// Its `merchant_uid` / V2 `paymentId` (V2 refunds by it).
    pub merchant_uid: String,
    /// `None` refunds what remains.
    pub amount: Option<i64>,
    /// The refundable balance we believe in, so a stale view cannot refund twice.
    pub checksum: Option<i64>,
    /// The refund's tax-free part (decision 73): V1 `tax_free`, V2
    /// `taxFreeAmount`; `None` sends none.
    pub tax_free: Option<i64>,
    pub reason: String,
}

/// A cash receipt to issue for a paid cash payment (decision 74).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashReceiptRequest {
    /// The payment (V1 issues by it).
    pub imp_uid: String,
    /// Its `merchant_uid` / V2 `paymentId` (V2 issues by it).
    pub merchant_uid: String,
    pub holder: crate::billing::ReceiptHolder,
    /// What is left of the payment after refunds (V1 issues for that
    /// itself; V2 is told).
    pub amount: i64,
    pub tax_free: i64,
    /// The charge's name (V2 `orderName`).
    pub order_name: String,
}

/// The operations the engine needs from a payment gateway.
pub trait PaymentGateway: Send + Sync {
    /// Charges a billing key under `request.merchant_uid`.
    fn charge(&self, request: &ChargeRequest) -> impl Future<Output = ChargeOutcome> + Send;

    /// A payment by the gateway's id.
    fn payment(
        &self,
        imp_uid: &str,
    ) -> impl Future<Output = Result<PaymentRecord, GatewayError>> + Send;

    /// The payment a webhook names, read from the gateway (never from the
    /// webhook): V1 by `imp_uid`, V2 by `paymentId` (`merchant_uid`).
    fn notified_payment(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> impl Future<Output = Result<PaymentRecord, GatewayError>> + Send;

    /// The record that decides a `merchant_uid`: its paid payment if there
    /// is one, else its newest. `NotFound` when the gateway has none.
    fn find_payment(
        &self,
        merchant_uid: &str,
    ) -> impl Future<Output = Result<PaymentRecord, GatewayError>> + Send;

    fn billing_key(
        &self,
        customer_uid: &str,
    ) -> impl Future<Output = Result<BillingKey, GatewayError>> + Send;

    fn delete_billing_key(
        &self,
        customer_uid: &str,
    ) -> impl Future<Output = Result<(), GatewayError>> + Send;

    fn refund(
        &self,
        request: &RefundRequest,
    ) -> impl Future<Output = Result<PaymentRecord, GatewayError>> + Send;

    /// Issues a cash receipt. `Ok`: the PG's answer in the core's terms
    /// (issued, refused, already issued, unclear); `Err`: nothing was done
    /// (never sent, or our credentials refused).
    fn issue_cash_receipt(
        &self,
        request: &CashReceiptRequest,
    ) -> impl Future<Output = Result<crate::billing::receipts::Outcome, GatewayError>> + Send;

    /// Cancels the payment's live cash receipt: `Cancelled`, or
    /// `Found(None)` when the PG holds none live, or `Unclear`.
    fn cancel_cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> impl Future<Output = Result<crate::billing::receipts::Outcome, GatewayError>> + Send;

    /// The payment's live cash receipt at the PG (`Found`); `Err` when the
    /// PG could not be asked.
    fn cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> impl Future<Output = Result<crate::billing::receipts::Outcome, GatewayError>> + Send;

    /// The payment window's parameters for a pending registration; the
    /// browser comes back to `redirect_url`.
    fn window(&self, reg: &Registration, redirect_url: &str) -> PaymentWindow;

    /// What the window's redirect proves the key with.
    fn window_proof(&self) -> WindowProof;

    /// Decodes a notification (verifying it where the PG signs them) into
    /// the neutral notice. Nothing is fetched: the notice is a hint.
    fn decode_notice(&self, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice>;
}
