//! Commerce: subscriptions to offers, the access grants they create, and metered usage.

pub mod grants;
pub mod lifecycle;
pub mod subscriptions;
pub mod usage;
