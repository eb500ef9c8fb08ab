//! The gateway port of one invocation: the model of the PG answering in its
//! API's wire format (read by the production adapters' `wire` functions),
//! network latency, the PG's faults, and the invariants checked as requests
//! leave.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use shared::billing::receipts::Outcome;
use shared::billing::{PaymentRecord, Registration};
use shared::gateway::{
    Ambiguity, AmbiguityKind, BadNotice, BillingKey, CashReceiptRequest, ChargeOutcome,
    ChargeRequest, GatewayError, InboundNotice, Notice, PaymentGateway, PaymentWindow,
    RefundRequest, Rejection, RejectionKind, WindowProof,
};
use shared::gateway::{iamport, portone};

use super::{MAX_PROCESSING, Side, TIMEOUT, World, lock};
use crate::model::{self, Charged, Decision, Refusal, Status};

#[derive(Clone)]
pub(crate) struct SimGateway {
    world: Arc<World>,
    inv: u32,
}

fn ambiguous(kind: AmbiguityKind, detail: &str) -> Ambiguity {
    Ambiguity {
        kind,
        http_status: match kind {
            AmbiguityKind::ServerError => Some(500),
            _ => None,
        },
        detail: detail.to_owned(),
    }
}

fn unauthorized() -> GatewayError {
    GatewayError::Rejected(Rejection {
        kind: RejectionKind::Unauthorized,
        http_status: Some(401),
        code: None,
        message: "access token refused twice".into(),
    })
}

/// What goes wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The charge happens; its answer is lost.
    LostAnswer,
    /// Still processing at the PG when we time out; the effect lands later.
    Late,
    /// 5xx before anything happened.
    ServerErrorBefore,
    /// A refund the card company or bank refuses: nothing moves.
    RefundRefused,
    /// 5xx after the charge happened.
    ServerErrorAfter,
    /// Our credentials refused (also after a token refresh).
    Unauthorized,
    /// Connection refused or throttled: never arrived.
    NotSent,
    /// getToken hangs past the timeout: never sent.
    SlowToken,
    /// A lookup times out.
    Timeout,
    /// The request reaches the PG twice (a retried connection): one copy is
    /// processed, the other meets it, and we get the answer of either.
    Duplicated,
    /// The PG failed before recording anything (V1 code -1 with the PG's
    /// text; V2 502 `PG_PROVIDER` with no FAILED payment).
    PgErrorNoPayment,
    /// V2 400 `INVALID_REQUEST` / V1 400: the request itself refused.
    InvalidRequest,
    /// A proxy in front of the API answers an HTML 404 page.
    ProxyNotFound,
}

impl SimGateway {
    pub(crate) fn new(world: Arc<World>, inv: u32) -> Self {
        Self { world, inv }
    }

    fn charge_fault(&self) -> Fault {
        let w = &self.world;
        let draw = [
            (Fault::LostAnswer, 0.03),
            (Fault::Late, 0.03),
            (Fault::ServerErrorBefore, 0.02),
            (Fault::ServerErrorAfter, 0.02),
            (Fault::Unauthorized, 0.005),
            (Fault::NotSent, 0.02),
            (Fault::SlowToken, 0.01),
            (Fault::Duplicated, 0.015),
            (Fault::PgErrorNoPayment, 0.01),
            (Fault::InvalidRequest, 0.003),
        ];
        for (fault, p) in draw {
            if w.strikes(p) {
                return fault;
            }
        }
        Fault::None
    }

    fn lookup_fault(&self) -> Fault {
        let w = &self.world;
        for (fault, p) in [
            (Fault::ServerErrorBefore, 0.02),
            (Fault::Timeout, 0.01),
            (Fault::Unauthorized, 0.003),
            (Fault::NotSent, 0.01),
            (Fault::ProxyNotFound, 0.004),
        ] {
            if w.strikes(p) {
                return fault;
            }
        }
        Fault::None
    }

    fn note(&self, fault: Fault) {
        if fault != Fault::None {
            self.world.count(match fault {
                Fault::LostAnswer => "fault: answer lost after the charge",
                Fault::Late => "fault: still processing after our timeout",
                Fault::ServerErrorBefore => "fault: 5xx",
                Fault::ServerErrorAfter => "fault: 5xx after the charge",
                Fault::Unauthorized => "fault: 401",
                Fault::NotSent => "fault: not sent (refused, 429)",
                Fault::SlowToken => "fault: slow getToken",
                Fault::Timeout => "fault: lookup timeout",
                Fault::Duplicated => "fault: two requests with one merchant uid at once",
                Fault::PgErrorNoPayment => "fault: PG error without a payment",
                Fault::InvalidRequest => "fault: invalid request",
                Fault::ProxyNotFound => "fault: HTML 404 from a proxy",
                Fault::RefundRefused => "fault: refund refused by the card company",
                Fault::None => "none",
            });
        }
    }

