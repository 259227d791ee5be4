//! Invoice arithmetic: totals, tax, credit-note tax, marketplace fee. Amounts in minor units.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::money::{checked_sum, round_minor, MoneyError};

/// Basis points: 10,000 = 100 %.
const BPS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
}

/// `amount × bps / 10,000`, rounded once, half-even.
pub fn share(amount: i64, bps: i32) -> Result<i64, MoneyError> {
    let exact = Decimal::from(amount)
        .checked_mul(Decimal::from(bps))
        .ok_or(MoneyError::Overflow)?
        / Decimal::from(BPS);
    round_minor(exact)
}

/// Gross and marketplace fee of a provider's amounts grouped by the fee rate they were billed
/// at (basis points → their sum): each rate's `share` of its own sum, so the fee is rounded
/// once per rate.
pub fn fee_at_rates(by_rate: &BTreeMap<i32, i64>) -> Result<(i64, i64), MoneyError> {
    let gross = checked_sum(by_rate.values().copied())?;
    let fees = by_rate
        .iter()
        .map(|(&bps, &amount)| share(amount, bps))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((gross, checked_sum(fees)?))
}

/// Subtotal = the sum of the (already rounded) lines; tax on the subtotal, rounded once;
/// total = subtotal + tax.
pub fn totals(lines: &[i64], tax_rate_bps: i32) -> Result<Totals, MoneyError> {
    let subtotal = checked_sum(lines.iter().copied())?;
    let tax = share(subtotal, tax_rate_bps)?;
    let total = subtotal.checked_add(tax).ok_or(MoneyError::Overflow)?;
    Ok(Totals {
        subtotal,
        tax,
        total,
    })
}

/// The tax of a credit note: `round(tax × cumulative credited ÷ subtotal) − tax already
/// credited`, so the taxes of all an invoice's credit notes sum exactly to the tax of what
/// they credit in total.
pub fn credit_note_tax(
    invoice: Totals,
    credited_before: i64,
    tax_credited_before: i64,
    crediting_now: i64,
) -> Result<i64, MoneyError> {
    if invoice.subtotal == 0 {
        return Ok(0);
    }
    let cumulative = credited_before
        .checked_add(crediting_now)
        .ok_or(MoneyError::Overflow)?;
    let exact = Decimal::from(invoice.tax)
        .checked_mul(Decimal::from(cumulative))
        .ok_or(MoneyError::Overflow)?
        / Decimal::from(invoice.subtotal);
    Ok(round_minor(exact)? - tax_credited_before)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_fee_is_each_rates_share_of_what_was_billed_at_it() {
        // 200.00 at 3 % and 100.00 at 10 %, less a 50.00 credit at 3 %: 4.50 + 10.00.
        let by_rate = BTreeMap::from([(300, 20000 - 5000), (1000, 10000)]);
        assert_eq!(fee_at_rates(&by_rate).unwrap(), (25000, 1450));
        // Rounded once per rate, half-even: 0.5 → 0 and 1.5 → 2.
        let by_rate = BTreeMap::from([(100, 50), (5000, 3)]);
        assert_eq!(fee_at_rates(&by_rate).unwrap(), (53, 2));
        assert_eq!(fee_at_rates(&BTreeMap::new()).unwrap(), (0, 0));
        let huge = BTreeMap::from([(0, i64::MAX), (1, 1)]);
        assert_eq!(fee_at_rates(&huge), Err(MoneyError::Overflow));
    }

    #[test]
    fn worked_examples() {
        assert_eq!(
            totals(&[50000, 1125], 1000).unwrap(),
            Totals {
                subtotal: 51125,
                tax: 5112,
                total: 56237
            }
        );
        assert_eq!(
            totals(&[50000, 1122], 0).unwrap(),
            Totals {
                subtotal: 51122,
                tax: 0,
                total: 51122
            }
        );
        assert_eq!(totals(&[25], 1000).unwrap().tax, 2, "2.5 → 2");
        assert_eq!(totals(&[35], 1000).unwrap().tax, 4, "3.5 → 4");
        let inv = totals(&[50000, 1125], 1000).unwrap();
        let first = credit_note_tax(inv, 0, 0, 1000).unwrap();
        let second = credit_note_tax(inv, 1000, first, 15).unwrap();
        assert_eq!((first, second), (100, 1));
        assert_eq!(share(100_000, 300).unwrap(), 3000);
    }

    proptest! {
        #[test]
        fn total_is_lines_plus_tax(lines in prop::collection::vec(0i64..1_000_000_000, 0..50), bps in 0i32..5_000) {
            let t = totals(&lines, bps).unwrap();
            prop_assert_eq!(t.subtotal, lines.iter().sum::<i64>());
            prop_assert_eq!(t.total, t.subtotal + t.tax);
        }

        #[test]
        fn credit_note_taxes_sum_to_the_tax_of_the_credited_total(
            lines in prop::collection::vec(1i64..1_000_000, 1..10),
            bps in 0i32..5_000,
            cuts in prop::collection::vec(1u32..100, 1..10),
        ) {
            let invoice = totals(&lines, bps).unwrap();
            let (mut credited, mut tax_credited) = (0i64, 0i64);
            for cut in cuts {
                let now = (invoice.subtotal - credited).min(i64::from(cut) * invoice.subtotal / 1000 + 1);
                if now <= 0 { break; }
                tax_credited += credit_note_tax(invoice, credited, tax_credited, now).unwrap();
                credited += now;
            }
            let whole = credit_note_tax(invoice, 0, 0, credited).unwrap();
            prop_assert_eq!(tax_credited, whole);
            prop_assert!(tax_credited <= invoice.tax);
        }
    }
}
