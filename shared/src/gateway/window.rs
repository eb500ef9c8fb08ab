//! The payment window: what the configured PG's browser SDK is given to
//! issue a billing key, and what its redirect proves the key with.

pub use super::iamport::window::RequestPayParams;
pub use super::portone::window::{IssueBillingKeyParams, IssueCustomer};

/// The browser SDK's parameters, in the vendor's own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentWindow {
    /// i'mport V1: `IMP.request_pay` (a 0-won issuance payment).
    RequestPay(RequestPayParams),
    /// PortOne V2: `PortOne.requestIssueBillingKey`.
    IssueBillingKey(IssueBillingKeyParams),
}

/// What the window's redirect carries as its proof (each checked by a
/// lookup at the gateway before anything is believed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowProof {
    /// The issued billing key itself (V2 `billingKey`).
    BillingKey,
    /// The issuance payment's id (V1 `imp_uid`).
    Payment,
}
