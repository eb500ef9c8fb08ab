//! The ledger port of one invocation: the shared in-memory ledger, with
//! DynamoDB's latency, a step count, crash points, and the observations the
//! invariants need after every write.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use shared::billing::{
    AttemptResult, AuditEntry, ChargeAttempt, PeriodId, Registration, Resolution, Subscription,
    SubscriptionId,
};
use shared::ledger::{
    Activation, Cursor, DuePage, Guard, Ledger, LedgerError, RequestState, ReviewPage, Sent,
    StoredResponse, SubscriptionChange, UserItems,
};

use super::{Side, World};

/// The ledger port of one invocation: the shared in-memory ledger, with
/// DynamoDB's latency, a step count, the invariants and crash points.
#[derive(Clone)]
pub(crate) struct SimLedger {
    world: Arc<World>,
    inv: u32,
}

impl SimLedger {
    pub(crate) fn new(world: Arc<World>, inv: u32) -> Self {
        Self { world, inv }
    }

    async fn op<T: std::fmt::Debug>(
        &self,
        name: &str,
        key: String,
        f: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        let w = &self.world;
        w.gate(self.inv, Side::Before).await;
        w.ledger_pause(self.inv).await;
        let out = f.await;
        w.step();
        w.record(format!("{} L {name} {key} -> {}", self.inv, short(&out)));
        if out.is_ok() {
            w.observe();
        }
        w.gate(self.inv, Side::After).await;
        w.ledger_pause(self.inv).await;
        out
    }
}

fn short<T: std::fmt::Debug>(r: &Result<T, LedgerError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(LedgerError::Conflict(_)) => "conflict".into(),
        Err(e) => format!("{e}"),
    }
}

fn attempt_key(a: &ChargeAttempt) -> String {
    format!("{}/{}/{}", a.subscription_id, a.period, a.attempt)
}

