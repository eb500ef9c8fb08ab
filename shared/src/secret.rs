//! Values that must never reach logs: API keys, secrets, access tokens, and
//! personal data such as buyer phone numbers and e-mail addresses.

use std::fmt;

/// A secret string (an `imp_key`, `imp_secret` or access token).
///
/// `Debug` and `Display` print `***`; the value is only reachable through
/// [`Secret::expose`], which makes every use greppable. It can be read from
/// JSON (a V2 webhook's billing key) but never written back out by serde.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send it (an HTTP header or body).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Personal data (buyer phone, e-mail, name). Serialises as-is (it must reach
/// i'mport and our table), but prints masked in `Debug`/`Display`, so a struct
/// that derives `Debug` can be logged without leaking it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Pii(String);

impl Pii {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A masked rendering that is safe to log.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Debug for Pii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl fmt::Display for Pii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Secret {
    /// Whether `given` is this secret, compared in constant time (a key sent
    /// in a header cannot be guessed byte by byte from response times).
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(given).into()
    }
}

/// Masks personal data for logs.
///
/// - e-mail: first character of the local part, then `***@domain`
///   (`gildong@example.com` → `g***@example.com`);
/// - anything with 7 or more digits (a phone number): all digits but the last
///   four become `*` (`010-1234-5678` → `***-****-5678`);
/// - anything else: first character and `***`.
pub fn mask(value: &str) -> String {
    if let Some((local, domain)) = value.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let digits = value.chars().filter(char::is_ascii_digit).count();
    if digits >= 7 {
        let mut seen = 0;
        return value
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    seen += 1;
                    if digits - seen >= 4 { '*' } else { c }
                } else {
                    c
                }
            })
            .collect();
    }
    match value.chars().next() {
        Some(first) => format!("{first}***"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("imp_secret_value");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "imp_secret_value");
    }

    #[test]
    fn matching_is_exact() {
        let s = Secret::new("key-123");
        assert!(s.matches(b"key-123"));
        assert!(!s.matches(b"key-12"));
        assert!(!s.matches(b"key-1234"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn phone_keeps_only_last_four_digits() {
        assert_eq!(mask("010-1234-5678"), "***-****-5678");
        assert_eq!(mask("01012345678"), "*******5678");
    }

    #[test]
    fn email_keeps_first_letter_and_domain() {
        assert_eq!(mask("gildong@example.com"), "g***@example.com");
    }

    #[test]
    fn names_keep_first_character() {
        assert_eq!(mask("홍길동"), "홍***");
        assert_eq!(mask(""), "");
        let p = Pii::new("010-9999-1234");
        assert_eq!(format!("{p:?}"), "\"***-****-1234\"");
    }
}
