//! How the V1 adapter reads i'mport's answers, as pure functions of (HTTP
//! status, body). The client reads every answer through them, and the
//! simulation's model of i'mport answers in V1's wire format through them
//! too, so the classification the simulation tests is the production one.
//! (A 401 never reaches these: the client refreshes its token and retries
//! first.)

use reqwest::StatusCode;

use super::client::{AgainOutcome, decode};
use super::model::{BillingKey, Payment};
use crate::billing::PaymentRecord;
use crate::gateway::{self, ChargeOutcome, GatewayError};

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