    /// A lookup: latency, faults, then the model's wire answer read by the
    /// adapter (`read`).
    async fn lookup<T>(
        &self,
        name: &str,
        key: &str,
        answer: impl FnOnce(&World) -> (u16, Vec<u8>),
        read: impl FnOnce(u16, &[u8]) -> Result<T, GatewayError>,
    ) -> Result<T, GatewayError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        let broken = lock(&w.observed).broken_lookups.contains(key);
        let fault = if broken {
            w.count("lookups of a payment that keep failing");
            Fault::ServerErrorBefore
        } else {
            self.lookup_fault()
        };
        self.note(fault);
        let out = match fault {
            Fault::Timeout => {
                tokio::time::sleep(TIMEOUT).await;
                Err(GatewayError::Ambiguous(ambiguous(
                    AmbiguityKind::Timeout,
                    "timed out",
                )))
            }
            Fault::Unauthorized => {
                w.transit().await;
                Err(unauthorized())
            }
            Fault::NotSent => {
                w.transit().await;
                Err(GatewayError::not_sent("connection refused"))
            }
            Fault::ServerErrorBefore => {
                w.transit().await;
                let (status, body) = if w.v2 {
                    model::v2_error(500, "INTERNAL_SERVER_ERROR", "일시적 오류")
                } else {
                    model::v1_envelope(
                        500,
                        -1,
                        Some("일시적인 오류입니다."),
                        serde_json::Value::Null,
                    )
                };
                read(status, &body)
            }
            Fault::ProxyNotFound => {
                w.transit().await;
                let (status, body) = model::html_404();
                read(status, &body)
            }
            _ => {
                w.transit().await;
                let (status, body) = answer(w);
                read(status, &body)
            }
        };
        w.step();
        w.record(format!(
            "{} G {name} {key} -> {}",
            self.inv,
            match &out {
                Ok(_) => "found".to_owned(),
                Err(e) => e.label().to_owned(),
            }
        ));
        w.gate(self.inv, Side::After).await;
        w.transit().await;
        out
    }

    /// What lookups of `merchant_uid` answer now, on the wire.
    fn find_answer(w: &World, merchant_uid: &str) -> (u16, Vec<u8>) {
        let model = lock(&w.model);
        match model.find(merchant_uid, w.now()) {
            Some(p) if w.v2 => (200, model::v2_payment(p).to_string().into_bytes()),
            Some(p) => model::v1_envelope(200, 0, None, model::v1_payment(p)),
            None if w.v2 => {
                model::v2_error(404, "PAYMENT_NOT_FOUND", "결제건이 존재하지 않습니다.")
            }
            None => model::v1_not_found(),
        }
    }

    fn read_payment(v2: bool) -> impl FnOnce(u16, &[u8]) -> Result<PaymentRecord, GatewayError> {
        move |status, body| {
            if v2 {
                portone::wire::payment(status, body)
            } else {
                iamport::wire::payment(status, body)
            }
        }
    }

    /// The charge's answer on the wire, for what the model did.
    fn charge_answer(&self, req: &ChargeRequest, charged: Charged, fault: Fault) -> ChargeOutcome {
        let w = &self.world;
        if fault == Fault::PgErrorNoPayment {
            return if w.v2 {
                let body = serde_json::json!({"type": "PG_PROVIDER", "message": "PG사에서 오류를 전달했습니다.", "pgCode": "9999", "pgMessage": "PG 통신 오류"});
                portone_charge(req, 502, body.to_string().as_bytes())
            } else {
                let (s, b) = model::v1_envelope(
                    200,
                    -1,
                    Some("[PG] 통신 오류가 발생했습니다."),
                    serde_json::Value::Null,
                );
                iamport::wire::charge(s, &b)
            };
        }
        if fault == Fault::InvalidRequest {
            return if w.v2 {
                let (s, b) = model::v2_error(400, "INVALID_REQUEST", "잘못된 요청입니다.");
                portone_charge(req, s, &b)
            } else {
                let (s, b) = model::v1_envelope(
                    400,
                    -1,
                    Some("잘못된 요청입니다."),
                    serde_json::Value::Null,
                );
                iamport::wire::charge(s, &b)
            };
        }
        let model = lock(&w.model);
        match charged {
            Charged::Refused(r) if w.v2 => {
                let deleted = model.key(&req.customer_uid).is_some_and(|k| k.deleted);
                let (s, b) = model::v2_refusal(r, deleted);
                portone_charge(req, s, &b)
            }
            Charged::Refused(r) => {
                let (s, b) = model::v1_refusal(r);
                iamport::wire::charge(s, &b)
            }
            Charged::Recorded(i) if w.v2 => {
                let p = &model.payments[i];
                match p.status {
                    Status::Failed => {
                        let body = serde_json::json!({"type": "PG_PROVIDER", "message": "PG사에서 오류를 전달했습니다.", "pgCode": "CARD_DECLINED", "pgMessage": p.fail_reason});
                        portone_charge(req, 502, body.to_string().as_bytes())
                    }
                    // 200, then the payment is read back (and may not be
                    // visible yet: lookups lag).
                    _ => {
                        let (s, b) = match model.find(&req.merchant_uid, w.now()) {
                            Some(p) => (200, model::v2_payment(p).to_string().into_bytes()),
                            None => model::v2_error(
                                404,
                                "PAYMENT_NOT_FOUND",
                                "결제건이 존재하지 않습니다.",
                            ),
                        };
                        portone::wire::read_back(portone::wire::payment(s, &b))
                    }
                }
            }
            Charged::Recorded(i) => {
                let (s, b) =
                    model::v1_envelope(200, 0, None, model::v1_payment(&model.payments[i]));
                iamport::wire::charge(s, &b)
            }
        }
    }
}

