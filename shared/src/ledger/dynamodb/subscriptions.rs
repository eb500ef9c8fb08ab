//! Subscriptions on DynamoDB: reads, versioned changes, the audit history and the
//! due index.

use super::*;

pub(super) async fn get_subscription(
    db: &DynamoLedger,
    id: &SubscriptionId,
) -> Result<Option<Subscription>, LedgerError> {
    match db.get(sub_pk(id), META).await? {
        Some(item) => Ok(Some(db.read_sub(&item).await?)),
        None => Ok(None),
    }
}

pub(super) async fn change_subscription(
    db: &DynamoLedger,
    change: &SubscriptionChange<'_>,
) -> Result<(), LedgerError> {
    let next = change.next;
    if change.audit.is_none() && change.lock == LockChange::Keep {
        db.client
            .put_item()
            .table_name(&db.table)
            .set_item(Some(db.sub_item(next).await?))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(next.version.saturating_sub(1)))
            .send()
            .await
            .map_err(|e| sdk_error(e, "PutItem subscription"))?;
        return Ok(());
    }
    db.transact(
        change_writes(db, change).await?,
        "TransactWriteItems change subscription",
    )
    .await
}

/// The writes of a change as one transaction: the subscription (version
/// checked), its audit entry, and what happens to the user's lock.
pub(super) async fn change_writes(
    db: &DynamoLedger,
    change: &SubscriptionChange<'_>,
) -> Result<Vec<TransactWriteItem>, LedgerError> {
    let next = change.next;
    let mut items = vec![
        TransactWriteItem::builder()
            .put(db.versioned_put(next).await?)
            .build(),
    ];
    if let Some(audit) = change.audit {
        items.push(
            TransactWriteItem::builder()
                .put(db.put(audit_to_item(audit)))
                .build(),
        );
    }
    let (release, take) = match change.lock {
        LockChange::Keep => (None, None),
        LockChange::Release(name) => (Some(name), None),
        LockChange::Move { from, to } => (Some(from), Some(to)),
    };
    if let Some(name) = release {
        items.extend(db.let_go_of_lock(next, name).await?);
    }
    if let Some(name) = take {
        let put = Put::builder()
            .table_name(&db.table)
            .set_item(Some(lock_item(&next.user_id, name, &next.id)))
            .condition_expression("attribute_not_exists(#pk) OR subscription_id = :id")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":id", s(next.id.as_str()))
            .build()
            .map_err(build_error)?;
        items.push(TransactWriteItem::builder().put(put).build());
    }
    Ok(items)
}

pub(super) async fn history(
    db: &DynamoLedger,
    id: &SubscriptionId,
    limit: usize,
) -> Result<Vec<AuditEntry>, LedgerError> {
    let out = db
        .client
        .query()
        .table_name(&db.table)
        .key_condition_expression("#pk = :pk AND begins_with(#sk, :audit)")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#sk", SK)
        .expression_attribute_values(":pk", s(sub_pk(id)))
        .expression_attribute_values(":audit", s("AUDIT#"))
        .scan_index_forward(false)
        .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(100))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| sdk_error(e, "Query history"))?;
    out.items
        .unwrap_or_default()
        .iter()
        .map(audit_from_item)
        .collect()
}

