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

/// Currencies Stripe counts in whole units although ISO 4217 may give them a minor unit
/// (MGA), and those it counts in thousandths; every other currency in hundredths, ISK too
/// (ISO: none). Stripe's "Supported currencies" page, zero-decimal and three-decimal lists.
const STRIPE_ZERO_DECIMAL: [&str; 16] = [
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
const STRIPE_THREE_DECIMAL: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];

impl CurrencyCode {
    /// Digits after the decimal point in Stripe's API amounts.
    pub fn stripe_exponent(self) -> u32 {
        if STRIPE_ZERO_DECIMAL.contains(&self.code()) {
            0
        } else if STRIPE_THREE_DECIMAL.contains(&self.code()) {
            3
        } else {
            2
        }
    }

    /// An amount in ISO minor units as Stripe's API counts it (MGA 1500.00, kept as
    /// 150000, is 1500 to Stripe; ISK 500 is 50000). `None` when Stripe cannot carry it
    /// exactly (MGA 1500.55; BHD 1.235, since Stripe takes three-decimal amounts in steps of
    /// ten) or it overflows.
    pub fn to_stripe_amount(self, minor: i64) -> Option<i64> {
        let (iso, stripe) = (self.exponent(), self.stripe_exponent());
        if stripe == 3 && minor % 10 != 0 {
            return None;
        }
        if stripe >= iso {
            minor.checked_mul(10i64.checked_pow(stripe - iso)?)
        } else {
            let factor = 10i64.checked_pow(iso - stripe)?;
            (minor % factor == 0).then(|| minor / factor)
        }
    }

    /// An amount Stripe reported back in ISO minor units; `None` when it has no exact
    /// equivalent (ISK 50050 is 500.5 krónur) or overflows.
    pub fn from_stripe_amount(self, stripe_amount: i64) -> Option<i64> {
        let (iso, stripe) = (self.exponent(), self.stripe_exponent());
        if iso >= stripe {
            stripe_amount.checked_mul(10i64.checked_pow(iso - stripe)?)
        } else {
            let factor = 10i64.checked_pow(stripe - iso)?;
            (stripe_amount % factor == 0).then(|| stripe_amount / factor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_counts_some_currencies_in_other_units() {
        let code = |c| CurrencyCode::parse(c).unwrap();
        assert_eq!(code("USD").to_stripe_amount(1234), Some(1234));
        assert_eq!(code("JPY").to_stripe_amount(500), Some(500));
        assert_eq!(code("BHD").to_stripe_amount(1230), Some(1230));
        assert_eq!(code("BHD").to_stripe_amount(1235), None);
        assert_eq!(code("MGA").to_stripe_amount(150_000), Some(1500));
        assert_eq!(code("MGA").to_stripe_amount(150_055), None);
        assert_eq!(code("MGA").from_stripe_amount(1500), Some(150_000));
        assert_eq!(code("ISK").to_stripe_amount(500), Some(50_000));
        assert_eq!(code("ISK").from_stripe_amount(50_000), Some(500));
        assert_eq!(code("ISK").from_stripe_amount(50_050), None);
        assert_eq!(code("ISK").to_stripe_amount(i64::MAX), None);
        for c in ["USD", "JPY", "BHD", "MGA", "ISK", "UGX", "CLP"] {
            let c = code(c);
            assert_eq!(
                c.from_stripe_amount(c.to_stripe_amount(100_000).unwrap()),
                Some(100_000)
            );
        }
    }

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
