//! Money as integer fen (分, 1/100 yuan): [`Fen`], and rates in basis points: [`Rate`].
//!
//! There is no floating point anywhere in billing. Every sum is checked ([`Fen::add`] returns
//! [`MoneyError::Overflow`] rather than wrapping), a share of an amount is computed in `i128`
//! and rounded down to the fen ([`Rate::of`]), so what a split gives one party and what it
//! leaves to the other always add up to the whole. Amounts serialise as plain integers
//! (`15000`), and parse from and print as yuan with two decimals (`150.00`) where people read
//! them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An amount of money in fen. May be negative (a refund, a reversing ledger entry); fee and
/// coverage amounts are never negative ([`Fen::check_non_negative`]).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fen(pub i64);

/// Why an amount could not be computed or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// A sum or product left the range of `i64` fen.
    #[error("amount overflow in {0}")]
    Overflow(&'static str),
    /// A negative amount where only zero or more is allowed.
    #[error("{what} is negative ({amount})")]
    Negative {
        /// What was negative.
        what: String,
        /// The amount.
        amount: Fen,
    },
    /// Not a yuan amount (`150`, `150.5`, `150.50`).
    #[error("`{0}` is not an amount in yuan with at most two decimals (150, 150.50)")]
    Syntax(String),
    /// A rate outside 0 … 100 %.
    #[error("rate {0} basis points is outside 0 … 10000 (0 … 100 %)")]
    Rate(u32),
}

impl Fen {
    /// Nothing.
    pub const ZERO: Fen = Fen(0);

    /// `yuan` whole yuan.
    pub const fn yuan(yuan: i64) -> Fen {
        Fen(yuan * 100)
    }

    /// The sum, or `Overflow`.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, other: Fen) -> Result<Fen, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Fen)
            .ok_or(MoneyError::Overflow("a sum"))
    }

    /// The difference, or `Overflow`.
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, other: Fen) -> Result<Fen, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Fen)
            .ok_or(MoneyError::Overflow("a difference"))
    }

    /// `self × n`, or `Overflow`.
    pub fn times(self, n: u32) -> Result<Fen, MoneyError> {
        self.0
            .checked_mul(i64::from(n))
            .map(Fen)
            .ok_or(MoneyError::Overflow("a product"))
    }

    /// The negation (a reversing entry), or `Overflow` for `i64::MIN`.
    pub fn negate(self) -> Result<Fen, MoneyError> {
        self.0
            .checked_neg()
            .map(Fen)
            .ok_or(MoneyError::Overflow("a negation"))
    }

    /// The sum of many, or `Overflow`.
    pub fn sum<I: IntoIterator<Item = Fen>>(amounts: I) -> Result<Fen, MoneyError> {
        amounts.into_iter().try_fold(Fen::ZERO, Fen::add)
    }

    /// Zero or more, else `Negative` naming `what`.
    pub fn check_non_negative(self, what: &str) -> Result<Fen, MoneyError> {
        if self.0 < 0 {
            Err(MoneyError::Negative {
                what: what.to_owned(),
                amount: self,
            })
        } else {
            Ok(self)
        }
    }

    /// True when zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The amount as yuan with two decimals (`-12.05`), as NHSA fields carry amounts.
    pub fn to_yuan_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} yuan", self.to_yuan_string())
    }
}

impl FromStr for Fen {
    type Err = MoneyError;

    /// Yuan with at most two decimals: `150`, `150.5`, `-0.05`. No exponent, no grouping, no
    /// float on the way.
    fn from_str(s: &str) -> Result<Fen, MoneyError> {
        let bad = || MoneyError::Syntax(s.to_owned());
        let t = s.trim();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty()
            || frac.len() > 2
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (digits.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let mut cents: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        if frac.len() == 1 {
            cents *= 10;
        }
        let fen = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(cents))
            .ok_or(MoneyError::Overflow("a yuan amount"))?;
        Ok(Fen(if negative { -fen } else { fen }))
    }
}

