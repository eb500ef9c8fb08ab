//! The i'mport V1 REST endpoints: token, `again`, payment lookups, billing keys, cancel,
//! cash receipts (`/receipts/{imp_uid}`).
//!
//! Handlers parse, consult the fault queue, call one state operation and answer with the
//! documented envelope. Statuses and Korean messages follow `/work/shared/iamport-v1/README.md`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::fault::{AGAIN_PATH, CONTROL_PREFIX, FaultKind, TOKEN_PATH};
use crate::model::PaymentStatus;
use crate::params::{ParamError, Params, query_pairs};
use crate::receipt::{CashReceiptKind, ReceiptAnnotation};
use crate::reply::{ApiReply, fault_after, fault_before};
use crate::state::{
    CancelOutcome, CancelRequest, ChargeOutcome, ChargeRequest, IssueOutcome, ReceiptCancelOutcome,
    ReceiptLookup, ReceiptRequest, ReceiptTarget, Sim, Sorting,
};
use crate::webhook;

pub(crate) type SharedSim = Arc<Sim>;

const CANCEL_PATH: &str = "/payments/cancel";
/// Legacy token header, still honoured; `Authorization` wins when both are sent.
const LEGACY_TOKEN_HEADER: &str = "x-imptokenheader";

const MSG_BAD_CREDENTIALS: &str = "imp_key, imp_secret 인증에 실패하였습니다.";
const MSG_UNKNOWN_CUSTOMER: &str = "등록되지 않은 구매자입니다.";
const MSG_ALREADY_PAID: &str = "이미 결제 완료된 주문번호(merchant_uid)입니다.";
const MSG_ALREADY_REFUNDED: &str = "이미 결제 취소된 주문번호(merchant_uid)입니다.";
const MSG_NO_PAYMENT: &str = "존재하지 않는 결제정보입니다.";
const MSG_NOTHING_TO_CANCEL: &str = "취소할 결제건이 존재하지 않습니다.";
const MSG_ALREADY_CANCELLED: &str = "이미 전액 취소된 결제건입니다.";
const MSG_NOTHING_REFUNDABLE: &str = "취소할 수 있는 금액이 없습니다.";
/// Cash receipts: the PG has not answered yet (the `in_progress` receipt mode).
pub(crate) const MSG_RECEIPT_IN_PROGRESS: &str = "현금영수증 발행 처리 중";
/// Cash receipts: the PG refused (the `fail` receipt mode).
pub(crate) const MSG_RECEIPT_PG_FAILED: &str = "[PG] 현금영수증 발급 실패";
const MSG_RECEIPT_ALREADY_ISSUED: &str = "이미 현금영수증이 발급된 결제건입니다.";
const MSG_RECEIPT_NOT_FOUND: &str = "현금영수증 발급내역이 존재하지 않습니다.";
const MSG_RECEIPT_NOTHING_TO_CANCEL: &str = "발급취소할 현금영수증 발급내역이 존재하지 않습니다.";

fn customer_not_found(customer_uid: &str) -> ApiReply {
    ApiReply::error(
        StatusCode::NOT_FOUND,
        1,
        &format!("요청하신 customer_uid({customer_uid})로 등록된 정보를 찾을 수 없습니다."),
    )
}

fn payment_not_found() -> ApiReply {
    ApiReply::error(StatusCode::NOT_FOUND, -1, MSG_NO_PAYMENT)
}

fn bad_request(err: &ParamError) -> Response {
    ApiReply::bad_request(&err.to_string()).into_response()
}

fn bad_path(err: &PathRejection) -> Response {
    ApiReply::bad_request(&format!("경로를 해석할 수 없습니다: {err}")).into_response()
}

/// Consume the fault for this request (if any) around `work`.
async fn with_faults<F>(sim: &Sim, path: &str, customer_uid: Option<&str>, work: F) -> Response
where
    F: FnOnce(Option<&FaultKind>) -> ApiReply,
{
    let fault = sim.take_fault(path, customer_uid);
    if let Some(reply) = fault_before(fault.as_ref()).await {
        return reply.into_response();
    }
    let reply = work(fault.as_ref());
    fault_after(fault.as_ref(), reply).await.into_response()
}

