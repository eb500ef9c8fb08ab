//! What can come of a call to the payment gateway, typed so that
//! "definitely did not happen" and "may have happened" can never be confused.

use std::fmt;

/// A failed call. Every variant says whether the effect may have happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The gateway answered and refused, or the request never left this
    /// process. Nothing happened at the gateway.
    #[error("{0}")]
    Rejected(Rejection),
    /// The request may or may not have taken effect (timeout after sending,
    /// connection lost, 5xx, unreadable answer). For a charge: settle it with
    /// a lookup by `merchant_uid` before anything else.
    #[error("{0}")]
    Ambiguous(Ambiguity),
}

impl GatewayError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Rejected(r) if r.kind == RejectionKind::NotFound)
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Rejected(r) if r.kind == RejectionKind::Unauthorized)
    }

    /// A failure of the gateway as a whole (credentials refused, nothing
    /// reaches it, throttled) rather than of this one request.
    pub fn is_systemic(&self) -> bool {
        matches!(self, Self::Rejected(r) if matches!(r.kind, RejectionKind::Unauthorized | RejectionKind::NotSent))
    }

    /// Worth trying again later (the service was unreachable or unclear),
    /// as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ambiguous(_) => true,
            Self::Rejected(r) => r.kind == RejectionKind::NotSent,
        }
    }

    /// A short, stable, log-safe label (`rejected_business`, `ambiguous_timeout`, …).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rejected(r) => match r.kind {
                RejectionKind::Business => "rejected_business",
                RejectionKind::NotFound => "rejected_not_found",
                RejectionKind::Unauthorized => "rejected_unauthorized",
                RejectionKind::BadRequest => "rejected_bad_request",
                RejectionKind::NotSent => "not_sent",
            },
            Self::Ambiguous(a) => match a.kind {
                AmbiguityKind::Timeout => "ambiguous_timeout",
                AmbiguityKind::Connection => "ambiguous_connection",
                AmbiguityKind::ServerError => "ambiguous_server_error",
                AmbiguityKind::Malformed => "ambiguous_malformed",
            },
        }
    }

    pub fn not_sent(detail: impl Into<String>) -> Self {
        Self::Rejected(Rejection {
            kind: RejectionKind::NotSent,
            http_status: None,
            code: None,
            message: detail.into(),
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// HTTP 200 with `code != 0` and `response: null` (unknown customer_uid,
    /// merchant_uid already paid, PG communication error, …).
    Business,
    /// HTTP 404: the payment or billing key does not exist.
    NotFound,
    /// HTTP 401, even after one forced token refresh: wrong key/secret.
    Unauthorized,
    /// HTTP 400/405/409/501…: the request itself was refused.
    BadRequest,
    /// The request never reached i'mport (connection refused, DNS, no token).
    NotSent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub http_status: Option<u16>,
    /// i'mport's `code` (`1`, `-1`, …) when the body carried one.
    pub code: Option<i64>,
    /// i'mport's message (Korean, free text) or a transport description.
    /// Never contains credentials or tokens.
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            RejectionKind::Business => "the gateway refused the request",
            RejectionKind::NotFound => "not found at the gateway",
            RejectionKind::Unauthorized => "the gateway refused our credentials",
            RejectionKind::BadRequest => "the gateway refused a malformed request",
            RejectionKind::NotSent => "request not sent to the gateway",
        };
        write!(f, "{what}")?;
        if let Some(status) = self.http_status {
            write!(f, " (HTTP {status}")?;
            if let Some(code) = self.code {
                write!(f, ", code {code}")?;
            }
            write!(f, ")")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmbiguityKind {
    Timeout,
    Connection,
    ServerError,
    Malformed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguity {
    pub kind: AmbiguityKind,
    pub http_status: Option<u16>,
    pub detail: String,
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            AmbiguityKind::Timeout => "the gateway did not answer in time",
            AmbiguityKind::Connection => "connection to the gateway lost",
            AmbiguityKind::ServerError => "the gateway failed",
            AmbiguityKind::Malformed => "the gateway's answer could not be read",
        };
        write!(f, "outcome unknown, {what}")?;
        if let Some(status) = self.http_status {
            write!(f, " (HTTP {status})")?;
        }
        write!(f, ": {}", self.detail)
    }
}
