//! Checkout tokens: HS256 JWTs (`{session_id, user_id, event_id, iat, exp}`, the origin's claims), minted at
//! admission and checked by the checkout side (`POST /api/v1/waitroom/checkout/verify`). A token stops being valid
//! when it expires or when its session is settled (a blacklist entry by its SHA-256, kept until it would expire).

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub session_id: String,
    pub user_id: String,
    pub event_id: String,
    pub iat: i64,
    pub exp: i64,
}

/// Mints and checks tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(HS256)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the checkout token is not valid: {0}")]
    Invalid(String),
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Tokens {
        Tokens { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) }
    }

    pub fn mint(&self, claims: &Claims) -> String {
        // HS256 over serializable claims cannot fail.
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    /// The claims of a token signed with this secret and not expired (no leeway).
    pub fn check(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// The blacklist key's part for a token: its SHA-256 in hex (the token itself is not stored).
pub fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_with_their_secret_until_they_expire() {
        let now = chrono::Utc::now().timestamp();
        let claims =
            Claims { session_id: "s".into(), user_id: "u".into(), event_id: "e".into(), iat: now, exp: now + 60 };
        let t = Tokens::new(b"one");
        let token = t.mint(&claims);
        assert_eq!(t.check(&token).unwrap(), claims);
        assert!(Tokens::new(b"two").check(&token).is_err(), "another secret");
        let old = t.mint(&Claims { exp: now - 5, ..claims });
        assert!(t.check(&old).is_err(), "expired");
        assert_eq!(fingerprint("abc").len(), 64);
    }
}
