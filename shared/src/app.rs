//! Production wiring: the configuration, the DynamoDB ledger and the
//! payment gateway (i'mport V1 or PortOne V2, by `PAYMENT_API`), built once
//! per cold start. Handlers hand `app.engine` to the services. The handlers
//! are generic over the ledger and the gateway: tests run the same handlers
//! on the in-memory ledger ([`App::on_ledger`]).

use aws_config::BehaviorVersion;

use crate::billing::UidKey;
use crate::clock::Clock;
use crate::config::{BillingClock, Config, ConfigError, CredentialsSource, GatewayApi};
use crate::engine::{Engine, Settings};
use crate::gateway::AnyGateway;
use crate::gateway::iamport::{ClientConfig, IamportClient};
use crate::gateway::limit::Limited;
use crate::gateway::portone::webhook::WebhookSecrets;
use crate::gateway::portone::{PortOneClient, PortOneConfig};
use crate::ledger::dynamodb::DynamoLedger;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

/// Configuration and the engine; by default the production one: DynamoDB,
/// and the gateway behind a cap of `CHARGE_CONCURRENCY` requests in flight
/// (only gateway calls hold a slot).
#[derive(Debug)]
pub struct App<L = DynamoLedger, G = Limited<AnyGateway>> {
    pub config: Config,
    pub engine: Engine<L, G>,
}

/// PortOne V2's secrets.
#[derive(Debug, Clone)]
pub struct PortOneCredentials {
    pub api_secret: Secret,
    pub webhook_secrets: Vec<Secret>,
}

/// The i'mport credentials and the merchant_uid tag key, however stored.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub imp_key: Secret,
    pub imp_secret: Secret,
    pub uid_key: Option<Secret>,
    /// The optional `x-api-key`s, kept in the same secret in production
    /// (`prepare_api_key`, `management_api_key`); they override the
    /// variables of the same names.
    pub api_keys: ApiKeys,
    /// V2: the API secret and the webhook secrets (`portone_api_secret`,
    /// `portone_webhook_secrets` in the secret).
    pub portone: Option<PortOneCredentials>,
}

/// Shared secrets some routes require on top of IAM.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    pub prepare: Option<Secret>,
    pub management: Option<Secret>,
}

impl App {
    /// Reads the environment, fetches the i'mport credentials (Secrets Manager
    /// in production) and builds the clients. AWS endpoints come from the
    /// standard variables (`AWS_ENDPOINT_URL_DYNAMODB` for a local emulator).
    pub async fn from_env() -> Result<Self, InitError> {
        let config = Config::from_env()?;
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let credentials = resolve_credentials(&config, &sdk).await?;
        let mut ledger = DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            config.table.name.clone(),
            config.table.due_shards,
        );
        if let Some(key_id) = &config.table.billing_key_kms_key_id {
            ledger = ledger.with_sealed_keys(aws_sdk_kms::Client::new(&sdk), key_id);
        }
        // On the event's clock (local runs only) the process clock follows
        // the runs' times (`run::follow_the_event`): a shifted clock.
        let clock = match config.charging.billing_clock {
            BillingClock::Event => Clock::shifted(),
            BillingClock::Wall => Clock::system(),
        };
        Self::new(config, ledger, credentials, clock)
    }

    pub fn new(
        config: Config,
        ledger: DynamoLedger,
        credentials: Credentials,
        clock: Clock,
    ) -> Result<Self, InitError> {
        if config.table.billing_key_kms_key_id.is_some() && !ledger.seals_keys() {
            return Err(ConfigError::Invalid {
                name: "BILLING_KEY_KMS_KEY_ID",
                reason: "set, but the ledger was built without it (DynamoLedger::with_sealed_keys)"
                    .into(),
            }
            .into());
        }
        App::on_ledger(config, ledger, credentials, clock)
    }
}