/// Pages through the shards of the sparse `due` index in turn. The
/// index is eventually consistent and carries keys only.
pub(super) async fn due_page(
    db: &DynamoLedger,
    now: DateTime<Utc>,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<DuePage, LedgerError> {
    let (mut shard, mut start) = match cursor {
        Some(c) => DynamoLedger::decode_cursor(c)?,
        None => (0, None),
    };
    let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(100);
    loop {
        if shard >= db.shards {
            return Ok(DuePage::default());
        }
        let out = db
            .client
            .query()
            .table_name(&db.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("#dpk = :shard AND #dsk <= :now")
            .expression_attribute_names("#dpk", DUE_PK)
            .expression_attribute_names("#dsk", DUE_SK)
            .expression_attribute_values(":shard", s(due_pk(shard)))
            .expression_attribute_values(":now", ts(now))
            .projection_expression("#pk, #sk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .limit(limit)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk_error(e, "Query due"))?;
        let mut page = DuePage::default();
        for entry in out.items.unwrap_or_default() {
            let r = item::Reader::new(&entry, "due entry");
            let (pk, sk) = match (r.str(PK), r.str(SK)) {
                (Ok(pk), Ok(sk)) => (pk, sk),
                (Err(e), _) | (_, Err(e)) => {
                    page.corrupt.push(e.to_string());
                    continue;
                }
            };
            if sk == META {
                if let Some(id) = pk.strip_prefix("SUB#").and_then(SubscriptionId::parse) {
                    page.ids.push(id);
                    continue;
                }
                if let Some(uid) = pk.strip_prefix("REG#").filter(|u| !u.is_empty()) {
                    page.registrations.push(uid.to_owned());
                    continue;
                }
            } else if let Some(key) = attempt_key_from(&pk, &sk) {
                page.attempts.push(key);
                continue;
            }
            page.corrupt
                .push(format!("due entry with key {pk:?}/{sk:?}"));
        }
        page.next = match out.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(key) => DynamoLedger::encode_cursor(shard, &key),
            None if shard + 1 < db.shards => Some(Cursor(format!("{}", shard + 1))),
            None => None,
        };
        if page.ids.is_empty()
            && page.registrations.is_empty()
            && page.attempts.is_empty()
            && page.corrupt.is_empty()
            && let Some(c) = &page.next
        {
            // An empty shard: go on to the next without a round trip to the caller.
            (shard, start) = DynamoLedger::decode_cursor(c)?;
            continue;
        }
        return Ok(page);
    }
}

/// Pages through the shards of the sparse `consent` index in turn
/// (decision 69).
pub(super) async fn pending_consent_page(
    db: &DynamoLedger,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<IdPage, LedgerError> {
    use super::table::{CONSENT_INDEX, CONSENT_PK, CONSENT_SK};
    let index = ShardedIndex {
        name: CONSENT_INDEX,
        pk: CONSENT_PK,
        sk: CONSENT_SK,
        what: "consent",
    };
    sharded_page(db, &index, item::consent_pk, limit, cursor).await
}

/// Pages through the shards of the sparse `plan` index for one plan
/// (decision 71).
pub(super) async fn plan_members_page(
    db: &DynamoLedger,
    plan: &crate::billing::plans::PlanId,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<IdPage, LedgerError> {
    use super::table::{PLAN_INDEX, PLAN_PK, PLAN_SK};
    let index = ShardedIndex {
        name: PLAN_INDEX,
        pk: PLAN_PK,
        sk: PLAN_SK,
        what: "plan",
    };
    sharded_page(
        db,
        &index,
        |shard| item::plan_member_pk(plan, shard),
        limit,
        cursor,
    )
    .await
}

/// A sparse index over subscription items, partitioned by shard, with a
/// number as its sort key.
struct ShardedIndex {
    name: &'static str,
    pk: &'static str,
    sk: &'static str,
    what: &'static str,
}

/// One page of `index`, shard after shard. Its cursor is `{shard}` or
/// `{shard}|{pk}|{sk}|{index pk}|{index sk}` (the last key read).
async fn sharded_page(
    db: &DynamoLedger,
    index: &ShardedIndex,
    pk_of: impl Fn(u32) -> String,
    limit: usize,
    cursor: Option<&Cursor>,
) -> Result<IdPage, LedgerError> {
    let bad = |c: &Cursor| LedgerError::Fatal(format!("not a cursor of this list: {:?}", c.0));
    let (mut shard, mut start) = match cursor {
        None => (0, None),
        Some(c) => {
            let parts: Vec<&str> = c.0.split('|').collect();
            let shard: u32 = parts
                .first()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| bad(c))?;
            match parts.as_slice() {
                [_] => (shard, None),
                [_, pk, sk, ipk, isk] => {
                    let mut key = Item::new();
                    key.insert(PK.into(), s(*pk));
                    key.insert(SK.into(), s(*sk));
                    key.insert(index.pk.into(), s(*ipk));
                    key.insert(index.sk.into(), n(isk.parse::<i64>().map_err(|_| bad(c))?));
                    (shard, Some(key))
                }
                _ => return Err(bad(c)),
            }
        }
    };
    let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(100);
    loop {
        if shard >= db.shards {
            return Ok(IdPage::default());
        }
        let out = db
            .client
            .query()
            .table_name(&db.table)
            .index_name(index.name)
            .key_condition_expression("#ipk = :shard")
            .expression_attribute_names("#ipk", index.pk)
            .expression_attribute_values(":shard", s(pk_of(shard)))
            .limit(limit)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk_error(e, &format!("Query {}", index.what)))?;
        let mut page = IdPage::default();
        for entry in out.items.unwrap_or_default() {
            let r = item::Reader::new(&entry, "index entry");
            let id = r.str(PK)?;
            let id = id
                .strip_prefix("SUB#")
                .and_then(SubscriptionId::parse)
                .ok_or_else(|| {
                    LedgerError::Corrupt(format!("{} entry with key {id:?}", index.what))
                })?;
            page.ids.push(id);
        }
        let text = |key: &Item, k: &str| match key.get(k) {
            Some(
                aws_sdk_dynamodb::types::AttributeValue::S(v)
                | aws_sdk_dynamodb::types::AttributeValue::N(v),
            ) => Some(v.clone()),
            _ => None,
        };
        page.next = match out.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(key) => (|| {
                Some(Cursor(format!(
                    "{shard}|{}|{}|{}|{}",
                    text(&key, PK)?,
                    text(&key, SK)?,
                    text(&key, index.pk)?,
                    text(&key, index.sk)?
                )))
            })(),
            None if shard + 1 < db.shards => Some(Cursor(format!("{}", shard + 1))),
            None => None,
        };
        if page.ids.is_empty()
            && let Some(c) = page.next.take()
        {
            // An empty shard: go on without a round trip to the caller.
            let parts: Vec<&str> = c.0.split('|').collect();
            if parts.len() == 1 {
                shard = parts[0].parse().map_err(|_| bad(&c))?;
                continue;
            }
            page.next = Some(c);
        }
        return Ok(page);
    }
}
