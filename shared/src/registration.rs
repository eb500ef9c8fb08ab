//! Flow 1: billing-key registration. `prepare` is called by the merchant's
//! backend; `complete` handles the browser's return from the payment window
//! and believes nothing until i'mport confirms it.

use std::collections::HashMap;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::billing::{
    Anchor, AttemptState, Buyer, ChargeAttempt, Event, Fact, Issuance, KeyInfo, MerchantUid, Plan,
    Registration, RegistrationStatus, Subscription, SubscriptionStatus, issuance,
};
use crate::charging::{self, BillingRun, Outcome};
use crate::config::pg_provider_of;
use crate::engine::{Budget, Engine};
use crate::gateway::{BillingKey, PaymentGateway};
use crate::ledger::{Ledger, LedgerError};
use crate::secret::Pii;

/// What the merchant's backend sends to `POST /billing/prepare`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// The merchant's own user id.
    pub user_id: String,
    #[serde(default)]
    pub plan: Option<PlanInput>,
    #[serde(default)]
    pub buyer: Option<BuyerInput>,
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
}

/// The parameters for `IMP.request_pay`, returned to the merchant's backend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestPayParams {
    pub pg: String,
    pub pay_method: &'static str,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub name: String,
    /// Display only: issuing a billing key charges nothing.
    pub amount: i64,
    pub m_redirect_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_name: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_email: Option<Pii>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_tel: Option<Pii>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Prepared {
    pub subscription_id: String,
    pub request_pay: RequestPayParams,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("CALLBACK_URL is not configured")]
    NotConfigured,
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

/// Creates a pending registration with a server-generated `customer_uid`
/// and issuance `merchant_uid`, and returns the `IMP.request_pay` parameters.
#[tracing::instrument(skip(engine, request), fields(subscription_id))]
pub async fn prepare<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    request: PrepareRequest,
) -> Result<Prepared, PrepareError> {
    let now = engine.now();
    let settings = &engine.settings;
    let callback = settings
        .callback_url
        .as_ref()
        .ok_or(PrepareError::NotConfigured)?;
    check_len("user_id", &request.user_id, 128)?;
    let plan = match request.plan {
        Some(p) => {
            check_len("plan.name", &p.name, 40)?;
            if !(100..=10_000_000).contains(&p.amount) {
                return Err(PrepareError::Invalid(
                    "plan.amount must be a whole KRW amount from 100 to 10,000,000".into(),
                ));
            }
            Plan {
                amount: p.amount,
                name: p.name,
            }
        }
        None => settings.default_plan.clone(),
    };
    let buyer = request.buyer.unwrap_or_default();
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

    let subscription_id = engine.new_subscription_id();
    tracing::Span::current().record("subscription_id", subscription_id.as_str());
    let reg = Registration {
        merchant_uid: MerchantUid::issuance(&subscription_id),
        subscription_id: subscription_id.clone(),
        customer_uid: engine.new_customer_uid(),
        user_id: request.user_id,
        plan,
        pg: settings.pg.clone(),
        buyer: Buyer {
            name: buyer.name,
            email: buyer.email,
            tel: buyer.tel,
        },
        status: RegistrationStatus::Pending,
        created_at: now,
        expires_at: chrono::Duration::from_std(settings.registration_ttl)
            .ok()
            .map(|ttl| now + ttl),
        imp_uid: None,
        sweep_at: Some(now + SWEEP_AFTER),
    };
    engine.ledger.put_registration(&reg).await?;
    info!(merchant_uid = %reg.merchant_uid, "registration prepared");
    Ok(Prepared {
        subscription_id: subscription_id.to_string(),
        request_pay: RequestPayParams {
            pg: reg.pg,
            pay_method: "trans",
            merchant_uid: reg.merchant_uid,
            customer_uid: reg.customer_uid,
            name: reg.plan.name,
            amount: 0,
            m_redirect_url: callback.clone(),
            buyer_name: reg.buyer.name,
            buyer_email: reg.buyer.email,
            buyer_tel: reg.buyer.tel,
        },
    })
}

