//! Coupons in memory: one record per id, its redemption counted in the
//! same atomic operation as the write that redeems it, under the same
//! conditions as the table's.

use super::*;
use crate::billing::coupons::{Coupon, CouponId};
use crate::ledger::{Redeemer, Redemption};

pub(super) async fn put_coupon(db: &InMemoryLedger, coupon: &Coupon) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("PutItem");
    if st.coupons.contains_key(&coupon.id) {
        return Err(conflict("put coupon"));
    }
    let mut stored = coupon.clone();
    stored.created_at = secs(coupon.created_at);
    stored.redeem_by = opt_secs(coupon.redeem_by);
    st.coupons.insert(coupon.id.clone(), stored);
    Ok(())
}

pub(super) async fn get_coupon(
    db: &InMemoryLedger,
    id: &CouponId,
) -> Result<Option<Coupon>, LedgerError> {
    let mut st = db.lock();
    st.count("GetItem");
    Ok(st.coupons.get(id).cloned())
}

pub(super) async fn redeem(db: &InMemoryLedger, r: &Redemption<'_>) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let now = secs(r.now).timestamp();
    let redeemable = st.coupons.get(r.coupon).is_some_and(|c| {
        c.max_redemptions.is_none_or(|m| c.redeemed < m)
            && c.redeem_by.is_none_or(|by| by.timestamp() > now)
    });
    if !redeemable {
        return Err(conflict("redeem coupon"));
    }
    // The redeemer's write checks its own condition before it changes
    // anything: a failure leaves the count alone.
    match r.into {
        Redeemer::Registration(reg) => registrations::put_registration_in(&mut st, reg)?,
        Redeemer::Subscription(change) => subscriptions::change_in(&mut st, &change)?,
    }
    if let Some(c) = st.coupons.get_mut(r.coupon) {
        c.redeemed += 1;
    }
    Ok(())
}