fn portone_charge(req: &ChargeRequest, status: u16, body: &[u8]) -> ChargeOutcome {
    match portone::wire::charge(req, portone::wire::decode(status, body)) {
        None => ChargeOutcome::Ambiguous(ambiguous(
            AmbiguityKind::Malformed,
            "200 without a read-back",
        )),
        Some(outcome) => outcome,
    }
}

impl World {
    /// How long lookups take to see a new payment (at most
    /// [`MAX_PROCESSING`]).
    fn lookup_lag(&self) -> chrono::Duration {
        if !self.faults_on() {
            return chrono::Duration::zero();
        }
        let secs = self.rand(|r| match r.random_range(0..100) {
            0..70 => 0,
            70..95 => r.random_range(1..60),
            _ => r.random_range(60..=MAX_PROCESSING.as_secs() as i64 - 60),
        });
        chrono::Duration::seconds(secs)
    }

    /// A charge request reaching the PG now.
    pub(super) fn apply_charge(self: &Arc<Self>, req: &ChargeRequest) -> Charged {
        let now = self.now();
        let (rate, dead, forbidden) = {
            let customers = lock(&self.customers);
            let c = customers.get(&req.customer_uid);
            (
                c.map_or(0.0, |c| c.decline_rate),
                c.and_then(|c| c.dies)
                    .filter(|(at, _)| *at <= now)
                    .map(|(_, message)| message),
                c.is_some_and(|c| c.forbidden),
            )
        };
        if forbidden {
            self.count("charges refused as forbidden");
            self.record(format!("I refused {} Forbidden", req.merchant_uid));
            return Charged::Refused(Refusal::Forbidden);
        }
        let in_progress = lock(&self.model)
            .inflight
            .get(&req.merchant_uid)
            .copied()
            .unwrap_or(0)
            > 0;
        if in_progress && self.rand(|r| r.random_bool(0.5)) {
            self.count("refused while in progress");
            self.record(format!("I refused {} InProgress", req.merchant_uid));
            return Charged::Refused(Refusal::InProgress);
        }
        // Once the world quiets down, nothing new stays pending.
        let decision = if self.faults_on() && self.rand(|r| r.random_bool(0.04)) {
            Decision::Pend
        } else if let Some(message) = dead {
            Decision::Decline(message)
        } else if self.rand(|r| r.random_bool(rate)) {
            let soft = crate::model::SOFT_DECLINES;
            Decision::Decline(soft[self.rand(|r| r.random_range(0..soft.len()))])
        } else {
            Decision::Pay
        };
        let lag = self.lookup_lag();
        let hide_paid_at = self.v2 && self.rand(|r| r.random_bool(0.5));
        let setting = self
            .setting_broken
            .load(std::sync::atomic::Ordering::SeqCst);
        let charged = lock(&self.model).charge(
            &req.customer_uid,
            &req.merchant_uid,
            req.amount,
            req.tax_free,
            decision,
            setting,
            now,
            lag,
            hide_paid_at,
        );
        match charged {
            Charged::Recorded(i) => {
                let p = lock(&self.model).payments[i].clone();
                match p.status {
                    Status::Paid => {
                        self.count("charges paid");
                        self.record(format!("I paid {} {}", p.merchant_uid, p.imp_uid));
                        self.check_paid(&p.merchant_uid);
                        self.schedule_webhooks(&p.merchant_uid, &p.imp_uid, "paid");
                    }
                    Status::Failed => {
                        self.count("charges declined");
                        if dead.is_some() {
                            self.count("charges declined as a dead card");
                        }
                        self.record(format!("I declined {} {}", p.merchant_uid, p.imp_uid));
                    }
                    Status::Pending => {
                        self.count("charges pending at the PG");
                        self.record(format!("I pending {} {}", p.merchant_uid, p.imp_uid));
                        let after =
                            Duration::from_secs(self.rand(|r| match r.random_range(0..10) {
                                0..6 => r.random_range(20..600),
                                6..9 => r.random_range(600..7200),
                                _ => r.random_range(7200..86_400),
                            }));
                        let pay = !self.rand(|r| r.random_bool(rate.max(0.2)));
                        tokio::spawn(Arc::clone(self).land_pending(i, pay, after));
                    }
                    Status::Cancelled => {}
                }
                // Now and then the PG's records of one payment stay
                // unreadable (its lookups keep failing).
                if self.strikes(0.002) {
                    self.count("payments whose lookups keep failing");
                    lock(&self.observed)
                        .broken_lookups
                        .insert(p.merchant_uid.clone());
                }
            }
            Charged::Refused(r) => {
                if r == Refusal::Setting {
                    self.count("charges refused by a broken PG setting");
                }
                self.record(format!("I refused {} {r:?}", req.merchant_uid));
            }
        }
        charged
    }

