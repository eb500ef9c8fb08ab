//! Coupons (issue 25 §3, decision 78): `POST /coupons` stores one,
//! `GET /coupons/{id}` shows it with its redemptions, and
//! `POST /subscriptions/{id}/coupon` applies one to a running subscription:
//! one write that counts the redemption and changes the subscription (its
//! discount, and the price change its end is), audited. A coupon is
//! redeemed with a sign-up through `prepare`'s `coupon_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Actor, ManageError, SubscriptionView, audit, kept_changing, load, parse_id, view_of};
use crate::billing::coupons::{self, Apply, Coupon, CouponError, CouponId, CouponInput, Off};
use crate::engine::Engine;
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{Ledger, LedgerError, LockChange, Redeemer, Redemption, SubscriptionChange};

/// A coupon as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CouponView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_off: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_off: Option<i64>,
    /// `once`, `repeating:N` (N periods) or `forever`.
    pub duration: String,
    pub max_redemptions: Option<u32>,
    pub redeem_by: Option<String>,
    pub redeemed: u32,
    pub created_at: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<&Coupon> for CouponView {
    fn from(c: &Coupon) -> Self {
        Self {
            id: c.id.to_string(),
            name: c.name.clone(),
            percent_off: match c.off {
                Off::Percent(p) => Some(p),
                Off::Amount(_) => None,
            },
            amount_off: match c.off {
                Off::Amount(a) => Some(a),
                Off::Percent(_) => None,
            },
            duration: c.duration.label(),
            max_redemptions: c.max_redemptions,
            redeem_by: c.redeem_by.map(rfc3339),
            redeemed: c.redeemed,
            created_at: rfc3339(c.created_at),
        }
    }
}

impl From<CouponError> for ManageError {
    fn from(e: CouponError) -> Self {
        match e {
            CouponError::Invalid(why) => Self::Invalid(why),
            CouponError::Exhausted(_) | CouponError::NotAllowed(_) => Self::Conflict(e.to_string()),
            CouponError::Expired { .. } => Self::Unprocessable(e.to_string()),
        }
    }
}

/// `POST /coupons`. 400 for a bad field, 409 when the id is taken.
pub async fn create_coupon<L: Ledger, G>(
    engine: &Engine<L, G>,
    input: CouponInput,
) -> Result<CouponView, ManageError> {
    let coupon = coupons::validated(input, engine.now())?;
    match engine.ledger.put_coupon(&coupon).await {
        Ok(()) => {
            info!(coupon_id = %coupon.id, duration = %coupon.duration.label(), "coupon created");
            Ok((&coupon).into())
        }
        Err(LedgerError::Conflict(_)) => Err(ManageError::Conflict(format!(
            "coupon {} exists; a coupon never changes",
            coupon.id
        ))),
        Err(e) => Err(e.into()),
    }
}

fn coupon_id(id: &str) -> Result<CouponId, ManageError> {
    CouponId::parse(id).ok_or_else(|| {
        ManageError::Invalid("coupon_id must have 1 to 40 of a-z, 0-9 and '-'".into())
    })
}

async fn stored<L: Ledger, G>(engine: &Engine<L, G>, id: &CouponId) -> Result<Coupon, ManageError> {
    engine
        .ledger
        .get_coupon(id)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no coupon {id:?}")))
}

/// `GET /coupons/{id}`.
pub async fn get_coupon<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
) -> Result<CouponView, ManageError> {
    let id = coupon_id(id)?;
    Ok((&stored(engine, &id).await?).into())
}

/// What `POST /subscriptions/{id}/coupon` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyCouponInput {
    pub coupon_id: String,
    /// What the coupon's end does without the customer's consent:
    /// `cancel_at_period_end` (the default) or `keep_old_price` (the
    /// discount stays).
    #[serde(default)]
    pub on_no_consent: Option<String>,
}

/// `POST /subscriptions/{id}/coupon`: the coupon covers the subscription's
/// periods from the next one without an attempt; its end is a price
/// increase asked for like a price change (decision 69). The redemption
/// is counted in the same write, once: a second request for the same coupon
/// answers the subscription as it is (`false`: nothing counted). 404 for
/// an unknown coupon; 409 when it was redeemed its most times, the
/// subscription has a coupon in force or a price change pending, is in
/// its trial or ended; 422 past its `redeem_by`.
pub async fn apply_coupon<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    input: ApplyCouponInput,
    actor: &Actor,
) -> Result<(SubscriptionView, bool), ManageError> {
    let id = parse_id(id)?;
    let wanted = coupon_id(&input.coupon_id)?;
    let on_no_consent = super::price_changes::on_no_consent(input.on_no_consent.as_deref())?;
    let window = engine.settings.charging.consent_window_days;
    let (id, wanted) = (&id, &wanted);
    let done = retry_on_conflict(3, (), |()| async move {
        let sub = load(engine, id).await?;
        if sub
            .discount
            .as_ref()
            .is_some_and(|d| &d.coupon == wanted && !d.is_over(&sub.current_period()))
        {
            // Applied already (a retry, or a race this request lost).
            return view_of(engine, &sub).await.map(|v| Pass::Done((v, false)));
        }
        let coupon = stored(engine, wanted).await?;
        let now = engine.now();
        coupon.redeemable(now)?;
        let started = engine
            .ledger
            .get_attempt(&sub.id, &sub.current_period(), 1)
            .await?
            .is_some();
        let request = Apply {
            coupon: &coupon,
            on_no_consent,
            window_days: window,
            started,
        };
        let next = coupons::applied(&sub, &request, now)?;
        let detail = next.discount.as_ref().map_or_else(String::new, |d| {
            format!(
                "coupon {} ({}) from period {}{}",
                d.coupon,
                d.duration.label(),
                d.from,
                d.until
                    .as_ref()
                    .map(|u| format!(
                        " until {u}; its end asks a consent, else {}",
                        on_no_consent.as_str()
                    ))
                    .unwrap_or_default()
            )
        });
        let entry = audit(engine, &sub, actor, "coupon", detail);
        let redemption = Redemption {
            coupon: &coupon.id,
            now,
            into: Redeemer::Subscription(SubscriptionChange {
                next: &next,
                audit: Some(&entry),
                lock: LockChange::Keep,
            }),
        };
        match engine.ledger.redeem(&redemption).await {
            Ok(()) => {
                info!(subscription_id = %sub.id, coupon_id = %coupon.id, "coupon redeemed");
                view_of(engine, &next).await.map(|v| Pass::Done((v, true)))
            }
            Err(LedgerError::Conflict(_)) => {
                // Redeemed up to its limit meanwhile, or the subscription
                // changed: look again.
                stored(engine, wanted).await?.redeemable(engine.now())?;
                Ok(Pass::Again(()))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    done.ok_or_else(kept_changing)
}
