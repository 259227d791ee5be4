//! The Stripe gateway: customers and PaymentIntents through the async-stripe client, each
//! request under an idempotency key and a timeout, failures sorted by what a retry can do.

use std::collections::HashMap;
use std::time::Duration;

use stripe::{
    Client, CreateCustomer, CreatePaymentIntent, Currency, Customer, CustomerId, ErrorType,
    PaymentIntent, PaymentIntentOffSession, PaymentMethodId, RequestStrategy, StripeError,
};

/// Longest wait for one answer from Stripe. A request that times out may still have been
/// carried out: the retry sends the same idempotency key, so Stripe answers it with the
/// first outcome instead of acting twice.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the Stripe API (Stripe's own, or a local mock in tests).
#[derive(Clone)]
pub struct Stripe {
    client: Client,
}

/// Why a request did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing is known to have happened, or the outcome was lost (network, timeout, a 5xx,
    /// rate limit, a concurrent request with the same key): try again with the same key.
    Retry(String),
    /// The card or bank refused the payment: the PaymentIntent exists and Stripe tells the
    /// rest by webhook (`payment_intent.payment_failed`). The same key gets the same answer.
    Declined(String),
    /// The request itself is wrong (bad key, unknown currency, parameters): a retry gets the
    /// same answer.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retry(m) | Failure::Declined(m) | Failure::Refused(m) => f.write_str(m),
        }
    }
}

/// What to charge: one collection attempt of one invoice.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub idempotency_key: &'a str,
    pub customer_id: &'a str,
    /// Charge this payment method off-session; without one the PaymentIntent waits for the
    /// customer to pay it (status `requires_payment_method`).
    pub payment_method: Option<&'a str>,
    /// ISO 4217 minor units of `currency` (cents; yen for JPY), as invoices keep them; sent
    /// in Stripe's units, which differ for a few currencies (MGA, ISK).
    pub amount: i64,
    /// ISO 4217, any case.
    pub currency: &'a str,
    pub description: &'a str,
    pub metadata: HashMap<String, String>,
}

/// An organization's Stripe customer as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerFacts {
    pub id: String,
    /// The customer's default payment method (`invoice_settings.default_payment_method`).
    pub default_payment_method: Option<String>,
}

impl Stripe {
    /// A client for the API at `api_base` (`https://api.stripe.com`, or a mock's URL).
    pub fn new(secret_key: &str, api_base: &str) -> Result<Stripe, String> {
        let base = api_base.trim().trim_end_matches('/');
        // `Client::from_url` panics on a URL it cannot parse: check it first.
        match reqwest::Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            _ => {
                return Err(format!(
                    "MARKETPLACE_STRIPE_API_BASE must be an http:// or https:// URL, got `{base}`"
                ))
            }
        }
        let client = Client::from_url(base, secret_key.trim()).with_app_info(
            "data-marketplace".into(),
            Some(env!("CARGO_PKG_VERSION").into()),
            None,
        );
        Ok(Stripe { client })
    }

    fn keyed(&self, key: &str) -> Client {
        self.client
            .clone()
            .with_strategy(RequestStrategy::Idempotent(key.to_string()))
    }

    /// Creates the customer for an organization, under an idempotency key of its own, so two
    /// workers racing (or a retry after a lost answer) get the same customer.
    pub async fn create_customer(
        &self,
        organization_id: &str,
        name: &str,
    ) -> Result<CustomerFacts, Failure> {
        let client = self.keyed(&format!("mkt-customer-{organization_id}"));
        let mut params = CreateCustomer::new();
        params.name = Some(name);
        params.metadata = Some(HashMap::from([(
            "organization_id".to_string(),
            organization_id.to_string(),
        )]));
        let customer = timed(Customer::create(&client, params)).await?;
        Ok(facts(customer))
    }

    /// Reads a stored customer again, for its current default payment method.
    pub async fn customer(&self, id: &str) -> Result<CustomerFacts, Failure> {
        let id: CustomerId = id
            .parse()
            .map_err(|_| Failure::Refused(format!("`{id}` is not a Stripe customer id")))?;
        let customer = timed(Customer::retrieve(&self.client, &id, &[])).await?;
        Ok(facts(customer))
    }

    /// Creates (and, with a payment method, confirms off-session) the PaymentIntent of one
    /// collection attempt.
    pub async fn create_payment_intent(
        &self,
        charge: &Charge<'_>,
    ) -> Result<PaymentIntent, Failure> {
        let currency: Currency = charge.currency.to_ascii_lowercase().parse().map_err(|_| {
            Failure::Refused(format!("Stripe does not take {} payments", charge.currency))
        })?;
        let customer: CustomerId = charge.customer_id.parse().map_err(|_| {
            Failure::Refused(format!(
                "`{}` is not a Stripe customer id",
                charge.customer_id
            ))
        })?;
        let amount = billing::currency::CurrencyCode::parse(&charge.currency.to_ascii_uppercase())
            .ok()
            .and_then(|c| c.to_stripe_amount(charge.amount))
            .ok_or_else(|| {
                Failure::Refused(format!(
                    "{} minor units of {} cannot be charged exactly in Stripe's units",
                    charge.amount, charge.currency
                ))
            })?;
        let mut params = CreatePaymentIntent::new(amount, currency);
        params.customer = Some(customer);
        params.description = Some(charge.description);
        params.metadata = Some(charge.metadata.clone());
        if let Some(pm) = charge.payment_method {
            let pm: PaymentMethodId = pm.parse().map_err(|_| {
                Failure::Refused(format!("`{pm}` is not a Stripe payment method id"))
            })?;
            params.payment_method = Some(pm);
            params.confirm = Some(true);
            params.off_session = Some(PaymentIntentOffSession::Exists(true));
        }
        let client = self.keyed(charge.idempotency_key);
        timed(PaymentIntent::create(&client, params)).await
    }
}

