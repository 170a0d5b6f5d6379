//! TLS for weir's listeners: the settings a listener is configured with (certificate, key and,
//! for mutual TLS, the CA that signs client certificates), the rustls server configuration the
//! Kafka and HTTP listeners wrap accepted TCP streams with, the Kafka-style principal of a
//! verified client certificate, and the throwaway certificates `weir certs dev` writes.
//!
//! Everything here is synchronous and independent of tokio: the listeners hand the returned
//! `Arc<ServerConfig>` to tokio-rustls themselves.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use x509_parser::der_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::x509::AttributeTypeAndValue;

/// Where a listener's certificate, key and (for mTLS) the CA that signs client certificates are.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the server certificate, followed by any intermediates.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub key: PathBuf,
    /// PEM file with the CA certificate(s) client certificates must chain to; when set, every
    /// client must present a certificate (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why TLS settings could not be turned into a server configuration, or dev certificates not be
/// written. Every message names the file at fault, since that is what an operator has to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: no PEM certificate (-----BEGIN CERTIFICATE-----) found", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{}: no PEM private key found (PKCS#8, PKCS#1 or SEC1; encrypted keys are not supported)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{}: malformed PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("the private key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused something else: an unusable key, an unparsable certificate, an invalid CA.
    /// The message names the file.
    #[error("{0}")]
    Rustls(String),
    #[error("generating dev certificates: {0}")]
    Generate(String),
}

/// The crypto provider every weir TLS config uses. Passed explicitly rather than installed as the
/// process default, so nothing depends on which other crate happened to install one first (and a
/// second provider pulled in by a dependency cannot make rustls panic over an ambiguous default).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config: the certificate chain and key from PEM files; with `client_ca`, client
/// certificates are required and verified against it (mTLS). ALPN left empty. Uses the ring
/// provider explicitly (rustls::crypto::ring::default_provider()), never the process default.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = read_certs(&settings.cert)?;
    let key = read_key(&settings.key)?;

    // Loaded and matched here rather than through `with_single_cert`, so that each failure can be
    // blamed on the right file.
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Rustls(format!("{}: unusable private key: {e}", settings.key.display())))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // rustls cannot always derive the public key from a private key; that is not a mismatch.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch { cert: settings.cert.clone(), key: settings.key.clone() })
        }
        Err(e) => return Err(TlsError::Rustls(format!("{}: unusable certificate: {e}", settings.cert.display()))),
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(format!("TLS protocol versions: {e}")))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_path)? {
                roots
                    .add(ca)
                    .map_err(|e| TlsError::Rustls(format!("{}: invalid CA certificate: {e}", ca_path.display())))?;
            }
            // The default builder rejects clients without a certificate, which is the point of
            // configuring a client CA.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(format!("{}: client CA unusable: {e}", ca_path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));

    tracing::debug!(
        cert = %settings.cert.display(),
        client_ca = ?settings.client_ca.as_ref().map(|p| p.display().to_string()),
        "TLS server configuration loaded"
    );
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file, in order (leaf first for a chain); at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The first private key in a PEM file. The bytes are never logged nor put in an error.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::NoKey { path: path.to_path_buf() }),
        Err(e) => Err(TlsError::BadPem { path: path.to_path_buf(), reason: e.to_string() }),
    }
}

/// The principal a verified client certificate stands for, as Kafka's default principal builder
/// names it: "User:" + the subject's distinguished name in RFC 2253 form (most specific RDN
/// first, "CN=alice,OU=eng,O=weir", no spaces after commas). None if the DER does not parse.
///
/// Kafka takes the name from Java's `X500Principal.getName()`, so this follows that
/// implementation rather than only the RFC, for ACLs written for Kafka to keep matching: the
/// RFC 2253 keywords (CN, C, L, ST, O, OU, STREET, DC, UID) are used by name, every other
/// attribute as its dotted OID with the value as `#` and the lowercase hex of its DER encoding;
/// `,=+<>#;"\` are escaped with a backslash, as are leading and trailing spaces.
pub fn principal_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    // The DER lists RDNs from the root of the naming tree down; RFC 2253 wants them reversed.
    let rdns: Vec<_> = cert.subject().iter_rdn().collect();
    let mut name = String::from("User:");
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            name.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                name.push('+');
            }
            push_rfc2253_attribute(&mut name, attr)?;
        }
    }
    Some(name)
}

