//! The outbox: e-mails and webhooks, written in the transaction of the change that causes
//! them (so a change is never told without happening, nor happens untold), and delivered
//! afterwards by the [`courier`] with retries and backoff.
//!
//! Each event goes to one organization: by e-mail to each of its admins and members (for
//! invoices, its admins and finance users: see `invoicing::notices`), and to each of its
//! webhook endpoints that asked for the event's type, one outbox row apiece.

pub mod courier;
pub mod mail;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use schema::models::{OutboxMessage, Revision, Subscription};
use schema::schema::{datasets, grants, listings, offers, organizations, outbox, users};
use schema::DbConnection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::clock::{db_time, utc, Clock};
use super::error::{Error, Result};
use super::ids::new_id;
use super::webhooks;

pub use courier::{Courier, CourierSettings, Report};

/// Roles that receive e-mail about the organization's subscriptions and data.
const RECIPIENT_ROLES: [&str; 2] = ["admin", "member"];

/// What happened, as a webhook receiver sees it (the body of the POST).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`: the same for every delivery of this event, retries included.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// A rendered e-mail to one recipient; the sender address is the server's (`MARKETPLACE_MAIL_FROM`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub to: String,
    pub to_name: String,
    pub subject: String,
    pub text: String,
}

/// A webhook delivery: the endpoint is read again at send time (URL, secret, whether it
/// still exists), so its secret never sits in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    pub endpoint_id: String,
    pub event: Event,
}

/// One message to put in the outbox.
#[derive(Debug, Clone)]
pub enum Message {
    Email {
        organization_id: String,
        event_id: String,
        email: Email,
    },
    Webhook {
        organization_id: String,
        payload: WebhookPayload,
    },
}

/// Writes a message to the outbox, due at once. Call it inside the transaction of the change
/// that causes it: it is sent if and only if that change commits.
pub fn enqueue(conn: &mut DbConnection, clock: &dyn Clock, message: Message) -> Result<()> {
    let (organization_id, kind, event_id, payload) = match message {
        Message::Email {
            organization_id,
            event_id,
            email,
        } => (
            organization_id,
            "email",
            event_id,
            serde_json::to_string(&email),
        ),
        Message::Webhook {
            organization_id,
            payload,
        } => (
            organization_id,
            "webhook",
            payload.event.id.clone(),
            serde_json::to_string(&payload),
        ),
    };
    let now = db_time(clock.now());
    diesel::insert_into(outbox::table)
        .values(OutboxMessage {
            id: new_id("msg"),
            organization_id,
            kind: kind.into(),
            event_id,
            payload: payload.map_err(Error::internal)?,
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            created_at: now,
            sent_at: None,
        })
        .execute(conn)?;
    Ok(())
}

/// Sent and failed messages are kept this long (to answer "was I told?", and for the
/// reminders' once-per-term rule), then deleted.
pub const RETENTION_DAYS: i64 = 30;

/// Deletes sent and failed messages older than [`RETENTION_DAYS`]; returns how many.
pub fn purge(conn: &mut DbConnection, clock: &dyn Clock) -> Result<usize> {
    let before = db_time(clock.now() - chrono::Duration::days(RETENTION_DAYS));
    Ok(diesel::delete(
        outbox::table
            .filter(outbox::status.eq_any(["sent", "failed"]))
            .filter(outbox::created_at.lt(before)),
    )
    .execute(conn)?)
}

/// Tells an organization of an event: the e-mail to each admin and member, the event to each
/// endpoint that asked for its type.
fn notify(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    event: &Event,
    subject: &str,
    text: &str,
) -> Result<()> {
    notify_roles(
        conn,
        clock,
        organization_id,
        &RECIPIENT_ROLES,
        event,
        subject,
        text,
    )
}

/// Tells an organization of an event: the e-mail to each of its users with one of `roles`,
/// the event to each endpoint that asked for its type.
pub fn notify_roles(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    roles: &[&str],
    event: &Event,
    subject: &str,
    text: &str,
) -> Result<()> {
    email_people(
        conn,
        clock,
        organization_id,
        roles,
        &event.id,
        subject,
        text,
    )?;
    publish(conn, clock, organization_id, event)
}

/// One e-mail to each current user of the organization with one of `roles`; every copy
/// carries `event_id` (one Message-ID across retries).
fn email_people(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    roles: &[&str],
    event_id: &str,
    subject: &str,
    text: &str,
) -> Result<()> {
    let recipients: Vec<(String, String)> = users::table
        .filter(users::organization_id.eq(organization_id))
        .filter(users::removed_at.is_null())
        .filter(users::role.eq_any(roles))
        .order((users::created_at.asc(), users::id.asc()))
        .select((users::email, users::name))
        .load(conn)?;
    for (to, to_name) in recipients {
        enqueue(
            conn,
            clock,
            Message::Email {
                organization_id: organization_id.to_string(),
                event_id: event_id.to_string(),
                email: Email {
                    to,
                    to_name,
                    subject: subject.to_string(),
                    text: text.to_string(),
                },
            },
        )?;
    }
    Ok(())
}

