//! Reports: revenue per provider for a period (platform finance sees every provider, a
//! provider its own rows), revenue per month, and a provider's usage per month — each chart
//! beside a table of the same numbers.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::web;
use billing::charges::Month;
use maud::{html, Markup};
use serde::Deserialize;

use super::chart::{self, Bar};
use super::page::{
    empty, error_summary, money, money_of, page_status, FormErrors, Input, Reply, Section,
};
use super::session::Session;
use crate::domain::commerce::usage::{self, MonthlyUsage};
use crate::domain::invoicing::reports::{self, Basis, ProviderReport};
use crate::domain::Error;
use crate::state::State;

const MONTHS: usize = 12;

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    pub period: Option<String>,
}

/// Per month and currency: gross, fee, net (summed over the rows the caller may see).
type MonthlyRevenue = BTreeMap<String, BTreeMap<String, [i64; 3]>>;

struct Data {
    period: ProviderReport,
    revenue: MonthlyRevenue,
    usage: Vec<MonthlyUsage>,
    months: Vec<String>,
}

/// `/console/reports?period=YYYY-MM`.
pub async fn show(state: State, s: Session, query: web::Query<ReportQuery>) -> Reply {
    let raw = query
        .period
        .clone()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| state.clock.now().format("%Y-%m").to_string());
    let last = match Month::parse(raw.trim()) {
        Ok(m) => m,
        Err(message) => {
            let mut errors = FormErrors::default();
            errors.push("period", format!("Period {message}"));
            let body =
                html! { h1 { "Reports" } (error_summary(&errors)) (period_form(&raw, &errors)) };
            return Ok(page_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &s.viewer(),
                Section::Reports,
                "Reports",
                body,
            ));
        }
    };
    let mut months = vec![last];
    while months.len() < MONTHS {
        let earlier = months[months.len() - 1].previous();
        months.push(earlier);
    }
    months.reverse();
    let caller = s.caller.clone();
    let platform = s.caller.role.is_platform();
    let data = state
        .db(move |conn| {
            let mut revenue = MonthlyRevenue::new();
            let mut period = None;
            for m in &months {
                let report =
                    reports::provider_report(conn, &caller, &m.to_string(), Basis::Revenue)?;
                let slot = revenue.entry(m.to_string()).or_default();
                for row in &report.data {
                    let sums = slot.entry(row.currency.clone()).or_default();
                    for (sum, amount) in
                        sums.iter_mut()
                            .zip([row.gross.amount, row.fee.amount, row.net.amount])
                    {
                        *sum = sum
                            .checked_add(amount)
                            .ok_or(Error::internal("revenue overflow"))?;
                    }
                }
                if *m == last {
                    period = Some(report);
                }
            }
            let usage = if platform {
                Vec::new()
            } else {
                usage::provider_monthly(conn, &caller, months[0], last)?
            };
            let period = period.ok_or(Error::internal("report period missing"))?;
            Ok(Data {
                period,
                revenue,
                usage,
                months: months.iter().map(Month::to_string).collect(),
            })
        })
        .await?;
    let body = html! {
        h1 { "Reports" }
        (period_form(&raw, &FormErrors::default()))
        (by_provider(&data.period, platform))
        (revenue_by_month(&data))
        @if !platform { (usage_by_month(&data)) }
    };
    Ok(page_status(
        StatusCode::OK,
        &s.viewer(),
        Section::Reports,
        "Reports",
        body,
    ))
}

fn period_form(value: &str, errors: &FormErrors) -> Markup {
    html! {
        form.filters method="get" action="/console/reports" aria-label="Choose the period" {
            (Input::new("period", "Period", value).hint("The report's month, YYYY-MM; the charts show the twelve months up to it").pattern("[0-9]{4}-[0-9]{2}").render(errors))
            div.actions { button.primary type="submit" { "Show" } }
        }
    }
}

