//! The table's change stream, read back as records: which stored record a
//! stream record is, and what it was before and after the change. The
//! event publisher turns the pair into lifecycle events
//! (`crate::events`). Items keep their layout private to this module.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{META, attempt_from_item, subscription_from_item};
use super::table::{PK, SK};
use crate::billing::{ChargeAttempt, Subscription};
use crate::ledger::LedgerError;

/// A DynamoDB item, as the SDK types it.
pub type Item = std::collections::HashMap<String, AttributeValue>;

/// One committed change of a stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Subscription {
        old: Option<Box<Subscription>>,
        new: Option<Box<Subscription>>,
    },
    Attempt {
        old: Option<Box<ChargeAttempt>>,
        new: Option<Box<ChargeAttempt>>,
    },
    /// Registrations, user pointers, locks, audit entries, idempotency
    /// keys: no lifecycle event of their own.
    Other,
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

/// Reads a stream record: its `keys`, and its images before (`old`) and
/// after (`new`; absent for a delete). An image that does not decode is
/// `Corrupt`: never skipped silently.
pub fn change_of(
    keys: &Item,
    old: Option<&Item>,
    new: Option<&Item>,
) -> Result<Change, LedgerError> {
    let (Some(pk), Some(sk)) = (text(keys, PK), text(keys, SK)) else {
        return Err(LedgerError::Corrupt("stream record without pk/sk".into()));
    };
    if !pk.starts_with("SUB#") {
        return Ok(Change::Other);
    }
    let (old, new) = (old.filter(|i| !i.is_empty()), new.filter(|i| !i.is_empty()));
    if sk == META {
        let decode = |i: &Item| subscription_from_item(i).map(Box::new);
        return Ok(Change::Subscription {
            old: old.map(decode).transpose()?,
            new: new.map(decode).transpose()?,
        });
    }
    if sk.starts_with("CHARGE#") {
        let decode = |i: &Item| attempt_from_item(i).map(Box::new);
        return Ok(Change::Attempt {
            old: old.map(decode).transpose()?,
            new: new.map(decode).transpose()?,
        });
    }
    Ok(Change::Other)
}