/// The query i'mport appends to `m_redirect_url`, parsed leniently:
/// `imp_success`, `success`, or neither; `error_code`/`error_msg` on failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackParams {
    pub imp_uid: Option<String>,
    pub merchant_uid: String,
    /// What the browser claims; never trusted, only logged.
    pub claimed_success: Option<bool>,
    pub error_code: Option<String>,
}

/// Why a callback was refused; the code goes into the failure redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Parameters missing or malformed.
    BadRequest,
    /// No registration for this `merchant_uid` (never prepared, or deleted
    /// after it expired).
    UnknownRegistration,
    /// The payment window reported a failure (user cancel, PG error) and
    /// i'mport agrees nothing was issued.
    PaymentFailed,
    /// The `imp_uid` belongs to another order or customer.
    PaymentMismatch,
    /// i'mport has no billing key for this customer, or one of another PG.
    KeyNotIssued,
    /// i'mport or our table could not be reached (in time); trying again
    /// later may work.
    Unavailable,
    /// The window took an amount that is neither 0 nor the plan's: the
    /// subscription waits for a person (refund or accept), nothing is charged.
    NeedsReview,
}

impl FailureReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownRegistration => "unknown_registration",
            Self::PaymentFailed => "payment_failed",
            Self::PaymentMismatch => "payment_mismatch",
            Self::KeyNotIssued => "key_not_issued",
            Self::Unavailable => "temporarily_unavailable",
            Self::NeedsReview => "needs_review",
        }
    }
}

/// The result of a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The subscription is active (now, or already by an earlier identical
    /// redirect). `first_charge` is what the sign-up charge did, if one ran.
    Active {
        subscription_id: String,
        first_charge: Option<FirstCharge>,
    },
    Failed(FailureReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstCharge {
    Paid,
    Declined,
    Pending,
}

impl FirstCharge {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Declined => "declined",
            Self::Pending => "pending",
        }
    }
}

const MAX_PARAM: usize = 64;