impl Ledger for SimLedger {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        self.op(
            "put_registration",
            reg.merchant_uid.clone(),
            self.world.ledger.put_registration(reg),
        )
        .await
    }

    async fn get_registration(
        &self,
        merchant_uid: &str,
    ) -> Result<Option<Registration>, LedgerError> {
        self.op(
            "get_registration",
            merchant_uid.to_owned(),
            self.world.ledger.get_registration(merchant_uid),
        )
        .await
    }

    async fn activate(&self, activation: &Activation<'_>) -> Result<(), LedgerError> {
        self.op(
            "activate",
            format!(
                "{} {}",
                activation.reg.merchant_uid,
                activation.sub.status.as_str()
            ),
            self.world.ledger.activate(activation),
        )
        .await
    }

    async fn replace_key(
        &self,
        reg: &Registration,
        next: &Subscription,
        imp_uid: &str,
        audit: &AuditEntry,
    ) -> Result<(), LedgerError> {
        self.op(
            "replace_key",
            format!("{} v{}", next.id, next.version),
            self.world.ledger.replace_key(reg, next, imp_uid, audit),
        )
        .await
    }

    async fn refuse_registration(
        &self,
        reg: &Registration,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.op(
            "refuse_registration",
            reg.merchant_uid.clone(),
            self.world.ledger.refuse_registration(reg, now),
        )
        .await
    }

    async fn user_items(&self, user_id: &str) -> Result<UserItems, LedgerError> {
        self.op(
            "user_items",
            user_id.to_owned(),
            self.world.ledger.user_items(user_id),
        )
        .await
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        self.op(
            "get_subscription",
            id.to_string(),
            self.world.ledger.get_subscription(id),
        )
        .await
    }

    async fn change_subscription(
        &self,
        change: &SubscriptionChange<'_>,
    ) -> Result<(), LedgerError> {
        self.op(
            "change_subscription",
            format!(
                "{} v{} {}",
                change.next.id,
                change.next.version,
                change.next.status.as_str()
            ),
            self.world.ledger.change_subscription(change),
        )
        .await
    }

    async fn history(
        &self,
        id: &SubscriptionId,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        self.op(
            "history",
            id.to_string(),
            self.world.ledger.history(id, limit),
        )
        .await
    }

    async fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<DuePage, LedgerError> {
        self.op(
            "due_page",
            String::new(),
            self.world.ledger.due_page(now, limit, cursor),
        )
        .await
    }

    async fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Result<Option<ChargeAttempt>, LedgerError> {
        self.op(
            "get_attempt",
            format!("{id}/{period}/{attempt}"),
            self.world.ledger.get_attempt(id, period, attempt),
        )
        .await
    }

    async fn list_attempts(&self, id: &SubscriptionId) -> Result<Vec<ChargeAttempt>, LedgerError> {
        self.op(
            "list_attempts",
            id.to_string(),
            self.world.ledger.list_attempts(id),
        )
        .await
    }

    async fn claim_new(
        &self,
        attempt: &ChargeAttempt,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        let out = self
            .op("claim_new", attempt_key(attempt), async {
                let out = self.world.ledger.claim_new(attempt, sub_version).await;
                if out.is_ok() {
                    self.world.check_claim(&attempt.subscription_id, "claim");
                }
                out
            })
            .await;
        if out.is_ok()
            && let Some(t) = &attempt.claim_token
        {
            self.world.hold(self.inv, t);
        }
        out
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
        // The token is ours from the moment the write may have happened.
        self.world.hold(self.inv, token);
        // (Taking over an open attempt of a cancelled subscription is how
        // it gets settled; only a send would be wrong.)
        self.op(
            "take_over",
            format!("{id}/{period}/{attempt}"),
            self.world
                .ledger
                .take_over(id, period, attempt, token, lease_until, now, sub_version),
        )
        .await
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        self.op("mark_sending", attempt_key(attempt), async {
            let out = self
                .world
                .ledger
                .mark_sending(attempt, token, now, sub_version)
                .await;
            if out.is_ok() {
                self.world.check_claim(&attempt.subscription_id, "re-send");
            }
            out
        })
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
        self.op(
            "mark_unknown",
            format!("{} {sent:?}", attempt_key(attempt)),
            self.world
                .ledger
                .mark_unknown(attempt, token, detail, sent, now, due_at),
        )
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
        let guard_name = match guard {
            Guard::Claim(_) => "claim",
            Guard::PaidFact => "paid-fact",
        };
        let out = self
            .op(
                "settle",
                format!(
                    "{} {} by {guard_name}",
                    attempt_key(attempt),
                    result.state.as_str()
                ),
                self.world.ledger.settle(attempt, result, guard, next, now),
            )
            .await;
        if out.is_ok() && result.state.is_unpaid_settlement() {
            self.world.check_unpaid(&attempt.merchant_uid);
        }
        out
    }

    async fn flag_review(
        &self,
        attempt: &ChargeAttempt,
        token: Option<&str>,
        reason: &str,
        next: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.op(
            "flag_review",
            attempt_key(attempt),
            self.world
                .ledger
                .flag_review(attempt, token, reason, next, now),
        )
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
        self.op(
            "resolve",
            attempt_key(attempt),
            self.world
                .ledger
                .resolve(attempt, result, resolution, next, audit),
        )
        .await
    }

    async fn review_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<ReviewPage, LedgerError> {
        self.op(
            "review_page",
            String::new(),
            self.world.ledger.review_page(limit, cursor),
        )
        .await
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, LedgerError> {
        self.op(
            "record_refund",
            attempt_key(attempt),
            self.world
                .ledger
                .record_refund(attempt, refunded, now, audit),
        )
        .await
    }

    async fn begin_request(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestState, LedgerError> {
        self.op(
            "begin_request",
            key.to_owned(),
            self.world.ledger.begin_request(key, fingerprint, now),
        )
        .await
    }

    async fn finish_request(
        &self,
        key: &str,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.op(
            "finish_request",
            key.to_owned(),
            self.world.ledger.finish_request(key, response, now),
        )
        .await
    }

    async fn abandon_request(&self, key: &str) -> Result<(), LedgerError> {
        self.op(
            "abandon_request",
            key.to_owned(),
            self.world.ledger.abandon_request(key),
        )
        .await
    }
}
