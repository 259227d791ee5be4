//! Prefixed random identifiers (`org_…`, `usr_…`): opaque to clients, never sequential.

use rand::distributions::{Alphanumeric, DistString};

/// The length of the random part: 22 base-62 characters carry about 131 bits.
const RANDOM_LEN: usize = 22;

/// A new identifier such as `org_7Gq2…`, for the given type prefix (without the underscore).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_token(RANDOM_LEN))
}

/// A random base-62 string of `len` characters from the thread's cryptographic generator
/// (ChaCha, seeded and periodically reseeded from the operating system), which avoids a
/// system call per character.
pub fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_differ() {
        let a = new_id("org");
        let b = new_id("org");
        assert!(a.starts_with("org_"));
        assert_eq!(a.len(), 4 + RANDOM_LEN);
        assert_ne!(a, b);
    }
}
