//! The plan catalogue on DynamoDB. Each version is its own item,
//! `PLAN#{id}` / `V#{version}`, written once; the catalogue's entry for a
//! plan is a copy of its newest version under one partition, `PLANS` /
//! `LATEST#{id}`, so listing the catalogue is one `Query` (no Scan) and a
//! plan's current version one `GetItem`. Both are written in one
//! transaction; the entry only ever moves to a higher version.

use aws_sdk_dynamodb::types::AttributeValue;

use super::*;
use crate::billing::plans::{Interval, PlanId, PlanRecord, PlanRef};
use crate::billing::rollouts::Rollout;
use crate::ledger::PlanPage;

const CATALOGUE_PK: &str = "PLANS";
const LATEST: &str = "LATEST#";
/// A page cursor of the catalogue: the last id of the page before.
const CURSOR_PREFIX: &str = "plans|";

fn version_pk(id: &PlanId) -> String {
    format!("PLAN#{id}")
}

fn version_sk(version: u32) -> String {
    format!("V#{version:010}")
}

fn plan_item(plan: &PlanRecord, pk: String, sk: String) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(pk));
    item.insert(SK.into(), s(sk));
    item.insert("type".into(), s("plan"));
    item.insert("plan_id".into(), s(plan.id.as_str()));
    item.insert("plan_version".into(), n(plan.version));
    item.insert("plan_name".into(), s(&plan.name));
    item.insert("plan_amount".into(), n(plan.amount));
    item.insert("interval".into(), s(plan.interval.label()));
    item.insert("notice_days".into(), n(plan.notice_days));
    item::put_tax(&mut item, "plan_tax", plan.tax);
    super::trials::put_terms(&mut item, plan.trial.as_ref());
    item::put_billing_day(&mut item, plan.billing);
    item.insert("created_at".into(), ts(plan.created_at));
    item
}

fn plan_from_item(item: &Item) -> Result<PlanRecord, LedgerError> {
    let r = item::Reader::new(item, "plan");
    let id_text = r.str("plan_id")?;
    let interval_text = r.str("interval")?;
    Ok(PlanRecord {
        id: PlanId::parse(&id_text)
            .ok_or_else(|| LedgerError::Corrupt(format!("plan id {id_text:?}")))?,
        version: r.u32("plan_version")?,
        name: r.str("plan_name")?,
        amount: r.i64("plan_amount")?,
        interval: Interval::parse(&interval_text)
            .ok_or_else(|| LedgerError::Corrupt(format!("plan interval {interval_text:?}")))?,
        notice_days: super::item::notice_days(&r, "notice_days")?,
        trial: super::trials::read_terms(&r)?,
        tax: item::tax(&r, "plan_tax")?,
        billing: item::billing_day(&r)?,
        created_at: r.time("created_at")?,
    })
}

/// The plan version a registration or subscription item names, if any.
pub(super) fn put_plan_ref(item: &mut Item, plan_ref: Option<&PlanRef>) {
    if let Some(p) = plan_ref {
        item.insert("plan_id".into(), s(p.id.as_str()));
        item.insert("plan_version".into(), n(p.version));
    }
}

pub(super) fn read_plan_ref(r: &item::Reader<'_>) -> Result<Option<PlanRef>, LedgerError> {
    let Some(id) = r.opt_str("plan_id")? else {
        return Ok(None);
    };
    let id = PlanId::parse(&id).ok_or_else(|| LedgerError::Corrupt(format!("plan id {id:?}")))?;
    Ok(Some(PlanRef {
        id,
        version: r.u32("plan_version")?,
    }))
}

pub(super) async fn put_plan(db: &DynamoLedger, plan: &PlanRecord) -> Result<(), LedgerError> {
    db.transact(version_writes(db, plan, true)?, "TransactWriteItems plan")
        .await
}

