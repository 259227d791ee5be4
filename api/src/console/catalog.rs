//! The catalog for subscribers (search with filters), a listing's page (its offers and a
//! subscribe button for subscribers; datasets, revisions and assets for its provider and
//! for holders of a grant), subscribing, and downloading an asset through a signed URL.

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{html, Markup};
use serde::Deserialize;

use super::page::{
    alert, badge, csrf_field, day, empty, error_summary, explain, money, notice, page_status, q,
    sanitized, see_other, when, FormErrors, Input, Reply, Section,
};
use super::session::{Posted, Session};
use crate::domain::assets::{self, DownloadUrlRequest};
use crate::domain::auth::Capability;
use crate::domain::catalog::data::{self, DatasetView, RevisionView};
use crate::domain::catalog::listing::{self, CatalogParams, CatalogQuery, ListingView};
use crate::domain::catalog::offer::{self, OfferView};
use crate::domain::clock::db_time;
use crate::domain::commerce::grants;
use crate::domain::commerce::subscriptions::{self, NewSubscription};
use crate::domain::pagination::PageRequest;
use crate::domain::Error;
use crate::state::State;

type Id = web::Path<String>;

fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// `/console/catalog`: published listings the organization may see, searched and filtered.
pub async fn search(state: State, s: Session, params: web::Query<CatalogParams>) -> Reply {
    let params = params.into_inner();
    let parsed = CatalogQuery::parse(&CatalogParams {
        q: params.q.clone(),
        category: params.category.clone().filter(|v| !v.trim().is_empty()),
        tag: params.tag.clone().filter(|v| !v.trim().is_empty()),
        provider: params.provider.clone(),
        sort: params.sort.clone().filter(|v| !v.is_empty()),
        limit: Some("20".into()),
        cursor: params.cursor.clone(),
        mine: None,
    });
    let (errors, results) = match parsed {
        Ok(query) => {
            let reader = s.caller.organization_id.clone();
            let window = state.settings.catalog_relevance_window;
            let page = state
                .db(move |conn| listing::search(conn, Some(&reader), &query, window))
                .await?;
            (FormErrors::default(), Some(page))
        }
        Err(Error::Validation(errors)) => (FormErrors(errors), None),
        Err(e) => return Err(e.into()),
    };
    let sort = text(&params.sort);
    let searched = !text(&params.q).trim().is_empty();
    let body = html! {
        h1 { "Catalog" }
        p { "Find data products published on the marketplace, and subscribe to an offer." }
        (error_summary(&errors))
        form.filters role="search" method="get" action="/console/catalog" aria-label="Search the catalog" {
            (Input::new("q", "Search", text(&params.q)).kind("search").hint("Words from the title, summary, description or tags").render(&errors))
            (Input::new("category", "Category", text(&params.category)).render(&errors))
            (Input::new("tag", "Tag", text(&params.tag)).render(&errors))
            div.field.has-error[errors.get("sort").is_some()] {
                label for="f-sort" { "Sort by" }
                @if let Some(e) = errors.get("sort") { p.field-error id="f-sort-error" { span.visually-hidden { "Error: " } (e) } }
                select #f-sort name="sort" aria-describedby=[errors.get("sort").map(|_| "f-sort-error")] {
                    @for (value, label) in [("", "Best first"), ("relevance", "Relevance"), ("newest", "Newest"), ("title", "Title")] {
                        option value=(value) selected[sort == value] { (label) }
                    }
                }
            }
            div.actions {
                button.primary type="submit" { "Search" }
                a href="/console/catalog" { "Clear" }
            }
        }
        @if let Some(results) = &results {
            section aria-labelledby="results-h" {
                h2 #results-h { "Listings" }
                @if results.data.is_empty() {
                    @if searched { (empty("No listing matches. Try fewer or other words, or clear the filters.")) }
                    @else { (empty("The catalog is empty for now. Come back once providers have published listings.")) }
                } @else {
                    ul.results {
                        @for l in &results.data {
                            li {
                                h3 { a href={ "/console/listings/" (l.id) } { (l.title) } }
                                p.meta { "by " (l.provider.name) }
                                p { (l.summary) }
                                (labels(l))
                            }
                        }
                    }
                    @if let Some(next) = &results.next_cursor {
                        p { a href={ "/console/catalog?q=" (q(text(&params.q))) "&category=" (q(text(&params.category))) "&tag=" (q(text(&params.tag))) "&provider=" (q(text(&params.provider))) "&sort=" (q(sort)) "&cursor=" (q(next)) } { "More listings" } }
                    }
                }
            }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(page_status(
        status,
        &s.viewer(),
        Section::Catalog,
        "Catalog",
        body,
    ))
}

fn labels(l: &ListingView) -> Markup {
    html! {
        @if !l.categories.is_empty() || !l.tags.is_empty() {
            ul.labels aria-label="Categories and tags" {
                @for c in &l.categories { li { "Category: " (c) } }
                @for t in &l.tags { li { "Tag: " (t) } }
            }
        }
    }
}

fn price(o: &OfferView) -> String {
    let per = match o.billing_interval.as_str() {
        "monthly" => "per month",
        "one_time" => "for the whole term",
        other => other,
    };
    format!("{} {per}", money(&o.recurring_amount))
}

struct ListingData {
    listing: ListingView,
    offers: Vec<OfferView>,
    datasets: Vec<(DatasetView, Vec<RevisionView>)>,
    has_live_grant: bool,
    /// Finance users read invoices, not data (DESIGN section 3).
    may_read_data: bool,
}

async fn load(state: &State, s: &Session, id: String) -> Result<ListingData, Error> {
    let reader = s.caller.organization_id.clone();
    let caller = s.caller.clone();
    let clock = state.clock.clone();
    state
        .db(move |conn| {
            let all = PageRequest::parse(Some(200), None)?;
            let listing = listing::get(conn, Some(&reader), &id)?;
            let offers = offer::list(conn, Some(&reader), &id, &all)?.data;
            let mut datasets = Vec::new();
            for d in data::list_datasets(conn, Some(&reader), &id, &all)?.data {
                let revisions = data::list_revisions(conn, Some(&reader), &d.id, &all)?.data;
                datasets.push((d, revisions));
            }
            // Asked of the grants directly: an organization may hold more than a page of them.
            let now = db_time(clock.now());
            let may_read_data = caller.can(Capability::ReadData);
            let has_live_grant = may_read_data
                && grants::live_grant(conn, &caller.organization_id, &id, now)?.is_some();
            Ok(ListingData {
                listing,
                offers,
                datasets,
                has_live_grant,
                may_read_data,
            })
        })
        .await
}

/// A problem with subscribing to one offer, shown next to its form.
struct OfferError {
    offer_id: String,
    message: String,
    text: String,
}

fn offer_form_errors(error: Option<&OfferError>, field: &str) -> FormErrors {
    let mut errors = FormErrors::default();
    if let Some(e) = error {
        errors.push(field, e.message.clone());
    }
    errors
}

fn listing_page(
    s: &Session,
    d: &ListingData,
    note: Option<&str>,
    offer_error: Option<&OfferError>,
) -> Markup {
    let l = &d.listing;
    let provider = l.provider.id == s.caller.organization_id;
    let may_subscribe =
        !provider && !s.caller.role.is_platform() && s.caller.can(Capability::Write);
    html! {
        p.crumbs {
            @if provider { a href="/console/listings" { "My listings" } }
            @else { a href="/console/catalog" { "Catalog" } }
        }
        h1 { (l.title) }
        (notice(note))
        p.meta { "by " (l.provider.name) " · " (badge(&l.state)) " · " (l.visibility) }
        p.lead { (l.summary) }
        (labels(l))
        section aria-labelledby="about-h" {
            h2 #about-h { "About this data" }
            @if l.description.trim().is_empty() {
                (empty("The provider has not written a description."))
            } @else {
                div.markdown { (sanitized(&l.description_html)) }
            }
        }
        section aria-labelledby="offers-h" {
            h2 #offers-h { "Offers" }
            @if d.offers.is_empty() {
                @if provider { (empty("No offer yet. Create one through the API (POST /v1/listings/{id}/offers): a listing needs an active offer to be published.")) }
                @else { (empty("No offer is open to your organization on this listing.")) }
            } @else {
                ul.offers {
                    @for o in &d.offers {
                        li.offer {
                            h3 { (o.name) " " @if o.state != "active" { (badge(&o.state)) } }
                            dl.facts {
                                dt { "Price" } dd { (price(o)) }
                                dt { "Term" } dd { (o.term_months) " month(s)" }
                                @if o.trial_days > 0 { dt { "Free trial" } dd { (o.trial_days) " day(s)" } }
                                @if !o.usage_prices.is_empty() {
                                    dt { "Usage prices" }
                                    dd { @for (n, u) in o.usage_prices.iter().enumerate() { @if n > 0 { ", " } (u.metric) } " (see the API for tiers)" }
                                }
                                dt { "Approval" } dd { @if o.requires_approval { "The provider approves each request" } @else { "Immediate access" } }
                                dt { "Renewal" } dd { @if o.auto_renew_default { "Renews automatically unless cancelled" } @else { "Ends with the term" } }
                            }
                            @if may_subscribe && o.state == "active" {
                                @let error = offer_error.filter(|e| e.offer_id == o.id);
                                @let message_name = format!("message_{}", o.id);
                                @let errors = offer_form_errors(error, &message_name);
                                form.stack method="post" action="/console/subscriptions" novalidate {
                                    (csrf_field(&s.csrf))
                                    input type="hidden" name="offer_id" value=(o.id);
                                    input type="hidden" name="listing_id" value=(l.id);
                                    (Input::new(&message_name, if o.requires_approval { "Message to the provider (optional)" } else { "Note (optional)" }, error.map(|e| e.text.as_str()).unwrap_or("")).kind("textarea").render(&errors))
                                    button.primary type="submit" {
                                        @if o.requires_approval { "Request access to " (o.name) } @else { "Subscribe to " (o.name) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="data-h" {
            h2 #data-h { "Datasets and files" }
            @if !d.may_read_data { p { "Files are read by your organization's admins and members; your role is its invoices." } }
            @else if !provider {
                @if d.has_live_grant { p { "Your organization holds a live access grant: download any file below." } }
                @else { p { "Downloading needs a live access grant: subscribe to an offer above." } }
            }
            @if d.datasets.is_empty() {
                (empty(if provider { "No dataset yet. Add one through the API (POST /v1/listings/{id}/datasets), then a revision with files." } else { "The provider has not published any dataset yet." }))
            }
            @for (ds, revisions) in &d.datasets {
                section.dataset aria-label={ "Dataset " (ds.name) } {
                    h3 { (ds.name) }
                    @if !ds.description.is_empty() { p { (ds.description) } }
                    @if revisions.is_empty() {
                        (empty("No revision of this dataset is available yet."))
                    }
                    @for r in revisions {
                        div.revision {
                            h4 { "Revision " span.mono { (r.id) } " " (badge(&r.state)) }
                            p.meta {
                                "Created " (when(&r.created_at))
                                @if r.finalized_at.is_some() { " · finalized " (day(&r.finalized_at)) }
                                @if let Some(reason) = &r.revoke_reason { " · revoked: " (reason) }
                            }
                            @if !r.comment.is_empty() { p { (r.comment) } }
                            @if r.assets.is_empty() {
                                (empty("This revision holds no file."))
                            } @else {
                                table {
                                    caption.visually-hidden { "Files of revision " (r.id) }
                                    thead { tr { th scope="col" { "File" } th scope="col" { "Type" } th.num scope="col" { "Size (bytes)" } th scope="col" { "SHA-256" } th scope="col" { "Download" } } }
                                    tbody {
                                        @for a in &r.assets {
                                            tr {
                                                th scope="row" { (a.name) }
                                                td { (a.media_type) }
                                                td.num { (a.size) }
                                                td.mono { (a.sha256.get(..12).unwrap_or(&a.sha256)) "…" }
                                                td {
                                                    @if r.state == "revoked" { "Withdrawn" }
                                                    @else if !d.may_read_data { "Admins and members" }
                                                    // A form, not a link: a read is metered, and a GET could be made
                                                    // by any image in a page.
                                                    @else {
                                                        form.inline method="post" action={ "/console/assets/" (a.id) "/download" } {
                                                            (csrf_field(&s.csrf))
                                                            button type="submit" { "Download " span.visually-hidden { (a.name) } }
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

/// `/console/listings/{id}`: 404 for a listing the organization may not see.
pub async fn show(state: State, s: Session, id: Id, query: web::Query<NoticeQuery>) -> Reply {
    let d = load(&state, &s, id.into_inner()).await?;
    let note = match query.notice.as_deref() {
        Some("archived") => Some("The listing is archived."),
        _ => None,
    };
    let body = listing_page(&s, &d, note, None);
    Ok(page_status(
        StatusCode::OK,
        &s.viewer(),
        if d.listing.provider.id == s.caller.organization_id {
            Section::Listings
        } else {
            Section::Catalog
        },
        &d.listing.title,
        body,
    ))
}

/// `POST /console/subscriptions`: subscribe to an offer (or ask the provider to approve).
pub async fn subscribe(state: State, posted: Posted) -> Reply {
    let s = posted.session;
    let offer_id = posted.form.text("offer_id");
    let listing_id = posted.form.text("listing_id");
    // The form's text area may hold line breaks; a message is one paragraph (no control
    // characters), so they become spaces.
    let message = posted
        .form
        .text(&format!("message_{offer_id}"))
        .split(['\r', '\n'])
        .filter(|part| !part.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let (caller, clock) = (s.caller.clone(), state.clock.clone());
    let input = NewSubscription {
        offer_id: offer_id.clone(),
        auto_renew: None,
        message: Some(message.clone()),
    };
    let done = state
        .db(move |conn| subscriptions::create(conn, clock.as_ref(), &caller, input))
        .await;
    let error = match done {
        Ok(sub) => {
            let notice = if sub.status == "active" {
                "subscribed"
            } else {
                "requested"
            };
            return Ok(see_other(&format!(
                "/console/subscriptions?notice={notice}"
            )));
        }
        Err(Error::Validation(errors)) => errors
            .into_iter()
            .map(|e| e.message)
            .collect::<Vec<_>>()
            .join("; "),
        Err(e @ Error::Conflict { .. }) => explain(&e).2,
        Err(e) => return Err(e.into()),
    };
    let d = load(&state, &s, listing_id).await?;
    let offer_error = OfferError {
        offer_id,
        message: error,
        text: message,
    };
    // An offer archived since the page was shown is no longer on it: the message goes on top.
    let summary = if d.offers.iter().any(|o| o.id == offer_error.offer_id) {
        "The subscription was not created; see the message next to the offer.".to_string()
    } else {
        format!("The subscription was not created: {}", offer_error.message)
    };
    let body = html! {
        (alert(Some(&summary)))
        (listing_page(&s, &d, None, Some(&offer_error)))
    };
    Ok(page_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &s.viewer(),
        Section::Catalog,
        &d.listing.title,
        body,
    ))
}

/// `POST /console/assets/{id}/download`: a short-lived signed URL for the asset (the API's
/// read rule, metered to the grant), then the browser follows it. A POST with the form's
/// token, so no page (an image in a listing's description) can read data for a visitor.
pub async fn download(state: State, posted: Posted, id: Id) -> Reply {
    let s = posted.session;
    let (caller, clock, base) = (
        s.caller.clone(),
        state.clock.clone(),
        state.public_url.clone(),
    );
    let url = state
        .db(move |conn| {
            assets::download_url(
                conn,
                clock.as_ref(),
                &caller,
                &id,
                DownloadUrlRequest {
                    expires_in: Some(60),
                },
                &base,
            )
        })
        .await?;
    // Its path and query only: the same server answers, and a form's redirect to another
    // origin (the browser's differing from the configured public URL) would break the
    // policy's `form-action 'self'`.
    let same_origin = reqwest::Url::parse(&url.url)
        .map(|u| format!("{}?{}", u.path(), u.query().unwrap_or_default()))
        .unwrap_or(url.url);
    Ok(see_other(&same_origin))
}
