//! Conversion between records and DynamoDB items.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::table::{
    CONSENT_PK, CONSENT_SK, DUE_PK, DUE_SK, PK, PLAN_PK, PLAN_SK, SK, TTL_ATTRIBUTE,
};
use crate::billing::{
    Anchor, AttemptState, AuditEntry, Buyer, ChargeAttempt, DeclineClass, Interval, KeyInfo,
    PeriodId, Plan, RefundCause, Registration, RegistrationStatus, Resolution, Subscription,
    SubscriptionId, SubscriptionStatus, TaxSetting,
};
use crate::ledger::{LedgerError, RefundIntent, RefundState};
use crate::secret::Pii;

pub type Item = HashMap<String, AttributeValue>;

pub const META: &str = "META";

/// How long after it expired a registration is kept before DynamoDB's TTL
/// deletes it.
pub const REGISTRATION_KEEP: chrono::Duration = chrono::Duration::days(3);

pub fn sub_pk(id: &SubscriptionId) -> String {
    format!("SUB#{id}")
}

pub fn reg_pk(merchant_uid: &str) -> String {
    format!("REG#{merchant_uid}")
}

pub fn attempt_sk(period: &PeriodId, attempt: u32) -> String {
    format!("CHARGE#{period}#{attempt:03}")
}

pub fn due_pk(shard: u32) -> String {
    format!("DUE#{shard}")
}

/// The partition of the review index (attempts waiting for a person).
pub const REVIEW_PK: &str = "REVIEW";

/// The consent index's partition of a shard.
pub fn consent_pk(shard: u32) -> String {
    format!("CONSENT#{shard}")
}

pub fn plan_member_pk(plan: &crate::billing::plans::PlanId, shard: u32) -> String {
    format!("PLAN#{plan}#{shard}")
}

pub fn user_pk(user_id: &str) -> String {
    format!("USER#{user_id}")
}

pub fn user_sub_sk(id: &SubscriptionId) -> String {
    format!("SUB#{id}")
}

pub fn user_reg_sk(merchant_uid: &str) -> String {
    format!("REG#{merchant_uid}")
}

pub fn user_lock_sk(plan_name: &str) -> String {
    format!("PLAN#{plan_name}")
}

pub fn audit_sk(e: &AuditEntry) -> String {
    // Newest last in key order (to the microsecond: two actions within a
    // second keep their order); the action and a hash of the entry keep two
    // actions at one instant apart.
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    (&e.actor, &e.action, &e.detail).hash(&mut h);
    format!(
        "AUDIT#{:016}#{}#{:08x}",
        e.at.timestamp_micros(),
        e.action,
        h.finish() as u32
    )
}

pub fn idempotency_pk(key: &str) -> String {
    format!("IDEM#{key}")
}

pub fn audit_to_item(e: &AuditEntry) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(sub_pk(&e.subscription_id)));
    item.insert(SK.into(), s(audit_sk(e)));
    item.insert("type".into(), s("audit"));
    item.insert("subscription_id".into(), s(e.subscription_id.as_str()));
    item.insert("at".into(), ts(e.at));
    item.insert("actor".into(), s(&e.actor));
    put_opt(&mut item, "principal", e.principal.as_ref().map(s));
    item.insert("action".into(), s(&e.action));
    item.insert("detail".into(), s(&e.detail));
    item
}

pub fn audit_from_item(item: &Item) -> Result<AuditEntry, LedgerError> {
    let r = Reader::new(item, "audit entry");
    // `at` is kept in seconds like every time here; the key holds the
    // microseconds.
    let micros = r
        .str(SK)?
        .strip_prefix("AUDIT#")
        .and_then(|rest| rest.split('#').next())
        .and_then(|m| m.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_micros);
    Ok(AuditEntry {
        subscription_id: r.sub_id("subscription_id")?,
        at: match micros {
            Some(at) => at,
            None => r.time("at")?,
        },
        actor: r.str("actor")?,
        principal: r.opt_str("principal")?,
        action: r.str("action")?,
        detail: r.str("detail")?,
    })
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn ts(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp())
}

