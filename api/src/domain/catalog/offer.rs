//! Offers: a listing's pricing plans. Immutable once created; archiving stops new takers.

use billing::currency::CurrencyCode;
use billing::pricing::{self, UsagePrice, UsagePriceInput};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use schema::models::{Offer, OfferAccess};
use schema::schema::{offer_access, offers, subscriptions};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use super::{can_see, check_organizations, owned_listing, readable_listing};
use crate::after_cursor;
use crate::domain::audit::{self, Entry};
use crate::domain::auth::Caller;
use crate::domain::clock::{db_time, utc, Clock};
use crate::domain::db::transaction;
use crate::domain::error::{Error, Problems, Result};
use crate::domain::ids::new_id;
use crate::domain::pagination::{Page, PageRequest};
use crate::domain::validate::text;

pub const MAX_TERM_MONTHS: i32 = 36;
pub const MAX_TRIAL_DAYS: i32 = 365;
const MAX_USAGE_PRICES: usize = 50;

#[derive(Debug, Deserialize)]
pub struct NewOffer {
    pub name: String,
    pub currency: String,
    pub billing_interval: String,
    pub recurring_amount: i64,
    pub term_months: i32,
    #[serde(default)]
    pub usage_prices: Vec<UsagePriceInput>,
    #[serde(default)]
    pub free_metrics: Vec<String>,
    #[serde(default)]
    pub trial_days: i32,
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default = "default_true")]
    pub auto_renew_default: bool,
    pub private_to_organization_ids: Option<Vec<String>>,
}

fn default_true() -> bool {
    true
}

/// An amount of money as the API shows it: integer minor units and the currency.
#[derive(Debug, Clone, Serialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

