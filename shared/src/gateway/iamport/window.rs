//! i'mport's payment window: `IMP.request_pay` with a `customer_uid` and
//! `amount: 0` issues a billing key (a 0-won issuance payment); the browser
//! comes back to `m_redirect_url` with its `imp_uid`.

use serde::Serialize;

use crate::billing::Registration;
use crate::secret::Pii;

/// The parameters for `IMP.request_pay`, returned to the merchant's backend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestPayParams {
    pub pg: String,
    pub pay_method: String,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub name: String,
    /// Display only: issuing a billing key charges nothing.
    pub amount: i64,
    pub m_redirect_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_name: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_email: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_tel: Option<Pii>,
}

/// The window for a pending registration.
pub fn request_pay(reg: &Registration, pay_method: &str, redirect_url: &str) -> RequestPayParams {
    RequestPayParams {
        pg: reg.pg.clone(),
        pay_method: pay_method.to_owned(),
        merchant_uid: reg.merchant_uid.clone(),
        customer_uid: reg.customer_uid.clone(),
        name: reg.plan.name.clone(),
        amount: 0,
        m_redirect_url: redirect_url.to_owned(),
        buyer_name: reg.buyer.name.clone(),
        buyer_email: reg.buyer.email.clone(),
        buyer_tel: reg.buyer.tel.clone(),
    }
}