/// Reads typed attributes out of an item, naming the bad field on error.
pub struct Reader<'a> {
    item: &'a Item,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item, what: &'static str) -> Self {
        Self { item, what }
    }

    fn corrupt(&self, field: &str, why: &str) -> LedgerError {
        LedgerError::Corrupt(format!("{} attribute {field}: {why}", self.what))
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<String>, LedgerError> {
        match self.item.get(field) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.corrupt(field, "not a string")),
        }
    }

    pub fn str(&self, field: &str) -> Result<String, LedgerError> {
        self.opt_str(field)?
            .ok_or_else(|| self.corrupt(field, "missing"))
    }

    pub fn opt_i64(&self, field: &str) -> Result<Option<i64>, LedgerError> {
        match self.item.get(field) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(field, "not an integer")),
            Some(_) => Err(self.corrupt(field, "not a number")),
        }
    }

    pub fn i64(&self, field: &str) -> Result<i64, LedgerError> {
        self.opt_i64(field)?
            .ok_or_else(|| self.corrupt(field, "missing"))
    }

    pub fn u32(&self, field: &str) -> Result<u32, LedgerError> {
        u32::try_from(self.i64(field)?).map_err(|_| self.corrupt(field, "out of range"))
    }

    pub fn opt_u32(&self, field: &str) -> Result<Option<u32>, LedgerError> {
        self.opt_i64(field)?
            .map(|v| u32::try_from(v).map_err(|_| self.corrupt(field, "out of range")))
            .transpose()
    }

    pub fn opt_time(&self, field: &str) -> Result<Option<DateTime<Utc>>, LedgerError> {
        match self.opt_i64(field)? {
            None => Ok(None),
            Some(secs) => DateTime::from_timestamp(secs, 0)
                .map(Some)
                .ok_or_else(|| self.corrupt(field, "not a valid instant")),
        }
    }

    pub fn time(&self, field: &str) -> Result<DateTime<Utc>, LedgerError> {
        self.opt_time(field)?
            .ok_or_else(|| self.corrupt(field, "missing"))
    }

    pub fn bool(&self, field: &str) -> Result<bool, LedgerError> {
        match self.item.get(field) {
            None => Ok(false),
            Some(AttributeValue::Bool(b)) => Ok(*b),
            Some(_) => Err(self.corrupt(field, "not a boolean")),
        }
    }

    pub fn pii(&self, field: &str) -> Result<Option<Pii>, LedgerError> {
        Ok(self.opt_str(field)?.map(Pii::new))
    }

    pub fn sub_id(&self, field: &str) -> Result<SubscriptionId, LedgerError> {
        let v = self.str(field)?;
        SubscriptionId::parse(&v).ok_or_else(|| self.corrupt(field, "not a subscription id"))
    }
}

pub(super) fn put_opt(item: &mut Item, field: &str, v: Option<AttributeValue>) {
    if let Some(v) = v {
        item.insert(field.to_owned(), v);
    }
}

/// A plan's tax setting under `field`: absent for taxable (items older
/// than taxes are taxable), `exempt` or `mixed:{won}` (decision 73).
pub(super) fn put_tax(item: &mut Item, field: &str, tax: TaxSetting) {
    put_opt(item, field, tax.encode().map(s));
}

pub(super) fn tax(r: &Reader<'_>, field: &str) -> Result<TaxSetting, LedgerError> {
    let stored = r.opt_str(field)?;
    TaxSetting::decode(stored.as_deref())
        .ok_or_else(|| LedgerError::Corrupt(format!("{field} {stored:?}")))
}

/// A plan's notice days; items written before notices existed have none
/// and get the default.
pub(super) fn notice_days(r: &Reader<'_>, field: &str) -> Result<u16, LedgerError> {
    match r.opt_i64(field)? {
        None => Ok(crate::billing::notices::DEFAULT_NOTICE_DAYS),
        Some(d) => u16::try_from(d)
            .ok()
            .filter(|d| crate::billing::notices::NOTICE_DAYS.contains(d))
            .ok_or_else(|| LedgerError::Corrupt(format!("{field} {d}"))),
    }
}

fn put_notice(item: &mut Item, notice: Option<&crate::billing::notices::SentNotice>) {
    let Some(notice) = notice else { return };
    item.insert("notice_period".into(), s(notice.period.as_str()));
    item.insert("notice_kind".into(), s(notice.kind.as_str()));
    item.insert("notice_amount".into(), n(notice.amount));
    item.insert("notice_charge_at".into(), ts(notice.charge_at));
    item.insert("notice_sent_at".into(), ts(notice.sent_at));
    item.insert(
        "notice_key_checked".into(),
        AttributeValue::Bool(notice.key_checked),
    );
}

fn read_notice(r: &Reader<'_>) -> Result<Option<crate::billing::notices::SentNotice>, LedgerError> {
    use crate::billing::notices::{NoticeKind, SentNotice};
    let Some(period) = r.opt_str("notice_period")? else {
        return Ok(None);
    };
    let kind = r.str("notice_kind")?;
    Ok(Some(SentNotice {
        period: PeriodId::parse(&period)
            .ok_or_else(|| LedgerError::Corrupt(format!("notice period {period:?}")))?,
        kind: NoticeKind::parse(&kind)
            .ok_or_else(|| LedgerError::Corrupt(format!("notice kind {kind:?}")))?,
        amount: r.i64("notice_amount")?,
        charge_at: r.time("notice_charge_at")?,
        sent_at: r.time("notice_sent_at")?,
        key_checked: r.bool("notice_key_checked")?,
    }))
}

