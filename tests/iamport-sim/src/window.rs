//! The payment window: `GET /window?…` takes what `IMP.request_pay` would, issues (or
//! replaces) the billing key and answers 302 to `m_redirect_url` with the query the SDK adds.
//!
//! Scenarios: `scenario=user_cancel|pg_error` in the query, or a queued `UserCancel`/`PgError`
//! fault. SDK generations: default legacy (`imp_success=true|false`), `sdk=new` (no success
//! flag), `sdk=legacy_success` (`success=true|false`).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use url::Url;

use crate::api::SharedSim;
use crate::fault::{FaultKind, WINDOW_PATH};
use crate::model::default_pay_method;
use crate::params::query_pairs;
use crate::reply::fault_before;
use crate::state::IssueRequest;

/// `error_code` of a buyer closing the window.
const USER_CANCEL_CODE: &str = "F0005";
const USER_CANCEL_MESSAGE: &str = "[결제포기] 사용자가 결제를 취소하셨습니다";
const USER_CANCEL_REASON: &str = "사용자가 결제를 취소하셨습니다";
/// Defaults of a PG failure during issuance.
const PG_ERROR_CODE: &str = "F1002";
const PG_ERROR_MESSAGE: &str = "[PG사 오류] 빌링키 발급에 실패하였습니다.";

/// How the issuance ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scenario {
    Success,
    UserCancel,
    PgError {
        code: Option<String>,
        message: Option<String>,
    },
}

/// A failed issuance: what goes into the redirect and into the payment record.
struct Failure {
    error_code: String,
    error_msg: String,
    fail_reason: String,
}

impl Scenario {
    fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("success") => Ok(Self::Success),
            Some("user_cancel") => Ok(Self::UserCancel),
            Some("pg_error") => Ok(Self::PgError {
                code: None,
                message: None,
            }),
            Some(other) => Err(format!(
                "unknown scenario {other:?} (expected success, user_cancel or pg_error)"
            )),
        }
    }

    fn failure(self) -> Option<Failure> {
        match self {
            Self::Success => None,
            Self::UserCancel => Some(Failure {
                error_code: USER_CANCEL_CODE.to_owned(),
                error_msg: USER_CANCEL_MESSAGE.to_owned(),
                fail_reason: USER_CANCEL_REASON.to_owned(),
            }),
            Self::PgError { code, message } => {
                let message = message.unwrap_or_else(|| PG_ERROR_MESSAGE.to_owned());
                Some(Failure {
                    error_code: code.unwrap_or_else(|| PG_ERROR_CODE.to_owned()),
                    error_msg: message.clone(),
                    fail_reason: message,
                })
            }
        }
    }
}

/// Which success flag the redirect carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    /// `iamport.payment-1.x.js`: `imp_success`.
    Legacy,
    /// Some PGs under the legacy SDK: `success`.
    LegacySuccess,
    /// `v1/iamport.js`: no flag.
    New,
}

impl Sdk {
    fn parse(value: Option<&str>) -> Self {
        match value {
            Some("new") => Self::New,
            Some("legacy_success") => Self::LegacySuccess,
            _ => Self::Legacy,
        }
    }
}

fn plain_bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_owned()).into_response()
}

