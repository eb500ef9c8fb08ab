//! Registrations in memory: the sign-up's record, its activation into a
//! subscription, a new card, a refusal, and what a user holds.

use super::*;

pub(super) async fn put_registration(
    db: &InMemoryLedger,
    reg: &Registration,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    put_registration_in(&mut st, reg)
}

/// [`put_registration`] inside an operation holding the state.
pub(super) fn put_registration_in(st: &mut State, reg: &Registration) -> Result<(), LedgerError> {
    if st.registrations.contains_key(&reg.merchant_uid) {
        return Err(conflict("put registration"));
    }
    let mut reg = reg.clone();
    reg.created_at = secs(reg.created_at);
    reg.expires_at = opt_secs(reg.expires_at);
    reg.sweep_at = opt_secs(reg.sweep_at);
    if reg.status == RegistrationStatus::Pending {
        st.index(Due::Registration(reg.merchant_uid.clone()), reg.sweep_at);
    }
    st.user(&reg.user_id)
        .registrations
        .push(reg.merchant_uid.clone());
    st.registrations.insert(reg.merchant_uid.clone(), reg);
    Ok(())
}

pub(super) async fn get_registration(
    db: &InMemoryLedger,
    merchant_uid: &str,
) -> Result<Option<Registration>, LedgerError> {
    let mut st = db.lock();
    st.count("GetItem");
    Ok(st.registrations.get(merchant_uid).cloned())
}

pub(super) async fn activate(db: &InMemoryLedger, a: &Activation<'_>) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count("TransactWriteItems");
    let pending = st
        .registrations
        .get(&a.reg.merchant_uid)
        .is_some_and(|r| r.status == RegistrationStatus::Pending);
    let attempt_free = a
        .first_attempt
        .is_none_or(|at| !st.attempts.contains_key(&key_of(at)));
    let lock_key = (a.sub.user_id.clone(), a.sub.plan.name.clone());
    let lock_free = !a.plan_lock || !st.locks.contains_key(&lock_key);
    if st.subscriptions.contains_key(&a.sub.id) || !pending || !attempt_free || !lock_free {
        return Err(conflict("activate"));
    }
    st.put_subscription(a.sub);
    st.user(&a.sub.user_id).subscriptions.push(a.sub.id.clone());
    if a.plan_lock {
        st.locks.insert(lock_key, a.sub.id.clone());
    }
    if let Some(r) = st.registrations.get_mut(&a.reg.merchant_uid) {
        r.status = RegistrationStatus::Completed;
        r.imp_uid = Some(a.imp_uid.to_owned());
        r.expires_at = None;
    }
    st.index(Due::Registration(a.reg.merchant_uid.clone()), None);
    if let Some(at) = a.first_attempt {
        st.put_attempt(stored_attempt(at), None);
        st.put_new_receipt(&key_of(at), at.cash_receipt.as_ref());
        if at.state == AttemptState::NeedsReview {
            st.review
                .insert((secs(at.updated_at).timestamp(), Due::Attempt(key_of(at))));
        }
    }
    Ok(())
}

pub(super) async fn replace_key(
    db: &InMemoryLedger,
    replacement: &KeyReplacement<'_>,
) -> Result<(), LedgerError> {
    let KeyReplacement {
        reg,
        next,
        imp_uid,
        audit,
        window_payment,
    } = *replacement;
    let mut st = db.lock();
    st.count("TransactWriteItems");
    if window_payment.is_some_and(|w| st.attempts.contains_key(&key_of(w))) {
        return Err(conflict("replace key"));
    }
    if let Some(w) = window_payment {
        let stored = stored_attempt(w);
        let key = key_of(&stored);
        let at = stored.updated_at.timestamp();
        st.put_attempt(stored, None);
        st.review.insert((at, Due::Attempt(key)));
    }
    let pending = st
        .registrations
        .get(&reg.merchant_uid)
        .is_some_and(|r| r.status == RegistrationStatus::Pending);
    if !pending || !st.version_matches(next) {
        return Err(conflict("replace key"));
    }
    st.put_subscription(next);
    if let Some(r) = st.registrations.get_mut(&reg.merchant_uid) {
        r.status = RegistrationStatus::Completed;
        r.imp_uid = Some(imp_uid.to_owned());
        r.expires_at = None;
    }
    st.index(Due::Registration(reg.merchant_uid.clone()), None);
    st.add_audit(Some(audit));
    Ok(())
}

pub(super) async fn refuse_registration(
    db: &InMemoryLedger,
    reg: &Registration,
    _now: DateTime<Utc>,
    window_payment: Option<&ChargeAttempt>,
) -> Result<(), LedgerError> {
    let mut st = db.lock();
    st.count(if window_payment.is_some() {
        "TransactWriteItems"
    } else {
        "UpdateItem"
    });
    let pending = st
        .registrations
        .get(&reg.merchant_uid)
        .is_some_and(|r| r.status == RegistrationStatus::Pending);
    if !pending || window_payment.is_some_and(|w| st.attempts.contains_key(&key_of(w))) {
        return Err(conflict("refuse registration"));
    }
    if let Some(w) = window_payment {
        let stored = stored_attempt(w);
        let key = key_of(&stored);
        let at = stored.updated_at.timestamp();
        st.put_attempt(stored, None);
        st.review.insert((at, Due::Attempt(key)));
    }
    if let Some(r) = st.registrations.get_mut(&reg.merchant_uid) {
        r.status = RegistrationStatus::Refused;
        r.expires_at = None;
    }
    st.index(Due::Registration(reg.merchant_uid.clone()), None);
    Ok(())
}

pub(super) async fn user_items(
    db: &InMemoryLedger,
    user_id: &str,
) -> Result<UserItems, LedgerError> {
    let mut st = db.lock();
    st.count("Query");
    let mut items = st.users.get(user_id).cloned().unwrap_or_default();
    items.subscriptions.sort();
    items.registrations.sort();
    items.locks = st
        .locks
        .iter()
        .filter(|((user, _), _)| user == user_id)
        .map(|((_, plan), id)| (plan.clone(), id.clone()))
        .collect();
    Ok(items)
}
