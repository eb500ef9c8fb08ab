//! Flow 1: billing-key registration. `prepare` is called by the merchant's
//! backend (a new subscription) and by the management API (a new card for
//! an existing one); a registration is completed from i'mport's records by
//! the browser's redirect (`complete`), i'mport's webhook, or the charge
//! run's sweep (`complete_from_gateway`), all with the same checks
//! (`activate`). Nothing is believed until i'mport confirms it.

mod activate;
mod callback;
mod replace;

#[cfg(test)]
mod tests;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use activate::Proof;
pub use callback::{CallbackOutcome, CallbackParams, FailureReason, FirstCharge, parse_callback};

use crate::billing::trials::{Consent, ConversionConsent, TrialTerms};
use crate::billing::{
    Buyer, Interval, MerchantUid, Plan, PlanId, PlanRef, Registration, RegistrationStatus,
    Subscription, SubscriptionId,
};
use crate::engine::{Budget, Engine};
use crate::gateway::window::{IssueBillingKeyParams, RequestPayParams};
use crate::gateway::{PaymentGateway, PaymentWindow, WindowProof};
use crate::ledger::{Ledger, LedgerError};
use crate::secret::{Pii, Secret};

/// What the merchant's backend sends to `POST /billing/prepare`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// The merchant's own user id.
    pub user_id: String,
    /// A plan of the catalogue (`POST /plans`): its current version.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Deprecated: a plan given by amount and name (use `plan_id`).
    #[serde(default)]
    pub plan: Option<PlanInput>,
    #[serde(default)]
    pub buyer: Option<BuyerInput>,
    /// The customer's consent to the trial's conversion, taken with the
    /// sign-up (a plan whose `conversion_consent` is `signup`).
    #[serde(default)]
    pub consent: Option<EvidenceInput>,
    /// A coupon of the catalogue (`POST /coupons`) to redeem with the
    /// sign-up; its terms and end are shown in the window (decision 78).
    #[serde(default)]
    pub coupon_id: Option<String>,
}

/// The merchant's evidence of a customer's consent: where it was given
/// (`web`, `app`, `kakao`, …: 1–40 of letters, digits, `-`, `_`), its
/// reference in the merchant's records (1–128 characters), and when
/// (now, if not given).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceInput {
    pub channel: String,
    pub reference: String,
    #[serde(default)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

