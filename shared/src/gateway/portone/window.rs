//! PortOne V2's window: `PortOne.requestIssueBillingKey` issues a key on
//! our channel; the browser comes back to `redirectUrl` with `billingKey`
//! (or `code` and `message`).

use serde::Serialize;

use crate::billing::Registration;
use crate::secret::Pii;

/// The parameters for `PortOne.requestIssueBillingKey`, returned to the
/// merchant's backend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssueBillingKeyParams {
    pub store_id: String,
    pub channel_key: String,
    pub billing_key_method: String,
    /// Our registration id (the issuance `merchant_uid`): PortOne keeps it
    /// on the key, and the callback checks it.
    pub issue_id: String,
    pub issue_name: String,
    /// `CALLBACK_URL?merchant_uid=…`: PortOne adds `billingKey` (or `code`
    /// and `message`).
    pub redirect_url: String,
    pub customer: IssueCustomer,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssueCustomer {
    /// Our server-generated customer id (V1's `customer_uid`).
    pub customer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_name: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<Pii>,
}

/// Where the key is issued and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSettings {
    pub store_id: String,
    pub channel_key: String,
    /// `billingKeyMethod` (`CARD`, `EASY_PAY`, …).
    pub billing_key_method: String,
}

/// The window for a pending registration; the registration's id rides on
/// the redirect so the callback can find it.
pub fn issue_billing_key(
    reg: &Registration,
    settings: &WindowSettings,
    redirect_url: &str,
) -> IssueBillingKeyParams {
    let redirect = url::Url::parse(redirect_url).map_or_else(
        |_| format!("{redirect_url}?merchant_uid={}", reg.merchant_uid),
        |mut u| {
            u.query_pairs_mut()
                .append_pair("merchant_uid", &reg.merchant_uid);
            u.to_string()
        },
    );
    IssueBillingKeyParams {
        store_id: settings.store_id.clone(),
        channel_key: settings.channel_key.clone(),
        billing_key_method: settings.billing_key_method.clone(),
        issue_id: reg.merchant_uid.clone(),
        issue_name: reg.plan.name.clone(),
        redirect_url: redirect,
        customer: IssueCustomer {
            customer_id: reg.customer_uid.clone(),
            full_name: reg.buyer.name.clone(),
            email: reg.buyer.email.clone(),
            phone_number: reg.buyer.tel.clone(),
        },
    }
}