fn by_provider(report: &ProviderReport, platform: bool) -> Markup {
    html! {
        section aria-labelledby="providers-h" {
            h2 #providers-h { "Revenue per provider, " (report.period) }
            p { "Gross is before tax: lines of finalized, unvoided invoices, less the credit notes issued in the month. The marketplace's fee is taken from gross; net is what the provider earns." }
            @if report.data.is_empty() {
                (empty(if platform { "No revenue in this period. Revenue appears once the period's invoices are finalized (Billing runs, then Invoices)." } else { "No revenue in this period. It appears once your subscribers' invoices for the month are finalized." }))
            } @else {
                table {
                    caption.visually-hidden { "Revenue per provider for " (report.period) }
                    thead { tr { th scope="col" { "Provider" } th scope="col" { "Currency" } th.num scope="col" { "Gross" } th.num scope="col" { "Fee" } th.num scope="col" { "Net" } } }
                    tbody {
                        @for r in &report.data {
                            tr {
                                th scope="row" { (r.provider.name) }
                                td { (r.currency) }
                                td.num { (money(&r.gross)) }
                                td.num {
                                    (money(&r.fee))
                                    @if let Some(bps) = r.fee_bps { " (" (format!("{}.{:02}", bps / 100, bps % 100)) " %)" }
                                    @else { " (rates differ)" }
                                }
                                td.num { (money(&r.net)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn revenue_by_month(d: &Data) -> Markup {
    let currencies: Vec<String> = d
        .revenue
        .values()
        .flat_map(|by| by.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    html! {
        section aria-labelledby="monthly-h" {
            h2 #monthly-h { "Revenue per month" }
            @if currencies.is_empty() {
                (empty("No revenue in these twelve months yet."))
            }
            @for c in &currencies {
                @let bars: Vec<Bar> = d.months.iter().map(|m| {
                    let gross = d.revenue.get(m).and_then(|by| by.get(c)).map(|s| s[0]).unwrap_or(0);
                    Bar { label: m.clone(), value: gross, shown: money_of(gross, c) }
                }).collect();
                (chart::bars(&format!("revenue-{c}"), &format!("Gross revenue per month, {c}"), "Bars show gross revenue per month, oldest first.", &bars))
                table {
                    caption { "Revenue per month, " (c) }
                    thead { tr { th scope="col" { "Month" } th.num scope="col" { "Gross" } th.num scope="col" { "Fee" } th.num scope="col" { "Net" } } }
                    tbody {
                        @for m in &d.months {
                            @let s = d.revenue.get(m).and_then(|by| by.get(c)).copied().unwrap_or([0; 3]);
                            tr { th scope="row" { (m) } td.num { (money_of(s[0], c)) } td.num { (money_of(s[1], c)) } td.num { (money_of(s[2], c)) } }
                        }
                    }
                }
            }
        }
    }
}

fn usage_by_month(d: &Data) -> Markup {
    let metrics: Vec<String> = d
        .usage
        .iter()
        .map(|u| u.metric.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let quantity = |m: &str, metric: &str| {
        d.usage
            .iter()
            .find(|u| u.month == m && u.metric == metric)
            .map(|u| u.quantity)
            .unwrap_or(0)
    };
    html! {
        section aria-labelledby="usage-h" {
            h2 #usage-h { "Usage of your listings per month" }
            @if metrics.is_empty() {
                (empty("No usage recorded in these twelve months. Usage is what your subscriptions record: the events you report (POST /v1/usage-events) and the server's own metering of reads."))
            } @else {
                @for metric in &metrics {
                    @let bars: Vec<Bar> = d.months.iter().map(|m| {
                        let q = quantity(m, metric);
                        Bar { label: m.clone(), value: q, shown: q.to_string() }
                    }).collect();
                    (chart::bars(&format!("usage-{}", metric.replace(|c: char| !c.is_ascii_alphanumeric(), "-")), &format!("{metric} per month"), "Bars show the quantity per month, oldest first.", &bars))
                }
                table {
                    caption { "Usage per month and metric" }
                    thead { tr { th scope="col" { "Month" } @for metric in &metrics { th.num scope="col" { (metric) } } } }
                    tbody {
                        @for m in &d.months {
                            tr { th scope="row" { (m) } @for metric in &metrics { td.num { (quantity(m, metric)) } } }
                        }
                    }
                }
            }
        }
    }
}
