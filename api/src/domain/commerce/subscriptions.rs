//! Subscriptions: `pending_approval → active | rejected | expired`, `active → expired |
//! cancelled`. Activation takes the offer's price snapshot and creates the access grant.

use billing::periods::{self, Interval};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use schema::models::{Grant, Listing, Offer, Subscription};
use schema::schema::{grants, listings, offers, organizations, subscriptions};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use crate::after_cursor;
use crate::domain::accounts::OrganizationRef;
use crate::domain::audit::{self, Entry};
use crate::domain::auth::{Caller, Capability};
use crate::domain::catalog::offer::offered_to;
use crate::domain::catalog::{can_see, readable_listing};
use crate::domain::clock::{db_time, utc, Clock};
use crate::domain::db::transaction;
use crate::domain::error::{Error, Result};
use crate::domain::ids::new_id;
use crate::domain::outbox;
use crate::domain::pagination::{Page, PageRequest};
use crate::domain::validate::text;

/// Days a provider has to answer a request before it expires.
pub const APPROVAL_WINDOW_DAYS: i64 = 14;

#[derive(Debug, Deserialize)]
pub struct NewSubscription {
    pub offer_id: String,
    pub auto_renew: Option<bool>,
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CancelRequest {
    /// Operators only: end the subscription now instead of at the term's end.
    #[serde(default)]
    pub immediately: bool,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionChanges {
    pub auto_renew: Option<bool>,
}

/// The offer's terms as they were when the subscription became active; renewals keep them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PriceSnapshot {
    pub currency: String,
    pub billing_interval: String,
    pub recurring_amount: i64,
    pub term_months: i32,
    pub trial_days: i32,
    pub usage_prices: serde_json::Value,
    pub free_metrics: Vec<String>,
}

impl PriceSnapshot {
    fn of(offer: &Offer) -> Result<PriceSnapshot> {
        Ok(PriceSnapshot {
            currency: offer.currency.clone(),
            billing_interval: offer.billing_interval.clone(),
            recurring_amount: offer.recurring_amount,
            term_months: offer.term_months,
            trial_days: offer.trial_days,
            usage_prices: serde_json::from_str(&offer.usage_prices).map_err(Error::internal)?,
            free_metrics: serde_json::from_str(&offer.free_metrics).map_err(Error::internal)?,
        })
    }

    pub fn parse(stored: Option<&str>) -> Option<PriceSnapshot> {
        stored.and_then(|s| serde_json::from_str(s).ok())
    }