impl Money {
    /// `12.34 USD`, `500 JPY`: major units, as the CSV export writes them.
    pub fn display(&self) -> String {
        match billing::currency::CurrencyCode::parse(&self.currency) {
            Ok(c) => format!(
                "{} {}",
                billing::money::Money::new(self.amount, c).major_units(),
                self.currency
            ),
            Err(_) => format!("{} (minor units) {}", self.amount, self.currency),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OfferView {
    pub id: String,
    pub listing_id: String,
    pub name: String,
    pub currency: String,
    pub billing_interval: String,
    pub recurring_amount: Money,
    pub term_months: i32,
    pub usage_prices: Vec<UsagePrice>,
    pub free_metrics: Vec<String>,
    pub trial_days: i32,
    pub requires_approval: bool,
    pub auto_renew_default: bool,
    pub private: bool,
    /// Who a private offer is for: present for its provider only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_to_organization_ids: Option<Vec<String>>,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
}

fn view(conn: &mut DbConnection, reader_org: &str, o: Offer) -> Result<OfferView> {
    let named = if o.organization_id == reader_org {
        Some(
            offer_access::table
                .filter(offer_access::offer_id.eq(&o.id))
                .select(offer_access::organization_id)
                .order(offer_access::organization_id)
                .load(conn)?,
        )
    } else {
        None
    };
    Ok(OfferView {
        recurring_amount: Money {
            amount: o.recurring_amount,
            currency: o.currency.clone(),
        },
        usage_prices: serde_json::from_str(&o.usage_prices).map_err(Error::internal)?,
        free_metrics: serde_json::from_str(&o.free_metrics).map_err(Error::internal)?,
        private_to_organization_ids: named,
        id: o.id,
        listing_id: o.listing_id,
        name: o.name,
        currency: o.currency,
        billing_interval: o.billing_interval,
        term_months: o.term_months,
        trial_days: o.trial_days,
        requires_approval: o.requires_approval,
        auto_renew_default: o.auto_renew_default,
        private: o.private,
        state: o.state,
        created_at: utc(o.created_at),
        archived_at: o.archived_at.map(utc),
    })
}

fn check_usage_prices(problems: &mut Problems, inputs: &[UsagePriceInput]) -> Vec<UsagePrice> {
    if inputs.len() > MAX_USAGE_PRICES {
        problems.push("usage_prices", format!("at most {MAX_USAGE_PRICES}"));
        return Vec::new();
    }
    let mut prices: Vec<UsagePrice> = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        match pricing::validate(input) {
            Ok(price) if prices.iter().any(|p| p.metric == price.metric) => problems.push(
                format!("usage_prices[{i}].metric"),
                "each metric may be priced once",
            ),
            Ok(price) => prices.push(price),
            Err(errors) => {
                for e in errors {
                    problems.push(format!("usage_prices[{i}].{}", e.field), e.message);
                }
            }
        }
    }
    prices
}

fn check_free_metrics(
    problems: &mut Problems,
    raw: &[String],
    priced: &[UsagePrice],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        match pricing::parse_metric(m) {
            Ok(_) if priced.iter().any(|p| &p.metric == m) => problems.push(
                format!("free_metrics[{i}]"),
                "is priced in usage_prices; a metric is free or priced",
            ),
            Ok(m) if !out.contains(&m) => out.push(m),
            Ok(_) => {}
            Err(message) => problems.push(format!("free_metrics[{i}]"), message),
        }
    }
    out
}

pub fn create(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    listing_id: &str,
    input: NewOffer,
) -> Result<OfferView> {
    let listing = owned_listing(conn, caller, listing_id)?;
    if listing.state == "archived" {
        return Err(Error::conflict(
            "listing_archived",
            "an archived listing takes no new offers",
        ));
    }
    let mut problems = Problems::new();
    let name = problems.check("name", text(&input.name, 200));
    let currency = problems.check("currency", CurrencyCode::parse(&input.currency));
    let interval = problems.check(
        "billing_interval",
        match input.billing_interval.as_str() {
            "monthly" | "one_time" => Ok(input.billing_interval.clone()),
            _ => Err("must be monthly or one_time".to_string()),
        },
    );
    if !(0..=pricing::MAX_UNIT_AMOUNT).contains(&input.recurring_amount) {
        problems.push(
            "recurring_amount",
            format!("must be an integer from 0 to {}", pricing::MAX_UNIT_AMOUNT),
        );
    }
    if !(1..=MAX_TERM_MONTHS).contains(&input.term_months) {
        problems.push(
            "term_months",
            format!("must be from 1 to {MAX_TERM_MONTHS}"),
        );
    }
    if !(0..=MAX_TRIAL_DAYS).contains(&input.trial_days) {
        problems.push("trial_days", format!("must be from 0 to {MAX_TRIAL_DAYS}"));
    }
    let prices = check_usage_prices(&mut problems, &input.usage_prices);
    let free = check_free_metrics(&mut problems, &input.free_metrics, &prices);
    let named = match &input.private_to_organization_ids {
        Some(ids) => {
            if ids.is_empty() {
                problems.push(
                    "private_to_organization_ids",
                    "name at least one organization, or leave it out",
                );
            }
            Some(check_organizations(
                conn,
                &mut problems,
                "private_to_organization_ids",
                ids,
                &caller.organization_id,
            )?)
        }
        None => None,
    };
    problems.finish()?;
    let offer = Offer {
        id: new_id("ofr"),
        listing_id: listing.id.clone(),
        organization_id: caller.organization_id.clone(),
        name: name.unwrap_or_default(),
        currency: currency.map(|c| c.code().to_string()).unwrap_or_default(),
        billing_interval: interval.unwrap_or_default(),
        recurring_amount: input.recurring_amount,
        term_months: input.term_months,
        usage_prices: serde_json::to_string(&prices).map_err(Error::internal)?,
        free_metrics: serde_json::to_string(&free).map_err(Error::internal)?,
        trial_days: input.trial_days,
        requires_approval: input.requires_approval,
        auto_renew_default: input.auto_renew_default,
        private: named.is_some(),
        state: "active".into(),
        created_at: db_time(clock.now()),
        archived_at: None,
    };
    transaction(conn, |conn| {
        diesel::insert_into(offers::table)
            .values(&offer)
            .execute(conn)?;
        let access: Vec<OfferAccess> = named
            .iter()
            .flatten()
            .map(|org| OfferAccess {
                offer_id: offer.id.clone(),
                organization_id: org.clone(),
            })
            .collect();
        for row in &access {
            diesel::insert_into(offer_access::table)
                .values(row)
                .execute(conn)?;
        }
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "offer.created",
                &offer.id,
            ),
        )?;
        view(conn, &caller.organization_id, offer.clone())
    })
}

