//! The registration group: the default plan, the payment window's routes
//! and what a sign-up may do.

use std::time::Duration;

use url::Url;

use super::ConfigError;
use super::vars::Vars;
use crate::billing::Plan;

#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The plan of a sign-up that names none (`PLAN_AMOUNT`, `PLAN_NAME`).
    pub default_plan: Plan,
    /// `m_redirect_url`: where the PG sends the browser (the callback
    /// route); `prepare` needs it.
    pub callback_url: Option<Url>,
    pub success_redirect: Option<Url>,
    pub failure_redirect: Option<Url>,
    /// Charge the first period when the key is issued (`CHARGE_ON_SIGNUP`).
    pub charge_on_signup: bool,
    /// More than one live subscription per user and plan.
    pub allow_multiple_subscriptions: bool,
    /// How long a prepared registration waits for its callback.
    pub ttl: Duration,
}

impl Default for RegistrationConfig {
    /// The documented defaults: what an empty environment reads as.
    fn default() -> Self {
        Self::parse(&Vars::new(&|_| None)).unwrap_or_else(|_| unreachable!())
    }
}

impl RegistrationConfig {
    pub fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let amount = vars.number("PLAN_AMOUNT", 9900, 100, 10_000_000)? as i64;
        let name = vars.text("PLAN_NAME").unwrap_or_else(|| "월간 구독".into());
        if name.chars().count() > 40 {
            return Err(ConfigError::Invalid {
                name: "PLAN_NAME",
                reason: "longer than i'mport's 40 characters".into(),
            });
        }
        Ok(Self {
            default_plan: Plan {
                amount,
                name,
                notice_days: crate::billing::notices::DEFAULT_NOTICE_DAYS,
                tax: crate::billing::TaxSetting::Taxable,
            },
            callback_url: vars.url("CALLBACK_URL")?,
            success_redirect: vars.url("SUCCESS_REDIRECT_URL")?,
            failure_redirect: vars.url("FAILURE_REDIRECT_URL")?,
            charge_on_signup: vars.flag("CHARGE_ON_SIGNUP", true)?,
            allow_multiple_subscriptions: vars.flag("ALLOW_MULTIPLE_SUBSCRIPTIONS", false)?,
            ttl: Duration::from_secs(vars.number(
                "REGISTRATION_TTL_SECS",
                86_400,
                60,
                30 * 86_400,
            )?),
        })
    }
}
