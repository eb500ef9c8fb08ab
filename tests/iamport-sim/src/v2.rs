//! The PortOne V2 face, under `/portone`, over the same ledger as V1: a
//! billing key is a key of the V1 ledger whose `customer_uid` is the V2
//! `billingKey`, and a V2 `paymentId` is a V1 `merchant_uid` (each try one
//! transaction). Shapes follow the official spec subset
//! (`/work/shared/portone-v2/v2-billing.openapi.json`): errors are
//! `{type, message}` with real HTTP statuses, a decline is 502 `PG_PROVIDER`
//! with the payment `FAILED`, paying a paid `paymentId` is 409
//! `ALREADY_PAID`, a deleted key stays readable as `DELETED`.
//!
//! Routes: `POST /payments/{paymentId}/billing-key`, `GET /payments/{paymentId}`,
//! `POST /payments/{paymentId}/cancel`, `GET|DELETE /billing-keys/{billingKey}`,
//! cash receipts (`POST /cash-receipts`, `GET /payments/{paymentId}/cash-receipt`,
//! `POST /payments/{paymentId}/cash-receipt/cancel`; shapes from
//! `spec/v2-cash-receipt.openapi.json`)
//! (auth `Authorization: PortOne <API secret>`), and the billing-key window
//! `GET /window?…` that `PortOne.requestIssueBillingKey` would open, which
//! redirects to `redirectUrl` with `billingKey` (or `code` and `message`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{AUTHORIZATION, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use url::Url;

use crate::SimConfig;
use crate::api::SharedSim;
use crate::fault::{FaultKind, V2_WINDOW_PATH};
use crate::model::{Payment, PaymentStatus};
use crate::params::query_pairs;
use crate::receipt::{CashReceiptKind, CashReceiptRecord, CashReceiptStatus};
use crate::reply::ApiReply;
use crate::state::{
    CancelOutcome, CancelRequest, ChargeOutcome, ChargeRequest, IssueOutcome, ReceiptCancelOutcome,
    ReceiptLookup, ReceiptRequest, ReceiptTarget, Sim, V2DeleteError, V2Key,
};
use crate::webhook;

/// The merchant id every V2 answer names.
const MERCHANT_ID: &str = "merchant-iamport-sim";
/// The longest `paymentId` taken: SMARTRO_V2's limit, the strictest.
const MAX_PAYMENT_ID: usize = 40;
/// The bank of account-based payments (V2 `Bank`).
const SIM_BANK: &str = "KOOKMIN";
/// The cash-receipt issuance path.
pub(crate) const CASH_RECEIPTS_PATH: &str = "/portone/cash-receipts";
/// Status of `CASH_RECEIPT_NOT_ISSUED`: 404, the official spec's
/// `x-portone-status-code` for it.
const NOT_ISSUED_STATUS: StatusCode = StatusCode::NOT_FOUND;
/// Status of a PG refusal of a cash receipt (`PG_PROVIDER`): 502, the official
/// spec's `x-portone-status-code` for it.
const RECEIPT_PG_FAILED_STATUS: StatusCode = StatusCode::BAD_GATEWAY;

/// RFC 3339 (UTC) of UNIX seconds, as V2 writes its instants.
pub(crate) fn rfc3339(unix_secs: i64) -> String {
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Letters and digits.
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The Standard Webhooks `v1,<base64>` signature of one message with a
/// `whsec_` secret (written here from the scheme, independent of the client).
pub(crate) fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

pub(crate) fn router(sim: Arc<crate::state::Sim>) -> Router<SharedSim> {
    let authenticated = Router::new()
        .route("/portone/payments/{payment_id}/billing-key", post(charge))
        .route("/portone/payments/{payment_id}/cancel", post(cancel))
        .route("/portone/payments/{payment_id}", get(payment))
        .route(
            "/portone/billing-keys/{billing_key}",
            get(key).delete(delete_key),
        )
        .route(CASH_RECEIPTS_PATH, post(issue_cash_receipt))
        .route(
            "/portone/payments/{payment_id}/cash-receipt",
            get(cash_receipt),
        )
        .route(
            "/portone/payments/{payment_id}/cash-receipt/cancel",
            post(cancel_cash_receipt),
        )
        .route_layer(middleware::from_fn_with_state(sim, require_secret));
    Router::new()
        .route(V2_WINDOW_PATH, get(window))
        .merge(authenticated)
}

fn error(status: StatusCode, kind: &str, message: &str) -> ApiReply {
    ApiReply::raw(status, &json!({"type": kind, "message": message}))
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message).into_response()
}

/// `Authorization: PortOne <API secret>`, else 401 `UNAUTHORIZED`.
async fn require_secret(State(sim): State<SharedSim>, req: Request, next: Next) -> Response {
    let sent = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("PortOne "))
        .map(str::trim);
    if sent == Some(sim.config().portone_api_secret.as_str()) {
        next.run(req).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "인증 정보가 올바르지 않습니다.",
        )
        .into_response()
    }
}

