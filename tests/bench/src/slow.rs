//! The in-memory ledger as if it were DynamoDB: every operation waits a
//! modelled round trip first (and is counted), so a benchmark measures the
//! pipeline with a realistic store latency instead of moto_server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::billing::{
    AttemptResult, AuditEntry, ChargeAttempt, PeriodId, Registration, Resolution, Subscription,
    SubscriptionId,
};
use shared::ledger::memory::InMemoryLedger;
use shared::ledger::{
    Activation, Cursor, DuePage, Guard, Ledger, LedgerError, RequestState, ReviewPage, Sent,
    StoredResponse, SubscriptionChange, UserItems,
};

/// [`InMemoryLedger`] with `latency` per operation. Clones share the store
/// and the count.
#[derive(Clone)]
pub struct SlowLedger {
    pub inner: Arc<InMemoryLedger>,
    pub latency: Duration,
    pub requests: Arc<AtomicU64>,
}

impl SlowLedger {
    pub fn new(latency: Duration) -> Self {
        Self {
            inner: Arc::new(InMemoryLedger::new()),
            latency,
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn call(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
impl Ledger for SlowLedger {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.put_registration(reg).await
    }

    async fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> Result<Option<Registration>, LedgerError> {
        self.call().await;
        self.inner.get_registration(merchant_uid).await
    }

    async fn activate(&self, activation: &Activation<'_>) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.activate(activation).await
    }

    async fn replace_key(
        &self,
        reg: &Registration,
        next: &Subscription,
        imp_uid: &str,
        audit: &AuditEntry,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.replace_key(reg, next, imp_uid, audit).await
    }

    async fn refuse_registration(
        &self,
        reg: &Registration,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.refuse_registration(reg, now).await
    }

    async fn user_items(&self, user_id: &str) -> Result<UserItems, LedgerError> {
        self.call().await;
        self.inner.user_items(user_id).await
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        self.call().await;
        self.inner.get_subscription(id).await
    }

    async fn change_subscription(
        &self,
        change: &SubscriptionChange<'_>,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.change_subscription(change).await
    }

    async fn history(
        &self,
        id: &SubscriptionId,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        self.call().await;
        self.inner.history(id, limit).await
    }

    async fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<DuePage, LedgerError> {
        self.call().await;
        self.inner.due_page(now, limit, cursor).await
    }

    async fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Result<Option<ChargeAttempt>, LedgerError> {
        self.call().await;
        self.inner.get_attempt(id, period, attempt).await
    }

    async fn list_attempts(&self, id: &SubscriptionId) -> Result<Vec<ChargeAttempt>, LedgerError> {
        self.call().await;
        self.inner.list_attempts(id).await
    }

    async fn claim_new(
        &self,
        attempt: &ChargeAttempt,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.claim_new(attempt, sub_version).await
    }

    async fn take_over(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
        token: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<ChargeAttempt, LedgerError> {
        self.call().await;
        self.inner
            .take_over(id, period, attempt, token, lease_until, now, sub_version)
            .await
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner
            .mark_sending(attempt, token, now, sub_version)
            .await
    }

    async fn mark_unknown(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        detail: &str,
        sent: Sent,
        now: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner
            .mark_unknown(attempt, token, detail, sent, now, due_at)
            .await
    }

    async fn settle(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        guard: Guard<'_>,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.settle(attempt, result, guard, next, now).await
    }

    async fn flag_review(
        &self,
        attempt: &ChargeAttempt,
        token: Option<&str>,
        reason: &str,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner
            .flag_review(attempt, token, reason, next, now)
            .await
    }

    async fn resolve(
        &self,
        attempt: &ChargeAttempt,
        result: &AttemptResult,
        resolution: &Resolution,
        next: &Subscription,
        audit: &AuditEntry,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner
            .resolve(attempt, result, resolution, next, audit)
            .await
    }

    async fn review_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<ReviewPage, LedgerError> {
        self.call().await;
        self.inner.review_page(limit, cursor).await
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, LedgerError> {
        self.call().await;
        self.inner
            .record_refund(attempt, refunded, now, audit)
            .await
    }

    async fn begin_request(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestState, LedgerError> {
        self.call().await;
        self.inner.begin_request(key, fingerprint, now).await
    }

    async fn finish_request(
        &self,
        key: &str,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.finish_request(key, response, now).await
    }

    async fn abandon_request(&self, key: &str) -> Result<(), LedgerError> {
        self.call().await;
        self.inner.abandon_request(key).await
    }
}
