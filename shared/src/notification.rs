//! Flow 3: i'mport webhooks. The body is unsigned, so it is only a hint:
//! the payment is fetched from the gateway and that record is what counts.

use serde::Deserialize;
use tracing::{info, warn};

use crate::billing::{
    AttemptState, ChargeAttempt, Fact, Lookup, MerchantUid, PaymentRecord, PeriodId, SubscriptionId,
};
use crate::charging::RunError;
use crate::charging::settle::{Settled, flag, settle_from_lookup};
use crate::engine::{Budget, Engine};
use crate::gateway::PaymentGateway;
use crate::ledger::{Guard, Ledger, LedgerError};
use crate::portone::webhook::Notice;
use crate::registration::{self, CallbackOutcome, FailureReason, Swept};

/// The largest body accepted (the documented body is three short fields).
pub const MAX_BODY: usize = 8 * 1024;

/// A webhook body: `imp_uid`, `merchant_uid`, `status` (and
/// `cancellation_id` on cancellations), JSON or form-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Notification {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub status: String,
    #[serde(default)]
    pub cancellation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadNotification {
    #[error("empty body")]
    Empty,
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("unsupported content type (use application/json or application/x-www-form-urlencoded)")]
    ContentType,
    #[error("body is not valid UTF-8")]
    Encoding,
    #[error("body is malformed or misses imp_uid, merchant_uid or status")]
    Fields,
}

fn valid_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses a webhook body by its content type.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Notification, BadNotification> {
    if body.is_empty() {
        return Err(BadNotification::Empty);
    }
    if body.len() > MAX_BODY {
        return Err(BadNotification::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| BadNotification::Encoding)?;
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .ok_or(BadNotification::ContentType)?;
    let n: Notification = match mime.as_str() {
        "application/json" => serde_json::from_str(text).map_err(|_| BadNotification::Fields)?,
        "application/x-www-form-urlencoded" => {
            serde_urlencoded::from_str(text).map_err(|_| BadNotification::Fields)?
        }
        _ => return Err(BadNotification::ContentType),
    };
    if !valid_id(&n.imp_uid)
        || !valid_id(&n.merchant_uid)
        || n.status.is_empty()
        || n.status.len() > 16
    {
        return Err(BadNotification::Fields);
    }
    Ok(n)
}

/// What a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// An open attempt was settled from the gateway's record.
    Settled(Fact),
    /// A refund seen at the gateway was recorded.
    RefundRecorded { refunded: i64 },
    /// Flagged for a person (a payment on an attempt settled as not paid,
    /// or a record that is not our charge): charges stopped, metric counted.
    NeedsReview(String),
    /// A pending sign-up was completed from this notice.
    SignupCompleted,
    /// Already known: nothing changed.
    Duplicate,
    /// Not ours, forged, or nothing to do: acknowledged, no state.
    Ignored(&'static str),
}

/// The webhook could not be recorded; a re-send may help (answer 5xx).
#[derive(Debug, thiserror::Error)]
#[error("could not record the notification: {0}")]
pub struct RetryLater(pub String);

impl From<RunError> for RetryLater {
    fn from(e: RunError) -> Self {
        Self(e.to_string())
    }
}

impl From<LedgerError> for RetryLater {
    fn from(e: LedgerError) -> Self {
        Self(e.to_string())
    }
}

/// Handles one notification: re-fetches the payment, and records what it
/// proves. Only money settles an attempt here (a webhook never holds a
/// claim); anything else is left to the run that does.
#[tracing::instrument(skip(engine, n), fields(imp_uid = %n.imp_uid, merchant_uid = %n.merchant_uid, status = %n.status))]
pub async fn handle<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    n: &Notification,
) -> Result<Handled, RetryLater> {
    match MerchantUid::parse(&n.merchant_uid) {
        Some(MerchantUid::Charge {
            subscription,
            period,
            attempt,
        }) => charge_notice(engine, n, &subscription, &period, attempt).await,
        Some(MerchantUid::Issuance { .. }) => signup_notice(engine, n).await,
        None => {
            info!("notification for a merchant_uid that is not ours");
            Ok(Handled::Ignored("unknown merchant_uid"))
        }
    }
}

