//! The one error type of the domain: client mistakes are specific, everything else is opaque.

use diesel::result::Error as DieselError;

/// One invalid field of a request, with its path in the request (`events[1].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The body is not JSON at all.
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    /// The request parses but breaks a rule; each broken field is named.
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    /// A request that is wrong in a way no single field explains (bad header, bad query).
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// Also used for objects of other organizations, exactly as if they did not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// Same idempotency key, different request.
    #[error("{0}")]
    IdempotencyMismatch(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    /// The database is unreachable or overloaded; the client may retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, message)])
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            detail: detail.into(),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }
}

impl From<DieselError> for Error {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => Error::NotFound("object"),
            e if schema::is_retryable(&e) => Error::Unavailable(e.to_string()),
            DieselError::DatabaseError(_, ref info)
                if info.message().contains("connection")
                    || info.message().contains("terminating") =>
            {
                Error::Unavailable(e.to_string())
            }
            // Text the database cannot hold (a NUL character) that no check caught earlier.
            DieselError::DatabaseError(_, ref info)
                if info.message().contains("invalid byte sequence") =>
            {
                Error::BadRequest {
                    code: "invalid_text",
                    detail: "text must not contain the NUL character".into(),
                }
            }
            e => Error::Internal(e.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects field errors so a request reports every broken field at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    pub fn new() -> Self {
        Problems(Vec::new())
    }

    /// Keeps the value of a successful parse; records the failure under `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(message) => {
                self.0.push(FieldError::new(field, message));
                None
            }
        }
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// `Err(Validation)` if anything was recorded.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}
