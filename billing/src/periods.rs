//! Terms and billing periods: a subscription's periods start at its anchor and step by whole
//! months, the day clamped to the month's end and always counted from the anchor, so
//! Jan 31 → Feb 28 → Mar 31 (never drifting to the 28th).

use chrono::{Months, NaiveDateTime};

/// `anchor` plus `months` months, the day clamped to the target month's last day.
pub fn add_months(anchor: NaiveDateTime, months: u32) -> NaiveDateTime {
    anchor
        .checked_add_months(Months::new(months))
        .unwrap_or(NaiveDateTime::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Monthly,
    OneTime,
}

impl Interval {
    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "monthly" => Some(Interval::Monthly),
            "one_time" => Some(Interval::OneTime),
            _ => None,
        }
    }
}

/// The term that starts at `anchor`: [anchor, anchor + term_months).
pub fn term(anchor: NaiveDateTime, term_months: u32) -> (NaiveDateTime, NaiveDateTime) {
    (anchor, add_months(anchor, term_months))
}

/// The billing period holding `at` within the term [anchor, term_end): a calendar-month step
/// for `monthly`, the whole term for `one_time`. `None` outside the term.
pub fn period_at(
    anchor: NaiveDateTime,
    term_end: NaiveDateTime,
    interval: Interval,
    at: NaiveDateTime,
) -> Option<(NaiveDateTime, NaiveDateTime)> {
    if at < anchor || at >= term_end {
        return None;
    }
    match interval {
        Interval::OneTime => Some((anchor, term_end)),
        Interval::Monthly => {
            let mut n = 0u32;
            loop {
                let (start, end) = (
                    add_months(anchor, n),
                    add_months(anchor, n + 1).min(term_end),
                );
                if at < end {
                    return Some((start, end));
                }
                n += 1;
            }
        }
    }
}

/// The `n`-th billing period (0-based) of a subscription anchored at `anchor`: months from
/// the anchor for `monthly`, whole terms for `one_time`.
pub fn nth_period(
    anchor: NaiveDateTime,
    interval: Interval,
    term_months: u32,
    n: u32,
) -> (NaiveDateTime, NaiveDateTime) {
    let step = match interval {
        Interval::Monthly => 1,
        Interval::OneTime => term_months.max(1),
    };
    (
        add_months(anchor, n * step),
        add_months(anchor, (n + 1) * step),
    )
}

/// The periods that start in [from, to), in order.
pub fn periods_starting_in(
    anchor: NaiveDateTime,
    interval: Interval,
    term_months: u32,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Vec<(NaiveDateTime, NaiveDateTime)> {
    let mut out = Vec::new();
    for n in 0..100_000 {
        let (start, end) = nth_period(anchor, interval, term_months, n);
        if start >= to {
            break;
        }
        if start >= from {
            out.push((start, end));
        }
    }
    out
}

/// The period holding `at`, for a subscription anchored at `anchor` (None before it).
pub fn period_containing(
    anchor: NaiveDateTime,
    interval: Interval,
    term_months: u32,
    at: NaiveDateTime,
) -> Option<(NaiveDateTime, NaiveDateTime)> {
    (0..100_000)
        .map(|n| nth_period(anchor, interval, term_months, n))
        .take_while(|(s, _)| *s <= at)
        .find(|(_, e)| at < *e)
}

/// The term after the one ending at `term_end`: terms are whole multiples of `term_months`
/// from the anchor, so Jan 31 + 1 month terms go Feb 28, Mar 31, Apr 30 without drifting.
pub fn next_term(
    anchor: NaiveDateTime,
    term_months: u32,
    term_end: NaiveDateTime,
) -> (NaiveDateTime, NaiveDateTime) {
    let tm = term_months.max(1);
    let end = (1..100_000)
        .map(|j| add_months(anchor, j * tm))
        .find(|boundary| *boundary > term_end)
        .unwrap_or_else(|| add_months(term_end, tm));
    (term_end, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn month_steps_clamp_but_never_drift() {
        let anchor = t("2026-01-31 10:00");
        assert_eq!(add_months(anchor, 1), t("2026-02-28 10:00"));
        assert_eq!(add_months(anchor, 2), t("2026-03-31 10:00"));
        assert_eq!(add_months(t("2028-01-31 00:00"), 1), t("2028-02-29 00:00"));
    }

    #[test]
    fn renewals_and_periods_never_drift() {
        let anchor = t("2026-01-31 10:00");
        let (s2, e2) = next_term(anchor, 1, t("2026-02-28 10:00"));
        assert_eq!((s2, e2), (t("2026-02-28 10:00"), t("2026-03-31 10:00")));
        assert_eq!(next_term(anchor, 1, e2).1, t("2026-04-30 10:00"));
        assert_eq!(
            periods_starting_in(
                anchor,
                Interval::Monthly,
                12,
                t("2026-03-01 00:00"),
                t("2026-04-01 00:00")
            ),
            vec![(t("2026-03-31 10:00"), t("2026-04-30 10:00"))]
        );
        assert_eq!(
            periods_starting_in(
                anchor,
                Interval::OneTime,
                12,
                t("2026-01-01 00:00"),
                t("2026-02-01 00:00")
            ),
            vec![(anchor, t("2027-01-31 10:00"))]
        );
        assert!(periods_starting_in(
            anchor,
            Interval::OneTime,
            12,
            t("2026-02-01 00:00"),
            t("2026-03-01 00:00")
        )
        .is_empty());
        assert_eq!(
            period_containing(anchor, Interval::Monthly, 12, t("2026-03-05 00:00")),
            Some((t("2026-02-28 10:00"), t("2026-03-31 10:00")))
        );
        assert_eq!(
            period_containing(anchor, Interval::Monthly, 12, t("2026-01-01 00:00")),
            None
        );
    }

    #[test]
    fn periods_within_a_term() {
        let (start, end) = term(t("2026-01-31 10:00"), 3);
        assert_eq!(end, t("2026-04-30 10:00"));
        assert_eq!(
            period_at(start, end, Interval::Monthly, t("2026-03-01 00:00")),
            Some((t("2026-02-28 10:00"), t("2026-03-31 10:00")))
        );
        assert_eq!(
            period_at(start, end, Interval::OneTime, t("2026-03-01 00:00")),
            Some((start, end))
        );
        assert_eq!(period_at(start, end, Interval::Monthly, end), None);
        assert_eq!(
            period_at(start, end, Interval::Monthly, t("2026-01-01 00:00")),
            None
        );
    }
}