/// What a queued fault does before the work, in V2's shapes.
async fn fault_before(fault: Option<&FaultKind>) -> Option<ApiReply> {
    match fault? {
        FaultKind::Http500 => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "[시뮬레이터] 일시적인 서버 오류입니다.",
        )),
        FaultKind::HangBefore { secs } => {
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            Some(error(
                StatusCode::GATEWAY_TIMEOUT,
                "GATEWAY_TIMEOUT",
                "[시뮬레이터] 응답 지연 후 처리하지 않았습니다.",
            ))
        }
        FaultKind::Reject { message, .. } => {
            Some(error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message))
        }
        FaultKind::Unauthorized => Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "인증 정보가 올바르지 않습니다.",
        )),
        FaultKind::TooManyRequests => Some(error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "[시뮬레이터] 요청이 너무 많습니다.",
        )),
        FaultKind::HangAfter { .. }
        | FaultKind::Corrupt
        | FaultKind::Decline { .. }
        | FaultKind::UserCancel
        | FaultKind::PgError { .. } => None,
    }
}

async fn fault_after(fault: Option<&FaultKind>, reply: ApiReply) -> ApiReply {
    match fault {
        Some(FaultKind::HangAfter { secs }) => {
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            reply
        }
        Some(FaultKind::Corrupt) => reply.corrupted(),
        _ => reply,
    }
}

async fn with_faults<F>(sim: &Sim, path: &str, key: Option<&str>, work: F) -> Response
where
    F: FnOnce(Option<&FaultKind>) -> ApiReply,
{
    let fault = sim.take_fault(path, key);
    if let Some(reply) = fault_before(fault.as_ref()).await {
        return reply.into_response();
    }
    let reply = work(fault.as_ref());
    fault_after(fault.as_ref(), reply).await.into_response()
}

fn payment_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_PAYMENT_ID && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmountInput {
    total: i64,
    #[serde(default)]
    tax_free: Option<i64>,
    /// Charges: honoured by some PGs only, the simulator books its own VAT.
    /// Cash receipts: the VAT to issue with (default a tenth of the taxable part).
    #[serde(default)]
    vat: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BillingKeyPaymentInput {
    billing_key: String,
    order_name: String,
    amount: AmountInput,
    currency: String,
    #[serde(default)]
    store_id: Option<String>,
    #[serde(default)]
    channel_key: Option<String>,
    #[serde(default)]
    custom_data: Option<String>,
    #[serde(default)]
    notice_urls: Option<Vec<String>>,
}

/// `POST /payments/{paymentId}/billing-key`
async fn charge(
    State(sim): State<SharedSim>,
    Path(payment_id): Path<String>,
    body: Bytes,
) -> Response {
    let input: BillingKeyPaymentInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => return invalid(&format!("요청 본문을 해석할 수 없습니다: {e}")),
    };
    if !payment_id_ok(&payment_id) {
        return invalid("paymentId는 40자 이하의 영문과 숫자여야 합니다.");
    }
    if input.currency != "KRW" || input.amount.total <= 0 || input.order_name.is_empty() {
        return invalid("amount, currency 또는 orderName이 올바르지 않습니다.");
    }
    let tax_free = input.amount.tax_free.unwrap_or(0);
    if !(0..=input.amount.total).contains(&tax_free) {
        return error(
            StatusCode::BAD_REQUEST,
            "SUM_OF_PARTS_EXCEEDS_TOTAL_AMOUNT",
            "면세금액이 결제금액을 초과합니다.",
        )
        .into_response();
    }
    let config = sim.config();
    if input
        .store_id
        .as_deref()
        .is_some_and(|s| s != config.portone_store_id)
    {
        return error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "상점에 접근할 수 없습니다.",
        )
        .into_response();
    }
    if input
        .channel_key
        .as_deref()
        .is_some_and(|c| c != config.portone_channel_key)
    {
        return error(
            StatusCode::NOT_FOUND,
            "CHANNEL_NOT_FOUND",
            "채널이 존재하지 않습니다.",
        )
        .into_response();
    }
    let path = format!("/portone/payments/{payment_id}/billing-key");
    let key = input.billing_key.clone();
    let sim_for_work = Arc::clone(&sim);
    // Webhooks leave when the work is done, before any hang: a client that
    // gives up (and drops the connection) does not stop them.
    with_faults(&sim, &path, Some(&key), |fault| {
        if sim_for_work.v2_key_deleted(&key) {
            return error(
                StatusCode::CONFLICT,
                "BILLING_KEY_ALREADY_DELETED",
                "빌링키가 이미 삭제되었습니다.",
            );
        }
        let decline = match fault {
            Some(FaultKind::Decline { reason }) => Some(reason.clone()),
            _ => None,
        };
        let outcome = sim_for_work.charge(
            ChargeRequest {
                customer_uid: key.clone(),
                merchant_uid: payment_id.clone(),
                amount: input.amount.total,
                tax_free,
                currency: "KRW".into(),
                name: Some(input.order_name.clone()),
                custom_data: input.custom_data.clone(),
                notice_url: input.notice_urls.as_ref().and_then(|u| u.first().cloned()),
                v2: true,
                ..ChargeRequest::default()
            },
            decline,
        );
        match outcome {
            ChargeOutcome::UnknownCustomer => error(
                StatusCode::NOT_FOUND,
                "BILLING_KEY_NOT_FOUND",
                "빌링키가 존재하지 않습니다.",
            ),
            ChargeOutcome::AlreadyPaid | ChargeOutcome::AlreadyCancelled => error(
                StatusCode::CONFLICT,
                "ALREADY_PAID",
                "결제가 이미 완료되었습니다.",
            ),
            ChargeOutcome::Attempted { payment, webhook } => {
                if let Some(job) = webhook {
                    webhook::dispatch(Arc::clone(&sim_for_work), job);
                }
                if payment.status == PaymentStatus::Paid {
                    ApiReply::raw(
                        StatusCode::OK,
                        &json!({"payment": {
                            "pgTxId": payment.pg_tid.clone().unwrap_or_default(),
                            "paidAt": rfc3339(payment.paid_at),
                        }}),
                    )
                } else {
                    let reason = payment.fail_reason.clone().unwrap_or_default();
                    ApiReply::raw(
                        StatusCode::BAD_GATEWAY,
                        &json!({
                            "type": "PG_PROVIDER",
                            "message": format!("PG사에서 오류를 전달했습니다: {reason}"),
                            "pgCode": "CARD_DECLINED",
                            "pgMessage": reason,
                        }),
                    )
                }
            }
        }
    })
    .await
}

