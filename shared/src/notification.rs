//! Flow 3: i'mport webhooks. The body is unsigned, so it is only a hint:
//! the payment is fetched from i'mport and that record is what counts.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::app::App;
use crate::billing::MerchantUid;
use crate::charging::{self, Fact, FatalError};
use crate::store::AttemptState;

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
    /// An open attempt was settled from i'mport's record.
    Settled(Fact),
    /// A refund seen at i'mport was recorded.
    RefundRecorded { refunded: i64 },
    /// Already known: nothing changed.
    Duplicate,
    /// Not ours, forged, or nothing to do: acknowledged, no state.
    Ignored(&'static str),
}

/// The webhook could not be recorded; a re-send may help (answer 5xx).
#[derive(Debug, thiserror::Error)]
#[error("could not record the notification: {0}")]
pub struct RetryLater(pub String);

#[tracing::instrument(skip(app, n), fields(imp_uid = %n.imp_uid, merchant_uid = %n.merchant_uid, status = %n.status))]
pub async fn handle(
    app: &App,
    n: &Notification,
    now: DateTime<Utc>,
) -> Result<Handled, RetryLater> {
    let Some(MerchantUid::Charge {
        subscription,
        period,
        attempt,
    }) = MerchantUid::parse(&n.merchant_uid)
    else {
        return Ok(match MerchantUid::parse(&n.merchant_uid) {
            Some(MerchantUid::Issuance { .. }) => {
                Handled::Ignored("issuance is handled by the callback")
            }
            _ => {
                info!("notification for a merchant_uid that is not ours");
                Handled::Ignored("unknown merchant_uid")
            }
        });
    };
    let payment = match app.iamport.payment(&n.imp_uid).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => {
            warn!("notification names an imp_uid i'mport does not know");
            return Ok(Handled::Ignored("unknown imp_uid"));
        }
        Err(e) => return Err(RetryLater(format!("i'mport lookup failed: {e}"))),
    };
    if payment.merchant_uid != n.merchant_uid {
        warn!(payment_merchant_uid = %payment.merchant_uid, "notification imp_uid and merchant_uid do not match");
        return Ok(Handled::Ignored("imp_uid belongs to another merchant_uid"));
    }
    let store_err = |e: crate::store::StoreError| RetryLater(e.to_string());
    let Some(record) = app
        .store
        .get_attempt(&subscription, &period, attempt)
        .await
        .map_err(store_err)?
    else {
        warn!("i'mport has a payment for an attempt we never claimed");
        return Ok(Handled::Ignored("no such attempt"));
    };

    let Some(sub) = app
        .store
        .get_subscription(&subscription)
        .await
        .map_err(store_err)?
    else {
        warn!("attempt without subscription");
        return Ok(Handled::Ignored("no such subscription"));
    };
    let fact = match Fact::from_record(&payment, &record, &sub.customer_uid, now) {
        Ok(fact) => fact,
        Err(mismatch) => {
            // Someone paid with our merchant_uid, but not this charge: never money for the period.
            error!(%mismatch, "notification for a payment that is not our charge; needs review");
            return Ok(Handled::Ignored("payment does not match the charge"));
        }
    };
    if record.state.is_open() {
        let Some(fact) = fact else {
            return Ok(Handled::Ignored("payment neither paid nor failed"));
        };
        match charging::apply_fact(app, &record, &fact, None).await {
            Ok(true) => {
                info!(?fact, "open attempt settled from webhook");
                if matches!(fact, Fact::Paid { .. }) && payment.cancel_amount > 0 {
                    // Paid, then refunded before we heard of it: record both.
                    app.store
                        .record_refund(&record, payment.cancel_amount, now)
                        .await
                        .map_err(store_err)?;
                }
                return Ok(Handled::Settled(fact));
            }
            // Settled meanwhile by the run: a refund in this notice is still recorded below.
            Ok(false) => {}
            Err(FatalError::Store(e)) => return Err(RetryLater(e.to_string())),
            Err(e) => return Err(RetryLater(e.to_string())),
        }
    } else if matches!(record.state, AttemptState::Failed | AttemptState::Rejected)
        && matches!(fact, Some(Fact::Paid { .. }))
    {
        // i'mport shows money for an attempt we recorded as not paid: the
        // period may now be paid twice. Never silent.
        error!(
            state = record.state.as_str(),
            "late payment for a settled attempt; needs review and possibly a refund"
        );
        return Ok(Handled::Ignored(
            "late payment for a settled attempt; needs review",
        ));
    }
    let record = app
        .store
        .get_attempt(&subscription, &period, attempt)
        .await
        .map_err(store_err)?
        .unwrap_or(record);
    if record.state == AttemptState::Paid && payment.cancel_amount > record.refunded {
        let changed = app
            .store
            .record_refund(&record, payment.cancel_amount, now)
            .await
            .map_err(store_err)?;
        if changed {
            info!(refunded = payment.cancel_amount, "refund recorded");
            return Ok(Handled::RefundRecorded {
                refunded: payment.cancel_amount,
            });
        }
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
