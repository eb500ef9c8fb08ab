//! Idempotency keys on DynamoDB: a management request begun, finished or abandoned.

use super::*;

pub(super) async fn begin_request(
    db: &DynamoLedger,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<RequestState, LedgerError> {
    let mut item = Item::new();
    item.insert(PK.into(), s(idempotency_pk(key)));
    item.insert(SK.into(), s(META));
    item.insert("type".into(), s("idempotency_key"));
    item.insert("fingerprint".into(), s(fingerprint));
    item.insert("state".into(), s("in_progress"));
    item.insert("started_at".into(), ts(now));
    item.insert(TTL_ATTRIBUTE.into(), ts(now + IDEMPOTENCY_TTL));
    let written = db
        .client
        .put_item()
        .table_name(&db.table)
        .set_item(Some(item))
        .condition_expression(
            "attribute_not_exists(#pk) OR #ttl < :now OR (#state = :in_progress AND fingerprint = :fp AND started_at < :stale)",
        )
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":now", ts(now))
        .expression_attribute_values(":in_progress", s("in_progress"))
        .expression_attribute_values(":fp", s(fingerprint))
        .expression_attribute_values(":stale", ts(now - IDEMPOTENCY_STALE))
        .send()
        .await
        .map_err(|e| sdk_error(e, "PutItem idempotency key"));
    match written {
        Ok(_) => return Ok(RequestState::Fresh),
        Err(LedgerError::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    let Some(stored) = db.get(idempotency_pk(key), META).await? else {
        // Expired and deleted in between: a retry will take it.
        return Ok(RequestState::InProgress);
    };
    let r = item::Reader::new(&stored, "idempotency key");
    if r.str("fingerprint")? != fingerprint {
        return Ok(RequestState::Mismatch);
    }
    if r.str("state")? == "done" {
        return Ok(RequestState::Replay(StoredResponse {
            status: u16::try_from(r.i64("status")?)
                .map_err(|_| LedgerError::Corrupt("idempotency status".into()))?,
            body: r.str("body")?,
        }));
    }
    Ok(RequestState::InProgress)
}

pub(super) async fn finish_request(
    db: &DynamoLedger,
    key: &str,
    response: &StoredResponse,
    _now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    db.client
        .update_item()
        .table_name(&db.table)
        .key(PK, s(idempotency_pk(key)))
        .key(SK, s(META))
        .update_expression("SET #state = :done, #status = :status, body = :body")
        .condition_expression("#state = :in_progress")
        .expression_attribute_names("#state", "state")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":done", s("done"))
        .expression_attribute_values(":in_progress", s("in_progress"))
        .expression_attribute_values(":status", n(response.status))
        .expression_attribute_values(":body", s(&response.body))
        .send()
        .await
        .map_err(|e| sdk_error(e, "UpdateItem idempotency key"))?;
    Ok(())
}

pub(super) async fn abandon_request(db: &DynamoLedger, key: &str) -> Result<(), LedgerError> {
    let deleted = db
        .client
        .delete_item()
        .table_name(&db.table)
        .key(PK, s(idempotency_pk(key)))
        .key(SK, s(META))
        .condition_expression("#state = :in_progress")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":in_progress", s("in_progress"))
        .send()
        .await
        .map_err(|e| sdk_error(e, "DeleteItem idempotency key"));
    match deleted {
        Ok(_) | Err(LedgerError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