    /// A pending payment ends, paid or failed.
    async fn land_pending(self: Arc<Self>, index: usize, pay: bool, after: Duration) {
        tokio::time::sleep(after).await;
        let now = self.now();
        let landed = lock(&self.model).land_pending(index, pay, now);
        if !landed {
            return;
        }
        let p = lock(&self.model).payments[index].clone();
        self.record(format!(
            "I pending {} {} lands {}",
            p.merchant_uid,
            p.imp_uid,
            if pay { "paid" } else { "failed" }
        ));
        if pay {
            self.count("pending charges that were paid");
            self.check_paid(&p.merchant_uid);
            self.schedule_webhooks(&p.merchant_uid, &p.imp_uid, "paid");
        }
    }

    /// A request the PG keeps processing after our timeout: its effect lands later.
    pub(super) async fn land_late(self: Arc<Self>, req: ChargeRequest, after: Duration) {
        tokio::time::sleep(after).await;
        {
            let mut model = lock(&self.model);
            if let Some(n) = model.inflight.get_mut(&req.merchant_uid) {
                *n = n.saturating_sub(1);
            }
        }
        self.record(format!("I late request for {} lands", req.merchant_uid));
        self.apply_charge(&req);
    }
}

/// The V2 store, channel and webhook secret of the simulated merchant.
const V2_WINDOW: (&str, &str, &str) = ("store-simulation", "channel-key-simulation", "CARD");
const V2_WEBHOOK_SECRET: &str = "whsec_c2ltdWxhdGlvbi13ZWJob29rLXNlY3JldA==";

impl PaymentGateway for SimGateway {
    // The window and the notices are the production adapters' own.
    fn window(&self, reg: &Registration, redirect_url: &str) -> PaymentWindow {
        if self.world.v2 {
            let (store_id, channel_key, method) = V2_WINDOW;
            let settings = portone::window::WindowSettings {
                store_id: store_id.into(),
                channel_key: channel_key.into(),
                billing_key_method: method.into(),
            };
            PaymentWindow::IssueBillingKey(portone::window::issue_billing_key(
                reg,
                &settings,
                redirect_url,
            ))
        } else {
            PaymentWindow::RequestPay(iamport::window::request_pay(reg, "trans", redirect_url))
        }
    }

    fn window_proof(&self) -> WindowProof {
        if self.world.v2 {
            WindowProof::BillingKey
        } else {
            WindowProof::Payment
        }
    }

    fn decode_notice(&self, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
        if self.world.v2 {
            let secrets = portone::webhook::WebhookSecrets::parse(&[shared::secret::Secret::new(
                V2_WEBHOOK_SECRET,
            )])
            .map_err(BadNotice::Signature)?;
            portone::webhook::decode(&secrets, inbound)
        } else {
            iamport::notice::decode(inbound)
        }
    }

