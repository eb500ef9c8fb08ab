//! VAT on a charge and its refunds (decision 73). Korean VAT is 10 % of the
//! supply value and is included in the price: a taxable amount `T` splits
//! into VAT `round(T / 11)` and supply `T − VAT`. A plan is `taxable` (all
//! of it), `exempt` (none of it: books, some education) or `mixed` (a fixed
//! tax-free part). Without the tax-free part the PG books VAT on the whole
//! amount, so it is sent with every charge and every refund (V1 `tax_free`,
//! V2 `amount.taxFree` and the cancel's `taxFreeAmount`).
//!
//! Refunds split by one rule that depends only on the total refunded so far:
//! of `R` refunded out of an amount `A` with tax-free part `F`, the tax-free
//! part is `⌊R·F / A⌋` (all of `F` once `R = A`), and likewise the VAT of
//! the taxable rest. A refund's parts are the differences of two totals, so
//! the parts of any sequence of refunds add up to the charge's, and what
//! remains is never negative.

use serde::Serialize;

/// A plan's tax setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TaxSetting {
    /// VAT on all of it (the default).
    #[default]
    Taxable,
    /// No VAT on any of it.
    Exempt,
    /// This many KRW of each charge are tax-free (at most the amount), the
    /// rest is taxable.
    Mixed { tax_free: i64 },
}

impl TaxSetting {
    /// The tax-free part of a charge of `amount` KRW. A mixed plan's part is
    /// capped at the amount (a price lowered below it).
    pub fn tax_free_of(self, amount: i64) -> i64 {
        match self {
            Self::Taxable => 0,
            Self::Exempt => amount.max(0),
            Self::Mixed { tax_free } => tax_free.clamp(0, amount.max(0)),
        }
    }

    /// Reads the API's `tax` and `tax_free_amount` for a plan of `amount`:
    /// `taxable` (default) and `exempt` take no amount; `mixed` takes one,
    /// whole won, 1 to `amount − 1` (all or nothing is `exempt` or `taxable`).
    pub fn from_input(
        kind: Option<&str>,
        tax_free: Option<i64>,
        amount: i64,
    ) -> Result<Self, String> {
        match (kind.unwrap_or("taxable"), tax_free) {
            ("taxable", None) => Ok(Self::Taxable),
            ("exempt", None) => Ok(Self::Exempt),
            ("taxable" | "exempt", Some(_)) => Err(
                "tax_free_amount is for a mixed plan only (taxable: none of it is tax-free; exempt: all of it)"
                    .into(),
            ),
            ("mixed", Some(f)) if f >= 1 && f < amount => Ok(Self::Mixed { tax_free: f }),
            ("mixed", Some(f)) => Err(format!(
                "tax_free_amount must be whole won from 1 to {} (less than the amount {amount}), got {f}",
                amount - 1
            )),
            ("mixed", None) => Err("a mixed plan needs tax_free_amount (whole won)".into()),
            (other, _) => Err(format!("tax must be taxable, exempt or mixed, got {other:?}")),
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Self::Taxable => "taxable",
            Self::Exempt => "exempt",
            Self::Mixed { .. } => "mixed",
        }
    }

    /// The mixed plan's tax-free part; `None` for the others.
    pub fn tax_free_amount(self) -> Option<i64> {
        match self {
            Self::Mixed { tax_free } => Some(tax_free),
            _ => None,
        }
    }

    /// As stored: `None` for taxable (items older than taxes are taxable),
    /// `exempt`, or `mixed:{won}`.
    pub fn encode(self) -> Option<String> {
        match self {
            Self::Taxable => None,
            Self::Exempt => Some("exempt".into()),
            Self::Mixed { tax_free } => Some(format!("mixed:{tax_free}")),
        }
    }

    pub fn decode(stored: Option<&str>) -> Option<Self> {
        match stored {
            None | Some("taxable") => Some(Self::Taxable),
            Some("exempt") => Some(Self::Exempt),
            Some(s) => {
                let won: i64 = s.strip_prefix("mixed:")?.parse().ok()?;
                (won >= 0).then_some(Self::Mixed { tax_free: won })
            }
        }
    }
}

/// How an amount splits for VAT: `supply + vat + tax_free = total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaxSplit {
    pub supply: i64,
    pub vat: i64,
    pub tax_free: i64,
}

/// The VAT included in a taxable amount: a tenth of the supply, rounded
/// half up (the PGs' default when no VAT is sent).
pub fn vat_of(taxable: i64) -> i64 {
    (taxable.max(0) + 5) / 11
}

impl TaxSplit {
    /// The split of `amount` with `tax_free` of it tax-free, VAT computed.
    pub fn computed(amount: i64, tax_free: i64) -> Self {
        let tax_free = tax_free.clamp(0, amount.max(0));
        let vat = vat_of(amount - tax_free);
        Self {
            supply: amount - tax_free - vat,
            vat,
            tax_free,
        }
    }

    /// The split a PG reported for `amount` (V2 `amount.taxFree` and
    /// `amount.vat`); `None` when it reported none or parts that do not fit.
    pub fn reported(amount: i64, tax_free: Option<i64>, vat: Option<i64>) -> Option<Self> {
        let (tax_free, vat) = (tax_free?, vat?);
        let supply = amount - tax_free - vat;
        (tax_free >= 0 && vat >= 0 && supply >= 0).then_some(Self {
            supply,
            vat,
            tax_free,
        })
    }