fn put_buyer(item: &mut Item, buyer: &Buyer) {
    put_opt(
        item,
        "buyer_name",
        buyer.name.as_ref().map(|v| s(v.expose())),
    );
    put_opt(
        item,
        "buyer_email",
        buyer.email.as_ref().map(|v| s(v.expose())),
    );
    put_opt(item, "buyer_tel", buyer.tel.as_ref().map(|v| s(v.expose())));
    if let Some(h) = &buyer.cash_receipt {
        item.insert("buyer_receipt_type".into(), s(h.kind.as_str()));
        item.insert("buyer_receipt_id".into(), s(h.identifier.expose()));
    }
}

fn read_buyer(r: &Reader<'_>) -> Result<Buyer, LedgerError> {
    Ok(Buyer {
        name: r.pii("buyer_name")?,
        email: r.pii("buyer_email")?,
        tel: r.pii("buyer_tel")?,
        cash_receipt: match (r.opt_str("buyer_receipt_type")?, r.pii("buyer_receipt_id")?) {
            (Some(kind), Some(identifier)) => Some(crate::billing::ReceiptHolder {
                kind: crate::billing::ReceiptKind::parse(&kind)
                    .ok_or_else(|| LedgerError::Corrupt(format!("receipt type {kind:?}")))?,
                identifier,
            }),
            _ => None,
        },
    })
}

/// The registration item. While pending it is in the due index at its
/// `sweep_at`, so the charge run looks it up if the browser never returns.
/// A person's resolution as attributes of the attempt item.
pub fn put_resolution(item: &mut Item, resolution: Option<&Resolution>) {
    if let Some(res) = resolution {
        item.insert("resolution_state".into(), s(res.state.as_str()));
        item.insert("resolution_note".into(), s(&res.note));
        item.insert("resolved_by".into(), s(&res.actor));
        item.insert("resolved_at".into(), ts(res.at));
    }
}

fn read_resolution(r: &Reader<'_>) -> Result<Option<Resolution>, LedgerError> {
    let Some(state) = r.opt_str("resolution_state")? else {
        return Ok(None);
    };
    Ok(Some(Resolution {
        state: AttemptState::parse(&state)
            .ok_or_else(|| LedgerError::Corrupt(format!("resolution state {state:?}")))?,
        note: r.str("resolution_note")?,
        actor: r.str("resolved_by")?,
        at: r.time("resolved_at")?,
    }))
}

pub fn registration_to_item(reg: &Registration, shards: u32) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(reg_pk(&reg.merchant_uid)));
    item.insert(SK.into(), s(META));
    item.insert("type".into(), s("registration"));
    item.insert("merchant_uid".into(), s(&reg.merchant_uid));
    item.insert("subscription_id".into(), s(reg.subscription_id.as_str()));
    item.insert("customer_uid".into(), s(&reg.customer_uid));
    item.insert("user_id".into(), s(&reg.user_id));
    item.insert("plan_amount".into(), n(reg.plan.amount));
    item.insert("plan_name".into(), s(&reg.plan.name));
    item.insert("notice_days".into(), n(reg.plan.notice_days));
    put_tax(&mut item, "plan_tax", reg.plan.tax);
    super::plans::put_plan_ref(&mut item, reg.plan_ref.as_ref());
    item.insert("pg".into(), s(&reg.pg));
    item.insert("status".into(), s(reg.status.as_str()));
    item.insert("created_at".into(), ts(reg.created_at));
    put_opt(&mut item, "expires_at", reg.expires_at.map(ts));
    // DynamoDB deletes it well after it expired: a daily run that failed
    // for a day or two still sweeps it (a window that took money is never
    // left unrecorded).
    put_opt(
        &mut item,
        TTL_ATTRIBUTE,
        reg.expires_at.map(|t| ts(t + REGISTRATION_KEEP)),
    );
    put_opt(&mut item, "imp_uid", reg.imp_uid.as_ref().map(s));
    put_opt(&mut item, "sweep_at", reg.sweep_at.map(ts));
    if reg.replaces_key {
        item.insert("replaces_key".into(), AttributeValue::Bool(true));
    }
    super::trials::put_terms(&mut item, reg.trial.as_ref());
    super::trials::put_consent(&mut item, reg.consent.as_ref());
    put_interval(&mut item, reg.interval);
    put_billing_day(&mut item, reg.billing);
    super::coupons::put_terms(&mut item, reg.coupon.as_ref());
    put_buyer(&mut item, &reg.buyer);
    if let (RegistrationStatus::Pending, Some(at)) = (reg.status, reg.sweep_at) {
        item.insert(DUE_PK.into(), s(due_pk(reg.subscription_id.shard(shards))));
        item.insert(DUE_SK.into(), ts(at));
    }
    item
}

