//! Usage prices: per unit, graduated tiers or volume tiers, with unit prices as exact
//! decimals in minor units (`"0.05"` = five hundredths of a cent) and flat amounts as integers.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Unit prices carry at most this many decimals (as Stripe's `unit_amount_decimal`).
pub const MAX_UNIT_DECIMALS: u32 = 12;
/// Digits a unit price may have before its point.
pub const MAX_UNIT_WHOLE_DIGITS: usize = 12;
/// A sanity bound on a flat or recurring amount, in minor units.
pub const MAX_UNIT_AMOUNT: i64 = 1_000_000_000_000;
pub const MAX_METRIC_LEN: usize = 64;
pub const MAX_TIERS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageModel {
    PerUnit,
    Graduated,
    Volume,
}

/// One tier: units up to `up_to` (inclusive; `None` = no upper bound) cost `unit_amount`
/// each, plus `flat_amount` once when the tier is entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub up_to: Option<i64>,
    #[serde(rename = "unit_amount_decimal", with = "rust_decimal::serde::str")]
    pub unit_amount: Decimal,
    #[serde(default)]
    pub flat_amount: i64,
}

/// The price of one metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsagePrice {
    pub metric: String,
    pub model: UsageModel,
    #[serde(
        rename = "unit_amount_decimal",
        with = "rust_decimal::serde::str_option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub unit_amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tiers: Vec<Tier>,
}

/// A usage price as a client sends it, before any rule is checked.
#[derive(Debug, Clone, Deserialize)]
pub struct UsagePriceInput {
    pub metric: String,
    pub model: UsageModel,
    pub unit_amount_decimal: Option<String>,
    pub tiers: Option<Vec<TierInput>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TierInput {
    pub up_to: Option<i64>,
    pub unit_amount_decimal: String,
    pub flat_amount: Option<i64>,
}

/// A rule broken by a usage price: the field's path below the price, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> PriceError {
    PriceError {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses a unit price: a plain non-negative decimal string with at most 12 digits before
/// the point and 12 after (so below 10^12), as openapi.yaml's pattern says; leading and
/// trailing zeros count.
pub fn parse_unit_amount(raw: &str) -> Result<Decimal, String> {
    let plain = !raw.is_empty()
        && raw.chars().all(|c| c.is_ascii_digit() || c == '.')
        && raw.matches('.').count() <= 1;
    if !plain || raw.starts_with('.') || raw.ends_with('.') {
        return Err("must be a non-negative decimal string such as \"0.05\"".into());
    }
    let (whole, decimals) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.len() > MAX_UNIT_WHOLE_DIGITS {
        return Err(format!(
            "must have at most {MAX_UNIT_WHOLE_DIGITS} digits before the point"
        ));
    }
    if decimals.len() > MAX_UNIT_DECIMALS as usize {
        return Err(format!("must have at most {MAX_UNIT_DECIMALS} decimals"));
    }
    Decimal::from_str(raw).map_err(|_| "must be a decimal string such as \"0.05\"".to_string())
}

/// A metric name: 1–64 characters of lower-case letters, digits, `_`, `.` and `-`.
pub fn parse_metric(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_METRIC_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "must be 1 to {MAX_METRIC_LEN} characters of a-z, 0-9, `_`, `.` or `-`"
        ))
    }
}

/// Checks one usage price; errors name fields relative to the price (`tiers[1].up_to`).
pub fn validate(input: &UsagePriceInput) -> Result<UsagePrice, Vec<PriceError>> {
    let mut errors = Vec::new();
    let metric = parse_metric(&input.metric)
        .map_err(|m| errors.push(err("metric", m)))
        .ok();
    let mut unit_amount = None;
    let mut tiers = Vec::new();
    match input.model {
        UsageModel::PerUnit => {
            if input.tiers.as_ref().is_some_and(|t| !t.is_empty()) {
                errors.push(err(
                    "tiers",
                    "per_unit prices take unit_amount_decimal, not tiers",
                ));
            }
            match &input.unit_amount_decimal {
                None => errors.push(err(
                    "unit_amount_decimal",
                    "is required for the per_unit model",
                )),
                Some(raw) => match parse_unit_amount(raw) {
                    Ok(v) => unit_amount = Some(v),
                    Err(m) => errors.push(err("unit_amount_decimal", m)),
                },
            }
        }
        UsageModel::Graduated | UsageModel::Volume => {
            if input.unit_amount_decimal.is_some() {
                errors.push(err(
                    "unit_amount_decimal",
                    "tiered prices take their unit prices in tiers",
                ));
            }
            match input.tiers.as_deref() {
                None | Some([]) => errors.push(err("tiers", "at least one tier is required")),
                Some(inputs) if inputs.len() > MAX_TIERS => {
                    errors.push(err("tiers", format!("at most {MAX_TIERS} tiers")))
                }
                Some(inputs) => tiers = validate_tiers(inputs, &mut errors),
            }
        }
    }
    match (errors.is_empty(), metric) {
        (true, Some(metric)) => Ok(UsagePrice {
            metric,
            model: input.model,
            unit_amount,
            tiers,
        }),
        _ => Err(errors),
    }
}

