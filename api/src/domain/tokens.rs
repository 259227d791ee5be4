//! Access tokens (JWT, HS256 pinned, `kid` for rotation) and opaque secrets (refresh tokens,
//! API keys) stored only as hashes.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use sha2::{Digest, Sha256};

use super::error::{Error, Result};
use super::ids::random_token;
use super::secrets::SigningKey;

pub const JWT_PURPOSE: &str = "jwt";
pub const ISSUER: &str = "marketplace";
pub const AUDIENCE: &str = "marketplace-api";

/// What an access token says: the user, and the organization it acts in.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub org: String,
    pub iat: i64,
    pub exp: i64,
}

/// The keys tokens are signed and verified with; unknown `kid`s are looked up again (another
/// instance may have rotated).
pub struct TokenKeys {
    current: SigningKey,
    verifying: RwLock<HashMap<String, Vec<u8>>>,
    pub access_ttl_secs: i64,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(current: SigningKey, all: Vec<SigningKey>, access_ttl_secs: i64) -> Self {
        let mut verifying: HashMap<String, Vec<u8>> =
            all.into_iter().map(|k| (k.id, k.secret)).collect();
        verifying.insert(current.id.clone(), current.secret.clone());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked in `verify` against the injectable clock, with no leeway.
        validation.validate_exp = false;
        TokenKeys {
            current,
            verifying: RwLock::new(verifying),
            access_ttl_secs,
            validation,
        }
    }

    pub fn issue(
        &self,
        user_id: &str,
        organization_id: &str,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id.into(),
            org: organization_id.into(),
            iat: now.timestamp(),
            exp: now.timestamp() + self.access_ttl_secs,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.id.clone());
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(&self.current.secret),
        )
        .map_err(Error::internal)
    }

    /// The `kid` of a token, if it names one this instance does not know yet.
    pub fn unknown_kid(&self, token: &str) -> Option<String> {
        let kid = decode_header(token).ok()?.kid?;
        let known = self
            .verifying
            .read()
            .map(|m| m.contains_key(&kid))
            .unwrap_or(false);
        (!known).then_some(kid)
    }

    pub fn learn(&self, keys: Vec<SigningKey>) {
        if let Ok(mut map) = self.verifying.write() {
            for k in keys {
                map.insert(k.id, k.secret);
            }
        }
    }

    /// Verifies signature (HS256 only), issuer, audience and expiry (against our clock).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims> {
        const INVALID: Error = Error::Unauthorized("the access token is invalid");
        let header = decode_header(token).map_err(|_| INVALID)?;
        if header.alg != Algorithm::HS256 {
            return Err(INVALID);
        }
        let kid = header.kid.ok_or(INVALID)?;
        let secret = self
            .verifying
            .read()
            .ok()
            .and_then(|m| m.get(&kid).cloned())
            .ok_or(INVALID)?;
        let data = decode::<Claims>(token, &DecodingKey::from_secret(&secret), &self.validation)
            .map_err(|_| INVALID)?;
        if data.claims.exp <= now.timestamp() {
            return Err(Error::Unauthorized("the access token has expired"));
        }
        Ok(data.claims)
    }
}

/// The prefix of API keys, so a leaked one is recognisable (secret scanners, logs).
pub const API_KEY_PREFIX: &str = "mkt_sk_";
/// The prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "mkt_rt_";

/// A new opaque secret with the given prefix: 43 base-62 characters (about 256 bits).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", random_token(43))
}

/// Secrets are high-entropy, so a fast hash is enough to store them safely.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