pub fn registration_from_item(item: &Item) -> Result<Registration, LedgerError> {
    let r = Reader::new(item, "registration");
    let status_text = r.str("status")?;
    let status = RegistrationStatus::parse(&status_text)
        .ok_or_else(|| LedgerError::Corrupt(format!("registration status {status_text:?}")))?;
    Ok(Registration {
        merchant_uid: r.str("merchant_uid")?,
        subscription_id: r.sub_id("subscription_id")?,
        customer_uid: r.str("customer_uid")?,
        user_id: r.str("user_id")?,
        plan: Plan {
            amount: r.i64("plan_amount")?,
            name: r.str("plan_name")?,
            notice_days: notice_days(&r, "notice_days")?,
            tax: tax(&r, "plan_tax")?,
        },
        plan_ref: super::plans::read_plan_ref(&r)?,
        pg: r.str("pg")?,
        buyer: read_buyer(&r)?,
        status,
        created_at: r.time("created_at")?,
        expires_at: match r.opt_time("expires_at")? {
            Some(t) => Some(t),
            // Items written before `expires_at` had its own attribute.
            None => r.opt_time(TTL_ATTRIBUTE)?,
        },
        imp_uid: r.opt_str("imp_uid")?,
        sweep_at: r.opt_time("sweep_at")?,
        replaces_key: r.bool("replaces_key")?,
        trial: super::trials::read_terms(&r)?,
        interval: interval(&r)?,
        billing: billing_day(&r)?,
        consent: super::trials::read_consent(&r)?,
        coupon: super::coupons::read_terms(item)?,
    })
}

/// `billing_day` + `first_period` (decision 77), on a plan and its
/// registrations; absent without one.
pub(super) fn put_billing_day(item: &mut Item, billing: Option<crate::billing::BillingDay>) {
    if let Some(b) = billing {
        item.insert("billing_day".into(), n(b.day));
        item.insert("first_period".into(), s(b.first.as_str()));
    }
}

pub(super) fn billing_day(
    r: &Reader<'_>,
) -> Result<Option<crate::billing::BillingDay>, LedgerError> {
    let Some(day) = r.opt_u32("billing_day")? else {
        return Ok(None);
    };
    let first_text = r.str("first_period")?;
    let first = crate::billing::FirstPeriod::parse(&first_text)
        .ok_or_else(|| LedgerError::Corrupt(format!("first_period {first_text:?}")))?;
    let day = u8::try_from(day)
        .ok()
        .filter(|d| crate::billing::calendar::BILLING_DAYS.contains(d))
        .ok_or_else(|| LedgerError::Corrupt(format!("billing_day {day}")))?;
    Ok(Some(crate::billing::BillingDay { day, first }))
}

/// `interval` (decision 75): absent for a monthly calendar, as on every
/// item written before intervals.
fn put_interval(item: &mut Item, interval: Interval) {
    if interval != Interval::Month {
        item.insert("interval".into(), s(interval.label()));
    }
}

fn interval(r: &Reader<'_>) -> Result<Interval, LedgerError> {
    match r.opt_str("interval")? {
        None => Ok(Interval::Month),
        Some(text) => {
            Interval::parse(&text).ok_or_else(|| LedgerError::Corrupt(format!("interval {text:?}")))
        }
    }
}

