//! Typed configuration, read once at cold start. A bad value fails the
//! deploy at init, not at the first customer.

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use crate::billing::Plan;
use crate::billing::changes::ResumePolicy;
use crate::billing::{DunningPolicy, SubscriptionStatus};
use crate::gateway::iamport::DEFAULT_BASE_URL;
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

/// What a run's billing time may be (`BILLING_CLOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BillingClock {
    /// The real clock: a run's time may be in the past (a replayed day
    /// charges only what was due then) but at most [`BILLING_CLOCK_SKEW`]
    /// ahead of now. Production.
    #[default]
    Wall,
    /// The event's time, whatever it is: a test clock (months played in
    /// minutes). Local runs only (`BILLING_CLOCK=event` needs a local
    /// DynamoDB endpoint).
    Event,
}

/// How far ahead of the clock a run's time may be (the scheduler's
/// `scheduled-time` is the minute the run was due, and clocks differ).
pub const BILLING_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

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
    /// Source addresses the webhook accepts; empty: any (V2's signatures
    /// are checked). V1's default is i'mport's three documented addresses
    /// (its webhooks are unsigned); `WEBHOOK_ALLOWED_IPS=any` turns it off.
    pub webhook_allowed_ips: Vec<IpAddr>,
    /// PortOne V2's per-request timeout (`PORTONE_TIMEOUT_MS`, 60 s like
    /// PortOne's own SDKs); V1 uses `iamport_timeout`.
    pub portone_timeout: Duration,
    /// The per-request timeout of the configured gateway.
    pub gateway_timeout: Duration,
    /// What the billing clock is (`BILLING_CLOCK`): the real clock, with the
    /// event's time accepted up to a small skew ahead (production); or the
    /// event's time whatever it is, a test clock only a local DynamoDB
    /// endpoint allows.
    pub billing_clock: BillingClock,
    /// Refund a payment that lands after a cancel-now by itself instead of
    /// leaving it to a person (`REFUND_AFTER_CANCEL`).
    pub refund_after_cancel: bool,
    /// What a subscription that had no access is charged when it gets it
    /// back (`RESUME_POLICY`: `reanchor` or `collect_outstanding`).
    pub resume_policy: ResumePolicy,
    /// The KMS key that wraps the table's data key, with which billing keys
    /// are sealed at rest (`BILLING_KEY_KMS_KEY_ID`: an id, an ARN or
    /// `alias/…`). Required with V2, whose billing keys are PortOne's.
    pub billing_key_kms_key_id: Option<String>,
}

/// i'mport's documented webhook source addresses.
pub const IAMPORT_WEBHOOK_IPS: [&str; 3] = ["52.78.100.19", "52.78.48.223", "52.78.5.241"];

/// Whether `endpoint` (an `AWS_ENDPOINT_URL*` value) names a local
/// emulator: loopback, `localhost`, Docker's `host.docker.internal`, or a
/// container name (no dots). AWS's own endpoints have none of these forms.
fn local_endpoint(endpoint: &str) -> bool {
    let Ok(url) = Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            matches!(name, "localhost" | "host.docker.internal") || !name.contains('.')
        }
        None => false,
    }
}