/// A share in basis points (1/100 of a percent): `Rate(8000)` is 80 %. Only 0 … 10000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Rate(u32);

impl Rate {
    /// 100 %.
    pub const FULL: Rate = Rate(10_000);
    /// 0 %.
    pub const NONE: Rate = Rate(0);

    /// `bp` basis points, or `MoneyError::Rate` above 10000.
    pub fn basis_points(bp: u32) -> Result<Rate, MoneyError> {
        if bp > 10_000 {
            Err(MoneyError::Rate(bp))
        } else {
            Ok(Rate(bp))
        }
    }

    /// `percent` %, or `MoneyError::Rate` above 100.
    pub fn percent(percent: u32) -> Result<Rate, MoneyError> {
        Rate::basis_points(percent.saturating_mul(100))
    }

    /// The basis points.
    pub fn bp(self) -> u32 {
        self.0
    }

    /// This share of `amount`, rounded down to the fen (toward zero for negative amounts),
    /// computed exactly in `i128`: never more than `amount`, and `amount - share` is what is
    /// left, so the two always add up.
    pub fn of(self, amount: Fen) -> Fen {
        // |amount| ≤ 2^63 and bp ≤ 10^4, so the product fits i128 and the quotient fits i64.
        let share = i128::from(amount.0) * i128::from(self.0) / 10_000;
        Fen(i64::try_from(share).unwrap_or(amount.0))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let bp = u32::deserialize(d)?;
        Rate::basis_points(bp).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{} %", self.0 / 100)
        } else {
            write!(f, "{}.{:02} %", self.0 / 100, self.0 % 100)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings() {
        for (text, fen) in [
            ("150", 15_000),
            ("150.5", 15_050),
            ("150.05", 15_005),
            ("0.01", 1),
            ("-12.30", -1_230),
        ] {
            assert_eq!(text.parse::<Fen>(), Ok(Fen(fen)), "{text}");
        }
        for bad in [
            "",
            "1.",
            ".5",
            "1.234",
            "1e3",
            "1,000",
            "１",
            "--1",
            "9223372036854775807",
        ] {
            assert!(bad.parse::<Fen>().is_err(), "{bad}");
        }
        assert_eq!(Fen(-1_205).to_yuan_string(), "-12.05");
        assert_eq!(Fen(7).to_yuan_string(), "0.07");
        assert_eq!(Fen(15_000).to_string(), "150.00 yuan");
    }

    #[test]
    fn checked_arithmetic() {
        assert_eq!(
            Fen(i64::MAX).add(Fen(1)),
            Err(MoneyError::Overflow("a sum"))
        );
        assert_eq!(
            Fen(i64::MIN).sub(Fen(1)),
            Err(MoneyError::Overflow("a difference"))
        );
        assert!(Fen(i64::MAX / 2 + 1).times(2).is_err());
        assert!(Fen(i64::MIN).negate().is_err());
        assert_eq!(Fen::sum([Fen(1), Fen(2), Fen(3)]), Ok(Fen(6)));
        assert!(Fen(-1).check_non_negative("fee").is_err());
    }

    #[test]
    fn rates_round_down_and_leave_the_rest() {
        let r = Rate::percent(80).unwrap();
        assert_eq!(r.of(Fen(20_000)), Fen(16_000));
        assert_eq!(r.of(Fen(1)), Fen(0));
        assert_eq!(Rate::basis_points(3333).unwrap().of(Fen(100)), Fen(33));
        assert_eq!(Rate::FULL.of(Fen(i64::MAX)), Fen(i64::MAX));
        assert_eq!(Rate::FULL.of(Fen(i64::MIN)), Fen(i64::MIN));
        assert!(Rate::basis_points(10_001).is_err());
        assert!(Rate::percent(101).is_err());
        assert_eq!(Rate::basis_points(1250).unwrap().to_string(), "12.50 %");
    }
}
