//! Identifiers: subscription ids, `merchant_uid`s and `customer_uid`s.
//!
//! - subscription id: 12 characters `[0-9a-z]`, random (≈ 62 bits). The
//!   customer sees it (the success page gets `?subscription_id=`);
//! - charge `merchant_uid`: `s{subscription id}{YYYYMM}a{attempt}t{tag}`,
//!   e.g. `sk3j9x0m2q7we202612a1t0f3kq8z1m2xa` (34–36 characters, letters and
//!   digits only, so every PG accepts it; i'mport allows 40). `tag` is 12
//!   base-36 characters of an HMAC-SHA256 over (subscription, period, attempt)
//!   under a secret key, so the uid is a pure function of the attempt (a
//!   re-send uses the same value) yet nobody without the key can compute next
//!   month's: a customer cannot pay a small amount under it in the browser.
//!   The value is stored on the attempt when it is claimed, and every re-send
//!   and every lookup uses the stored value, so rotating the key only changes
//!   the uids of attempts claimed afterwards;
//! - issuance `merchant_uid`: `r{subscription id}`;
//! - `customer_uid`: `cu_` + 32 hex characters (128 random bits), so a
//!   browser cannot guess another customer's key name.

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

use super::calendar::PeriodId;

pub const MERCHANT_UID_MAX: usize = 40;
pub const CUSTOMER_UID_MAX: usize = 80;
const ID_LEN: usize = 12;
const TAG_LEN: usize = 12;
pub const NONCE_LEN: usize = 8;
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(String);

impl SubscriptionId {
    /// A fresh random id from `rng`.
    pub fn random(rng: &mut impl Rng) -> Self {
        Self(
            (0..ID_LEN)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect(),
        )
    }

    pub fn generate() -> Self {
        Self::random(&mut rand::rng())
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b))).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard of the due index this subscription lives in (stable).
    pub fn shard(&self, shards: u32) -> u32 {
        let h = self
            .0
            .bytes()
            .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
        h % shards.max(1)
    }
}

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret key of the `merchant_uid` tags. `Debug` never prints it.
#[derive(Clone)]
pub struct UidKey(Vec<u8>);

impl std::fmt::Debug for UidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UidKey(***)")
    }
}

/// 8 base-36 characters for every 5 bytes of `bytes` (a multiple of 5).
fn base36_of(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut n = chunk.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
        let mut part = [b'0'; 8];
        for slot in part.iter_mut().rev() {
            *slot = ALPHABET[(n % 36) as usize];
            n /= 36;
        }
        out.push_str(&String::from_utf8_lossy(&part));
    }
    out
}

impl UidKey {
    /// A key from secret material (at least 16 bytes of it).
    pub fn new(material: &[u8]) -> Option<Self> {
        (material.len() >= 16).then(|| Self(material.to_vec()))
    }

    /// A key derived from another secret (the gateway's API secret) when no
    /// dedicated key is configured: HMAC(secret, label).
    pub fn derived_from(secret: &[u8]) -> Self {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"subscription-billing merchant_uid tag key v1");
        Self(mac.finalize().into_bytes().to_vec())
    }

    fn tag(&self, subscription: &SubscriptionId, period: &PeriodId, attempt: u32) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return "0".repeat(TAG_LEN),
        };
        mac.update(format!("charge:{subscription}:{period}:{attempt}").as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        let mut out = [b'0'; TAG_LEN];
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(n % 36) as usize];
            n /= 36;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A tag binding `text` to this deployment: 16 base-36 characters of
    /// HMAC-SHA256 over `label:text` (a quote's id, so a quote cannot be
    /// forged or changed by the caller).
    pub fn tag_of(&self, label: &str, text: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return "0".repeat(16),
        };
        mac.update(label.as_bytes());
        mac.update(b":");
        mac.update(text.as_bytes());
        base36_of(&mac.finalize().into_bytes()[..10])
    }

    /// A reference to a billing key that can be stored and compared but not
    /// used to charge: `k` + 24 base-36 characters of HMAC-SHA256 over the
    /// key. Attempts keep this, never the key (a V2 billing key is a secret;
    /// design I4), so a record's key can be checked against the key an
    /// attempt charged.
    pub fn key_ref(&self, billing_key: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return "k".to_owned(),
        };
        mac.update(b"billing-key:");
        mac.update(billing_key.as_bytes());
        format!("k{}", base36_of(&mac.finalize().into_bytes()[..15]))
    }

    /// The `merchant_uid` of a charge attempt.
    pub fn charge_uid(
        &self,
        subscription: &SubscriptionId,
        period: &PeriodId,
        attempt: u32,
    ) -> String {
        format!(
            "s{}{}a{}t{}",
            subscription.as_str(),
            period.as_str(),
            attempt,
            self.tag(subscription, period, attempt)
        )
    }

    /// Whether `merchant_uid` is a charge uid made with this key.
    pub fn verifies(&self, merchant_uid: &str) -> bool {
        match MerchantUid::parse(merchant_uid) {
            Some(MerchantUid::Charge {
                subscription,
                period,
                attempt,
            }) => {
                let expected = self.charge_uid(&subscription, &period, attempt);
                subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), merchant_uid.as_bytes()).into()
            }
            _ => false,
        }
    }
}