/// The subscription item. The due-index attributes are present only while
/// the subscription can be charged (a sparse index).
pub fn subscription_to_item(sub: &Subscription, shards: u32) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(sub_pk(&sub.id)));
    item.insert(SK.into(), s(META));
    item.insert("type".into(), s("subscription"));
    item.insert("subscription_id".into(), s(sub.id.as_str()));
    item.insert("user_id".into(), s(&sub.user_id));
    item.insert("customer_uid".into(), s(&sub.customer_uid));
    item.insert("pg".into(), s(&sub.pg));
    item.insert("plan_amount".into(), n(sub.plan.amount));
    item.insert("plan_name".into(), s(&sub.plan.name));
    item.insert("notice_days".into(), n(sub.plan.notice_days));
    put_tax(&mut item, "plan_tax", sub.plan.tax);
    super::plans::put_plan_ref(&mut item, sub.plan_ref.as_ref());
    item.insert("status".into(), s(sub.status.as_str()));
    item.insert("anchor".into(), s(sub.anchor.date_text()));
    // A billing day past the anchor month's end (the 31st in February).
    if sub.anchor.period_date(0).day() != sub.anchor.day {
        item.insert("anchor_day".into(), n(sub.anchor.day));
    }
    put_interval(&mut item, sub.anchor.interval);
    if let Some(p) = sub.partial {
        item.insert("partial_period".into(), n(p.index));
        item.insert("partial_days".into(), n(p.days));
        item.insert("partial_of".into(), n(p.of));
    }
    super::coupons::put_discount(&mut item, sub.discount.as_ref());
    item.insert("period_index".into(), n(sub.period_index));
    item.insert("attempt".into(), n(sub.attempt));
    item.insert("next_charge_at".into(), ts(sub.next_charge_at));
    put_opt(
        &mut item,
        "paid_through",
        sub.paid_through.as_ref().map(|p| s(p.as_str())),
    );
    item.insert("key_pg_provider".into(), s(&sub.key.pg_provider));
    put_opt(&mut item, "key_pg_id", sub.key.pg_id.as_ref().map(s));
    put_opt(
        &mut item,
        "key_card_name",
        sub.key.card_name.as_ref().map(s),
    );
    put_opt(
        &mut item,
        "key_card_number",
        sub.key.card_number.as_ref().map(s),
    );
    item.insert("key_inserted_at".into(), ts(sub.key.inserted_at));
    item.insert("version".into(), n(sub.version));
    item.insert("created_at".into(), ts(sub.created_at));
    item.insert("updated_at".into(), ts(sub.updated_at));
    if sub.cancel_at_period_end {
        item.insert("cancel_at_period_end".into(), AttributeValue::Bool(true));
    }
    if let Some(plan) = &sub.pending_plan {
        item.insert("pending_plan_amount".into(), n(plan.amount));
        item.insert("pending_plan_name".into(), s(&plan.name));
        item.insert("pending_notice_days".into(), n(plan.notice_days));
        put_tax(&mut item, "pending_plan_tax", plan.tax);
    }
    put_opt(&mut item, "ended_at", sub.ended_at.map(ts));
    put_opt(
        &mut item,
        "cancel_reason",
        sub.cancel_reason.as_ref().map(s),
    );
    put_opt(
        &mut item,
        "review_from",
        sub.review_from.map(|st| s(st.as_str())),
    );
    put_opt(&mut item, "last_run", sub.last_run.as_ref().map(s));
    put_opt(
        &mut item,
        "paid_on",
        sub.paid_on.map(|d| s(d.format("%Y-%m-%d").to_string())),
    );
    if sub.reanchor_on_payment {
        item.insert("reanchor_on_payment".into(), AttributeValue::Bool(true));
    }
    put_opt(
        &mut item,
        "action_reason",
        sub.action_reason.map(|c| s(c.as_str())),
    );
    put_buyer(&mut item, &sub.buyer);
    put_notice(&mut item, sub.notice.as_ref());
    super::trials::put_trial(&mut item, sub.trial.as_ref());
    super::price_changes::put_price_change(&mut item, sub.price_change.as_ref());
    if let Some(p) = &sub.pause {
        item.insert("paused_at".into(), ts(p.since));
        put_opt(&mut item, "resumes_at", p.resumes_at.map(ts));
    }
    if let Some(at) = sub.due_at() {
        item.insert(DUE_PK.into(), s(due_pk(sub.id.shard(shards))));
        item.insert(DUE_SK.into(), ts(at));
    }
    if let Some(at) = sub.awaiting_consent_since() {
        item.insert(CONSENT_PK.into(), s(consent_pk(sub.id.shard(shards))));
        item.insert(CONSENT_SK.into(), ts(at));
    }
    if let Some(plan) = sub.plan_member() {
        item.insert(
            PLAN_PK.into(),
            s(plan_member_pk(plan, sub.id.shard(shards))),
        );
        item.insert(PLAN_SK.into(), ts(sub.created_at));
    }
    item
}

