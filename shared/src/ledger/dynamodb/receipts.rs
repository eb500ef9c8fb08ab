//! Cash receipts on DynamoDB (decision 74): the receipt is a map attribute
//! `cash_receipt` of its charge attempt, and the attempt sits in the sparse
//! `receipts` index while the receipt has work to do (partition
//! `RECEIPT#{shard}`, sort the time to look at it) or waits for a person
//! (`RECEIPT#REVIEW`). Each write is made on the revision read.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Reader, put_opt};
use super::table::{RECEIPT_INDEX, RECEIPT_PK, RECEIPT_SK};
use super::*;
use crate::billing::receipts::IssuedReceipt;
use crate::billing::{CashReceipt, ReceiptHolder, ReceiptKind, ReceiptState};
use crate::ledger::{ReceiptPage, ReceiptQueue};

/// The partition of receipts waiting for a person.
pub(super) const RECEIPT_REVIEW_PK: &str = "RECEIPT#REVIEW";

pub(super) fn receipt_pk(shard: u32) -> String {
    format!("RECEIPT#{shard}")
}

/// Where `r` sits in the `receipts` index, if anywhere.
pub(super) fn queue_key(r: &CashReceipt, shard: u32) -> Option<(String, i64)> {
    match r.state {
        ReceiptState::Review => Some((RECEIPT_REVIEW_PK.into(), r.updated_at.timestamp())),
        _ => r.queued_at().map(|at| (receipt_pk(shard), at.timestamp())),
    }
}

pub(super) fn to_value(r: &CashReceipt) -> AttributeValue {
    let mut m = HashMap::new();
    m.insert("rev".to_owned(), n(r.rev));
    m.insert("state".to_owned(), s(r.state.as_str()));
    m.insert("kind".to_owned(), s(r.holder.kind.as_str()));
    // PII, as the buyer's other details are kept.
    m.insert("identifier".to_owned(), s(r.holder.identifier.expose()));
    if let Some(live) = &r.live {
        m.insert("amount".to_owned(), n(live.amount));
        m.insert("tax_free".to_owned(), n(live.tax_free));
        m.insert("vat".to_owned(), n(live.vat));
        m.insert("issue_number".to_owned(), s(&live.issue_number));
        put_opt(&mut m, "url", live.url.as_ref().map(s));
        m.insert("issued_at".to_owned(), ts(live.issued_at));
    }
    m.insert("issues".to_owned(), n(r.issues));
    m.insert("cancels".to_owned(), n(r.cancels));
    m.insert("tries".to_owned(), n(r.tries));
    put_opt(&mut m, "unsure_since", r.unsure_since.map(ts));
    put_opt(&mut m, "token", r.token.as_ref().map(s));
    put_opt(&mut m, "lease_until", r.lease_until.map(ts));
    put_opt(&mut m, "next_at", r.next_at.map(ts));
    put_opt(&mut m, "last_error", r.last_error.as_ref().map(s));
    put_opt(&mut m, "cancelled_at", r.cancelled_at.map(ts));
    m.insert("updated_at".to_owned(), ts(r.updated_at));
    AttributeValue::M(m)
}

