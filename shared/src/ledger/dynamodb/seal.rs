//! Billing keys sealed at rest (defect X3).
//!
//! A subscription's billing key (V2's `billingKey`, V1's `customer_uid`) is
//! what charges the customer, given our API secret. The table, its backups
//! and its change stream are read by more people and functions than the
//! charge path, so the key is stored sealed: AES-256-GCM under a data key
//! that KMS wraps (envelope encryption), with the subscription id as the
//! associated data (a sealed key copied onto another subscription does not
//! open). Sealing is deterministic: the nonce is a MAC of the
//! subscription id and the key under a key derived from the data key
//! (a synthetic IV), so the same key seals to the same text and a rewrite
//! of a subscription that kept its key does not look like a new key in the
//! change stream (which the lifecycle events read); it tells only that two
//! stored values are equal, never what they are. The wrapped data key is kept in the table itself, in one keyring
//! item written once (the first process to need it creates it; the others
//! read it); each process asks KMS to unwrap it once and keeps the data key
//! in memory. Reading the table is then not enough to read a key: it takes
//! `kms:Decrypt` on the merchant's key, which only the charge path holds.
//!
//! Only the DynamoDB adapter seals: the in-memory ledger holds nothing at
//! rest. Attempts never held the key (they carry a reference,
//! `UidKey::key_ref`). A stored key without the prefix is a key written
//! before sealing was on: it is read as it is and sealed the next time its
//! subscription is written.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob as DynamoBlob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::OnceCell;

use super::sdk_error;
use super::table::{PK, SK};
use crate::ledger::LedgerError;
use crate::ledger::conflict::{Pass, retry_on_conflict};

/// What a sealed value starts with (and the format's version).
const PREFIX: &str = "sealed1:";
/// The keyring item's keys.
const KEYRING_PK: &str = "KEYRING";
const KEYRING_SK: &str = "billing-keys";
const NONCE_LEN: usize = 12;

/// Whether a stored billing key is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// Seals and opens billing keys with the table's data key, fetched (or
/// created) once per process.
pub struct KeySealing {
    kms: aws_sdk_kms::Client,
    /// The KMS key that wraps the data key (an id, an ARN or `alias/…`).
    kms_key_id: String,
    sealer: OnceCell<Sealer>,
}

impl std::fmt::Debug for KeySealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySealing")
            .field("kms_key_id", &self.kms_key_id)
            .field("ready", &self.sealer.initialized())
            .finish_non_exhaustive()
    }
}

impl KeySealing {
    pub fn new(kms: aws_sdk_kms::Client, kms_key_id: impl Into<String>) -> Self {
        Self {
            kms,
            kms_key_id: kms_key_id.into(),
            sealer: OnceCell::new(),
        }
    }

    /// The sealer, reading (or creating) the table's keyring on first use.
    pub async fn sealer(&self, dynamo: &Client, table: &str) -> Result<&Sealer, LedgerError> {
        // Boxed: the KMS and DynamoDB calls of the first load would
        // otherwise sit inline in the future of every ledger operation.
        self.sealer
            .get_or_try_init(|| Box::pin(self.load(dynamo, table)))
            .await
    }

    async fn load(&self, dynamo: &Client, table: &str) -> Result<Sealer, LedgerError> {
        let sealer = retry_on_conflict(3, (), |()| async move {
            if let Some(wrapped) = read_keyring(dynamo, table).await? {
                return self.unwrap_key(table, wrapped).await.map(Pass::Done);
            }
            let made = self
                .kms
                .generate_data_key()
                .key_id(&self.kms_key_id)
                .key_spec(DataKeySpec::Aes256)
                .encryption_context("table", table)
                .encryption_context("purpose", KEYRING_SK)
                .send()
                .await
                .map_err(|e| sdk_error(e, "KMS GenerateDataKey"))?;
            let (Some(plain), Some(wrapped)) = (made.plaintext(), made.ciphertext_blob()) else {
                return Err(LedgerError::Fatal(
                    "KMS GenerateDataKey answered without a key".into(),
                ));
            };
            let written = dynamo
                .put_item()
                .table_name(table)
                .item(PK, AttributeValue::S(KEYRING_PK.into()))
                .item(SK, AttributeValue::S(KEYRING_SK.into()))
                .item("type", AttributeValue::S("keyring".into()))
                .item(
                    "wrapped_key",
                    AttributeValue::B(DynamoBlob::new(wrapped.as_ref())),
                )
                .item("kms_key_id", AttributeValue::S(self.kms_key_id.clone()))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .send()
                .await
                .map_err(|e| sdk_error(e, "PutItem keyring"));
            match written {
                Ok(_) => Sealer::new(plain.as_ref()).map(Pass::Done),
                // Another process wrote the keyring first: use its key.
                Err(LedgerError::Conflict(_)) => Ok(Pass::Again(())),
                Err(e) => Err(e),
            }
        })
        .await?;
        sealer.ok_or_else(|| {
            LedgerError::Transient("the keyring could not be read or written".into())
        })
    }