fn id_like(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_PARAM
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses the redirect query. Values must look like ids; anything else is
/// refused before any lookup.
pub fn parse_callback(query: &HashMap<String, String>) -> Result<CallbackParams, FailureReason> {
    let get = |k: &str| query.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let merchant_uid = get("merchant_uid").ok_or(FailureReason::BadRequest)?;
    if !id_like(merchant_uid) {
        return Err(FailureReason::BadRequest);
    }
    let imp_uid = match get("imp_uid") {
        Some(v) if id_like(v) => Some(v.to_owned()),
        Some(_) => return Err(FailureReason::BadRequest),
        None => None,
    };
    let claimed_success = get("imp_success")
        .or_else(|| get("success"))
        .map(|v| v.eq_ignore_ascii_case("true"));
    let error_code = get("error_code").map(|v| {
        v.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(32)
            .collect()
    });
    Ok(CallbackParams {
        imp_uid,
        merchant_uid: merchant_uid.to_owned(),
        claimed_success,
        error_code,
    })
}

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> CallbackOutcome {
    warn!(error = %e, "{what} unavailable during callback");
    CallbackOutcome::Failed(FailureReason::Unavailable)
}

/// What the callback keeps back from its budget for the writes and the
/// redirect after its last gateway call.
const CALLBACK_RESERVE: Duration = Duration::from_secs(2);

/// How long after `prepare` the charge run looks a still-pending
/// registration up at the gateway (the browser should be back long before).
pub const SWEEP_AFTER: chrono::Duration = chrono::Duration::minutes(30);

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
    let Some(imp_uid) = params.imp_uid.as_deref() else {
        info!(error_code = ?params.error_code, "payment window reported no payment");
        return CallbackOutcome::Failed(FailureReason::PaymentFailed);
    };
    if reg.status == RegistrationStatus::Completed {
        return revisited(engine, &reg, imp_uid).await;
    }
    if !params.claimed_success.unwrap_or(true) {
        info!("the browser reports a failure; checking at the gateway all the same");
    }
    activate_verified(engine, &reg, imp_uid, budget).await
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
    match activate_verified(engine, &reg, &imp_uid, budget).await {
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

/// Activates a pending registration once its issuance checks out
/// ([`verify_issuance`]): the subscription, the completed registration and
/// (when the window took money) the first period's attempt, in one
/// transaction; then the first charge, if configured and there is time.
async fn activate_verified<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    budget: Budget,
) -> CallbackOutcome {
    let now = engine.now();
    let (paid_amount, key, issued) = match verify_issuance(engine, reg, imp_uid, budget).await {
        Ok(verified) => verified,
        Err(refused) => return refused,
    };
    let (sub, first_attempt) = activation(reg, &key, &issued, imp_uid, paid_amount, now);
    match engine
        .ledger
        .activate(reg, &sub, imp_uid, first_attempt.as_ref())
        .await
    {
        Ok(()) => {
            info!(subscription_id = %sub.id, status = sub.status.as_str(), "subscription activated")
        }
        Err(LedgerError::Conflict(_)) => {
            // Another tab (or the webhook, or the sweep) won the race: answer as it did.
            return match engine.ledger.get_registration(&reg.merchant_uid).await {
                Ok(Some(r)) => revisited(engine, &r, imp_uid).await,
                Ok(None) => CallbackOutcome::Failed(FailureReason::PaymentMismatch),
                Err(e) => unavailable("store", &e),
            };
        }
        Err(e) => return unavailable("store", &e),
    }
    let first_charge = match issued {
        Issuance::Review { reason } => {
            error!(subscription_id = %sub.id, %reason, "needs review: issuance payment of an unexpected amount");
            return CallbackOutcome::Failed(FailureReason::NeedsReview);
        }
        Issuance::FirstPeriodPaid { .. } => Some(FirstCharge::Paid),
        Issuance::KeyOnly if engine.settings.charge_on_signup => {
            Some(first_charge(engine, &sub, now, budget).await)
        }
        Issuance::KeyOnly | Issuance::Failed => None,
    };
    CallbackOutcome::Active {
        subscription_id: sub.id.to_string(),
        first_charge,
    }
}

/// The checks every completion path shares: the issuance payment `imp_uid`
/// is this registration's (merchant_uid and customer_uid, not failed), and
/// the billing key exists with the configured PG. Returns the amount the
/// window took, the key, and what that amount means.
async fn verify_issuance<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
    budget: Budget,
) -> Result<(i64, BillingKey, Issuance), CallbackOutcome> {
    let failed = |reason| Err(CallbackOutcome::Failed(reason));
    let payment = match budget
        .run(CALLBACK_RESERVE, engine.gateway.payment(imp_uid))
        .await
    {
        None => return Err(unavailable("i'mport (out of time)", &"budget spent")),
        Some(Ok(p)) => p,
        Some(Err(e)) if e.is_not_found() => return failed(FailureReason::PaymentMismatch),
        Some(Err(e)) => return Err(unavailable("i'mport", &e)),
    };
    if payment.merchant_uid != reg.merchant_uid
        || payment.customer_uid.as_deref() != Some(reg.customer_uid.as_str())
    {
        warn!(payment_merchant_uid = %payment.merchant_uid, "imp_uid belongs to another order or customer");
        return failed(FailureReason::PaymentMismatch);
    }
    let issued = issuance(&payment, reg.plan.amount, engine.now());
    if issued == Issuance::Failed {
        info!(
            status = payment.status.as_str(),
            "issuance did not succeed at i'mport"
        );
        return failed(FailureReason::PaymentFailed);
    }
    let key = match budget
        .run(
            CALLBACK_RESERVE,
            engine.gateway.billing_key(&reg.customer_uid),
        )
        .await
    {
        None => return Err(unavailable("i'mport (out of time)", &"budget spent")),
        Some(Ok(k)) => k,
        Some(Err(e)) if e.is_not_found() => return failed(FailureReason::KeyNotIssued),
        Some(Err(e)) => return Err(unavailable("i'mport", &e)),
    };
    if key.customer_uid != reg.customer_uid || key.pg_provider != pg_provider_of(&reg.pg) {
        warn!(pg_provider = %key.pg_provider, expected = pg_provider_of(&reg.pg), "billing key from another PG");
        return failed(FailureReason::KeyNotIssued);
    }
    Ok((payment.amount, key, issued))
}

