//! scheduled-charge: invoked by EventBridge Scheduler (or a classic
//! EventBridge schedule). The event's time is the billing clock; the rules
//! live in `shared::charging`.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;
use shared::app::App;
use shared::charging::{self, Clock, RunOptions, RunReport};
use tracing::{error, info, warn};

pub const FUNCTION: &str = "scheduled-charge";

/// Why a run ended with an error status.
#[derive(Debug, thiserror::Error)]
pub enum RunFailed {
    #[error("event carries no usable time: {0}")]
    BadEvent(String),
    #[error("run stopped by a dependency failure: {0}")]
    Dependency(String),
}

impl From<RunFailed> for Diagnostic {
    fn from(e: RunFailed) -> Self {
        let error_type = match e {
            RunFailed::BadEvent(_) => "BadScheduleEvent",
            RunFailed::Dependency(_) => "ChargeRunFailed",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// The billing clock and run id of an event. Accepts the Scheduler `Input`
/// of `infra/template.yaml` (`scheduled_time`, `execution_id`) and the
/// classic EventBridge scheduled event (`time`, `id`).
pub fn clock_of(event: &Value, request_id: &str) -> Result<Clock, RunFailed> {
    let text = event
        .get("scheduled_time")
        .or_else(|| event.get("time"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RunFailed::BadEvent(
                "expected `scheduled_time` (Scheduler input) or `time` (EventBridge)".into(),
            )
        })?;
    let billing_time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| RunFailed::BadEvent(format!("{text:?} is not an RFC 3339 instant: {e}")))?
        .with_timezone(&Utc);
    let run_id = event
        .get("execution_id")
        .or_else(|| event.get("id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .unwrap_or(request_id)
        .to_owned();
    Ok(Clock {
        billing_time,
        run_id,
    })
}

/// The Lambda deadline as a tokio instant. `None` when the context has none
/// (tests) or one already past when the invocation starts: Lambda never does
/// that, but local emulators do (cargo-lambda 1.9 sends a duration, 600000,
/// where Lambda sends an instant), and a run that stops before it starts
/// would silently charge nothing.
fn deadline_of(deadline: SystemTime) -> Option<tokio::time::Instant> {
    if deadline <= UNIX_EPOCH {
        return None;
    }
    match deadline.duration_since(SystemTime::now()) {
        Ok(left) => Some(tokio::time::Instant::now() + left),
        Err(_) => {
            warn!("the invocation's deadline is already past; running without one");
            None
        }
    }
}

/// Runs one billing run and reports it (log line, metrics, return value).
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<RunReport, RunFailed> {
    let clock = clock_of(&event.payload, &event.context.request_id)?;
    info!(billing_time = %clock.billing_time, run_id = %clock.run_id, "charge run starting");
    let report = charging::run(
        app,
        RunOptions {
            clock,
            deadline: deadline_of(event.context.deadline()),
        },
    )
    .await;
    let s = &report.summary;
    info!(
        due = s.due, charged = s.charged, declined = s.declined, rejected = s.rejected,
        ambiguous = s.ambiguous, reconciled = s.reconciled, skipped = s.skipped,
        stopped = ?report.stopped, error = ?report.error,
        "charge run finished"
    );
    // Embedded Metric Format: one raw JSON line on stdout.
    println!(
        "{}",
        charging::emf_line(&report, FUNCTION, Utc::now().timestamp_millis())
    );
    match &report.error {
        Some(e) => {
            error!(error = %e, "charge run ended early; the next run continues from the table");
            Err(RunFailed::Dependency(e.clone()))
        }
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_event_shapes_give_the_same_clock() {
        let scheduler =
            serde_json::json!({"scheduled_time": "2026-12-24T01:00:00Z", "execution_id": "exec-1"});
        let classic = serde_json::json!({"id": "cdc73f9d", "detail-type": "Scheduled Event", "time": "2026-12-24T01:00:00Z"});
        let a = clock_of(&scheduler, "req").unwrap();
        let b = clock_of(&classic, "req").unwrap();
        assert_eq!(a.billing_time, b.billing_time);
        assert_eq!(a.run_id, "exec-1");
        assert_eq!(b.run_id, "cdc73f9d");
    }

    #[test]
    fn a_deadline_in_the_past_means_none_and_a_future_one_is_kept() {
        assert!(deadline_of(UNIX_EPOCH).is_none());
        // cargo-lambda's 600000 ms read as an instant: 1970-01-01T00:10Z.
        assert!(deadline_of(UNIX_EPOCH + std::time::Duration::from_millis(600_000)).is_none());
        let future = deadline_of(SystemTime::now() + std::time::Duration::from_secs(60)).unwrap();
        let left = future - tokio::time::Instant::now();
        assert!(
            left > std::time::Duration::from_secs(58) && left <= std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn an_event_without_time_is_refused() {
        assert!(matches!(
            clock_of(&serde_json::json!({}), "r"),
            Err(RunFailed::BadEvent(_))
        ));
        assert!(matches!(
            clock_of(&serde_json::json!({"time": "yesterday"}), "r"),
            Err(RunFailed::BadEvent(_))
        ));
        let d: Diagnostic = RunFailed::Dependency("x".into()).into();
        assert_eq!(d.error_type, "ChargeRunFailed");
    }
}