/// Tiers must rise strictly, each bound positive, and only the last is unbounded.
fn validate_tiers(inputs: &[TierInput], errors: &mut Vec<PriceError>) -> Vec<Tier> {
    let mut tiers = Vec::with_capacity(inputs.len());
    let mut previous: Option<i64> = None;
    let last = inputs.len() - 1;
    for (i, t) in inputs.iter().enumerate() {
        let unit_amount = parse_unit_amount(&t.unit_amount_decimal)
            .map_err(|m| errors.push(err(format!("tiers[{i}].unit_amount_decimal"), m)))
            .unwrap_or_default();
        let flat_amount = t.flat_amount.unwrap_or(0);
        if !(0..=MAX_UNIT_AMOUNT).contains(&flat_amount) {
            errors.push(err(
                format!("tiers[{i}].flat_amount"),
                format!("must be between 0 and {MAX_UNIT_AMOUNT}"),
            ));
        }
        match (t.up_to, i == last) {
            (None, true) => {}
            (None, false) => errors.push(err(
                format!("tiers[{i}].up_to"),
                "only the last tier may be unbounded (null)",
            )),
            (Some(_), true) => errors.push(err(
                format!("tiers[{i}].up_to"),
                "the last tier must be unbounded (null)",
            )),
            (Some(n), false) if n <= 0 => {
                errors.push(err(format!("tiers[{i}].up_to"), "must be positive"))
            }
            (Some(n), false) if previous.is_some_and(|p| n <= p) => errors.push(err(
                format!("tiers[{i}].up_to"),
                "tiers must be strictly increasing: each up_to above the previous",
            )),
            (Some(_), false) => {}
        }
        if t.up_to.is_some() {
            previous = t.up_to;
        }
        tiers.push(Tier {
            up_to: t.up_to,
            unit_amount,
            flat_amount,
        });
    }
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(up_to: Option<i64>, unit: &str) -> TierInput {
        TierInput {
            up_to,
            unit_amount_decimal: unit.into(),
            flat_amount: None,
        }
    }

    fn fields(r: Result<UsagePrice, Vec<PriceError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn unit_amounts_are_plain_decimals() {
        assert_eq!(parse_unit_amount("0.05").unwrap(), Decimal::new(5, 2));
        assert_eq!(parse_unit_amount("12").unwrap(), Decimal::from(12));
        let largest = "999999999999.999999999999";
        assert_eq!(parse_unit_amount(largest).unwrap().to_string(), largest);
        assert_eq!(
            parse_unit_amount("000000000001.500000000000").unwrap(),
            Decimal::new(15, 1)
        );
        for bad in [
            "",
            "1000000000000",
            "0000000000001",
            "1.0000000000000",
            "-1",
            "1e3",
            "0.0000000000001",
            ".5",
            "5.",
            "1.2.3",
            "abc",
            "1,5",
        ] {
            assert!(parse_unit_amount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tiers_rise_strictly_and_end_unbounded() {
        let good = UsagePriceInput {
            metric: "rows".into(),
            model: UsageModel::Graduated,
            unit_amount_decimal: None,
            tiers: Some(vec![
                tier(Some(10), "1"),
                tier(Some(100), "0.5"),
                tier(None, "0.1"),
            ]),
        };
        assert_eq!(validate(&good).unwrap().tiers.len(), 3);
        let falling = UsagePriceInput {
            tiers: Some(vec![
                tier(Some(10), "1"),
                tier(Some(5), "1"),
                tier(None, "1"),
            ]),
            ..good.clone()
        };
        assert_eq!(fields(validate(&falling)), vec!["tiers[1].up_to"]);
        let bounded_end = UsagePriceInput {
            tiers: Some(vec![tier(Some(10), "1"), tier(Some(20), "1")]),
            ..good.clone()
        };
        assert_eq!(fields(validate(&bounded_end)), vec!["tiers[1].up_to"]);
        let none = UsagePriceInput {
            tiers: Some(vec![]),
            ..good.clone()
        };
        assert_eq!(fields(validate(&none)), vec!["tiers"]);
        let per_unit = UsagePriceInput {
            model: UsageModel::PerUnit,
            tiers: None,
            unit_amount_decimal: None,
            ..good
        };
        assert_eq!(fields(validate(&per_unit)), vec!["unit_amount_decimal"]);
    }
}