/// The same redirect again (refresh, back button, second tab) answers the
/// same: active, or waiting for a person.
async fn revisited<L: Ledger, G>(
    engine: &Engine<L, G>,
    reg: &Registration,
    imp_uid: &str,
) -> CallbackOutcome {
    if reg.status == RegistrationStatus::Completed && reg.imp_uid.as_deref() == Some(imp_uid) {
        match engine.ledger.get_subscription(&reg.subscription_id).await {
            Ok(Some(sub)) if sub.status == SubscriptionStatus::NeedsReview => {
                CallbackOutcome::Failed(FailureReason::NeedsReview)
            }
            Ok(_) => CallbackOutcome::Active {
                subscription_id: reg.subscription_id.to_string(),
                first_charge: None,
            },
            Err(e) => unavailable("store", &e),
        }
    } else if reg.status == RegistrationStatus::Pending {
        // The transaction failed for another reason (e.g. its first attempt exists).
        CallbackOutcome::Failed(FailureReason::Unavailable)
    } else {
        warn!("completed registration revisited with another imp_uid");
        CallbackOutcome::Failed(FailureReason::PaymentMismatch)
    }
}

/// The new subscription and, when the window took money, its first
/// period's attempt (paid, or waiting for a person).
fn activation(
    reg: &Registration,
    key: &BillingKey,
    issued: &Issuance,
    imp_uid: &str,
    paid_amount: i64,
    now: DateTime<Utc>,
) -> (Subscription, Option<ChargeAttempt>) {
    let anchor = Anchor::from_instant(now);
    let mut sub = Subscription {
        id: reg.subscription_id.clone(),
        user_id: reg.user_id.clone(),
        customer_uid: reg.customer_uid.clone(),
        pg: reg.pg.clone(),
        plan: reg.plan.clone(),
        buyer: reg.buyer.clone(),
        status: SubscriptionStatus::Pending
            .apply(Event::KeyVerified)
            .unwrap_or(SubscriptionStatus::Active),
        anchor,
        period_index: 0,
        attempt: 1,
        next_charge_at: now,
        paid_through: None,
        key: KeyInfo {
            pg_provider: key.pg_provider.clone(),
            pg_id: key.pg_id.clone(),
            card_name: key.card_name.clone(),
            card_number: key.card_number.clone(),
            inserted_at: DateTime::from_timestamp(key.inserted, 0)
                .filter(|_| key.inserted > 0)
                .unwrap_or(now),
        },
        version: 1,
        created_at: now,
        updated_at: now,
        cancel_at_period_end: false,
    };
    let attempt = |state, amount, paid_at, reason: Option<&str>| ChargeAttempt {
        subscription_id: reg.subscription_id.clone(),
        period: anchor.period_id(0),
        attempt: 1,
        merchant_uid: reg.merchant_uid.clone(),
        amount,
        state,
        claim_token: None,
        lease_until: None,
        sent_at: Some(now),
        imp_uid: Some(imp_uid.to_owned()),
        paid_at,
        fail_reason: reason.map(str::to_owned),
        refunded: 0,
        created_at: now,
        updated_at: now,
    };
    let first = match issued {
        Issuance::FirstPeriodPaid { paid_at, .. } => {
            sub.paid_through = Some(anchor.period_id(0));
            sub.period_index = 1;
            sub.next_charge_at = anchor.period_start(1);
            Some(attempt(
                AttemptState::Paid,
                reg.plan.amount,
                Some(*paid_at),
                None,
            ))
        }
        Issuance::Review { reason } => {
            if let Ok(status) = sub.status.apply(Event::FlagReview) {
                sub.status = status;
            }
            Some(attempt(
                AttemptState::NeedsReview,
                paid_amount,
                None,
                Some(reason),
            ))
        }
        Issuance::KeyOnly | Issuance::Failed => None,
    };
    (sub, first)
}