/// A variable's value, trimmed; `None` when it is unset or blank.
fn value(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A whole number within `min..=max`, `default` when unset.
fn whole_number(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = value(get, name) else {
        return Ok(default);
    };
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

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses configuration from any lookup (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| value(&get, name);
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
        let number = |name: &'static str, default: u64, min: u64, max: u64| {
            whole_number(&get, name, default, min, max)
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

        let allowed = match (var("WEBHOOK_ALLOWED_IPS"), payment_api) {
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

        let iamport_timeout =
            Duration::from_millis(number("IAMPORT_TIMEOUT_MS", 10_000, 100, 120_000)?);
        let portone_timeout =
            Duration::from_millis(number("PORTONE_TIMEOUT_MS", 60_000, 100, 120_000)?);
        let (gateway_timeout, timeout_name) = match payment_api {
            PaymentApi::V1 => (iamport_timeout, "IAMPORT_TIMEOUT_MS"),
            PaymentApi::V2 => (portone_timeout, "PORTONE_TIMEOUT_MS"),
        };
        let claim_lease = Duration::from_secs(number("CLAIM_LEASE_SECS", 900, 10, 3600)?);
        // The longest chain under one claim: a lookup of an open attempt, the
        // charge, and the lookups that classify a refusal, each possibly sent
        // twice (a 401 forces a new token), plus a margin for the writes.
        let chain = gateway_timeout * 2 * MAX_CALLS_PER_CHARGE + Duration::from_secs(5);
        if claim_lease < chain {
            return Err(ConfigError::Invalid {
                name: "CLAIM_LEASE_SECS",
                reason: format!(
                    "{} s is shorter than the longest chain of gateway calls of one charge ({} s with {timeout_name})",
                    claim_lease.as_secs(),
                    chain.as_secs()
                ),
            });
        }
        let resend_quiet = Duration::from_secs(number("RESEND_QUIET_SECS", 600, 1, 86_400)?);
        // The quiet period counts from the claim; the request itself leaves
        // after a getToken (and, on a 401, another getToken and a second
        // send): keep well clear of that.
        let billing_key_kms_key_id = var("BILLING_KEY_KMS_KEY_ID").filter(|v| !v.trim().is_empty());
        if payment_api == PaymentApi::V2 && billing_key_kms_key_id.is_none() {
            return Err(ConfigError::Missing {
                name: "BILLING_KEY_KMS_KEY_ID (V2 billing keys are stored sealed, under a data key this KMS key wraps)",
            });
        }
        let billing_clock = match var("BILLING_CLOCK").as_deref() {
            None | Some("wall") => BillingClock::Wall,
            Some("event") => {
                let endpoint = var("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| var("AWS_ENDPOINT_URL"));
                if !endpoint.as_deref().is_some_and(local_endpoint) {
                    return Err(ConfigError::Invalid {
                        name: "BILLING_CLOCK",
                        reason: "event (the event's time as a test clock) is for local runs only: it needs AWS_ENDPOINT_URL_DYNAMODB on a local emulator (loopback, localhost or a container name)".into(),
                    });
                }
                BillingClock::Event
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "BILLING_CLOCK",
                    reason: format!("{other:?} is not wall or event"),
                });
            }
        };
        let quiet_floor = gateway_timeout * 5 + Duration::from_secs(60);
        // A test clock (months played in minutes against a simulator that
        // answers at once) may wait less; the real world may not.
        if resend_quiet < quiet_floor && billing_clock == BillingClock::Wall {
            return Err(ConfigError::Invalid {
                name: "RESEND_QUIET_SECS",
                reason: format!(
                    "must be at least {} s (five times {timeout_name} plus a minute): the gateway may still be processing a request that timed out",
                    quiet_floor.as_secs()
                ),
            });
        }
        let resume_policy = match var("RESUME_POLICY") {
            None => ResumePolicy::default(),
            Some(v) => ResumePolicy::parse(&v).ok_or_else(|| ConfigError::Invalid {
                name: "RESUME_POLICY",
                reason: format!("{v:?} is not reanchor or collect_outstanding"),
            })?,
        };
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
            iamport_base_url: match url("IAMPORT_BASE_URL")? {
                Some(u) => u,
                None => Url::parse(DEFAULT_BASE_URL).map_err(|e| ConfigError::Invalid {
                    name: "IAMPORT_BASE_URL",
                    reason: format!("the default {DEFAULT_BASE_URL}: {e}"),
                })?,
            },
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
            portone_timeout,
            gateway_timeout,
            billing_clock,
            refund_after_cancel: flag("REFUND_AFTER_CANCEL", false)?,
            resume_policy,
            billing_key_kms_key_id,
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

/// What event-publisher reads: it needs the table (read with keys left
/// sealed) and the bus, no gateway and no credentials. A bad value fails
/// the cold start, as for the other functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    pub table_name: String,
    pub due_shards: u32,
    pub event_bus_name: String,
    /// `source` of the published events (`EVENT_SOURCE`, default
    /// `subscription-billing`).
    pub event_source: String,
}

impl PublisherConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| value(&get, name);
        let due_shards = whole_number(&get, "DUE_SHARDS", 4, 1, 64)? as u32;
        Ok(Self {
            table_name: var("TABLE_NAME").ok_or(ConfigError::Missing { name: "TABLE_NAME" })?,
            due_shards,
            event_bus_name: var("EVENT_BUS_NAME").ok_or(ConfigError::Missing {
                name: "EVENT_BUS_NAME",
            })?,
            event_source: var("EVENT_SOURCE").unwrap_or_else(|| "subscription-billing".into()),
        })
    }
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
        assert_eq!(c.billing_clock, BillingClock::Wall);
        assert_eq!(c.resume_policy, ResumePolicy::Reanchor);
        assert!(!c.refund_after_cancel);
        assert_eq!(c.gateway_timeout, Duration::from_secs(10));
    }

    /// Defect X1: V1 webhooks are unsigned; the allow-list of i'mport's
    /// documented addresses is on unless turned off on purpose.
    #[test]
    fn v1_webhooks_are_accepted_only_from_iamport_by_default() {
        let c = parse(&BASE).unwrap();
        let ips: Vec<String> = c
            .webhook_allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, IAMPORT_WEBHOOK_IPS);
        let mut pairs = BASE.to_vec();
        pairs.push(("WEBHOOK_ALLOWED_IPS", "any"));
        assert!(parse(&pairs).unwrap().webhook_allowed_ips.is_empty());
    }

    /// Defect C3: PortOne's SDKs wait 60 s; V2 had V1's 10 s.
    #[test]
    fn v2_has_its_own_timeout() {
        let v2 = [
            ("TABLE_NAME", "t"),
            ("PAYMENT_API", "v2"),
            ("PORTONE_API_SECRET", "s"),
            ("PORTONE_STORE_ID", "store-1"),
            ("PORTONE_CHANNEL_KEY", "channel-1"),
            ("BILLING_KEY_KMS_KEY_ID", "alias/billing-keys"),
        ];
        let c = parse(&v2).unwrap();
        assert_eq!(c.gateway_timeout, Duration::from_secs(60));
        assert!(c.webhook_allowed_ips.is_empty(), "V2 webhooks are signed");
    }

    /// Defect X3: V2 billing keys are stored sealed; a V2 configuration
    /// without the KMS key that wraps the data key is refused.
    #[test]
    fn v2_needs_the_kms_key_that_seals_billing_keys() {
        let v2 = [
            ("TABLE_NAME", "t"),
            ("PAYMENT_API", "v2"),
            ("PORTONE_API_SECRET", "s"),
            ("PORTONE_STORE_ID", "store-1"),
            ("PORTONE_CHANNEL_KEY", "channel-1"),
        ];
        let err = parse(&v2).unwrap_err().to_string();
        assert!(err.contains("BILLING_KEY_KMS_KEY_ID"), "{err}");
        let mut with = v2.to_vec();
        with.push(("BILLING_KEY_KMS_KEY_ID", "alias/billing-keys"));
        assert_eq!(
            parse(&with).unwrap().billing_key_kms_key_id.as_deref(),
            Some("alias/billing-keys")
        );
        assert_eq!(
            parse(&BASE).unwrap().billing_key_kms_key_id,
            None,
            "optional with V1"
        );
    }

    /// Defect D7: the event's time as the billing clock is a test clock,
    /// which only a local DynamoDB endpoint can enable.
    #[test]
    fn the_event_clock_needs_a_local_dynamodb() {
        let mut pairs = BASE.to_vec();
        pairs.push(("BILLING_CLOCK", "event"));
        assert!(
            parse(&pairs)
                .unwrap_err()
                .to_string()
                .contains("BILLING_CLOCK")
        );
        for (endpoint, ok) in [
            ("https://dynamodb.ap-northeast-2.amazonaws.com", false),
            ("http://10.0.0.5:8000", false),
            ("http://127.0.0.1:8000", true),
            ("http://localhost:8000", true),
            ("http://moto:5000", true),
        ] {
            let mut with = pairs.clone();
            with.push(("AWS_ENDPOINT_URL_DYNAMODB", endpoint));
            assert_eq!(parse(&with).is_ok(), ok, "{endpoint}");
        }
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
            ("RESUME_POLICY", "forgive"),
            ("BILLING_CLOCK", "sundial"),
            ("REFUND_AFTER_CANCEL", "perhaps"),
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

    #[test]
    fn the_publisher_reads_its_four_variables_and_refuses_bad_shards() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = PublisherConfig::from_lookup(env(&[("TABLE_NAME", "t"), ("EVENT_BUS_NAME", "b")]))
            .unwrap();
        assert_eq!(
            (c.due_shards, c.event_source.as_str()),
            (4, "subscription-billing")
        );
        let bad = PublisherConfig::from_lookup(env(&[
            ("TABLE_NAME", "t"),
            ("EVENT_BUS_NAME", "b"),
            ("DUE_SHARDS", "four"),
        ]))
        .unwrap_err();
        assert!(bad.to_string().contains("DUE_SHARDS"), "{bad}");
        let missing = PublisherConfig::from_lookup(env(&[("TABLE_NAME", "t")])).unwrap_err();
        assert!(missing.to_string().contains("EVENT_BUS_NAME"), "{missing}");
    }
}
