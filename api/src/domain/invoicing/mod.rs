//! Invoicing: billing runs build drafts from subscriptions and usage; platform finance
//! finalizes, voids, credits and records payments; reports say what providers earned.

pub mod grace;
pub mod invoices;
mod notices;
pub mod payments;
pub mod reports;
pub mod runs;
pub mod stripe;

/// Marketplace-wide defaults, overridable per organization (billing settings).
#[derive(Debug, Clone, Copy)]
pub struct BillingDefaults {
    /// Tax on customers' invoices, basis points.
    pub tax_rate_bps: i32,
    /// The marketplace's fee on providers' gross revenue, basis points.
    pub fee_bps: i32,
}

impl Default for BillingDefaults {
    fn default() -> Self {
        BillingDefaults {
            tax_rate_bps: 0,
            fee_bps: 300,
        }
    }
}