/// Outer layer of every non-control route: count the request, apply latency, log.
pub(crate) async fn observe(State(sim): State<SharedSim>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with(CONTROL_PREFIX) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    sim.count_request(&path);
    let latency = sim.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let started = Instant::now();
    let response = next.run(req).await;
    let path = masked_path(&path);
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// `path` with billing keys masked (the segment after `billing-keys` or
/// `customers`): the simulator's logs share a process with tests that check
/// no key is ever logged.
fn masked_path(path: &str) -> String {
    let mut out = Vec::new();
    let mut mask_next = false;
    for segment in path.split('/') {
        if mask_next && !segment.is_empty() {
            out.push("***");
        } else {
            out.push(segment);
        }
        mask_next = matches!(segment, "billing-keys" | "customers");
    }
    out.join("/")
}

/// The access token sent with a request: `Authorization: Bearer <t>`, `Authorization: <t>`,
/// or the legacy `X-ImpTokenHeader: <t>`.
fn sent_token(headers: &HeaderMap) -> Option<&str> {
    let raw = headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get(LEGACY_TOKEN_HEADER))?
        .to_str()
        .ok()?
        .trim();
    let token = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        None if raw.eq_ignore_ascii_case("bearer") => "",
        _ => raw,
    };
    (!token.is_empty()).then_some(token)
}

/// Route layer of the authenticated endpoints: 401 without a valid, unexpired token.
pub(crate) async fn require_token(
    State(sim): State<SharedSim>,
    req: Request,
    next: Next,
) -> Response {
    match sent_token(req.headers()) {
        Some(token) if sim.token_valid(token) => next.run(req).await,
        _ => ApiReply::unauthorized().into_response(),
    }
}

/// `POST /users/getToken`
pub(crate) async fn get_token(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = Params::from_body(&headers, &body)
        .and_then(|p| Ok((p.text("imp_key")?, p.text("imp_secret")?)));
    let (imp_key, imp_secret) = match credentials {
        Ok(credentials) => credentials,
        Err(err) => return bad_request(&err),
    };
    with_faults(&sim, TOKEN_PATH, None, |_| {
        let grant = match (imp_key, imp_secret) {
            (Some(key), Some(secret)) => sim.issue_token(&key, &secret),
            _ => None,
        };
        match grant {
            Some(grant) => ApiReply::ok(&grant),
            None => ApiReply::error(StatusCode::UNAUTHORIZED, -1, MSG_BAD_CREDENTIALS),
        }
    })
    .await
}

fn charge_request(p: &Params) -> Result<ChargeRequest, ParamError> {
    let customer_uid = p.required_text("customer_uid", 80)?;
    let merchant_uid = p.required_text("merchant_uid", 40)?;
    let amount = p.integer("amount")?.ok_or(ParamError::Missing("amount"))?;
    if amount <= 0 {
        return Err(ParamError::Invalid {
            field: "amount",
            why: "0보다 큰 정수여야 합니다.".to_owned(),
        });
    }
    for field in ["tax_free", "vat_amount", "vat"] {
        p.check_number(field)?;
    }
    let tax_free = p.integer("tax_free")?.unwrap_or(0);
    if !(0..=amount).contains(&tax_free) {
        return Err(ParamError::Invalid {
            field: "tax_free",
            why: "면세금액은 0 이상, 결제금액 이하여야 합니다.".to_owned(),
        });
    }
    p.integer("product_count")?;
    Ok(ChargeRequest {
        customer_uid,
        merchant_uid,
        amount,
        currency: p.text("currency")?.unwrap_or_else(|| "KRW".to_owned()),
        name: p.short_text("name", 40)?,
        buyer_name: p.short_text("buyer_name", 16)?,
        buyer_email: p.short_text("buyer_email", 64)?,
        buyer_tel: p.short_text("buyer_tel", 16)?,
        buyer_addr: p.short_text("buyer_addr", 128)?,
        buyer_postcode: p.short_text("buyer_postcode", 8)?,
        custom_data: p.json_text("custom_data")?,
        notice_url: p.text("notice_url")?,
        card_quota: p.integer("card_quota")?.unwrap_or(0),
        tax_free,
        v2: false,
    })
}

/// `POST /subscribe/payments/again`
pub(crate) async fn again(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match Params::from_body(&headers, &body).and_then(|p| charge_request(&p)) {
        Ok(req) => req,
        Err(err) => return bad_request(&err),
    };
    let customer_uid = req.customer_uid.clone();
    with_faults(&sim, AGAIN_PATH, Some(&customer_uid), |fault| {
        let decline = match fault {
            Some(FaultKind::Decline { reason }) => Some(reason.clone()),
            _ => None,
        };
        match sim.charge(req, decline) {
            ChargeOutcome::UnknownCustomer => {
                ApiReply::error(StatusCode::OK, -1, MSG_UNKNOWN_CUSTOMER)
            }
            ChargeOutcome::AlreadyPaid => ApiReply::error(StatusCode::OK, 1, MSG_ALREADY_PAID),
            ChargeOutcome::AlreadyCancelled => {
                ApiReply::error(StatusCode::OK, 1, MSG_ALREADY_REFUNDED)
            }
            ChargeOutcome::Attempted { payment, webhook } => {
                if let Some(job) = webhook {
                    webhook::dispatch(Arc::clone(&sim), job);
                }
                ApiReply::ok(&payment)
            }
        }
    })
    .await
}

