//! Identifiers: subscription ids, `merchant_uid`s and `customer_uid`s.
//!
//! - subscription id: 12 characters `[0-9a-z]`, random (≈ 62 bits);
//! - charge `merchant_uid`: `s{subscription id}{YYYYMM}a{attempt}`, e.g.
//!   `sk3j9x0m2q7we202612a1` (21–23 characters; i'mport allows 40). It is a
//!   pure function of (subscription, period, attempt), so a retried run sends
//!   the same `merchant_uid` and i'mport refuses to take the money twice;
//! - issuance `merchant_uid`: `r{subscription id}`;
//! - `customer_uid`: `cu_` + 32 hex characters (128 random bits), so a
//!   browser cannot guess another customer's key name.

use rand::Rng;

use super::calendar::PeriodId;

pub const MERCHANT_UID_MAX: usize = 40;
pub const CUSTOMER_UID_MAX: usize = 80;
const ID_LEN: usize = 12;
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(String);

impl SubscriptionId {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self(
            (0..ID_LEN)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect(),
        )
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

/// What a `merchant_uid` of ours refers to.
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
    pub fn charge(subscription: &SubscriptionId, period: &PeriodId, attempt: u32) -> String {
        format!("s{}{}a{}", subscription.as_str(), period.as_str(), attempt)
    }

    pub fn issuance(subscription: &SubscriptionId) -> String {
        format!("r{}", subscription.as_str())
    }

    /// Parses a `merchant_uid` this system made; anything else is `None`
    /// (someone else's order, or a forgery).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MERCHANT_UID_MAX || !s.is_ascii() {
            return None;
        }
        if let Some(rest) = s.strip_prefix('r') {
            return SubscriptionId::parse(rest).map(|subscription| Self::Issuance { subscription });
        }
        let rest = s.strip_prefix('s')?;
        if rest.len() < ID_LEN + 6 + 2 {
            return None;
        }
        let subscription = SubscriptionId::parse(&rest[..ID_LEN])?;
        let period = PeriodId::parse(&rest[ID_LEN..ID_LEN + 6])?;
        let attempt_part = rest[ID_LEN + 6..].strip_prefix('a')?;
        if attempt_part.is_empty()
            || attempt_part.len() > 3
            || attempt_part.starts_with('0')
            || !attempt_part.bytes().all(|b| b.is_ascii_digit())
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

/// A fresh, unguessable `customer_uid`.
pub fn generate_customer_uid() -> String {
    let bits: u128 = rand::rng().random();
    format!("cu_{bits:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn charge_uid_round_trips_and_fits() {
        let id = SubscriptionId::parse("k3j9x0m2q7we").unwrap();
        let period = PeriodId::parse("202612").unwrap();
        let uid = MerchantUid::charge(&id, &period, 1);
        assert_eq!(uid, "sk3j9x0m2q7we202612a1");
        assert!(uid.len() <= MERCHANT_UID_MAX);
        assert_eq!(
            MerchantUid::parse(&uid),
            Some(MerchantUid::Charge {
                subscription: id.clone(),
                period,
                attempt: 1
            })
        );
        assert_eq!(
            MerchantUid::parse("rk3j9x0m2q7we"),
            Some(MerchantUid::Issuance { subscription: id })
        );
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

    proptest! {
        #[test]
        fn distinct_inputs_give_distinct_merchant_uids(
            a in "[0-9a-z]{12}", b in "[0-9a-z]{12}",
            pa in 0u32..1200, pb in 0u32..1200, xa in 1u32..999, xb in 1u32..999,
        ) {
            let (ia, ib) = (SubscriptionId::parse(&a).unwrap(), SubscriptionId::parse(&b).unwrap());
            let per = |k: u32| PeriodId::parse(&format!("{:04}{:02}", 2000 + k / 12, k % 12 + 1)).unwrap();
            let ua = MerchantUid::charge(&ia, &per(pa), xa);
            let ub = MerchantUid::charge(&ib, &per(pb), xb);
            prop_assert!(ua.len() <= MERCHANT_UID_MAX);
            prop_assert_eq!(ua == ub, a == b && pa == pb && xa == xb);
            prop_assert_eq!(MerchantUid::parse(&ua), Some(MerchantUid::Charge { subscription: ia, period: per(pa), attempt: xa }));
        }
    }
}