/// A verified PortOne V2 webhook (`shared::portone::webhook`): payment
/// notices go through [`handle`] (the payment is re-fetched by its
/// `paymentId`), `BillingKey.Issued` completes the sign-up it names, every
/// other type is acknowledged and ignored.
pub async fn handle_v2<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    notice: &Notice,
) -> Result<Handled, RetryLater> {
    match notice {
        Notice::Payment {
            payment_id,
            transaction_id,
            status,
            cancellation_id,
        } => {
            if !valid_id(payment_id) || !valid_id(transaction_id) {
                info!("V2 notice with ids that cannot be ours");
                return Ok(Handled::Ignored("unknown paymentId"));
            }
            let n = Notification {
                imp_uid: transaction_id.clone(),
                merchant_uid: payment_id.clone(),
                status: (*status).to_owned(),
                cancellation_id: cancellation_id.clone(),
            };
            handle(engine, &n).await
        }
        Notice::KeyIssued { billing_key } => {
            let swept =
                registration::complete_from_key(engine, billing_key, Budget::unlimited()).await;
            Ok(match swept {
                Swept::Completed(CallbackOutcome::Failed(FailureReason::NeedsReview)) => {
                    Handled::NeedsReview("sign-up waits for a person".into())
                }
                Swept::Completed(_) => Handled::SignupCompleted,
                Swept::Done => Handled::Duplicate,
                Swept::NothingYet | Swept::Refused(_) => {
                    Handled::Ignored("no sign-up to complete from this key")
                }
                Swept::Unclear => return Err(RetryLater("sign-up could not be checked".into())),
            })
        }
        Notice::Ignored(kind) => {
            info!(%kind, "V2 webhook type not acted on");
            Ok(Handled::Ignored("event type not acted on"))
        }
    }
}

/// A sign-up's issuance payment: complete the sign-up if the browser has
/// not (the checks are the callback's; a completed one is left alone).
async fn signup_notice<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    n: &Notification,
) -> Result<Handled, RetryLater> {
    let swept = registration::complete_from_gateway(
        engine,
        &n.merchant_uid,
        Some(&n.imp_uid),
        Budget::unlimited(),
    )
    .await;
    Ok(match swept {
        Swept::Completed(CallbackOutcome::Failed(FailureReason::NeedsReview)) => {
            Handled::NeedsReview("issuance payment of an unexpected amount".into())
        }
        Swept::Completed(_) => Handled::SignupCompleted,
        Swept::Done => Handled::Duplicate,
        Swept::NothingYet | Swept::Refused(_) => {
            Handled::Ignored("no sign-up to complete from this payment")
        }
        Swept::Unclear => return Err(RetryLater("sign-up could not be checked".into())),
    })
}

/// A charge's payment: settle its open attempt with money, flag money that
/// came after the attempt was settled as not paid, record refunds.
async fn charge_notice<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    n: &Notification,
    subscription: &SubscriptionId,
    period: &PeriodId,
    attempt: u32,
) -> Result<Handled, RetryLater> {
    // Our own record first: a notice for an attempt we never claimed (or
    // under a uid shaped like ours but not the one stored) costs no call to
    // the gateway (defect X1: unsigned V1 webhooks are anyone's to send).
    let Some(record) = engine
        .ledger
        .get_attempt(subscription, period, attempt)
        .await?
    else {
        warn!("notification for an attempt we never claimed");
        return Ok(Handled::Ignored("no such attempt"));
    };
    if record.merchant_uid != n.merchant_uid {
        // Shaped like ours, but not the uid we sent: a forgery, never money for the period.
        warn!("merchant_uid is not the one stored for this attempt");
        return Ok(Handled::Ignored("not the merchant_uid of this attempt"));
    }
    let payment = match engine
        .gateway
        .notified_payment(&n.imp_uid, &n.merchant_uid)
        .await
    {
        Ok(p) => p,
        // The gateway's lookups lag behind a fresh payment: while our
        // attempt is open, a re-send later may find it.
        Err(e) if e.is_not_found() && record.state.is_open() => {
            return Err(RetryLater(
                "the payment is not visible at the gateway yet".into(),
            ));
        }
        Err(e) if e.is_not_found() => {
            warn!("notification names an imp_uid the gateway does not know");
            return Ok(Handled::Ignored("unknown imp_uid"));
        }
        Err(e) => return Err(RetryLater(format!("gateway lookup failed: {e}"))),
    };
    if payment.merchant_uid != n.merchant_uid {
        warn!(payment_merchant_uid = %payment.merchant_uid, "notification imp_uid and merchant_uid do not match");
        return Ok(Handled::Ignored("imp_uid belongs to another merchant_uid"));
    }
    let Some(sub) = engine.ledger.get_subscription(subscription).await? else {
        warn!("attempt without subscription");
        return Ok(Handled::Ignored("no such subscription"));
    };
    if record.state.is_open() {
        let found = Lookup::Found(payment.clone());
        match settle_from_lookup(engine, &sub, &record, &found, Guard::PaidFact).await? {
            Settled::Recorded(fact) => {
                info!(?fact, "open attempt settled from webhook");
                if fact.is_paid() && payment.cancelled_amount > 0 {
                    // Paid, then refunded before we heard of it: record both.
                    engine
                        .ledger
                        .record_refund(&record, payment.cancelled_amount, engine.now(), None)
                        .await?;
                }
                return Ok(Handled::Settled(fact));
            }
            Settled::Review(reason) => return Ok(Handled::NeedsReview(reason)),
            // Declined, or nothing to settle on: the claim's holder (or the next run) settles it.
            Settled::ClaimLost
            | Settled::NothingThere
            | Settled::Unclear(_)
            | Settled::Waiting(_) => {
                return Ok(Handled::Ignored("left to the run that holds the attempt"));
            }
            Settled::Unauthorized(e) => return Err(RetryLater(e.to_string())),
            // Settled meanwhile by the run: a refund in this notice is still recorded below.
            Settled::AlreadySettled => {}
        }
    } else if record.state.is_unpaid_settlement()
        // Money kept: a payment refunded in full (what resolving a late
        // payment as not paid asks for first) is no late payment.
        && payment.kept() > 0
        && matches!(
            // The key the attempt charged (the card may have been replaced since).
            Fact::from_record(&payment, &record, &engine.settings.uid_key, engine.now()),
            Ok(Some(Fact::Paid { .. }))
        )
    {
        return late_payment(engine, &record, &payment).await;
    }
    refund_seen(engine, subscription, period, attempt, record, &payment).await
}