/// `GET /payments/{imp_uid}` (`include_sandbox` and other query parameters are ignored).
pub(crate) async fn payment(
    State(sim): State<SharedSim>,
    imp_uid: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Response {
    let Path(imp_uid) = match imp_uid {
        Ok(path) => path,
        Err(err) => return bad_path(&err),
    };
    with_faults(&sim, uri.path(), None, |_| match sim.payment(&imp_uid) {
        Some(payment) => ApiReply::ok(&payment),
        None => payment_not_found(),
    })
    .await
}

/// `GET /payments/find/{merchant_uid}`
pub(crate) async fn find(
    State(sim): State<SharedSim>,
    merchant_uid: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Response {
    match merchant_uid {
        Ok(Path(merchant_uid)) => find_payment(&sim, &merchant_uid, None, query, &uri).await,
        Err(err) => bad_path(&err),
    }
}

/// `GET /payments/find/{merchant_uid}/{payment_status}`
pub(crate) async fn find_with_status(
    State(sim): State<SharedSim>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Response {
    match path {
        Ok(Path((merchant_uid, status))) => {
            find_payment(&sim, &merchant_uid, Some(&status), query, &uri).await
        }
        Err(err) => bad_path(&err),
    }
}

async fn find_payment(
    sim: &Sim,
    merchant_uid: &str,
    status: Option<&str>,
    query: Option<String>,
    uri: &Uri,
) -> Response {
    let status = match status.map(str::parse::<PaymentStatus>).transpose() {
        Ok(status) => status,
        Err(err) => return ApiReply::bad_request(&err.to_string()).into_response(),
    };
    let sorting = match query_pairs(query.as_deref()) {
        Ok(pairs) => match pairs.into_iter().rev().find(|(k, _)| k == "sorting") {
            None => Sorting::default(),
            Some((_, value)) => match value.parse::<Sorting>() {
                Ok(sorting) => sorting,
                Err(()) => {
                    return ApiReply::bad_request(&format!(
                        "sorting 값이 올바르지 않습니다: {value} (-started, started, -paid, paid, -updated, updated)"
                    ))
                    .into_response();
                }
            },
        },
        Err(err) => return bad_request(&err),
    };
    with_faults(sim, uri.path(), None, |_| {
        match sim.find_payment(merchant_uid, status, sorting) {
            Some(payment) => ApiReply::ok(&payment),
            None => payment_not_found(),
        }
    })
    .await
}

/// `GET /subscribe/customers/{customer_uid}`
pub(crate) async fn customer(
    State(sim): State<SharedSim>,
    customer_uid: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Response {
    let Path(customer_uid) = match customer_uid {
        Ok(path) => path,
        Err(err) => return bad_path(&err),
    };
    with_faults(&sim, uri.path(), Some(&customer_uid), |_| {
        match sim.customer(&customer_uid) {
            Some(customer) => ApiReply::ok(&customer),
            None => customer_not_found(&customer_uid),
        }
    })
    .await
}

/// `DELETE /subscribe/customers/{customer_uid}` (`reason` and `extra[requester]` are ignored).
pub(crate) async fn delete_customer(
    State(sim): State<SharedSim>,
    customer_uid: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Response {
    let Path(customer_uid) = match customer_uid {
        Ok(path) => path,
        Err(err) => return bad_path(&err),
    };
    with_faults(&sim, uri.path(), Some(&customer_uid), |_| {
        match sim.delete_customer(&customer_uid) {
            Some(customer) => ApiReply::ok(&customer),
            None => customer_not_found(&customer_uid),
        }
    })
    .await
}

fn cancel_request(p: &Params) -> Result<CancelRequest, ParamError> {
    let imp_uid = p.text("imp_uid")?;
    let merchant_uid = p.text("merchant_uid")?;
    if imp_uid.is_none() && merchant_uid.is_none() {
        return Err(ParamError::Missing("imp_uid 또는 merchant_uid"));
    }
    let amount = p.integer("amount")?;
    if amount.is_some_and(|a| a < 0) {
        return Err(ParamError::Invalid {
            field: "amount",
            why: "0 이상이어야 합니다.".to_owned(),
        });
    }
    for field in ["tax_free", "vat_amount"] {
        p.check_number(field)?;
    }
    Ok(CancelRequest {
        imp_uid,
        merchant_uid,
        amount,
        checksum: p.integer("checksum")?,
        tax_free: p.integer("tax_free")?,
        reason: p.text("reason")?,
    })
}

/// `POST /payments/cancel`
pub(crate) async fn cancel(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match Params::from_body(&headers, &body).and_then(|p| cancel_request(&p)) {
        Ok(req) => req,
        Err(err) => return bad_request(&err),
    };
    with_faults(&sim, CANCEL_PATH, None, |_| {
        let refused = |message: &str| ApiReply::error(StatusCode::OK, 1, message);
        match sim.cancel(req) {
            CancelOutcome::NotFound => refused(MSG_NOTHING_TO_CANCEL),
            CancelOutcome::NotPaid(status) => refused(&format!(
                "결제완료 상태가 아닌 결제건은 취소할 수 없습니다. (status: {status})"
            )),
            CancelOutcome::AlreadyCancelled => refused(MSG_ALREADY_CANCELLED),
            CancelOutcome::NothingRefundable => refused(MSG_NOTHING_REFUNDABLE),
            CancelOutcome::ChecksumMismatch {
                checksum,
                refundable,
            } => refused(&format!(
                "[환불가능금액 불일치] 요청하신 checksum({checksum})이 취소가능잔액({refundable})과 일치하지 않습니다."
            )),
            CancelOutcome::ExceedsRefundable {
                requested,
                refundable,
            } => refused(&format!(
                "취소요청금액({requested})이 취소가능잔액({refundable})보다 큽니다."
            )),
            CancelOutcome::TaxFreeMismatch {
                requested,
                refundable,
            } => refused(&format!(
                "면세 취소금액({requested})이 취소 가능한 면세금액({refundable})과 맞지 않습니다."
            )),
            CancelOutcome::Cancelled { payment, webhook } => {
                if let Some(job) = webhook {
                    webhook::dispatch(Arc::clone(&sim), job);
                }
                ApiReply::ok(&payment)
            }
        }
    })
    .await
}

fn receipt_request(p: &Params) -> Result<ReceiptRequest, ParamError> {
    let identifier = p.required_text("identifier", 64)?;
    let identifier_type = p.text("identifier_type")?;
    if let Some(t) = &identifier_type
        && !matches!(t.as_str(), "person" | "business" | "phone" | "taxcard")
    {
        return Err(ParamError::Invalid {
            field: "identifier_type",
            why: "person, business, phone, taxcard 중 하나여야 합니다.".to_owned(),
        });
    }
    let kind = match p.text("type")? {
        None => CashReceiptKind::Person,
        Some(t) => CashReceiptKind::from_v1(&t).ok_or_else(|| ParamError::Invalid {
            field: "type",
            why: "person 또는 company여야 합니다.".to_owned(),
        })?,
    };
    if let Some(t) = p.text("product_type")?
        && !matches!(t.as_str(), "real" | "digital")
    {
        return Err(ParamError::Invalid {
            field: "product_type",
            why: "real 또는 digital이어야 합니다.".to_owned(),
        });
    }
    let tax_free = p.integer("tax_free")?.unwrap_or(0);
    if tax_free < 0 {
        return Err(ParamError::Invalid {
            field: "tax_free",
            why: "0 이상이어야 합니다.".to_owned(),
        });
    }
    for field in ["vat", "vat_amount"] {
        p.check_number(field)?;
    }
    p.short_text("buyer_name", 16)?;
    p.short_text("buyer_email", 64)?;
    p.short_text("buyer_tel", 16)?;
    Ok(ReceiptRequest {
        kind,
        identifier,
        identifier_type,
        tax_free,
        vat: None,
        total: None,
        order_name: None,
        v2: false,
    })
}

/// `POST /receipts/{imp_uid}`: issue a cash receipt for a cash payment
/// (`trans`, `vbank`), for what is left of it after refunds.
pub(crate) async fn issue_receipt(
    State(sim): State<SharedSim>,
    imp_uid: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Path(imp_uid) = match imp_uid {
        Ok(path) => path,
        Err(err) => return bad_path(&err),
    };
    let req = match Params::from_body(&headers, &body).and_then(|p| receipt_request(&p)) {
        Ok(req) => req,
        Err(err) => return bad_request(&err),
    };
    with_faults(&sim, uri.path(), None, |_| {
        let refused = |message: &str| ApiReply::bad_request(message);
        match sim.issue_receipt(ReceiptTarget::ImpUid(&imp_uid), req) {
            IssueOutcome::UnknownPayment => payment_not_found(),
            IssueOutcome::InProgress => {
                ApiReply::error(StatusCode::GATEWAY_TIMEOUT, -1, MSG_RECEIPT_IN_PROGRESS)
            }
            IssueOutcome::NotPaid(status) => refused(&format!(
                "결제완료(paid) 상태가 아닌 결제건에는 현금영수증을 발급할 수 없습니다. (status: {status})"
            )),
            IssueOutcome::NotCash(pay_method) => refused(&format!(
                "현금성 거래(계좌이체, 가상계좌)가 아닌 결제건에는 현금영수증을 발급할 수 없습니다. (pay_method: {})",
                pay_method.as_deref().unwrap_or("null")
            )),
            IssueOutcome::AlreadyIssued => refused(MSG_RECEIPT_ALREADY_ISSUED),
            IssueOutcome::AmountMismatch { total, remaining } => refused(&format!(
                "발행금액({total})이 결제 잔액({remaining})과 일치하지 않습니다."
            )),
            IssueOutcome::TaxFreeExceeds { tax_free, amount } => refused(&format!(
                "면세금액({tax_free})이 현금영수증 발행금액({amount})보다 큽니다."
            )),
            IssueOutcome::VatExceeds { vat, taxable } => refused(&format!(
                "부가세({vat})가 과세금액({taxable})보다 큽니다."
            )),
            IssueOutcome::Failed => ApiReply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                -1,
                MSG_RECEIPT_PG_FAILED,
            ),
            IssueOutcome::Issued(record) => ApiReply::ok(&ReceiptAnnotation::from(&*record)),
        }
    })
    .await
}

/// `GET /receipts/{imp_uid}`: the payment's newest receipt (issued or cancelled).
pub(crate) async fn receipt(
    State(sim): State<SharedSim>,
    imp_uid: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Response {
    let Path(imp_uid) = match imp_uid {
        Ok(path) => path,
        Err(err) => return bad_path(&err),
    };
    with_faults(&sim, uri.path(), None, |_| {
        match sim.receipt(ReceiptTarget::ImpUid(&imp_uid), false) {
            ReceiptLookup::UnknownPayment => payment_not_found(),
            ReceiptLookup::None => {
                ApiReply::error(StatusCode::NOT_FOUND, -1, MSG_RECEIPT_NOT_FOUND)
            }
            ReceiptLookup::Found(record) => ApiReply::ok(&ReceiptAnnotation::from(&*record)),
        }
    })
    .await
}

/// `DELETE /receipts/{imp_uid}`: cancel the payment's live receipt.
pub(crate) async fn cancel_receipt(
    State(sim): State<SharedSim>,
    imp_uid: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Response {
    let Path(imp_uid) = match imp_uid {
        Ok(path) => path,
        Err(err) => return bad_path(&err),
    };
    with_faults(&sim, uri.path(), None, |_| {
        match sim.cancel_receipt(ReceiptTarget::ImpUid(&imp_uid)) {
            ReceiptCancelOutcome::UnknownPayment => payment_not_found(),
            ReceiptCancelOutcome::NotFound | ReceiptCancelOutcome::NotIssued => {
                ApiReply::bad_request(MSG_RECEIPT_NOTHING_TO_CANCEL)
            }
            ReceiptCancelOutcome::Cancelled(record) => {
                ApiReply::ok(&ReceiptAnnotation::from(&*record))
            }
        }
    })
    .await
}

/// Any other path.
pub(crate) async fn not_found() -> Response {
    ApiReply::error(StatusCode::NOT_FOUND, -1, "존재하지 않는 API입니다.").into_response()
}

/// A known path with another method.
pub(crate) async fn method_not_allowed() -> Response {
    ApiReply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        -1,
        "허용되지 않는 HTTP 메소드입니다.",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn token_is_read_from_bearer_bare_and_legacy_headers() {
        assert_eq!(
            sent_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            sent_token(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            sent_token(&headers(&[("authorization", "abc")])),
            Some("abc")
        );
        assert_eq!(
            sent_token(&headers(&[("x-imptokenheader", "abc")])),
            Some("abc")
        );
        assert_eq!(
            sent_token(&headers(&[
                ("authorization", "new"),
                ("x-imptokenheader", "old")
            ])),
            Some("new")
        );
        assert_eq!(sent_token(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(sent_token(&HeaderMap::new()), None);
    }
}