/// Whether the organization may see (and take) this offer: the provider always; others an
/// active public offer, or an active private one that names them.
pub fn offered_to(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    offer: &Offer,
) -> Result<bool> {
    if reader_org == Some(offer.organization_id.as_str()) {
        return Ok(true);
    }
    if offer.state != "active" {
        return Ok(false);
    }
    if !offer.private {
        return Ok(true);
    }
    let Some(org) = reader_org else {
        return Ok(false);
    };
    let named: i64 = offer_access::table
        .filter(offer_access::offer_id.eq(&offer.id))
        .filter(offer_access::organization_id.eq(org))
        .count()
        .get_result(conn)?;
    Ok(named > 0)
}

/// A listing's offers as the reader may see them.
pub fn list(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    listing_id: &str,
    page: &PageRequest,
) -> Result<Page<OfferView>> {
    let listing = readable_listing(conn, reader_org, listing_id)?;
    let provider = reader_org == Some(listing.organization_id.as_str());
    let mut query = offers::table
        .filter(offers::listing_id.eq(listing_id))
        .into_boxed();
    if !provider {
        let reader = reader_org.unwrap_or("").to_string();
        let named = offer_access::table
            .filter(offer_access::organization_id.eq(reader.clone()))
            .select(offer_access::offer_id);
        query = query
            .filter(offers::state.eq("active"))
            .filter(offers::private.eq(false).or(offers::id.eq_any(named)));
        if !can_see(conn, reader_org, &listing)? {
            // Found only through a running subscription (the listing archived, or no longer
            // shared with the reader): the offers it holds, nothing new.
            let held = subscriptions::table
                .filter(subscriptions::organization_id.eq(reader))
                .filter(subscriptions::listing_id.eq(listing_id.to_string()))
                .filter(subscriptions::status.eq("active"))
                .select(subscriptions::offer_id);
            query = query.filter(offers::id.eq_any(held));
        }
    }
    let rows: Vec<Offer> = after_cursor!(query, page, offers::created_at, offers::id)
        .select(Offer::as_select())
        .load(conn)?;
    let reader = reader_org.unwrap_or("");
    Page::try_from_rows(
        page,
        rows,
        |o| (o.created_at, o.id.clone()),
        |o| view(conn, reader, o),
    )
}

/// Archives an offer: no new subscriptions, no renewals. Archiving twice is a no-op.
pub fn archive(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    offer_id: &str,
) -> Result<OfferView> {
    let offer: Option<Offer> = offers::table
        .find(offer_id)
        .select(Offer::as_select())
        .first(conn)
        .optional()?;
    let offer = match offer {
        Some(o) if offered_to(conn, Some(&caller.organization_id), &o)? => o,
        _ => return Err(Error::NotFound("offer")),
    };
    // An offer on a listing hidden from the caller is as absent as one that never was.
    owned_listing(conn, caller, &offer.listing_id).map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound("offer"),
        e => e,
    })?;
    transaction(conn, |conn| {
        diesel::update(
            offers::table
                .find(offer_id)
                .filter(offers::state.eq("active")),
        )
        .set((
            offers::state.eq("archived"),
            offers::archived_at.eq(db_time(clock.now())),
        ))
        .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "offer.archived",
                offer_id,
            ),
        )?;
        let offer: Offer = offers::table
            .find(offer_id)
            .select(Offer::as_select())
            .first(conn)?;
        view(conn, &caller.organization_id, offer)
    })
}