    async fn charge(&self, req: &ChargeRequest) -> ChargeOutcome {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.check_send(self.inv, req);
        let fault = self.charge_fault();
        self.note(fault);
        w.count("charge requests");
        let early = match fault {
            Fault::NotSent => Some(ChargeOutcome::Rejected(Rejection {
                kind: RejectionKind::NotSent,
                http_status: Some(429),
                code: None,
                message: "429 Too Many Requests".into(),
            })),
            Fault::SlowToken => {
                tokio::time::sleep(TIMEOUT).await;
                Some(ChargeOutcome::Rejected(Rejection {
                    kind: RejectionKind::NotSent,
                    http_status: None,
                    code: None,
                    message: "could not obtain an access token".into(),
                }))
            }
            Fault::Unauthorized => match unauthorized() {
                GatewayError::Rejected(r) => Some(ChargeOutcome::Rejected(r)),
                GatewayError::Ambiguous(a) => Some(ChargeOutcome::Ambiguous(a)),
            },
            Fault::ServerErrorBefore => Some(ChargeOutcome::Ambiguous(ambiguous(
                AmbiguityKind::ServerError,
                "500",
            ))),
            Fault::Late => {
                *lock(&w.model)
                    .inflight
                    .entry(req.merchant_uid.clone())
                    .or_insert(0) += 1;
                let after = Duration::from_millis(w.rand(|r| {
                    r.random_range(TIMEOUT.as_millis() as u64..=MAX_PROCESSING.as_millis() as u64)
                }));
                tokio::spawn(Arc::clone(w).land_late(req.clone(), after));
                tokio::time::sleep(TIMEOUT).await;
                Some(ChargeOutcome::Ambiguous(ambiguous(
                    AmbiguityKind::Timeout,
                    "timed out",
                )))
            }
            _ => None,
        };
        if let Some(out) = early {
            w.step();
            w.record(format!(
                "{} G charge {} -> {out:?}",
                self.inv, req.merchant_uid
            ));
            w.gate(self.inv, Side::After).await;
            w.transit().await;
            return out;
        }
        w.transit().await;
        let charged = match fault {
            Fault::PgErrorNoPayment | Fault::InvalidRequest => Charged::Refused(Refusal::Setting),
            Fault::Duplicated => self.duplicated(req),
            _ => w.apply_charge(req),
        };
        w.step();
        w.gate(self.inv, Side::After).await;
        let out = match fault {
            Fault::LostAnswer => {
                ChargeOutcome::Ambiguous(ambiguous(AmbiguityKind::Connection, "connection reset"))
            }
            Fault::ServerErrorAfter => {
                ChargeOutcome::Ambiguous(ambiguous(AmbiguityKind::ServerError, "502"))
            }
            _ => self.charge_answer(req, charged, fault),
        };
        w.record(format!(
            "{} G charge {} -> {}",
            self.inv,
            req.merchant_uid,
            match &out {
                ChargeOutcome::Paid(_) => "paid".to_owned(),
                ChargeOutcome::Declined(_) => "declined".to_owned(),
                ChargeOutcome::Rejected(r) => format!("rejected {:?} {}", r.kind, r.message),
                ChargeOutcome::Ambiguous(a) => format!("ambiguous {:?}", a.kind),
            }
        ));
        w.transit().await;
        out
    }

    async fn payment(&self, imp_uid: &str) -> Result<PaymentRecord, GatewayError> {
        if self.world.v2 {
            // As the V2 client: no lookup by transaction id.
            self.world.violation(
                "adapter misuse",
                format!("V2: the engine looked a payment up by imp_uid {imp_uid}"),
            );
            return Err(GatewayError::Rejected(Rejection {
                kind: RejectionKind::BadRequest,
                http_status: None,
                code: None,
                message: "PortOne V2 looks payments up by paymentId".into(),
            }));
        }
        let uid = imp_uid.to_owned();
        self.lookup(
            "payment",
            imp_uid,
            move |w| {
                let model = lock(&w.model);
                match model.by_imp(&uid, w.now()) {
                    Some(p) => model::v1_envelope(200, 0, None, model::v1_payment(p)),
                    None => model::v1_not_found(),
                }
            },
            Self::read_payment(false),
        )
        .await
    }