    /// Metrics a provider may report: those priced, and those listed as free.
    pub fn reportable_metrics(&self) -> Vec<String> {
        let priced = self
            .usage_prices
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metric"].as_str());
        priced
            .map(str::to_string)
            .chain(self.free_metrics.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub status: String,
    pub offer_id: String,
    pub listing_id: String,
    pub subscriber: OrganizationRef,
    pub provider: OrganizationRef,
    pub message: String,
    pub decision_reason: Option<String>,
    pub trial_end: Option<DateTime<Utc>>,
    pub term_start: Option<DateTime<Utc>>,
    pub term_end: Option<DateTime<Utc>>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub auto_renew: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    pub request_expires_at: Option<DateTime<Utc>>,
    pub prices: Option<PriceSnapshot>,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

fn view(conn: &mut DbConnection, s: Subscription) -> Result<SubscriptionView> {
    let names: Vec<(String, String)> = organizations::table
        .filter(organizations::id.eq_any([
            s.organization_id.clone(),
            s.provider_organization_id.clone(),
        ]))
        .select((organizations::id, organizations::name))
        .load(conn)?;
    let name_of = |id: &str| {
        names
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    };
    Ok(SubscriptionView {
        subscriber: OrganizationRef {
            id: s.organization_id.clone(),
            name: name_of(&s.organization_id),
        },
        provider: OrganizationRef {
            id: s.provider_organization_id.clone(),
            name: name_of(&s.provider_organization_id),
        },
        prices: PriceSnapshot::parse(s.prices.as_deref()),
        id: s.id,
        status: s.status,
        offer_id: s.offer_id,
        listing_id: s.listing_id,
        message: s.message,
        decision_reason: s.decision_reason,
        trial_end: s.trial_end.map(utc),
        term_start: s.term_start.map(utc),
        term_end: s.term_end.map(utc),
        current_period_start: s.current_period_start.map(utc),
        current_period_end: s.current_period_end.map(utc),
        auto_renew: s.auto_renew,
        cancel_at: s.cancel_at.map(utc),
        request_expires_at: s.request_expires_at.map(utc),
        created_at: utc(s.created_at),
        ended_at: s.ended_at.map(utc),
    })
}

fn load(conn: &mut DbConnection, id: &str) -> Result<Subscription> {
    subscriptions::table
        .find(id)
        .select(Subscription::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound("subscription"))
}

/// The subscription, locked until the transaction ends: every change to one reads it so, and
/// so sees the change made before it (PostgreSQL runs two at once otherwise).
fn load_locked(conn: &mut DbConnection, id: &str) -> Result<Subscription> {
    schema::locks::subscription(conn, id).map_err(|e| match e {
        diesel::result::Error::NotFound => Error::NotFound("subscription"),
        e => e.into(),
    })?;
    load(conn, id)
}

/// Whether the offer and its listing still take new subscriptions, read under share locks:
/// an archive that commits first is seen here, a later one waits for this transaction (and
/// the subscription it makes runs its course).
fn still_taking_subscriptions(
    conn: &mut DbConnection,
    offer_id: &str,
    listing_id: &str,
) -> Result<()> {
    if schema::locks::offer_state(conn, offer_id)? != "active" {
        return Err(Error::conflict(
            "offer_archived",
            "this offer is archived and takes no new subscriptions",
        ));
    }
    if schema::locks::listing_state(conn, listing_id)? != "published" {
        return Err(Error::conflict(
            "listing_not_published",
            "this listing is not published",
        ));
    }
    Ok(())
}

/// Whether the listing, as it is now, is shown to the organization (`catalog::can_see`).
fn shown_to(conn: &mut DbConnection, organization_id: &str, listing_id: &str) -> Result<bool> {
    let listing: Listing = listings::table
        .find(listing_id)
        .select(Listing::as_select())
        .first(conn)?;
    can_see(conn, Some(organization_id), &listing)
}

/// A subscription the caller takes part in (subscriber or provider; platform staff see all);
/// anyone else gets 404.
pub fn visible(conn: &mut DbConnection, caller: &Caller, id: &str) -> Result<Subscription> {
    let s = load(conn, id)?;
    let party = s.organization_id == caller.organization_id
        || s.provider_organization_id == caller.organization_id;
    if party || caller.role.is_platform() {
        Ok(s)
    } else {
        Err(Error::NotFound("subscription"))
    }
}

/// Makes a subscription active from `now`: trial, term, first period, price snapshot, grant.
fn activate(
    conn: &mut DbConnection,
    s: &mut Subscription,
    offer: &Offer,
    now: NaiveDateTime,
) -> Result<()> {
    let trial_end =
        (offer.trial_days > 0).then(|| now + Duration::days(i64::from(offer.trial_days)));
    let anchor = trial_end.unwrap_or(now);
    let (term_start, term_end) = periods::term(anchor, offer.term_months as u32);
    let interval = Interval::parse(&offer.billing_interval)
        .ok_or(Error::internal("unknown billing interval"))?;
    let (period_start, period_end) = periods::period_at(term_start, term_end, interval, term_start)
        .ok_or(Error::internal("empty term"))?;
    s.status = "active".into();
    s.prices = Some(serde_json::to_string(&PriceSnapshot::of(offer)?).map_err(Error::internal)?);
    s.trial_end = trial_end;
    s.billing_anchor = Some(term_start);
    s.term_start = Some(term_start);
    s.term_end = Some(term_end);
    s.current_period_start = Some(period_start);
    s.current_period_end = Some(period_end);
    s.request_expires_at = None;
    s.updated_at = now;
    diesel::insert_into(grants::table)
        .values(Grant {
            id: new_id("grt"),
            organization_id: s.organization_id.clone(),
            subscription_id: s.id.clone(),
            listing_id: s.listing_id.clone(),
            valid_from: now,
            valid_until: term_end,
            revoked_at: None,
            suspended_at: None,
            created_at: now,
        })
        .execute(conn)?;
    Ok(())
}

fn save(conn: &mut DbConnection, s: &Subscription) -> Result<()> {
    diesel::update(subscriptions::table.find(&s.id))
        .set((
            subscriptions::status.eq(&s.status),
            subscriptions::decision_reason.eq(&s.decision_reason),
            subscriptions::prices.eq(&s.prices),
            subscriptions::trial_end.eq(s.trial_end),
            subscriptions::term_start.eq(s.term_start),
            subscriptions::term_end.eq(s.term_end),
            subscriptions::current_period_start.eq(s.current_period_start),
            subscriptions::current_period_end.eq(s.current_period_end),
            subscriptions::auto_renew.eq(s.auto_renew),
            subscriptions::cancel_at.eq(s.cancel_at),
            subscriptions::request_expires_at.eq(s.request_expires_at),
            subscriptions::updated_at.eq(s.updated_at),
            subscriptions::ended_at.eq(s.ended_at),
            subscriptions::billing_anchor.eq(s.billing_anchor),
        ))
        .execute(conn)?;
    Ok(())
}

fn already_subscribed() -> Error {
    Error::conflict(
        "already_subscribed",
        "your organization already holds a live subscription to this offer",
    )
}

pub fn create(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    input: NewSubscription,
) -> Result<SubscriptionView> {
    caller.require(Capability::Write)?;
    let message = match input.message.as_deref() {
        None | Some("") => String::new(),
        Some(m) => text(m, 2_000).map_err(|e| Error::validation("message", e))?,
    };
    let offer: Offer = offers::table
        .find(&input.offer_id)
        .select(Offer::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound("offer"))?;
    // Private offers stay invisible to those they do not name, archived or not.
    let mut as_if_active = offer.clone();
    as_if_active.state = "active".into();
    if !offered_to(conn, Some(&caller.organization_id), &as_if_active)? {
        return Err(Error::NotFound("offer"));
    }
    let listing: Listing = readable_listing(conn, Some(&caller.organization_id), &offer.listing_id)
        .map_err(|_| Error::NotFound("offer"))?;
    if listing.organization_id == caller.organization_id {
        return Err(Error::conflict(
            "own_listing",
            "an organization cannot subscribe to its own listing",
        ));
    }
    transaction(conn, |conn| {
        let now = db_time(clock.now());
        still_taking_subscriptions(conn, &offer.id, &listing.id)?;
        // A subscriber finds a private listing no longer shared with it while its
        // subscription runs, but may not take a new one (read under the listing's share
        // lock, so a change of the list commits before or after this whole subscription).
        if !shown_to(conn, &caller.organization_id, &listing.id)? {
            return Err(Error::NotFound("offer"));
        }
        let live: i64 = subscriptions::table
            .filter(subscriptions::organization_id.eq(&caller.organization_id))
            .filter(subscriptions::offer_id.eq(&offer.id))
            .filter(subscriptions::status.eq_any(["pending_approval", "active"]))
            .count()
            .get_result(conn)?;
        if live > 0 {
            return Err(already_subscribed());
        }
        let mut s = Subscription {
            id: new_id("sub"),
            organization_id: caller.organization_id.clone(),
            provider_organization_id: listing.organization_id.clone(),
            listing_id: listing.id.clone(),
            offer_id: offer.id.clone(),
            status: "pending_approval".into(),
            message: message.clone(),
            decision_reason: None,
            prices: None,
            trial_end: None,
            term_start: None,
            term_end: None,
            current_period_start: None,
            current_period_end: None,
            auto_renew: input.auto_renew.unwrap_or(offer.auto_renew_default),
            cancel_at: None,
            request_expires_at: Some(now + Duration::days(APPROVAL_WINDOW_DAYS)),
            created_at: now,
            updated_at: now,
            ended_at: None,
            billing_anchor: None,
            term_end_reminded_at: None,
        };
        diesel::insert_into(subscriptions::table)
            .values(&s)
            .execute(conn)
            .map_err(|e| {
                if schema::is_unique_violation(&e) {
                    already_subscribed()
                } else {
                    e.into()
                }
            })?;
        if !offer.requires_approval {
            activate(conn, &mut s, &offer, now)?;
            save(conn, &s)?;
        } else {
            outbox::subscription_requested(conn, clock, &s)?;
        }
        let action = if s.status == "active" {
            "subscription.activated"
        } else {
            "subscription.requested"
        };
        audit::record(
            conn,
            clock,
            Entry::new(&caller.organization_id, &caller.principal(), action, &s.id),
        )?;
        view(conn, s)
    })
}

pub fn get(conn: &mut DbConnection, caller: &Caller, id: &str) -> Result<SubscriptionView> {
    caller.require(Capability::Read)?;
    let s = visible(conn, caller, id)?;
    view(conn, s)
}

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(rename = "as")]
    pub side: Option<String>,
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

const STATUSES: [&str; 5] = [
    "pending_approval",
    "active",
    "rejected",
    "expired",
    "cancelled",
];

pub fn list(
    conn: &mut DbConnection,
    caller: &Caller,
    params: &ListParams,
    page: &PageRequest,
) -> Result<Page<SubscriptionView>> {
    caller.require(Capability::Read)?;
    let mut query = subscriptions::table.into_boxed();
    query = match params.side.as_deref() {
        None | Some("subscriber") => {
            query.filter(subscriptions::organization_id.eq(caller.organization_id.clone()))
        }
        Some("provider") => {
            query.filter(subscriptions::provider_organization_id.eq(caller.organization_id.clone()))
        }
        Some(_) => return Err(Error::validation("as", "must be subscriber or provider")),
    };
    if let Some(status) = params.status.as_deref() {
        if !STATUSES.contains(&status) {
            return Err(Error::validation(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
        query = query.filter(subscriptions::status.eq(status.to_string()));
    }
    let rows: Vec<Subscription> =
        after_cursor!(query, page, subscriptions::created_at, subscriptions::id)
            .select(Subscription::as_select())
            .load(conn)?;
    Page::try_from_rows(
        page,
        rows,
        |s| (s.created_at, s.id.clone()),
        |s| view(conn, s),
    )
}

/// The provider's side of a request: approve or reject, while it is pending.
fn decide(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    approve: bool,
    reason: Option<String>,
) -> Result<SubscriptionView> {
    let s = visible(conn, caller, id)?;
    if s.provider_organization_id != caller.organization_id {
        return Err(Error::Forbidden(
            "only the provider answers a subscription request",
        ));
    }
    caller.require(Capability::Write)?;
    transaction(conn, |conn| {
        let now = db_time(clock.now());
        let mut s = load_locked(conn, id)?;
        if s.status != "pending_approval" {
            return Err(Error::conflict(
                "invalid_state",
                format!("the subscription is {}: it cannot be answered", s.status),
            ));
        }
        s.decision_reason = reason.clone();
        if approve {
            // Approving starts a subscription: what archiving promised (no new ones) holds,
            // and so does taking an organization off a private listing.
            still_taking_subscriptions(conn, &s.offer_id, &s.listing_id)?;
            if !shown_to(conn, &s.organization_id, &s.listing_id)? {
                return Err(Error::conflict(
                    "listing_not_shared",
                    "the listing is no longer shared with the organization that asked",
                ));
            }
            let offer: Offer = offers::table
                .find(&s.offer_id)
                .select(Offer::as_select())
                .first(conn)?;
            activate(conn, &mut s, &offer, now)?;
        } else {
            s.status = "rejected".into();
            s.request_expires_at = None;
            s.ended_at = Some(now);
            s.updated_at = now;
        }
        save(conn, &s)?;
        outbox::subscription_decided(conn, clock, &s)?;
        let action = if approve {
            "subscription.approved"
        } else {
            "subscription.rejected"
        };
        audit::record(
            conn,
            clock,
            Entry::new(&caller.organization_id, &caller.principal(), action, id),
        )?;
        view(conn, s)
    })
}

pub fn approve(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
) -> Result<SubscriptionView> {
    decide(conn, clock, caller, id, true, None)
}

pub fn reject(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    d: Decision,
) -> Result<SubscriptionView> {
    let reason = match d.reason.as_deref() {
        None => {
            return Err(Error::validation(
                "reason",
                "is required: tell the subscriber why",
            ))
        }
        Some(r) => text(r, 2_000).map_err(|m| Error::validation("reason", m))?,
    };
    decide(conn, clock, caller, id, false, Some(reason))
}

/// The subscriber cancels: auto-renew off, access and billing run to the term's end (to the
/// trial's end during a trial). A pending request is withdrawn. Operators may end at once.
pub fn cancel(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    req: CancelRequest,
) -> Result<SubscriptionView> {
    let s = visible(conn, caller, id)?;
    if req.immediately {
        caller.require(Capability::Operate)?;
    } else if s.organization_id != caller.organization_id {
        return Err(Error::Forbidden(
            "only the subscriber cancels a subscription",
        ));
    }
    caller.require(Capability::Write)?;
    transaction(conn, |conn| {
        let now = db_time(clock.now());
        let mut s = load_locked(conn, id)?;
        match (s.status.as_str(), req.immediately) {
            ("pending_approval", _) | ("active", true) => {
                s.status = "cancelled".into();
                s.auto_renew = false;
                s.cancel_at = Some(now);
                s.ended_at = Some(now);
                s.request_expires_at = None;
                diesel::update(
                    grants::table
                        .filter(grants::subscription_id.eq(&s.id))
                        .filter(grants::valid_until.gt(now)),
                )
                .set(grants::valid_until.eq(now))
                .execute(conn)?;
            }
            ("active", false) => {
                let in_trial = s.trial_end.is_some_and(|t| now < t);
                let end = if in_trial { s.trial_end } else { s.term_end };
                s.auto_renew = false;
                // Cancelling again never moves an earlier end later (a cancellation made
                // during the trial stays at the trial's end).
                s.cancel_at = earliest(s.cancel_at, end);
                if let (true, Some(end)) = (in_trial, end) {
                    diesel::update(grants::table.filter(grants::subscription_id.eq(&s.id)))
                        .set(grants::valid_until.eq(end))
                        .execute(conn)?;
                }
            }
            (other, _) => {
                return Err(Error::conflict(
                    "invalid_state",
                    format!("the subscription is {other}: it cannot be cancelled"),
                ))
            }
        }
        s.updated_at = now;
        save(conn, &s)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "subscription.cancelled",
                id,
            ),
        )?;
        view(conn, s)
    })
}

/// The subscriber turns auto-renew on or off; turning it on withdraws a pending cancellation.
pub fn update(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    changes: SubscriptionChanges,
) -> Result<SubscriptionView> {
    let s = visible(conn, caller, id)?;
    if s.organization_id != caller.organization_id {
        return Err(Error::Forbidden("only the subscriber changes auto-renew"));
    }
    caller.require(Capability::Write)?;
    let Some(auto_renew) = changes.auto_renew else {
        return view(conn, s);
    };
    transaction(conn, |conn| {
        let mut s = load_locked(conn, id)?;
        if s.status != "active" {
            return Err(Error::conflict(
                "invalid_state",
                format!("the subscription is {}: it does not renew", s.status),
            ));
        }
        if auto_renew && s.trial_end.is_some_and(|t| s.cancel_at == Some(t)) {
            return Err(Error::conflict(
                "cancelled_in_trial",
                "a subscription cancelled during its trial ends with it",
            ));
        }
        if auto_renew && !super::lifecycle::renewable(conn, &s)? {
            return Err(Error::conflict(
                "not_renewable",
                "its offer or listing is archived, or the listing is no longer shared with \
                 you: the subscription runs to its term's end",
            ));
        }
        s.auto_renew = auto_renew;
        s.cancel_at = if auto_renew {
            None
        } else {
            earliest(s.cancel_at, s.term_end)
        };
        s.updated_at = db_time(clock.now());
        save(conn, &s)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "subscription.updated",
                id,
            )
            .detail(serde_json::json!({ "auto_renew": auto_renew })),
        )?;
        view(conn, s)
    })
}

/// The earlier of two optional instants (either, when only one is set).
fn earliest(a: Option<NaiveDateTime>, b: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The listing a subscription is for (its datasets are what the grant covers).
pub fn listing_of(conn: &mut DbConnection, s: &Subscription) -> Result<Listing> {
    Ok(listings::table
        .find(&s.listing_id)
        .select(Listing::as_select())
        .first(conn)?)
}
