//! The local stack as the story drives it: the functions under `cargo
//! lambda watch` (HTTP and the invoke API), the simulator's control routes,
//! the table; the checks the story keeps; and the formatting of what it
//! prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};
use shared::billing::{BILLING_TZ, Subscription, SubscriptionId};
use shared::ledger::Ledger;
use shared::ledger::dynamodb::DynamoLedger;
use url::Url;

use crate::{Result, fail};

/// The outcome of the checks, printed at the end.
#[derive(Default)]
pub(crate) struct Checks {
    pub(crate) passed: u32,
    pub(crate) failed: Vec<String>,
}

impl Checks {
    pub(crate) fn check(&mut self, ok: bool, what: impl Into<String>) {
        if ok {
            self.passed += 1;
        } else {
            let what = what.into();
            println!("  ✗ {what}");
            self.failed.push(what);
        }
    }
}

pub(crate) struct Stack {
    pub(crate) http: reqwest::Client,
    pub(crate) store: DynamoLedger,
    pub(crate) sim: String,
    pub(crate) lambda: String,
    pub(crate) started: Instant,
    /// Queued mode (CHARGE_MODE=queued): the charge queue on moto_server.
    pub(crate) queue: Option<(aws_sdk_sqs::Client, String)>,
    /// The time the story has reached (the last run's billing time): sent
    /// to the HTTP functions as `x-billing-clock`, which they follow on the
    /// event's clock, so a card replaced after January's decline is
    /// replaced in January for them too.
    pub(crate) story_clock: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Stack {
    pub(crate) fn callback_fn(&self, path: &str) -> String {
        format!("{}/lambda-url/billing-callback{path}", self.lambda)
    }

    /// Moves the story's time on (an action some hours after a run).
    pub(crate) fn advance_story_clock(&self, by: chrono::Duration) {
        let mut clock = self
            .story_clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *clock = clock.map(|t| t + by);
    }

    /// `r` with the story's time, once a run has played one.
    pub(crate) fn on_story_clock(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let at = *self
            .story_clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match at {
            Some(t) => r.header("x-billing-clock", t.to_rfc3339()),
            None => r,
        }
    }

    /// Calls the management API (`subscription-api`): status, JSON body and
    /// whether the answer was a replay of an earlier one (`Idempotency-Key`).
    pub(crate) async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value, bool)> {
        let url = format!("{}/lambda-url/subscription-api{path}", self.lambda);
        let mut r = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        r = self.on_story_clock(r.header("x-actor", "local-demo"));
        if let Some(k) = idempotency_key {
            r = r.header("idempotency-key", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        let replayed = r.headers().contains_key("idempotent-replayed");
        let text = r.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value, replayed))
    }

    pub(crate) fn elapsed(&self) -> String {
        format!("{:>5.1}s", self.started.elapsed().as_secs_f64())
    }

    pub(crate) fn step(&self, n: u32, title: &str) {
        println!();
        println!("[{}] ── {n}. {title}", self.elapsed());
    }

    pub(crate) async fn sim_get(&self, path: &str) -> Result<Value> {
        let r = self.http.get(format!("{}{path}", self.sim)).send().await?;
        let status = r.status();
        let body = r.text().await?;
        if !status.is_success() {
            return Err(fail(format!("GET {path} → {status}: {body}")));
        }
        Ok(serde_json::from_str(&body)?)
    }