    async fn unwrap_key(&self, table: &str, wrapped: Vec<u8>) -> Result<Sealer, LedgerError> {
        let out = self
            .kms
            .decrypt()
            .key_id(&self.kms_key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context("table", table)
            .encryption_context("purpose", KEYRING_SK)
            .send()
            .await
            .map_err(|e| sdk_error(e, "KMS Decrypt"))?;
        let plain = out
            .plaintext()
            .ok_or_else(|| LedgerError::Fatal("KMS Decrypt answered without a key".into()))?;
        Sealer::new(plain.as_ref())
    }
}

async fn read_keyring(dynamo: &Client, table: &str) -> Result<Option<Vec<u8>>, LedgerError> {
    let out = dynamo
        .get_item()
        .table_name(table)
        .key(PK, AttributeValue::S(KEYRING_PK.into()))
        .key(SK, AttributeValue::S(KEYRING_SK.into()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| sdk_error(e, "GetItem keyring"))?;
    match out.item.as_ref().and_then(|i| i.get("wrapped_key")) {
        None => Ok(None),
        Some(AttributeValue::B(b)) => Ok(Some(b.as_ref().to_vec())),
        Some(_) => Err(LedgerError::Corrupt(
            "keyring: wrapped_key is not binary".into(),
        )),
    }
}

/// The data key in memory.
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Derived from the data key: makes the synthetic nonces.
    nonce_key: [u8; 32],
}

impl Sealer {
    fn new(data_key: &[u8]) -> Result<Self, LedgerError> {
        let cipher = Aes256Gcm::new_from_slice(data_key)
            .map_err(|_| LedgerError::Fatal("the data key is not 32 bytes".into()))?;
        let mut derive = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(data_key)
            .map_err(|_| LedgerError::Fatal("the data key is unusable".into()))?;
        derive.update(b"billing-key nonce key");
        let nonce_key: [u8; 32] = derive.finalize().into_bytes().into();
        Ok(Self { cipher, nonce_key })
    }

    /// The synthetic nonce of `key` for `subscription_id`.
    fn nonce(&self, subscription_id: &str, key: &str) -> [u8; NONCE_LEN] {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.nonce_key)
            .expect("any key length");
        mac.update(subscription_id.as_bytes());
        mac.update(&[0]);
        mac.update(key.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&full[..NONCE_LEN]);
        nonce
    }

    /// `key` sealed for the subscription `subscription_id`.
    pub fn seal(&self, subscription_id: &str, key: &str) -> Result<String, LedgerError> {
        let nonce = self.nonce(subscription_id, key);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.as_bytes(),
                    aad: subscription_id.as_bytes(),
                },
            )
            .map_err(|_| LedgerError::Fatal("the billing key could not be sealed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// The key in `stored`, sealed for `subscription_id` (or stored before
    /// sealing was on: returned as it is).
    pub fn open(&self, subscription_id: &str, stored: &str) -> Result<String, LedgerError> {
        let Some(body) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let unreadable = || {
            LedgerError::Corrupt(format!(
                "subscription {subscription_id}: its billing key does not open with the table's data key"
            ))
        };
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| unreadable())?;
        if raw.len() <= NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: subscription_id.as_bytes(),
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_for_its_subscription() {
        let sealer = Sealer::new(&[7u8; 32]).unwrap();
        let sealed = sealer.seal("sub1", "billing-key-123").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("billing-key-123"));
        assert_eq!(sealer.open("sub1", &sealed).unwrap(), "billing-key-123");
        assert!(matches!(
            sealer.open("sub2", &sealed),
            Err(LedgerError::Corrupt(_))
        ));
        // Deterministic: the same key seals to the same text (a rewrite is
        // no key change in the stream); another key or subscription not.
        assert_eq!(sealer.seal("sub1", "billing-key-123").unwrap(), sealed);
        assert_ne!(sealer.seal("sub1", "billing-key-124").unwrap(), sealed);
        assert_ne!(sealer.seal("sub2", "billing-key-123").unwrap(), sealed);
        // Another data key does not open it.
        let other = Sealer::new(&[8u8; 32]).unwrap();
        assert!(other.open("sub1", &sealed).is_err());
        // Written before sealing was on: read as it is.
        assert_eq!(sealer.open("sub1", "cu_plain").unwrap(), "cu_plain");
        // Tampered with: refused.
        let mut bad = sealed.clone();
        bad.pop();
        bad.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(sealer.open("sub1", &bad).is_err());
    }
}
