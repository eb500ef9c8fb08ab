//! Control endpoints under `/__sim/` (no auth): scenarios and inspection over HTTP, acting on
//! the same state as the [`crate::SimHandle`] methods. Bodies and answers are plain JSON
//! (not the i'mport envelope); errors are `{"error": "..."}` with a 4xx status.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::SharedSim;
use crate::fault::Fault;
use crate::model::NewCustomer;
use crate::receipt::{CashReceiptRecord, ReceiptMode};
use crate::webhook::{self, WebhookFormat, WebhookSettings};

/// Decline reason when `POST /__sim/decline` names none.
pub(crate) const DEFAULT_DECLINE_REASON: &str = "잔액부족";

pub(crate) fn router() -> Router<SharedSim> {
    Router::new()
        .route("/health", get(health))
        .route("/customers", post(add_customer).get(customers))
        .route("/decline", post(decline).get(declines))
        .route("/decline/{customer_uid}", delete(clear_decline))
        .route(
            "/faults",
            post(inject_faults).get(pending_faults).delete(clear_faults),
        )
        .route("/latency", post(set_latency))
        .route("/tokens/expire", post(expire_tokens))
        .route("/clock", get(clock).post(set_clock))
        .route("/ledger", get(ledger))
        .route("/requests", get(requests))
        .route("/webhook", get(webhook_settings).post(set_webhook))
        .route("/webhooks", get(webhooks))
        .route("/webhooks/send", post(send_webhook))
        .route("/receipts", get(receipts).post(set_receipt_mode))
        .route("/receipts/{id}", get(receipts_of))
        .route("/reset", post(reset))
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// A control body that is not the expected JSON.
struct BadBody(String);

impl IntoResponse for BadBody {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadBody> {
    serde_json::from_slice(body).map_err(|err| BadBody(format!("invalid JSON body: {err}")))
}

#[derive(Serialize)]
struct Done {
    ok: bool,
}

const DONE: Json<Done> = Json(Done { ok: true });

async fn health() -> Json<Done> {
    DONE
}

/// `POST /__sim/customers` with a [`NewCustomer`]: register a billing key directly.
async fn add_customer(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let new: NewCustomer = match parse(&body) {
        Ok(new) => new,
        Err(bad) => return bad.into_response(),
    };
    if new.customer_uid.is_empty() || new.customer_uid.chars().count() > 80 {
        return error(
            StatusCode::BAD_REQUEST,
            "customer_uid is required (at most 80 characters)",
        );
    }
    (StatusCode::CREATED, Json(sim.add_customer(new))).into_response()
}

async fn customers(State(sim): State<SharedSim>) -> Response {
    Json(sim.customers()).into_response()
}

#[derive(Debug, Deserialize, Serialize)]
struct DeclineBody {
    customer_uid: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /__sim/decline {customer_uid, reason}`: every `again` for that key fails until cleared.
async fn decline(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let body: DeclineBody = match parse(&body) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    let reason = body
        .reason
        .unwrap_or_else(|| DEFAULT_DECLINE_REASON.to_owned());
    sim.decline_customer(&body.customer_uid, &reason);
    Json(DeclineBody {
        customer_uid: body.customer_uid,
        reason: Some(reason),
    })
    .into_response()
}

async fn declines(State(sim): State<SharedSim>) -> Response {
    Json(sim.declines()).into_response()
}

#[derive(Serialize)]
struct Cleared {
    customer_uid: String,
    cleared: bool,
}

/// `DELETE /__sim/decline/{customer_uid}`
async fn clear_decline(
    State(sim): State<SharedSim>,
    customer_uid: Result<Path<String>, PathRejection>,
) -> Response {
    match customer_uid {
        Ok(Path(customer_uid)) => Json(Cleared {
            cleared: sim.clear_decline(&customer_uid),
            customer_uid,
        })
        .into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, err.to_string()),
    }
}

/// `POST /__sim/faults` with one fault object or an array of them; answers the queue.
async fn inject_faults(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        parse::<Vec<Fault>>(&body)
    } else {
        parse::<Fault>(&body).map(|fault| vec![fault])
    };
    let faults = match parsed {
        Ok(faults) if !faults.is_empty() => faults,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "no fault given"),
        Err(bad) => return bad.into_response(),
    };
    for fault in faults {
        sim.inject(fault);
    }
    Json(sim.pending_faults()).into_response()
}

async fn pending_faults(State(sim): State<SharedSim>) -> Response {
    Json(sim.pending_faults()).into_response()
}

async fn clear_faults(State(sim): State<SharedSim>) -> Json<Done> {
    sim.clear_faults();
    DONE
}

#[derive(Debug, Deserialize, Serialize)]
struct LatencyBody {
    ms: u64,
}

/// `POST /__sim/latency {ms}`: delay every API answer.
async fn set_latency(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let body: LatencyBody = match parse(&body) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    sim.set_latency(Duration::from_millis(body.ms));
    Json(body).into_response()
}

/// `POST /__sim/tokens/expire`: the current token stops working; getToken issues a new one.
async fn expire_tokens(State(sim): State<SharedSim>) -> Json<Done> {
    sim.expire_tokens();
    DONE
}

#[derive(Serialize)]
struct ClockView {
    now: i64,
    offset_secs: i64,
}

#[derive(Deserialize)]
struct ClockBody {
    #[serde(default)]
    now: Option<i64>,
    #[serde(default)]
    advance_secs: Option<i64>,
}

fn clock_view(sim: &SharedSim) -> Response {
    Json(ClockView {
        now: sim.now(),
        offset_secs: sim.clock_offset(),
    })
    .into_response()
}

async fn clock(State(sim): State<SharedSim>) -> Response {
    clock_view(&sim)
}

/// `POST /__sim/clock {now}` (set) or `{advance_secs}` (move).
async fn set_clock(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let body: ClockBody = match parse(&body) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    match (body.now, body.advance_secs) {
        (Some(now), None) => sim.set_clock(now),
        (None, Some(secs)) => sim.advance_clock(secs),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "send exactly one of {\"now\": unix_secs} or {\"advance_secs\": secs}",
            );
        }
    }
    clock_view(&sim)
}

async fn ledger(State(sim): State<SharedSim>) -> Response {
    Json(sim.ledger()).into_response()
}

async fn requests(State(sim): State<SharedSim>) -> Response {
    Json(sim.request_counts()).into_response()
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct WebhookBody {
    url: Option<String>,
    format: WebhookFormat,
    duplicates: u32,
    delay_ms: u64,
}

impl From<WebhookSettings> for WebhookBody {
    fn from(settings: WebhookSettings) -> Self {
        Self {
            url: settings.url,
            format: settings.format,
            duplicates: settings.duplicates,
            delay_ms: u64::try_from(settings.delay.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

async fn webhook_settings(State(sim): State<SharedSim>) -> Response {
    Json(WebhookBody::from(sim.webhook_settings())).into_response()
}

/// `POST /__sim/webhook {url, format, duplicates, delay_ms}`: replaces the webhook settings
/// (omitted fields take their defaults: no URL, json, 0, 0).
async fn set_webhook(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let body: WebhookBody = match parse(&body) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    sim.set_webhook_settings(WebhookSettings {
        url: body.url.filter(|u| !u.is_empty()),
        format: body.format,
        duplicates: body.duplicates,
        delay: Duration::from_millis(body.delay_ms),
    });
    webhook_settings(State(sim)).await
}

async fn webhooks(State(sim): State<SharedSim>) -> Response {
    Json(sim.webhooks_sent()).into_response()
}

#[derive(Deserialize)]
struct SendBody {
    imp_uid: String,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Serialize)]
struct Queued {
    imp_uid: String,
    url: String,
    status: String,
}

/// `POST /__sim/webhooks/send {imp_uid, url?}`: send a webhook for the payment's current
/// status now (to `url`, else its `notice_url`, else the configured URL).
async fn send_webhook(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let body: SendBody = match parse(&body) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    if sim.payment(&body.imp_uid).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no payment {}", body.imp_uid),
        );
    }
    let Some(job) = sim.webhook_for(&body.imp_uid, body.url.as_deref()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "no webhook URL: pass url, or configure one with POST /__sim/webhook",
        );
    };
    let queued = Queued {
        imp_uid: job.event.imp_uid.clone(),
        url: job.url.clone(),
        status: job.event.status.clone(),
    };
    webhook::dispatch(Arc::clone(&sim), job);
    (StatusCode::ACCEPTED, Json(queued)).into_response()
}

#[derive(Serialize)]
struct ReceiptsView {
    mode: ReceiptMode,
    receipts: Vec<CashReceiptRecord>,
}

/// `GET /__sim/receipts`: the receipt mode and every cash-receipt record
/// (identifiers masked to their last 4 characters).
async fn receipts(State(sim): State<SharedSim>) -> Response {
    Json(ReceiptsView {
        mode: sim.receipt_mode(),
        receipts: sim.all_cash_receipts(),
    })
    .into_response()
}

/// `GET /__sim/receipts/{imp_uid or paymentId}`: that payment's records, oldest first.
async fn receipts_of(
    State(sim): State<SharedSim>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    match id {
        Ok(Path(id)) => Json(sim.cash_receipts(&id)).into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, err.to_string()),
    }
}

/// `POST /__sim/receipts {"mode":"normal"|"in_progress","secs":n|"fail","times":n}`:
/// how the PG answers the next cash-receipt issuances; answers the mode.
async fn set_receipt_mode(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let mode: ReceiptMode = match parse(&body) {
        Ok(mode) => mode,
        Err(bad) => return bad.into_response(),
    };
    sim.set_receipt_mode(mode);
    Json(sim.receipt_mode()).into_response()
}

/// `POST /__sim/reset`: forget everything (keys, payments, cash receipts and the receipt
/// mode, faults, clock, token, webhooks).
async fn reset(State(sim): State<SharedSim>) -> Json<Done> {
    sim.reset();
    DONE
}
