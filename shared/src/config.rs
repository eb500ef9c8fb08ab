//! Typed configuration, read once at cold start. A bad value fails the
//! deploy at init, not at the first customer.

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use crate::billing::Plan;
use crate::billing::{DunningPolicy, SubscriptionStatus};
use crate::iamport::DEFAULT_BASE_URL;
use crate::secret::Secret;

/// Gateway calls one charge may chain under one claim (see `claim_lease`).
pub const MAX_CALLS_PER_CHARGE: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("could not read the i'mport credentials: {0}")]
    Secret(String),
}

/// How a scheduled run is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeMode {
    /// One invocation charges everything due (until its deadline).
    Single,
    /// The invocation plans the run into a queue; `charge-worker`s charge it.
    Queued { queue_url: Url },
}

/// Where the i'mport REST key and secret come from.
#[derive(Debug, Clone)]
pub enum CredentialsSource {
    /// `IAMPORT_CREDENTIALS_SECRET_ARN`: a Secrets Manager secret whose
    /// SecretString is `{"imp_key": "...", "imp_secret": "..."}`. Production.
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

/// Which PortOne API the engine talks to (`PAYMENT_API`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaymentApi {
    /// i'mport V1 (`api.iamport.kr`): billing keys behind our `customer_uid`.
    #[default]
    V1,
    /// PortOne V2 (`api.portone.io`): billing keys issued by PortOne.
    V2,
}

