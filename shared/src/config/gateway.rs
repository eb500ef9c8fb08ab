//! The gateway group: which payment API (`PAYMENT_API`), its own settings
//! and where its credentials come from.

use std::time::Duration;

use url::Url;

use super::ConfigError;
use super::vars::Vars;
use crate::gateway::iamport::DEFAULT_BASE_URL;
use crate::secret::Secret;

/// Which PortOne API the engine talks to (`PAYMENT_API`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaymentApi {
    /// i'mport V1 (`api.iamport.kr`): billing keys behind our `customer_uid`.
    #[default]
    V1,
    /// PortOne V2 (`api.portone.io`): billing keys issued by PortOne.
    V2,
}

/// Where the gateway's credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialsSource {
    /// `IAMPORT_CREDENTIALS_SECRET_ARN`: a Secrets Manager secret whose
    /// SecretString is `{"imp_key": "...", "imp_secret": "..."}` (V1) or
    /// `{"portone_api_secret": "...", ...}` (V2). Production.
    SecretsManager { secret_id: String },
    /// `IAMPORT_KEY` / `IAMPORT_SECRET`: plain values, for local runs.
    Plain { imp_key: Secret, imp_secret: Secret },
    /// `PORTONE_API_SECRET` / `PORTONE_WEBHOOK_SECRETS` (comma separated):
    /// plain values, for local runs with `PAYMENT_API=v2`.
    PlainV2 {
        api_secret: Secret,
        webhook_secrets: Vec<Secret>,
    },
}

/// i'mport V1's settings (`PAYMENT_API=v1`, the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamportSettings {
    pub base_url: Url,
    /// The `pg` given to `IMP.request_pay`: `chai`, `chai.{public_key}`, or
    /// any i'mport billing PG. The part before the dot is the expected
    /// `pg_provider` of issued keys.
    pub pg: String,
    /// `pay_method` for the payment window (`IAMPORT_PAY_METHOD`; by default
    /// `trans` for CHAI, as its guide says, and `card` for any other PG).
    pub pay_method: String,
    /// Send `include_sandbox=true` on lookups (test channels).
    pub include_sandbox: bool,
    /// The per-request timeout (`IAMPORT_TIMEOUT_MS`).
    pub timeout: Duration,
}

/// PortOne V2's settings (`PAYMENT_API=v2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOneSettings {
    pub base_url: Url,
    pub store_id: String,
    pub channel_key: String,
    /// `billingKeyMethod` for `PortOne.requestIssueBillingKey`.
    pub billing_key_method: String,
    /// The per-request timeout (`PORTONE_TIMEOUT_MS`, 60 s like PortOne's
    /// own SDKs).
    pub timeout: Duration,
}

/// The payment API and its settings: one arm per vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayApi {
    V1(IamportSettings),
    V2(PortOneSettings),
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub api: GatewayApi,
    pub credentials: CredentialsSource,
    /// `IAMPORT_CONNECT_TIMEOUT_MS`, for either API.
    pub connect_timeout: Duration,
}

impl GatewayConfig {
    pub fn payment_api(&self) -> PaymentApi {
        match self.api {
            GatewayApi::V1(_) => PaymentApi::V1,
            GatewayApi::V2(_) => PaymentApi::V2,
        }
    }

    /// The configured API's base URL.
    pub fn base_url(&self) -> &url::Url {
        match &self.api {
            GatewayApi::V1(v1) => &v1.base_url,
            GatewayApi::V2(v2) => &v2.base_url,
        }
    }

    /// The configured API's per-request timeout, and the variable it is
    /// read from (for errors that involve it).
    pub fn timeout(&self) -> (Duration, &'static str) {
        match &self.api {
            GatewayApi::V1(v1) => (v1.timeout, "IAMPORT_TIMEOUT_MS"),
            GatewayApi::V2(v2) => (v2.timeout, "PORTONE_TIMEOUT_MS"),
        }
    }

    /// What subscriptions record as their PG: V1's `pg`, or `portone` (V2
    /// charges a channel, not a V1 `pg`).
    pub fn pg(&self) -> &str {
        match &self.api {
            GatewayApi::V1(v1) => &v1.pg,
            GatewayApi::V2(_) => "portone",
        }
    }