/// `GET /window`
pub(crate) async fn window(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query: HashMap<String, String> = match query_pairs(query.as_deref()) {
        Ok(pairs) => pairs.into_iter().collect(),
        Err(err) => return plain_bad_request(&format!("invalid query string: {err}")),
    };
    let get = |key: &str| query.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let Some(customer_uid) = get("customer_uid") else {
        return plain_bad_request(
            "customer_uid is required: it turns the window into billing-key issuance",
        );
    };
    if customer_uid.chars().count() > 80 {
        return plain_bad_request("customer_uid is longer than 80 characters");
    }
    let Some(redirect) = get("m_redirect_url") else {
        return plain_bad_request("m_redirect_url is required (CHAI always redirects)");
    };
    let mut redirect = match Url::parse(redirect) {
        Ok(url) => url,
        Err(err) => {
            return plain_bad_request(&format!("m_redirect_url is not an absolute URL: {err}"));
        }
    };
    let amount = match get("amount").map(str::parse::<i64>).transpose() {
        Ok(amount) if amount.unwrap_or(0) >= 0 => amount.unwrap_or(0),
        _ => return plain_bad_request("amount must be a whole number >= 0"),
    };
    let mut scenario = match Scenario::parse(get("scenario")) {
        Ok(scenario) => scenario,
        Err(err) => return plain_bad_request(&err),
    };
    let sdk = Sdk::parse(get("sdk"));
    let config = sim.config();
    let (pg_provider, pg_id) = match get("pg") {
        Some(pg) => match pg.split_once('.') {
            Some((provider, id)) if !id.is_empty() => (provider.to_owned(), id.to_owned()),
            Some((provider, _)) => (provider.to_owned(), config.pg_id.clone()),
            None => (pg.to_owned(), config.pg_id.clone()),
        },
        None => (config.pg_provider.clone(), config.pg_id.clone()),
    };
    let pay_method = get("pay_method").map_or_else(
        || default_pay_method(&pg_provider).to_owned(),
        str::to_owned,
    );
    let merchant_uid = match get("merchant_uid") {
        Some(m) if m.chars().count() > 40 => {
            return plain_bad_request("merchant_uid is longer than 40 characters");
        }
        Some(m) => m.to_owned(),
        // The SDK generates one when the page sends none.
        None => format!(
            "merchant_{}{:03}",
            sim.now(),
            rand::rng().random_range(0..1000_u16)
        ),
    };

    let fault = sim.take_fault(WINDOW_PATH, Some(customer_uid));
    if let Some(reply) = fault_before(fault.as_ref()).await {
        return reply.into_response();
    }
    match &fault {
        Some(FaultKind::UserCancel) => scenario = Scenario::UserCancel,
        Some(FaultKind::PgError { code, message }) => {
            scenario = Scenario::PgError {
                code: code.clone(),
                message: message.clone(),
            };
        }
        _ => {}
    }
    let failure = scenario.failure();
    let text = |key: &str| get(key).map(str::to_owned);
    let payment = sim.issue_in_window(
        IssueRequest {
            customer_uid: customer_uid.to_owned(),
            merchant_uid,
            amount,
            name: text("name"),
            pg_provider,
            pg_id,
            pay_method,
            buyer_name: text("buyer_name"),
            buyer_email: text("buyer_email"),
            buyer_tel: text("buyer_tel"),
            buyer_addr: text("buyer_addr"),
            buyer_postcode: text("buyer_postcode"),
            custom_data: text("custom_data"),
            notice_url: text("notice_url"),
            user_agent: headers
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        },
        failure.as_ref().map(|f| f.fail_reason.clone()),
    );
    tracing::info!(
        imp_uid = %payment.imp_uid,
        status = %payment.status,
        "payment window finished"
    );

    {
        let mut pairs = redirect.query_pairs_mut();
        pairs.append_pair("imp_uid", &payment.imp_uid);
        pairs.append_pair("merchant_uid", &payment.merchant_uid);
        let success = if failure.is_none() { "true" } else { "false" };
        match sdk {
            Sdk::Legacy => {
                pairs.append_pair("imp_success", success);
            }
            Sdk::LegacySuccess => {
                pairs.append_pair("success", success);
            }
            Sdk::New => {}
        }
        if let Some(failure) = &failure {
            pairs.append_pair("error_code", &failure.error_code);
            pairs.append_pair("error_msg", &failure.error_msg);
        }
    }

    match fault {
        Some(FaultKind::HangAfter { secs }) => tokio::time::sleep(Duration::from_secs(secs)).await,
        Some(FaultKind::Corrupt) => {
            let mut response = (StatusCode::OK, "<html><body><p>결제창을").into_response();
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            return response;
        }
        _ => {}
    }
    match HeaderValue::from_str(redirect.as_str()) {
        Ok(location) => {
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(LOCATION, location);
            response
        }
        Err(err) => plain_bad_request(&format!("m_redirect_url cannot be used: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_and_unknown_ones_are_refused() {
        assert_eq!(Scenario::parse(None), Ok(Scenario::Success));
        assert_eq!(
            Scenario::parse(Some("user_cancel")),
            Ok(Scenario::UserCancel)
        );
        assert!(Scenario::parse(Some("explode")).is_err());
    }

    #[test]
    fn pg_error_defaults_can_be_overridden() {
        let failure = Scenario::PgError {
            code: Some("F9999".into()),
            message: None,
        }
        .failure();
        assert_eq!(
            failure.map(|f| (f.error_code, f.error_msg)),
            Some(("F9999".to_owned(), PG_ERROR_MESSAGE.to_owned()))
        );
    }

    #[test]
    fn sdk_defaults_to_legacy() {
        assert_eq!(Sdk::parse(None), Sdk::Legacy);
        assert_eq!(Sdk::parse(Some("new")), Sdk::New);
        assert_eq!(Sdk::parse(Some("legacy_success")), Sdk::LegacySuccess);
    }
}
