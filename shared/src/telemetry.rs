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

/// Targets that never log below DEBUG, whatever the configured level.
const CAPPED: &str = "lambda_runtime=debug,lambda_http=debug,lambda_runtime_api_client=debug,\
hyper=info,hyper_util=info,h2=info,reqwest=info,rustls=info,\
aws_smithy_runtime=debug,aws_smithy_runtime_api=debug,aws_smithy_http_client=debug,\
aws_sdk_dynamodb=debug,aws_sdk_secretsmanager=debug,aws_config=debug";

/// The filter for `level` (`info`, `debug`, `trace`, or a full directive list).
pub fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(format!("{level},{CAPPED}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{CAPPED}")))
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
