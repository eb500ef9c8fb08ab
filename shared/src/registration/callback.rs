//! The browser's return from the payment window: the redirect query,
//! parsed leniently and trusted for nothing, and what the callback answers.

use std::collections::HashMap;

use crate::secret::Secret;

/// The query i'mport appends to `m_redirect_url`, parsed leniently:
/// `imp_success`, `success`, or neither; `error_code`/`error_msg` on failure.
/// PortOne V2 appends `billingKey`, or `code`/`message` on failure, to the
/// `redirectUrl` that already carries our `merchant_uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackParams {
    pub imp_uid: Option<String>,
    pub merchant_uid: String,
    /// What the browser claims; never trusted, only logged.
    pub claimed_success: Option<bool>,
    pub error_code: Option<String>,
    /// PortOne V2's redirect: the issued key (`billingKey`). Secret-grade:
    /// never logged.
    pub billing_key: Option<Secret>,
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
    /// The window took money we cannot simply keep (an amount that is
    /// neither 0 nor the plan's, or a sign-up that cannot be activated): the
    /// subscription waits for a person (refund or accept), nothing is charged.
    NeedsReview,
    /// The user already has a live subscription to this plan; the new key
    /// was deleted at the gateway.
    AlreadySubscribed,
    /// A new card for a subscription that has ended; the key was deleted.
    SubscriptionEnded,
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
            Self::AlreadySubscribed => "already_subscribed",
            Self::SubscriptionEnded => "subscription_ended",
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
/// V2 billing keys are longer than our ids (`billing-key-` + a UUID).
const MAX_KEY: usize = 128;

fn id_like(v: &str) -> bool {
    id_like_within(v, MAX_PARAM)
}

fn id_like_within(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
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
    let billing_key = match get("billingKey") {
        Some(v) if id_like_within(v, MAX_KEY) => Some(Secret::new(v)),
        Some(_) => return Err(FailureReason::BadRequest),
        None => None,
    };
    let error_code = get("error_code").or_else(|| get("code")).map(|v| {
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
        billing_key,
    })
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
    fn portone_v2_redirects_parse() {
        let ok = parse_callback(&q(&[
            ("merchant_uid", "rabc"),
            ("transactionType", "ISSUE_BILLING_KEY"),
            (
                "billingKey",
                "billing-key-0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            ),
        ]))
        .unwrap();
        assert_eq!(
            ok.billing_key.as_ref().map(Secret::expose),
            Some("billing-key-0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(ok.imp_uid, None);
        assert!(!format!("{ok:?}").contains("0193a1b2"), "the key is masked");
        let failed = parse_callback(&q(&[
            ("merchant_uid", "rabc"),
            ("code", "FAILURE_TYPE_PG"),
            ("message", "카드 한도 초과"),
        ]))
        .unwrap();
        assert_eq!(failed.error_code.as_deref(), Some("FAILURE_TYPE_PG"));
        assert_eq!(failed.billing_key, None);
        assert_eq!(
            parse_callback(&q(&[("merchant_uid", "r1"), ("billingKey", "bk/../x")])),
            Err(FailureReason::BadRequest)
        );
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
