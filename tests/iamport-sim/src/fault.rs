//! Injected faults: one-shot (or n-shot) misbehaviours consumed by matching requests.
//!
//! As JSON (`POST /__sim/faults`) a fault is flat, tagged by `kind`:
//! `{"kind":"hang_after","secs":3,"path_prefix":"/subscribe/payments/again","customer_uid":"c1","times":1}`.

use serde::{Deserialize, Serialize};

/// The token endpoint: faults reach it only through an explicit `path_prefix`.
pub(crate) const TOKEN_PATH: &str = "/users/getToken";
/// The billing-key charge endpoint.
pub(crate) const AGAIN_PATH: &str = "/subscribe/payments/again";
/// The simulated payment window.
pub(crate) const WINDOW_PATH: &str = "/window";
/// The V2 billing-key window.
pub(crate) const V2_WINDOW_PATH: &str = "/portone/window";
/// A `path_prefix` meaning "the billing-key charge, whichever API": V1's
/// `again` and V2's `POST /portone/payments/{paymentId}/billing-key`.
pub const CHARGE_PATHS: &str = "@charge";
/// A `path_prefix` meaning "a payment lookup by merchant uid, whichever
/// API": V1's `/payments/find/…` and V2's `GET /portone/payments/{paymentId}`.
pub const LOOKUP_PATHS: &str = "@lookup";
/// Prefix of the control endpoints, which faults never touch.
pub(crate) const CONTROL_PREFIX: &str = "/__sim";

/// What a fault does to the request it hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer HTTP 500 with an error envelope; nothing is recorded.
    #[serde(alias = "http_500")]
    Http500,
    /// Sleep `secs`, record nothing, then answer HTTP 504 with an error envelope
    /// (the client has normally given up by then).
    HangBefore { secs: u64 },
    /// Do the work (for `again`: record the charge and queue its webhook), then sleep `secs`
    /// before answering normally: the charge happened, but the client times out.
    HangAfter { secs: u64 },
    /// Do the work, then answer 200 with the body cut in half (not valid JSON).
    Corrupt,
    /// Answer HTTP 200 with this `code` and `message` and `response: null`; nothing is recorded.
    Reject { code: i64, message: String },
    /// Answer HTTP 401 as for a bad token.
    Unauthorized,
    /// Answer HTTP 429 (throttled); nothing is recorded.
    TooManyRequests,
    /// `again` only: decline this one charge (`status: failed`, `fail_reason: reason`).
    Decline { reason: String },
    /// `/window` only: the buyer closes the window (`error_code` `F0005`).
    UserCancel,
    /// `/window` only: the PG fails the issuance; `code`/`message` override the defaults.
    PgError {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
}

/// A queued fault: what it does, which requests it hits, and how many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Requests whose path starts with this are hit. Default: every i'mport REST path except
    /// `/users/getToken` (and never `/window`). `Decline` always targets `again`, and
    /// `UserCancel`/`PgError` always target `/window`, whatever this says.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Only requests naming this `customer_uid` (in the body of `again`, the path of
    /// `/subscribe/customers/…`, the query of `/window`) are hit. Default: any request.
    #[serde(default)]
    pub customer_uid: Option<String>,
    /// How many matching requests it hits before it is used up.
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault hitting the next matching request once.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            path_prefix: None,
            customer_uid: None,
            times: 1,
        }
    }

    /// Restrict to paths starting with `prefix` (e.g. `/subscribe/payments/again`).
    pub fn on_path(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// Restrict to the billing-key charge of either API ([`CHARGE_PATHS`]).
    pub fn on_charge(self) -> Self {
        self.on_path(CHARGE_PATHS)
    }

    /// Restrict to payment lookups by merchant uid of either API ([`LOOKUP_PATHS`]).
    pub fn on_lookup(self) -> Self {
        self.on_path(LOOKUP_PATHS)
    }

    /// Restrict to requests naming `customer_uid`.
    pub fn for_customer(mut self, customer_uid: impl Into<String>) -> Self {
        self.customer_uid = Some(customer_uid.into());
        self
    }

    /// Hit `times` matching requests instead of one.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Whether this fault hits a request for `path` naming `customer_uid`.
    pub(crate) fn matches(&self, path: &str, customer_uid: Option<&str>) -> bool {
        if self.times == 0 {
            return false;
        }
        let path_ok = match &self.kind {
            FaultKind::Decline { .. } => path == AGAIN_PATH || is_v2_charge_path(path),
            FaultKind::UserCancel | FaultKind::PgError { .. } => {
                path == WINDOW_PATH || path == V2_WINDOW_PATH
            }
            _ => match &self.path_prefix {
                Some(prefix) if prefix == CHARGE_PATHS => {
                    path == AGAIN_PATH || is_v2_charge_path(path)
                }
                Some(prefix) if prefix == LOOKUP_PATHS => {
                    path.starts_with("/payments/find/") || is_v2_lookup_path(path)
                }
                Some(prefix) => path.starts_with(prefix.as_str()),
                None => is_rest_api_path(path),
            },
        };
        let customer_ok = match &self.customer_uid {
            Some(wanted) => customer_uid == Some(wanted.as_str()),
            None => true,
        };
        path_ok && customer_ok
    }
}

