//! The JSON face: every route of the API, in one table the spec test reads too.

pub mod accounts;
pub mod assets;
pub mod catalog;
pub mod commerce;
pub mod extract;
pub mod invoicing;
pub mod ops;
pub mod organization;
pub mod payments;
pub mod problem;
pub mod respond;
pub mod webhooks;

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Responder, Route};

/// One route: method, path pattern (OpenAPI's `{param}` syntax, which actix shares) and handler.
pub struct Entry {
    pub method: Method,
    pub path: &'static str,
    pub route: Route,
}

fn entry<F, Args>(method: Method, path: &'static str, handler: F) -> Entry
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    Entry {
        route: web::method(method.clone()).to(handler),
        method,
        path,
    }
}

/// Every route the server answers. `openapi.yaml` must describe exactly these.
pub fn table() -> Vec<Entry> {
    use Method as M;
    vec![
        entry(M::GET, "/healthz", ops::healthz),
        entry(M::GET, "/readyz", ops::readyz),
        entry(M::GET, "/metrics", ops::metrics),
        entry(M::GET, "/openapi.yaml", ops::openapi),
        entry(M::POST, "/v1/auth/signup", accounts::signup),
        entry(M::POST, "/v1/auth/token", accounts::token),
        entry(M::POST, "/v1/auth/refresh", accounts::refresh),
        entry(M::GET, "/v1/me", accounts::me),
        entry(
            M::POST,
            "/v1/organization/members",
            organization::add_member,
        ),
        entry(
            M::GET,
            "/v1/organization/members",
            organization::list_members,
        ),
        entry(
            M::DELETE,
            "/v1/organization/members/{id}",
            organization::remove_member,
        ),
        entry(M::POST, "/v1/api-keys", organization::create_api_key),
        entry(M::GET, "/v1/api-keys", organization::list_api_keys),
        entry(M::DELETE, "/v1/api-keys/{id}", organization::revoke_api_key),
        entry(M::POST, "/v1/listings", catalog::create_listing),
        entry(M::GET, "/v1/listings", catalog::list_listings),
        entry(M::GET, "/v1/listings/{id}", catalog::get_listing),
        entry(M::PATCH, "/v1/listings/{id}", catalog::update_listing),
        entry(
            M::POST,
            "/v1/listings/{id}/publish",
            catalog::publish_listing,
        ),
        entry(
            M::POST,
            "/v1/listings/{id}/archive",
            catalog::archive_listing,
        ),
        entry(M::POST, "/v1/listings/{id}/offers", catalog::create_offer),
        entry(M::GET, "/v1/listings/{id}/offers", catalog::list_offers),
        entry(M::POST, "/v1/offers/{id}/archive", catalog::archive_offer),
        entry(
            M::POST,
            "/v1/listings/{id}/datasets",
            catalog::create_dataset,
        ),
        entry(M::GET, "/v1/listings/{id}/datasets", catalog::list_datasets),
        entry(M::GET, "/v1/datasets/{id}", catalog::get_dataset),
        entry(
            M::POST,
            "/v1/datasets/{id}/revisions",
            catalog::create_revision,
        ),
        entry(
            M::GET,
            "/v1/datasets/{id}/revisions",
            catalog::list_revisions,
        ),
        entry(M::GET, "/v1/revisions/{id}", catalog::get_revision),
        entry(
            M::POST,
            "/v1/revisions/{id}/finalize",
            catalog::finalize_revision,
        ),
        entry(
            M::POST,
            "/v1/revisions/{id}/revoke",
            catalog::revoke_revision,
        ),
        entry(M::PUT, "/v1/revisions/{id}/assets/{name}", assets::upload),
        entry(M::GET, "/v1/assets/{id}/content", assets::content),
        entry(M::HEAD, "/v1/assets/{id}/content", assets::content),
        entry(
            M::POST,
            "/v1/assets/{id}/download-url",
            assets::download_url,
        ),
        entry(M::POST, "/v1/subscriptions", commerce::subscribe),
        entry(M::GET, "/v1/subscriptions", commerce::list_subscriptions),
        entry(M::GET, "/v1/subscriptions/{id}", commerce::get_subscription),
        entry(
            M::PATCH,
            "/v1/subscriptions/{id}",
            commerce::update_subscription,
        ),
        entry(M::POST, "/v1/subscriptions/{id}/approve", commerce::approve),
        entry(M::POST, "/v1/subscriptions/{id}/reject", commerce::reject),
        entry(M::POST, "/v1/subscriptions/{id}/cancel", commerce::cancel),
        entry(
            M::GET,
            "/v1/subscriptions/{id}/usage",
            commerce::usage_report,
        ),
        entry(M::GET, "/v1/grants", commerce::list_grants),
        entry(M::POST, "/v1/usage-events", commerce::record_usage),
        entry(M::POST, "/v1/billing-runs", invoicing::start_run),
        entry(M::GET, "/v1/billing-runs", invoicing::list_runs),
        entry(M::GET, "/v1/invoices", invoicing::list_invoices),
        entry(M::GET, "/v1/invoices/export", invoicing::export),
        entry(M::GET, "/v1/invoices/{id}", invoicing::get_invoice),
        entry(M::POST, "/v1/invoices/{id}/finalize", invoicing::finalize),
        entry(M::POST, "/v1/invoices/{id}/void", invoicing::void),
        entry(M::POST, "/v1/invoices/{id}/pay", invoicing::pay),
        entry(M::POST, "/v1/invoices/{id}/credit-notes", invoicing::credit),
        entry(M::GET, "/v1/reports/revenue", invoicing::revenue),
        entry(M::GET, "/v1/payout-statements", invoicing::payouts),
        entry(
            M::PATCH,
            "/v1/organizations/{id}/billing-settings",
            invoicing::billing_settings,
        ),
        entry(M::POST, "/v1/webhook-endpoints", webhooks::create_endpoint),
        entry(M::GET, "/v1/webhook-endpoints", webhooks::list_endpoints),
        entry(
            M::DELETE,
            "/v1/webhook-endpoints/{id}",
            webhooks::delete_endpoint,
        ),
        entry(M::POST, "/v1/webhooks/stripe", payments::stripe_webhook),
    ]
}

/// Registers the table, one resource per path so a wrong method gets 405, not 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut by_path: BTreeMap<&'static str, Vec<Route>> = BTreeMap::new();
    for e in table() {
        by_path.entry(e.path).or_default().push(e.route);
    }
    for (path, routes) in by_path {
        let mut resource = web::resource(path);
        for route in routes {
            resource = resource.route(route);
        }
        cfg.service(resource);
    }
    // The API reference is a directory of static files, outside the contract's table.
    cfg.route("/docs", web::get().to(ops::docs_index));
    cfg.route("/docs/{tail:.*}", web::get().to(ops::docs_file));
}
