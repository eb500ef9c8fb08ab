//! A payment gateway that answers from a script: each operation takes the
//! next answer queued for it, and every call is recorded, so a unit test
//! of a service says what the PG answers and checks what was asked of it
//! (how many charges, under which `merchant_uid`). The window and the
//! notices are V1's (`request_pay`, the V1 webhook body). A call with no
//! answer left panics with the call: a test that did not expect it fails
//! there, never on a made-up answer.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::billing::receipts::Outcome;
use crate::billing::{PaymentRecord, Registration};
use crate::gateway::{
    BadNotice, BillingKey, CashReceiptRequest, ChargeOutcome, ChargeRequest, GatewayError,
    InboundNotice, Notice, PaymentGateway, PaymentWindow, RefundRequest, WindowProof,
};

/// What was asked of the gateway, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Charge(ChargeRequest),
    Payment(String),
    NotifiedPayment {
        imp_uid: String,
        merchant_uid: String,
    },
    FindPayment(String),
    BillingKey(String),
    DeleteBillingKey(String),
    Refund(RefundRequest),
    IssueCashReceipt(CashReceiptRequest),
    CancelCashReceipt(String),
    CashReceipt(String),
}

type Answer<T> = VecDeque<Result<T, GatewayError>>;

#[derive(Default)]
struct Script {
    charges: VecDeque<ChargeOutcome>,
    /// `payment`, `notified_payment` and `find_payment`: one queue, in the
    /// order the service reads the PG's records.
    records: Answer<PaymentRecord>,
    keys: Answer<BillingKey>,
    deletes: Answer<()>,
    refunds: Answer<PaymentRecord>,
    /// Issue, cancel and look-up of cash receipts: one queue, in order.
    receipts: Answer<Outcome>,
    calls: Vec<Call>,
}

/// See the module documentation.
#[derive(Default)]
pub struct ScriptedGateway {
    script: Mutex<Script>,
}

impl ScriptedGateway {
    pub fn new() -> Self {
        Self::default()
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next charge answers `outcome`.
    pub fn charge_answers(self, outcome: ChargeOutcome) -> Self {
        self.script().charges.push_back(outcome);
        self
    }

    /// The next read of a payment record (by id, by notice or by
    /// `merchant_uid`) answers `answer`.
    pub fn record_answers(self, answer: Result<PaymentRecord, GatewayError>) -> Self {
        self.script().records.push_back(answer);
        self
    }

    pub fn key_answers(self, answer: Result<BillingKey, GatewayError>) -> Self {
        self.script().keys.push_back(answer);
        self
    }

    pub fn delete_answers(self, answer: Result<(), GatewayError>) -> Self {
        self.script().deletes.push_back(answer);
        self
    }

    pub fn refund_answers(self, answer: Result<PaymentRecord, GatewayError>) -> Self {
        self.script().refunds.push_back(answer);
        self
    }

    /// The next cash-receipt call (issue, cancel or look-up) answers `answer`.
    pub fn receipt_answers(self, answer: Result<Outcome, GatewayError>) -> Self {
        self.script().receipts.push_back(answer);
        self
    }

    /// Scripts more answers on a gateway already in use (an engine owns
    /// it): `more` builds on what is left of the script and its calls.
    pub fn and_then(&self, more: impl FnOnce(Self) -> Self) {
        let taken = std::mem::take(&mut *self.script());
        let more = more(Self {
            script: Mutex::new(taken),
        });
        *self.script() = more.script.into_inner().unwrap_or_else(|p| p.into_inner());
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.script().calls.clone()
    }

    /// The charges sent so far.
    pub fn charges(&self) -> Vec<ChargeRequest> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Charge(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Answers unused at the end of a test (a test may assert none are left).
    pub fn unused(&self) -> usize {
        let s = self.script();
        s.charges.len()
            + s.records.len()
            + s.keys.len()
            + s.deletes.len()
            + s.refunds.len()
            + s.receipts.len()
    }

    fn next<T>(&self, call: Call, queue: impl FnOnce(&mut Script) -> Option<T>) -> T {
        let mut script = self.script();
        script.calls.push(call.clone());
        match queue(&mut script) {
            Some(answer) => answer,
            None => panic!("ScriptedGateway: no answer scripted for {call:?}"),
        }
    }
}

impl PaymentGateway for ScriptedGateway {
    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        self.next(Call::Charge(request.clone()), |s| s.charges.pop_front())
    }

    async fn payment(&self, imp_uid: &str) -> Result<PaymentRecord, GatewayError> {
        self.next(Call::Payment(imp_uid.into()), |s| s.records.pop_front())
    }

    async fn notified_payment(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<PaymentRecord, GatewayError> {
        let call = Call::NotifiedPayment {
            imp_uid: imp_uid.into(),
            merchant_uid: merchant_uid.into(),
        };
        self.next(call, |s| s.records.pop_front())
    }

    async fn find_payment(&self, merchant_uid: &str) -> Result<PaymentRecord, GatewayError> {
        self.next(Call::FindPayment(merchant_uid.into()), |s| {
            s.records.pop_front()
        })
    }

    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        self.next(Call::BillingKey(customer_uid.into()), |s| {
            s.keys.pop_front()
        })
    }

    async fn delete_billing_key(&self, customer_uid: &str) -> Result<(), GatewayError> {
        self.next(Call::DeleteBillingKey(customer_uid.into()), |s| {
            s.deletes.pop_front()
        })
    }

    async fn refund(&self, request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        self.next(Call::Refund(request.clone()), |s| s.refunds.pop_front())
    }

    async fn issue_cash_receipt(
        &self,
        request: &CashReceiptRequest,
    ) -> Result<Outcome, GatewayError> {
        self.next(Call::IssueCashReceipt(request.clone()), |s| {
            s.receipts.pop_front()
        })
    }

    async fn cancel_cash_receipt(&self, imp_uid: &str, _: &str) -> Result<Outcome, GatewayError> {
        self.next(Call::CancelCashReceipt(imp_uid.into()), |s| {
            s.receipts.pop_front()
        })
    }

    async fn cash_receipt(&self, imp_uid: &str, _: &str) -> Result<Outcome, GatewayError> {
        self.next(Call::CashReceipt(imp_uid.into()), |s| {
            s.receipts.pop_front()
        })
    }

    fn window(&self, reg: &Registration, redirect_url: &str) -> PaymentWindow {
        PaymentWindow::RequestPay(crate::gateway::iamport::window::request_pay(
            reg,
            "trans",
            redirect_url,
        ))
    }

    fn window_proof(&self) -> WindowProof {
        WindowProof::Payment
    }

    fn decode_notice(&self, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
        crate::gateway::iamport::notice::decode(inbound)
    }
}