pub(super) fn from_item(item: &Item) -> Result<Option<CashReceipt>, LedgerError> {
    let m = match item.get("cash_receipt") {
        None | Some(AttributeValue::Null(_)) => return Ok(None),
        Some(AttributeValue::M(m)) => m,
        Some(_) => return Err(LedgerError::Corrupt("cash_receipt: not a map".into())),
    };
    let r = Reader::new(m, "cash receipt");
    let state = r.str("state")?;
    let kind = r.str("kind")?;
    let live = match r.opt_str("issue_number")? {
        None => None,
        Some(issue_number) => Some(IssuedReceipt {
            amount: r.i64("amount")?,
            tax_free: r.i64("tax_free")?,
            vat: r.i64("vat")?,
            issue_number,
            url: r.opt_str("url")?,
            issued_at: r.time("issued_at")?,
        }),
    };
    Ok(Some(CashReceipt {
        rev: r.u32("rev")?,
        state: ReceiptState::parse(&state)
            .ok_or_else(|| LedgerError::Corrupt(format!("receipt state {state:?}")))?,
        holder: ReceiptHolder {
            kind: ReceiptKind::parse(&kind)
                .ok_or_else(|| LedgerError::Corrupt(format!("receipt kind {kind:?}")))?,
            identifier: r
                .pii("identifier")?
                .ok_or_else(|| LedgerError::Corrupt("receipt identifier missing".into()))?,
        },
        live,
        issues: r.u32("issues")?,
        cancels: r.u32("cancels")?,
        tries: r.u32("tries")?,
        unsure_since: r.opt_time("unsure_since")?,
        token: r.opt_str("token")?,
        lease_until: r.opt_time("lease_until")?,
        next_at: r.opt_time("next_at")?,
        last_error: r.opt_str("last_error")?,
        cancelled_at: r.opt_time("cancelled_at")?,
        updated_at: r.time("updated_at")?,
    }))
}

/// Adds the receipt and its index keys to an attempt item being written whole.
pub(super) fn put_into(item: &mut Item, r: &CashReceipt, shard: u32) {
    item.insert("cash_receipt".into(), to_value(r));
    if let Some((pk, sk)) = queue_key(r, shard) {
        item.insert(RECEIPT_PK.into(), s(pk));
        item.insert(RECEIPT_SK.into(), n(sk));
    }
}

/// The `SET`s that write `r` on an attempt (with its index keys) and the
/// `REMOVE`s, with their values.
pub(super) fn assignments(
    r: &CashReceipt,
    shard: u32,
) -> (Vec<&'static str>, Vec<&'static str>, Values) {
    let mut values = vec![(":cash_receipt", to_value(r))];
    match queue_key(r, shard) {
        Some((pk, sk)) => {
            values.push((":rqpk", s(pk)));
            values.push((":rqsk", n(sk)));
            (
                vec![
                    "cash_receipt = :cash_receipt",
                    "#rqpk = :rqpk",
                    "#rqsk = :rqsk",
                ],
                vec![],
                values,
            )
        }
        None => (
            vec!["cash_receipt = :cash_receipt"],
            vec!["#rqpk", "#rqsk"],
            values,
        ),
    }
}

/// Names of the index attributes used by [`assignments`] and [`requeue`].
pub(super) const NAMES: [(&str, &str); 2] = [("#rqpk", RECEIPT_PK), ("#rqsk", RECEIPT_SK)];

/// The `SET` that puts an attempt's receipt back in the queue at `now` (a
/// refund changed what it must cover), with its values.
pub(super) fn requeue(shard: u32, now: DateTime<Utc>) -> (&'static str, Values) {
    (
        "#rqpk = :rqpk, #rqsk = :rqsk",
        vec![(":rqpk", s(receipt_pk(shard))), (":rqsk", ts(now))],
    )
}

pub(super) async fn save_receipt(
    db: &DynamoLedger,
    attempt: &ChargeAttempt,
    next: &CashReceipt,
    refunded: Option<i64>,
) -> Result<(), LedgerError> {
    let (pk, sk) = DynamoLedger::attempt_key(attempt);
    let (set, remove, values) = assignments(next, attempt.subscription_id.shard(db.shards));
    let mut expression = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    let mut condition = if next.rev == 0 {
        "attribute_exists(#pk) AND attribute_not_exists(cash_receipt)".to_owned()
    } else {
        "cash_receipt.rev = :rev".to_owned()
    };
    if refunded.is_some() {
        condition.push_str(" AND refunded = :refunded");
    }
    let mut update = db
        .client
        .update_item()
        .table_name(&db.table)
        .key(PK, s(pk))
        .key(SK, s(sk))
        .update_expression(expression)
        .condition_expression(condition);
    if next.rev == 0 {
        update = update.expression_attribute_names("#pk", PK);
    } else {
        update = update.expression_attribute_values(":rev", n(next.rev - 1));
    }
    if let Some(r) = refunded {
        update = update.expression_attribute_values(":refunded", n(r));
    }
    for (k, v) in NAMES {
        update = update.expression_attribute_names(k, v);
    }
    for (k, v) in values {
        update = update.expression_attribute_values(k, v);
    }
    update
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sdk_error(e, "UpdateItem cash receipt"))
}

