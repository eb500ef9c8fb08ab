//! A cap on requests in flight to the gateway. Only the gateway call holds
//! a slot: a charge's ledger reads and writes happen outside it, so the
//! gateway's concurrency (what i'mport sees) is spent on gateway calls only.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{
    BadNotice, BillingKey, ChargeOutcome, ChargeRequest, GatewayError, InboundNotice, Notice,
    PaymentGateway, PaymentWindow, RefundRequest, WindowProof,
};
use crate::billing::receipts::Outcome;
use crate::billing::{PaymentRecord, Registration};
use crate::gateway::CashReceiptRequest;

/// `G` with at most `slots` requests in flight at once (shared by every
/// clone). Derefs to `G` for what is not part of the port.
#[derive(Debug, Clone)]
pub struct Limited<G> {
    inner: G,
    slots: Arc<Semaphore>,
}

impl<G> Limited<G> {
    pub fn new(inner: G, slots: usize) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// Slots free now (for tests and benchmarks).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed; `None` would only let a call through.
        self.slots.acquire().await.ok()
    }
}

impl<G> Deref for Limited<G> {
    type Target = G;

    fn deref(&self) -> &G {
        &self.inner
    }
}

impl<G: PaymentGateway> PaymentGateway for Limited<G> {
    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let _slot = self.slot().await;
        self.inner.charge(request).await
    }

    async fn payment(&self, imp_uid: &str) -> Result<PaymentRecord, GatewayError> {
        let _slot = self.slot().await;
        self.inner.payment(imp_uid).await
    }

    async fn find_payment(&self, merchant_uid: &str) -> Result<PaymentRecord, GatewayError> {
        let _slot = self.slot().await;
        self.inner.find_payment(merchant_uid).await
    }

    async fn notified_payment(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<PaymentRecord, GatewayError> {
        let _slot = self.slot().await;
        self.inner.notified_payment(imp_uid, merchant_uid).await
    }

    async fn billing_key(&self, customer_uid: &str) -> Result<BillingKey, GatewayError> {
        let _slot = self.slot().await;
        self.inner.billing_key(customer_uid).await
    }

    async fn delete_billing_key(&self, customer_uid: &str) -> Result<(), GatewayError> {
        let _slot = self.slot().await;
        self.inner.delete_billing_key(customer_uid).await
    }

    async fn issue_cash_receipt(
        &self,
        request: &CashReceiptRequest,
    ) -> Result<Outcome, GatewayError> {
        let _slot = self.slot().await;
        self.inner.issue_cash_receipt(request).await
    }

    async fn cancel_cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        let _slot = self.slot().await;
        self.inner.cancel_cash_receipt(imp_uid, merchant_uid).await
    }

    async fn cash_receipt(
        &self,
        imp_uid: &str,
        merchant_uid: &str,
    ) -> Result<Outcome, GatewayError> {
        let _slot = self.slot().await;
        self.inner.cash_receipt(imp_uid, merchant_uid).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
        let _slot = self.slot().await;
        self.inner.refund(request).await
    }

    // No request leaves for these: no slot.
    fn window(&self, reg: &Registration, redirect_url: &str) -> PaymentWindow {
        self.inner.window(reg, redirect_url)
    }

    fn window_proof(&self) -> WindowProof {
        self.inner.window_proof()
    }

    fn decode_notice(&self, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
        self.inner.decode_notice(inbound)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A gateway that records how many of its calls overlap.
    #[derive(Default)]
    struct Counting {
        now: AtomicUsize,
        peak: AtomicUsize,
    }

    impl PaymentGateway for Counting {
        async fn charge(&self, _r: &ChargeRequest) -> ChargeOutcome {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            ChargeOutcome::Rejected(super::super::Rejection {
                kind: super::super::RejectionKind::NotSent,
                code: None,
                message: "test".into(),
                http_status: None,
            })
        }
        async fn payment(&self, _: &str) -> Result<PaymentRecord, GatewayError> {
            unreachable!()
        }
        async fn find_payment(&self, _: &str) -> Result<PaymentRecord, GatewayError> {
            unreachable!()
        }
        async fn notified_payment(&self, _: &str, _: &str) -> Result<PaymentRecord, GatewayError> {
            unreachable!()
        }
        async fn billing_key(&self, _: &str) -> Result<BillingKey, GatewayError> {
            unreachable!()
        }
        async fn delete_billing_key(&self, _: &str) -> Result<(), GatewayError> {
            unreachable!()
        }
        async fn refund(&self, _: &RefundRequest) -> Result<PaymentRecord, GatewayError> {
            unreachable!()
        }
        async fn issue_cash_receipt(
            &self,
            _: &CashReceiptRequest,
        ) -> Result<Outcome, GatewayError> {
            unreachable!()
        }
        async fn cancel_cash_receipt(&self, _: &str, _: &str) -> Result<Outcome, GatewayError> {
            unreachable!()
        }
        async fn cash_receipt(&self, _: &str, _: &str) -> Result<Outcome, GatewayError> {
            unreachable!()
        }
        fn window(&self, _: &Registration, _: &str) -> PaymentWindow {
            unreachable!()
        }
        fn window_proof(&self) -> WindowProof {
            unreachable!()
        }
        fn decode_notice(&self, _: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn no_more_calls_in_flight_than_slots() {
        let limited = Limited::new(Counting::default(), 3);
        let request = ChargeRequest {
            customer_uid: "cu".into(),
            merchant_uid: "m".into(),
            amount: 1,
            tax_free: 0,
            name: "n".into(),
            buyer: Default::default(),
            custom_data: None,
            notice_url: None,
        };
        let calls: Vec<_> = (0..20).map(|_| limited.charge(&request)).collect();
        futures::future::join_all(calls).await;
        assert_eq!(limited.peak.load(Ordering::SeqCst), 3);
        assert_eq!(limited.free_slots(), 3);
    }
}