/// A plan version's item and the catalogue's entry moved to it (never
/// back): a new plan's entry may not exist yet, a next version's must.
fn version_writes(
    db: &DynamoLedger,
    plan: &PlanRecord,
    new_plan: bool,
) -> Result<Vec<TransactWriteItem>, LedgerError> {
    let version = plan_item(plan, version_pk(&plan.id), version_sk(plan.version));
    let mut latest = Put::builder()
        .table_name(&db.table)
        .set_item(Some(plan_item(
            plan,
            CATALOGUE_PK.into(),
            format!("{LATEST}{}", plan.id),
        )))
        .expression_attribute_values(":version", n(plan.version));
    latest = if new_plan {
        latest
            .condition_expression("attribute_not_exists(#pk) OR plan_version < :version")
            .expression_attribute_names("#pk", PK)
    } else {
        latest.condition_expression("plan_version < :version")
    };
    Ok(vec![
        TransactWriteItem::builder()
            .put(db.put_new(version)?)
            .build(),
        TransactWriteItem::builder()
            .put(latest.build().map_err(build_error)?)
            .build(),
    ])
}

pub(super) async fn get_plan(
    db: &DynamoLedger,
    id: &PlanId,
    version: Option<u32>,
) -> Result<Option<PlanRecord>, LedgerError> {
    let item = match version {
        Some(v) => db.get(version_pk(id), &version_sk(v)).await?,
        None => {
            db.get(CATALOGUE_PK.into(), &format!("{LATEST}{id}"))
                .await?
        }
    };
    item.map(|i| plan_from_item(&i)).transpose()
}

pub(super) async fn plans_page(
    db: &DynamoLedger,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<PlanPage, LedgerError> {
    let start = match cursor {
        None => None,
        Some(c) => {
            let id =
                c.0.strip_prefix(CURSOR_PREFIX)
                    .and_then(PlanId::parse)
                    .ok_or_else(|| {
                        LedgerError::Fatal(format!("not a cursor of this ledger: {:?}", c.0))
                    })?;
            let mut key = Item::new();
            key.insert(PK.into(), s(CATALOGUE_PK));
            key.insert(SK.into(), s(format!("{LATEST}{id}")));
            Some(key)
        }
    };
    let out = db
        .client
        .query()
        .table_name(&db.table)
        .key_condition_expression("#pk = :catalogue AND begins_with(#sk, :latest)")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#sk", SK)
        .expression_attribute_values(":catalogue", s(CATALOGUE_PK))
        .expression_attribute_values(":latest", s(LATEST))
        .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(100))
        .consistent_read(true)
        .set_exclusive_start_key(start)
        .send()
        .await
        .map_err(|e| sdk_error(e, "Query plans"))?;
    let plans = out
        .items
        .unwrap_or_default()
        .iter()
        .map(plan_from_item)
        .collect::<Result<Vec<_>, _>>()?;
    let next = out
        .last_evaluated_key
        .filter(|k| !k.is_empty())
        .and_then(|k| match k.get(SK) {
            Some(AttributeValue::S(sk)) => sk
                .strip_prefix(LATEST)
                .map(|id| Cursor(format!("{CURSOR_PREFIX}{id}"))),
            _ => None,
        });
    Ok(PlanPage { plans, next })
}

// ---- plan-wide price changes (decision 71) -------------------------------
//
// A plan's rollout is one item in the catalogue's partition,
// `PLANS` / `ROLLOUT#{id}`: written with the version it moves to, then
// overwritten by each page the runs plan (`rev` checked), and by the plan's
// next rollout once this one is done.

const ROLLOUT: &str = "ROLLOUT#";

fn rollout_item(r: &Rollout) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(CATALOGUE_PK));
    item.insert(SK.into(), s(format!("{ROLLOUT}{}", r.plan_id)));
    item.insert("type".into(), s("rollout"));
    item.insert("plan_id".into(), s(r.plan_id.as_str()));
    item.insert("to_version".into(), n(r.to_version));
    item.insert("plan_name".into(), s(&r.plan.name));
    item.insert("plan_amount".into(), n(r.plan.amount));
    item.insert("notice_days".into(), n(r.plan.notice_days));
    item::put_tax(&mut item, "plan_tax", r.plan.tax);
    item.insert("effective".into(), s(r.effective.as_str()));
    item.insert("on_no_consent".into(), s(r.on_no_consent.as_str()));
    item.insert("requested_at".into(), ts(r.requested_at));
    item::put_opt(&mut item, "cursor", r.cursor.as_ref().map(s));
    item.insert("planned".into(), n(r.planned));
    item.insert("skipped".into(), n(r.skipped));
    item::put_opt(&mut item, "done_at", r.done_at.map(ts));
    item.insert("rev".into(), n(r.rev));
    item
}

