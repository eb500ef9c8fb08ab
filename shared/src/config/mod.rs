//! Typed configuration, read once at cold start, as one tree grouped by
//! what depends on it: the table, the gateway (V1 | V2, with its own
//! credentials), charging, registration, the http routes and, for
//! event-publisher, the events. Each group has its own parser; the checks
//! that span groups are here. A bad value fails the deploy at init, not at
//! the first customer.

mod charging;
mod gateway;
mod http;
mod registration;
mod table;
mod vars;

pub use charging::{
    BILLING_CLOCK_SKEW, BillingClock, ChargeMode, ChargingConfig, MAX_CALLS_PER_CHARGE,
};
pub use gateway::{
    CredentialsSource, GatewayApi, GatewayConfig, IamportSettings, PaymentApi, PortOneSettings,
    pg_provider_of,
};
pub use http::{HttpConfig, IAMPORT_WEBHOOK_IPS};
pub use registration::RegistrationConfig;
pub use table::{EventsConfig, TableConfig};
pub use vars::Vars;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("could not read the gateway's credentials: {0}")]
    Secret(String),
}

/// What the functions that charge, register and answer the routes read.
#[derive(Debug, Clone)]
pub struct Config {
    pub table: TableConfig,
    pub gateway: GatewayConfig,
    pub charging: ChargingConfig,
    pub registration: RegistrationConfig,
    pub http: HttpConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses configuration from any lookup (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&get);
        let table = TableConfig::parse(&vars)?;
        let gateway = GatewayConfig::parse(&vars)?;
        let charging = ChargingConfig::parse(&vars)?;
        let registration = RegistrationConfig::parse(&vars)?;
        let http = HttpConfig::parse(&vars, gateway.payment_api())?;
        let (timeout, timeout_name) = gateway.timeout();
        charging.check_against(timeout, timeout_name)?;
        if gateway.payment_api() == PaymentApi::V2 && table.billing_key_kms_key_id.is_none() {
            return Err(ConfigError::Missing {
                name: "BILLING_KEY_KMS_KEY_ID (V2 billing keys are stored sealed, under a data key this KMS key wraps)",
            });
        }
        Ok(Self {
            table,
            gateway,
            charging,
            registration,
            http,
        })
    }
}

/// What event-publisher reads: the table (read with keys left sealed) and
/// the bus, no gateway and no credentials. A bad value fails the cold
/// start, as for the other functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    pub table: TableConfig,
    pub events: EventsConfig,
}

impl PublisherConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&get);
        Ok(Self {
            table: TableConfig::parse(&vars)?,
            events: EventsConfig::parse(&vars)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::DunningPolicy;
    use crate::billing::changes::ResumePolicy;
    use std::collections::HashMap;
    use std::time::Duration;

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
        let GatewayApi::V1(v1) = &c.gateway.api else {
            panic!("V1 is the default: {:?}", c.gateway.api)
        };
        assert_eq!(v1.pg, "chai");
        assert_eq!(v1.base_url.as_str(), "https://api.iamport.kr/");
        assert_eq!(c.registration.default_plan.amount, 9900);
        assert!(c.registration.charge_on_signup);
        assert_eq!(c.charging.concurrency, 8);
        assert_eq!(c.charging.dunning, DunningPolicy::default());
        assert_eq!(c.charging.billing_clock, BillingClock::Wall);
        assert_eq!(c.charging.resume_policy, ResumePolicy::Reanchor);
        assert!(!c.charging.refund_after_cancel);
        assert_eq!(c.gateway.timeout().0, Duration::from_secs(10));
        assert_eq!(c.table.due_shards, 4);
    }

    /// The groups' `Default`s (what tests and the simulation start from)
    /// are the documented defaults, not a second copy of them.
    #[test]
    fn group_defaults_are_what_an_empty_environment_reads() {
        let c = parse(&BASE).unwrap();
        let charging = ChargingConfig::default();
        assert_eq!(
            (
                charging.concurrency,
                charging.claim_lease,
                charging.resend_quiet
            ),
            (
                c.charging.concurrency,
                c.charging.claim_lease,
                c.charging.resend_quiet
            )
        );
        assert_eq!(charging.dunning, c.charging.dunning);
        let registration = RegistrationConfig::default();
        assert_eq!(registration.default_plan, c.registration.default_plan);
        assert_eq!(registration.ttl, c.registration.ttl);
    }

    /// Defect X1: V1 webhooks are unsigned; the allow-list of i'mport's
    /// documented addresses is on unless turned off on purpose.
    #[test]
    fn v1_webhooks_are_accepted_only_from_iamport_by_default() {
        let c = parse(&BASE).unwrap();
        let ips: Vec<String> = c
            .http
            .webhook_allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, IAMPORT_WEBHOOK_IPS);
        let mut pairs = BASE.to_vec();
        pairs.push(("WEBHOOK_ALLOWED_IPS", "any"));
        assert!(parse(&pairs).unwrap().http.webhook_allowed_ips.is_empty());
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
        assert_eq!(c.gateway.payment_api(), PaymentApi::V2);
        assert_eq!(
            c.gateway.timeout(),
            (Duration::from_secs(60), "PORTONE_TIMEOUT_MS")
        );
        assert_eq!(c.gateway.pg(), "portone");
        assert!(
            c.http.webhook_allowed_ips.is_empty(),
            "V2 webhooks are signed"
        );
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
            parse(&with)
                .unwrap()
                .table
                .billing_key_kms_key_id
                .as_deref(),
            Some("alias/billing-keys")
        );
        assert_eq!(
            parse(&BASE).unwrap().table.billing_key_kms_key_id,
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
        let v1 = |pairs: &[(&str, &str)]| match parse(pairs).unwrap().gateway.api {
            GatewayApi::V1(v1) => v1,
            other => panic!("{other:?}"),
        };
        let c = v1(&pairs);
        assert_eq!(c.pg, "chai.pk_live_123");
        assert_eq!(c.pg_provider(), "chai");
        assert_eq!(c.pay_method, "trans", "CHAI's guide: pay_method trans");
        pairs.pop();
        pairs.push(("IAMPORT_PG", "tosspayments.iamporttest_3"));
        let c = v1(&pairs);
        assert_eq!(c.pg_provider(), "tosspayments");
        assert_eq!(
            c.pay_method, "card",
            "other billing PGs issue keys on cards"
        );
        pairs.push(("IAMPORT_PAY_METHOD", "trans"));
        assert_eq!(v1(&pairs).pay_method, "trans");
    }

    #[test]
    fn bad_values_fail_at_init_with_the_variable_named() {
        for (k, v) in [
            ("PLAN_AMOUNT", "12.5"),
            ("CHARGE_CONCURRENCY", "0"),
            ("DUNNING_RETRY_DAYS", "7,3"),
            ("DUNNING_RETRY_HOUR", "25"),
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
            ("CANCEL_FEE_PERCENT", "11"),
            ("CANCEL_FEE_PERCENT", "-1"),
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
            (c.table.due_shards, c.events.event_source.as_str()),
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
