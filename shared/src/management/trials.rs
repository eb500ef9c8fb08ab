//! A trial's consent to convert (issue 23 §2, decision 68):
//! `POST /subscriptions/{id}/consent`, for a trial whose plan takes it
//! explicitly. Recorded once, with the merchant's evidence and who sent
//! it; a second consent answers the first record.

use serde::Deserialize;
use tracing::info;

use super::{Actor, ManageError, SubscriptionView, audit, load, parse_id, view_of};
use crate::billing::trials::{self, ConsentError};
use crate::engine::Engine;
use crate::ledger::conflict::{Pass, retry_on_conflict};
use crate::ledger::{Ledger, LedgerError, LockChange, SubscriptionChange};
use crate::registration::EvidenceInput;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    pub evidence: EvidenceInput,
}

/// `POST /subscriptions/{id}/consent`: records the customer's consent to
/// the trial's conversion, inside the window before its end
/// (`CONSENT_WINDOW_DAYS`). 409 when it is not in a trial, its end has
/// come, or the window has not opened (with the date it opens); 422 when the evidence's time
/// is outside the window or in the future.
pub async fn consent<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
    input: ConsentInput,
    actor: &Actor,
) -> Result<SubscriptionView, ManageError> {
    let (channel, reference) = input.evidence.checked().map_err(ManageError::Invalid)?;
    let id = parse_id(id)?;
    let window = engine.settings.charging.consent_window_days;
    let (id, channel, reference) = (&id, &channel, &reference);
    let done = retry_on_conflict(3, (), |()| async move {
        let sub = load(engine, id).await?;
        let now = engine.now();
        let at = input.evidence.at.unwrap_or(now);
        let next = match trials::consented(&sub, channel, reference, at, window, now) {
            Ok(Some(next)) => next,
            // Two consents are one record: the first stands.
            Ok(None) => return Ok(Pass::Done(view_of(engine, &sub).await?)),
            Err(
                e @ (ConsentError::NotTrialing(_)
                | ConsentError::Ended(_)
                | ConsentError::TooEarly { .. }),
            ) => {
                return Err(ManageError::Conflict(e.to_string()));
            }
            Err(e @ ConsentError::BadEvidence(_)) => {
                return Err(ManageError::Unprocessable(e.to_string()));
            }
        };
        let detail = format!(
            "consent to convert the trial at {}: {channel} {reference} ({})",
            next.next_charge_at.to_rfc3339(),
            at.to_rfc3339()
        );
        let entry = audit(engine, &sub, actor, "trial consent", detail);
        let change = SubscriptionChange {
            next: &next,
            audit: Some(&entry),
            lock: LockChange::Keep,
        };
        match engine.ledger.change_subscription(&change).await {
            Ok(()) => {
                info!(subscription_id = %sub.id, %channel, "trial conversion consented");
                Ok(Pass::Done(view_of(engine, &next).await?))
            }
            Err(LedgerError::Conflict(_)) => Ok(Pass::Again(())),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    done.ok_or_else(|| ManageError::Conflict("the subscription kept changing; try again".into()))
}
