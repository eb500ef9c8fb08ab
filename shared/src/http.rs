//! What the HTTP functions answer alike: JSON bodies that are never cached,
//! the one error shape `{"error": {"code", "message"}}`, the optional
//! `x-api-key` check (compared in constant time), and the local story's
//! clock header. The functions turn these
//! into `lambda_http` responses with `.map(Body::from)`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use tracing::warn;

use crate::secret::Secret;

/// A JSON answer, `Cache-Control: no-store`.
pub fn json(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The body of every error of the APIs here.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

/// An error answer in the one shape.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<String> {
    json(status, error_body(code, message).to_string())
}

/// The refusal when a route requires an `x-api-key` (`expected` is set)
/// and the request does not carry it; `None` lets the request through.
/// `route` names the route in the log line.
pub fn api_key_refusal(
    expected: Option<&Secret>,
    headers: &HeaderMap,
    route: &str,
) -> Option<Response<String>> {
    let expected = expected?;
    let given = headers
        .get("x-api-key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if expected.matches(given) {
        return None;
    }
    warn!(route, "refused: missing or wrong x-api-key");
    Some(error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong x-api-key",
    ))
}

/// The `x-billing-clock` of a request (RFC 3339): the time the local story
/// plays, followed only on the event's clock (`Engine::follow_the_event`;
/// `BILLING_CLOCK=event` needs a local DynamoDB, so production ignores it).
pub fn billing_clock(headers: &HeaderMap) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = headers.get("x-billing-clock")?.to_str().ok()?;
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_with_a_key_lets_only_that_key_through() {
        let key = Secret::new("k-123");
        let mut headers = HeaderMap::new();
        assert!(api_key_refusal(None, &headers, "t").is_none(), "no key set");
        let refused = api_key_refusal(Some(&key), &headers, "t").unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.body().contains("\"unauthorized\""));
        headers.insert("x-api-key", HeaderValue::from_static("k-12"));
        assert!(api_key_refusal(Some(&key), &headers, "t").is_some());
        headers.insert("x-api-key", HeaderValue::from_static("k-123"));
        assert!(api_key_refusal(Some(&key), &headers, "t").is_none());
    }

    #[test]
    fn answers_are_json_and_never_cached() {
        let r = error(StatusCode::CONFLICT, "conflict", "taken");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let v: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(v["error"]["code"], "conflict");
    }

    #[test]
    fn the_story_clock_header_is_read_only_when_it_is_a_time() {
        let mut headers = HeaderMap::new();
        assert_eq!(billing_clock(&headers), None);
        headers.insert("x-billing-clock", HeaderValue::from_static("yesterday"));
        assert_eq!(billing_clock(&headers), None);
        headers.insert(
            "x-billing-clock",
            HeaderValue::from_static("2027-01-02T10:00:00+09:00"),
        );
        assert_eq!(
            billing_clock(&headers).map(|t| t.to_rfc3339()),
            Some("2027-01-02T01:00:00+00:00".to_owned())
        );
    }
}
