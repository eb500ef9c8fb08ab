//! Logging set-up for the functions.
//!
//! Like `lambda_runtime::tracing::init_default_subscriber` (JSON when
//! `AWS_LAMBDA_LOG_FORMAT=JSON`, level from `AWS_LAMBDA_LOG_LEVEL` or
//! `RUST_LOG`), with one difference: libraries that would print raw
//! payloads at TRACE level are capped. `lambda_runtime` logs every raw event
//! at TRACE (callback queries, `prepare` bodies with buyer phone and e-mail),
//! and the HTTP/AWS stacks log request and response bodies (DynamoDB items
//! hold buyer data). Our own code never logs secrets or unmasked PII, so
//! TRACE stays safe to turn on.

use tracing_subscriber::EnvFilter;

/// Libraries that print raw payloads at TRACE, and the most detailed level
/// each may log at, whatever the configured level.
const CAPPED: [(&str, Level); 14] = [
    ("lambda_runtime", Level::Debug),
    ("lambda_http", Level::Debug),
    ("lambda_runtime_api_client", Level::Debug),
    ("hyper", Level::Info),
    ("hyper_util", Level::Info),
    ("h2", Level::Info),
    ("reqwest", Level::Info),
    ("rustls", Level::Info),
    ("aws_smithy_runtime", Level::Debug),
    ("aws_smithy_runtime_api", Level::Debug),
    ("aws_smithy_http_client", Level::Debug),
    ("aws_sdk_dynamodb", Level::Debug),
    ("aws_sdk_secretsmanager", Level::Debug),
    ("aws_config", Level::Debug),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "off" => Self::Off,
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// The filter for `spec` (`info`, `trace`, or a directive list such as
/// `info,shared=debug`). Its global level applies to the capped libraries
/// too, but never above their cap: a cap lowers, it never raises.
pub fn filter(spec: &str) -> EnvFilter {
    let global = spec
        .split(',')
        .filter(|d| !d.contains('='))
        .find_map(Level::parse)
        .unwrap_or(Level::Info);
    let caps: Vec<String> = CAPPED
        .iter()
        .map(|(target, cap)| format!("{target}={}", global.min(*cap).as_str()))
        .collect();
    let spec = if spec.trim().is_empty() { "info" } else { spec };
    EnvFilter::try_new(format!("{spec},{}", caps.join(",")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{}", caps.join(","))))
}

/// Installs the global subscriber; call once at the start of `main`.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into())
        .to_ascii_lowercase();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&level))
        .with_target(false);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.init();
    }
}

/// Counters as one CloudWatch Embedded Metric Format line: namespace
/// `SubscriptionBilling`, each metric per `Function` and in all (the alarms
/// watch the dimensionless one, whichever function counted it).
pub fn emf_line(function: &str, metrics: &[(&str, u64)], timestamp_ms: i64) -> String {
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "SubscriptionBilling",
                "Dimensions": [["Function"], []],
                "Metrics": metrics.iter().map(|(n, _)| serde_json::json!({"Name": n, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        },
        "Function": function,
    });
    if let Some(obj) = doc.as_object_mut() {
        for (name, value) in metrics {
            obj.insert((*name).to_owned(), serde_json::json!(value));
        }
    }
    doc.to_string()
}

/// Prints one EMF counter line on stdout (CloudWatch turns it into metrics).
pub fn count(function: &str, metric: &str, value: u64) {
    println!(
        "{}",
        emf_line(
            function,
            &[(metric, value)],
            chrono::Utc::now().timestamp_millis()
        )
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_lower_but_never_raise() {
        let info = filter("info").to_string();
        assert!(info.contains("aws_smithy_runtime=info"), "{info}");
        assert!(!info.contains("=debug"), "{info}");
        let trace = filter("trace").to_string();
        assert!(
            trace.contains("lambda_runtime=debug") && trace.contains("hyper=info"),
            "{trace}"
        );
        let warn = filter("warn,shared=debug").to_string();
        assert!(
            warn.contains("aws_sdk_dynamodb=warn") && warn.contains("shared=debug"),
            "{warn}"
        );
    }
}
