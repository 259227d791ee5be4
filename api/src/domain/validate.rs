//! Parse, don't validate: request values become checked domain types here.

use super::FieldError;

/// A syntactically valid e-mail address, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Lower-cased, in Unicode's composed form (NFC), with the domain as IDNA spells it in
    /// ASCII (`bücher.de` as `xn--bcher-kva.de`): one mailbox written two ways is one
    /// address, so it gets one account.
    pub fn parse(raw: &str) -> Result<Email, String> {
        use unicode_normalization::UnicodeNormalization;
        let invalid = || "must be an e-mail address such as ada@example.com".to_string();
        let s: String = raw.trim().to_lowercase().nfc().collect();
        let s = match s.rsplit_once('@') {
            Some((local, domain)) => {
                let domain = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::URL)
                    .map_err(|_| invalid())?;
                format!("{local}@{domain}")
            }
            None => s,
        };
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
            Err(invalid())
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
    // Trimmed as JavaScript trims (and as the patterns of openapi.yaml read `\s`): white
    // space and U+FEFF, which Rust's `trim` keeps, so an invisible name is blank.
    let s = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
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

/// The field a serde error names (a missing field by its own path), with its message.
pub fn field_error(path: &str, error: &serde_json::Error) -> FieldError {
    // serde appends " at line L column C"; the field path says where already.
    let full = error.to_string();
    let message = full.split(" at line ").next().unwrap_or(&full).to_string();
    let parent = if path == "." { "" } else { path };
    // A missing field is reported at its parent; name the field itself.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let field = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        };
        return FieldError::new(field, "is required");
    }
    let field = if parent.is_empty() {
        "body".to_string()
    } else {
        parent.to_string()
    };
    FieldError::new(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mailbox_written_two_ways_is_one_address() {
        let email = |s: &str| Email::parse(s).unwrap().as_str().to_string();
        assert_eq!(
            email("jos\u{e9}@example.com"),
            email("jose\u{301}@example.com")
        );
        assert_eq!(email("a@B\u{fc}cher.de"), "a@xn--bcher-kva.de");
        assert_eq!(email("a@xn--bcher-kva.de"), "a@xn--bcher-kva.de");
        assert!(Email::parse("a@exa mple.com").is_err());
        assert!(Email::parse("a@exa<mple.com").is_err());
    }

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
        assert!(text("\u{feff}\u{3000}", 10).is_err());
        assert_eq!(text("\u{feff}ok\u{feff}", 10).unwrap(), "ok");
        assert!(text("abc\u{7}", 10).is_err());
        assert_eq!(text(" ok ", 10).unwrap(), "ok");
        assert!(text("toolong", 3).is_err());
    }
}

/// Rewrites JSON numbers written with a zero fraction (`5.0`, `1e3`) as integers, the way
/// JSON Schema counts them, so an integer field accepts them. Only magnitudes below 2^53
/// are rewritten: those a decimal text always converts to exactly; larger ones stay as they
/// are and are refused by the integer field. Returns whether anything changed.
pub fn integral_numbers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < EXACT => {
                *value = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| integral_numbers(v) | changed),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |changed, v| integral_numbers(v) | changed),
        _ => false,
    }
}

/// Whether a JSON text may hold a string with the NUL character (escaped as `\u0000`, the
/// only way JSON can carry it). Cheap; [`nul_field`] says where.
pub fn may_hold_nul(json: &[u8]) -> bool {
    json.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\\')
        .any(|(i, _)| json[i..].starts_with(b"\\u0000"))
}

/// Replaces the NUL character in every string and key of `value` by U+FFFD (the
/// replacement character); returns whether it found any. Neither database's text can hold
/// a NUL (PostgreSQL refuses it), so none gets that far: an id holding one then names
/// nothing (404), a filter matches nothing, and unknown fields stay ignored.
pub fn replace_nul(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\u{FFFD}");
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| replace_nul(v) | changed),
        Value::Object(fields) => {
            let mut changed = false;
            if fields.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(fields);
                for (k, v) in old {
                    fields.insert(k.replace('\0', "\u{FFFD}"), v);
                }
                changed = true;
            }
            fields
                .values_mut()
                .fold(changed, |changed, v| replace_nul(v) | changed)
        }
        _ => false,
    }
}

#[cfg(test)]
mod integral_number_tests {
    use super::integral_numbers;
    use serde_json::json;

    #[test]
    fn zero_fractions_become_integers_and_others_stay() {
        let mut v = json!({"a": 0.0, "b": [2.0, 1.5], "c": {"d": 1e3}, "e": 9.007199254740992e15});
        assert!(integral_numbers(&mut v));
        assert_eq!(v["a"], json!(0));
        assert_eq!(v["b"], json!([2, 1.5]));
        assert_eq!(v["c"]["d"], json!(1000));
        assert!(v["e"].is_f64(), "2^53 is not rewritten: {}", v["e"]);
        let mut plain = json!({"a": 1, "b": "2.0"});
        assert!(!integral_numbers(&mut plain));
    }

    #[test]
    fn nul_characters_are_replaced_everywhere() {
        use super::{may_hold_nul, replace_nul};
        let body = br#"{"events": [{"id": "a"}, {"id": "b\u0000"}], "k\u0000": 1}"#;
        assert!(may_hold_nul(body));
        let mut value: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert!(replace_nul(&mut value));
        assert_eq!(value["events"][1]["id"], "b\u{FFFD}");
        assert_eq!(value["k\u{FFFD}"], 1);
        // An escaped backslash followed by the letters is not a NUL.
        let mut literal: serde_json::Value =
            serde_json::from_slice(br#"{"id": "\\u0000"}"#).unwrap();
        assert!(!replace_nul(&mut literal));
        assert!(!may_hold_nul(br#"{"id": "plain"}"#));
    }
}
