//! Revenue and payouts per provider, the finance CSV export, and billing settings.

use std::collections::BTreeMap;

use billing::charges::Month;
use billing::currency::CurrencyCode;
use billing::money::Money as BillingMoney;
use diesel::prelude::*;
use schema::models::{Invoice, InvoiceLine};
use schema::schema::{credit_note_lines, credit_notes, invoice_lines, invoices, organizations};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use super::invoices::{matching, InvoiceFilters};
use super::BillingDefaults;
use crate::domain::accounts::OrganizationRef;
use crate::domain::audit::{self, Entry};
use crate::domain::auth::{Caller, Capability};
use crate::domain::catalog::offer::Money;
use crate::domain::clock::Clock;
use crate::domain::db::transaction;
use crate::domain::error::{Error, Problems, Result};

#[derive(Debug, Serialize)]
pub struct ProviderRow {
    pub provider: OrganizationRef,
    pub currency: String,
    pub gross: Money,
    pub fee: Money,
    pub net: Money,
    /// The fee rate of every line counted, or `None` when they were billed at different
    /// rates (the provider's rate changed between drafts).
    pub fee_bps: Option<i32>,
}

#[derive(Debug, Serialize)]
pub struct ProviderReport {
    pub period: String,
    pub data: Vec<ProviderRow>,
}

/// Which invoices count: revenue counts finalized, unvoided ones; payouts paid ones only.
#[derive(Debug, Clone, Copy)]
pub enum Basis {
    Revenue,
    Payouts,
}

/// Gross (pre-tax lines, minus the pre-tax credits issued in the period), fee and net per
/// provider and currency. A provider sees its own rows; platform finance every row;
/// anyone else none.
pub fn provider_report(
    conn: &mut DbConnection,
    caller: &Caller,
    period: &str,
    basis: Basis,
) -> Result<ProviderReport> {
    caller.require(Capability::Read)?;
    let month = Month::parse(period).map_err(|m| Error::validation("period", m))?;
    let statuses: &[&str] = match basis {
        Basis::Revenue => &["open", "paid"],
        Basis::Payouts => &["paid"],
    };
    // Payouts count money received: an invoice settled by credit notes alone (paid with
    // nothing paid) brought in nothing, so neither its lines nor its credits count.
    let least_paid: i64 = match basis {
        Basis::Revenue => 0,
        Basis::Payouts => 1,
    };
    let mut lines_q = invoice_lines::table
        .inner_join(invoices::table)
        .filter(invoices::period.eq(month.to_string()))
        .filter(invoices::status.eq_any(statuses))
        .filter(invoices::amount_paid.ge(least_paid))
        .select((
            invoice_lines::provider_organization_id,
            invoices::currency,
            invoice_lines::amount,
            invoice_lines::fee_bps,
        ))
        .into_boxed();
    // A credit takes back part of a line, so its fee at the rate that line was billed at.
    let mut credits_q = credit_note_lines::table
        .inner_join(credit_notes::table.inner_join(invoices::table))
        .inner_join(invoice_lines::table)
        .filter(credit_notes::created_at.ge(month.start()))
        .filter(credit_notes::created_at.lt(month.end()))
        .filter(invoices::status.eq_any(statuses))
        .filter(invoices::amount_paid.ge(least_paid))
        .select((
            credit_note_lines::provider_organization_id,
            invoices::currency,
            credit_note_lines::amount,
            invoice_lines::fee_bps,
        ))
        .into_boxed();
    if !caller.can(Capability::PlatformBilling) {
        lines_q = lines_q
            .filter(invoice_lines::provider_organization_id.eq(caller.organization_id.clone()));
        credits_q = credits_q
            .filter(credit_note_lines::provider_organization_id.eq(caller.organization_id.clone()));
    }
    let lines: Vec<(String, String, i64, i32)> = lines_q.load(conn)?;
    let credits: Vec<(String, String, i64, i32)> = credits_q.load(conn)?;
    // Gross per provider and currency, split by the fee rate each line carries (the rate
    // in force when its draft was built): the fee is each rate's share of its part.
    let mut gross: BTreeMap<(String, String), BTreeMap<i32, i64>> = BTreeMap::new();
    let signed = lines.into_iter().chain(
        credits
            .into_iter()
            .map(|(p, c, amount, bps)| (p, c, -amount, bps)),
    );
    for (provider, currency, amount, bps) in signed {
        let sum = gross
            .entry((provider, currency))
            .or_default()
            .entry(bps)
            .or_default();
        *sum = sum
            .checked_add(amount)
            .ok_or_else(|| Error::internal("a provider's revenue overflows"))?;
    }
    let mut data = Vec::new();
    for ((provider, currency), by_rate) in gross {
        let (gross, fee) = billing::invoice::fee_at_rates(&by_rate).map_err(Error::internal)?;
        let net = gross
            .checked_sub(fee)
            .ok_or_else(|| Error::internal("a provider's revenue overflows"))?;
        // The one rate of the money counted (a rate whose lines and credits cancel out
        // adds nothing), or none when several carry some.
        let carrying: Vec<i32> = by_rate
            .iter()
            .filter(|(_, &amount)| amount != 0)
            .map(|(&bps, _)| bps)
            .collect();
        let fee_bps = match (&carrying[..], by_rate.len()) {
            ([only], _) => Some(*only),
            ([], 1) => by_rate.keys().next().copied(),
            _ => None,
        };
        let name: String = organizations::table
            .find(&provider)
            .select(organizations::name)
            .first(conn)?;
        let m = |amount| Money {
            amount,
            currency: currency.clone(),
        };
        data.push(ProviderRow {
            provider: OrganizationRef {
                id: provider.clone(),
                name,
            },
            gross: m(gross),
            fee: m(fee),
            net: m(net),
            currency: currency.clone(),
            fee_bps,
        });
    }
    Ok(ProviderReport {
        period: month.to_string(),
        data,
    })
}