/// What a `merchant_uid` of ours refers to (read from its structure; the
/// tag is not checked here: the stored attempt's uid is the authority).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantUid {
    Charge {
        subscription: SubscriptionId,
        period: PeriodId,
        attempt: u32,
    },
    Issuance {
        subscription: SubscriptionId,
    },
}

impl MerchantUid {
    pub fn issuance(subscription: &SubscriptionId) -> String {
        format!("r{}", subscription.as_str())
    }

    /// The issuance `merchant_uid` of a new card for `subscription`:
    /// `r{subscription id}k{nonce}` (8 random letters and digits).
    pub fn key_replacement(subscription: &SubscriptionId, nonce: &str) -> String {
        format!("r{}k{nonce}", subscription.as_str())
    }

    /// Parses a `merchant_uid` shaped like ours; anything else is `None`
    /// (someone else's order). Accepts charge uids with a tag and, for
    /// attempts claimed before tags existed, without one.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MERCHANT_UID_MAX || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        if let Some(rest) = s.strip_prefix('r') {
            let (id, nonce) = match rest.split_at_checked(ID_LEN) {
                Some((id, "")) => (id, None),
                Some((id, tail)) => (id, Some(tail.strip_prefix('k')?)),
                None => return None,
            };
            if nonce
                .is_some_and(|n| n.len() != NONCE_LEN || !n.bytes().all(|b| ALPHABET.contains(&b)))
            {
                return None;
            }
            return SubscriptionId::parse(id).map(|subscription| Self::Issuance { subscription });
        }
        let rest = s.strip_prefix('s')?;
        if rest.len() < ID_LEN + 6 + 2 {
            return None;
        }
        let subscription = SubscriptionId::parse(&rest[..ID_LEN])?;
        let period = PeriodId::parse(&rest[ID_LEN..ID_LEN + 6])?;
        let tail = rest[ID_LEN + 6..].strip_prefix('a')?;
        let (attempt_part, tag) = match tail.split_once('t') {
            Some((a, tag)) => (a, Some(tag)),
            None => (tail, None),
        };
        if attempt_part.is_empty()
            || attempt_part.len() > 3
            || attempt_part.starts_with('0')
            || !attempt_part.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        if let Some(tag) = tag
            && (tag.len() != TAG_LEN || !tag.bytes().all(|b| ALPHABET.contains(&b)))
        {
            return None;
        }
        let attempt = attempt_part.parse().ok()?;
        Some(Self::Charge {
            subscription,
            period,
            attempt,
        })
    }
}