pub fn subscription_from_item(item: &Item) -> Result<Subscription, LedgerError> {
    let r = Reader::new(item, "subscription");
    let status_text = r.str("status")?;
    let status = SubscriptionStatus::parse(&status_text)
        .ok_or_else(|| LedgerError::Corrupt(format!("subscription status {status_text:?}")))?;
    let anchor_text = r.str("anchor")?;
    let anchor = NaiveDate::parse_from_str(&anchor_text, "%Y-%m-%d")
        .ok()
        .and_then(|d| Anchor::new(d.year(), d.month(), d.day()))
        .ok_or_else(|| LedgerError::Corrupt(format!("subscription anchor {anchor_text:?}")))?
        .every(interval(&r)?);
    let anchor = match r.opt_u32("anchor_day")? {
        Some(day) if (1..=31).contains(&day) && day > anchor.day => Anchor { day, ..anchor },
        Some(day) => {
            return Err(LedgerError::Corrupt(format!(
                "subscription anchor_day {day}"
            )));
        }
        None => anchor,
    };
    Ok(Subscription {
        id: r.sub_id("subscription_id")?,
        user_id: r.str("user_id")?,
        customer_uid: r.str("customer_uid")?,
        pg: r.str("pg")?,
        plan: Plan {
            amount: r.i64("plan_amount")?,
            name: r.str("plan_name")?,
            notice_days: notice_days(&r, "notice_days")?,
            tax: tax(&r, "plan_tax")?,
        },
        plan_ref: super::plans::read_plan_ref(&r)?,
        buyer: read_buyer(&r)?,
        status,
        anchor,
        period_index: r.u32("period_index")?,
        attempt: r.u32("attempt")?,
        next_charge_at: r.time("next_charge_at")?,
        paid_through: r.opt_str("paid_through")?.and_then(|p| PeriodId::parse(&p)),
        key: KeyInfo {
            pg_provider: r.str("key_pg_provider")?,
            pg_id: r.opt_str("key_pg_id")?,
            card_name: r.opt_str("key_card_name")?,
            card_number: r.opt_str("key_card_number")?,
            inserted_at: r.time("key_inserted_at")?,
        },
        version: u64::try_from(r.i64("version")?)
            .map_err(|_| LedgerError::Corrupt("subscription version negative".into()))?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        cancel_at_period_end: r.bool("cancel_at_period_end")?,
        pending_plan: match r.opt_i64("pending_plan_amount")? {
            Some(amount) => Some(Plan {
                amount,
                name: r.str("pending_plan_name")?,
                notice_days: notice_days(&r, "pending_notice_days")?,
                tax: tax(&r, "pending_plan_tax")?,
            }),
            None => None,
        },
        ended_at: r.opt_time("ended_at")?,
        cancel_reason: r.opt_str("cancel_reason")?,
        review_from: match r.opt_str("review_from")? {
            Some(text) => Some(SubscriptionStatus::parse(&text).ok_or_else(|| {
                LedgerError::Corrupt(format!("subscription review_from {text:?}"))
            })?),
            None => None,
        },
        last_run: r.opt_str("last_run")?,
        paid_on: match r.opt_str("paid_on")? {
            Some(text) => Some(
                NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                    .map_err(|_| LedgerError::Corrupt(format!("subscription paid_on {text:?}")))?,
            ),
            None => None,
        },
        reanchor_on_payment: r.bool("reanchor_on_payment")?,
        action_reason: match r.opt_str("action_reason")? {
            None => None,
            Some(c) => Some(DeclineClass::parse(&c).ok_or_else(|| {
                LedgerError::Corrupt(format!("subscription action_reason {c:?}"))
            })?),
        },
        notice: read_notice(&r)?,
        trial: super::trials::read_trial(&r)?,
        price_change: super::price_changes::read_price_change(item)?,
        discount: super::coupons::read_discount(item)?,
        partial: match r.opt_u32("partial_period")? {
            None => None,
            Some(index) => Some(crate::billing::entities::PartialPeriod {
                index,
                days: r.u32("partial_days")?,
                of: r.u32("partial_of")?,
            }),
        },
        pause: match r.opt_time("paused_at")? {
            None => None,
            Some(since) => Some(crate::billing::pauses::Pause {
                since,
                resumes_at: r.opt_time("resumes_at")?,
            }),
        },
    })
}

/// A refund request's sort key, beside its attempt's.
pub fn refund_sk(merchant_uid: &str, key: &str) -> String {
    format!("REFUND#{merchant_uid}#{key}")
}

pub fn refund_to_item(pk: &str, sk: &str, r: &RefundIntent) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(pk));
    item.insert(SK.into(), s(sk));
    item.insert("type".into(), s("refund"));
    item.insert("key".into(), s(&r.key));
    item.insert("merchant_uid".into(), s(&r.merchant_uid));
    item.insert("imp_uid".into(), s(&r.imp_uid));
    item.insert("amount".into(), n(r.amount));
    item.insert("checksum".into(), n(r.checksum));
    item.insert("reason".into(), s(&r.reason));
    item.insert("state".into(), s(r.state.as_str()));
    item.insert("cause".into(), s(r.cause.as_str()));
    put_opt(&mut item, "refunded_total", r.refunded_total.map(n));
    put_opt(&mut item, "review_reason", r.review_reason.as_ref().map(s));
    item.insert("created_at".into(), ts(r.created_at));
    item.insert("updated_at".into(), ts(r.updated_at));
    item
}

