//! Idempotency keys in memory: a management request begun, finished or abandoned.

use super::*;

pub(super) async fn begin_request(
    db: &InMemoryLedger,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<RequestState, LedgerError> {
    let mut st = db.lock();
    st.count("PutItem");
    let now = secs(now);
    if let Some(existing) = st.requests.get(key).filter(|r| r.expires_at > now) {
        if existing.fingerprint != fingerprint {
            return Ok(RequestState::Mismatch);
        }
        if let Some(response) = &existing.response {
            return Ok(RequestState::Replay(response.clone()));
        }
        if existing.started_at > now - IDEMPOTENCY_STALE {
            return Ok(RequestState::InProgress);
        }
    }
    st.requests.insert(
        key.to_owned(),
        Request {
            fingerprint: fingerprint.to_owned(),
            response: None,
            started_at: now,
            expires_at: now + IDEMPOTENCY_TTL,
        },
    );
    Ok(RequestState::Fresh)
}

pub(super) async fn finish_request(
    db: &InMemoryLedger,
    key: &str,
    response: &StoredResponse,
    _now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("UpdateItem");
    match st.requests.get_mut(key) {
        Some(r) if r.response.is_none() => {
            r.response = Some(response.clone());
            Ok(())
        }
        _ => Err(conflict("finish request")),
    }
}

pub(super) async fn abandon_request(db: &InMemoryLedger, key: &str) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("DeleteItem");
    if st.requests.get(key).is_some_and(|r| r.response.is_none()) {
        st.requests.remove(key);
    }
    Ok(())
}