/// The RFC 2253 keywords Java's `X500Principal.getName()` uses, by OID.
fn rfc2253_keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn push_rfc2253_attribute(out: &mut String, attr: &AttributeTypeAndValue<'_>) -> Option<()> {
    let oid = attr.attr_type().to_id_string();
    let value = attr.attr_value();
    match rfc2253_keyword(&oid).zip(directory_string(value)) {
        Some((keyword, text)) => {
            out.push_str(keyword);
            out.push('=');
            push_escaped(out, &text);
        }
        None => {
            // RFC 2253 §2.4: a value without a string form (or of an attribute named by OID)
            // is `#` followed by the hex of its BER/DER encoding.
            out.push_str(&oid);
            out.push_str("=#");
            for byte in value.to_der_vec().ok()? {
                let _ = write!(out, "{byte:02x}");
            }
        }
    }
    Some(())
}

/// The text of a value of one of the string types Java renders as text in RFC 2253 names;
/// None for any other type, or for bytes that do not decode, which are then shown in hex.
fn directory_string(value: &Any<'_>) -> Option<String> {
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::T61String | Tag::GeneralString => {
            std::str::from_utf8(value.data).ok().map(str::to_owned)
        }
        Tag::BmpString => {
            let pairs = value.data.chunks_exact(2);
            if !pairs.remainder().is_empty() {
                return None;
            }
            let units = pairs.map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        _ => None,
    }
}

/// Escapes an attribute value as Java's `AVA.toRFC2253String` does.
fn push_escaped(out: &mut String, value: &str) {
    let mut escaped: Vec<char> = Vec::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\0' => escaped.extend(['\\', '0', '0']),
            _ => escaped.push(c),
        }
    }
    let is_blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().position(|c| !is_blank(c)).unwrap_or(escaped.len());
    let trail = escaped.iter().rposition(|c| !is_blank(c));
    for (i, c) in escaped.iter().enumerate() {
        if i < lead || trail.is_none_or(|t| i > t) {
            out.push('\\');
        }
        out.push(*c);
    }
}