/// A path of the authenticated REST APIs (not the token, the windows and
/// their pages, the SDK scripts or control).
fn is_rest_api_path(path: &str) -> bool {
    path != TOKEN_PATH
        && !path.starts_with(WINDOW_PATH)
        && !path.starts_with(V2_WINDOW_PATH)
        && !path.starts_with("/sdk/")
        && !path.starts_with(CONTROL_PREFIX)
}

/// `GET /portone/payments/{paymentId}`.
pub(crate) fn is_v2_lookup_path(path: &str) -> bool {
    path.strip_prefix("/portone/payments/")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// `POST /portone/payments/{paymentId}/billing-key`.
pub(crate) fn is_v2_charge_path(path: &str) -> bool {
    path.starts_with("/portone/payments/") && path.ends_with("/billing-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_is_flat_and_tagged_by_kind() {
        let fault: Result<Fault, _> = serde_json::from_str(
            r#"{"kind":"hang_after","secs":3,"path_prefix":"/subscribe/payments/again"}"#,
        );
        assert_eq!(
            fault.ok(),
            Some(Fault::new(FaultKind::HangAfter { secs: 3 }).on_path(AGAIN_PATH))
        );
        let reject: Result<Fault, _> =
            serde_json::from_str(r#"{"kind":"reject","code":-1,"message":"x","times":2}"#);
        assert_eq!(
            reject.ok().map(|f| (f.kind, f.times)),
            Some((
                FaultKind::Reject {
                    code: -1,
                    message: "x".into()
                },
                2
            ))
        );
        let http: Result<Fault, _> = serde_json::from_str(r#"{"kind":"http_500"}"#);
        assert_eq!(http.ok().map(|f| f.kind), Some(FaultKind::Http500));
    }

    #[test]
    fn default_scope_is_the_rest_api_without_token_and_window() {
        let fault = Fault::new(FaultKind::Http500);
        assert!(fault.matches(AGAIN_PATH, None));
        assert!(fault.matches("/payments/imps_1", None));
        assert!(!fault.matches(TOKEN_PATH, None));
        assert!(!fault.matches(WINDOW_PATH, Some("c1")));
        assert!(
            Fault::new(FaultKind::Http500)
                .on_path(TOKEN_PATH)
                .matches(TOKEN_PATH, None)
        );
    }

    #[test]
    fn the_charge_alias_hits_both_apis_charges_only() {
        let fault = Fault::new(FaultKind::Http500).on_charge();
        assert!(fault.matches(AGAIN_PATH, None));
        assert!(fault.matches("/portone/payments/s1a1/billing-key", None));
        assert!(!fault.matches("/portone/payments/s1a1", None));
        assert!(!fault.matches("/payments/find/s1a1", None));
        let lookup = Fault::new(FaultKind::Http500).on_lookup();
        assert!(lookup.matches("/payments/find/s1a1", None));
        assert!(lookup.matches("/portone/payments/s1a1", None));
        assert!(!lookup.matches("/portone/payments/s1a1/billing-key", None));
        assert!(!lookup.matches(AGAIN_PATH, None));
    }

    #[test]
    fn customer_filter_and_kind_scope_apply() {
        let decline = Fault::new(FaultKind::Decline { reason: "x".into() }).for_customer("c1");
        assert!(decline.matches(AGAIN_PATH, Some("c1")));
        assert!(!decline.matches(AGAIN_PATH, Some("c2")));
        assert!(!decline.matches(AGAIN_PATH, None));
        assert!(!decline.matches("/payments/cancel", Some("c1")));
        let cancel = Fault::new(FaultKind::UserCancel).on_path(AGAIN_PATH);
        assert!(cancel.matches(WINDOW_PATH, None));
        assert!(!cancel.matches(AGAIN_PATH, None));
        assert!(
            !Fault::new(FaultKind::Corrupt)
                .times(0)
                .matches(AGAIN_PATH, None)
        );
    }
}
