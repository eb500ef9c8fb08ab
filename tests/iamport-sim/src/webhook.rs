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
    /// PortOne V2 (version 2024-04-25): `{type, timestamp, data}`, signed
    /// with Standard Webhooks headers. Payments made through the V2 face
    /// always use it, whatever the settings say.
    #[serde(rename = "portone")]
    PortOne,
}

/// `status` of the event that stands for a V2 `BillingKey.Issued` (its
/// `merchant_uid` carries the billing key).
pub(crate) const KEY_ISSUED: &str = "billing_key_issued";

impl WebhookFormat {
    fn content_type(self) -> &'static str {
        match self {
            Self::Json | Self::PortOne => "application/json",
            Self::Form => "application/x-www-form-urlencoded",
        }
    }
}

impl fmt::Display for WebhookFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Form => "form",
            Self::PortOne => "portone",
        })
    }
}

/// Error for a webhook format other than `json` or `form`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook format {0:?} (expected json, form or portone)")]
pub struct UnknownWebhookFormat(pub String);

impl FromStr for WebhookFormat {
    type Err = UnknownWebhookFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "form" => Ok(Self::Form),
            "portone" => Ok(Self::PortOne),
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
    /// The V2 event type of this job.
    fn v2_type(&self) -> &'static str {
        let e = &self.event;
        match (e.status.as_str(), &e.cancellation_id) {
            (KEY_ISSUED, _) => "BillingKey.Issued",
            ("paid", None) => "Transaction.Paid",
            ("paid", Some(_)) => "Transaction.PartialCancelled",
            ("cancelled", _) => "Transaction.Cancelled",
            ("failed", _) => "Transaction.Failed",
            _ => "Transaction.Ready",
        }
    }

    fn body_v2(&self, store_id: &str, now: i64) -> Result<String, String> {
        let kind = self.v2_type();
        let e = &self.event;
        let data = if kind.starts_with("BillingKey.") {
            serde_json::json!({"storeId": store_id, "billingKey": e.merchant_uid})
        } else {
            let mut d = serde_json::json!({
                "storeId": store_id,
                "paymentId": e.merchant_uid,
                "transactionId": e.imp_uid,
            });
            if let Some(c) = &e.cancellation_id {
                d["cancellationId"] = serde_json::Value::from(c.clone());
            }
            d
        };
        let body = serde_json::json!({
            "type": kind,
            "timestamp": crate::v2::rfc3339(now),
            "data": data,
        });
        serde_json::to_string(&body).map_err(|e| e.to_string())
    }

    fn body(&self) -> Result<String, String> {
        match self.format {
            WebhookFormat::PortOne => Err("a V2 body needs the store id".into()),
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
    let sent_at = sim.now();
    let body = if job.format == WebhookFormat::PortOne {
        job.body_v2(&sim.config().portone_store_id, sent_at)
    } else {
        job.body()
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "could not encode a webhook body");
            return;
        }
    };
    // One message id for an event: a duplicate is a re-delivery.
    let message_id = format!("msg_{}", crate::v2::random_token(24));
    for attempt in 1..=job.duplicates.saturating_add(1) {
        let mut request = sim
            .http()
            .post(&job.url)
            .header(reqwest::header::CONTENT_TYPE, job.format.content_type());
        if job.format == WebhookFormat::PortOne {
            // Each delivery is signed when it is sent (the body, with its
            // `timestamp`, stays the same across re-deliveries).
            let now = sim.now();
            let signature = crate::v2::sign(
                &sim.config().portone_webhook_secret,
                &message_id,
                now,
                body.as_bytes(),
            );
            request = request
                .header("webhook-id", &message_id)
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", signature);
        }
        let result = request.body(body.clone()).send().await;
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