/// What `weir certs dev` writes.
#[derive(Debug)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// How long dev certificates are valid.
const DEV_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Dev certificates start a little in the past, so a peer whose clock is slightly behind (a
/// container, a VM just resumed) does not reject them as not yet valid.
const DEV_BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Writes into `dir` (created if missing) a self-signed CA (ca.pem, ca-key.pem), a server
/// certificate signed by it for `hosts` (DNS names and/or IP addresses, e.g. ["localhost",
/// "127.0.0.1"]) as server.pem/server-key.pem, and a client certificate with subject
/// CN=`client_name` (O=weir) as client.pem/client-key.pem, all PEM, valid for 365 days. Key
/// files are written with mode 0600. Existing files of those names are replaced.
pub fn dev_certs(dir: &Path, hosts: &[String], client_name: &str) -> Result<DevCerts, TlsError> {
    let now = SystemTime::now();
    dev_certs_valid(dir, hosts, client_name, now.checked_sub(DEV_BACKDATE).unwrap_or(now), now + DEV_VALIDITY)
}

/// [`dev_certs`] with a chosen validity period for all three certificates: tests use it to
/// present an expired certificate and check that the handshake fails with a logged reason.
pub fn dev_certs_valid(
    dir: &Path,
    hosts: &[String],
    client_name: &str,
    valid_from: SystemTime,
    valid_until: SystemTime,
) -> Result<DevCerts, TlsError> {
    if hosts.is_empty() {
        return Err(TlsError::Generate("the server certificate needs at least one host name or IP address".into()));
    }
    let gen_err = |what: &str, e: rcgen::Error| TlsError::Generate(format!("{what}: {e}"));

    // rcgen takes `time` dates; building them from the Unix epoch plus std durations avoids a
    // direct dependency on the `time` crate.
    let since_epoch = |at: SystemTime| {
        at.duration_since(UNIX_EPOCH).map_err(|_| TlsError::Generate("a validity date before 1970".into()))
    };
    let not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(valid_from)?;
    let not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(valid_until)?;
    let dn = |entries: &[(DnType, &str)]| {
        let mut dn = DistinguishedName::new();
        // Pushed from the least specific RDN on, so that the RFC 2253 form (reversed) reads
        // "CN=...,O=weir".
        for (ty, value) in entries {
            dn.push(ty.clone(), *value);
        }
        dn
    };

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn(&[(DnType::OrganizationName, "weir"), (DnType::CommonName, "weir dev CA")]);
    // It signs leaf certificates only.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(|e| gen_err("CA key", e))?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| gen_err("CA certificate", e))?;

    let mut server_params =
        CertificateParams::new(hosts.to_vec()).map_err(|e| gen_err(&format!("server certificate for {hosts:?}"), e))?;
    server_params.distinguished_name = dn(&[(DnType::OrganizationName, "weir"), (DnType::CommonName, &hosts[0])]);
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.not_before = not_before;
    server_params.not_after = not_after;
    let server_key = KeyPair::generate().map_err(|e| gen_err("server key", e))?;
    let server_cert =
        server_params.signed_by(&server_key, &ca_cert, &ca_key).map_err(|e| gen_err("server certificate", e))?;

    let mut client_params = CertificateParams::default();
    client_params.distinguished_name = dn(&[(DnType::OrganizationName, "weir"), (DnType::CommonName, client_name)]);
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.use_authority_key_identifier_extension = true;
    client_params.not_before = not_before;
    client_params.not_after = not_after;
    let client_key = KeyPair::generate().map_err(|e| gen_err("client key", e))?;
    let client_cert = client_params
        .signed_by(&client_key, &ca_cert, &ca_key)
        .map_err(|e| gen_err(&format!("client certificate for {client_name:?}"), e))?;

    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    let out = DevCerts {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    };
    write_public(&out.ca_cert, &ca_cert.pem())?;
    write_secret(&dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
    write_public(&out.server_cert, &server_cert.pem())?;
    write_secret(&out.server_key, &server_key.serialize_pem())?;
    write_public(&out.client_cert, &client_cert.pem())?;
    write_secret(&out.client_key, &client_key.serialize_pem())?;
    tracing::info!(dir = %dir.display(), ?hosts, client = client_name, "wrote dev TLS certificates");
    Ok(out)
}

fn write_public(path: &Path, contents: &str) -> Result<(), TlsError> {
    std::fs::write(path, contents).map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
}

/// Writes a private key readable by its owner only. The mode is set before the key is written,
/// also when the file already existed with a wider one, so the key is never exposed.
fn write_secret(path: &Path, contents: &str) -> Result<(), TlsError> {
    let write = || -> io::Result<()> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        // `mode` only applies to a file being created.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, ServerConnection};

    fn dev(dir: &Path) -> DevCerts {
        dev_certs(dir, &["localhost".to_string(), "127.0.0.1".to_string()], "alice").expect("dev certs")
    }

    fn settings(certs: &DevCerts, mtls: bool) -> TlsSettings {
        TlsSettings {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: mtls.then(|| certs.ca_cert.clone()),
        }
    }

    fn client_config(certs: &DevCerts, present_cert: bool) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&certs.ca_cert).unwrap() {
            roots.add(ca).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if present_cert {
            builder
                .with_client_auth_cert(read_certs(&certs.client_cert).unwrap(), read_key(&certs.client_key).unwrap())
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }

    /// Moves every pending TLS record from one side to the other, as a socket would; whether
    /// anything was in flight.
    fn transfer<A: rustls::SideData, B: rustls::SideData>(
        from: &mut rustls::ConnectionCommon<A>,
        to: &mut rustls::ConnectionCommon<B>,
    ) -> Result<bool, rustls::Error> {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rest = buf.as_slice();
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(!buf.is_empty())
    }

    /// Drives a handshake entirely in memory until neither side is handshaking and nothing is
    /// left in flight; the first error either side raises ends it.
    fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), rustls::Error> {
        for _ in 0..20 {
            let sent = transfer(&mut **client, &mut **server)?;
            let answered = transfer(&mut **server, &mut **client)?;
            if !sent && !answered && !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn dev_certs_are_accepted_by_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(&dir.path().join("nested/certs"));
        for path in [&certs.ca_cert, &certs.server_cert, &certs.server_key, &certs.client_cert, &certs.client_key] {
            assert!(path.is_file(), "{} missing", path.display());
        }
        assert!(dir.path().join("nested/certs/ca-key.pem").is_file());
        server_config(&settings(&certs, false)).expect("plain TLS");
        server_config(&settings(&certs, true)).expect("mutual TLS");
    }

    #[cfg(unix)]
    #[test]
    fn dev_key_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // A pre-existing, world-readable file must not keep its mode.
        std::fs::write(dir.path().join("server-key.pem"), "old").unwrap();
        std::fs::set_permissions(dir.path().join("server-key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let certs = dev(dir.path());
        for key in [dir.path().join("ca-key.pem"), certs.server_key.clone(), certs.client_key.clone()] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    #[test]
    fn dev_certs_need_a_host() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(dev_certs(dir.path(), &[], "alice"), Err(TlsError::Generate(_))));
    }

    fn assert_names(err: TlsError, path: &Path) {
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message:?} does not name {}", path.display());
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(dir.path());
        let missing = dir.path().join("nope.pem");
        let err = server_config(&TlsSettings { cert: missing.clone(), ..settings(&certs, false) }).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert_names(err, &missing);

        let err =
            server_config(&TlsSettings { client_ca: Some(missing.clone()), ..settings(&certs, false) }).unwrap_err();
        assert_names(err, &missing);
    }

    #[test]
    fn empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(dir.path());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();

        let err = server_config(&TlsSettings { cert: empty.clone(), ..settings(&certs, false) }).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert_names(err, &empty);

        let err = server_config(&TlsSettings { key: empty.clone(), ..settings(&certs, false) }).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
        assert_names(err, &empty);

        let err =
            server_config(&TlsSettings { client_ca: Some(empty.clone()), ..settings(&certs, false) }).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert_names(err, &empty);
    }

    #[test]
    fn malformed_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(dir.path());
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n").unwrap();
        let err = server_config(&TlsSettings { cert: bad.clone(), ..settings(&certs, false) }).unwrap_err();
        assert!(matches!(err, TlsError::BadPem { .. }), "{err:?}");
        assert_names(err, &bad);
    }

    #[test]
    fn mismatched_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(dir.path());
        let err = server_config(&TlsSettings { key: certs.client_key.clone(), ..settings(&certs, false) }).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        assert_names(err, &certs.client_key);
    }

    #[test]
    fn principal_of_dev_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(dir.path());
        let der = read_certs(&certs.client_cert).unwrap().remove(0);
        assert_eq!(principal_of(&der).as_deref(), Some("User:CN=alice,O=weir"));
        assert_eq!(principal_of(b"not a certificate"), None);
        assert_eq!(principal_of(&[]), None);
    }

    #[test]
    fn principal_of_follows_java_rfc2253() {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "SE");
        dn.push(DnType::OrganizationName, "weir");
        dn.push(DnType::OrganizationalUnitName, "eng");
        dn.push(DnType::CommonName, " bob, \"the\" + <builder>=#1; \\ ");
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_of(cert.der()).as_deref(),
            Some(r#"User:CN=\ bob\, \"the\" \+ \<builder\>\=\#1\; \\\ ,OU=eng,O=weir,C=SE"#)
        );

        // Attributes without an RFC 2253 keyword: dotted OID and the DER value in hex.
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), "42");
        // Other string types than UTF8String are text too.
        dn.push(DnType::OrganizationalUnitName, rcgen::DnValue::BmpString("Zürich".try_into().unwrap()));
        dn.push(DnType::OrganizationName, rcgen::DnValue::PrintableString("weir".try_into().unwrap()));
        dn.push(DnType::CommonName, "carol");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(principal_of(cert.der()).as_deref(), Some("User:CN=carol,O=weir,OU=Zürich,2.5.4.5=#0c023432"));
    }

    #[test]
    fn settings_deserialize_strictly() {
        let parsed: TlsSettings = serde_json::from_str(r#"{"cert": "a.pem", "key": "k.pem"}"#).unwrap();
        assert_eq!(parsed, TlsSettings { cert: "a.pem".into(), key: "k.pem".into(), client_ca: None });
        let parsed: TlsSettings =
            serde_json::from_str(r#"{"cert": "a.pem", "key": "k.pem", "client_ca": "ca.pem"}"#).unwrap();
        assert_eq!(parsed.client_ca, Some(PathBuf::from("ca.pem")));
        assert!(serde_json::from_str::<TlsSettings>(r#"{"cert": "a.pem", "key": "k.pem", "ca": "ca.pem"}"#).is_err());
    }

    #[test]
    fn mutual_tls_handshake_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(dir.path());
        let server_cfg = server_config(&settings(&certs, true)).unwrap();
        for host in ["localhost", "127.0.0.1"] {
            let name = ServerName::try_from(host).unwrap();
            let mut client = ClientConnection::new(client_config(&certs, true), name).unwrap();
            let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
            handshake(&mut client, &mut server).expect("handshake");
            let presented = server.peer_certificates().expect("client certificate");
            assert_eq!(principal_of(&presented[0]).as_deref(), Some("User:CN=alice,O=weir"), "{host}");
        }
    }

    #[test]
    fn client_without_certificate_is_refused_under_mtls() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev(dir.path());
        let name = ServerName::try_from("localhost").unwrap();

        let mut client = ClientConnection::new(client_config(&certs, false), name.clone()).unwrap();
        let mut server = ServerConnection::new(server_config(&settings(&certs, true)).unwrap()).unwrap();
        let err = handshake(&mut client, &mut server).unwrap_err();
        assert_eq!(err, rustls::Error::NoCertificatesPresented);

        // Without a client CA the same client is welcome and no certificate is seen.
        let mut client = ClientConnection::new(client_config(&certs, false), name).unwrap();
        let mut server = ServerConnection::new(server_config(&settings(&certs, false)).unwrap()).unwrap();
        handshake(&mut client, &mut server).expect("plain TLS handshake");
        assert!(server.peer_certificates().is_none());
    }
}