fn rollout_from_item(item: &Item) -> Result<Rollout, LedgerError> {
    use crate::billing::price_changes::OnNoConsent;
    let r = item::Reader::new(item, "rollout");
    let id = r.str("plan_id")?;
    let effective = r.str("effective")?;
    let on_no_consent = r.str("on_no_consent")?;
    Ok(Rollout {
        plan_id: PlanId::parse(&id)
            .ok_or_else(|| LedgerError::Corrupt(format!("rollout plan id {id:?}")))?,
        to_version: r.u32("to_version")?,
        plan: crate::billing::Plan {
            amount: r.i64("plan_amount")?,
            name: r.str("plan_name")?,
            notice_days: super::item::notice_days(&r, "notice_days")?,
            tax: item::tax(&r, "plan_tax")?,
        },
        effective: PeriodId::parse(&effective)
            .ok_or_else(|| LedgerError::Corrupt(format!("rollout period {effective:?}")))?,
        on_no_consent: OnNoConsent::parse(&on_no_consent).ok_or_else(|| {
            LedgerError::Corrupt(format!("rollout on_no_consent {on_no_consent:?}"))
        })?,
        requested_at: r.time("requested_at")?,
        cursor: r.opt_str("cursor")?,
        planned: r.u32("planned")?,
        skipped: r.u32("skipped")?,
        done_at: r.opt_time("done_at")?,
        rev: u64::try_from(r.i64("rev")?)
            .map_err(|_| LedgerError::Corrupt("rollout rev".into()))?,
    })
}

pub(super) async fn put_plan_rollout(
    db: &DynamoLedger,
    plan: &PlanRecord,
    rollout: &Rollout,
) -> Result<(), LedgerError> {
    let rollout = Put::builder()
        .table_name(&db.table)
        .set_item(Some(rollout_item(rollout)))
        .condition_expression("attribute_not_exists(#pk) OR attribute_exists(done_at)")
        .expression_attribute_names("#pk", PK)
        .build()
        .map_err(build_error)?;
    let mut items = version_writes(db, plan, false)?;
    items.push(TransactWriteItem::builder().put(rollout).build());
    db.transact(items, "TransactWriteItems plan rollout").await
}

pub(super) async fn get_rollout(
    db: &DynamoLedger,
    plan: &PlanId,
) -> Result<Option<Rollout>, LedgerError> {
    db.get(CATALOGUE_PK.into(), &format!("{ROLLOUT}{plan}"))
        .await?
        .map(|i| rollout_from_item(&i))
        .transpose()
}

pub(super) async fn open_rollouts(db: &DynamoLedger) -> Result<Vec<Rollout>, LedgerError> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .client
            .query()
            .table_name(&db.table)
            .key_condition_expression("#pk = :catalogue AND begins_with(#sk, :rollout)")
            .filter_expression("attribute_not_exists(done_at)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":catalogue", s(CATALOGUE_PK))
            .expression_attribute_values(":rollout", s(ROLLOUT))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error(e, "Query rollouts"))?;
        for item in page.items.unwrap_or_default() {
            out.push(rollout_from_item(&item)?);
        }
        start = page.last_evaluated_key.filter(|k| !k.is_empty());
        if start.is_none() {
            return Ok(out);
        }
    }
}

pub(super) async fn save_rollout(db: &DynamoLedger, next: &Rollout) -> Result<(), LedgerError> {
    let prev = next.rev.checked_sub(1).ok_or_else(|| {
        LedgerError::Conflict("a rollout's first write is put_plan_rollout".into())
    })?;
    db.client
        .put_item()
        .table_name(&db.table)
        .set_item(Some(rollout_item(next)))
        .condition_expression("rev = :prev AND to_version = :version")
        .expression_attribute_values(":prev", n(prev))
        .expression_attribute_values(":version", n(next.to_version))
        .send()
        .await
        .map_err(|e| sdk_error(e, "PutItem rollout"))?;
    Ok(())
}