/// `GET /payments/{paymentId}`
async fn payment(State(sim): State<SharedSim>, Path(payment_id): Path<String>) -> Response {
    let path = format!("/portone/payments/{payment_id}");
    let view = sim.v2_payment(&payment_id);
    let sim2 = Arc::clone(&sim);
    with_faults(&sim, &path, None, move |_| match view {
        Some((p, updated_at)) => {
            ApiReply::raw(StatusCode::OK, &payment_json(&sim2, &p, updated_at))
        }
        None => error(
            StatusCode::NOT_FOUND,
            "PAYMENT_NOT_FOUND",
            "결제 건이 존재하지 않습니다.",
        ),
    })
    .await
}

/// The V2 `Payment` union for one ledger record.
fn payment_json(sim: &Sim, p: &Payment, updated_at: i64) -> Value {
    let config = sim.config();
    let key = p.customer_uid.as_deref().and_then(|k| sim.v2_key(k));
    let key_method = key.as_ref().map(|k| k.meta.method.clone());
    let customer_id = key.and_then(|k| k.meta.customer_id);
    let cancelled = p.cancel_amount;
    let status = match p.status {
        PaymentStatus::Paid if cancelled > 0 => "PARTIAL_CANCELLED",
        PaymentStatus::Paid => "PAID",
        PaymentStatus::Cancelled => "CANCELLED",
        PaymentStatus::Failed => "FAILED",
        PaymentStatus::Ready => "READY",
    };
    let paid = if matches!(p.status, PaymentStatus::Paid | PaymentStatus::Cancelled) {
        p.amount
    } else {
        0
    };
    let mut v = json!({
        "status": status,
        "id": p.merchant_uid,
        "transactionId": p.imp_uid,
        "merchantId": MERCHANT_ID,
        "storeId": config.portone_store_id,
        "channel": channel_json(config),
        "version": "V2",
        "requestedAt": rfc3339(p.started_at),
        "updatedAt": rfc3339(updated_at),
        "statusChangedAt": rfc3339(updated_at),
        "orderName": p.name.clone().unwrap_or_default(),
        "amount": {
            "total": p.amount,
            "taxFree": p.tax_free,
            "vat": p.vat,
            "supply": p.amount - p.tax_free - p.vat,
            "discount": 0,
            "paid": paid,
            "cancelled": cancelled,
            "cancelledTaxFree": p.cancelled_tax_free,
        },
        "currency": p.currency,
        "customer": {},
        "origin": {"platformType": "API", "ipAddress": "127.0.0.1"},
    });
    if let Some(id) = customer_id {
        v["customer"]["id"] = Value::from(id);
    }
    if let Some(key) = &p.customer_uid {
        v["billingKey"] = Value::from(key.clone());
    }
    if let Some(data) = &p.custom_data {
        v["customData"] = Value::from(data.clone());
    }
    match p.status {
        PaymentStatus::Failed => {
            v["failedAt"] = Value::from(rfc3339(p.failed_at));
            v["failure"] = json!({
                "reason": p.fail_reason.clone().unwrap_or_default(),
                "pgCode": "CARD_DECLINED",
                "pgMessage": p.fail_reason.clone().unwrap_or_default(),
            });
        }
        PaymentStatus::Paid | PaymentStatus::Cancelled => {
            v["method"] = payment_method_json(p, key_method.as_deref());
            v["paidAt"] = Value::from(rfc3339(p.paid_at));
            v["pgTxId"] = Value::from(p.pg_tid.clone().unwrap_or_default());
            if let ReceiptLookup::Found(r) = sim.receipt(ReceiptTarget::ImpUid(&p.imp_uid), false) {
                v["cashReceipt"] = payment_cash_receipt_json(&r);
            }
            if let Some(url) = &p.receipt_url {
                v["receiptUrl"] = Value::from(url.clone());
            }
            if status == "PAID" {
                v["disputes"] = json!([]);
            }
            if cancelled > 0 {
                let cancellations: Vec<Value> = p
                    .cancel_history
                    .iter()
                    .map(|c| {
                        json!({
                            "status": "SUCCEEDED",
                            "id": c.cancellation_id,
                            "pgCancellationId": c.pg_tid,
                            "totalAmount": c.amount,
                            "taxFreeAmount": c.tax_free,
                            "vatAmount": 0,
                            "reason": c.reason,
                            "cancelledAt": rfc3339(c.cancelled_at),
                            "requestedAt": rfc3339(c.cancelled_at),
                        })
                    })
                    .collect();
                let last = p
                    .cancel_history
                    .last()
                    .map_or(updated_at, |c| c.cancelled_at);
                v["cancellations"] = Value::from(cancellations);
                v["cancelledAt"] = Value::from(rfc3339(last));
            }
        }
        PaymentStatus::Ready => {}
    }
    v
}