/// PortOne V2 settings (`PAYMENT_API=v2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOneSettings {
    pub base_url: Url,
    pub store_id: String,
    pub channel_key: String,
    /// `billingKeyMethod` for `PortOne.requestIssueBillingKey`.
    pub billing_key_method: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    /// `v1` (i'mport) or `v2` (PortOne V2); the same engine either way.
    pub payment_api: PaymentApi,
    /// V2 only.
    pub portone: Option<PortOneSettings>,
    pub iamport_base_url: Url,
    pub credentials: CredentialsSource,
    pub iamport_timeout: Duration,
    pub iamport_connect_timeout: Duration,
    pub include_sandbox: bool,
    /// The `pg` given to `IMP.request_pay`: `chai`, `chai.{public_key}`, or
    /// any i'mport billing PG. The part before the dot is the expected
    /// `pg_provider` of issued keys.
    pub pg: String,
    /// `pay_method` for the payment window (`IAMPORT_PAY_METHOD`; by default
    /// `trans` for CHAI, as its guide says, and `card` for any other PG).
    pub pay_method: String,
    pub default_plan: Plan,
    /// `m_redirect_url`: where i'mport sends the browser (the callback route).
    pub callback_url: Option<Url>,
    pub success_redirect: Option<Url>,
    pub failure_redirect: Option<Url>,
    /// `notice_url` sent with each charge (the webhook route), if any.
    pub notice_url: Option<Url>,
    pub charge_on_signup: bool,
    /// i'mport requests in flight per process (`CHARGE_CONCURRENCY`).
    pub concurrency: usize,
    /// `single` (one invocation charges the run) or `queued` (it plans the
    /// run into `CHARGE_QUEUE_URL`; workers charge). See docs/performance.md.
    pub charge_mode: ChargeMode,
    pub dunning: DunningPolicy,
    pub due_shards: u32,
    /// How long a claim on an attempt lasts. Longer than any function's
    /// timeout (checked at the start of each run) and than the longest chain
    /// of gateway calls of one charge (checked here).
    pub claim_lease: Duration,
    /// How long after a charge request was sent "i'mport has no payment under
    /// its merchant_uid" may be read as "it never arrived" and the request
    /// sent again (with the same merchant_uid).
    pub resend_quiet: Duration,
    /// Key of the merchant_uid tags (`MERCHANT_UID_KEY` locally; in AWS the
    /// secret's `uid_key`); derived from the i'mport secret when absent.
    pub uid_key: Option<Secret>,
    /// More than one live subscription per user and plan.
    pub allow_multiple_subscriptions: bool,
    /// Delete the billing key at i'mport when a subscription is cancelled now.
    pub delete_key_on_cancel: bool,
    /// `x-api-key` of the management API (in addition to IAM on its routes).
    pub management_api_key: Option<Secret>,
    pub registration_ttl: Duration,
    /// Shared secret for `POST /billing/prepare` (header `x-api-key`), in
    /// addition to (or instead of) IAM authorisation on the route.
    pub prepare_api_key: Option<Secret>,
    /// Empty: accept webhooks from anywhere (the body is re-verified anyway).
    pub webhook_allowed_ips: Vec<IpAddr>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses configuration from any lookup (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let url = |name: &'static str| -> Result<Option<Url>, ConfigError> {
            var(name)
                .map(|v| {
                    let u = Url::parse(&v).map_err(|e| ConfigError::Invalid {
                        name,
                        reason: e.to_string(),
                    })?;
                    if !matches!(u.scheme(), "http" | "https") {
                        return Err(ConfigError::Invalid {
                            name,
                            reason: "must be an http(s) URL".into(),
                        });
                    }
                    Ok(u)
                })
                .transpose()
        };
        let number =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match var(name) {
                    None => Ok(default),
                    Some(v) => {
                        let n: u64 = v.parse().map_err(|_| ConfigError::Invalid {
                            name,
                            reason: format!("{v:?} is not a whole number"),
                        })?;
                        if n < min || n > max {
                            return Err(ConfigError::Invalid {
                                name,
                                reason: format!("{n} is outside {min}..={max}"),
                            });
                        }
                        Ok(n)
                    }
                }
            };
        let flag = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
                None => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(other) => Err(ConfigError::Invalid {
                    name,
                    reason: format!("{other:?} is not true/false"),
                }),
            }
        };

        let payment_api = match var("PAYMENT_API").as_deref() {
            None | Some("v1") => PaymentApi::V1,
            Some("v2") => PaymentApi::V2,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "PAYMENT_API",
                    reason: format!("{other:?} is not v1 or v2"),
                });
            }
        };
        let credentials = match (
            payment_api,
            var("IAMPORT_CREDENTIALS_SECRET_ARN"),
            var("IAMPORT_KEY"),
            var("IAMPORT_SECRET"),
            var("PORTONE_API_SECRET"),
        ) {
            (_, Some(secret_id), _, _, _) => CredentialsSource::SecretsManager { secret_id },
            (PaymentApi::V1, None, Some(k), Some(s), _) => CredentialsSource::Plain {
                imp_key: Secret::new(k),
                imp_secret: Secret::new(s),
            },
            (PaymentApi::V2, None, _, _, Some(api_secret)) => CredentialsSource::PlainV2 {
                api_secret: Secret::new(api_secret),
                webhook_secrets: var("PORTONE_WEBHOOK_SECRETS")
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| Secret::new(s.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            (PaymentApi::V1, ..) => {
                return Err(ConfigError::Missing {
                    name: "IAMPORT_CREDENTIALS_SECRET_ARN (or IAMPORT_KEY and IAMPORT_SECRET)",
                });
            }
            (PaymentApi::V2, ..) => {
                return Err(ConfigError::Missing {
                    name: "IAMPORT_CREDENTIALS_SECRET_ARN (or PORTONE_API_SECRET) with PAYMENT_API=v2",
                });
            }
        };
        let portone = match payment_api {
            PaymentApi::V1 => None,
            PaymentApi::V2 => {
                let base_url = url("PORTONE_BASE_URL")?.unwrap_or_else(|| {
                    Url::parse("https://api.portone.io").unwrap_or_else(|_| unreachable!())
                });
                let id = |name: &'static str| -> Result<String, ConfigError> {
                    let v = var(name).ok_or(ConfigError::Missing { name })?;
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
                let method = var("PORTONE_BILLING_KEY_METHOD").unwrap_or_else(|| "CARD".into());
                if !matches!(
                    method.as_str(),
                    "CARD" | "MOBILE" | "EASY_PAY" | "PAYPAL" | "TRANSFER"
                ) {
                    return Err(ConfigError::Invalid {
                        name: "PORTONE_BILLING_KEY_METHOD",
                        reason: format!(
                            "{method:?} is not CARD, MOBILE, EASY_PAY, PAYPAL or TRANSFER"
                        ),
                    });
                }
                Some(PortOneSettings {
                    base_url,
                    store_id: id("PORTONE_STORE_ID")?,
                    channel_key: id("PORTONE_CHANNEL_KEY")?,
                    billing_key_method: method,
                })
            }
        };

        let pg = var("IAMPORT_PG").unwrap_or_else(|| "chai".into());
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

        let pay_method = var("IAMPORT_PAY_METHOD").unwrap_or_else(|| {
            let provider = pg.split('.').next().unwrap_or_default();
            if provider == "chai" { "trans" } else { "card" }.to_owned()
        });
        if pay_method.is_empty()
            || pay_method.len() > 20
            || !pay_method
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(ConfigError::Invalid {
                name: "IAMPORT_PAY_METHOD",
                reason: format!("{pay_method:?} is not a pay_method like card or trans"),
            });
        }

        let plan_amount = number("PLAN_AMOUNT", 9900, 100, 10_000_000)? as i64;
        let plan_name = var("PLAN_NAME").unwrap_or_else(|| "월간 구독".into());
        if plan_name.chars().count() > 40 {
            return Err(ConfigError::Invalid {
                name: "PLAN_NAME",
                reason: "longer than i'mport's 40 characters".into(),
            });
        }

        let retry_days = var("DUNNING_RETRY_DAYS").unwrap_or_else(|| "1,3,7".into());
        let retry_offsets =
            DunningPolicy::parse_days(&retry_days).map_err(|reason| ConfigError::Invalid {
                name: "DUNNING_RETRY_DAYS",
                reason,
            })?;
        let final_status = match var("DUNNING_FINAL_STATUS").as_deref() {
            None | Some("suspended") => SubscriptionStatus::Suspended,
            Some("cancelled") => SubscriptionStatus::Cancelled,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "DUNNING_FINAL_STATUS",
                    reason: format!("{other:?}: use suspended or cancelled"),
                });
            }
        };

        let webhook_allowed_ips = var("WEBHOOK_ALLOWED_IPS")
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

        let iamport_timeout =
            Duration::from_millis(number("IAMPORT_TIMEOUT_MS", 10_000, 100, 120_000)?);
        let claim_lease = Duration::from_secs(number("CLAIM_LEASE_SECS", 900, 10, 3600)?);
        // The longest chain under one claim: a lookup of an open attempt, the
        // charge, and the lookups that classify a refusal, each possibly sent
        // twice (a 401 forces a new token), plus a margin for the writes.
        let chain = iamport_timeout * 2 * MAX_CALLS_PER_CHARGE + Duration::from_secs(5);
        if claim_lease < chain {
            return Err(ConfigError::Invalid {
                name: "CLAIM_LEASE_SECS",
                reason: format!(
                    "{} s is shorter than the longest chain of i'mport calls of one charge ({} s with IAMPORT_TIMEOUT_MS)",
                    claim_lease.as_secs(),
                    chain.as_secs()
                ),
            });
        }
        let resend_quiet = Duration::from_secs(number("RESEND_QUIET_SECS", 600, 1, 86_400)?);
        // The quiet period counts from the claim; the request itself leaves
        // after a getToken (and, on a 401, another getToken and a second
        // send): keep well clear of that.
        let quiet_floor = iamport_timeout * 5 + Duration::from_secs(60);
        if resend_quiet < quiet_floor {
            return Err(ConfigError::Invalid {
                name: "RESEND_QUIET_SECS",
                reason: format!(
                    "must be at least {} s (five times IAMPORT_TIMEOUT_MS plus a minute): i'mport may still be processing a request that timed out",
                    quiet_floor.as_secs()
                ),
            });
        }
        let uid_key = var("MERCHANT_UID_KEY").map(Secret::new);
        if uid_key.as_ref().is_some_and(|k| k.expose().len() < 16) {
            return Err(ConfigError::Invalid {
                name: "MERCHANT_UID_KEY",
                reason: "must have at least 16 characters".into(),
            });
        }

        Ok(Self {
            table_name: var("TABLE_NAME").ok_or(ConfigError::Missing { name: "TABLE_NAME" })?,
            payment_api,
            portone,
            iamport_base_url: url("IAMPORT_BASE_URL")?
                .unwrap_or_else(|| Url::parse(DEFAULT_BASE_URL).expect("constant URL")),
            credentials,
            iamport_timeout,
            iamport_connect_timeout: Duration::from_millis(number(
                "IAMPORT_CONNECT_TIMEOUT_MS",
                3_000,
                50,
                60_000,
            )?),
            include_sandbox: flag("IAMPORT_INCLUDE_SANDBOX", false)?,
            pg,
            pay_method,
            default_plan: Plan {
                amount: plan_amount,
                name: plan_name,
            },
            callback_url: url("CALLBACK_URL")?,
            success_redirect: url("SUCCESS_REDIRECT_URL")?,
            failure_redirect: url("FAILURE_REDIRECT_URL")?,
            notice_url: url("NOTICE_URL")?,
            charge_on_signup: flag("CHARGE_ON_SIGNUP", true)?,
            concurrency: number("CHARGE_CONCURRENCY", 8, 1, 256)? as usize,
            charge_mode: match (var("CHARGE_MODE").as_deref(), url("CHARGE_QUEUE_URL")?) {
                (None | Some("single"), _) => ChargeMode::Single,
                (Some("queued"), Some(queue_url)) => ChargeMode::Queued { queue_url },
                (Some("queued"), None) => {
                    return Err(ConfigError::Missing {
                        name: "CHARGE_QUEUE_URL (CHARGE_MODE=queued)",
                    });
                }
                (Some(other), _) => {
                    return Err(ConfigError::Invalid {
                        name: "CHARGE_MODE",
                        reason: format!("{other:?} is not single or queued"),
                    });
                }
            },
            dunning: DunningPolicy {
                retry_offsets,
                final_status,
            },
            due_shards: number("DUE_SHARDS", 4, 1, 64)? as u32,
            claim_lease,
            resend_quiet,
            uid_key,
            allow_multiple_subscriptions: flag("ALLOW_MULTIPLE_SUBSCRIPTIONS", false)?,
            delete_key_on_cancel: flag("DELETE_KEY_ON_CANCEL", true)?,
            management_api_key: var("MANAGEMENT_API_KEY").map(Secret::new),
            registration_ttl: Duration::from_secs(number(
                "REGISTRATION_TTL_SECS",
                86_400,
                60,
                30 * 86_400,
            )?),
            prepare_api_key: var("PREPARE_API_KEY").map(Secret::new),
            webhook_allowed_ips,
        })
    }

    /// The `pg_provider` i'mport reports for keys issued through `pg`.
    pub fn pg_provider(&self) -> &str {
        pg_provider_of(&self.pg)
    }
}

