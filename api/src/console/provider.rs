//! A provider's listings, and the subscriptions page: requests to approve or reject and the
//! subscribers (as provider); the organization's own subscriptions and access grants.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{html, Markup};
use serde::Deserialize;

use super::page::{
    badge, csrf_field, day, empty, error_summary, explain, notice, page, page_status, see_other,
    when, FormErrors, Input, Reply, Section,
};
use super::session::{Posted, Session};
use crate::domain::auth::Caller;
use crate::domain::catalog::listing;
use crate::domain::commerce::grants::{self, GrantView};
use crate::domain::commerce::subscriptions::{self, Decision, ListParams, SubscriptionView};
use crate::domain::pagination::{Page, PageRequest};
use crate::domain::Error;
use crate::state::State;

/// `/console/listings`: the organization's own listings, in every state.
pub async fn listings(state: State, s: Session) -> Reply {
    let caller = s.caller.clone();
    let mine = state
        .db(move |conn| {
            let page = PageRequest::parse(Some(200), None)?;
            listing::mine(conn, &caller, &page)
        })
        .await?;
    let body = html! {
        h1 { "My listings" }
        @if mine.data.is_empty() {
            (empty("Your organization provides no listing yet. Create one through the API (POST /v1/listings), add an offer and publish it; it then shows here and in the catalog."))
        } @else {
            table {
                caption.visually-hidden { "Your organization's listings" }
                thead { tr { th scope="col" { "Listing" } th scope="col" { "State" } th scope="col" { "Visibility" } th scope="col" { "Updated" } } }
                tbody {
                    @for l in &mine.data {
                        tr {
                            th scope="row" { a href={ "/console/listings/" (l.id) } { (l.title) } }
                            td { (badge(&l.state)) }
                            td { (l.visibility) }
                            td { (when(&l.updated_at)) }
                        }
                    }
                }
            }
            @if mine.next_cursor.is_some() { p { "Only the first 200 listings are shown." } }
        }
    };
    Ok(page(&s.viewer(), Section::Listings, "My listings", body))
}

struct Overview {
    requests: Vec<SubscriptionView>,
    subscribers: Vec<SubscriptionView>,
    mine: Vec<SubscriptionView>,
    grants: Vec<GrantView>,
    titles: HashMap<String, String>,
    /// Whether a list had more rows than the page shows (`MAX_ROWS`).
    truncated: bool,
}

/// The most rows one list of the subscriptions page shows.
const MAX_ROWS: usize = 2_000;

/// Every row of a paged list, page after page, up to `MAX_ROWS`; whether some were left out.
fn every_page<T>(
    mut fetch: impl FnMut(&PageRequest) -> Result<Page<T>, Error>,
) -> Result<(Vec<T>, bool), Error> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = fetch(&PageRequest::parse(Some(200), cursor.as_deref())?)?;
        rows.extend(page.data);
        match page.next_cursor {
            Some(next) if rows.len() < MAX_ROWS => cursor = Some(next),
            more => return Ok((rows, more.is_some())),
        }
    }
}

fn list_of(
    conn: &mut schema::DbConnection,
    caller: &Caller,
    side: &str,
    status: Option<&str>,
) -> Result<(Vec<SubscriptionView>, bool), Error> {
    let params = ListParams {
        side: Some(side.into()),
        status: status.map(str::to_string),
        limit: None,
        cursor: None,
    };
    every_page(|page| subscriptions::list(conn, caller, &params, page))
}