impl<L: crate::ledger::Ledger> App<L, Limited<AnyGateway>> {
    /// The configured gateway and settings over any ledger (production:
    /// [`App::new`] with the DynamoDB one; tests: the in-memory one).
    pub fn on_ledger(
        mut config: Config,
        ledger: L,
        credentials: Credentials,
        clock: Clock,
    ) -> Result<Self, InitError> {
        if let Some(k) = credentials.api_keys.prepare.clone() {
            config.http.prepare_api_key = Some(k);
        }
        if let Some(k) = credentials.api_keys.management.clone() {
            config.http.management_api_key = Some(k);
        }
        let derive_from = match (&credentials.portone, &config.gateway.api) {
            (Some(p), GatewayApi::V2(_)) => p.api_secret.clone(),
            _ => credentials.imp_secret.clone(),
        };
        let uid_key = match &credentials.uid_key {
            Some(k) => UidKey::new(k.expose().as_bytes()).ok_or(ConfigError::Invalid {
                name: "MERCHANT_UID_KEY",
                reason: "must have at least 16 characters".into(),
            })?,
            None => UidKey::derived_from(derive_from.expose().as_bytes()),
        };
        let connect_timeout = config.gateway.connect_timeout;
        let gateway = match (&config.gateway.api, credentials.portone) {
            (GatewayApi::V2(v2), Some(secrets)) => {
                let webhook_secrets =
                    WebhookSecrets::parse(&secrets.webhook_secrets).map_err(|reason| {
                        ConfigError::Invalid {
                            name: "PORTONE_WEBHOOK_SECRETS",
                            reason,
                        }
                    })?;
                AnyGateway::V2(
                    PortOneClient::new(PortOneConfig {
                        base_url: v2.base_url.clone(),
                        api_secret: secrets.api_secret,
                        store_id: v2.store_id.clone(),
                        channel_key: v2.channel_key.clone(),
                        billing_key_method: v2.billing_key_method.clone(),
                        webhook_secrets,
                        connect_timeout,
                        timeout: v2.timeout,
                    })
                    .map_err(|e| InitError::Http(e.to_string()))?,
                )
            }
            (GatewayApi::V2(_), None) => {
                return Err(ConfigError::Missing {
                    name: "the PortOne V2 API secret (PORTONE_API_SECRET, or portone_api_secret in the credentials secret)",
                }
                .into());
            }
            (GatewayApi::V1(v1), _) => {
                let mut client_config = ClientConfig::new(
                    v1.base_url.clone(),
                    credentials.imp_key,
                    credentials.imp_secret,
                );
                client_config.timeout = v1.timeout;
                client_config.connect_timeout = connect_timeout;
                client_config.include_sandbox = v1.include_sandbox;
                client_config.pay_method = v1.pay_method.clone();
                AnyGateway::V1(
                    IamportClient::new(client_config)
                        .map_err(|e| InitError::Http(e.to_string()))?,
                )
            }
        };
        let settings = Settings::from_config(&config, uid_key);
        let gateway = Limited::new(gateway, config.charging.concurrency);
        Ok(Self {
            engine: Engine::new(ledger, gateway, clock, settings),
            config,
        })
    }
}

async fn resolve_credentials(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<Credentials, ConfigError> {
    match &config.gateway.credentials {
        CredentialsSource::Plain {
            imp_key,
            imp_secret,
        } => Ok(Credentials {
            imp_key: imp_key.clone(),
            imp_secret: imp_secret.clone(),
            uid_key: config.charging.uid_key.clone(),
            api_keys: ApiKeys::default(),
            portone: None,
        }),
        CredentialsSource::PlainV2 {
            api_secret,
            webhook_secrets,
        } => Ok(Credentials {
            imp_key: Secret::new(""),
            imp_secret: Secret::new(""),
            uid_key: config.charging.uid_key.clone(),
            api_keys: ApiKeys::default(),
            portone: Some(PortOneCredentials {
                api_secret: api_secret.clone(),
                webhook_secrets: webhook_secrets.clone(),
            }),
        }),
        CredentialsSource::SecretsManager { secret_id } => {
            #[derive(serde::Deserialize)]
            struct Stored {
                #[serde(default)]
                imp_key: String,
                #[serde(default)]
                imp_secret: String,
                #[serde(default)]
                portone_api_secret: Option<String>,
                #[serde(default)]
                portone_webhook_secrets: Vec<String>,
                #[serde(default)]
                uid_key: Option<String>,
                #[serde(default)]
                prepare_api_key: Option<String>,
                #[serde(default)]
                management_api_key: Option<String>,
            }
            let client = aws_sdk_secretsmanager::Client::new(sdk);
            let out = client
                .get_secret_value()
                .secret_id(secret_id)
                .send()
                .await
                .map_err(|e| {
                    ConfigError::Secret(format!(
                        "GetSecretValue {secret_id}: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    ))
                })?;
            let text = out
                .secret_string()
                .ok_or_else(|| ConfigError::Secret(format!("{secret_id} has no SecretString")))?;
            // Never include the text in an error: it is the secret.
            let stored: Stored = serde_json::from_str(text).map_err(|_| {
                ConfigError::Secret(format!(
                    "{secret_id} is not JSON with imp_key and imp_secret (or portone_api_secret)"
                ))
            })?;
            Ok(Credentials {
                imp_key: Secret::new(stored.imp_key),
                imp_secret: Secret::new(stored.imp_secret),
                uid_key: stored
                    .uid_key
                    .map(Secret::new)
                    .or_else(|| config.charging.uid_key.clone()),
                api_keys: ApiKeys {
                    prepare: stored.prepare_api_key.map(Secret::new),
                    management: stored.management_api_key.map(Secret::new),
                },
                portone: stored
                    .portone_api_secret
                    .map(|api_secret| PortOneCredentials {
                        api_secret: Secret::new(api_secret),
                        webhook_secrets: stored
                            .portone_webhook_secrets
                            .into_iter()
                            .map(Secret::new)
                            .collect(),
                    }),
            })
        }
    }
}