    async fn notified_payment(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<PaymentRecord, GatewayError> {
        if self.world.v2 {
            return self.find_payment(merchant_uid).await;
        }
        self.payment(imp_uid).await
    }

    async fn find_payment(&self, merchant_uid: &str) -> Result<PaymentRecord, GatewayError> {
        let uid = merchant_uid.to_owned();
        self.lookup(
            "find",
            merchant_uid,
            move |w| Self::find_answer(w, &uid),
            Self::read_payment(self.world.v2),
        )
        .await
    }

    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        let key = customer_uid.to_owned();
        let v2 = self.world.v2;
        self.lookup(
            "billing_key",
            customer_uid,
            move |w| {
                let model = lock(&w.model);
                match (model.key(&key), v2) {
                    (Some(k), true) => (200, model::v2_key(&key, k).to_string().into_bytes()),
                    (None, true) => {
                        model::v2_error(404, "BILLING_KEY_NOT_FOUND", "빌링키가 존재하지 않습니다.")
                    }
                    (Some(k), false) if !k.deleted => {
                        model::v1_envelope(200, 0, None, model::v1_key(&key, k))
                    }
                    _ => model::v1_key_missing(&key),
                }
            },
            move |status, body| {
                if v2 {
                    portone::wire::billing_key(status, body, V2_WINDOW.1)
                } else {
                    iamport::wire::billing_key(status, body)
                }
            },
        )
        .await
    }

