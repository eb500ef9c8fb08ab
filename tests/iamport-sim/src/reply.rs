//! The i'mport response envelope `{code, message, response}` and the replies built from it,
//! including what injected faults do to a reply.

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::fault::FaultKind;

const JSON: &str = "application/json; charset=utf-8";

/// Message of 401 answers (the real body is undocumented; docs §9.3).
pub(crate) const UNAUTHORIZED_MESSAGE: &str = "Unauthorized";

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    code: i64,
    message: Option<&'a str>,
    response: Option<&'a T>,
}

/// An API answer: status plus serialised envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiReply {
    status: StatusCode,
    body: Vec<u8>,
}

impl ApiReply {
    /// `200 {"code":0,"message":null,"response":…}`
    pub(crate) fn ok<T: Serialize>(response: &T) -> Self {
        Self::envelope(StatusCode::OK, 0, None, Some(response))
    }

    /// `{"code":code,"message":message,"response":null}` with the given HTTP status.
    pub(crate) fn error(status: StatusCode, code: i64, message: &str) -> Self {
        Self::envelope::<()>(status, code, Some(message), None)
    }

    /// A PortOne V2 answer: `body` as it is (V2 has no envelope).
    pub(crate) fn raw(status: StatusCode, body: &serde_json::Value) -> Self {
        Self {
            status,
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::error(StatusCode::UNAUTHORIZED, -1, UNAUTHORIZED_MESSAGE)
    }

    pub(crate) fn bad_request(message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, -1, message)
    }

    fn envelope<T: Serialize>(
        status: StatusCode,
        code: i64,
        message: Option<&str>,
        response: Option<&T>,
    ) -> Self {
        let envelope = Envelope {
            code,
            message,
            response,
        };
        match serde_json::to_vec(&envelope) {
            Ok(body) => Self { status, body },
            Err(err) => {
                tracing::error!(error = %err, "could not serialise a reply");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: br#"{"code":-1,"message":"internal error","response":null}"#.to_vec(),
                }
            }
        }
    }

    /// The same reply with its body cut in half: not valid JSON any more.
    pub(crate) fn corrupted(mut self) -> Self {
        self.body.truncate(self.body.len() / 2);
        self
    }
}

impl IntoResponse for ApiReply {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        response
    }
}

/// The part of a fault that acts before any work: an answer that replaces the real one.
/// `None` means: go on and do the work.
pub(crate) async fn fault_before(fault: Option<&FaultKind>) -> Option<ApiReply> {
    match fault? {
        FaultKind::Http500 => Some(ApiReply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            "[시뮬레이터] 일시적인 서버 오류입니다. (Http500)",
        )),
        FaultKind::HangBefore { secs } => {
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            Some(ApiReply::error(
                StatusCode::GATEWAY_TIMEOUT,
                -1,
                "[시뮬레이터] 응답 지연 후 처리하지 않았습니다. (HangBefore)",
            ))
        }
        FaultKind::Reject { code, message } => {
            Some(ApiReply::error(StatusCode::OK, *code, message))
        }
        FaultKind::Unauthorized => Some(ApiReply::unauthorized()),
        FaultKind::TooManyRequests => Some(ApiReply::error(
            StatusCode::TOO_MANY_REQUESTS,
            -1,
            "[시뮬레이터] 요청이 너무 많습니다. (TooManyRequests)",
        )),
        FaultKind::HangAfter { .. }
        | FaultKind::Corrupt
        | FaultKind::Decline { .. }
        | FaultKind::UserCancel
        | FaultKind::PgError { .. } => None,
    }
}

/// The part of a fault that acts after the work is done: delay or corrupt the answer.
pub(crate) async fn fault_after(fault: Option<&FaultKind>, reply: ApiReply) -> ApiReply {
    match fault {
        Some(FaultKind::HangAfter { secs }) => {
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            reply
        }
        Some(FaultKind::Corrupt) => reply.corrupted(),
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_envelope_has_null_message() {
        let reply = ApiReply::ok(&serde_json::json!({"a": 1}));
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body,
            br#"{"code":0,"message":null,"response":{"a":1}}"#.to_vec()
        );
    }

    #[test]
    fn error_envelope_has_null_response() {
        let reply = ApiReply::error(StatusCode::NOT_FOUND, -1, "존재하지 않는 결제정보입니다.");
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(
            String::from_utf8(reply.body).ok().as_deref(),
            Some(r#"{"code":-1,"message":"존재하지 않는 결제정보입니다.","response":null}"#)
        );
    }

    #[test]
    fn corrupted_reply_is_not_json() {
        let reply = ApiReply::ok(&serde_json::json!({"imp_uid": "imps_000000000001"})).corrupted();
        assert!(serde_json::from_slice::<serde_json::Value>(&reply.body).is_err());
        assert!(!reply.body.is_empty());
    }
}
