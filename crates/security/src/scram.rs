//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses them for SASL: what is stored for a user (a
//! salt, an iteration count, StoredKey and ServerKey; never the password or anything it can be read back from), and
//! the server's side of the two-round exchange. A PLAIN or HTTP Basic password is checked against the same stored
//! credential by salting it the same way.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's bounds on the iteration count of a SCRAM credential.
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

/// A SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's code for it in Describe/AlterUserScramCredentials.
    pub fn kafka_code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_code() == code)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length, so creating one cannot fail.
        match self {
            Mechanism::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with the mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Mechanism::Sha512 => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// What is stored of a user's password for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub mechanism: Mechanism,
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// A credential for `password` with a fresh random salt.
    pub fn new(mechanism: Mechanism, password: &str, iterations: u32) -> ScramCredential {
        let mut salt = vec![0; 32];
        rand::thread_rng().fill_bytes(&mut salt);
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        ScramCredential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// A credential from a password salted by the client (AlterUserScramCredentials sends it so).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            mechanism,
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// Whether `password` is the one this credential was made from.
    pub fn matches(&self, password: &str) -> bool {
        let salted = self.mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        bool::from(self.mechanism.hash(&client_key).ct_eq(&self.stored_key))
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Why an exchange failed. The client is told only that authentication failed; this is for the server's log, and
/// never holds a password or proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the client's proof does not match (wrong password or unknown user)")]
    BadProof,
    #[error("SCRAM message out of order")]
    OutOfOrder,
}

/// The server's side of one SCRAM exchange: client-first → server-first, client-final → server-final.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
}

#[derive(Debug)]
enum State {
    Initial,
    /// After server-first: what the final message is checked against.
    First {
        user: String,
        /// `None` for an unknown user: the exchange goes on with a made-up salt and fails at the proof, so a client
        /// cannot tell unknown users from wrong passwords.
        credential: Option<ScramCredential>,
        nonce: String,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
    },
    Done,
}

/// RFC 5802's `saslname`: `=2C` is a comma and `=3D` an equals sign; any other `=` is malformed.
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> ScramServer {
        ScramServer { mechanism, state: State::Initial }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Takes client-first and answers server-first. `lookup` finds the user's credential for this mechanism.
    pub fn client_first(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Done;
        let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: a channel-binding flag, an optional authorization identity, then the bare message.
        let mut parts = message.splitn(3, ',');
        let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(f), Some(a), Some(b)) => (f, a, b),
            _ => return Err(ScramError::Malformed("no gs2 header")),
        };
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel-binding flag")),
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(unescape_name(v)?);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v);
            } else if attr.starts_with("m=") {
                return Err(ScramError::Malformed("mandatory extension not supported"));
            }
            // Other extensions (Kafka's tokenauth among them) are ignored: weir has no delegation tokens.
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Err(ScramError::Malformed("client-first needs n= and r="));
        };
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
            return Err(ScramError::Malformed("bad nonce"));
        }
        if let Some(a) = authzid.strip_prefix("a=") {
            if unescape_name(a)? != user {
                return Err(ScramError::Malformed("the authorization identity must be the user"));
            }
        } else if !authzid.is_empty() {
            return Err(ScramError::Malformed("bad authorization identity"));
        }
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (self.mechanism.hash(user.as_bytes())[..16].to_vec(), MIN_ITERATIONS),
        };
        // Letters and digits only, as Kafka's own server nonce.
        let server_nonce: String =
            rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(32).map(char::from).collect();
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        self.state = State::First {
            user,
            credential,
            nonce,
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
        };
        Ok(server_first.into_bytes())
    }

    /// Takes client-final; on a correct proof answers server-final and the authenticated user's name.
    pub fn client_final(&mut self, message: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let State::First { user, credential, nonce, gs2_header, client_first_bare, server_first } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
            return Err(ScramError::Malformed("client-final has no proof"));
        };
        let mut binding = None;
        let mut final_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                final_nonce = Some(v);
            }
        }
        let binding = binding.ok_or(ScramError::Malformed("client-final has no c="))?;
        if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding differs from the gs2 header"));
        }
        // Kafka accepts a final nonce that ends with the server's (its ScramSaslServer checks `endsWith`), and
        // librdkafka 2.0 relies on it: it sends its own nonce again in front of the combined one.
        if !final_nonce.is_some_and(|n| n.ends_with(nonce.as_str())) {
            return Err(ScramError::Malformed("nonce differs from the server's"));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let Some(credential) = credential else {
            return Err(ScramError::BadProof);
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let m = self.mechanism;
        let client_signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        if !bool::from(m.hash(&client_key).ct_eq(&credential.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_signature)).into_bytes(), user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, written from RFC 5802 independently of the server's code paths.
    fn client_final(m: Mechanism, password: &str, client_first_bare: &str, server_first: &str) -> (String, Vec<u8>) {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let expected_server_final = format!("v={}", B64.encode(m.hmac(&server_key, auth.as_bytes())));
        (format!("{without_proof},p={}", B64.encode(proof)), expected_server_final.into_bytes())
    }

    fn exchange(
        m: Mechanism,
        stored: Option<ScramCredential>,
        password: &str,
    ) -> Result<(Vec<u8>, String), ScramError> {
        let mut server = ScramServer::new(m);
        let bare = "n=al=2Cice,r=fyko+d2lbbFgONRv9qkxdawL";
        let first = server.client_first(format!("n,,{bare}").as_bytes(), |u| {
            assert_eq!(u, "al,ice");
            stored
        })?;
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"), "{first}");
        let (fin, expected) = client_final(m, password, bare, &first);
        let out = server.client_final(fin.as_bytes())?;
        assert_eq!(out.0, expected, "server-final proves the server knows the credential");
        Ok(out)
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_others() {
        for m in Mechanism::ALL {
            let stored = ScramCredential::new(m, "pencil", MIN_ITERATIONS);
            assert!(stored.matches("pencil") && !stored.matches("pen"));
            assert_eq!(exchange(m, Some(stored.clone()), "pencil").unwrap().1, "al,ice");
            assert_eq!(exchange(m, Some(stored), "wrong"), Err(ScramError::BadProof));
            assert_eq!(exchange(m, None, "pencil"), Err(ScramError::BadProof), "an unknown user fails at the proof");
        }
    }

    #[test]
    fn rfc7677_test_vector_salted_password() {
        // RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let c = ScramCredential::from_salted_password(
            Mechanism::Sha256,
            salt.clone(),
            4096,
            &Mechanism::Sha256.salted_password(b"pencil", &salt, 4096),
        );
        let mut server = ScramServer::new(Mechanism::Sha256);
        server.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |_| Some(c)).unwrap();
        // Force the server nonce of the RFC's example so its client-final verifies.
        if let State::First { nonce, server_first, .. } = &mut server.state {
            *nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
            *server_first = format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        }
        let fin = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                   p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (server_final, user) = server.client_final(fin.as_bytes()).unwrap();
        assert_eq!(user, "user");
        assert_eq!(server_final, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn malformed_and_out_of_order_messages_are_errors() {
        let mut s = ScramServer::new(Mechanism::Sha256);
        assert_eq!(s.client_final(b"c=biws,r=x,p=AAAA"), Err(ScramError::OutOfOrder));
        for bad in [&b""[..], b"n,", b"x,,n=a,r=b", b"p=tls-unique,,n=a,r=b", b"n,,n=a", b"n,,n=a=,r=b", b"\xff"] {
            let mut s = ScramServer::new(Mechanism::Sha256);
            assert!(s.client_first(bad, |_| None).is_err(), "{bad:?}");
        }
        let mut s = ScramServer::new(Mechanism::Sha256);
        s.client_first(b"n,,n=a,r=abc", |_| None).unwrap();
        assert!(matches!(s.client_final(b"c=biws,r=abc,p=AAAA"), Err(ScramError::Malformed(_))), "a wrong nonce");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_messages_never_panic(first in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                          fin in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut s = ScramServer::new(Mechanism::Sha512);
            let stored = ScramCredential::from_salted_password(Mechanism::Sha512, vec![1; 16], MIN_ITERATIONS, &[7; 64]);
            let _ = s.client_first(&first, |_| Some(stored));
            let _ = s.client_final(&fin);
        }
    }
}
