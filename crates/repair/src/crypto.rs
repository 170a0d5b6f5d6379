//! Field-level encryption of a requester's personal data (email, name, surname) with AES-256-GCM (RustCrypto's
//! `aes-gcm`). The ticketing system encrypts them before the event is serialized, so the topic, the outbox and any
//! consumer without the key see only ciphertext; the services granted the key (`encryption_key`) decrypt them.
//!
//! A field becomes `enc:v1:<base64 of nonce ‖ ciphertext ‖ tag>`, still an Avro `string`, so the schema is the same
//! with or without encryption. The ticket id is the additional authenticated data: a ciphertext moved to another
//! ticket fails to decrypt instead of showing the wrong person.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

const PREFIX: &str = "enc:v1:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the encryption key must be 32 bytes in base64 (openssl rand -base64 32): {0}")]
    BadKey(String),
    #[error("a field cannot be decrypted with this key (wrong key, or not this ticket's)")]
    Undecryptable,
}

/// An AES-256-GCM key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct FieldKey(Aes256Gcm);

impl std::fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldKey(..)")
    }
}

impl FieldKey {
    /// A key from its base64 text (32 bytes).
    pub fn from_base64(text: &str) -> Result<FieldKey, CryptoError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|e| CryptoError::BadKey(e.to_string()))?;
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey(format!("{} bytes", bytes.len())));
        }
        Ok(FieldKey(Aes256Gcm::new_from_slice(&bytes).map_err(|e| CryptoError::BadKey(e.to_string()))?))
    }

    /// A new random key, as base64 (what `encryption_key` takes).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// `plain` encrypted for `ticket`.
    pub fn encrypt(&self, ticket: &uuid::Uuid, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: ticket.as_bytes() })
            // Only fails for messages beyond GCM's 64 GiB limit; fields are bounded by validation long before.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// A field as the event carries it, decrypted if it was encrypted (plain text passes through).
    pub fn decrypt(&self, ticket: &uuid::Uuid, field: &str) -> Result<String, CryptoError> {
        let Some(b64) = field.strip_prefix(PREFIX) else { return Ok(field.to_string()) };
        let bytes = STANDARD.decode(b64).map_err(|_| CryptoError::Undecryptable)?;
        if bytes.len() < 12 + 16 {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: ticket.as_bytes() })
            .map_err(|_| CryptoError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Undecryptable)
    }
}

/// Whether a field is encrypted.
pub fn is_encrypted(field: &str) -> bool {
    field.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_decrypt_only_with_the_key_and_for_their_ticket() {
        let key = FieldKey::from_base64(&FieldKey::generate()).unwrap();
        let other = FieldKey::from_base64(&FieldKey::generate()).unwrap();
        let (t1, t2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let sealed = key.encrypt(&t1, "ada@example.com");
        assert!(is_encrypted(&sealed) && !sealed.contains("ada"));
        assert_ne!(sealed, key.encrypt(&t1, "ada@example.com"), "a fresh nonce each time");
        assert_eq!(key.decrypt(&t1, &sealed).unwrap(), "ada@example.com");
        assert_eq!(key.decrypt(&t2, &sealed), Err(CryptoError::Undecryptable));
        assert_eq!(other.decrypt(&t1, &sealed), Err(CryptoError::Undecryptable));
        assert_eq!(key.decrypt(&t1, "plain").unwrap(), "plain");
        assert!(FieldKey::from_base64("c2hvcnQ=").is_err());
        assert!(!format!("{key:?}").contains(&FieldKey::generate()[..4]));
    }
}
