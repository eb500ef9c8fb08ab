//! A ledger seen through a [`Watcher`]: every operation is shown to it
//! before it reaches the ledger and after it took effect, with its
//! arguments. The deterministic simulation puts latency, crash points and
//! its invariants there; the benchmarks a modelled round trip and a count.
//! One wrapper, so no tool writes out the port's 44 methods again.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    Activation, Cursor, DuePage, Guard, IdPage, KeyReplacement, Ledger, LedgerError, PlanPage,
    RefundIntent, RequestState, ReviewDecision, ReviewFlag, ReviewPage, Settlement, StoredResponse,
    SubscriptionChange, TakeOver, UnknownOutcome, UserItems,
};
use super::{Redeemer, Redemption};
use crate::billing::coupons::{Coupon, CouponId};
use crate::billing::plans::{PlanId, PlanRecord};
use crate::billing::rollouts::Rollout;
use crate::billing::{
    AuditEntry, ChargeAttempt, PeriodId, Registration, Subscription, SubscriptionId,
};

/// One ledger operation and the arguments a watcher may look at.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    PutRegistration(&'a Registration),
    GetRegistration(&'a str),
    Activate(&'a Activation<'a>),
    ReplaceKey(&'a KeyReplacement<'a>),
    RefuseRegistration(&'a Registration),
    UserItems(&'a str),
    GetSubscription(&'a SubscriptionId),
    ChangeSubscription(&'a SubscriptionChange<'a>),
    History(&'a SubscriptionId),
    DuePage,
    PendingConsentPage,
    GetAttempt(&'a SubscriptionId, &'a PeriodId, u32),
    ListAttempts(&'a SubscriptionId),
    ClaimNew {
        attempt: &'a ChargeAttempt,
        next: &'a Subscription,
    },
    TakeOver(&'a TakeOver<'a>),
    MarkSending {
        attempt: &'a ChargeAttempt,
        token: &'a str,
    },
    MarkUnknown(&'a UnknownOutcome<'a>),
    Settle(&'a Settlement<'a>),
    FlagReview(&'a ReviewFlag<'a>),
    Resolve(&'a ReviewDecision<'a>),
    CountReview,
    ReviewPage,
    RecordRefund(&'a ChargeAttempt),
    GetRefund(&'a ChargeAttempt, &'a str),
    BeginRefund(&'a ChargeAttempt, &'a RefundIntent),
    FinishRefund(&'a ChargeAttempt, &'a RefundIntent),
    FlagRefund(&'a ChargeAttempt, &'a str),
    BeginRequest(&'a str),
    FinishRequest(&'a str),
    AbandonRequest(&'a str),
    PutPlan(&'a PlanRecord),
    GetPlan(&'a PlanId, Option<u32>),
    PlansPage,
    DismissRefund(&'a ChargeAttempt, &'a str),
    PutPlanRollout(&'a PlanRecord),
    GetRollout(&'a PlanId),
    OpenRollouts,
    SaveRollout(&'a Rollout),
    PlanMembersPage(&'a PlanId),
    SaveReceipt(&'a ChargeAttempt, &'a crate::billing::CashReceipt),
    ReceiptPage,
    PutCoupon(&'a Coupon),
    GetCoupon(&'a CouponId),
    Redeem(&'a Redemption<'a>),
}

fn attempt_key(a: &ChargeAttempt) -> String {
    format!("{}/{}/{}", a.subscription_id, a.period, a.attempt)
}

impl Op<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Self::PutRegistration(_) => "put_registration",
            Self::GetRegistration(_) => "get_registration",
            Self::Activate(_) => "activate",
            Self::ReplaceKey(_) => "replace_key",
            Self::RefuseRegistration(_) => "refuse_registration",
            Self::UserItems(_) => "user_items",
            Self::GetSubscription(_) => "get_subscription",
            Self::ChangeSubscription(_) => "change_subscription",
            Self::History(_) => "history",
            Self::DuePage => "due_page",
            Self::PendingConsentPage => "pending_consent_page",
            Self::GetAttempt(..) => "get_attempt",
            Self::ListAttempts(_) => "list_attempts",
            Self::ClaimNew { .. } => "claim_new",
            Self::TakeOver(_) => "take_over",
            Self::MarkSending { .. } => "mark_sending",
            Self::MarkUnknown(_) => "mark_unknown",
            Self::Settle(_) => "settle",
            Self::FlagReview(_) => "flag_review",
            Self::Resolve(_) => "resolve",
            Self::CountReview => "count_review",
            Self::ReviewPage => "review_page",
            Self::RecordRefund(_) => "record_refund",
            Self::GetRefund(..) => "get_refund",
            Self::BeginRefund(..) => "begin_refund",
            Self::FinishRefund(..) => "finish_refund",
            Self::FlagRefund(..) => "flag_refund",
            Self::BeginRequest(_) => "begin_request",
            Self::FinishRequest(_) => "finish_request",
            Self::AbandonRequest(_) => "abandon_request",
            Self::PutPlan(_) => "put_plan",
            Self::GetPlan(..) => "get_plan",
            Self::PlansPage => "plans_page",
            Self::DismissRefund(..) => "dismiss_refund",
            Self::PutPlanRollout(_) => "put_plan_rollout",
            Self::GetRollout(_) => "get_rollout",
            Self::OpenRollouts => "open_rollouts",
            Self::SaveRollout(_) => "save_rollout",
            Self::PlanMembersPage(_) => "plan_members_page",
            Self::SaveReceipt(..) => "save_receipt",
            Self::ReceiptPage => "receipt_page",
            Self::PutCoupon(_) => "put_coupon",
            Self::GetCoupon(_) => "get_coupon",
            Self::Redeem(_) => "redeem",
        }
    }

    /// What it is about, for a trace (ids only: no key, no personal data).
    pub fn key(&self) -> String {
        match self {
            Self::PutRegistration(r) | Self::RefuseRegistration(r) => r.merchant_uid.clone(),
            Self::GetRegistration(k)
            | Self::UserItems(k)
            | Self::BeginRequest(k)
            | Self::FinishRequest(k)
            | Self::AbandonRequest(k) => (*k).to_owned(),
            Self::Activate(a) => format!("{} {}", a.reg.merchant_uid, a.sub.status.as_str()),
            Self::ReplaceKey(r) => format!("{} v{}", r.next.id, r.next.version),
            Self::GetSubscription(id) | Self::History(id) | Self::ListAttempts(id) => {
                id.to_string()
            }
            Self::ChangeSubscription(c) => {
                format!(
                    "{} v{} {}",
                    c.next.id,
                    c.next.version,
                    c.next.status.as_str()
                )
            }
            Self::DuePage
            | Self::PendingConsentPage
            | Self::CountReview
            | Self::ReviewPage
            | Self::PlansPage
            | Self::ReceiptPage
            | Self::OpenRollouts => String::new(),
            Self::SaveReceipt(a, r) => {
                format!("{} rev {} {}", attempt_key(a), r.rev, r.state.as_str())
            }
            Self::PutPlan(p) | Self::PutPlanRollout(p) => format!("{} v{}", p.id, p.version),
            Self::GetRollout(id) | Self::PlanMembersPage(id) => id.to_string(),
            Self::SaveRollout(r) => format!("{} v{} rev {}", r.plan_id, r.to_version, r.rev),
            Self::GetPlan(id, version) => match version {
                Some(v) => format!("{id} v{v}"),
                None => id.to_string(),
            },
            Self::GetAttempt(id, period, n) => format!("{id}/{period}/{n}"),
            Self::TakeOver(t) => format!("{}/{}/{}", t.id, t.period, t.attempt),
            Self::ClaimNew { attempt, .. }
            | Self::MarkSending { attempt, .. }
            | Self::RecordRefund(attempt) => attempt_key(attempt),
            Self::FlagReview(f) => attempt_key(f.attempt),
            Self::Resolve(d) => attempt_key(d.attempt),
            Self::MarkUnknown(u) => format!("{} {:?}", attempt_key(u.attempt), u.sent),
            Self::Settle(s) => format!(
                "{} {} by {}",
                attempt_key(s.attempt),
                s.result.state.as_str(),
                match s.guard {
                    Guard::Claim(_) => "claim",
                    Guard::PaidFact => "paid-fact",
                }
            ),
            Self::GetRefund(a, key) => format!("{} {key}", attempt_key(a)),
            Self::BeginRefund(a, i) => format!("{} {}", attempt_key(a), i.key),
            Self::FinishRefund(a, i) => {
                format!("{} {} {}", attempt_key(a), i.key, i.state.as_str())
            }
            Self::FlagRefund(a, key) | Self::DismissRefund(a, key) => {
                format!("{} {key}", attempt_key(a))
            }
            Self::PutCoupon(c) => c.id.to_string(),
            Self::GetCoupon(id) => id.to_string(),
            Self::Redeem(r) => match r.into {
                Redeemer::Registration(reg) => format!("{} by {}", r.coupon, reg.merchant_uid),
                Redeemer::Subscription(c) => {
                    format!("{} by {} v{}", r.coupon, c.next.id, c.next.version)
                }
            },
        }
    }
}

/// What sees every operation of an [`Observed`] ledger.
pub trait Watcher: Send + Sync {
    /// Before the operation reaches the ledger.
    fn before(&self, op: &Op<'_>) -> impl Future<Output = ()> + Send;
    /// Once it returned, with whether it succeeded.
    fn after(
        &self,
        op: &Op<'_>,
        outcome: Result<(), &LedgerError>,
    ) -> impl Future<Output = ()> + Send;
}

/// `inner` (shared: several handles may watch one ledger), every
/// operation shown to `watcher`.
#[derive(Debug)]
pub struct Observed<L, W> {
    pub inner: Arc<L>,
    pub watcher: W,
}

impl<L, W: Clone> Clone for Observed<L, W> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            watcher: self.watcher.clone(),
        }
    }
}

impl<L: Ledger, W: Watcher> Observed<L, W> {
    async fn around<T>(
        &self,
        op: Op<'_>,
        work: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        self.watcher.before(&op).await;
        let out = work.await;
        self.watcher.after(&op, out.as_ref().map(|_| ())).await;
        out
    }
}

impl<L: Ledger, W: Watcher> Ledger for Observed<L, W> {
    async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
        self.around(Op::PutRegistration(reg), self.inner.put_registration(reg))
            .await
    }

    async fn get_registration(&self, uid: &str) -> Result<Option<Registration>, LedgerError> {
        self.around(Op::GetRegistration(uid), self.inner.get_registration(uid))
            .await
    }

    async fn activate(&self, a: &Activation<'_>) -> Result<(), LedgerError> {
        self.around(Op::Activate(a), self.inner.activate(a)).await
    }

    async fn replace_key(&self, r: &KeyReplacement<'_>) -> Result<(), LedgerError> {
        self.around(Op::ReplaceKey(r), self.inner.replace_key(r))
            .await
    }

    async fn refuse_registration(
        &self,
        reg: &Registration,
        now: DateTime<Utc>,
        window_payment: Option<&ChargeAttempt>,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::RefuseRegistration(reg),
            self.inner.refuse_registration(reg, now, window_payment),
        )
        .await
    }

    async fn user_items(&self, user_id: &str) -> Result<UserItems, LedgerError> {
        self.around(Op::UserItems(user_id), self.inner.user_items(user_id))
            .await
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, LedgerError> {
        self.around(Op::GetSubscription(id), self.inner.get_subscription(id))
            .await
    }

    async fn change_subscription(&self, c: &SubscriptionChange<'_>) -> Result<(), LedgerError> {
        self.around(Op::ChangeSubscription(c), self.inner.change_subscription(c))
            .await
    }

    async fn pending_consent_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<IdPage, LedgerError> {
        self.around(
            Op::PendingConsentPage,
            self.inner.pending_consent_page(limit, cursor),
        )
        .await
    }

    async fn history(
        &self,
        id: &SubscriptionId,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        self.around(Op::History(id), self.inner.history(id, limit))
            .await
    }

    async fn due_page(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<DuePage, LedgerError> {
        self.around(Op::DuePage, self.inner.due_page(now, limit, cursor))
            .await
    }

    async fn get_attempt(
        &self,
        id: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> Result<Option<ChargeAttempt>, LedgerError> {
        self.around(
            Op::GetAttempt(id, period, attempt),
            self.inner.get_attempt(id, period, attempt),
        )
        .await
    }

    async fn list_attempts(&self, id: &SubscriptionId) -> Result<Vec<ChargeAttempt>, LedgerError> {
        self.around(Op::ListAttempts(id), self.inner.list_attempts(id))
            .await
    }

    async fn claim_new(
        &self,
        attempt: &ChargeAttempt,
        next: &Subscription,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::ClaimNew { attempt, next },
            self.inner.claim_new(attempt, next),
        )
        .await
    }

    async fn take_over(&self, take_over: &TakeOver<'_>) -> Result<ChargeAttempt, LedgerError> {
        self.around(Op::TakeOver(take_over), self.inner.take_over(take_over))
            .await
    }

    async fn mark_sending(
        &self,
        attempt: &ChargeAttempt,
        token: &str,
        now: DateTime<Utc>,
        sub_version: u64,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::MarkSending { attempt, token },
            self.inner.mark_sending(attempt, token, now, sub_version),
        )
        .await
    }

    async fn mark_unknown(&self, unknown: &UnknownOutcome<'_>) -> Result<(), LedgerError> {
        self.around(Op::MarkUnknown(unknown), self.inner.mark_unknown(unknown))
            .await
    }

    async fn settle(&self, settlement: &Settlement<'_>) -> Result<(), LedgerError> {
        self.around(Op::Settle(settlement), self.inner.settle(settlement))
            .await
    }

    async fn flag_review(&self, flag: &ReviewFlag<'_>) -> Result<(), LedgerError> {
        self.around(Op::FlagReview(flag), self.inner.flag_review(flag))
            .await
    }

    async fn resolve(&self, decision: &ReviewDecision<'_>) -> Result<(), LedgerError> {
        self.around(Op::Resolve(decision), self.inner.resolve(decision))
            .await
    }

    async fn count_review(&self) -> Result<u64, LedgerError> {
        self.around(Op::CountReview, self.inner.count_review())
            .await
    }

    async fn review_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<ReviewPage, LedgerError> {
        self.around(Op::ReviewPage, self.inner.review_page(limit, cursor))
            .await
    }

    async fn record_refund(
        &self,
        attempt: &ChargeAttempt,
        refunded: i64,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, LedgerError> {
        self.around(
            Op::RecordRefund(attempt),
            self.inner.record_refund(attempt, refunded, now, audit),
        )
        .await
    }

    async fn get_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
    ) -> Result<Option<RefundIntent>, LedgerError> {
        self.around(
            Op::GetRefund(attempt, key),
            self.inner.get_refund(attempt, key),
        )
        .await
    }

    async fn begin_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
    ) -> Result<RefundIntent, LedgerError> {
        self.around(
            Op::BeginRefund(attempt, intent),
            self.inner.begin_refund(attempt, intent),
        )
        .await
    }

    async fn finish_refund(
        &self,
        attempt: &ChargeAttempt,
        intent: &RefundIntent,
        audit: Option<&AuditEntry>,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::FinishRefund(attempt, intent),
            self.inner.finish_refund(attempt, intent, audit),
        )
        .await
    }

    async fn flag_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::FlagRefund(attempt, key),
            self.inner.flag_refund(attempt, key, reason, now),
        )
        .await
    }

    async fn dismiss_refund(
        &self,
        attempt: &ChargeAttempt,
        key: &str,
        audit: &AuditEntry,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::DismissRefund(attempt, key),
            self.inner.dismiss_refund(attempt, key, audit),
        )
        .await
    }

    async fn save_receipt(
        &self,
        attempt: &ChargeAttempt,
        next: &crate::billing::CashReceipt,
        refunded: Option<i64>,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::SaveReceipt(attempt, next),
            self.inner.save_receipt(attempt, next, refunded),
        )
        .await
    }

    async fn receipt_page(
        &self,
        queue: crate::ledger::ReceiptQueue,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<crate::ledger::ReceiptPage, LedgerError> {
        self.around(
            Op::ReceiptPage,
            self.inner.receipt_page(queue, limit, cursor),
        )
        .await
    }

    async fn begin_request(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestState, LedgerError> {
        self.around(
            Op::BeginRequest(key),
            self.inner.begin_request(key, fingerprint, now),
        )
        .await
    }

    async fn finish_request(
        &self,
        key: &str,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::FinishRequest(key),
            self.inner.finish_request(key, response, now),
        )
        .await
    }

    async fn abandon_request(&self, key: &str) -> Result<(), LedgerError> {
        self.around(Op::AbandonRequest(key), self.inner.abandon_request(key))
            .await
    }

    async fn put_plan(&self, plan: &PlanRecord) -> Result<(), LedgerError> {
        self.around(Op::PutPlan(plan), self.inner.put_plan(plan))
            .await
    }

    async fn get_plan(
        &self,
        id: &PlanId,
        version: Option<u32>,
    ) -> Result<Option<PlanRecord>, LedgerError> {
        self.around(Op::GetPlan(id, version), self.inner.get_plan(id, version))
            .await
    }

    async fn plans_page(
        &self,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<PlanPage, LedgerError> {
        self.around(Op::PlansPage, self.inner.plans_page(limit, cursor))
            .await
    }

    async fn put_plan_rollout(
        &self,
        plan: &PlanRecord,
        rollout: &Rollout,
    ) -> Result<(), LedgerError> {
        self.around(
            Op::PutPlanRollout(plan),
            self.inner.put_plan_rollout(plan, rollout),
        )
        .await
    }

    async fn get_rollout(&self, plan: &PlanId) -> Result<Option<Rollout>, LedgerError> {
        self.around(Op::GetRollout(plan), self.inner.get_rollout(plan))
            .await
    }

    async fn open_rollouts(&self) -> Result<Vec<Rollout>, LedgerError> {
        self.around(Op::OpenRollouts, self.inner.open_rollouts())
            .await
    }

    async fn save_rollout(&self, next: &Rollout) -> Result<(), LedgerError> {
        self.around(Op::SaveRollout(next), self.inner.save_rollout(next))
            .await
    }

    async fn plan_members_page(
        &self,
        plan: &PlanId,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<IdPage, LedgerError> {
        self.around(
            Op::PlanMembersPage(plan),
            self.inner.plan_members_page(plan, limit, cursor),
        )
        .await
    }

    async fn put_coupon(&self, coupon: &Coupon) -> Result<(), LedgerError> {
        self.around(Op::PutCoupon(coupon), self.inner.put_coupon(coupon))
            .await
    }

    async fn get_coupon(&self, id: &CouponId) -> Result<Option<Coupon>, LedgerError> {
        self.around(Op::GetCoupon(id), self.inner.get_coupon(id))
            .await
    }

    async fn redeem(&self, redemption: &Redemption<'_>) -> Result<(), LedgerError> {
        self.around(Op::Redeem(redemption), self.inner.redeem(redemption))
            .await
    }
}
