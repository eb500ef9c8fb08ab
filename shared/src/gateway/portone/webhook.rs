//! PortOne V2 webhooks: Standard Webhooks signatures (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`; HMAC-SHA256 over
//! `{id}.{timestamp}.{raw body}` with the `whsec_` secret base64-decoded),
//! and the 2024-04-25 body `{type, timestamp, data}`.
//!
//! A verified webhook is still only a hint: the handler re-reads the
//! payment (or the billing key) from PortOne before it believes anything.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::gateway::notice::{BadNotice, InboundNotice, MAX_BODY, Notice, PaymentNotice, valid_id};
use crate::secret::Secret;

/// Signatures older or newer than this are refused (replays).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The signing secrets in use (two during a rotation), decoded.
#[derive(Clone, Default)]
pub struct WebhookSecrets(Vec<Vec<u8>>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} secret(s))", self.0.len())
    }
}

impl WebhookSecrets {
    /// `whsec_…` secrets (the prefix optional), base64 after it.
    pub fn parse(secrets: &[Secret]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            let text = s.expose().trim();
            let text = text.strip_prefix("whsec_").unwrap_or(text);
            let key = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("webhook secret #{} is not whsec_ + base64", i + 1))?;
            if key.is_empty() {
                return Err(format!("webhook secret #{} is empty", i + 1));
            }
            keys.push(key);
        }
        Ok(Self(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a webhook was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no webhook secret is configured")]
    NoSecrets,
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes off")]
    OutOfTolerance,
    #[error("no signature matches")]
    BadSignature,
}

/// The `v1,<base64>` signature of one message under `key` (the simulator
/// and the tests sign with it).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new(); // HMAC takes a key of any length
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Checks the three headers against the raw `body`: the timestamp within
/// [`TOLERANCE_SECS`] of `now`, and any `v1` signature of the header
/// matching any secret, compared in constant time.
pub fn verify(
    secrets: &WebhookSecrets,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let id = id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts_text = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signatures = signatures.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::OutOfTolerance);
    }
    let given: Vec<&str> = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .map(|(_, sig)| sig)
        .collect();
    for key in &secrets.0 {
        let expected = sign(key, id, ts, body);
        let expected = expected.trim_start_matches("v1,").as_bytes();
        if given
            .iter()
            .any(|g| g.len() == expected.len() && bool::from(g.as_bytes().ct_eq(expected)))
        {
            return Ok(());
        }
    }
    Err(VerifyError::BadSignature)
}

/// `data` of a V2 webhook (payment events and billing-key events).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    #[serde(default)]
    pub store_id: Option<String>,
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub cancellation_id: Option<String>,
    #[serde(default)]
    pub billing_key: Option<crate::secret::Secret>,
}

/// A V2 webhook body (version 2024-04-25). Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub data: EventData,
}

/// Reads a verified body into the neutral notice. `Err` for a body that is
/// not a V2 webhook at all; ids that cannot be ours are a notice ignored.
pub fn parse(body: &[u8]) -> Result<Notice, String> {
    let event: Event =
        serde_json::from_slice(body).map_err(|e| format!("not a V2 webhook body: {e}"))?;
    let payment = |status: &str| match (&event.data.payment_id, &event.data.transaction_id) {
        (Some(p), Some(t)) if !p.is_empty() => {
            if !valid_id(p) || !valid_id(t) {
                return Ok(Notice::Ignored {
                    kind: event.kind.clone(),
                    why: "unknown paymentId",
                });
            }
            Ok(Notice::Payment(PaymentNotice {
                payment_ref: t.clone(),
                payment_id: p.clone(),
                status: status.to_owned(),
                cancellation_id: event.data.cancellation_id.clone(),
            }))
        }
        _ => Err(format!("{} without paymentId/transactionId", event.kind)),
    };
    match event.kind.as_str() {
        "Transaction.Paid" => payment("paid"),
        "Transaction.Failed" => payment("failed"),
        "Transaction.Cancelled" | "Transaction.PartialCancelled" => payment("cancelled"),
        "BillingKey.Issued" => match &event.data.billing_key {
            Some(k) if !k.expose().is_empty() => Ok(Notice::KeyIssued {
                billing_key: k.clone(),
            }),
            _ => Err("BillingKey.Issued without billingKey".into()),
        },
        other => Ok(Notice::Ignored {
            kind: other.to_owned(),
            why: "event type not acted on",
        }),
    }
}