    pub(crate) async fn sim_post(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.sim))
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            return Err(fail(format!("POST {path} {body} → {status}: {text}")));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(crate) async fn ledger(&self) -> Result<Vec<Value>> {
        match self.sim_get("/__sim/ledger").await? {
            Value::Array(a) => Ok(a),
            other => Err(fail(format!("ledger is not an array: {other}"))),
        }
    }

    /// Invokes a function through the Lambda invoke API of `cargo lambda
    /// watch`: its answer, or why it failed.
    pub(crate) async fn invoke(
        &self,
        function: &str,
        payload: &Value,
    ) -> Result<(Value, Option<String>)> {
        let url = format!(
            "{}/2015-03-31/functions/{function}/invocations",
            self.lambda
        );
        let r = self.http.post(url).json(payload).send().await?;
        let status = r.status();
        let function_error = r
            .headers()
            .get("x-amz-function-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let error =
            (!status.is_success() || function_error.is_some() || body.get("errorType").is_some())
                .then(|| {
                    format!(
                        "HTTP {status}{}: {text}",
                        function_error
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )
                });
        Ok((body, error))
    }

    /// Queued mode: plays the queue's event source mapping until the queue
    /// is empty (receive ≤ 10 messages, invoke charge-worker with them,
    /// delete what it did, let the rest come back), adding up the workers'
    /// summaries into one run's.
    pub(crate) async fn drain_queue(&self, planned: &Value) -> Result<(Value, Option<String>)> {
        let Some((sqs, url)) = &self.queue else {
            return Ok((planned.clone(), None));
        };
        let mut total: BTreeMap<String, u64> = BTreeMap::new();
        let (mut invocations, mut error) = (0u32, None);
        for _ in 0..200 {
            let got = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            let records: Vec<Value> = messages
                .iter()
                .map(|m| json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:ap-northeast-2:000000000000:charge-local", "awsRegion": "ap-northeast-2"}))
                .collect();
            let (answer, failed) = self
                .invoke("charge-worker", &json!({ "Records": records }))
                .await?;
            invocations += 1;
            if failed.is_some() {
                error = failed;
                break;
            }
            if let Some(summary) = answer["summary"].as_object() {
                for (k, v) in summary {
                    *total.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
            let again: Vec<&str> = answer["batchItemFailures"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|i| i["itemIdentifier"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for m in &messages {
                let handle = m.receipt_handle().unwrap_or_default();
                if again.contains(&m.message_id().unwrap_or_default()) {
                    sqs.change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .send()
                        .await?;
                } else {
                    sqs.delete_message()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
        let mut body = json!(total);
        body["planned"] = planned["planned"].clone();
        body["messages"] = planned["messages"].clone();
        body["worker_invocations"] = json!(invocations);
        Ok((body, error))
    }

    /// Invokes scheduled-charge with the Scheduler input of `infra/template.yaml`:
    /// through the Lambda invoke API of `cargo lambda watch`. In queued mode
    /// it plans the run, and the charge queue is then drained by workers.
    pub(crate) async fn charge_run(
        &self,
        billing_time: DateTime<Utc>,
        run_id: &str,
    ) -> Result<RunResult> {
        let payload = json!({
            "scheduled_time": billing_time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "execution_id": run_id,
        });
        {
            let mut clock = self
                .story_clock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *clock = (*clock).max(Some(billing_time));
        }
        let started = Instant::now();
        let (mut body, mut error) = self.invoke("scheduled-charge", &payload).await?;
        if error.is_none() && body["mode"] == "queued" {
            (body, error) = self.drain_queue(&body).await?;
        }
        Ok(RunResult {
            body,
            error,
            took: started.elapsed(),
        })
    }

    pub(crate) async fn sub(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.store
            .get_subscription(id)
            .await?
            .ok_or_else(|| fail(format!("subscription {id} is not in the table")))
    }
}

pub(crate) struct RunResult {
    pub(crate) body: Value,
    pub(crate) error: Option<String>,
    pub(crate) took: Duration,
}

/// What a run's summary counts besides `due`, in the order it is printed.
pub(crate) const RUN_COUNTS: [&str; 11] = [
    "charged",
    "declined",
    "rejected",
    "ambiguous",
    "reconciled",
    "deferred",
    "needs_review",
    "corrupt",
    "signups_completed",
    "notices",
    "skipped",
];

impl RunResult {
    pub(crate) fn count(&self, key: &str) -> u64 {
        self.body.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    pub(crate) fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("FAILED: {e}");
        }
        let mut parts = Vec::new();
        for key in RUN_COUNTS {
            let n = self.count(key);
            if n > 0 {
                parts.push(format!("{key} {n}"));
            }
        }
        let mut s = format!("due {}", self.count("due"));
        if !parts.is_empty() {
            let _ = write!(s, ": {}", parts.join(", "));
        }
        if let Some(planned) = self.body.get("planned").and_then(Value::as_u64) {
            let _ = write!(
                s,
                " [queued: planned {planned} in {} message(s), {} worker invocation(s)]",
                self.count("messages"),
                self.count("worker_invocations")
            );
        }
        if let Some(stopped) = self.body.get("stopped").and_then(Value::as_str) {
            let _ = write!(s, " (stopped: {stopped})");
        }
        s
    }
}

/// Delay of the simulator's webhooks in the story: long enough that the run
/// after a lost answer settles it before the notification arrives.
pub(crate) const WEBHOOK_DELAY_MS: u64 = 3000;

pub(crate) fn paid_charges(ledger: &[Value]) -> usize {
    ledger
        .iter()
        .filter(|p| str_of(p, "customer_uid_usage") == "payment" && ever_paid(p))
        .count()
}

/// Starts scheduled-charge under `cargo lambda watch` with a run at a
/// billing time where nothing can be due.
pub(crate) async fn warm_up_charger(stack: &Stack) -> Result<()> {
    let t = Instant::now();
    let warm = stack.charge_run(probe_time(), "local-demo-warm-up").await?;
    println!(
        "  scheduled-charge under cargo lambda watch answers (a run at 2000-01-01: {}) after {:.1}s",
        warm.summary(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn probe_time() -> DateTime<Utc> {
    seoul_10am(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default())
}

/// `KEY=VALUE` lines (blank lines and `#` comments skipped).
/// The KMS key (an alias) the local stacks seal billing keys with.
pub(crate) const LOCAL_KMS_KEY: &str = "alias/billing-keys-local";

/// Creates the local KMS key behind `alias` on moto_server, unless it exists.
pub(crate) async fn ensure_kms_key(kms: &aws_sdk_kms::Client, alias: &str) -> Result<()> {
    if kms.describe_key().key_id(alias).send().await.is_ok() || !alias.starts_with("alias/") {
        return Ok(());
    }
    let key = kms
        .create_key()
        .description("billing keys of the local stack")
        .send()
        .await
        .map_err(|e| fail(format!("KMS CreateKey: {e}")))?;
    let id = key
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .ok_or_else(|| fail("KMS CreateKey answered without a key"))?;
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(id)
        .send()
        .await
        .map_err(|e| fail(format!("KMS CreateAlias {alias}: {e}")))?;
    Ok(())
}

pub(crate) fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

pub(crate) fn kst(t: DateTime<Utc>) -> String {
    t.with_timezone(&BILLING_TZ)
        .format("%Y-%m-%d %H:%M KST")
        .to_string()
}

pub(crate) fn won(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

pub(crate) fn seoul_10am(date: NaiveDate) -> DateTime<Utc> {
    let local = date.and_hms_opt(10, 0, 0).unwrap_or_default();
    BILLING_TZ
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| local.and_utc())
}

pub(crate) fn short_url(u: &Url) -> String {
    let mut s = u.path().to_owned();
    if let Some(q) = u.query() {
        let _ = write!(s, "?{q}");
    }
    s
}

pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn i64_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// A ledger payment that took money at some point (paid, possibly refunded later).
pub(crate) fn ever_paid(p: &Value) -> bool {
    i64_of(p, "paid_at") > 0 && matches!(str_of(p, "status"), "paid" | "cancelled")
}

/// At most `n` characters, with an ellipsis when cut.
pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Pads to a display width, counting Hangul as two columns.
pub(crate) fn pad_display(s: &str, width: usize) -> String {
    let w: usize = s
        .chars()
        .map(|c| if (c as u32) >= 0x1100 { 2 } else { 1 })
        .sum();
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_helpers() {
        assert_eq!(won(9900), "9,900");
        assert_eq!(won(1_234_567), "1,234,567");
        assert_eq!(won(0), "0");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(pad_display("베이직", 8), "베이직  ");
        assert_eq!(
            kst(DateTime::parse_from_rfc3339("2026-12-24T15:00:00Z")
                .unwrap()
                .with_timezone(&Utc)),
            "2026-12-25 00:00 KST"
        );
    }
}
