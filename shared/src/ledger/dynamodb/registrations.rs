//! Registrations on DynamoDB: the sign-up's record, its activation into a
//! subscription, a new card, a refusal, and what a user holds.

use super::*;

pub(super) async fn put_registration(
    db: &DynamoLedger,
    reg: &Registration,
) -> Result<(), LedgerError> {
    db.transact(
        registration_writes(db, reg)?,
        "TransactWriteItems registration",
    )
    .await
}

/// The writes of a new registration: its item (new) and its user's pointer.
pub(super) fn registration_writes(
    db: &DynamoLedger,
    reg: &Registration,
) -> Result<Vec<TransactWriteItem>, LedgerError> {
    let mut pointer = Item::new();
    pointer.insert(PK.into(), s(user_pk(&reg.user_id)));
    pointer.insert(SK.into(), s(user_reg_sk(&reg.merchant_uid)));
    pointer.insert("type".into(), s("user_registration"));
    if let Some(t) = reg.expires_at {
        pointer.insert(TTL_ATTRIBUTE.into(), ts(t + chrono::Duration::days(7)));
    }
    Ok(vec![
        TransactWriteItem::builder()
            .put(db.put_new(registration_to_item(reg, db.shards))?)
            .build(),
        TransactWriteItem::builder().put(db.put(pointer)).build(),
    ])
}

pub(super) async fn get_registration(
    db: &DynamoLedger,
    merchant_uid: &str,
) -> Result<Option<Registration>, LedgerError> {
    db.get(reg_pk(merchant_uid), META)
        .await?
        .map(|item| registration_from_item(&item))
        .transpose()
}

pub(super) async fn activate(db: &DynamoLedger, a: &Activation<'_>) -> Result<(), LedgerError> {
    let mut pointer = Item::new();
    pointer.insert(PK.into(), s(user_pk(&a.sub.user_id)));
    pointer.insert(SK.into(), s(user_sub_sk(&a.sub.id)));
    pointer.insert("type".into(), s("user_subscription"));
    pointer.insert("subscription_id".into(), s(a.sub.id.as_str()));
    let mut items = vec![
        TransactWriteItem::builder()
            .put(db.put_new(db.sub_item(a.sub).await?)?)
            .build(),
        TransactWriteItem::builder()
            .update(db.complete_registration(a.reg, a.imp_uid, a.sub.created_at)?)
            .build(),
        TransactWriteItem::builder().put(db.put(pointer)).build(),
    ];
    if let Some(attempt) = a.first_attempt {
        let mut item = attempt_to_item(attempt);
        if attempt.state == AttemptState::NeedsReview {
            // Waiting for a person from the start: in the review index.
            item.insert(DUE_PK.into(), s(REVIEW_PK));
            item.insert(DUE_SK.into(), ts(attempt.updated_at));
        }
        if let Some(r) = &attempt.cash_receipt {
            super::receipts::put_into(&mut item, r, attempt.subscription_id.shard(db.shards));
        }
        items.push(TransactWriteItem::builder().put(db.put_new(item)?).build());
    }
    if a.plan_lock {
        let lock = lock_item(&a.sub.user_id, a.sub.lock_name(), &a.sub.id);
        items.push(TransactWriteItem::builder().put(db.put_new(lock)?).build());
    }
    db.transact(items, "TransactWriteItems activate").await
}

pub(super) async fn replace_key(
    db: &DynamoLedger,
    replacement: &KeyReplacement<'_>,
) -> Result<(), LedgerError> {
    let r = replacement;
    let mut items = vec![
        TransactWriteItem::builder()
            .update(db.complete_registration(r.reg, r.imp_uid, r.next.updated_at)?)
            .build(),
        TransactWriteItem::builder()
            .put(db.versioned_put(r.next).await?)
            .build(),
        TransactWriteItem::builder()
            .put(db.put(audit_to_item(r.audit)))
            .build(),
    ];
    if let Some(w) = r.window_payment {
        let mut item = attempt_to_item(w);
        item.insert(DUE_PK.into(), s(REVIEW_PK));
        item.insert(DUE_SK.into(), ts(w.updated_at));
        items.push(TransactWriteItem::builder().put(db.put_new(item)?).build());
    }
    db.transact(items, "TransactWriteItems replace key").await
}

pub(super) async fn refuse_registration(
    db: &DynamoLedger,
    reg: &Registration,
    now: DateTime<Utc>,
    window_payment: Option<&ChargeAttempt>,
) -> Result<(), LedgerError> {
    let refuse = Update::builder()
        .table_name(&db.table)
        .key(PK, s(reg_pk(&reg.merchant_uid)))
        .key(SK, s(META))
        .update_expression("SET #status = :refused, refused_at = :now REMOVE #dpk, #dsk")
        .condition_expression("#status = :pending")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#dpk", DUE_PK)
        .expression_attribute_names("#dsk", DUE_SK)
        .expression_attribute_values(":refused", s(RegistrationStatus::Refused.as_str()))
        .expression_attribute_values(":pending", s(RegistrationStatus::Pending.as_str()))
        .expression_attribute_values(":now", ts(now))
        .build()
        .map_err(build_error)?;
    let mut items = vec![TransactWriteItem::builder().update(refuse).build()];
    if let Some(w) = window_payment {
        let mut item = attempt_to_item(w);
        item.insert(DUE_PK.into(), s(REVIEW_PK));
        item.insert(DUE_SK.into(), ts(w.updated_at));
        items.push(TransactWriteItem::builder().put(db.put_new(item)?).build());
    }
    db.transact(items, "TransactWriteItems refuse registration")
        .await
}

pub(super) async fn user_items(db: &DynamoLedger, user_id: &str) -> Result<UserItems, LedgerError> {
    let mut out = UserItems::default();
    for item in db.query_all(user_pk(user_id), "").await? {
        let r = item::Reader::new(&item, "user entry");
        let sk = r.str(SK)?;
        if let Some(id) = sk.strip_prefix("SUB#") {
            out.subscriptions.push(
                SubscriptionId::parse(id)
                    .ok_or_else(|| LedgerError::Corrupt(format!("user entry {sk:?}")))?,
            );
        } else if let Some(uid) = sk.strip_prefix("REG#") {
            out.registrations.push(uid.to_owned());
        } else if let Some(plan) = sk.strip_prefix("PLAN#") {
            out.locks
                .push((plan.to_owned(), r.sub_id("subscription_id")?));
        }
    }
    Ok(out)
}
