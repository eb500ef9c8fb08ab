//! Request parameters: the i'mport API takes the same fields as JSON or as form data.
//!
//! Both are read into one map; accessors check types. In form bodies every value is text,
//! so numbers are parsed from it; in JSON bodies numbers must be JSON numbers (the docs say
//! to send amounts as numbers, never strings, and the simulator holds clients to that).

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

/// Why parameters were refused (answered as HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParamError {
    #[error("요청 본문을 해석할 수 없습니다: {0}")]
    Malformed(String),
    #[error("{0} 파라미터는 필수입니다.")]
    Missing(&'static str),
    #[error("{field} 파라미터가 올바르지 않습니다: {why}")]
    Invalid { field: &'static str, why: String },
}

fn invalid(field: &'static str, why: impl Into<String>) -> ParamError {
    ParamError::Invalid {
        field,
        why: why.into(),
    }
}

/// Parsed body parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    map: Map<String, Value>,
    form: bool,
}

impl Params {
    /// Read a JSON object (when the content type says JSON) or form data (otherwise).
    pub(crate) fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<Self, ParamError> {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let is_json = content_type.contains("json")
            || (content_type.is_empty() && body.trim_ascii_start().starts_with(b"{"));
        if body.trim_ascii().is_empty() {
            return Ok(Self {
                map: Map::new(),
                form: !is_json,
            });
        }
        if is_json {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => Ok(Self { map, form: false }),
                Ok(_) => Err(ParamError::Malformed(
                    "JSON 본문은 객체여야 합니다.".to_owned(),
                )),
                Err(err) => Err(ParamError::Malformed(err.to_string())),
            }
        } else {
            Self::from_form(body)
        }
    }

    /// Read form data (`a=1&b=2`); a repeated key keeps its last value.
    pub(crate) fn from_form(body: &[u8]) -> Result<Self, ParamError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|err| ParamError::Malformed(err.to_string()))?;
        let map = pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        Ok(Self { map, form: true })
    }

    /// A text field; absent, `null` and `""` are `None`. JSON numbers are accepted as text.
    pub(crate) fn text(&self, field: &'static str) -> Result<Option<String>, ParamError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(invalid(field, "문자열이어야 합니다.")),
        }
    }

    /// A required text field of at most `max_chars` characters.
    pub(crate) fn required_text(
        &self,
        field: &'static str,
        max_chars: usize,
    ) -> Result<String, ParamError> {
        let value = self.text(field)?.ok_or(ParamError::Missing(field))?;
        check_length(field, &value, max_chars)?;
        Ok(value)
    }

    /// An optional text field of at most `max_chars` characters.
    pub(crate) fn short_text(
        &self,
        field: &'static str,
        max_chars: usize,
    ) -> Result<Option<String>, ParamError> {
        let value = self.text(field)?;
        if let Some(value) = &value {
            check_length(field, value, max_chars)?;
        }
        Ok(value)
    }

    /// A whole number (KRW amounts, counts); `None` when absent or `null`.
    pub(crate) fn integer(&self, field: &'static str) -> Result<Option<i64>, ParamError> {
        let not_whole = || invalid(field, "정수여야 합니다.");
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().and_then(whole_f64))
                .map(Some)
                .ok_or_else(not_whole),
            Some(Value::String(s)) if self.form => {
                let s = s.trim();
                if s.is_empty() {
                    return Ok(None);
                }
                s.parse::<i64>()
                    .ok()
                    .or_else(|| s.parse::<f64>().ok().and_then(whole_f64))
                    .map(Some)
                    .ok_or_else(not_whole)
            }
            Some(Value::String(_)) => Err(invalid(
                field,
                "JSON에서는 문자열이 아닌 숫자로 보내야 합니다.",
            )),
            Some(_) => Err(not_whole()),
        }
    }

    /// A number that must be present; any JSON number or numeric form text, validated by type only.
    pub(crate) fn check_number(&self, field: &'static str) -> Result<(), ParamError> {
        match self.map.get(field) {
            None | Some(Value::Null) | Some(Value::Number(_)) => Ok(()),
            Some(Value::String(s)) if self.form && (s.is_empty() || s.parse::<f64>().is_ok()) => {
                Ok(())
            }
            Some(_) => Err(invalid(field, "숫자여야 합니다.")),
        }
    }

    /// `custom_data`: text as given; a JSON object or array is stored JSON-encoded.
    pub(crate) fn json_text(&self, field: &'static str) -> Result<Option<String>, ParamError> {
        match self.map.get(field) {
            Some(value @ (Value::Object(_) | Value::Array(_))) => Ok(Some(value.to_string())),
            _ => self.text(field),
        }
    }
}

