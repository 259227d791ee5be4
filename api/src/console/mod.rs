//! The console: server-rendered pages under `/console` for people (finance, providers,
//! subscribers), a second face over the same domain functions as the JSON API. Sessions in
//! HttpOnly cookies, a CSRF token on every form, a strict Content-Security-Policy, no
//! script, and nothing loaded from elsewhere: the stylesheet ships inside the binary.

mod catalog;
mod chart;
mod finance;
mod home;
mod page;
mod provider;
mod reports;
pub mod session;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

/// The console's only stylesheet, compiled into the binary.
const CSS: &str = include_str!("static/console.css");

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(CSS)
}

async fn not_found() -> HttpResponse {
    page::error_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no console page at this address. Check the link, or start again from the home page.",
    )
}

/// Registers every `/console` route (outside the API's table: these are pages, not the
/// JSON contract).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::{get, post, resource};
    cfg.service(
        web::scope("/console")
            .service(resource(["", "/"]).route(get().to(home::home)))
            .service(resource("/sign-in").route(post().to(home::sign_in)))
            .service(resource("/sign-out").route(post().to(home::sign_out)))
            .service(resource("/static/console.css").route(get().to(stylesheet)))
            .service(resource("/catalog").route(get().to(catalog::search)))
            .service(resource("/listings").route(get().to(provider::listings)))
            .service(resource("/listings/{id}").route(get().to(catalog::show)))
            .service(
                resource("/subscriptions")
                    .route(get().to(provider::subscriptions_list))
                    .route(post().to(catalog::subscribe)),
            )
            .service(resource("/subscriptions/{id}/{decision}").route(post().to(provider::decide)))
            .service(resource("/assets/{id}/download").route(post().to(catalog::download)))
            .service(resource("/invoices").route(get().to(finance::list)))
            .service(resource("/invoices/export").route(get().to(finance::export)))
            .service(resource("/invoices/{id}").route(get().to(finance::show)))
            .service(
                resource("/invoices/{id}/pay")
                    .route(get().to(finance::pay_form))
                    .route(post().to(finance::pay)),
            )
            .service(
                resource("/invoices/{id}/credit-note")
                    .route(get().to(finance::credit_form))
                    .route(post().to(finance::credit)),
            )
            .service(
                resource("/invoices/{id}/{action}")
                    .route(get().to(finance::confirm))
                    .route(post().to(finance::act)),
            )
            .service(
                resource("/billing-runs")
                    .route(get().to(finance::runs_list))
                    .route(post().to(finance::start_run)),
            )
            .service(resource("/reports").route(get().to(reports::show)))
            .default_service(web::to(not_found)),
    );
}
