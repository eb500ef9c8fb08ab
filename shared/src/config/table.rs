//! The table group (what every function that reads the ledger needs) and
//! the events group (event-publisher's bus).

use super::ConfigError;
use super::vars::Vars;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    pub name: String,
    /// Shards of the due index (`DUE_SHARDS`).
    pub due_shards: u32,
    /// The KMS key that wraps the table's data key, with which billing keys
    /// are sealed at rest (`BILLING_KEY_KMS_KEY_ID`: an id, an ARN or
    /// `alias/…`). Required with V2, whose billing keys are PortOne's.
    pub billing_key_kms_key_id: Option<String>,
}

impl TableConfig {
    pub fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            name: vars.required("TABLE_NAME")?,
            due_shards: vars.number("DUE_SHARDS", 4, 1, 64)? as u32,
            billing_key_kms_key_id: vars.text("BILLING_KEY_KMS_KEY_ID"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    pub event_bus_name: String,
    /// `source` of the published events (`EVENT_SOURCE`, default
    /// `subscription-billing`).
    pub event_source: String,
}

impl EventsConfig {
    pub fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            event_bus_name: vars.required("EVENT_BUS_NAME")?,
            event_source: vars
                .text("EVENT_SOURCE")
                .unwrap_or_else(|| "subscription-billing".into()),
        })
    }
}
