//! The http group: what the routes require of a caller beyond IAM.

use std::net::IpAddr;

use super::ConfigError;
use super::gateway::PaymentApi;
use super::vars::Vars;
use crate::secret::Secret;

/// i'mport's documented webhook source addresses.
pub const IAMPORT_WEBHOOK_IPS: [&str; 3] = ["52.78.100.19", "52.78.48.223", "52.78.5.241"];

#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// Shared secret for `POST /billing/prepare` (header `x-api-key`), in
    /// addition to (or instead of) IAM authorisation on the route.
    pub prepare_api_key: Option<Secret>,
    /// `x-api-key` of the management API (in addition to IAM on its routes).
    pub management_api_key: Option<Secret>,
    /// Source addresses the webhook accepts; empty: any (V2's signatures
    /// are checked). V1's default is i'mport's three documented addresses
    /// (its webhooks are unsigned); `WEBHOOK_ALLOWED_IPS=any` turns it off.
    pub webhook_allowed_ips: Vec<IpAddr>,
}

impl HttpConfig {
    pub fn parse(vars: &Vars, api: PaymentApi) -> Result<Self, ConfigError> {
        let allowed = match (vars.text("WEBHOOK_ALLOWED_IPS"), api) {
            (Some(v), _) if v.eq_ignore_ascii_case("any") => None,
            (Some(v), _) => Some(v),
            (None, PaymentApi::V1) => Some(IAMPORT_WEBHOOK_IPS.join(",")),
            (None, PaymentApi::V2) => None,
        };
        let webhook_allowed_ips = allowed
            .map(|v| {
                v.split(',')
                    .map(|ip| {
                        ip.trim()
                            .parse::<IpAddr>()
                            .map_err(|_| ConfigError::Invalid {
                                name: "WEBHOOK_ALLOWED_IPS",
                                reason: format!("{ip:?} is not an IP address"),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            prepare_api_key: vars.text("PREPARE_API_KEY").map(Secret::new),
            management_api_key: vars.text("MANAGEMENT_API_KEY").map(Secret::new),
            webhook_allowed_ips,
        })
    }
}