/// A request's neutral notice: the size first, then the signature over the
/// raw body (any active secret, within [`TOLERANCE_SECS`]) before anything
/// is read, then the body.
pub fn decode(secrets: &WebhookSecrets, inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
    if inbound.body.len() > MAX_BODY {
        return Err(BadNotice::TooLarge);
    }
    verify(
        secrets,
        inbound.header("webhook-id"),
        inbound.header("webhook-timestamp"),
        inbound.header("webhook-signature"),
        inbound.body,
        inbound.now,
    )
    .map_err(|e| BadNotice::Signature(e.to_string()))?;
    parse(inbound.body).map_err(BadNotice::Body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn secrets(list: &[&str]) -> WebhookSecrets {
        let list: Vec<Secret> = list.iter().map(|s| Secret::new((*s).to_owned())).collect();
        WebhookSecrets::parse(&list).unwrap()
    }

    #[test]
    fn the_reference_vector_signs_and_verifies() {
        // The Standard Webhooks reference library's own test vector.
        let s = secrets(&[SECRET]);
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let id = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
        let sig = sign(&s.0[0], id, 1649367553, body);
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        let ok = verify(
            &s,
            Some(id),
            Some("1649367553"),
            Some(&sig),
            body,
            1649367553 + 60,
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn tampering_old_timestamps_and_unknown_secrets_are_refused() {
        let s = secrets(&[SECRET]);
        let body = br#"{"type":"Transaction.Paid"}"#;
        let now = 1_800_000_000;
        let sig = sign(&s.0[0], "msg_1", now, body);
        let v = |id: &str, ts: i64, sig: &str, body: &[u8], now: i64| {
            verify(&s, Some(id), Some(&ts.to_string()), Some(sig), body, now)
        };
        assert_eq!(v("msg_1", now, &sig, body, now), Ok(()));
        assert_eq!(
            v("msg_1", now, &sig, br#"{"type":"Transaction.Paid "}"#, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            v("msg_2", now, &sig, body, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            v("msg_1", now, &sig, body, now + TOLERANCE_SECS + 1),
            Err(VerifyError::OutOfTolerance)
        );
        assert_eq!(
            v("msg_1", now, &sig, body, now - TOLERANCE_SECS - 1),
            Err(VerifyError::OutOfTolerance)
        );
        let other = secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        assert_eq!(
            verify(
                &other,
                Some("msg_1"),
                Some(&now.to_string()),
                Some(&sig),
                body,
                now
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&s, None, Some("1"), Some(&sig), body, now),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            verify(
                &WebhookSecrets::default(),
                Some("m"),
                Some("1"),
                Some(&sig),
                body,
                now
            ),
            Err(VerifyError::NoSecrets)
        );
    }

    #[test]
    fn during_a_rotation_either_secret_verifies_and_any_listed_signature_counts() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let s = secrets(&[SECRET, old]);
        let body = b"{}";
        let now = 1_800_000_000;
        let by_old = sign(&secrets(&[old]).0[0], "m", now, body);
        assert_eq!(
            verify(
                &s,
                Some("m"),
                Some(&now.to_string()),
                Some(&by_old),
                body,
                now
            ),
            Ok(())
        );
        let header = format!("v1,bm90IHRoaXM= {by_old} v2,whatever");
        assert_eq!(
            verify(
                &s,
                Some("m"),
                Some(&now.to_string()),
                Some(&header),
                body,
                now
            ),
            Ok(())
        );
    }

    #[test]
    fn bodies_are_read_and_unknown_types_ignored() {
        let paid = parse(br#"{"type":"Transaction.Paid","timestamp":"2026-12-01T01:00:00Z","data":{"storeId":"s","paymentId":"p1","transactionId":"t1"},"extra":1}"#).unwrap();
        assert!(matches!(&paid, Notice::Payment(p) if p.status == "paid"));
        let new_type = parse(br#"{"type":"Something.New","data":{}}"#).unwrap();
        assert!(matches!(&new_type, Notice::Ignored { kind, .. } if kind == "Something.New"));
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"type":"Transaction.Paid","data":{}}"#).is_err());
        let key = parse(br#"{"type":"BillingKey.Issued","data":{"billingKey":"billing-key-1"}}"#)
            .unwrap();
        assert!(
            format!("{key:?}").contains("***"),
            "the key is never printed"
        );
    }
}