/// A short random token of letters and digits (e.g. a card replacement's).
pub fn random_nonce(rng: &mut impl Rng) -> String {
    (0..NONCE_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A fresh, unguessable `customer_uid` from `rng`.
pub fn random_customer_uid(rng: &mut impl Rng) -> String {
    let bits: u128 = rng.random();
    format!("cu_{bits:032x}")
}

pub fn generate_customer_uid() -> String {
    random_customer_uid(&mut rand::rng())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> UidKey {
        UidKey::new(b"0123456789abcdef-test-key").unwrap()
    }

    #[test]
    fn a_key_reference_is_stable_short_and_not_the_key() {
        let a = key().key_ref("billing-key-0190a1b2-secret");
        assert_eq!(a, key().key_ref("billing-key-0190a1b2-secret"));
        assert_eq!(a.len(), 25);
        assert!(a.starts_with('k') && a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(!a.contains("secret"));
        assert_ne!(a, key().key_ref("billing-key-0190a1b2-secreT"));
        let other = UidKey::new(b"another-key-of-16-bytes").unwrap();
        assert_ne!(a, other.key_ref("billing-key-0190a1b2-secret"));
    }

    #[test]
    fn charge_uid_round_trips_fits_and_verifies() {
        let id = SubscriptionId::parse("k3j9x0m2q7we").unwrap();
        let period = PeriodId::parse("202612").unwrap();
        let uid = key().charge_uid(&id, &period, 1);
        assert!(uid.starts_with("sk3j9x0m2q7we202612a1t"), "{uid}");
        assert_eq!(uid.len(), 34);
        assert!(uid.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            MerchantUid::parse(&uid),
            Some(MerchantUid::Charge {
                subscription: id.clone(),
                period,
                attempt: 1
            })
        );
        assert!(key().verifies(&uid));
        assert_eq!(
            MerchantUid::parse("rk3j9x0m2q7we"),
            Some(MerchantUid::Issuance {
                subscription: id.clone()
            })
        );
        let replacement = MerchantUid::key_replacement(&id, "a1b2c3d4");
        assert_eq!(replacement, "rk3j9x0m2q7weka1b2c3d4");
        assert_eq!(
            MerchantUid::parse(&replacement),
            Some(MerchantUid::Issuance { subscription: id })
        );
        assert_eq!(MerchantUid::parse("rk3j9x0m2q7weka1b2"), None);
        assert_eq!(MerchantUid::parse("rk3j9x0m2q7wexa1b2c3d4"), None);
    }

    #[test]
    fn next_months_uid_cannot_be_guessed_from_the_subscription_id() {
        let id = SubscriptionId::parse("k3j9x0m2q7we").unwrap();
        let period = PeriodId::parse("202701").unwrap();
        let real = key().charge_uid(&id, &period, 1);
        // What a customer could build from what they see:
        assert!(!key().verifies("sk3j9x0m2q7we202701a1"));
        assert!(!key().verifies("sk3j9x0m2q7we202701a1t000000000000"));
        // Another key gives another uid.
        let other = UidKey::new(b"another-key-of-16-bytes").unwrap();
        assert_ne!(other.charge_uid(&id, &period, 1), real);
        assert!(!other.verifies(&real));
    }

    #[test]
    fn foreign_merchant_uids_are_not_ours() {
        for s in [
            "",
            "order_123",
            "sk3j9x0m2q7we202613a1",
            "sk3j9x0m2q7we202612a0",
            "sk3j9x0m2q7we202612a",
            "sK3J9X0M2Q7WE202612a1",
            "rshort",
            "sk3j9x0m2q7we202612a1x",
            "sk3j9x0m2q7we202612a1tshort",
            "sk3j9x0m2q7we202612a1t0123456789AB",
        ] {
            assert_eq!(MerchantUid::parse(s), None, "{s}");
        }
    }

    #[test]
    fn customer_uids_are_unique_and_short() {
        let a = generate_customer_uid();
        let b = generate_customer_uid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 35);
        assert!(a.len() <= CUSTOMER_UID_MAX);
    }

    #[test]
    fn keys_are_never_printed() {
        assert_eq!(format!("{:?}", key()), "UidKey(***)");
        assert!(UidKey::new(b"short").is_none());
    }

    proptest! {
        #[test]
        fn distinct_inputs_give_distinct_merchant_uids(
            a in "[0-9a-z]{12}", b in "[0-9a-z]{12}",
            pa in 0u32..1200, pb in 0u32..1200, xa in 1u32..999, xb in 1u32..999,
        ) {
            let (ia, ib) = (SubscriptionId::parse(&a).unwrap(), SubscriptionId::parse(&b).unwrap());
            let per = |k: u32| PeriodId::parse(&format!("{:04}{:02}", 2000 + k / 12, k % 12 + 1)).unwrap();
            let ua = key().charge_uid(&ia, &per(pa), xa);
            let ub = key().charge_uid(&ib, &per(pb), xb);
            prop_assert!(ua.len() <= MERCHANT_UID_MAX);
            prop_assert!(ua.bytes().all(|c| c.is_ascii_alphanumeric()));
            prop_assert_eq!(ua == ub, a == b && pa == pb && xa == xb);
            prop_assert_eq!(MerchantUid::parse(&ua), Some(MerchantUid::Charge { subscription: ia, period: per(pa), attempt: xa }));
            prop_assert!(key().verifies(&ua));
        }
    }
}
