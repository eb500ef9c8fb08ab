//! A subscription's price change (decision 69), as one map attribute
//! `price_change` on the subscription item: `amount`, `name`,
//! `notice_days`, `plan_id` + `plan_version` (the version), `from_amount`,
//! `effective`, `on_no_consent`, `requested_at`, and when set `asks_at`,
//! `asked_at`, the consent (`consent_*`, as a trial's), `declined_at`,
//! `outcome` + `closed_at`, `coupon_id` (a coupon's end, decision 78). An item without it has none.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Item, Reader, n, notice_days, put_opt, s, ts};
use crate::billing::PeriodId;
use crate::billing::entities::Plan;
use crate::billing::price_changes::{OnNoConsent, Outcome, PriceChange};
use crate::ledger::LedgerError;

const ATTRIBUTE: &str = "price_change";

pub(super) fn put_price_change(item: &mut Item, change: Option<&PriceChange>) {
    let Some(c) = change else { return };
    let mut m = Item::new();
    m.insert("amount".into(), n(c.plan.amount));
    m.insert("name".into(), s(&c.plan.name));
    m.insert("notice_days".into(), n(c.plan.notice_days));
    super::item::put_tax(&mut m, "tax", c.plan.tax);
    super::plans::put_plan_ref(&mut m, c.plan_ref.as_ref());
    m.insert("from_amount".into(), n(c.from_amount));
    m.insert("effective".into(), s(c.effective.as_str()));
    m.insert("on_no_consent".into(), s(c.on_no_consent.as_str()));
    m.insert("requested_at".into(), ts(c.requested_at));
    put_opt(&mut m, "asks_at", c.asks_at.map(ts));
    put_opt(&mut m, "asked_at", c.asked_at.map(ts));
    super::trials::put_consent(&mut m, c.consent.as_ref());
    put_opt(&mut m, "declined_at", c.declined_at.map(ts));
    super::coupons::put_change_coupon(&mut m, c.coupon.as_ref());
    if let Some((outcome, at)) = c.closed {
        m.insert("outcome".into(), s(outcome.as_str()));
        m.insert("closed_at".into(), ts(at));
    }
    item.insert(ATTRIBUTE.into(), AttributeValue::M(m));
}

pub(super) fn read_price_change(item: &Item) -> Result<Option<PriceChange>, LedgerError> {
    let m = match item.get(ATTRIBUTE) {
        None | Some(AttributeValue::Null(_)) => return Ok(None),
        Some(AttributeValue::M(m)) => m,
        Some(_) => return Err(LedgerError::Corrupt(format!("{ATTRIBUTE} is not a map"))),
    };
    let r = Reader::new(m, "price change");
    let corrupt = |what: String| LedgerError::Corrupt(format!("price change {what}"));
    let effective = r.str("effective")?;
    let on_no_consent = r.str("on_no_consent")?;
    let closed = match r.opt_str("outcome")? {
        None => None,
        Some(o) => Some((
            Outcome::parse(&o).ok_or_else(|| corrupt(format!("outcome {o:?}")))?,
            r.time("closed_at")?,
        )),
    };
    Ok(Some(PriceChange {
        plan: Plan {
            amount: r.i64("amount")?,
            name: r.str("name")?,
            notice_days: notice_days(&r, "notice_days")?,
            tax: super::item::tax(&r, "tax")?,
        },
        plan_ref: super::plans::read_plan_ref(&r)?,
        from_amount: r.i64("from_amount")?,
        effective: PeriodId::parse(&effective)
            .ok_or_else(|| corrupt(format!("effective {effective:?}")))?,
        on_no_consent: OnNoConsent::parse(&on_no_consent)
            .ok_or_else(|| corrupt(format!("on_no_consent {on_no_consent:?}")))?,
        requested_at: r.time("requested_at")?,
        asks_at: r.opt_time("asks_at")?,
        asked_at: r.opt_time("asked_at")?,
        consent: super::trials::read_consent(&r)?,
        declined_at: r.opt_time("declined_at")?,
        closed,
        coupon: super::coupons::read_change_coupon(&r)?,
    }))
}