/// The sign-up's first charge, if there is time for it; otherwise the next
/// scheduled run charges the (active, due) subscription.
async fn first_charge<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    sub: &Subscription,
    now: DateTime<Utc>,
    budget: Budget,
) -> FirstCharge {
    if !budget.allows(engine.settings.gateway_timeout, CALLBACK_RESERVE) {
        info!("no time left for the first charge; the scheduled run charges it");
        return FirstCharge::Pending;
    }
    let run = BillingRun {
        billing_time: now,
        run_id: format!("signup-{}", sub.id),
    };
    match budget
        .run(
            CALLBACK_RESERVE,
            charging::charge_one(engine, &sub.id, &run),
        )
        .await
    {
        Some(Ok(Outcome::Charged { .. }))
        | Some(Ok(Outcome::Reconciled {
            fact: Fact::Paid { .. },
        })) => FirstCharge::Paid,
        Some(Ok(Outcome::Declined { .. } | Outcome::Rejected { .. })) => FirstCharge::Declined,
        Some(Ok(other)) => {
            info!(?other, "first charge left to the scheduled run");
            FirstCharge::Pending
        }
        Some(Err(e)) => {
            // The subscription is active and due: the next scheduled run charges it.
            warn!(error = %e, "first charge failed; the scheduled run will retry");
            FirstCharge::Pending
        }
        None => {
            warn!("first charge cut short by the deadline; the scheduled run settles it");
            FirstCharge::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_sdk_generation_parses() {
        let legacy = parse_callback(&q(&[
            ("imp_uid", "imp_123"),
            ("merchant_uid", "rabc"),
            ("imp_success", "true"),
        ]))
        .unwrap();
        assert_eq!(legacy.claimed_success, Some(true));
        let success = parse_callback(&q(&[
            ("imp_uid", "imp_123"),
            ("merchant_uid", "rabc"),
            ("success", "false"),
        ]))
        .unwrap();
        assert_eq!(success.claimed_success, Some(false));
        let new_sdk =
            parse_callback(&q(&[("imp_uid", "imp_123"), ("merchant_uid", "rabc")])).unwrap();
        assert_eq!(new_sdk.claimed_success, None);
        assert_eq!(new_sdk.imp_uid.as_deref(), Some("imp_123"));
        let failed = parse_callback(&q(&[
            ("merchant_uid", "rabc"),
            ("error_code", "F0005"),
            ("error_msg", "사용자가 결제를 취소 하였습니다"),
        ]))
        .unwrap();
        assert_eq!(failed.imp_uid, None);
        assert_eq!(failed.error_code.as_deref(), Some("F0005"));
    }

    #[test]
    fn garbage_is_refused_before_any_lookup() {
        for bad in [
            q(&[]),
            q(&[("imp_uid", "imp_1")]),
            q(&[("merchant_uid", "../../etc")]),
            q(&[("merchant_uid", "r1"), ("imp_uid", "imp 1")]),
            q(&[("merchant_uid", &"r".repeat(65))]),
            q(&[
                ("merchant_uid", "r1"),
                ("imp_uid", "imp_1/../../users/getToken"),
            ]),
        ] {
            assert_eq!(
                parse_callback(&bad),
                Err(FailureReason::BadRequest),
                "{bad:?}"
            );
        }
    }
}
