//! The port written out once for both ledgers: every operation delegates
//! to the function of the same name in the adapter's module for its
//! aggregate.

/// The port implemented by delegation: every operation is a function in the
/// adapter's module for its aggregate (`registrations`, `subscriptions`,
/// `attempts`, `review`, `refunds`, `receipts`, `requests`, `plans`, `coupons`), taking the
/// adapter first.
/// Both ledgers expand it, so they keep the same rooms and the trait is
/// written out once; the names it uses resolve where it is expanded.
macro_rules! ledger_by_aggregate {
    ($adapter:ty) => {
        impl Ledger for $adapter {
            async fn put_registration(&self, reg: &Registration) -> Result<(), LedgerError> {
                registrations::put_registration(self, reg).await
            }

            async fn get_registration(
                &self,
                merchant_uid: &str,
            ) -> Result<Option<Registration>, LedgerError> {
                registrations::get_registration(self, merchant_uid).await
            }

            async fn activate(&self, a: &Activation<'_>) -> Result<(), LedgerError> {
                registrations::activate(self, a).await
            }

            async fn replace_key(
                &self,
                replacement: &KeyReplacement<'_>,
            ) -> Result<(), LedgerError> {
                registrations::replace_key(self, replacement).await
            }

            async fn refuse_registration(
                &self,
                reg: &Registration,
                now: DateTime<Utc>,
                window_payment: Option<&ChargeAttempt>,
            ) -> Result<(), LedgerError> {
                registrations::refuse_registration(self, reg, now, window_payment).await
            }

            async fn user_items(&self, user_id: &str) -> Result<UserItems, LedgerError> {
                registrations::user_items(self, user_id).await
            }

            async fn get_subscription(
                &self,
                id: &SubscriptionId,
            ) -> Result<Option<Subscription>, LedgerError> {
                subscriptions::get_subscription(self, id).await
            }

            async fn change_subscription(
                &self,
                change: &SubscriptionChange<'_>,
            ) -> Result<(), LedgerError> {
                subscriptions::change_subscription(self, change).await
            }

            async fn history(
                &self,
                id: &SubscriptionId,
                limit: usize,
            ) -> Result<Vec<AuditEntry>, LedgerError> {
                subscriptions::history(self, id, limit).await
            }

            async fn pending_consent_page(
                &self,
                limit: usize,
                cursor: Option<&Cursor>,
            ) -> Result<IdPage, LedgerError> {
                subscriptions::pending_consent_page(self, limit, cursor).await
            }

            async fn due_page(
                &self,
                now: DateTime<Utc>,
                limit: usize,
                cursor: Option<&Cursor>,
            ) -> Result<DuePage, LedgerError> {
                subscriptions::due_page(self, now, limit, cursor).await
            }

            async fn get_attempt(
                &self,
                id: &SubscriptionId,
                period: &PeriodId,
                attempt: u32,
            ) -> Result<Option<ChargeAttempt>, LedgerError> {
                attempts::get_attempt(self, id, period, attempt).await
            }

            async fn list_attempts(
                &self,
                id: &SubscriptionId,
            ) -> Result<Vec<ChargeAttempt>, LedgerError> {
                attempts::list_attempts(self, id).await
            }

            async fn claim_new(
                &self,
                attempt: &ChargeAttempt,
                next: &Subscription,
            ) -> Result<(), LedgerError> {
                attempts::claim_new(self, attempt, next).await
            }

            async fn take_over(
                &self,
                take_over: &TakeOver<'_>,
            ) -> Result<ChargeAttempt, LedgerError> {
                attempts::take_over(self, take_over).await
            }

            async fn mark_sending(
                &self,
                attempt: &ChargeAttempt,
                token: &str,
                now: DateTime<Utc>,
                sub_version: u64,
            ) -> Result<(), LedgerError> {
                attempts::mark_sending(self, attempt, token, now, sub_version).await
            }

            async fn mark_unknown(&self, unknown: &UnknownOutcome<'_>) -> Result<(), LedgerError> {
                attempts::mark_unknown(self, unknown).await
            }

            async fn settle(&self, settlement: &Settlement<'_>) -> Result<(), LedgerError> {
                attempts::settle(self, settlement).await
            }

            async fn flag_review(&self, flag: &ReviewFlag<'_>) -> Result<(), LedgerError> {
                review::flag_review(self, flag).await
            }

            async fn resolve(&self, decision: &ReviewDecision<'_>) -> Result<(), LedgerError> {
                review::resolve(self, decision).await
            }

            async fn count_review(&self) -> Result<u64, LedgerError> {
                review::count_review(self).await
            }

            async fn review_page(
                &self,
                limit: usize,
                cursor: Option<&Cursor>,
            ) -> Result<ReviewPage, LedgerError> {
                review::review_page(self, limit, cursor).await
            }

            async fn record_refund(
                &self,
                attempt: &ChargeAttempt,
                refunded: i64,
                now: DateTime<Utc>,
                audit: Option<&AuditEntry>,
            ) -> Result<bool, LedgerError> {
                refunds::record_refund(self, attempt, refunded, now, audit).await
            }

            async fn get_refund(
                &self,
                attempt: &ChargeAttempt,
                key: &str,
            ) -> Result<Option<RefundIntent>, LedgerError> {
                refunds::get_refund(self, attempt, key).await
            }

            async fn begin_refund(
                &self,
                attempt: &ChargeAttempt,
                intent: &RefundIntent,
            ) -> Result<RefundIntent, LedgerError> {
                refunds::begin_refund(self, attempt, intent).await
            }

            async fn finish_refund(
                &self,
                attempt: &ChargeAttempt,
                intent: &RefundIntent,
                audit: Option<&AuditEntry>,
            ) -> Result<(), LedgerError> {
                refunds::finish_refund(self, attempt, intent, audit).await
            }

            async fn flag_refund(
                &self,
                attempt: &ChargeAttempt,
                key: &str,
                reason: &str,
                now: DateTime<Utc>,
            ) -> Result<(), LedgerError> {
                refunds::flag_refund(self, attempt, key, reason, now).await
            }

            async fn dismiss_refund(
                &self,
                attempt: &ChargeAttempt,
                key: &str,
                audit: &AuditEntry,
            ) -> Result<(), LedgerError> {
                refunds::dismiss_refund(self, attempt, key, audit).await
            }

            async fn save_receipt(
                &self,
                attempt: &ChargeAttempt,
                next: &crate::billing::CashReceipt,
                refunded: Option<i64>,
            ) -> Result<(), LedgerError> {
                receipts::save_receipt(self, attempt, next, refunded).await
            }

            async fn receipt_page(
                &self,
                queue: crate::ledger::ReceiptQueue,
                limit: usize,
                cursor: Option<&Cursor>,
            ) -> Result<crate::ledger::ReceiptPage, LedgerError> {
                receipts::receipt_page(self, queue, limit, cursor).await
            }

            async fn begin_request(
                &self,
                key: &str,
                fingerprint: &str,
                now: DateTime<Utc>,
            ) -> Result<RequestState, LedgerError> {
                requests::begin_request(self, key, fingerprint, now).await
            }

            async fn finish_request(
                &self,
                key: &str,
                response: &StoredResponse,
                _now: DateTime<Utc>,
            ) -> Result<(), LedgerError> {
                requests::finish_request(self, key, response, _now).await
            }

            async fn abandon_request(&self, key: &str) -> Result<(), LedgerError> {
                requests::abandon_request(self, key).await
            }

            async fn put_plan(
                &self,
                plan: &$crate::billing::plans::PlanRecord,
            ) -> Result<(), LedgerError> {
                plans::put_plan(self, plan).await
            }

            async fn get_plan(
                &self,
                id: &$crate::billing::plans::PlanId,
                version: Option<u32>,
            ) -> Result<Option<$crate::billing::plans::PlanRecord>, LedgerError> {
                plans::get_plan(self, id, version).await
            }

            async fn plans_page(
                &self,
                limit: usize,
                cursor: Option<&Cursor>,
            ) -> Result<$crate::ledger::PlanPage, LedgerError> {
                plans::plans_page(self, limit, cursor).await
            }

            async fn put_plan_rollout(
                &self,
                plan: &$crate::billing::plans::PlanRecord,
                rollout: &$crate::billing::rollouts::Rollout,
            ) -> Result<(), LedgerError> {
                plans::put_plan_rollout(self, plan, rollout).await
            }

            async fn get_rollout(
                &self,
                plan: &$crate::billing::plans::PlanId,
            ) -> Result<Option<$crate::billing::rollouts::Rollout>, LedgerError> {
                plans::get_rollout(self, plan).await
            }

            async fn open_rollouts(
                &self,
            ) -> Result<Vec<$crate::billing::rollouts::Rollout>, LedgerError> {
                plans::open_rollouts(self).await
            }

            async fn save_rollout(
                &self,
                next: &$crate::billing::rollouts::Rollout,
            ) -> Result<(), LedgerError> {
                plans::save_rollout(self, next).await
            }

            async fn plan_members_page(
                &self,
                plan: &$crate::billing::plans::PlanId,
                limit: usize,
                cursor: Option<&Cursor>,
            ) -> Result<IdPage, LedgerError> {
                subscriptions::plan_members_page(self, plan, limit, cursor).await
            }

            async fn put_coupon(
                &self,
                coupon: &$crate::billing::coupons::Coupon,
            ) -> Result<(), LedgerError> {
                coupons::put_coupon(self, coupon).await
            }

            async fn get_coupon(
                &self,
                id: &$crate::billing::coupons::CouponId,
            ) -> Result<Option<$crate::billing::coupons::Coupon>, LedgerError> {
                coupons::get_coupon(self, id).await
            }

            async fn redeem(
                &self,
                redemption: &$crate::ledger::Redemption<'_>,
            ) -> Result<(), LedgerError> {
                coupons::redeem(self, redemption).await
            }
        }
    };
}
pub(crate) use ledger_by_aggregate;