    pub fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let api = match vars.text("PAYMENT_API").as_deref() {
            None | Some("v1") => GatewayApi::V1(IamportSettings::parse(vars)?),
            Some("v2") => GatewayApi::V2(PortOneSettings::parse(vars)?),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "PAYMENT_API",
                    reason: format!("{other:?} is not v1 or v2"),
                });
            }
        };
        let credentials = CredentialsSource::parse(vars, matches!(api, GatewayApi::V2(_)))?;
        Ok(Self {
            api,
            credentials,
            connect_timeout: Duration::from_millis(vars.number(
                "IAMPORT_CONNECT_TIMEOUT_MS",
                3_000,
                50,
                60_000,
            )?),
        })
    }
}

impl CredentialsSource {
    fn parse(vars: &Vars, v2: bool) -> Result<Self, ConfigError> {
        if let Some(secret_id) = vars.text("IAMPORT_CREDENTIALS_SECRET_ARN") {
            return Ok(Self::SecretsManager { secret_id });
        }
        if v2 {
            let api_secret = vars.text("PORTONE_API_SECRET").ok_or(ConfigError::Missing {
                name: "IAMPORT_CREDENTIALS_SECRET_ARN (or PORTONE_API_SECRET) with PAYMENT_API=v2",
            })?;
            let webhook_secrets = vars
                .text("PORTONE_WEBHOOK_SECRETS")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Secret::new(s.to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            return Ok(Self::PlainV2 {
                api_secret: Secret::new(api_secret),
                webhook_secrets,
            });
        }
        match (vars.text("IAMPORT_KEY"), vars.text("IAMPORT_SECRET")) {
            (Some(k), Some(s)) => Ok(Self::Plain {
                imp_key: Secret::new(k),
                imp_secret: Secret::new(s),
            }),
            _ => Err(ConfigError::Missing {
                name: "IAMPORT_CREDENTIALS_SECRET_ARN (or IAMPORT_KEY and IAMPORT_SECRET)",
            }),
        }
    }
}

impl IamportSettings {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let pg = vars.text("IAMPORT_PG").unwrap_or_else(|| "chai".into());
        if !pg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            || pg.starts_with('.')
            || pg.len() > 100
        {
            return Err(ConfigError::Invalid {
                name: "IAMPORT_PG",
                reason: format!("{pg:?} is not a PG value like chai or chai.{{public_key}}"),
            });
        }
        let pay_method = vars.text("IAMPORT_PAY_METHOD").unwrap_or_else(|| {
            if pg_provider_of(&pg) == "chai" {
                "trans"
            } else {
                "card"
            }
            .to_owned()
        });
        if pay_method.len() > 20
            || !pay_method
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(ConfigError::Invalid {
                name: "IAMPORT_PAY_METHOD",
                reason: format!("{pay_method:?} is not a pay_method like card or trans"),
            });
        }
        Ok(Self {
            base_url: vars.url_or("IAMPORT_BASE_URL", DEFAULT_BASE_URL)?,
            pg,
            pay_method,
            include_sandbox: vars.flag("IAMPORT_INCLUDE_SANDBOX", false)?,
            timeout: Duration::from_millis(vars.number(
                "IAMPORT_TIMEOUT_MS",
                10_000,
                100,
                120_000,
            )?),
        })
    }

    /// The `pg_provider` i'mport reports for keys issued through `pg`.
    pub fn pg_provider(&self) -> &str {
        pg_provider_of(&self.pg)
    }
}

impl PortOneSettings {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let id = |name: &'static str| -> Result<String, ConfigError> {
            let v = vars.required(name)?;
            if v.len() > 100
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "letters, digits, - and _ only".into(),
                });
            }
            Ok(v)
        };
        let method = vars
            .text("PORTONE_BILLING_KEY_METHOD")
            .unwrap_or_else(|| "CARD".into());
        if !matches!(
            method.as_str(),
            "CARD" | "MOBILE" | "EASY_PAY" | "PAYPAL" | "TRANSFER"
        ) {
            return Err(ConfigError::Invalid {
                name: "PORTONE_BILLING_KEY_METHOD",
                reason: format!("{method:?} is not CARD, MOBILE, EASY_PAY, PAYPAL or TRANSFER"),
            });
        }
        Ok(Self {
            base_url: vars.url_or("PORTONE_BASE_URL", "https://api.portone.io")?,
            store_id: id("PORTONE_STORE_ID")?,
            channel_key: id("PORTONE_CHANNEL_KEY")?,
            billing_key_method: method,
            timeout: Duration::from_millis(vars.number(
                "PORTONE_TIMEOUT_MS",
                60_000,
                100,
                120_000,
            )?),
        })
    }
}

/// `chai.pk_123` → `chai`.
pub fn pg_provider_of(pg: &str) -> &str {
    pg.split('.').next().unwrap_or(pg)
}
