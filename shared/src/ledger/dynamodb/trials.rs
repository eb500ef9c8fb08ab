//! A trial's attributes (decision 68), on plan, registration and
//! subscription items alike: `trial_days`, `trial_consent`,
//! `trial_on_no_consent`; on a subscription also `trial_ends_at` and
//! `trial_extended`; a consent as `consent_channel`, `consent_reference`,
//! `consent_at`, `consent_recorded_at`. Items without them have no trial.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Item, Reader, n, s, ts};
use crate::billing::trials::{
    Consent, ConversionConsent, OnNoConsent, TRIAL_DAYS, Trial, TrialTerms,
};
use crate::ledger::LedgerError;

pub(super) fn put_terms(item: &mut Item, terms: Option<&TrialTerms>) {
    let Some(t) = terms else { return };
    item.insert("trial_days".into(), n(t.days));
    item.insert("trial_consent".into(), s(t.consent.as_str()));
    item.insert("trial_on_no_consent".into(), s(t.on_no_consent.as_str()));
}

pub(super) fn read_terms(r: &Reader<'_>) -> Result<Option<TrialTerms>, LedgerError> {
    let Some(days) = r.opt_i64("trial_days")? else {
        return Ok(None);
    };
    let corrupt = |what: String| LedgerError::Corrupt(what);
    let days = u16::try_from(days)
        .ok()
        .filter(|d| *d > 0 && TRIAL_DAYS.contains(d))
        .ok_or_else(|| corrupt(format!("trial_days {days}")))?;
    let consent = r.str("trial_consent")?;
    let on_no_consent = r.str("trial_on_no_consent")?;
    Ok(Some(TrialTerms {
        days,
        consent: ConversionConsent::parse(&consent)
            .ok_or_else(|| corrupt(format!("trial_consent {consent:?}")))?,
        on_no_consent: OnNoConsent::parse(&on_no_consent)
            .ok_or_else(|| corrupt(format!("trial_on_no_consent {on_no_consent:?}")))?,
    }))
}

pub(super) fn put_consent(item: &mut Item, consent: Option<&Consent>) {
    let Some(c) = consent else { return };
    item.insert("consent_channel".into(), s(&c.channel));
    item.insert("consent_reference".into(), s(&c.reference));
    item.insert("consent_at".into(), ts(c.at));
    item.insert("consent_recorded_at".into(), ts(c.recorded_at));
}

pub(super) fn read_consent(r: &Reader<'_>) -> Result<Option<Consent>, LedgerError> {
    let Some(channel) = r.opt_str("consent_channel")? else {
        return Ok(None);
    };
    Ok(Some(Consent {
        channel,
        reference: r.str("consent_reference")?,
        at: r.time("consent_at")?,
        recorded_at: r.time("consent_recorded_at")?,
    }))
}

pub(super) fn put_trial(item: &mut Item, trial: Option<&Trial>) {
    let Some(t) = trial else { return };
    put_terms(item, Some(&t.terms));
    item.insert("trial_ends_at".into(), ts(t.ends_at));
    if t.extended {
        item.insert("trial_extended".into(), AttributeValue::Bool(true));
    }
    put_consent(item, t.consent.as_ref());
}

pub(super) fn read_trial(r: &Reader<'_>) -> Result<Option<Trial>, LedgerError> {
    let Some(terms) = read_terms(r)? else {
        return Ok(None);
    };
    Ok(Some(Trial {
        terms,
        ends_at: r.time("trial_ends_at")?,
        extended: r.bool("trial_extended")?,
        consent: read_consent(r)?,
    }))
}
