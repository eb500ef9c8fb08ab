//! Coupons on DynamoDB (decision 78). A coupon is one item,
//! `COUPON#{id}` / `META`, with its terms and a `redeemed` counter. A
//! redemption is one transaction: an update adding one to `redeemed` under
//! the condition that the coupon exists, is under `max_redemptions` and
//! before `redeem_by`, beside the writes of what redeems it (a new
//! registration, or a version-checked subscription change). Either all of
//! it is written or none, so a redemption is counted exactly once.
//!
//! What a registration keeps of its coupon is the map attribute `coupon`
//! (`id`, `off_kind`, `off`, `duration`); a subscription's discount is
//! the map `discount` (the same, with `from`, `until`, `redeemed_at`,
//! `end_disclosed`).

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Reader, put_opt};
use super::*;
use crate::billing::coupons::{Coupon, CouponDuration, CouponId, CouponTerms, Discount, Off};
use crate::ledger::{Redeemer, Redemption};

fn coupon_pk(id: &CouponId) -> String {
    format!("COUPON#{id}")
}

fn put_off(m: &mut Item, off: Off) {
    let (kind, value) = match off {
        Off::Percent(p) => ("percent", i64::from(p)),
        Off::Amount(a) => ("amount", a),
    };
    m.insert("off_kind".into(), s(kind));
    m.insert("off".into(), n(value));
}

fn read_off(r: &Reader<'_>) -> Result<Off, LedgerError> {
    let kind = r.str("off_kind")?;
    let value = r.i64("off")?;
    match kind.as_str() {
        "percent" if (1..=100).contains(&value) => Ok(Off::Percent(value as u8)),
        "amount" if value > 0 => Ok(Off::Amount(value)),
        _ => Err(LedgerError::Corrupt(format!("coupon off {kind:?} {value}"))),
    }
}

fn read_duration(r: &Reader<'_>) -> Result<CouponDuration, LedgerError> {
    let text = r.str("duration")?;
    CouponDuration::parse(&text)
        .ok_or_else(|| LedgerError::Corrupt(format!("coupon duration {text:?}")))
}

fn read_id(r: &Reader<'_>, field: &str) -> Result<CouponId, LedgerError> {
    let text = r.str(field)?;
    CouponId::parse(&text).ok_or_else(|| LedgerError::Corrupt(format!("coupon id {text:?}")))
}

fn coupon_item(c: &Coupon) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(coupon_pk(&c.id)));
    item.insert(SK.into(), s(META));
    item.insert("type".into(), s("coupon"));
    item.insert("coupon_id".into(), s(c.id.as_str()));
    item.insert("coupon_name".into(), s(&c.name));
    put_off(&mut item, c.off);
    item.insert("duration".into(), s(c.duration.label()));
    put_opt(&mut item, "max_redemptions", c.max_redemptions.map(n));
    put_opt(&mut item, "redeem_by", c.redeem_by.map(ts));
    item.insert("redeemed".into(), n(c.redeemed));
    item.insert("created_at".into(), ts(c.created_at));
    item
}

fn coupon_from_item(item: &Item) -> Result<Coupon, LedgerError> {
    let r = Reader::new(item, "coupon");
    Ok(Coupon {
        id: read_id(&r, "coupon_id")?,
        name: r.str("coupon_name")?,
        off: read_off(&r)?,
        duration: read_duration(&r)?,
        max_redemptions: r.opt_u32("max_redemptions")?,
        redeem_by: r.opt_time("redeem_by")?,
        redeemed: r.u32("redeemed")?,
        created_at: r.time("created_at")?,
    })
}

pub(super) async fn put_coupon(db: &DynamoLedger, coupon: &Coupon) -> Result<(), LedgerError> {
    db.client
        .put_item()
        .table_name(&db.table)
        .set_item(Some(coupon_item(coupon)))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", PK)
        .send()
        .await
        .map_err(|e| sdk_error(e, "PutItem coupon"))?;
    Ok(())
}

pub(super) async fn get_coupon(
    db: &DynamoLedger,
    id: &CouponId,
) -> Result<Option<Coupon>, LedgerError> {
    db.get(coupon_pk(id), META)
        .await?
        .map(|item| coupon_from_item(&item))
        .transpose()
}

