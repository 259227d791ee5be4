//! What a subscription owes for a calendar month: its recurring fees (in advance, for the
//! periods that start in the month) and its usage (in arrears, one line per metric).

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;

use crate::money::{MoneyError, MAX_LINE_AMOUNT};
use crate::periods::{self, Interval};
use crate::pricing::UsagePrice;
use crate::rating::{self, TierUsage};

/// A billing period: a calendar month in UTC, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn parse(raw: &str) -> Result<Month, String> {
        let bad = || "must be a month, YYYY-MM".to_string();
        let (y, m) = raw.split_once('-').ok_or_else(bad)?;
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if y.len() != 4 || m.len() != 2 || !digits(y) || !digits(m) {
            return Err(bad());
        }
        let (year, month) = (
            y.parse::<i32>().map_err(|_| bad())?,
            m.parse::<u32>().map_err(|_| bad())?,
        );
        if !(1..=12).contains(&month) || !(2000..=2999).contains(&year) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    pub fn of(t: NaiveDateTime) -> Month {
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    pub fn start(self) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default()
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn previous(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    pub fn end(self) -> NaiveDateTime {
        self.next().start()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Recurring,
    Usage,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Recurring => "recurring",
            Source::Usage => "usage",
        }
    }
}

/// One thing owed, before it lands on an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Unique per subscription: what and for which service period.
    pub key: String,
    pub source: Source,
    pub service_period: String,
    pub description: String,
    pub quantity: i64,
    pub unit_amount: Option<Decimal>,
    pub amount: i64,
    pub tiers: Vec<TierUsage>,
}

/// A subscription's billing terms, as its price snapshot and dates say.
#[derive(Debug, Clone)]
pub struct Terms {
    pub anchor: NaiveDateTime,
    pub interval: Interval,
    pub term_months: u32,
    pub recurring_amount: i64,
    /// Periods starting at or after this are not billed (the subscription ended or was
    /// cancelled to end then).
    pub billable_until: Option<NaiveDateTime>,
    pub offer_name: String,
}