/// An `f64` that is a whole number in `i64` range.
fn whole_f64(f: f64) -> Option<i64> {
    const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53: exact integers only
    // The range and fraction checks make the cast exact.
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= LIMIT).then_some(f as i64)
}

fn check_length(field: &'static str, value: &str, max_chars: usize) -> Result<(), ParamError> {
    let len = value.chars().count();
    if len > max_chars {
        return Err(invalid(
            field,
            format!("최대 {max_chars}자까지 가능합니다. (현재 {len}자)"),
        ));
    }
    Ok(())
}

/// Parse a query string into (key, value) pairs.
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ParamError> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|err| ParamError::Malformed(err.to_string()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(content_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers
    }

    #[test]
    fn json_and_form_give_the_same_fields() {
        let json = Params::from_body(
            &headers("application/json; charset=utf-8"),
            br#"{"customer_uid":"c1","amount":9900}"#,
        );
        let form = Params::from_body(
            &headers("application/x-www-form-urlencoded"),
            b"customer_uid=c1&amount=9900",
        );
        for params in [json, form] {
            let params = params.unwrap_or_default();
            assert_eq!(
                params.required_text("customer_uid", 80),
                Ok("c1".to_owned())
            );
            assert_eq!(params.integer("amount"), Ok(Some(9900)));
        }
    }

    #[test]
    fn garbage_bodies_are_malformed_not_panics() {
        for body in [&b"{not json"[..], b"[1,2]", b"\"text\""] {
            assert!(matches!(
                Params::from_body(&headers("application/json"), body),
                Err(ParamError::Malformed(_))
            ));
        }
        // Form decoding is lossy rather than failing: garbage simply lacks the fields.
        let garbage = Params::from_body(
            &headers("application/x-www-form-urlencoded"),
            b"%%%=\xff&&=",
        );
        assert_eq!(
            garbage.and_then(|p| p.required_text("customer_uid", 80)),
            Err(ParamError::Missing("customer_uid"))
        );
    }

    #[test]
    fn amounts_must_be_whole_numbers_and_json_numbers() {
        let p =
            |body: &[u8]| Params::from_body(&headers("application/json"), body).unwrap_or_default();
        assert_eq!(p(br#"{"amount":1000.0}"#).integer("amount"), Ok(Some(1000)));
        assert!(p(br#"{"amount":10.5}"#).integer("amount").is_err());
        assert!(p(br#"{"amount":"1000"}"#).integer("amount").is_err());
        assert!(p(br#"{"amount":1e300}"#).integer("amount").is_err());
        assert_eq!(p(br#"{"amount":null}"#).integer("amount"), Ok(None));
        let form = Params::from_form(b"amount=abc").unwrap_or_default();
        assert!(form.integer("amount").is_err());
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let p = Params::from_body(
            &headers("application/json"),
            "{\"name\":\"월간 구독\"}".as_bytes(),
        )
        .unwrap_or_default();
        assert_eq!(p.short_text("name", 5), Ok(Some("월간 구독".to_owned())));
        assert!(p.short_text("name", 4).is_err());
    }

    #[test]
    fn custom_data_objects_are_json_encoded() {
        let p = Params::from_body(&headers("application/json"), br#"{"custom_data":{"a":1}}"#)
            .unwrap_or_default();
        assert_eq!(
            p.json_text("custom_data"),
            Ok(Some(r#"{"a":1}"#.to_owned()))
        );
    }
}