    async fn delete_billing_key(&self, customer_uid: &str) -> Result<(), GatewayError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.transit().await;
        let deleted = lock(&w.model).delete_key(customer_uid);
        w.step();
        w.gate(self.inv, Side::After).await;
        if deleted || w.v2 {
            // V2 keeps a deleted key: deleting it again is 409
            // BILLING_KEY_ALREADY_DELETED, which the client takes as done.
            Ok(())
        } else {
            let (s, b) = model::v1_key_missing(customer_uid);
            iamport::wire::billing_key(s, &b).map(|_| ())
        }
    }

    async fn issue_cash_receipt(
        &self,
        request: &CashReceiptRequest,
    ) -> Result<Outcome, GatewayError> {
        let req = request.clone();
        self.receipt_call("issue cash receipt", &request.merchant_uid, move |w, fault| {
            let now = w.now();
            let v2 = w.v2;
            let imp = (!v2).then_some(req.imp_uid.as_str());
            let (status, body) = if fault == Fault::PgErrorNoPayment {
                w.count("fault: cash receipt refused by the PG");
                if v2 {
                    (502, json!({"type": "PG_PROVIDER", "message": "현금영수증 발급 실패", "pgCode": "CR01", "pgMessage": "현금영수증 발급 실패"}).to_string().into_bytes())
                } else {
                    // i'mport answers 500 when the PG fails to issue.
                    model::v1_envelope(500, -1, Some("[PG] 현금영수증 발급 실패"), Value::Null)
                }
            } else {
                let shown_after = if fault == Fault::Late {
                    w.count("fault: cash receipt issuance in progress");
                    chrono::Duration::minutes(w.rand(|r| r.random_range(1..40)))
                } else {
                    chrono::Duration::zero()
                };
                let mut m = lock(&w.model);
                let done = m.issue_receipt(
                    imp,
                    &req.merchant_uid,
                    v2.then_some(req.amount),
                    req.tax_free,
                    now,
                    now + shown_after,
                );
                match done {
                    Ok(i) => {
                        w.count("cash receipts issued at the PG");
                        let r = m.receipts[i].clone();
                        let p = m.payments[r.payment].clone();
                        drop(m);
                        if !p.cash {
                            w.violation(
                                "cash receipt for a card payment",
                                format!("{} {}", p.merchant_uid, p.imp_uid),
                            );
                        }
                        if matches!(fault, Fault::Late) {
                            if v2 {
                                (504, json!({"type": "PG_PROVIDER", "message": "현금영수증 발행 처리 중"}).to_string().into_bytes())
                            } else {
                                model::v1_envelope(504, -1, Some("현금영수증 발행 처리 중"), Value::Null)
                            }
                        } else if v2 {
                            (200, json!({"cashReceipt": {"issueNumber": r.issue_number, "url": format!("https://receipts.portone-sim.invalid/cash/{}", r.issue_number), "pgReceiptId": format!("rcpt_{}", r.issue_number)}}).to_string().into_bytes())
                        } else {
                            model::v1_envelope(200, 0, None, model::v1_receipt(&p, &r))
                        }
                    }
                    Err(model::ReceiptRefusal::AlreadyIssued) => {
                        w.count("cash receipt issuances refused: one is live");
                        if v2 {
                            model::v2_error(409, "CASH_RECEIPT_ALREADY_ISSUED", "이미 발급된 현금영수증이 있습니다.")
                        } else {
                            model::v1_envelope(400, -1, Some("이미 현금영수증이 발행된 거래입니다."), Value::Null)
                        }
                    }
                    Err(_) => {
                        w.count("cash receipt issuances refused: invalid");
                        if v2 {
                            model::v2_error(400, "INVALID_REQUEST", "현금영수증을 발급할 수 없는 결제건입니다.")
                        } else {
                            model::v1_envelope(400, -1, Some("현금영수증을 발행할 수 없는 거래입니다."), Value::Null)
                        }
                    }
                }
            };
            if fault == Fault::LostAnswer {
                w.count("fault: cash receipt answer lost");
                return Ok(Outcome::Unclear("connection reset".into()));
            }
            if v2 {
                portone::wire::receipt_issued(portone::wire::decode(status, &body), &req, now)
            } else {
                iamport::wire::receipt_issued(iamport::wire::receipt(status, &body), req.tax_free)
            }
        })
        .await
    }

    async fn cancel_cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        let (imp_uid, uid) = (imp_uid.to_owned(), merchant_uid.to_owned());
        self.receipt_call("cancel cash receipt", merchant_uid, move |w, fault| {
            let now = w.now();
            let v2 = w.v2;
            let mut m = lock(&w.model);
            let done = m.cancel_receipt((!v2).then_some(imp_uid.as_str()), &uid, now);
            let (status, body) = match done {
                Ok(i) => {
                    let r = m.receipts[i].clone();
                    let p = m.payments[r.payment].clone();
                    if v2 {
                        (
                            200,
                            json!({"cancelledAmount": r.amount, "cancelledAt": now.to_rfc3339()})
                                .to_string()
                                .into_bytes(),
                        )
                    } else {
                        model::v1_envelope(200, 0, None, model::v1_receipt(&p, &r))
                    }
                }
                Err(_) if v2 => model::v2_error(
                    409,
                    "CASH_RECEIPT_NOT_ISSUED",
                    "발급된 현금영수증이 없습니다.",
                ),
                Err(_) => {
                    model::v1_envelope(400, -1, Some("발급된 현금영수증이 없습니다."), Value::Null)
                }
            };
            drop(m);
            if fault == Fault::LostAnswer {
                w.count("fault: cash receipt answer lost");
                return Ok(Outcome::Unclear("connection reset".into()));
            }
            if v2 {
                portone::wire::receipt_cancelled(portone::wire::decode(status, &body), now)
            } else {
                iamport::wire::receipt_cancelled(iamport::wire::receipt(status, &body), now)
            }
        })
        .await
    }

    async fn cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        let (imp, uid) = (imp_uid.to_owned(), merchant_uid.to_owned());
        let v2 = self.world.v2;
        self.lookup(
            "cash_receipt",
            merchant_uid,
            move |w| {
                let m = lock(&w.model);
                let shown = m.shown_receipt((!v2).then_some(imp.as_str()), &uid, w.now());
                match shown {
                    Some(r) => {
                        let p = &m.payments[r.payment];
                        if v2 {
                            (200, model::v2_receipt(p, r).to_string().into_bytes())
                        } else {
                            model::v1_envelope(200, 0, None, model::v1_receipt(p, r))
                        }
                    }
                    None if v2 => model::v2_error(
                        404,
                        "CASH_RECEIPT_NOT_FOUND",
                        "현금영수증이 존재하지 않습니다.",
                    ),
                    None => model::v1_envelope(
                        404,
                        -1,
                        Some("현금영수증 발행내역이 없습니다."),
                        Value::Null,
                    ),
                }
            },
            move |status, body| {
                if v2 {
                    portone::wire::receipt_found(portone::wire::decode(status, body))
                } else {
                    iamport::wire::receipt_found(iamport::wire::receipt(status, body), 0)
                }
            },
        )
        .await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.transit().await;
        let fault = if w.strikes(0.03) {
            Fault::ServerErrorBefore
        } else if w.strikes(0.05) {
            Fault::LostAnswer
        } else if w.strikes(0.03) {
            Fault::RefundRefused
        } else {
            Fault::None
        };
        if fault == Fault::ServerErrorBefore {
            w.count("fault: refund 5xx before");
            w.step();
            w.record(format!(
                "{} G refund {} -> 5xx",
                self.inv, request.merchant_uid
            ));
            w.gate(self.inv, Side::After).await;
            return Err(GatewayError::Ambiguous(ambiguous(
                AmbiguityKind::ServerError,
                "500",
            )));
        }
        let done = if fault == Fault::RefundRefused {
            w.count("fault: refund refused by the card company");
            Err(crate::model::RefundRefusal::Provider)
        } else {
            lock(&w.model).refund(
                (!w.v2).then_some(request.imp_uid.as_str()),
                &request.merchant_uid,
                request.amount,
                request.checksum,
                request.tax_free,
                self.inv,
            )
        };
        w.step();
        w.record(format!(
            "{} G refund {} {:?} -> {:?}",
            self.inv, request.merchant_uid, request.amount, done
        ));
        if done.is_ok() && request.tax_free.is_some() {
            w.count("refunds with a tax-free part");
        }
        if done == Err(crate::model::RefundRefusal::TaxFree) {
            w.violation(
                "tax split broken",
                format!(
                    "{} refund of {} asked {:?} KRW tax-free, which does not fit what the PG has left",
                    self.inv, request.merchant_uid, request.tax_free
                ),
            );
        }
        if let Ok(i) = done {
            w.count("refunds made at the PG");
            let p = lock(&w.model).payments[i].clone();
            let status = if p.status == Status::Cancelled {
                "cancelled"
            } else {
                "paid"
            };
            // A cancellation webhook: always in V2, sometimes in V1.
            if w.v2 || w.rand(|r| r.random_bool(0.5)) {
                w.schedule_webhooks(&p.merchant_uid, &p.imp_uid, status);
            }
        }
        w.gate(self.inv, Side::After).await;
        w.transit().await;
        if fault == Fault::LostAnswer {
            w.count("fault: refund answer lost");
            return Err(GatewayError::Ambiguous(ambiguous(
                AmbiguityKind::Connection,
                "connection reset",
            )));
        }
        let model = lock(&w.model);
        match done {
            Ok(i) if w.v2 => {
                // 200, then the adapter reads the payment back.
                let body = model::v2_payment(&model.payments[i]).to_string();
                portone::wire::payment(200, body.as_bytes())
            }
            Ok(i) => {
                let (s, b) =
                    model::v1_envelope(200, 0, None, model::v1_payment(&model.payments[i]));
                iamport::wire::payment(s, &b)
            }
            Err(r) if w.v2 => {
                let (s, b) = model::v2_refund_refusal(r);
                portone::wire::payment(s, &b)
            }
            Err(r) => {
                let (s, b) = model::v1_refund_refusal(r);
                iamport::wire::payment(s, &b)
            }
        }
    }
}

