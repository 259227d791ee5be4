//! Rating: what a quantity of a metric costs under a usage price, with the tier breakdown.
//! Pure functions; the line is rounded once, half-even, at the end.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::money::{round_minor, MoneyError};
use crate::pricing::{Tier, UsageModel, UsagePrice};

/// The units that fell into one tier and what they cost (before the line's rounding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierUsage {
    pub tier: usize,
    pub up_to: Option<i64>,
    pub units: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_amount_decimal: Decimal,
    pub flat_amount: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount_decimal: Decimal,
}

/// A rated quantity: the exact amount, the rounded line amount, and the tiers it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rated {
    pub quantity: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub exact: Decimal,
    pub amount: i64,
    pub tiers: Vec<TierUsage>,
}

fn mul(units: i64, price: Decimal) -> Result<Decimal, MoneyError> {
    Decimal::from(units)
        .checked_mul(price)
        .ok_or(MoneyError::Overflow)
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, MoneyError> {
    a.checked_add(b).ok_or(MoneyError::Overflow)
}

/// Rates `quantity` units (≥ 0) under `price`.
pub fn rate(price: &UsagePrice, quantity: i64) -> Result<Rated, MoneyError> {
    let quantity = quantity.max(0);
    let tiers = match price.model {
        UsageModel::PerUnit => {
            let unit = price.unit_amount.unwrap_or_default();
            vec![TierUsage {
                tier: 0,
                up_to: None,
                units: quantity,
                unit_amount_decimal: unit,
                flat_amount: 0,
                amount_decimal: mul(quantity, unit)?,
            }]
        }
        UsageModel::Graduated => graduated(&price.tiers, quantity)?,
        UsageModel::Volume => volume(&price.tiers, quantity)?,
    };
    let exact = tiers
        .iter()
        .try_fold(Decimal::ZERO, |acc, t| add(acc, t.amount_decimal))?;
    Ok(Rated {
        quantity,
        exact,
        amount: round_minor(exact)?,
        tiers,
    })
}

/// Each tier prices the units that fall in it; a tier's flat amount is due once it is entered.
fn graduated(tiers: &[Tier], quantity: i64) -> Result<Vec<TierUsage>, MoneyError> {
    let mut out = Vec::new();
    let mut below = 0i64;
    for (i, tier) in tiers.iter().enumerate() {
        if quantity <= below {
            break;
        }
        let ceiling = tier.up_to.unwrap_or(i64::MAX).min(quantity);
        let units = ceiling - below;
        if units <= 0 {
            continue;
        }
        let amount = add(
            mul(units, tier.unit_amount)?,
            Decimal::from(tier.flat_amount),
        )?;
        out.push(TierUsage {
            tier: i,
            up_to: tier.up_to,
            units,
            unit_amount_decimal: tier.unit_amount,
            flat_amount: tier.flat_amount,
            amount_decimal: amount,
        });
        below = ceiling;
    }
    Ok(out)
}

/// All units at the price of the tier the total falls in, plus that tier's flat amount once;
/// zero units cost nothing.
fn volume(tiers: &[Tier], quantity: i64) -> Result<Vec<TierUsage>, MoneyError> {
    if quantity == 0 {
        return Ok(Vec::new());
    }
    let Some((i, tier)) = tiers
        .iter()
        .enumerate()
        .find(|(_, t)| t.up_to.is_none_or(|u| quantity <= u))
    else {
        return Ok(Vec::new());
    };
    let amount = add(
        mul(quantity, tier.unit_amount)?,
        Decimal::from(tier.flat_amount),
    )?;
    Ok(vec![TierUsage {
        tier: i,
        up_to: tier.up_to,
        units: quantity,
        unit_amount_decimal: tier.unit_amount,
        flat_amount: tier.flat_amount,
        amount_decimal: amount,
    }])
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn tier(up_to: Option<i64>, unit: &str, flat: i64) -> Tier {
        Tier {
            up_to,
            unit_amount: d(unit),
            flat_amount: flat,
        }
    }

    fn price(model: UsageModel, tiers: Vec<Tier>) -> UsagePrice {
        UsagePrice {
            metric: "queries".into(),
            model,
            unit_amount: None,
            tiers,
        }
    }

    #[test]
    fn worked_graduated_examples() {
        let p = price(
            UsageModel::Graduated,
            vec![tier(Some(100), "10", 0), tier(None, "2.5", 0)],
        );
        assert_eq!(rate(&p, 150).unwrap().amount, 1125);
        let r = rate(&p, 149).unwrap();
        assert_eq!(r.exact, d("1122.5"));
        assert_eq!(r.amount, 1122, "half-even: 1122.5 → 1122");
        assert_eq!(
            r.tiers.iter().map(|t| t.units).collect::<Vec<_>>(),
            vec![100, 49]
        );
        assert_eq!(rate(&p, 0).unwrap().amount, 0);
        let with_flat = price(
            UsageModel::Graduated,
            vec![tier(Some(10), "1", 500), tier(None, "0.5", 100)],
        );
        assert_eq!(
            rate(&with_flat, 10).unwrap().amount,
            510,
            "the second tier is not entered"
        );
        assert_eq!(rate(&with_flat, 11).unwrap().amount, 610);
    }

    #[test]
    fn worked_volume_examples() {
        let p = price(
            UsageModel::Volume,
            vec![tier(Some(1000), "0.5", 100), tier(None, "0.25", 0)],
        );
        assert_eq!(
            rate(&p, 0).unwrap().amount,
            0,
            "zero units cost 0, flat amount included"
        );
        assert_eq!(rate(&p, 1000).unwrap().amount, 600, "up_to is inclusive");
        assert_eq!(
            rate(&p, 1001).unwrap().amount,
            250,
            "all units at the tier the total falls in"
        );
        let per_unit = UsagePrice {
            unit_amount: Some(d("0.05")),
            ..price(UsageModel::PerUnit, vec![])
        };
        assert_eq!(
            rate(&per_unit, 30).unwrap().amount,
            2,
            "1.5 → 2 (half-even)"
        );
        assert_eq!(
            rate(&per_unit, 50).unwrap().amount,
            2,
            "2.5 → 2 (half-even)"
        );
    }

    #[test]
    fn overflow_is_an_error() {
        let p = UsagePrice {
            unit_amount: Some(d("1000000000000")),
            ..price(UsageModel::PerUnit, vec![])
        };
        assert_eq!(rate(&p, 1_000_000_000_000), Err(MoneyError::Overflow));
    }

    fn arb_tiers() -> impl Strategy<Value = Vec<Tier>> {
        (
            prop::collection::vec((1i64..1_000, 0u32..100_000, 0i64..1_000), 0..5),
            0u32..100_000,
        )
            .prop_map(|(steps, last_unit)| {
                let mut bound = 0;
                let mut tiers: Vec<Tier> = steps
                    .into_iter()
                    .map(|(step, unit, flat)| {
                        bound += step;
                        Tier {
                            up_to: Some(bound),
                            unit_amount: Decimal::new(unit.into(), 3),
                            flat_amount: flat,
                        }
                    })
                    .collect();
                tiers.push(Tier {
                    up_to: None,
                    unit_amount: Decimal::new(last_unit.into(), 3),
                    flat_amount: 0,
                });
                tiers
            })
    }

    proptest! {
        #[test]
        fn graduated_tiers_partition_the_quantity(tiers in arb_tiers(), q in 0i64..10_000) {
            let r = rate(&price(UsageModel::Graduated, tiers), q).unwrap();
            prop_assert_eq!(r.tiers.iter().map(|t| t.units).sum::<i64>(), q);
            prop_assert!(r.tiers.iter().all(|t| t.units > 0));
        }

        #[test]
        fn the_line_is_rounded_once(tiers in arb_tiers(), q in 0i64..10_000) {
            let r = rate(&price(UsageModel::Graduated, tiers), q).unwrap();
            let exact: Decimal = r.tiers.iter().map(|t| t.amount_decimal).sum();
            prop_assert_eq!(r.exact, exact);
            prop_assert_eq!(r.amount, round_minor(exact).unwrap());
            prop_assert!((Decimal::from(r.amount) - exact).abs() <= Decimal::new(5, 1));
        }

        #[test]
        fn graduated_cost_never_falls_as_quantity_rises(tiers in arb_tiers(), q in 0i64..10_000) {
            let p = price(UsageModel::Graduated, tiers);
            prop_assert!(rate(&p, q + 1).unwrap().exact >= rate(&p, q).unwrap().exact);
        }

        #[test]
        fn volume_uses_one_tier(tiers in arb_tiers(), q in 1i64..10_000) {
            let r = rate(&price(UsageModel::Volume, tiers), q).unwrap();
            prop_assert_eq!(r.tiers.len(), 1);
            prop_assert_eq!(r.tiers[0].units, q);
        }
    }
}