/// The event to each of the organization's webhook endpoints that asked for its type.
pub fn publish(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    event: &Event,
) -> Result<()> {
    for endpoint in webhooks::endpoints_for(conn, organization_id, &event.event_type)? {
        enqueue(
            conn,
            clock,
            Message::Webhook {
                organization_id: organization_id.to_string(),
                payload: WebhookPayload {
                    endpoint_id: endpoint.id,
                    event: event.clone(),
                },
            },
        )?;
    }
    Ok(())
}

/// An event to tell, stamped with the clock's time; `id` stays the same across its deliveries.
pub fn event(clock: &dyn Clock, id: String, event_type: &str, data: serde_json::Value) -> Event {
    Event {
        id,
        event_type: event_type.to_string(),
        created_at: clock.now(),
        data,
    }
}

fn organization_name(conn: &mut DbConnection, id: &str) -> Result<String> {
    Ok(organizations::table
        .find(id)
        .select(organizations::name)
        .first(conn)?)
}

fn listing_title(conn: &mut DbConnection, id: &str) -> Result<String> {
    Ok(listings::table
        .find(id)
        .select(listings::title)
        .first(conn)?)
}

fn day(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// What the e-mails and webhooks of a subscription event say about it.
struct SubscriptionFacts {
    subscriber: String,
    provider: String,
    listing: String,
    offer: String,
    data: serde_json::Value,
}

fn subscription_facts(conn: &mut DbConnection, s: &Subscription) -> Result<SubscriptionFacts> {
    let subscriber = organization_name(conn, &s.organization_id)?;
    let provider = organization_name(conn, &s.provider_organization_id)?;
    let listing = listing_title(conn, &s.listing_id)?;
    let offer: String = offers::table
        .find(&s.offer_id)
        .select(offers::name)
        .first(conn)?;
    let data = json!({
        "subscription": {
            "id": s.id,
            "status": s.status,
            "offer_id": s.offer_id,
            "listing_id": s.listing_id,
            "subscriber": {"id": s.organization_id, "name": subscriber},
            "provider": {"id": s.provider_organization_id, "name": provider},
            "message": s.message,
            "decision_reason": s.decision_reason,
            "trial_end": s.trial_end.map(utc),
            "term_start": s.term_start.map(utc),
            "term_end": s.term_end.map(utc),
            "auto_renew": s.auto_renew,
            "cancel_at": s.cancel_at.map(utc),
            "request_expires_at": s.request_expires_at.map(utc),
        },
        "listing": {"id": s.listing_id, "title": listing},
        "offer": {"id": s.offer_id, "name": offer},
    });
    Ok(SubscriptionFacts {
        subscriber,
        provider,
        listing,
        offer,
        data,
    })
}

/// `subscription.requested`: the provider's people have a request to answer.
pub fn subscription_requested(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    s: &Subscription,
) -> Result<()> {
    let f = subscription_facts(conn, s)?;
    let e = event(clock, new_id("evt"), "subscription.requested", f.data);
    let subject = format!("New subscription request for \"{}\"", f.listing);
    let mut text = format!(
        "{} asks to subscribe to \"{}\" under the offer \"{}\".\n\n",
        f.subscriber, f.listing, f.offer
    );
    if !s.message.is_empty() {
        text.push_str(&format!("Their message:\n\n{}\n\n", s.message));
    }
    if let Some(expires) = s.request_expires_at {
        text.push_str(&format!(
            "Approve or reject it before {}, when it expires:\n",
            day(expires)
        ));
    }
    text.push_str(&format!(
        "POST /v1/subscriptions/{id}/approve or POST /v1/subscriptions/{id}/reject.\n\n\
         Subscription: {id}\n",
        id = s.id
    ));
    notify(
        conn,
        clock,
        &s.provider_organization_id,
        &e,
        &subject,
        &text,
    )
}

/// `subscription.approved` or `subscription.rejected` (by the subscription's new status): the
/// subscriber's people learn the provider's answer.
pub fn subscription_decided(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    s: &Subscription,
) -> Result<()> {
    let f = subscription_facts(conn, s)?;
    let (event_type, subject, mut text) = if s.status == "active" {
        let mut text = format!(
            "{} approved your organization's subscription to \"{}\" (offer \"{}\"). It is active now",
            f.provider, f.listing, f.offer
        );
        if let Some(trial_end) = s.trial_end {
            text.push_str(&format!(", with a free trial until {}", day(trial_end)));
        }
        if let Some(term_end) = s.term_end {
            text.push_str(&format!("; its term ends on {}", day(term_end)));
        }
        text.push_str(".\n\n");
        (
            "subscription.approved",
            format!("Your subscription to \"{}\" is approved", f.listing),
            text,
        )
    } else {
        let mut text = format!(
            "{} rejected your organization's request to subscribe to \"{}\" (offer \"{}\").\n\n",
            f.provider, f.listing, f.offer
        );
        if let Some(reason) = &s.decision_reason {
            text.push_str(&format!("Their reason:\n\n{reason}\n\n"));
        }
        (
            "subscription.rejected",
            format!(
                "Your subscription request for \"{}\" was rejected",
                f.listing
            ),
            text,
        )
    };
    text.push_str(&format!("Subscription: {}\n", s.id));
    let e = event(clock, new_id("evt"), event_type, f.data);
    notify(conn, clock, &s.organization_id, &e, &subject, &text)
}

/// `subscription.term_ending`: the subscriber's people learn that the term ends (or renews)
/// soon; the lifecycle worker calls this 7 days before `term_end`. Sent once per term: the
/// event id derives from the subscription and its term end, and a second call for the same
/// term enqueues nothing and returns `false`. `renews`: whether the worker will renew it.
pub fn notify_term_ending(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    s: &Subscription,
    renews: bool,
) -> Result<bool> {
    let Some(term_end) = s.term_end else {
        return Ok(false);
    };
    let event_id = {
        let digest = Sha256::digest(format!(
            "subscription.term_ending\n{}\n{}",
            s.id,
            term_end.and_utc().timestamp_micros()
        ));
        format!("evt_{}", &hex::encode(digest)[..24])
    };
    let told: i64 = outbox::table
        .filter(outbox::organization_id.eq(&s.organization_id))
        .filter(outbox::event_id.eq(&event_id))
        .count()
        .get_result(conn)?;
    if told > 0 {
        return Ok(false);
    }
    let f = subscription_facts(conn, s)?;
    let (subject, first) = if renews {
        (
            format!(
                "Your subscription to \"{}\" renews on {}",
                f.listing,
                term_end.format("%Y-%m-%d")
            ),
            format!(
                "Your organization's subscription to \"{}\" (offer \"{}\", from {}) renews automatically for a new term on {}.\n\
                 To let it end instead, turn auto-renew off: POST /v1/subscriptions/{}/cancel.\n\n",
                f.listing, f.offer, f.provider, day(term_end), s.id
            ),
        )
    } else {
        (
            format!(
                "Your subscription to \"{}\" ends on {}",
                f.listing,
                term_end.format("%Y-%m-%d")
            ),
            format!(
                "Your organization's subscription to \"{}\" (offer \"{}\", from {}) ends on {}; access to its data ends with it.\n\
                 To keep it, turn auto-renew on: PATCH /v1/subscriptions/{} {{\"auto_renew\": true}}.\n\n",
                f.listing, f.offer, f.provider, day(term_end), s.id
            ),
        )
    };
    let text = format!("{first}Subscription: {}\n", s.id);
    let e = event(clock, event_id, "subscription.term_ending", f.data);
    notify(conn, clock, &s.organization_id, &e, &subject, &text)?;
    Ok(true)
}

/// `revision.revoked`: every organization holding a grant on the listing that has not ended
/// learns that this revision's files can no longer be read.
pub fn revision_revoked(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    revision: &Revision,
) -> Result<()> {
    let now = db_time(clock.now());
    let mut holders: Vec<String> = grants::table
        .filter(grants::listing_id.eq(&revision.listing_id))
        .filter(grants::revoked_at.is_null())
        .filter(grants::valid_until.gt(now))
        .select(grants::organization_id)
        .load(conn)?;
    holders.sort();
    holders.dedup();
    if holders.is_empty() {
        return Ok(());
    }
    let provider = organization_name(conn, &revision.organization_id)?;
    let listing = listing_title(conn, &revision.listing_id)?;
    let dataset: String = datasets::table
        .find(&revision.dataset_id)
        .select(datasets::name)
        .first(conn)?;
    let reason = revision.revoke_reason.clone().unwrap_or_default();
    let e = event(
        clock,
        new_id("evt"),
        "revision.revoked",
        json!({
            "revision": {
                "id": revision.id,
                "dataset_id": revision.dataset_id,
                "listing_id": revision.listing_id,
                "state": revision.state,
                "revoke_reason": revision.revoke_reason,
                "revoked_at": revision.revoked_at.map(utc),
            },
            "dataset": {"id": revision.dataset_id, "name": dataset},
            "listing": {"id": revision.listing_id, "title": listing},
            "provider": {"id": revision.organization_id, "name": provider},
        }),
    );
    let subject = format!("A revision of \"{listing}\" was revoked");
    let text = format!(
        "{provider} revoked revision {} of the dataset \"{dataset}\" in \"{listing}\". Its files \
         can no longer be read.\n\nTheir reason:\n\n{reason}\n\nRevision: {}\n",
        revision.id, revision.id
    );
    for organization_id in holders {
        notify(conn, clock, &organization_id, &e, &subject, &text)?;
    }
    Ok(())
}