async fn overview(state: &State, s: &Session) -> Result<Overview, Error> {
    let caller = s.caller.clone();
    let clock = state.clock.clone();
    state
        .db(move |conn| {
            let (requests, more_requests) =
                list_of(conn, &caller, "provider", Some("pending_approval"))?;
            let (subscribers, more_subscribers) =
                list_of(conn, &caller, "provider", Some("active"))?;
            let (mine, more_mine) = list_of(conn, &caller, "subscriber", None)?;
            let (grants, more_grants) =
                every_page(|page| grants::list(conn, clock.as_ref(), &caller, page))?;
            // Titles of the listings named, as this organization may see them.
            let mut titles = HashMap::new();
            let ids = requests
                .iter()
                .chain(&subscribers)
                .chain(&mine)
                .map(|s| s.listing_id.clone())
                .chain(grants.iter().map(|g| g.listing_id.clone()));
            for id in ids {
                if titles.contains_key(&id) {
                    continue;
                }
                match listing::get(conn, Some(&caller.organization_id), &id) {
                    Ok(l) => {
                        titles.insert(id, l.title);
                    }
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Overview {
                requests,
                subscribers,
                mine,
                grants,
                titles,
                truncated: more_requests || more_subscribers || more_mine || more_grants,
            })
        })
        .await
}

fn listing_link(titles: &HashMap<String, String>, id: &str) -> Markup {
    html! {
        @match titles.get(id) {
            Some(t) => a href={ "/console/listings/" (id) } { (t) },
            None => span.mono { (id) " (no longer listed)" },
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "subscribed" => "You are subscribed: your access grant is live, and the listing's files can be downloaded.",
        "requested" => "Your request is sent: the provider approves or rejects it.",
        "approved" => "The request is approved: the subscriber has access now.",
        "rejected" => "The request is rejected; the subscriber is told why.",
        _ => return None,
    })
}

/// A reject form's reason error, for the request it belongs to.
type RejectError<'a> = Option<(&'a str, &'a FormErrors)>;

fn subscriptions_page(
    s: &Session,
    o: &Overview,
    note: Option<&str>,
    reject: RejectError<'_>,
) -> Markup {
    // An answer to a request no longer waiting (answered or withdrawn meanwhile) has no
    // form left to stand by: its message goes on top.
    let stale = reject
        .filter(|(id, _)| !o.requests.iter().any(|r| r.id == *id))
        .map(|(_, errors)| {
            FormErrors(
                errors
                    .0
                    .iter()
                    .map(|e| crate::domain::FieldError::new("", e.message.clone()))
                    .collect(),
            )
        })
        .unwrap_or_default();
    html! {
        h1 { "Subscriptions" }
        (notice(notice_text(note)))
        (error_summary(&stale))
        @if o.truncated { p { "Each list shows its first 2,000 entries, oldest first; the API lists them all." } }
        section aria-labelledby="requests-h" {
            h2 #requests-h { "Requests waiting for your answer" }
            @if o.requests.is_empty() {
                (empty("No request is waiting. Requests arrive here when an organization asks for an offer that needs your approval."))
            } @else {
                ul.requests {
                    @for r in &o.requests {
                        li.request {
                            h3 { (r.subscriber.name) " asks for " (listing_link(&o.titles, &r.listing_id)) }
                            dl.facts {
                                dt { "Offer" } dd.mono { (r.offer_id) }
                                dt { "Asked" } dd { (when(&r.created_at)) }
                                dt { "Answer by" } dd { (day(&r.request_expires_at)) }
                                @if !r.message.is_empty() { dt { "Their message" } dd { blockquote { (r.message) } } }
                            }
                            div.decide {
                                form.inline method="post" action={ "/console/subscriptions/" (r.id) "/approve" } {
                                    (csrf_field(&s.csrf))
                                    button.primary type="submit" { "Approve " span.visually-hidden { (r.subscriber.name) "'s request" } }
                                }
                                @let errors = reject.filter(|(id, _)| *id == r.id).map(|(_, e)| e.clone()).unwrap_or_default();
                                @let name = format!("reason_{}", r.id);
                                form.stack method="post" action={ "/console/subscriptions/" (r.id) "/reject" } novalidate {
                                    (csrf_field(&s.csrf))
                                    (error_summary(&errors))
                                    (Input::new(&name, "Reason for rejecting", "").hint("Required: the subscriber reads it").required().render(&errors))
                                    button.danger type="submit" { "Reject " span.visually-hidden { (r.subscriber.name) "'s request" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="subscribers-h" {
            h2 #subscribers-h { "Your subscribers" }
            @if o.subscribers.is_empty() {
                (empty("No active subscriber yet. Publish a listing with an offer; subscribers appear here once they subscribe or you approve their request."))
            } @else {
                table {
                    caption.visually-hidden { "Organizations subscribed to your listings" }
                    thead { tr { th scope="col" { "Subscriber" } th scope="col" { "Listing" } th scope="col" { "Status" } th scope="col" { "Since" } th scope="col" { "Term ends" } th scope="col" { "Renews" } } }
                    tbody {
                        @for r in &o.subscribers {
                            tr {
                                th scope="row" { (r.subscriber.name) }
                                td { (listing_link(&o.titles, &r.listing_id)) }
                                td { (badge(&r.status)) }
                                td { (day(&r.term_start)) }
                                td { (day(&r.term_end)) }
                                td { @if r.auto_renew { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="mine-h" {
            h2 #mine-h { "Your subscriptions" }
            @if o.mine.is_empty() {
                (empty("Your organization subscribes to nothing yet. Find data in the catalog and subscribe to an offer."))
                p { a href="/console/catalog" { "Open the catalog" } }
            } @else {
                table {
                    caption.visually-hidden { "Your organization's subscriptions" }
                    thead { tr { th scope="col" { "Listing" } th scope="col" { "Provider" } th scope="col" { "Status" } th scope="col" { "Term" } th scope="col" { "Renews" } } }
                    tbody {
                        @for r in &o.mine {
                            tr {
                                th scope="row" { (listing_link(&o.titles, &r.listing_id)) }
                                td { (r.provider.name) }
                                td { (badge(&r.status)) @if let Some(reason) = &r.decision_reason { br; small { "Reason: " (reason) } } }
                                td { (day(&r.term_start)) " – " (day(&r.term_end)) }
                                td { @if r.auto_renew { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="grants-h" {
            h2 #grants-h { "Your access grants" }
            @if o.grants.is_empty() {
                (empty("No access grant yet. A grant comes with each active subscription; then the listing's files can be downloaded from its page."))
            } @else {
                table {
                    caption.visually-hidden { "Your organization's access grants" }
                    thead { tr { th scope="col" { "Listing" } th scope="col" { "Valid from" } th scope="col" { "Valid until" } th scope="col" { "Live now" } } }
                    tbody {
                        @for g in &o.grants {
                            tr {
                                th scope="row" { (listing_link(&o.titles, &g.listing_id)) }
                                td { (when(&g.valid_from)) }
                                td { (when(&g.valid_until)) }
                                td {
                                    @if g.live { "yes — " a href={ "/console/listings/" (g.listing_id) } { "download files" } }
                                    @else if g.suspended_at.is_some() { "no: suspended until the overdue invoice is paid" }
                                    @else if g.revoked_at.is_some() { "no: revoked" }
                                    @else { "no" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `/console/subscriptions`.
pub async fn subscriptions_list(state: State, s: Session, query: web::Query<NoticeQuery>) -> Reply {
    let o = overview(&state, &s).await?;
    let body = subscriptions_page(&s, &o, query.notice.as_deref(), None);
    Ok(page(
        &s.viewer(),
        Section::Subscriptions,
        "Subscriptions",
        body,
    ))
}

/// `POST /console/subscriptions/{id}/{approve|reject}`: the provider's answer.
pub async fn decide(state: State, posted: Posted, path: web::Path<(String, String)>) -> Reply {
    let (id, verb) = path.into_inner();
    let s = posted.session;
    let reason = posted.form.text(&format!("reason_{id}"));
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(Error::NotFound("page").into()),
    };
    let (caller, clock, target) = (s.caller.clone(), state.clock.clone(), id.clone());
    let done = state
        .db(move |conn| {
            if approve {
                subscriptions::approve(conn, clock.as_ref(), &caller, &target)
            } else {
                let reason = Some(reason).filter(|r| !r.is_empty());
                subscriptions::reject(conn, clock.as_ref(), &caller, &target, Decision { reason })
            }
        })
        .await;
    let errors = match done {
        Ok(_) => {
            return Ok(see_other(if approve {
                "/console/subscriptions?notice=approved"
            } else {
                "/console/subscriptions?notice=rejected"
            }))
        }
        Err(Error::Validation(errors)) => FormErrors(
            errors
                .into_iter()
                .map(|e| {
                    let field = if e.field == "reason" {
                        format!("reason_{id}")
                    } else {
                        String::new()
                    };
                    crate::domain::FieldError::new(field, format!("Reason {}", e.message))
                })
                .collect(),
        ),
        Err(e @ Error::Conflict { .. }) => {
            let mut errors = FormErrors::default();
            errors.push(format!("reason_{id}"), explain(&e).2);
            errors
        }
        Err(e) => return Err(e.into()),
    };
    let o = overview(&state, &s).await?;
    let body = subscriptions_page(&s, &o, None, Some((&id, &errors)));
    Ok(page_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &s.viewer(),
        Section::Subscriptions,
        "Subscriptions",
        body,
    ))
}