pub(super) async fn redeem(db: &DynamoLedger, r: &Redemption<'_>) -> Result<(), LedgerError> {
    let count = Update::builder()
        .table_name(&db.table)
        .key(PK, s(coupon_pk(r.coupon)))
        .key(SK, s(META))
        .update_expression("SET redeemed = redeemed + :one")
        .condition_expression(
            "attribute_exists(#pk) \
             AND (attribute_not_exists(max_redemptions) OR redeemed < max_redemptions) \
             AND (attribute_not_exists(redeem_by) OR redeem_by > :now)",
        )
        .expression_attribute_names("#pk", PK)
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":now", ts(r.now))
        .build()
        .map_err(build_error)?;
    let mut items = vec![TransactWriteItem::builder().update(count).build()];
    match r.into {
        Redeemer::Registration(reg) => {
            items.extend(super::registrations::registration_writes(db, reg)?);
        }
        Redeemer::Subscription(change) => {
            items.extend(super::subscriptions::change_writes(db, &change).await?);
        }
    }
    db.transact(items, "TransactWriteItems redeem coupon").await
}

fn terms_map(t: &CouponTerms) -> Item {
    let mut m = Item::new();
    m.insert("id".into(), s(t.id.as_str()));
    put_off(&mut m, t.off);
    m.insert("duration".into(), s(t.duration.label()));
    m
}

fn read_map<'a>(item: &'a Item, field: &str) -> Result<Option<&'a Item>, LedgerError> {
    match item.get(field) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::M(m)) => Ok(Some(m)),
        Some(_) => Err(LedgerError::Corrupt(format!("{field} is not a map"))),
    }
}

/// A registration's coupon (`coupon`).
pub(super) fn put_terms(item: &mut Item, terms: Option<&CouponTerms>) {
    if let Some(t) = terms {
        item.insert("coupon".into(), AttributeValue::M(terms_map(t)));
    }
}

pub(super) fn read_terms(item: &Item) -> Result<Option<CouponTerms>, LedgerError> {
    let Some(m) = read_map(item, "coupon")? else {
        return Ok(None);
    };
    let r = Reader::new(m, "coupon");
    Ok(Some(CouponTerms {
        id: read_id(&r, "id")?,
        off: read_off(&r)?,
        duration: read_duration(&r)?,
    }))
}

/// A subscription's discount (`discount`).
pub(super) fn put_discount(item: &mut Item, discount: Option<&Discount>) {
    let Some(d) = discount else { return };
    let mut m = terms_map(&CouponTerms {
        id: d.coupon.clone(),
        off: d.off,
        duration: d.duration,
    });
    m.insert("from".into(), s(d.from.as_str()));
    put_opt(&mut m, "until", d.until.as_ref().map(|u| s(u.as_str())));
    m.insert("redeemed_at".into(), ts(d.redeemed_at));
    m.insert(
        "end_disclosed".into(),
        AttributeValue::Bool(d.end_disclosed),
    );
    item.insert("discount".into(), AttributeValue::M(m));
}

pub(super) fn read_discount(item: &Item) -> Result<Option<Discount>, LedgerError> {
    let Some(m) = read_map(item, "discount")? else {
        return Ok(None);
    };
    let r = Reader::new(m, "discount");
    let period = |text: String| {
        PeriodId::parse(&text)
            .ok_or_else(|| LedgerError::Corrupt(format!("discount period {text:?}")))
    };
    Ok(Some(Discount {
        coupon: read_id(&r, "id")?,
        off: read_off(&r)?,
        duration: read_duration(&r)?,
        from: period(r.str("from")?)?,
        until: r.opt_str("until")?.map(period).transpose()?,
        redeemed_at: r.time("redeemed_at")?,
        end_disclosed: r.bool("end_disclosed")?,
    }))
}

/// The coupon whose end a price change is (`coupon_id` in its map).
pub(super) fn put_change_coupon(m: &mut Item, id: Option<&CouponId>) {
    put_opt(m, "coupon_id", id.map(|c| s(c.as_str())));
}

pub(super) fn read_change_coupon(r: &Reader<'_>) -> Result<Option<CouponId>, LedgerError> {
    r.opt_str("coupon_id")?
        .map(|t| {
            CouponId::parse(&t).ok_or_else(|| LedgerError::Corrupt(format!("coupon id {t:?}")))
        })
        .transpose()
}