/// `chai.pk_123` → `chai`.
pub fn pg_provider_of(pg: &str) -> &str {
    pg.split('.').next().unwrap_or(pg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 3] = [
        ("TABLE_NAME", "t"),
        ("IAMPORT_KEY", "k"),
        ("IAMPORT_SECRET", "s"),
    ];

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&BASE).unwrap();
        assert_eq!(c.pg, "chai");
        assert_eq!(c.iamport_base_url.as_str(), "https://api.iamport.kr/");
        assert_eq!(c.default_plan.amount, 9900);
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.dunning, DunningPolicy::default());
        assert!(c.charge_on_signup);
        assert!(c.webhook_allowed_ips.is_empty());
    }

    #[test]
    fn pg_is_configuration_not_a_constant() {
        let mut pairs = BASE.to_vec();
        pairs.push(("IAMPORT_PG", "chai.pk_live_123"));
        let c = parse(&pairs).unwrap();
        assert_eq!(c.pg, "chai.pk_live_123");
        assert_eq!(c.pg_provider(), "chai");
        assert_eq!(c.pay_method, "trans", "CHAI's guide: pay_method trans");
        pairs.pop();
        pairs.push(("IAMPORT_PG", "tosspayments.iamporttest_3"));
        let c = parse(&pairs).unwrap();
        assert_eq!(c.pg_provider(), "tosspayments");
        assert_eq!(
            c.pay_method, "card",
            "other billing PGs issue keys on cards"
        );
        pairs.push(("IAMPORT_PAY_METHOD", "trans"));
        assert_eq!(parse(&pairs).unwrap().pay_method, "trans");
    }

    #[test]
    fn bad_values_fail_at_init_with_the_variable_named() {
        for (k, v) in [
            ("PLAN_AMOUNT", "12.5"),
            ("CHARGE_CONCURRENCY", "0"),
            ("DUNNING_RETRY_DAYS", "7,3"),
            ("IAMPORT_BASE_URL", "ftp://x"),
            ("WEBHOOK_ALLOWED_IPS", "1.2.3"),
            ("IAMPORT_PG", "chai pay"),
            ("IAMPORT_PAY_METHOD", "Card!"),
            ("CHARGE_ON_SIGNUP", "maybe"),
            ("CLAIM_LEASE_SECS", "60"),
            ("RESEND_QUIET_SECS", "5"),
            ("MERCHANT_UID_KEY", "short"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((k, v));
            let err = parse(&pairs).unwrap_err().to_string();
            assert!(err.contains(k), "{k}: {err}");
        }
        let err = parse(&[("TABLE_NAME", "t")]).unwrap_err().to_string();
        assert!(err.contains("IAMPORT_CREDENTIALS_SECRET_ARN"), "{err}");
    }

    #[test]
    fn debug_does_not_print_credentials() {
        let c = parse(&[
            ("TABLE_NAME", "t"),
            ("IAMPORT_KEY", "key-123"),
            ("IAMPORT_SECRET", "secret-456"),
            ("PREPARE_API_KEY", "prep-789"),
        ])
        .unwrap();
        let d = format!("{c:?}");
        for s in ["key-123", "secret-456", "prep-789"] {
            assert!(!d.contains(s), "{s} leaked: {d}");
        }
    }
}
