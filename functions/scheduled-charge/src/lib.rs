//! scheduled-charge: invoked by EventBridge Scheduler (or a classic
//! EventBridge schedule). The event's time is the billing clock; the rules
//! live in `shared::run` and `shared::charging`. With `CHARGE_MODE=single` it charges the run
//! itself; with `queued` it plans the run into the charge queue for the
//! `charge-worker`s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;
use shared::app::App;
use shared::charging::BillingRun;
use shared::engine::Budget;
use shared::gateway::PaymentGateway;
use shared::ledger::Ledger;
use shared::run::queue::{self, PlanReport, SqsQueue};
use shared::run::{self as billing_run, RunOptions, RunReport};
use tracing::{error, info};

pub const FUNCTION: &str = "scheduled-charge";

/// Why a run ended with an error status.
#[derive(Debug, thiserror::Error)]
pub enum RunFailed {
    #[error("event carries no usable time: {0}")]
    BadEvent(String),
    #[error("run stopped by a dependency failure: {0}")]
    Dependency(String),
    #[error(
        "CLAIM_LEASE_SECS ({lease} s) must exceed the function's timeout ({left} s left at start): a claim could outlive its lease while this run still acts on it"
    )]
    LeaseShorterThanTimeout { lease: u64, left: u64 },
}

impl From<RunFailed> for Diagnostic {
    fn from(e: RunFailed) -> Self {
        let error_type = match e {
            RunFailed::BadEvent(_) => "BadScheduleEvent",
            RunFailed::Dependency(_) => "ChargeRunFailed",
            RunFailed::LeaseShorterThanTimeout { .. } => "Misconfigured",
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
pub fn run_of(event: &Value, request_id: &str) -> Result<BillingRun, RunFailed> {
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
    Ok(BillingRun {
        billing_time,
        run_id,
    })
}

/// Refuses to run when a claim made now could expire while this
/// invocation may still act on it: the lease must outlast the time left.
pub fn check_lease(lease: Duration, budget: &Budget) -> Result<(), RunFailed> {
    match budget.left(Duration::ZERO) {
        Some(left) if left >= lease => Err(RunFailed::LeaseShorterThanTimeout {
            lease: lease.as_secs(),
            left: left.as_secs(),
        }),
        _ => Ok(()),
    }
}

/// One scheduled event: the run itself (`queue` absent: single mode), or
/// its plan into the charge queue (queued mode).
pub async fn handle_event<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    queue: Option<&SqsQueue>,
    event: LambdaEvent<Value>,
) -> Result<Value, RunFailed> {
    let answer = match queue {
        Some(q) => serde_json::to_value(plan(app, q, event).await?),
        None => serde_json::to_value(handle(app, event).await?),
    };
    answer.map_err(|e| RunFailed::Dependency(format!("encoding the report: {e}")))
}

/// Plans one billing run into the charge queue (queued mode). Running it
/// twice for one instant is harmless: the workers' claims decide.
pub async fn plan<Q: queue::WorkQueue, L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    queue: &Q,
    event: LambdaEvent<Value>,
) -> Result<PlanReport, RunFailed> {
    let run = run_of(&event.payload, &event.context.request_id)?;
    let budget = Budget::from_lambda_deadline(event.context.deadline());
    info!(billing_time = %run.billing_time, run_id = %run.run_id, "planning the run into the charge queue");
    let report = queue::plan(&app.engine, &RunOptions { run, budget }, queue).await;
    match &report.error {
        Some(e) => {
            error!(error = %e, "planning stopped early; running it again for the same time is harmless");
            Err(RunFailed::Dependency(e.clone()))
        }
        None => Ok(report),
    }
}

/// Runs one billing run and reports it (log line, metrics, return value).
pub async fn handle<L: Ledger, G: PaymentGateway>(
    app: &App<L, G>,
    event: LambdaEvent<Value>,
) -> Result<RunReport, RunFailed> {
    let run = run_of(&event.payload, &event.context.request_id)?;
    let budget = Budget::from_lambda_deadline(event.context.deadline());
    check_lease(app.engine.settings.charging.claim_lease, &budget)?;
    info!(billing_time = %run.billing_time, run_id = %run.run_id, "charge run starting");
    let report = billing_run::run(&app.engine, RunOptions { run, budget }).await;
    let s = &report.summary;
    info!(
        due = s.due, charged = s.charged, declined = s.declined, rejected = s.rejected,
        ambiguous = s.ambiguous, reconciled = s.reconciled, deferred = s.deferred,
        needs_review = s.needs_review, corrupt = s.corrupt, skipped = s.skipped,
        stopped = ?report.stopped, error = ?report.error,
        "charge run finished"
    );
    // Embedded Metric Format: one raw JSON line on stdout.
    println!(
        "{}",
        billing_run::emf_line(&report, FUNCTION, Utc::now().timestamp_millis())
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
        let a = run_of(&scheduler, "req").unwrap();
        let b = run_of(&classic, "req").unwrap();
        assert_eq!(a.billing_time, b.billing_time);
        assert_eq!(a.run_id, "exec-1");
        assert_eq!(b.run_id, "cdc73f9d");
    }

    #[test]
    fn a_lease_shorter_than_the_time_left_refuses_to_run() {
        use std::time::SystemTime;
        let lease = Duration::from_secs(900);
        let short = Budget::from_lambda_deadline(SystemTime::now() + Duration::from_secs(300));
        assert!(check_lease(lease, &short).is_ok());
        let long = Budget::from_lambda_deadline(SystemTime::now() + Duration::from_secs(901));
        let e = check_lease(lease, &long).unwrap_err();
        assert_eq!(Diagnostic::from(e).error_type, "Misconfigured");
        assert!(check_lease(lease, &Budget::unlimited()).is_ok());
    }

    #[test]
    fn an_event_without_time_is_refused() {
        assert!(matches!(
            run_of(&serde_json::json!({}), "r"),
            Err(RunFailed::BadEvent(_))
        ));
        assert!(matches!(
            run_of(&serde_json::json!({"time": "yesterday"}), "r"),
            Err(RunFailed::BadEvent(_))
        ));
        let d: Diagnostic = RunFailed::Dependency("x".into()).into();
        assert_eq!(d.error_type, "ChargeRunFailed");
    }
}