/// The channel every V2 answer names (`SelectedChannel`).
fn channel_json(config: &SimConfig) -> Value {
    json!({
        "type": "TEST",
        "id": "channel-id-iamport-sim",
        "key": config.portone_channel_key,
        "name": "iamport-sim",
        "pgProvider": config.portone_pg_provider,
        "pgMerchantId": config.pg_id,
    })
}

/// The V2 `PaymentMethod` of a paid payment, from its key's
/// `billingKeyMethod` (V2 keys) or else its V1 `pay_method`:
/// `EASY_PAY` → easy pay funded by transfer; `trans` (V2 `TRANSFER` keys,
/// V1 CHAI keys) → transfer; `vbank` → virtual account; `MOBILE`/`phone` →
/// mobile; `PAYPAL` → easy pay by PayPal; anything else (V2 `CARD`, V1 `card`) → card.
fn payment_method_json(p: &Payment, key_method: Option<&str>) -> Value {
    match (key_method, p.pay_method.as_deref()) {
        (Some("EASY_PAY"), _) => json!({
            "type": "PaymentMethodEasyPay",
            "easyPayMethod": {"type": "PaymentMethodTransfer", "bank": SIM_BANK},
        }),
        (_, Some("trans")) => json!({"type": "PaymentMethodTransfer", "bank": SIM_BANK}),
        (_, Some("vbank")) => json!({
            "type": "PaymentMethodVirtualAccount",
            "bank": SIM_BANK,
            "accountNumber": p.vbank_num.clone().unwrap_or_else(|| "00000000000000".to_owned()),
        }),
        (Some("MOBILE"), _) | (_, Some("phone")) => json!({"type": "PaymentMethodMobile"}),
        (Some("PAYPAL"), _) | (_, Some("paypal")) => {
            json!({"type": "PaymentMethodEasyPay", "provider": "PAYPAL"})
        }
        _ => {
            let mut card = json!({});
            if let Some(name) = &p.card_name {
                card["name"] = Value::from(name.clone());
            }
            if let Some(number) = &p.card_number {
                card["number"] = Value::from(number.clone());
            }
            let mut method = json!({"type": "PaymentMethodCard", "card": card});
            if let Some(approval) = &p.apply_num {
                method["approvalNumber"] = Value::from(approval.clone());
            }
            method
        }
    }
}

/// A payment's `cashReceipt` (`PaymentCashReceipt`): its newest shown receipt.
fn payment_cash_receipt_json(r: &CashReceiptRecord) -> Value {
    let mut v = json!({
        "status": if r.status == CashReceiptStatus::Cancelled { "CANCELLED" } else { "ISSUED" },
        "type": r.kind.as_v2(),
        "pgReceiptId": r.receipt_tid.clone().unwrap_or_default(),
        "issueNumber": r.apply_num.clone().unwrap_or_default(),
        "totalAmount": r.amount,
        "taxFreeAmount": r.tax_free,
        "currency": "KRW",
        "url": r.receipt_url.clone().unwrap_or_default(),
        "issuedAt": rfc3339(r.issued_at.unwrap_or(r.requested_at)),
    });
    if let Some(at) = r.cancelled_at {
        v["cancelledAt"] = Value::from(rfc3339(at));
    }
    v
}

/// `GET /billing-keys/{billingKey}`
async fn key(State(sim): State<SharedSim>, Path(billing_key): Path<String>) -> Response {
    let path = format!("/portone/billing-keys/{billing_key}");
    let view = sim.v2_key(&billing_key);
    let config = sim.config().clone();
    with_faults(&sim, &path, Some(&billing_key), |_| {
        let Some(k) = view else {
            return error(
                StatusCode::NOT_FOUND,
                "BILLING_KEY_NOT_FOUND",
                "빌링키가 존재하지 않습니다.",
            );
        };
        let c = &k.customer;
        let mut v = json!({
            "status": if k.deleted_at.is_some() { "DELETED" } else { "ISSUED" },
            "billingKey": c.customer_uid,
            "merchantId": MERCHANT_ID,
            "storeId": config.portone_store_id,
            "methods": [method_json(&k.meta.method, c)],
            "channels": [{
                "type": "TEST",
                "id": "channel-id-iamport-sim",
                "key": k.meta.channel_key,
                "name": "iamport-sim",
                "pgProvider": c.pg_provider,
                "pgMerchantId": config.pg_id,
            }],
            "customer": {},
            "requestedAt": rfc3339(c.inserted),
            "issuedAt": rfc3339(c.inserted),
        });
        if let Some(id) = &k.meta.customer_id {
            v["customer"]["id"] = Value::from(id.clone());
        }
        if let Some(id) = &k.meta.issue_id {
            v["issueId"] = Value::from(id.clone());
        }
        if let Some(name) = &k.meta.issue_name {
            v["issueName"] = Value::from(name.clone());
        }
        if let Some(at) = k.deleted_at {
            v["deletedAt"] = Value::from(rfc3339(at));
        }
        ApiReply::raw(StatusCode::OK, &v)
    })
    .await
}