impl EvidenceInput {
    /// The checked channel and reference, or what is wrong with them.
    pub fn checked(&self) -> Result<(String, String), String> {
        let channel_ok = !self.channel.is_empty()
            && self.channel.len() <= 40
            && self
                .channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !channel_ok {
            return Err(
                "evidence channel must have 1 to 40 of letters, digits, '-' and '_'".into(),
            );
        }
        let len = self.reference.chars().count();
        if len == 0 || len > 128 || self.reference.chars().any(char::is_control) {
            return Err(
                "evidence reference must have 1 to 128 characters and no control characters".into(),
            );
        }
        Ok((self.channel.clone(), self.reference.clone()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub amount: i64,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerInput {
    pub name: Option<Pii>,
    pub email: Option<Pii>,
    pub tel: Option<Pii>,
    /// Who the customer's cash receipts go to (decision 74).
    pub cash_receipt: Option<CashReceiptInput>,
}

/// `buyer.cash_receipt`: `personal` (a mobile or cash-receipt card
/// number) or `corporate` (a business registration number).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CashReceiptInput {
    #[serde(rename = "type")]
    pub kind: String,
    pub identifier: Pii,
}

/// What `prepare` answers: the parameters for the browser SDK of the
/// configured API (exactly one of the two is present).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Prepared {
    pub subscription_id: String,
    /// V1: `IMP.request_pay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_pay: Option<RequestPayParams>,
    /// V2: `PortOne.requestIssueBillingKey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_issue_billing_key: Option<IssueBillingKeyParams>,
}

impl Prepared {
    /// The registration's issuance `merchant_uid` (V2: the `issueId`).
    pub fn merchant_uid(&self) -> &str {
        match (&self.request_pay, &self.request_issue_billing_key) {
            (Some(p), _) => &p.merchant_uid,
            (None, Some(k)) => &k.issue_id,
            (None, None) => "",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("CALLBACK_URL is not configured")]
    NotConfigured,
    /// One live subscription per user and plan (unless configured otherwise).
    #[error("the user already has subscription {subscription_id} to this plan")]
    AlreadySubscribed { subscription_id: String },
    #[error("no plan {0:?} in the catalogue")]
    UnknownPlan(String),
    #[error("no coupon {0:?}")]
    UnknownCoupon(String),
    /// Exhausted (409) or past its `redeem_by` (422).
    #[error(transparent)]
    Coupon(#[from] crate::billing::coupons::CouponError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), PrepareError> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return Err(PrepareError::Invalid(format!(
            "{field} must have 1 to {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(PrepareError::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// How long after `prepare` the charge run looks a still-pending
/// registration up at the gateway (the browser should be back long before).
pub const SWEEP_AFTER: chrono::Duration = chrono::Duration::minutes(30);

/// The browser SDK's parameters for `reg`, for the configured PG.
fn window<G: PaymentGateway>(gateway: &G, reg: &Registration, callback: &str) -> Prepared {
    let (request_pay, request_issue_billing_key) = match gateway.window(reg, callback) {
        PaymentWindow::RequestPay(p) => (Some(p), None),
        PaymentWindow::IssueBillingKey(k) => (None, Some(k)),
    };
    Prepared {
        subscription_id: reg.subscription_id.to_string(),
        request_pay,
        request_issue_billing_key,
    }
}

fn validated_plan(input: Option<PlanInput>, default: &Plan) -> Result<Plan, PrepareError> {
    let Some(p) = input else {
        return Ok(default.clone());
    };
    check_len("plan.name", &p.name, 40)?;
    if !(100..=10_000_000).contains(&p.amount) {
        return Err(PrepareError::Invalid(
            "plan.amount must be a whole KRW amount from 100 to 10,000,000".into(),
        ));
    }
    Ok(Plan {
        amount: p.amount,
        name: p.name,
        notice_days: crate::billing::notices::DEFAULT_NOTICE_DAYS,
        tax: crate::billing::TaxSetting::Taxable,
    })
}

fn validated_buyer(input: Option<BuyerInput>) -> Result<Buyer, PrepareError> {
    let buyer = input.unwrap_or_default();
    // i'mport's documented limits.
    if let Some(v) = &buyer.name {
        check_len("buyer.name", v.expose(), 16)?;
    }
    if let Some(v) = &buyer.email {
        check_len("buyer.email", v.expose(), 64)?;
        if !v.expose().contains('@') {
            return Err(PrepareError::Invalid(
                "buyer.email is not an e-mail address".into(),
            ));
        }
    }
    if let Some(v) = &buyer.tel {
        check_len("buyer.tel", v.expose(), 16)?;
    }
    Ok(Buyer {
        name: buyer.name,
        email: buyer.email,
        tel: buyer.tel,
        cash_receipt: match buyer.cash_receipt {
            None => None,
            Some(c) => Some(
                crate::billing::ReceiptHolder::from_input(&c.kind, c.identifier.expose())
                    .map_err(PrepareError::Invalid)?,
            ),
        },
    })
}

/// Creates a pending registration with a server-generated `customer_uid`
/// and issuance `merchant_uid`, and returns the `IMP.request_pay` parameters.
/// One live subscription per user and plan unless configured otherwise: a
/// user who has one gets `AlreadySubscribed`, and a second `prepare` while
/// one is pending returns the pending one.
#[tracing::instrument(skip(engine, request), fields(subscription_id))]
pub async fn prepare<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    request: PrepareRequest,
) -> Result<Prepared, PrepareError> {
    let now = engine.now();
    let settings = &engine.settings;
    let callback = settings
        .registration
        .callback_url
        .as_ref()
        .map(url::Url::as_str)
        .ok_or(PrepareError::NotConfigured)?;
    check_len("user_id", &request.user_id, 128)?;
    let (plan, plan_ref, trial, (interval, billing)) = match (request.plan_id, request.plan) {
        (Some(_), Some(_)) => {
            return Err(PrepareError::Invalid(
                "give plan_id or plan (deprecated), not both".into(),
            ));
        }
        (Some(id), None) => catalogue_plan(engine, &id).await?,
        (None, input) => (
            validated_plan(input, &settings.registration.default_plan)?,
            None,
            None,
            (Interval::Month, None),
        ),
    };
    let consent = signup_consent(trial.as_ref(), request.consent.as_ref(), now)?;
    let buyer = validated_buyer(request.buyer)?;
    let coupon = match &request.coupon_id {
        None => None,
        Some(id) => Some(redeemable_coupon(engine, id, now).await?),
    };
    if !settings.registration.allow_multiple_subscriptions
        && let Some(existing) = existing_sign_up(
            engine,
            &request.user_id,
            &plan,
            coupon.as_ref().map(|c| &c.id),
        )
        .await?
    {
        return match existing {
            Existing::Live(id) => Err(PrepareError::AlreadySubscribed {
                subscription_id: id.to_string(),
            }),
            Existing::Pending(reg) => {
                info!(merchant_uid = %reg.merchant_uid, "a sign-up for this plan is pending: returning it");
                Ok(window(&engine.gateway, &reg, callback))
            }
        };
    }
    let subscription_id = engine.new_subscription_id();
    tracing::Span::current().record("subscription_id", subscription_id.as_str());
    let reg = Registration {
        merchant_uid: MerchantUid::issuance(&subscription_id),
        subscription_id,
        customer_uid: engine.new_customer_uid(),
        user_id: request.user_id,
        plan,
        plan_ref,
        pg: settings.pg.clone(),
        buyer,
        status: RegistrationStatus::Pending,
        created_at: now,
        expires_at: chrono::Duration::from_std(settings.registration.ttl)
            .ok()
            .map(|ttl| now + ttl),
        imp_uid: None,
        sweep_at: Some(now + SWEEP_AFTER),
        replaces_key: false,
        trial,
        interval,
        billing,
        consent,
        coupon: coupon.as_ref().map(crate::billing::coupons::Coupon::terms),
    };
    match &coupon {
        None => engine.ledger.put_registration(&reg).await?,
        Some(c) => {
            let redemption = crate::ledger::Redemption {
                coupon: &c.id,
                now,
                into: crate::ledger::Redeemer::Registration(&reg),
            };
            if let Err(e) = engine.ledger.redeem(&redemption).await {
                // Redeemed meanwhile up to its limit, or past its date: say so.
                redeemable_coupon(engine, c.id.as_str(), now).await?;
                return Err(e.into());
            }
        }
    }
    info!(merchant_uid = %reg.merchant_uid, coupon = ?coupon.as_ref().map(|c| c.id.as_str()), "registration prepared");
    Ok(window(&engine.gateway, &reg, callback))
}

/// The coupon `id`, if it may be redeemed at `now`.
async fn redeemable_coupon<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::billing::coupons::Coupon, PrepareError> {
    let parsed = crate::billing::coupons::CouponId::parse(id)
        .ok_or_else(|| PrepareError::Invalid(format!("coupon_id {id:?} is not a coupon id")))?;
    let coupon = engine
        .ledger
        .get_coupon(&parsed)
        .await?
        .ok_or_else(|| PrepareError::UnknownCoupon(id.to_owned()))?;
    coupon.redeemable(now)?;
    Ok(coupon)
}

/// The consent to convert a trial that a sign-up carries: required for a
/// trial that converts on it (`conversion_consent: signup`), refused for
/// any other plan (an explicit trial takes it later, inside the window
/// before its end; a plan without a trial has nothing to consent to).
/// Its time is the sign-up's: from an hour before now to 5 minutes after.
fn signup_consent(
    trial: Option<&TrialTerms>,
    input: Option<&EvidenceInput>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Consent>, PrepareError> {
    let wants = trial.is_some_and(|t| t.consent == ConversionConsent::Signup);
    match (wants, input) {
        (false, None) => Ok(None),
        (true, None) => Err(PrepareError::Invalid(
            "this plan's trial converts on a consent taken with the sign-up: send consent {channel, reference}".into(),
        )),
        (false, Some(_)) => Err(PrepareError::Invalid(
            "consent is taken with the sign-up only for a plan whose trial converts on it (conversion_consent signup)".into(),
        )),
        (true, Some(e)) => {
            let (channel, reference) = e.checked().map_err(PrepareError::Invalid)?;
            let at = e.at.unwrap_or(now);
            if at < now - chrono::Duration::hours(1) || at > now + chrono::Duration::minutes(5) {
                return Err(PrepareError::Invalid(
                    "consent.at must be the sign-up's time (within the last hour)".into(),
                ));
            }
            Ok(Some(Consent {
                channel,
                reference,
                at,
                recorded_at: now,
            }))
        }
    }
}

/// The current version of catalogue plan `id`, its trial, and the
/// reference the registration keeps to it.
/// A catalogue plan's terms for a sign-up: what is charged, the version,
/// its trial, and its calendar (interval, billing day).
type Catalogued = (
    Plan,
    Option<PlanRef>,
    Option<TrialTerms>,
    (Interval, Option<crate::billing::BillingDay>),
);

async fn catalogue_plan<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
) -> Result<Catalogued, PrepareError> {
    let unknown = || PrepareError::UnknownPlan(id.to_owned());
    let id = PlanId::parse(id).ok_or_else(unknown)?;
    let record = engine
        .ledger
        .get_plan(&id, None)
        .await?
        .ok_or_else(unknown)?;
    Ok((
        record.plan(),
        Some(record.reference()),
        record.trial,
        (record.interval, record.billing),
    ))
}

enum Existing {
    Live(SubscriptionId),
    Pending(Box<Registration>),
}

/// The user's live subscription to `plan` (its lock), or a pending,
/// unexpired sign-up for it.
async fn existing_sign_up<L: Ledger, G>(
    engine: &Engine<L, G>,
    user_id: &str,
    plan: &Plan,
    coupon: Option<&crate::billing::coupons::CouponId>,
) -> Result<Option<Existing>, LedgerError> {
    let items = engine.ledger.user_items(user_id).await?;
    if let Some((_, id)) = items.locks.iter().find(|(name, _)| name == &plan.name) {
        return Ok(Some(Existing::Live(id.clone())));
    }
    let now = engine.now();
    for uid in items.registrations.iter().rev() {
        if let Some(reg) = engine.ledger.get_registration(uid).await?
            && reg.status == RegistrationStatus::Pending
            && !reg.replaces_key
            && reg.plan == *plan
            && reg.coupon.as_ref().map(|c| &c.id) == coupon
            && reg.expires_at.is_none_or(|t| t > now)
        {
            return Ok(Some(Existing::Pending(Box::new(reg))));
        }
    }
    Ok(None)
}

/// A registration for a new card of subscription `sub` (the management
/// API's `payment-method`): a new server-generated `customer_uid`; once the
/// window is finished and verified, the key is swapped and the old one
/// deleted at the gateway.
pub async fn prepare_key_replacement<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
) -> Result<Prepared, PrepareError> {
    let now = engine.now();
    let settings = &engine.settings;
    let callback = settings
        .registration
        .callback_url
        .as_ref()
        .map(url::Url::as_str)
        .ok_or(PrepareError::NotConfigured)?;
    let reg = Registration {
        merchant_uid: MerchantUid::key_replacement(&sub.id, &engine.new_nonce()),
        subscription_id: sub.id.clone(),
        customer_uid: engine.new_customer_uid(),
        user_id: sub.user_id.clone(),
        plan: sub.plan.clone(),
        plan_ref: sub.plan_ref.clone(),
        pg: settings.pg.clone(),
        buyer: sub.buyer.clone(),
        status: RegistrationStatus::Pending,
        created_at: now,
        expires_at: chrono::Duration::from_std(settings.registration.ttl)
            .ok()
            .map(|ttl| now + ttl),
        imp_uid: None,
        sweep_at: Some(now + SWEEP_AFTER),
        replaces_key: true,
        trial: None,
        interval: sub.anchor.interval,
        billing: None,
        consent: None,
        coupon: None,
    };
    engine.ledger.put_registration(&reg).await?;
    info!(merchant_uid = %reg.merchant_uid, subscription_id = %sub.id, "card replacement prepared");
    Ok(window(&engine.gateway, &reg, callback))
}

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> CallbackOutcome {
    warn!(error = %e, "{what} unavailable during callback");
    CallbackOutcome::Failed(FailureReason::Unavailable)
}

/// What the callback keeps back from its budget for the writes and the
/// redirect after its last gateway call.
const CALLBACK_RESERVE: Duration = Duration::from_secs(2);

/// Verifies a redirect at the gateway and, if everything matches, activates
/// the subscription (once), optionally charging the first period. Every
/// gateway call is cut to what is left of `budget`, so the browser always
/// gets its redirect before the function's deadline.
#[tracing::instrument(skip(engine, params, budget), fields(merchant_uid = %params.merchant_uid, imp_uid = ?params.imp_uid))]
pub async fn complete<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    params: &CallbackParams,
    budget: Budget,
) -> CallbackOutcome {
    let Some(MerchantUid::Issuance { .. }) = MerchantUid::parse(&params.merchant_uid) else {
        info!("callback for a merchant_uid that is not one of our registrations");
        return CallbackOutcome::Failed(FailureReason::UnknownRegistration);
    };
    let reg = match engine.ledger.get_registration(&params.merchant_uid).await {
        Ok(Some(reg)) => reg,
        Ok(None) => return CallbackOutcome::Failed(FailureReason::UnknownRegistration),
        Err(e) => return unavailable("store", &e),
    };
    let proof = match (&params.billing_key, params.imp_uid.as_deref()) {
        (Some(key), _) if engine.gateway.window_proof() == WindowProof::BillingKey => {
            Proof::Key(key)
        }
        (None, Some(imp_uid)) if engine.gateway.window_proof() == WindowProof::Payment => {
            Proof::Payment(imp_uid)
        }
        (None, None) => {
            info!(error_code = ?params.error_code, "payment window reported no payment");
            return CallbackOutcome::Failed(FailureReason::PaymentFailed);
        }
        _ => {
            warn!("redirect of the other payment API than the configured one");
            return CallbackOutcome::Failed(FailureReason::BadRequest);
        }
    };
    if reg.status != RegistrationStatus::Pending {
        return activate::revisited(engine, &reg, &proof.reference()).await;
    }
    if !params.claimed_success.unwrap_or(true) {
        info!("the browser reports a failure; checking at the gateway all the same");
    }
    activate::verified(engine, &reg, proof, budget).await
}

/// What a look at a pending registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// Activated now (the browser never came back, or a webhook came first).
    Completed(CallbackOutcome),
    /// Already completed, or no longer there: nothing to do.
    Done,
    /// The gateway has nothing under the issuance uid yet (the window was
    /// never finished): it expires on its own.
    NothingYet,
    /// The gateway's records refuse it (another payment, a failed window,
    /// no key): nothing activated.
    Refused(FailureReason),
    /// The gateway or the ledger could not be read; the next run tries again.
    Unclear,
}

/// Completes a pending registration from the gateway's records, without the
/// browser: the charge run's sweep (`imp_uid` unknown: looked up by the
/// issuance uid) and the webhook (`imp_uid` named by the notice) use it. The
/// checks are the callback's.
#[tracing::instrument(skip(engine, budget))]
pub async fn complete_from_gateway<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    merchant_uid: &str,
    imp_uid: Option<&str>,
    budget: Budget,
) -> Swept {
    let reg = match engine.ledger.get_registration(merchant_uid).await {
        Ok(Some(reg)) if reg.status == RegistrationStatus::Pending => reg,
        Ok(_) => return Swept::Done,
        Err(e) => {
            warn!(error = %e, "registration unreadable");
            return Swept::Unclear;
        }
    };
    let imp_uid = match imp_uid {
        Some(imp_uid) => imp_uid.to_owned(),
        None => match budget
            .run(CALLBACK_RESERVE, engine.gateway.find_payment(merchant_uid))
            .await
        {
            Some(Ok(p)) => p.imp_uid,
            Some(Err(e)) if e.is_not_found() => return Swept::NothingYet,
            Some(Err(e)) => {
                warn!(error = %e, "issuance lookup failed");
                return Swept::Unclear;
            }
            None => return Swept::Unclear,
        },
    };
    swept(activate::verified(engine, &reg, Proof::Payment(&imp_uid), budget).await)
}

