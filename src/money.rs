//! `Money`: amounts in CNY held as integer micro-yuan, so sums of per-image prices are exact and
//! reports, the lock and the ledger agree to the last digit.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Mul, Sub};

/// An amount of Chinese yuan, stored as millionths of a yuan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);

    /// Converts a price written in yuan (as in `wanx.toml` or the registry) to `Money`,
    /// rounding to the nearest micro-yuan.
    pub fn from_yuan(yuan: f64) -> Money {
        Money((yuan * 1_000_000.0).round() as i64)
    }

    pub fn as_yuan(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    /// The price of `count` images at `self` per image.
    #[must_use]
    pub fn times(self, count: u32) -> Money {
        Money(self.0 * i64::from(count))
    }
}

impl fmt::Display for Money {
    /// `¥1.23`, with more digits only when the amount needs them (`¥0.183481`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / 1_000_000;
        let frac = abs % 1_000_000;
        let mut digits = format!("{frac:06}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        write!(f, "{sign}¥{whole}.{digits}")
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        self.0 += rhs.0;
    }
}

impl Mul<u32> for Money {
    type Output = Money;
    fn mul(self, rhs: u32) -> Money {
        self.times(rhs)
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_trims_to_two_digits_or_what_is_needed() {
        assert_eq!(Money::from_yuan(0.14).to_string(), "¥0.14");
        assert_eq!(Money::from_yuan(2.0).to_string(), "¥2.00");
        assert_eq!(Money::from_yuan(0.183_481).to_string(), "¥0.183481");
        assert_eq!((Money::from_yuan(0.14) * 4).to_string(), "¥0.56");
    }

    #[test]
    fn sums_are_exact() {
        let total: Money = std::iter::repeat_n(Money::from_yuan(0.1), 10).sum();
        assert_eq!(total, Money::from_yuan(1.0));
    }
}
