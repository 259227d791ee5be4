//! Money and billing rules as pure functions over plain data: no I/O, no database, no HTTP.

pub mod charges;
pub mod currency;
pub mod invoice;
pub mod money;
pub mod periods;
pub mod pricing;
pub mod rating;