impl SimGateway {
    /// A cash-receipt request's faults: never sent, in progress past our
    /// timeout (issued, shown later), refused by the PG, answer lost.
    fn receipt_fault(&self) -> Fault {
        let w = &self.world;
        for (fault, p) in [
            (Fault::NotSent, 0.01),
            (Fault::Late, 0.05),
            (Fault::PgErrorNoPayment, 0.03),
            (Fault::LostAnswer, 0.03),
        ] {
            if w.strikes(p) {
                return fault;
            }
        }
        Fault::None
    }

    async fn receipt_call(
        &self,
        what: &str,
        uid: &str,
        act: impl FnOnce(&World, Fault) -> Result<Outcome, GatewayError>,
    ) -> Result<Outcome, GatewayError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.transit().await;
        let fault = self.receipt_fault();
        let out = if fault == Fault::NotSent {
            w.count("fault: cash receipt request not sent");
            Err(GatewayError::not_sent("429 Too Many Requests"))
        } else {
            act(w, fault)
        };
        w.step();
        w.record(format!("{} G {what} {uid} -> {out:?}", self.inv));
        w.gate(self.inv, Side::After).await;
        w.transit().await;
        out
    }
}

impl SimGateway {
    /// Two copies of one request reach the PG at once: one is processed,
    /// the other meets it still processing (V1 code 1 "in progress", V2 409)
    /// or already paid; we get the answer of either.
    fn duplicated(&self, req: &ChargeRequest) -> Charged {
        let w = &self.world;
        if w.rand(|r| r.random_bool(0.5)) {
            // The copy we hear from lost the race: the winner is still
            // processing and lands a little later.
            *lock(&w.model)
                .inflight
                .entry(req.merchant_uid.clone())
                .or_insert(0) += 1;
            let after = Duration::from_millis(w.rand(|r| r.random_range(200..30_000)));
            tokio::spawn(Arc::clone(w).land_late(req.clone(), after));
            w.count("duplicates answered by the copy that lost");
            return Charged::Refused(Refusal::InProgress);
        }
        let first = w.apply_charge(req);
        let second = w.apply_charge(req);
        if w.rand(|r| r.random_bool(0.5)) {
            first
        } else {
            second
        }
    }
}
