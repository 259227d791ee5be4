//! Benchmark baseline: actix-web answering every GET with a fixed JSON body, about the size
//! of `/v1/me`'s answer. `bench/me.sh` compares the marketplace against it.
//!
//!     cargo run --release -p api --example static_json_baseline -- 127.0.0.1:9000
//!
//! Worker threads: actix-web's default (one per CPU core), as the marketplace uses when
//! `MARKETPLACE_WORKERS` is unset.

use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpResponse, HttpServer};

/// Shaped and sized like a `/v1/me` response for an access token (about 250 bytes).
const BODY: &str = concat!(
    r#"{"user":{"id":"usr_01j9zq3k7m2x8v4b6n5c1d0e9f","email":"bench-user@example.com","#,
    r#""name":"Benchmark User"},"organization":{"id":"org_01j9zq3k7m2x8v4b6n5c1d0e9g","#,
    r#""name":"Benchmark Organization"},"role":"owner","credential":"access_token"}"#,
);

async fn answer() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(BODY)
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_string());
    actix_web::rt::System::new().block_on(async move {
        let server =
            HttpServer::new(|| App::new().default_service(web::get().to(answer))).bind(&listen)?;
        eprintln!(
            "static_json_baseline: listening on {listen}, body {} bytes",
            BODY.len()
        );
        server.run().await
    })
}