/// Money for an attempt recorded as not paid: the period may now be paid
/// twice. A person decides; nothing is charged meanwhile.
async fn late_payment<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    record: &ChargeAttempt,
    payment: &PaymentRecord,
) -> Result<Handled, RetryLater> {
    let reason = format!(
        "payment {} arrived after the attempt was settled as {}; refund it or accept it",
        payment.imp_uid,
        record.state.as_str()
    );
    flag(engine, record, None, &reason).await?;
    Ok(Handled::NeedsReview(reason))
}

/// Records a refund the gateway shows for a paid attempt (only ever raising it).
async fn refund_seen<L: Ledger, G: PaymentGateway>(
    engine: &Engine<L, G>,
    subscription: &SubscriptionId,
    period: &PeriodId,
    attempt: u32,
    known: ChargeAttempt,
    payment: &PaymentRecord,
) -> Result<Handled, RetryLater> {
    let record = engine
        .ledger
        .get_attempt(subscription, period, attempt)
        .await?
        .unwrap_or(known);
    if record.state == AttemptState::Paid
        && payment.cancelled_amount > record.refunded
        && engine
            .ledger
            .record_refund(&record, payment.cancelled_amount, engine.now(), None)
            .await?
    {
        info!(refunded = payment.cancelled_amount, "refund recorded");
        return Ok(Handled::RefundRecorded {
            refunded: payment.cancelled_amount,
        });
    }
    Ok(Handled::Duplicate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_form_bodies_parse_alike() {
        let json = parse(
            Some("application/json; charset=utf-8"),
            br#"{"imp_uid":"imps_1","merchant_uid":"sabc","status":"paid"}"#,
        )
        .unwrap();
        let form = parse(
            Some("application/x-www-form-urlencoded"),
            b"imp_uid=imps_1&merchant_uid=sabc&status=paid",
        )
        .unwrap();
        assert_eq!(json, form);
        let cancel = parse(Some("application/json"), br#"{"imp_uid":"imps_1","merchant_uid":"sabc","status":"cancelled","cancellation_id":"c1"}"#).unwrap();
        assert_eq!(cancel.cancellation_id.as_deref(), Some("c1"));
    }

    #[test]
    fn bad_bodies_get_a_clear_reason() {
        assert_eq!(
            parse(Some("application/json"), b""),
            Err(BadNotification::Empty)
        );
        assert_eq!(
            parse(Some("text/plain"), b"x"),
            Err(BadNotification::ContentType)
        );
        assert_eq!(parse(None, b"x"), Err(BadNotification::ContentType));
        assert_eq!(
            parse(Some("application/json"), &[0xff, 0xfe]),
            Err(BadNotification::Encoding)
        );
        assert_eq!(
            parse(Some("application/json"), br#"{"imp_uid":"i"}"#),
            Err(BadNotification::Fields)
        );
        assert_eq!(
            parse(
                Some("application/json"),
                br#"{"imp_uid":"../x","merchant_uid":"m","status":"paid"}"#
            ),
            Err(BadNotification::Fields)
        );
        assert_eq!(
            parse(Some("application/json"), &vec![b' '; MAX_BODY + 1]),
            Err(BadNotification::TooLarge)
        );
    }
}