/// Guards a spreadsheet against formulas in text cells.
fn cell(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_string(),
    }
}

/// The finance export: one CSV row per invoice line of the matching invoices (RFC 4180),
/// amounts as decimal strings in major units.
pub fn export_csv(
    conn: &mut DbConnection,
    caller: &Caller,
    filters: &InvoiceFilters,
) -> Result<String> {
    let rows: Vec<Invoice> = matching(caller, filters)?
        .order((
            invoices::period.asc(),
            invoices::created_at.asc(),
            invoices::id.asc(),
        ))
        .select(Invoice::as_select())
        .load(conn)?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "invoice_number",
        "invoice_id",
        "status",
        "customer",
        "customer_id",
        "period",
        "currency",
        "line_id",
        "description",
        "source",
        "service_period",
        "subscription_id",
        "provider_id",
        "quantity",
        "unit_amount_decimal",
        "amount",
    ];
    out.write_record(header).map_err(Error::internal)?;
    for invoice in rows {
        let customer: String = organizations::table
            .find(&invoice.organization_id)
            .select(organizations::name)
            .first(conn)?;
        let currency = CurrencyCode::parse(&invoice.currency).map_err(Error::internal)?;
        let lines: Vec<InvoiceLine> = invoice_lines::table
            .filter(invoice_lines::invoice_id.eq(&invoice.id))
            .order((invoice_lines::position.asc(), invoice_lines::id.asc()))
            .select(InvoiceLine::as_select())
            .load(conn)?;
        for l in lines {
            out.write_record([
                cell(invoice.number.as_deref().unwrap_or("")),
                invoice.id.clone(),
                invoice.status.clone(),
                cell(&customer),
                invoice.organization_id.clone(),
                invoice.period.clone(),
                invoice.currency.clone(),
                l.id,
                cell(&l.description),
                l.source,
                l.service_period,
                l.subscription_id,
                l.provider_organization_id,
                l.quantity.to_string(),
                l.unit_amount_decimal.unwrap_or_default(),
                BillingMoney::new(l.amount, currency).major_units(),
            ])
            .map_err(Error::internal)?;
        }
    }
    let bytes = out.into_inner().map_err(Error::internal)?;
    String::from_utf8(bytes).map_err(Error::internal)
}

/// `PATCH /v1/organizations/{id}/billing-settings`: a number sets the override, `null`
/// clears it, a missing field leaves it.
#[derive(Debug, Deserialize)]
pub struct SettingsChanges {
    #[serde(default, deserialize_with = "present")]
    pub tax_rate_bps: Option<Option<i32>>,
    #[serde(default, deserialize_with = "present")]
    pub fee_bps: Option<Option<i32>>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<i32>>, D::Error> {
    Option::<i32>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize)]
pub struct BillingSettings {
    pub organization_id: String,
    pub tax_rate_bps: Option<i32>,
    pub fee_bps: Option<i32>,
    pub effective_tax_rate_bps: i32,
    pub effective_fee_bps: i32,
}

pub fn update_settings(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    defaults: BillingDefaults,
    caller: &Caller,
    organization_id: &str,
    changes: SettingsChanges,
) -> Result<BillingSettings> {
    caller.require(Capability::Operate)?;
    let mut problems = Problems::new();
    for (field, value) in [
        ("tax_rate_bps", changes.tax_rate_bps),
        ("fee_bps", changes.fee_bps),
    ] {
        if let Some(Some(v)) = value {
            if !(0..=10_000).contains(&v) {
                problems.push(field, "must be from 0 to 10000 basis points");
            }
        }
    }
    problems.finish()?;
    // Locked, read, changed and audited in one transaction: two changes of different fields
    // at once both take effect.
    let (tax, fee) = transaction(conn, |conn| {
        schema::locks::organization(conn, organization_id)
            .optional()?
            .ok_or(Error::NotFound("organization"))?;
        let (mut tax, mut fee): (Option<i32>, Option<i32>) = organizations::table
            .find(organization_id)
            .select((organizations::tax_rate_bps, organizations::fee_bps))
            .first(conn)
            .optional()?
            .ok_or(Error::NotFound("organization"))?;
        if let Some(t) = changes.tax_rate_bps {
            tax = t;
        }
        if let Some(f) = changes.fee_bps {
            fee = f;
        }
        diesel::update(organizations::table.find(organization_id))
            .set((
                organizations::tax_rate_bps.eq(tax),
                organizations::fee_bps.eq(fee),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                organization_id,
                &caller.principal(),
                "billing_settings.updated",
                organization_id,
            )
            .detail(serde_json::json!({ "tax_rate_bps": tax, "fee_bps": fee })),
        )?;
        Ok((tax, fee))
    })?;
    Ok(BillingSettings {
        organization_id: organization_id.to_string(),
        tax_rate_bps: tax,
        fee_bps: fee,
        effective_tax_rate_bps: tax.unwrap_or(defaults.tax_rate_bps),
        effective_fee_bps: fee.unwrap_or(defaults.fee_bps),
    })
}