pub fn refund_from_item(item: &Item) -> Result<RefundIntent, LedgerError> {
    let r = Reader::new(item, "refund");
    let state = r.str("state")?;
    Ok(RefundIntent {
        key: r.str("key")?,
        merchant_uid: r.str("merchant_uid")?,
        imp_uid: r.str("imp_uid")?,
        amount: r.i64("amount")?,
        checksum: r.i64("checksum")?,
        reason: r.str("reason")?,
        // Refunds asked before causes were kept were the merchant's.
        cause: match r.opt_str("cause")? {
            None => RefundCause::Requested,
            Some(c) => RefundCause::parse(&c)
                .ok_or_else(|| LedgerError::Corrupt(format!("refund cause {c:?}")))?,
        },
        state: RefundState::parse(&state)
            .ok_or_else(|| LedgerError::Corrupt(format!("refund state {state:?}")))?,
        refunded_total: r.opt_i64("refunded_total")?,
        review_reason: r.opt_str("review_reason")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub fn attempt_to_item(a: &ChargeAttempt) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(sub_pk(&a.subscription_id)));
    item.insert(SK.into(), s(attempt_sk(&a.period, a.attempt)));
    item.insert("type".into(), s("charge"));
    item.insert("subscription_id".into(), s(a.subscription_id.as_str()));
    item.insert("period".into(), s(a.period.as_str()));
    item.insert("attempt".into(), n(a.attempt));
    item.insert("merchant_uid".into(), s(&a.merchant_uid));
    // A reference to the key, never the key (a V2 billing key is a secret
    // and this item reaches the table's stream).
    item.insert("key_ref".into(), s(&a.key_ref));
    item.insert("sends".into(), n(a.sends));
    item.insert("amount".into(), n(a.amount));
    item.insert("state".into(), s(a.state.as_str()));
    put_opt(&mut item, "claim_token", a.claim_token.as_ref().map(s));
    put_opt(&mut item, "lease_until", a.lease_until.map(ts));
    put_opt(&mut item, "sent_at", a.sent_at.map(ts));
    put_opt(&mut item, "imp_uid", a.imp_uid.as_ref().map(s));
    put_opt(&mut item, "paid_at", a.paid_at.map(ts));
    put_opt(&mut item, "fail_reason", a.fail_reason.as_ref().map(s));
    put_opt(&mut item, "decline", a.decline.map(|c| s(c.as_str())));
    put_opt(&mut item, "receipt_url", a.receipt_url.as_ref().map(s));
    if let Some(r) = &a.cash_receipt {
        item.insert("cash_receipt".into(), super::receipts::to_value(r));
    }
    // Absent when nothing is tax-free (items older than taxes are taxable).
    put_opt(
        &mut item,
        "tax_free",
        (a.tax_free != 0).then(|| n(a.tax_free)),
    );
    put_opt(&mut item, "vat", a.vat.map(n));
    item.insert("refunded".into(), n(a.refunded));
    put_opt(
        &mut item,
        "refund_cause",
        a.refund_cause.map(|c| s(c.as_str())),
    );
    put_resolution(&mut item, a.resolution.as_ref());
    put_opt(&mut item, "retry_at", a.retry_at.map(ts));
    item.insert("created_at".into(), ts(a.created_at));
    item.insert("updated_at".into(), ts(a.updated_at));
    item
}

pub fn attempt_from_item(item: &Item) -> Result<ChargeAttempt, LedgerError> {
    let r = Reader::new(item, "charge attempt");
    let state_text = r.str("state")?;
    let period_text = r.str("period")?;
    Ok(ChargeAttempt {
        subscription_id: r.sub_id("subscription_id")?,
        period: PeriodId::parse(&period_text)
            .ok_or_else(|| LedgerError::Corrupt(format!("charge period {period_text:?}")))?,
        attempt: r.u32("attempt")?,
        merchant_uid: r.str("merchant_uid")?,
        // Items written before references kept the key itself.
        key_ref: match r.opt_str("key_ref")? {
            Some(k) => k,
            None => r.str("customer_uid")?,
        },
        sends: match r.opt_i64("sends")? {
            Some(n) => u32::try_from(n.max(0)).unwrap_or(0),
            None => u32::from(r.opt_time("sent_at")?.is_some()),
        },
        amount: r.i64("amount")?,
        state: AttemptState::parse(&state_text)
            .ok_or_else(|| LedgerError::Corrupt(format!("charge state {state_text:?}")))?,
        claim_token: r.opt_str("claim_token")?,
        lease_until: r.opt_time("lease_until")?,
        sent_at: r.opt_time("sent_at")?,
        imp_uid: r.opt_str("imp_uid")?,
        paid_at: r.opt_time("paid_at")?,
        fail_reason: r.opt_str("fail_reason")?,
        decline: match r.opt_str("decline")? {
            None => None,
            Some(c) => Some(
                DeclineClass::parse(&c)
                    .ok_or_else(|| LedgerError::Corrupt(format!("attempt decline {c:?}")))?,
            ),
        },
        receipt_url: r.opt_str("receipt_url")?,
        refunded: r.opt_i64("refunded")?.unwrap_or(0),
        cash_receipt: super::receipts::from_item(item)?,
        refund_cause: match r.opt_str("refund_cause")? {
            None => None,
            Some(c) => Some(
                RefundCause::parse(&c)
                    .ok_or_else(|| LedgerError::Corrupt(format!("attempt refund_cause {c:?}")))?,
            ),
        },
        resolution: read_resolution(&r)?,
        retry_at: r.opt_time("retry_at")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        tax_free: r.opt_i64("tax_free")?.unwrap_or(0),
        vat: r.opt_i64("vat")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Subscription {
        let t = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        Subscription {
            id: SubscriptionId::parse("abcdefghij01").unwrap(),
            user_id: "user-42".into(),
            customer_uid: "cu_0123".into(),
            pg: "chai".into(),
            plan: Plan {
                amount: 9900,
                name: "월간 구독".into(),
                notice_days: 5,
                tax: crate::billing::TaxSetting::Taxable,
            },
            plan_ref: None,
            buyer: Buyer {
                name: None,
                email: Some(Pii::new("a@example.com")),
                tel: None,
                cash_receipt: None,
            },
            status: SubscriptionStatus::Active,
            anchor: Anchor::new(2026, 1, 31).unwrap().every(Interval::Year),
            period_index: 3,
            attempt: 2,
            next_charge_at: t,
            paid_through: PeriodId::parse("202603"),
            key: KeyInfo {
                pg_provider: "chai".into(),
                pg_id: Some("pk".into()),
                card_name: None,
                card_number: None,
                inserted_at: t,
            },
            version: 7,
            created_at: t,
            updated_at: t,
            cancel_at_period_end: false,
            pending_plan: None,
            ended_at: None,
            cancel_reason: None,
            review_from: None,
            last_run: Some("exec-1".into()),
            paid_on: NaiveDate::from_ymd_opt(2026, 3, 31),
            reanchor_on_payment: true,
            action_reason: Some(DeclineClass::CardExpired),
            notice: Some(crate::billing::notices::SentNotice {
                period: PeriodId::parse("202602").unwrap_or_else(|| panic!("period")),
                kind: crate::billing::notices::NoticeKind::ActionRequired,
                amount: 9900,
                charge_at: t + chrono::Duration::days(7),
                sent_at: t,
                key_checked: true,
            }),
            trial: Some(crate::billing::trials::Trial {
                terms: crate::billing::trials::TrialTerms {
                    days: 30,
                    consent: crate::billing::trials::ConversionConsent::Signup,
                    on_no_consent: crate::billing::trials::OnNoConsent::Cancel,
                },
                ends_at: t - chrono::Duration::days(60),
                extended: false,
                consent: Some(crate::billing::trials::Consent {
                    channel: "web".into(),
                    reference: "tick-1".into(),
                    at: t - chrono::Duration::days(90),
                    recorded_at: t - chrono::Duration::days(90),
                }),
            }),
            price_change: Some(crate::billing::price_changes::PriceChange {
                plan: Plan {
                    amount: 14_900,
                    name: "월간 구독".into(),
                    notice_days: 7,
                    tax: crate::billing::TaxSetting::Taxable,
                },
                plan_ref: Some(crate::billing::plans::PlanRef {
                    id: crate::billing::plans::PlanId::parse("monthly")
                        .unwrap_or_else(|| panic!("plan id")),
                    version: 2,
                }),
                from_amount: 9900,
                effective: PeriodId::parse("202605").unwrap_or_else(|| panic!("period")),
                on_no_consent: crate::billing::price_changes::OnNoConsent::KeepOldPrice,
                requested_at: t,
                asks_at: Some(t + chrono::Duration::days(3)),
                asked_at: Some(t + chrono::Duration::days(3)),
                consent: Some(crate::billing::trials::Consent {
                    channel: "app".into(),
                    reference: "pc-1".into(),
                    at: t + chrono::Duration::days(4),
                    recorded_at: t + chrono::Duration::days(4),
                }),
                declined_at: None,
                closed: Some((
                    crate::billing::price_changes::Outcome::Applied,
                    t + chrono::Duration::days(30),
                )),
                coupon: crate::billing::coupons::CouponId::parse("launch-3m"),
            }),
            // A coupon's discount (decision 78), stored and read back.
            discount: Some(crate::billing::coupons::Discount {
                coupon: crate::billing::coupons::CouponId::parse("launch-3m")
                    .unwrap_or_else(|| panic!("coupon id")),
                off: crate::billing::coupons::Off::Percent(50),
                duration: crate::billing::coupons::CouponDuration::Repeating(3),
                from: PeriodId::parse("202602").unwrap_or_else(|| panic!("period")),
                until: PeriodId::parse("202605"),
                redeemed_at: t,
                end_disclosed: false,
            }),
            // Stored and read back (decision 76); a paused status is set
            // where the due index is checked.
            pause: Some(crate::billing::pauses::Pause {
                since: t,
                resumes_at: Some(t + chrono::Duration::days(40)),
            }),
            partial: Some(crate::billing::entities::PartialPeriod {
                index: 0,
                days: 23,
                of: 31,
            }),
        }
    }

    #[test]
    fn subscription_round_trips_and_index_is_sparse() {
        let sub = sample();
        let item = subscription_to_item(&sub, 4);
        assert_eq!(subscription_from_item(&item).unwrap(), sub);
        assert!(item.contains_key(DUE_PK));
        assert_eq!(item.get(DUE_SK), Some(&n(1_790_000_000)));
        let suspended = Subscription {
            status: SubscriptionStatus::Suspended,
            ..sub
        };
        let item = subscription_to_item(&suspended, 4);
        assert!(!item.contains_key(DUE_PK) && !item.contains_key(DUE_SK));
    }

    #[test]
    fn corrupt_items_name_the_field() {
        let mut item = subscription_to_item(&sample(), 4);
        item.insert("plan_amount".into(), s("lots"));
        let err = subscription_from_item(&item).unwrap_err();
        assert!(err.to_string().contains("plan_amount"), "{err}");
    }
}