    pub fn total(self) -> i64 {
        self.supply + self.vat + self.tax_free
    }

    /// The parts of the first `refunded` KRW refunded of this split (of
    /// `total()`): each part pro rata, rounded down, all of it at the end.
    pub fn refunded_part(self, refunded: i64) -> Self {
        let total = self.total();
        let refunded = refunded.clamp(0, total);
        if refunded == total {
            return self;
        }
        let share = |part: i64, of: i64, taken: i64| {
            if of == 0 {
                0
            } else {
                // i128: amounts up to 10^10 KRW multiply past i64 only in theory.
                (i128::from(taken) * i128::from(part) / i128::from(of)) as i64
            }
        };
        let tax_free = share(self.tax_free, total, refunded);
        let taxable = refunded - tax_free;
        let vat = share(self.vat, self.supply + self.vat, taxable);
        Self {
            supply: taxable - vat,
            vat,
            tax_free,
        }
    }

    /// The parts of one refund of `amount` after `before` was refunded.
    pub fn refund(self, before: i64, amount: i64) -> Self {
        let (a, b) = (
            self.refunded_part(before + amount),
            self.refunded_part(before),
        );
        Self {
            supply: a.supply - b.supply,
            vat: a.vat - b.vat,
            tax_free: a.tax_free - b.tax_free,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_settings() {
        assert_eq!(TaxSetting::Taxable.tax_free_of(9900), 0);
        assert_eq!(TaxSetting::Exempt.tax_free_of(9900), 9900);
        let mixed = TaxSetting::Mixed { tax_free: 4000 };
        assert_eq!(mixed.tax_free_of(9900), 4000);
        assert_eq!(mixed.tax_free_of(3000), 3000, "capped at a lowered price");
        assert_eq!(
            TaxSplit::computed(9900, 0),
            TaxSplit {
                supply: 9000,
                vat: 900,
                tax_free: 0
            }
        );
        assert_eq!(
            TaxSplit::computed(10_000, 0),
            TaxSplit {
                supply: 9091,
                vat: 909,
                tax_free: 0
            }
        );
        assert_eq!(
            TaxSplit::computed(9900, 9900),
            TaxSplit {
                supply: 0,
                vat: 0,
                tax_free: 9900
            }
        );
        assert_eq!(
            TaxSplit::computed(9900, 4000),
            TaxSplit {
                supply: 5364,
                vat: 536,
                tax_free: 4000
            }
        );
        for s in [TaxSetting::Taxable, TaxSetting::Exempt, mixed] {
            assert_eq!(TaxSetting::decode(s.encode().as_deref()), Some(s));
        }
        assert_eq!(TaxSetting::decode(Some("mixed:x")), None);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert_eq!(
            TaxSetting::from_input(None, None, 9900),
            Ok(TaxSetting::Taxable)
        );
        assert_eq!(
            TaxSetting::from_input(Some("mixed"), Some(4000), 9900),
            Ok(TaxSetting::Mixed { tax_free: 4000 })
        );
        for (kind, free) in [
            (Some("mixed"), Some(9900)),
            (Some("mixed"), Some(0)),
            (Some("mixed"), Some(-1)),
            (Some("mixed"), None),
            (Some("exempt"), Some(1)),
            (Some("vat"), None),
        ] {
            assert!(
                TaxSetting::from_input(kind, free, 9900).is_err(),
                "{kind:?} {free:?}"
            );
        }
    }

    #[test]
    fn a_partial_refund_splits_pro_rata_and_the_last_takes_the_rest() {
        let paid = TaxSplit::computed(9900, 4000);
        let first = paid.refund(0, 3300);
        assert_eq!(
            first,
            TaxSplit {
                supply: 1789,
                vat: 178,
                tax_free: 1333
            }
        );
        let rest = paid.refund(3300, 6600);
        assert_eq!(
            (
                first.supply + rest.supply,
                first.vat + rest.vat,
                first.tax_free + rest.tax_free
            ),
            (paid.supply, paid.vat, paid.tax_free)
        );
    }

    proptest! {
        /// Any sequence of refunds: each one's parts add up to it, none is
        /// negative, and together they never pass the charge's parts.
        #[test]
        fn refunds_never_leave_a_negative_remainder(
            amount in 1i64..=10_000_000,
            free_share in 0u32..=100,
            cuts in proptest::collection::vec(1u32..=100, 1..8),
        ) {
            let tax_free = amount * i64::from(free_share) / 100;
            let paid = TaxSplit::computed(amount, tax_free);
            prop_assert_eq!(paid.total(), amount);
            let mut before = 0;
            for c in cuts {
                let left = amount - before;
                if left == 0 { break; }
                let r = (left * i64::from(c) / 100).max(1);
                let part = paid.refund(before, r);
                prop_assert_eq!(part.total(), r);
                prop_assert!(part.supply >= 0 && part.vat >= 0 && part.tax_free >= 0, "{:?}", part);
                before += r;
                let done = paid.refunded_part(before);
                prop_assert!(done.supply <= paid.supply && done.vat <= paid.vat && done.tax_free <= paid.tax_free);
            }
        }
    }
}
