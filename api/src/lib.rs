//! The marketplace server. Layers, top to bottom: `cli` (commands) → `server`, `config`
//! (wiring) → `routes`, `middleware` (the JSON face) and `console` (the HTML face) →
//! `domain` (use cases) → `billing`, `schema` (ground).

pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod server;
pub mod state;