/// PortOne V2's `BillingKey.Issued` notice: the key names its registration
/// (`issueId`); a pending one is completed with the callback's checks.
#[tracing::instrument(skip(engine, key, budget))]
pub async fn complete_from_key<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    key: &Secret,
    budget: Budget,
) -> Swept {
    let issue_id = match budget
        .run(CALLBACK_RESERVE, engine.gateway.billing_key(key.expose()))
        .await
    {
        Some(Ok(info)) => info.issue_id,
        Some(Err(e)) if e.is_not_found() => return Swept::Refused(FailureReason::KeyNotIssued),
        Some(Err(e)) => {
            warn!(error = %e, "billing key lookup failed");
            return Swept::Unclear;
        }
        None => return Swept::Unclear,
    };
    let Some(merchant_uid) =
        issue_id.filter(|id| matches!(MerchantUid::parse(id), Some(MerchantUid::Issuance { .. })))
    else {
        info!("a billing key that none of our registrations asked for");
        return Swept::Done;
    };
    let reg = match engine.ledger.get_registration(&merchant_uid).await {
        Ok(Some(reg)) if reg.status == RegistrationStatus::Pending => reg,
        Ok(_) => return Swept::Done,
        Err(e) => {
            warn!(error = %e, "registration unreadable");
            return Swept::Unclear;
        }
    };
    swept(activate::verified(engine, &reg, Proof::Key(key), budget).await)
}

fn swept(outcome: CallbackOutcome) -> Swept {
    match outcome {
        CallbackOutcome::Failed(FailureReason::Unavailable) => Swept::Unclear,
        CallbackOutcome::Failed(FailureReason::NeedsReview) => {
            Swept::Completed(CallbackOutcome::Failed(FailureReason::NeedsReview))
        }
        CallbackOutcome::Failed(reason) => Swept::Refused(reason),
        active => {
            info!("sign-up completed without the browser");
            Swept::Completed(active)
        }
    }
}