/// The fees of the periods that start in `month`, billed in full, in advance, no proration.
pub fn recurring(terms: &Terms, month: Month) -> Vec<Charge> {
    periods::periods_starting_in(
        terms.anchor,
        terms.interval,
        terms.term_months,
        month.start(),
        month.end(),
    )
    .into_iter()
    .filter(|(start, _)| terms.billable_until.is_none_or(|cut| *start < cut))
    .map(|(start, end)| Charge {
        key: format!("recurring:{}", start.format("%Y-%m-%dT%H:%M:%S%.6f")),
        source: Source::Recurring,
        service_period: format!(
            "{}/{}",
            start.format("%Y-%m-%dT%H:%M:%SZ"),
            end.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        description: format!(
            "{} ({} to {})",
            terms.offer_name,
            start.format("%Y-%m-%d"),
            end.format("%Y-%m-%d")
        ),
        quantity: 1,
        unit_amount: Some(Decimal::from(terms.recurring_amount)),
        amount: terms.recurring_amount,
        tiers: Vec::new(),
    })
    .collect()
}

/// The key of a metric's usage charge for `month` (unique per subscription).
pub fn usage_key(metric: &str, month: Month) -> String {
    format!("usage:{metric}:{month}")
}

/// The usage of one metric in `month`, rated at once (so batching and order cannot matter).
pub fn usage(price: &UsagePrice, month: Month, quantity: i64) -> Result<Charge, MoneyError> {
    let rated = rating::rate(price, quantity)?;
    if rated.amount > MAX_LINE_AMOUNT {
        return Err(MoneyError::LineTooLarge);
    }
    Ok(Charge {
        key: usage_key(&price.metric, month),
        source: Source::Usage,
        service_period: month.to_string(),
        description: format!("{} usage, {month}", price.metric),
        quantity: rated.quantity,
        unit_amount: price.unit_amount,
        amount: rated.amount,
        tiers: rated.tiers,
    })
}

/// A charge for an earlier period whose invoice is final: the difference between rating
/// that period in full now and what was billed for it already.
pub fn late(charge: &Charge, already_billed: i64) -> Option<Charge> {
    let difference = charge.amount - already_billed;
    (difference != 0).then(|| Charge {
        key: format!("late:{}", charge.key),
        description: format!("{} (late charge)", charge.description),
        amount: difference,
        ..charge.clone()
    })
}

/// What is left of a charge of this period when `already_billed` of it is on other invoices
/// (late lines of later months, after this month's invoice was voided); `None` when nothing
/// is left.
pub fn unbilled_part(charge: &Charge, already_billed: i64) -> Option<Charge> {
    if already_billed == 0 {
        return Some(charge.clone());
    }
    let rest = charge.amount - already_billed;
    (rest > 0).then(|| Charge {
        description: format!("{} (less what later invoices billed)", charge.description),
        amount: rest,
        ..charge.clone()
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;
    use crate::pricing::{Tier, UsageModel};

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn terms(anchor: &str, interval: Interval) -> Terms {
        Terms {
            anchor: t(anchor),
            interval,
            term_months: 12,
            recurring_amount: 50000,
            billable_until: None,
            offer_name: "Pro".into(),
        }
    }

    #[test]
    fn months_parse_strictly() {
        assert_eq!(Month::parse("2026-11").unwrap().to_string(), "2026-11");
        for bad in [
            "2026-13", "2026-1", "26-11", "2026/11", "", "2026-00", "2026-+1", "+026-01",
        ] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Month::parse("2026-12").unwrap().end(),
            t("2027-01-01 00:00")
        );
    }

    #[test]
    fn fees_fall_in_the_month_their_period_starts() {
        let jan31 = terms("2026-01-31 09:00", Interval::Monthly);
        assert_eq!(recurring(&jan31, Month::parse("2026-01").unwrap()).len(), 1);
        let feb = recurring(&jan31, Month::parse("2026-02").unwrap());
        assert_eq!(feb.len(), 1);
        assert!(feb[0]
            .service_period
            .starts_with("2026-02-28T09:00:00Z/2026-03-31"));
        let one_time = Terms {
            recurring_amount: 120_000,
            ..terms("2026-01-31 09:00", Interval::OneTime)
        };
        assert_eq!(
            recurring(&one_time, Month::parse("2026-01").unwrap())[0].amount,
            120_000
        );
        assert!(recurring(&one_time, Month::parse("2026-02").unwrap()).is_empty());
        let cancelled = Terms {
            billable_until: Some(t("2026-02-28 09:00")),
            ..jan31
        };
        assert!(recurring(&cancelled, Month::parse("2026-02").unwrap()).is_empty());
    }

    fn graduated() -> UsagePrice {
        UsagePrice {
            metric: "queries".into(),
            model: UsageModel::Graduated,
            unit_amount: None,
            tiers: vec![
                Tier {
                    up_to: Some(100),
                    unit_amount: Decimal::from(10),
                    flat_amount: 0,
                },
                Tier {
                    up_to: None,
                    unit_amount: Decimal::from_str("2.5").unwrap(),
                    flat_amount: 0,
                },
            ],
        }
    }

    #[test]
    fn a_usage_line_beyond_the_largest_amount_is_refused() {
        let price = UsagePrice {
            metric: "rows".into(),
            model: UsageModel::PerUnit,
            unit_amount: Some(Decimal::from(1_000_000_000_000i64)),
            tiers: Vec::new(),
        };
        let month = Month::parse("2026-11").unwrap();
        assert_eq!(usage(&price, month, 1_000).unwrap().amount, MAX_LINE_AMOUNT);
        assert_eq!(usage(&price, month, 1_001), Err(MoneyError::LineTooLarge));
    }

    proptest! {
        #[test]
        fn rating_ignores_order_and_batching(batches in prop::collection::vec(prop::collection::vec(0i64..50, 0..20), 0..10)) {
            let month = Month::parse("2026-11").unwrap();
            let total: i64 = batches.iter().flatten().sum();
            let mut reversed: Vec<i64> = batches.iter().flatten().copied().collect();
            reversed.reverse();
            prop_assert_eq!(usage(&graduated(), month, total).unwrap(), usage(&graduated(), month, reversed.iter().sum()).unwrap());
        }

        #[test]
        fn what_later_invoices_billed_plus_the_unbilled_part_is_the_whole(first in 0i64..500, later in 0i64..500, volume in any::<bool>()) {
            let month = Month::parse("2026-11").unwrap();
            let price = if volume {
                UsagePrice { model: UsageModel::Volume, ..graduated() }
            } else {
                graduated()
            };
            let billed_late = usage(&price, month, first).unwrap().amount;
            let whole = usage(&price, month, first + later).unwrap();
            let rest = unbilled_part(&whole, billed_late).map(|c| c.amount).unwrap_or(0);
            // More than the whole billed already (a volume price's cheaper tier) leaves
            // nothing to bill here; the excess stays on the later invoice until a run that
            // looks back at this month, once it is final again, credits it.
            prop_assert_eq!(rest, (whole.amount - billed_late).max(0));
        }

        #[test]
        fn a_late_charge_plus_what_was_billed_is_the_whole(first in 0i64..500, later in 0i64..500) {
            let month = Month::parse("2026-11").unwrap();
            let billed = usage(&graduated(), month, first).unwrap().amount;
            let whole = usage(&graduated(), month, first + later).unwrap();
            let extra = late(&whole, billed).map(|c| c.amount).unwrap_or(0);
            prop_assert_eq!(billed + extra, whole.amount);
        }
    }
}
