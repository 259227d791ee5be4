//! ISO 4217 currencies and their minor units (JPY has none: amounts are yen).

use iso_currency::Currency;

/// A currency money can be kept in: an ISO 4217 code with a defined minor unit (so not
/// XAU, XXX and other codes without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyCode(Currency);

impl CurrencyCode {
    pub fn parse(code: &str) -> Result<CurrencyCode, String> {
        let currency = Currency::from_code(code)
            .ok_or_else(|| format!("`{code}` is not an ISO 4217 currency code"))?;
        if currency.exponent().is_none() {
            return Err(format!(
                "`{code}` has no minor unit; use a currency that can be invoiced"
            ));
        }
        Ok(CurrencyCode(currency))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point: 2 for USD, 0 for JPY, 3 for BHD.
    pub fn exponent(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_minor_units() {
        assert_eq!(CurrencyCode::parse("USD").unwrap().exponent(), 2);
        assert_eq!(CurrencyCode::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(CurrencyCode::parse("BHD").unwrap().exponent(), 3);
        assert!(CurrencyCode::parse("XXQ").is_err());
        assert!(CurrencyCode::parse("usd").is_err());
        assert!(CurrencyCode::parse("XAU").is_err());
    }
}
