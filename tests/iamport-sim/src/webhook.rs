//! Webhook ("notification") delivery: `POST {imp_uid, merchant_uid, status[, cancellation_id]}`
//! to the payment's `notice_url` or the configured URL, as JSON or form data, from a spawned
//! task so the API answer is never held up. Every delivery is recorded.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::Sim;

/// Body encoding of webhooks (the console lets merchants pick either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `application/json`
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`
    Form,
}

impl WebhookFormat {
    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Form => "application/x-www-form-urlencoded",
        }
    }
}

impl fmt::Display for WebhookFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Form => "form",
        })
    }
}

/// Error for a webhook format other than `json` or `form`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook format {0:?} (expected json or form)")]
pub struct UnknownWebhookFormat(pub String);

impl FromStr for WebhookFormat {
    type Err = UnknownWebhookFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "form" => Ok(Self::Form),
            _ => Err(UnknownWebhookFormat(s.to_owned())),
        }
    }
}

/// Where and how webhooks are sent (the "console" setting; a request's `notice_url` overrides `url`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookSettings {
    /// Default target; `None` sends webhooks only for requests that carried a `notice_url`.
    pub url: Option<String>,
    pub format: WebhookFormat,
    /// Extra identical deliveries after the first (0 = deliver once), to test idempotency.
    pub duplicates: u32,
    /// Wait before the first delivery (e.g. to let the API answer arrive first).
    pub delay: Duration,
}

/// One webhook POST the simulator made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub url: String,
    pub format: WebhookFormat,
    /// The exact body sent.
    pub body: String,
    pub imp_uid: String,
    pub merchant_uid: String,
    pub status: String,
    pub cancellation_id: Option<String>,
    /// 1 for the first delivery of an event, 2.. for duplicates.
    pub attempt: u32,
    /// HTTP status the receiver answered; `None` when the request failed.
    pub http_status: Option<u16>,
    /// Transport error text when the request failed.
    pub error: Option<String>,
    /// Simulator clock when it was sent.
    pub sent_at: i64,
}

/// The documented webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct WebhookEvent {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation_id: Option<String>,
}

/// A webhook to deliver: the event plus the settings in force when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookJob {
    pub url: String,
    pub format: WebhookFormat,
    pub duplicates: u32,
    pub delay: Duration,
    pub event: WebhookEvent,
}

impl WebhookJob {
    fn body(&self) -> Result<String, String> {
        match self.format {
            WebhookFormat::Json => serde_json::to_string(&self.event).map_err(|e| e.to_string()),
            WebhookFormat::Form => {
                serde_urlencoded::to_string(&self.event).map_err(|e| e.to_string())
            }
        }
    }
}

/// Deliver `job` in the background.
pub(crate) fn dispatch(sim: Arc<Sim>, job: WebhookJob) {
    tokio::spawn(async move { deliver(&sim, job).await });
}

async fn deliver(sim: &Sim, job: WebhookJob) {
    if !job.delay.is_zero() {
        tokio::time::sleep(job.delay).await;
    }
    let body = match job.body() {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "could not encode a webhook body");
            return;
        }
    };
    for attempt in 1..=job.duplicates.saturating_add(1) {
        let result = sim
            .http()
            .post(&job.url)
            .header(reqwest::header::CONTENT_TYPE, job.format.content_type())
            .body(body.clone())
            .send()
            .await;
        let (http_status, error) = match result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(err) => (None, Some(err.to_string())),
        };
        tracing::info!(
            imp_uid = %job.event.imp_uid,
            status = %job.event.status,
            attempt,
            http_status,
            failed = error.is_some(),
            "webhook sent"
        );
        sim.record_webhook(WebhookDelivery {
            url: job.url.clone(),
            format: job.format,
            body: body.clone(),
            imp_uid: job.event.imp_uid.clone(),
            merchant_uid: job.event.merchant_uid.clone(),
            status: job.event.status.clone(),
            cancellation_id: job.event.cancellation_id.clone(),
            attempt,
            http_status,
            error,
            sent_at: sim.now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(format: WebhookFormat, cancellation_id: Option<&str>) -> WebhookJob {
        WebhookJob {
            url: "http://127.0.0.1:1/hook".into(),
            format,
            duplicates: 0,
            delay: Duration::ZERO,
            event: WebhookEvent {
                imp_uid: "imps_000000000001".into(),
                merchant_uid: "order 1".into(),
                status: "paid".into(),
                cancellation_id: cancellation_id.map(str::to_owned),
            },
        }
    }

    #[test]
    fn json_body_has_exactly_the_documented_fields() {
        assert_eq!(
            job(WebhookFormat::Json, None).body().ok().as_deref(),
            Some(r#"{"imp_uid":"imps_000000000001","merchant_uid":"order 1","status":"paid"}"#)
        );
    }

    #[test]
    fn form_body_is_urlencoded_and_carries_cancellation_id() {
        assert_eq!(
            job(WebhookFormat::Form, Some("c1")).body().ok().as_deref(),
            Some("imp_uid=imps_000000000001&merchant_uid=order+1&status=paid&cancellation_id=c1")
        );
    }

    #[test]
    fn format_parses_case_insensitively() {
        assert_eq!("FORM".parse::<WebhookFormat>(), Ok(WebhookFormat::Form));
        assert!("xml".parse::<WebhookFormat>().is_err());
    }
}
