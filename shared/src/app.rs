//! The dependencies every handler shares, built once per cold start.

use aws_config::BehaviorVersion;

use crate::config::{Config, ConfigError, CredentialsSource};
use crate::iamport::{ClientConfig, IamportClient};
use crate::secret::Secret;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

/// Configuration, the store and the i'mport client.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
    pub iamport: IamportClient,
}

impl App {
    /// Reads the environment, fetches the i'mport credentials (Secrets Manager
    /// in production) and builds the clients. AWS endpoints come from the
    /// standard variables (`AWS_ENDPOINT_URL_DYNAMODB` for a local emulator).
    pub async fn from_env() -> Result<Self, InitError> {
        let config = Config::from_env()?;
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let (imp_key, imp_secret) = resolve_credentials(&config.credentials, &sdk).await?;
        let store = Store::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            config.table_name.clone(),
            config.due_shards,
        );
        Self::new(config, store, imp_key, imp_secret)
    }

    pub fn new(
        config: Config,
        store: Store,
        imp_key: Secret,
        imp_secret: Secret,
    ) -> Result<Self, InitError> {
        let mut client_config =
            ClientConfig::new(config.iamport_base_url.clone(), imp_key, imp_secret);
        client_config.timeout = config.iamport_timeout;
        client_config.connect_timeout = config.iamport_connect_timeout;
        client_config.include_sandbox = config.include_sandbox;
        let iamport =
            IamportClient::new(client_config).map_err(|e| InitError::Http(e.to_string()))?;
        Ok(Self {
            config,
            store,
            iamport,
        })
    }
}

async fn resolve_credentials(
    source: &CredentialsSource,
    sdk: &aws_config::SdkConfig,
) -> Result<(Secret, Secret), ConfigError> {
    match source {
        CredentialsSource::Plain {
            imp_key,
            imp_secret,
        } => Ok((imp_key.clone(), imp_secret.clone())),
        CredentialsSource::SecretsManager { secret_id } => {
            #[derive(serde::Deserialize)]
            struct Stored {
                imp_key: String,
                imp_secret: String,
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
                    "{secret_id} is not JSON with imp_key and imp_secret"
                ))
            })?;
            Ok((Secret::new(stored.imp_key), Secret::new(stored.imp_secret)))
        }
    }
}