/// The key's `BillingKeyPaymentMethod` for its `billingKeyMethod`.
fn method_json(method: &str, c: &crate::model::Customer) -> Value {
    match method {
        "EASY_PAY" => json!({"type": "BillingKeyPaymentMethodEasyPay"}),
        "TRANSFER" => json!({"type": "BillingKeyPaymentMethodTransfer", "bank": SIM_BANK}),
        "MOBILE" => json!({"type": "BillingKeyPaymentMethodMobile"}),
        "PAYPAL" => json!({"type": "BillingKeyPaymentMethodPaypal"}),
        _ => json!({
            "type": "BillingKeyPaymentMethodCard",
            "card": {"name": c.card_name, "number": c.card_number},
        }),
    }
}

/// `DELETE /billing-keys/{billingKey}`
async fn delete_key(State(sim): State<SharedSim>, Path(billing_key): Path<String>) -> Response {
    let path = format!("/portone/billing-keys/{billing_key}");
    let sim2 = Arc::clone(&sim);
    with_faults(&sim, &path, Some(&billing_key), |_| {
        match sim2.delete_v2_key(&billing_key) {
            Ok(at) => ApiReply::raw(StatusCode::OK, &json!({"deletedAt": rfc3339(at)})),
            Err(V2DeleteError::NotFound) => error(
                StatusCode::NOT_FOUND,
                "BILLING_KEY_NOT_FOUND",
                "빌링키가 존재하지 않습니다.",
            ),
            Err(V2DeleteError::AlreadyDeleted) => error(
                StatusCode::CONFLICT,
                "BILLING_KEY_ALREADY_DELETED",
                "빌링키가 이미 삭제되었습니다.",
            ),
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelInput {
    #[serde(default)]
    amount: Option<i64>,
    reason: String,
    #[serde(default)]
    current_cancellable_amount: Option<i64>,
    #[serde(default)]
    tax_free_amount: Option<i64>,
    #[serde(default)]
    store_id: Option<String>,
}

/// `POST /payments/{paymentId}/cancel`
async fn cancel(
    State(sim): State<SharedSim>,
    Path(payment_id): Path<String>,
    body: Bytes,
) -> Response {
    let input: CancelInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => return invalid(&format!("요청 본문을 해석할 수 없습니다: {e}")),
    };
    if input
        .store_id
        .as_deref()
        .is_some_and(|s| s != sim.config().portone_store_id)
    {
        return error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "상점에 접근할 수 없습니다.",
        )
        .into_response();
    }
    let path = format!("/portone/payments/{payment_id}/cancel");
    let sim2 = Arc::clone(&sim);
    with_faults(&sim, &path, None, |_| {
        let outcome = sim2.cancel(CancelRequest {
            imp_uid: None,
            merchant_uid: Some(payment_id.clone()),
            amount: input.amount,
            checksum: input.current_cancellable_amount,
            tax_free: input.tax_free_amount,
            reason: Some(input.reason.clone()),
        });
        let conflict = |kind: &str, message: &str| error(StatusCode::CONFLICT, kind, message);
        match outcome {
            // Nothing paid under the id, but tries of it exist.
            CancelOutcome::NotFound if sim2.v2_payment(&payment_id).is_some() => {
                conflict("PAYMENT_NOT_PAID", "결제가 완료되지 않았습니다.")
            }
            CancelOutcome::NotFound => error(
                StatusCode::NOT_FOUND,
                "PAYMENT_NOT_FOUND",
                "결제 건이 존재하지 않습니다.",
            ),
            CancelOutcome::NotPaid(_) => {
                conflict("PAYMENT_NOT_PAID", "결제가 완료되지 않았습니다.")
            }
            CancelOutcome::AlreadyCancelled | CancelOutcome::NothingRefundable => {
                conflict("PAYMENT_ALREADY_CANCELLED", "결제가 이미 취소되었습니다.")
            }
            CancelOutcome::ChecksumMismatch { .. } => conflict(
                "CANCELLABLE_AMOUNT_CONSISTENCY_BROKEN",
                "취소 가능 잔액 검증에 실패하였습니다.",
            ),
            CancelOutcome::ExceedsRefundable { .. } => error(
                StatusCode::BAD_REQUEST,
                "CANCEL_AMOUNT_EXCEEDS_CANCELLABLE_AMOUNT",
                "결제 취소 금액이 취소 가능 금액을 초과합니다.",
            ),
            CancelOutcome::TaxFreeMismatch { .. } => error(
                StatusCode::BAD_REQUEST,
                "CANCEL_TAX_FREE_AMOUNT_EXCEEDS_CANCELLABLE_TAX_FREE_AMOUNT",
                "면세 취소 금액이 취소 가능한 면세 금액과 맞지 않습니다.",
            ),
            CancelOutcome::Cancelled { payment, webhook } => {
                if let Some(job) = webhook {
                    webhook::dispatch(Arc::clone(&sim2), job);
                }
                let Some(c) = payment.cancel_history.last().cloned() else {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "INTERNAL_SERVER_ERROR",
                        "취소 내역이 없습니다.",
                    );
                };
                ApiReply::raw(
                    StatusCode::OK,
                    &json!({"cancellation": {
                        "status": "SUCCEEDED",
                        "id": c.cancellation_id,
                        "pgCancellationId": c.pg_tid,
                        "totalAmount": c.amount,
                        "taxFreeAmount": c.tax_free,
                        "vatAmount": 0,
                        "reason": c.reason,
                        "cancelledAt": rfc3339(c.cancelled_at),
                        "requestedAt": rfc3339(c.cancelled_at),
                    }}),
                )
            }
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CashReceiptCustomerInput {
    identity_number: String,
    #[serde(default)]
    identity_number_type: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    email: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    phone_number: Option<String>,
}

/// `IssueCashReceiptBody`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssueCashReceiptInput {
    payment_id: String,
    channel_key: String,
    #[serde(rename = "type")]
    kind: String,
    order_name: String,
    currency: String,
    amount: AmountInput,
    customer: CashReceiptCustomerInput,
    #[serde(default)]
    store_id: Option<String>,
    #[serde(default)]
    product_type: Option<String>,
    #[serde(default)]
    paid_at: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    business_registration_number: Option<String>,
    #[serde(default)]
    payment_method: Option<String>,
}

/// `IssueCashReceiptInput` checked on its own (before any payment is consulted).
fn cash_receipt_request(input: IssueCashReceiptInput) -> Result<ReceiptRequest, String> {
    let kind = CashReceiptKind::from_v2(&input.kind)
        .ok_or("type은 PERSONAL 또는 CORPORATE여야 합니다.")?;
    if input.currency != "KRW" {
        return Err("currency는 KRW여야 합니다.".into());
    }
    if input.order_name.is_empty() {
        return Err("orderName이 비어 있습니다.".into());
    }
    if input.customer.identity_number.trim().is_empty() {
        return Err("customer.identityNumber가 비어 있습니다.".into());
    }
    if let Some(t) = &input.customer.identity_number_type
        && !matches!(t.as_str(), "PHONE" | "CARD" | "BUSINESS")
    {
        return Err(
            "customer.identityNumberType은 PHONE, CARD, BUSINESS 중 하나여야 합니다.".into(),
        );
    }
    if let Some(m) = &input.payment_method
        && !matches!(m.as_str(), "TRANSFER" | "VIRTUAL_ACCOUNT")
    {
        return Err("paymentMethod는 TRANSFER 또는 VIRTUAL_ACCOUNT여야 합니다.".into());
    }
    if let Some(t) = &input.product_type
        && !matches!(t.as_str(), "PHYSICAL" | "DIGITAL")
    {
        return Err("productType은 PHYSICAL 또는 DIGITAL이어야 합니다.".into());
    }
    if let Some(at) = &input.paid_at
        && chrono::DateTime::parse_from_rfc3339(at).is_err()
    {
        return Err("paidAt은 RFC 3339 날짜-시간이어야 합니다.".into());
    }
    let total = input.amount.total;
    let tax_free = input.amount.tax_free.unwrap_or(0);
    if total <= 0 {
        return Err("amount.total은 0보다 커야 합니다.".into());
    }
    if !(0..=total).contains(&tax_free) {
        return Err("amount.taxFree는 0 이상, amount.total 이하여야 합니다.".into());
    }
    if let Some(vat) = input.amount.vat
        && !(0..=total - tax_free).contains(&vat)
    {
        return Err("amount.vat는 0 이상, 과세금액 이하여야 합니다.".into());
    }
    Ok(ReceiptRequest {
        kind,
        identifier: input.customer.identity_number,
        identifier_type: input.customer.identity_number_type,
        tax_free,
        vat: input.amount.vat,
        total: Some(total),
        order_name: Some(input.order_name),
        v2: true,
    })
}

fn receipt_pg_error(status: StatusCode, pg_code: &str, pg_message: &str) -> ApiReply {
    ApiReply::raw(
        status,
        &json!({
            "type": "PG_PROVIDER",
            "message": format!("PG사에서 오류를 전달했습니다: {pg_message}"),
            "pgCode": pg_code,
            "pgMessage": pg_message,
        }),
    )
}

/// `storeId` of a query, if it names another store: 403 `FORBIDDEN`.
fn foreign_store(sim: &Sim, query: Option<&str>) -> Option<Response> {
    let pairs = query_pairs(query).unwrap_or_default();
    pairs
        .iter()
        .any(|(k, v)| k == "storeId" && !v.is_empty() && *v != sim.config().portone_store_id)
        .then(|| {
            error(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "상점에 접근할 수 없습니다.",
            )
            .into_response()
        })
}

fn cash_receipt_not_found() -> ApiReply {
    error(
        StatusCode::NOT_FOUND,
        "CASH_RECEIPT_NOT_FOUND",
        "현금영수증이 존재하지 않습니다.",
    )
}

/// `POST /cash-receipts` (`IssueCashReceiptBody`): issue a cash receipt for
/// a paid (or partly refunded) account-based payment, for what is left of it.
async fn issue_cash_receipt(State(sim): State<SharedSim>, body: Bytes) -> Response {
    let input: IssueCashReceiptInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => return invalid(&format!("요청 본문을 해석할 수 없습니다: {e}")),
    };
    let config = sim.config();
    if input
        .store_id
        .as_deref()
        .is_some_and(|s| s != config.portone_store_id)
    {
        return error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "상점에 접근할 수 없습니다.",
        )
        .into_response();
    }
    if input.channel_key != config.portone_channel_key {
        return error(
            StatusCode::NOT_FOUND,
            "CHANNEL_NOT_FOUND",
            "채널이 존재하지 않습니다.",
        )
        .into_response();
    }
    let payment_id = input.payment_id.clone();
    let req = match cash_receipt_request(input) {
        Ok(req) => req,
        Err(message) => return invalid(&message),
    };
    let sim2 = Arc::clone(&sim);
    with_faults(&sim, CASH_RECEIPTS_PATH, None, |_| {
        let bad = |message: &str| error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message);
        match sim2.issue_receipt(ReceiptTarget::PaymentId(&payment_id), req) {
            IssueOutcome::UnknownPayment => bad("결제 건이 존재하지 않습니다."),
            IssueOutcome::InProgress => receipt_pg_error(
                StatusCode::GATEWAY_TIMEOUT,
                "CR_IN_PROGRESS",
                crate::api::MSG_RECEIPT_IN_PROGRESS,
            ),
            IssueOutcome::NotPaid(_) => {
                bad("결제가 완료(PAID, PARTIAL_CANCELLED)되지 않은 결제 건입니다.")
            }
            IssueOutcome::NotCash(_) => {
                bad("현금성 거래(계좌이체, 가상계좌)가 아닌 결제 건입니다.")
            }
            IssueOutcome::AlreadyIssued => error(
                StatusCode::CONFLICT,
                "CASH_RECEIPT_ALREADY_ISSUED",
                "현금영수증이 이미 발급되었습니다.",
            ),
            IssueOutcome::AmountMismatch { total, remaining } => bad(&format!(
                "amount.total({total})이 결제 잔액({remaining})과 일치하지 않습니다."
            )),
            IssueOutcome::TaxFreeExceeds { tax_free, amount } => bad(&format!(
                "amount.taxFree({tax_free})가 발급 금액({amount})보다 큽니다."
            )),
            IssueOutcome::VatExceeds { vat, taxable } => bad(&format!(
                "amount.vat({vat})가 과세금액({taxable})보다 큽니다."
            )),
            IssueOutcome::Failed => {
                receipt_pg_error(RECEIPT_PG_FAILED_STATUS, "CR01", "현금영수증 발급 실패")
            }
            IssueOutcome::Issued(r) => ApiReply::raw(
                StatusCode::OK,
                &json!({"cashReceipt": {
                    "issueNumber": r.apply_num.clone().unwrap_or_default(),
                    "url": r.receipt_url.clone().unwrap_or_default(),
                    "pgReceiptId": r.receipt_tid.clone().unwrap_or_default(),
                }}),
            ),
        }
    })
    .await
}

/// The `CashReceipt` union for one record.
fn cash_receipt_json(config: &SimConfig, r: &CashReceiptRecord) -> Value {
    let status = match r.status {
        CashReceiptStatus::Cancelled => "CANCELLED",
        CashReceiptStatus::Failed => "ISSUE_FAILED",
        CashReceiptStatus::Issued | CashReceiptStatus::InProgress => "ISSUED",
    };
    let mut v = json!({
        "status": status,
        "merchantId": MERCHANT_ID,
        "storeId": config.portone_store_id,
        "paymentId": r.payment_id,
        "channel": channel_json(config),
        "orderName": r.order_name.clone().unwrap_or_default(),
        "isManual": false,
        "statusUpdatedAt": rfc3339(r.status_updated_at()),
    });
    if r.status == CashReceiptStatus::Failed {
        return v;
    }
    v["amount"] = Value::from(r.amount);
    v["taxFreeAmount"] = Value::from(r.tax_free);
    v["vatAmount"] = Value::from(r.vat);
    v["currency"] = Value::from("KRW");
    v["type"] = Value::from(r.kind.as_v2());
    v["pgReceiptId"] = Value::from(r.receipt_tid.clone().unwrap_or_default());
    v["issueNumber"] = Value::from(r.apply_num.clone().unwrap_or_default());
    v["url"] = Value::from(r.receipt_url.clone().unwrap_or_default());
    v["issuedAt"] = Value::from(rfc3339(r.issued_at.unwrap_or(r.requested_at)));
    if let Some(at) = r.cancelled_at {
        v["cancelledAt"] = Value::from(rfc3339(at));
    }
    v
}

/// `GET /payments/{paymentId}/cash-receipt`: the payment's newest receipt
/// (issued, cancelled or failed; one in progress does not show).
async fn cash_receipt(
    State(sim): State<SharedSim>,
    Path(payment_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(forbidden) = foreign_store(&sim, query.as_deref()) {
        return forbidden;
    }
    let path = format!("/portone/payments/{payment_id}/cash-receipt");
    let sim2 = Arc::clone(&sim);
    with_faults(&sim, &path, None, |_| {
        match sim2.receipt(ReceiptTarget::PaymentId(&payment_id), true) {
            ReceiptLookup::UnknownPayment | ReceiptLookup::None => cash_receipt_not_found(),
            ReceiptLookup::Found(r) => {
                ApiReply::raw(StatusCode::OK, &cash_receipt_json(sim2.config(), &r))
            }
        }
    })
    .await
}

/// `POST /payments/{paymentId}/cash-receipt/cancel`: cancel the payment's live receipt.
async fn cancel_cash_receipt(
    State(sim): State<SharedSim>,
    Path(payment_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(forbidden) = foreign_store(&sim, query.as_deref()) {
        return forbidden;
    }
    let path = format!("/portone/payments/{payment_id}/cash-receipt/cancel");
    let sim2 = Arc::clone(&sim);
    with_faults(&sim, &path, None, |_| {
        match sim2.cancel_receipt(ReceiptTarget::PaymentId(&payment_id)) {
            ReceiptCancelOutcome::UnknownPayment | ReceiptCancelOutcome::NotFound => {
                cash_receipt_not_found()
            }
            ReceiptCancelOutcome::NotIssued => error(
                NOT_ISSUED_STATUS,
                "CASH_RECEIPT_NOT_ISSUED",
                "발급된 현금영수증이 없습니다.",
            ),
            ReceiptCancelOutcome::Cancelled(r) => ApiReply::raw(
                StatusCode::OK,
                &json!({
                    "cancelledAmount": r.amount,
                    "cancelledAt": rfc3339(r.cancelled_at.unwrap_or_default()),
                }),
            ),
        }
    })
    .await
}

/// The billing-key window: what `PortOne.requestIssueBillingKey({storeId,
/// channelKey, billingKeyMethod, issueId, issueName, redirectUrl,
/// customer: {customerId}})` opens, flattened into the query
/// (`customer.customerId`). `scenario=user_cancel|pg_error` or a queued
/// `UserCancel`/`PgError` fault fails it.
async fn window(State(sim): State<SharedSim>, RawQuery(query): RawQuery) -> Response {
    let pairs = match query_pairs(query.as_deref()) {
        Ok(pairs) => pairs,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let plain = |status: StatusCode, message: String| (status, message).into_response();
    let Some(redirect) = get("redirectUrl") else {
        return plain(StatusCode::BAD_REQUEST, "redirectUrl is required".into());
    };
    let mut redirect = match Url::parse(redirect) {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("redirectUrl: {e}")),
    };
    let config = sim.config();
    if get("storeId") != Some(config.portone_store_id.as_str()) {
        return plain(StatusCode::BAD_REQUEST, "storeId is not this store".into());
    }
    let customer_id = get("customer.customerId").or_else(|| get("customerId"));
    let fault = sim.take_fault(V2_WINDOW_PATH, customer_id);
    let scenario = get("scenario").unwrap_or("success");
    let failure = match (scenario, fault.as_ref()) {
        ("user_cancel", _) | (_, Some(FaultKind::UserCancel)) => Some((
            "FAILURE_TYPE_PG",
            "사용자가 결제를 취소하였습니다.".to_owned(),
        )),
        ("pg_error", _) => Some((
            "FAILURE_TYPE_PG",
            "빌링키 발급에 실패하였습니다.".to_owned(),
        )),
        (_, Some(FaultKind::PgError { message, .. })) => Some((
            "FAILURE_TYPE_PG",
            message
                .clone()
                .unwrap_or_else(|| "빌링키 발급에 실패하였습니다.".to_owned()),
        )),
        ("success", _) => None,
        (other, _) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("unknown scenario {other:?} (expected success, user_cancel or pg_error)"),
            );
        }
    };
    let channel_ok = get("channelKey") == Some(config.portone_channel_key.as_str());
    let method = get("billingKeyMethod").unwrap_or("CARD");
    {
        let mut q = redirect.query_pairs_mut();
        q.append_pair("transactionType", "ISSUE_BILLING_KEY");
        match (&failure, channel_ok) {
            (Some((code, message)), _) => {
                q.append_pair("code", code);
                q.append_pair("message", message);
            }
            (None, false) => {
                q.append_pair("code", "CHANNEL_NOT_FOUND");
                q.append_pair("message", "채널이 존재하지 않습니다.");
            }
            (None, true) => {
                let key = sim.issue_v2_key(
                    V2Key {
                        issue_id: get("issueId").map(str::to_owned),
                        issue_name: get("issueName").map(str::to_owned),
                        customer_id: customer_id.map(str::to_owned),
                        channel_key: config.portone_channel_key.clone(),
                        method: method.to_owned(),
                    },
                    &config.portone_pg_provider,
                );
                tracing::info!("V2 billing key issued in the window");
                q.append_pair("billingKey", &key);
                if let Some(job) = sim.key_issued_webhook(&key) {
                    webhook::dispatch(Arc::clone(&sim), job);
                }
            }
        }
    }
    if let Some(FaultKind::HangAfter { secs }) = fault {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    match HeaderValue::from_str(redirect.as_str()) {
        Ok(location) => {
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(LOCATION, location);
            response
        }
        Err(e) => plain(StatusCode::BAD_REQUEST, format!("redirectUrl: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // From standard-webhooks' reference tests.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn payment_ids_are_letters_and_digits_within_40() {
        assert!(payment_id_ok("c1a2b3"));
        assert!(!payment_id_ok(&"a".repeat(41)));
        assert!(!payment_id_ok("order-1"));
        assert!(!payment_id_ok(""));
    }
}
