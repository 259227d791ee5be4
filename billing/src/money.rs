//! Money: integer minor units of one currency, exact decimals in between, one rounding rule.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::currency::CurrencyCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount overflows 64-bit minor units")]
    Overflow,
    #[error("amount exceeds the largest a line may carry ({MAX_LINE_AMOUNT} minor units)")]
    LineTooLarge,
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(&'static str, &'static str),
}

/// The largest amount one invoice line may carry, minor units (10 trillion dollars): far
/// above any real charge, and 9,223 times below `i64::MAX`, so sums of a period's lines
/// overflow (a checked error) only past thousands of such lines.
pub const MAX_LINE_AMOUNT: i64 = 1_000_000_000_000_000;

/// An amount in minor units (cents; yen for JPY) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: CurrencyCode,
}

impl Money {
    pub fn new(minor: i64, currency: CurrencyCode) -> Money {
        Money { minor, currency }
    }

    pub fn zero(currency: CurrencyCode) -> Money {
        Money { minor: 0, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(
                self.currency.code(),
                other.currency.code(),
            ));
        }
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            minor,
            currency: self.currency,
        })
    }

    /// The amount as a decimal string in major units: `12.34` for USD, `500` for JPY.
    pub fn major_units(self) -> String {
        let mut d = Decimal::from(self.minor);
        d.set_scale(self.currency.exponent())
            .expect("currency exponents are small");
        d.to_string()
    }
}

/// Reads an amount written in major units (`12.34` for USD, `500` for JPY) as minor units:
/// digits with at most one point and no more decimals than the currency has; no sign.
pub fn parse_major_units(raw: &str, currency: CurrencyCode) -> Result<i64, String> {
    let raw = raw.trim();
    let exponent = currency.exponent() as usize;
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || (raw.ends_with('.')) {
        return Err(format!("must be an amount such as {}", example(exponent)));
    }
    if fraction.len() > exponent {
        return Err(match exponent {
            0 => format!("{} has no minor unit: whole amounts only", currency.code()),
            n => format!("at most {n} decimals for {}", currency.code()),
        });
    }
    let scaled = format!("{whole}{fraction:0<exponent$}");
    scaled
        .parse::<i64>()
        .map_err(|_| "is too large".to_string())
}

fn example(exponent: usize) -> String {
    match exponent {
        0 => "500".into(),
        n => format!("12.{}", "3".repeat(n)),
    }
}

/// The one rounding of the billing rules: to whole minor units, half to even.
pub fn round_minor(amount: Decimal) -> Result<i64, MoneyError> {
    let rounded = amount.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
    i64::try_from(rounded).map_err(|_| MoneyError::Overflow)
}

/// Sums minor amounts, refusing to wrap.
pub fn checked_sum(amounts: impl IntoIterator<Item = i64>) -> Result<i64, MoneyError> {
    amounts.into_iter().try_fold(0i64, |acc, a| {
        acc.checked_add(a).ok_or(MoneyError::Overflow)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> CurrencyCode {
        CurrencyCode::parse("USD").unwrap()
    }

    #[test]
    fn major_units_parse_back() {
        let jpy = CurrencyCode::parse("JPY").unwrap();
        assert_eq!(parse_major_units("12.34", usd()), Ok(1234));
        assert_eq!(parse_major_units(" 12.3 ", usd()), Ok(1230));
        assert_eq!(parse_major_units("7", usd()), Ok(700));
        assert_eq!(parse_major_units("500", jpy), Ok(500));
        for bad in ["", "-1", "1.234", "1e3", "1.", ".5", "1,00", "12.3.4"] {
            assert!(parse_major_units(bad, usd()).is_err(), "{bad}");
        }
        assert!(parse_major_units("5.5", jpy).is_err());
        assert!(parse_major_units("99999999999999999999", usd()).is_err());
        let m = Money::new(123456, usd());
        assert_eq!(parse_major_units(&m.major_units(), usd()), Ok(123456));
    }

    #[test]
    fn half_even_rounding() {
        assert_eq!(round_minor(Decimal::new(11225, 1)).unwrap(), 1122);
        assert_eq!(round_minor(Decimal::new(11235, 1)).unwrap(), 1124);
        assert_eq!(round_minor(Decimal::new(51125, 1)).unwrap(), 5112);
        assert_eq!(round_minor(Decimal::new(-25, 1)).unwrap(), -2);
        assert_eq!(round_minor(Decimal::new(1, 3)).unwrap(), 0);
        assert_eq!(
            round_minor(Decimal::from(i64::MAX) + Decimal::ONE),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn major_units_follow_the_currency() {
        assert_eq!(Money::new(50000, usd()).major_units(), "500.00");
        assert_eq!(Money::new(1125, usd()).major_units(), "11.25");
        assert_eq!(Money::new(-5, usd()).major_units(), "-0.05");
        assert_eq!(
            Money::new(500, CurrencyCode::parse("JPY").unwrap()).major_units(),
            "500"
        );
        assert_eq!(
            Money::new(1234, CurrencyCode::parse("BHD").unwrap()).major_units(),
            "1.234"
        );
    }

    #[test]
    fn sums_refuse_to_overflow() {
        assert_eq!(checked_sum([1, 2, 3]), Ok(6));
        assert_eq!(checked_sum([i64::MAX, 1]), Err(MoneyError::Overflow));
        assert!(Money::new(i64::MAX, usd())
            .checked_add(Money::new(1, usd()))
            .is_err());
    }
}
