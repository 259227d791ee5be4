//! Parse, don't validate: request values become checked domain types here.

/// A syntactically valid e-mail address, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, String> {
        let s = raw.trim().to_lowercase();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                }
                None => false,
            };
        if valid {
            Ok(Email(s))
        } else {
            Err("must be an e-mail address such as ada@example.com".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password long enough to resist guessing; the upper bound keeps hashing bounded.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN: usize = 12;
    pub const MAX: usize = 256;

    pub fn parse(raw: &str) -> Result<Password, String> {
        let n = raw.chars().count();
        if n < Self::MIN {
            Err(format!("must be at least {} characters", Self::MIN))
        } else if n > Self::MAX {
            Err(format!("must be at most {} characters", Self::MAX))
        } else {
            Ok(Password(raw.to_string()))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Trimmed text of 1..=max characters with no control characters.
pub fn text(raw: &str, max: usize) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        Err("must not be empty".into())
    } else if s.chars().count() > max {
        Err(format!("must be at most {max} characters"))
    } else if s.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_and_text() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(257)).is_err());
        assert!(Password::parse("long enough password").is_ok());
        assert!(text("  ", 10).is_err());
        assert!(text("abc\u{7}", 10).is_err());
        assert_eq!(text(" ok ", 10).unwrap(), "ok");
        assert!(text("toolong", 3).is_err());
    }
}
