//! Reading one variable: trimmed text, a whole number in a range, a flag,
//! an http(s) URL. Every error names the variable.

use url::Url;

use super::ConfigError;

/// The variables, from any lookup (the environment, or a map in tests).
pub struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Vars<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { get }
    }

    /// A variable's value, trimmed; `None` when it is unset or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.get)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.text(name).ok_or(ConfigError::Missing { name })
    }

    /// A whole number within `min..=max`, `default` when unset.
    pub fn number(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(v) = self.text(name) else {
            return Ok(default);
        };
        let n: u64 = v.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: format!("{v:?} is not a whole number"),
        })?;
        if n < min || n > max {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("{n} is outside {min}..={max}"),
            });
        }
        Ok(n)
    }

    /// `true`/`1`/`yes` or `false`/`0`/`no`, `default` when unset.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ConfigError::Invalid {
                name,
                reason: format!("{other:?} is not true/false"),
            }),
        }
    }

    /// An http(s) URL, if set.
    pub fn url(&self, name: &'static str) -> Result<Option<Url>, ConfigError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        let u = Url::parse(&v).map_err(|e| ConfigError::Invalid {
            name,
            reason: e.to_string(),
        })?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                name,
                reason: "must be an http(s) URL".into(),
            });
        }
        Ok(Some(u))
    }

    /// An http(s) URL, `default` when unset.
    pub fn url_or(&self, name: &'static str, default: &str) -> Result<Url, ConfigError> {
        match self.url(name)? {
            Some(u) => Ok(u),
            None => Url::parse(default).map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("the default {default}: {e}"),
            }),
        }
    }
}

/// Whether `endpoint` (an `AWS_ENDPOINT_URL*` value) names a local
/// emulator: loopback, `localhost`, Docker's `host.docker.internal`, or a
/// container name (no dots). AWS's own endpoints have none of these forms.
pub fn local_endpoint(endpoint: &str) -> bool {
    let Ok(url) = Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            matches!(name, "localhost" | "host.docker.internal") || !name.contains('.')
        }
        None => false,
    }
}