pub(super) async fn receipt_page(
    db: &DynamoLedger,
    queue: ReceiptQueue,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<ReceiptPage, LedgerError> {
    let (partitions, upto): (Vec<String>, Option<i64>) = match queue {
        ReceiptQueue::Due(now) => (
            (0..db.shards).map(receipt_pk).collect(),
            Some(now.timestamp()),
        ),
        ReceiptQueue::Review => (vec![RECEIPT_REVIEW_PK.into()], None),
    };
    let bad = |c: &Cursor| LedgerError::Fatal(format!("not a receipt cursor: {:?}", c.0));
    // `{partition index}` or `{partition index}|{pk}|{sk}|{index sk}`.
    let (mut part, mut start) = match cursor {
        None => (0usize, None),
        Some(c) => {
            let bits: Vec<&str> = c.0.split('|').collect();
            let part: usize = bits
                .first()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| bad(c))?;
            match bits.as_slice() {
                [_] => (part, None),
                [_, pk, sk, isk] => {
                    let ipk = partitions.get(part).ok_or_else(|| bad(c))?;
                    let mut key = Item::new();
                    key.insert(PK.into(), s(*pk));
                    key.insert(SK.into(), s(*sk));
                    key.insert(RECEIPT_PK.into(), s(ipk.clone()));
                    key.insert(
                        RECEIPT_SK.into(),
                        n(isk.parse::<i64>().map_err(|_| bad(c))?),
                    );
                    (part, Some(key))
                }
                _ => return Err(bad(c)),
            }
        }
    };
    let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(100);
    loop {
        let Some(partition) = partitions.get(part) else {
            return Ok(ReceiptPage::default());
        };
        let mut query = db
            .client
            .query()
            .table_name(&db.table)
            .index_name(RECEIPT_INDEX)
            .expression_attribute_names("#ipk", RECEIPT_PK)
            .expression_attribute_values(":p", s(partition.clone()))
            .projection_expression("#pk, #sk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .limit(limit)
            .set_exclusive_start_key(start.take());
        query = match upto {
            Some(upto) => query
                .key_condition_expression("#ipk = :p AND #isk <= :upto")
                .expression_attribute_names("#isk", RECEIPT_SK)
                .expression_attribute_values(":upto", n(upto)),
            None => query.key_condition_expression("#ipk = :p"),
        };
        let out = query
            .send()
            .await
            .map_err(|e| sdk_error(e, "Query receipts"))?;
        let mut page = ReceiptPage::default();
        for entry in out.items.unwrap_or_default() {
            let r = Reader::new(&entry, "receipt entry");
            let (pk, sk) = (r.str(PK)?, r.str(SK)?);
            page.attempts
                .push(attempt_key_from(&pk, &sk).ok_or_else(|| {
                    LedgerError::Corrupt(format!("receipt entry with key {pk:?}/{sk:?}"))
                })?);
        }
        let text = |key: &Item, k: &str| match key.get(k) {
            Some(AttributeValue::S(v) | AttributeValue::N(v)) => Some(v.clone()),
            _ => None,
        };
        page.next = match out.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(key) => (|| {
                Some(Cursor(format!(
                    "{part}|{}|{}|{}",
                    text(&key, PK)?,
                    text(&key, SK)?,
                    text(&key, RECEIPT_SK)?
                )))
            })(),
            None if part + 1 < partitions.len() => Some(Cursor(format!("{}", part + 1))),
            None => None,
        };
        if page.attempts.is_empty()
            && let Some(c) = &page.next
            && !c.0.contains('|')
        {
            part += 1;
            continue;
        }
        return Ok(page);
    }
}