fn facts(c: Customer) -> CustomerFacts {
    CustomerFacts {
        default_payment_method: c
            .invoice_settings
            .and_then(|s| s.default_payment_method)
            .map(|pm| pm.id().to_string()),
        id: c.id.to_string(),
    }
}

async fn timed<T>(
    request: impl std::future::Future<Output = Result<T, StripeError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(e)),
        Err(_) => Err(Failure::Retry(format!(
            "no answer from Stripe within {} s",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

/// Sorts a client error by what a retry under the same key can do.
fn classify(e: StripeError) -> Failure {
    match e {
        StripeError::Stripe(r) => {
            let message = r
                .message
                .clone()
                .unwrap_or_else(|| format!("{} ({})", r.error_type, r.http_status));
            match (r.http_status, &r.error_type) {
                (402, _) | (_, ErrorType::Card) => Failure::Declined(message),
                (409 | 429, _) | (500..=599, _) => Failure::Retry(message),
                (_, ErrorType::Api | ErrorType::Connection | ErrorType::RateLimit) => {
                    Failure::Retry(message)
                }
                _ => Failure::Refused(format!("Stripe refused the request: {message}")),
            }
        }
        StripeError::ClientError(m) => Failure::Retry(format!("cannot reach Stripe: {m}")),
        StripeError::Timeout => Failure::Retry("timeout communicating with Stripe".into()),
        // An answer that does not parse will not parse better next time.
        other => Failure::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_api_base_is_refused_not_a_panic() {
        assert!(Stripe::new("sk_test_x", "not a url").is_err());
        assert!(Stripe::new("sk_test_x", "ftp://example.com").is_err());
        assert!(Stripe::new("sk_test_x", "http://127.0.0.1:9/").is_ok());
    }

    #[test]
    fn failures_are_sorted_by_what_a_retry_can_do() {
        let stripe = |status: u16, kind: ErrorType| {
            classify(StripeError::Stripe(stripe::RequestError {
                http_status: status,
                error_type: kind,
                message: Some("m".into()),
                ..Default::default()
            }))
        };
        assert_eq!(stripe(402, ErrorType::Card), Failure::Declined("m".into()));
        assert_eq!(stripe(500, ErrorType::Api), Failure::Retry("m".into()));
        assert_eq!(
            stripe(409, ErrorType::IdempotencyError),
            Failure::Retry("m".into())
        );
        assert_eq!(
            stripe(429, ErrorType::RateLimit),
            Failure::Retry("m".into())
        );
        assert!(matches!(
            stripe(400, ErrorType::InvalidRequest),
            Failure::Refused(_)
        ));
        assert!(matches!(
            stripe(401, ErrorType::Authentication),
            Failure::Refused(_)
        ));
        assert!(matches!(
            classify(StripeError::ClientError("reset".into())),
            Failure::Retry(_)
        ));
    }
}
