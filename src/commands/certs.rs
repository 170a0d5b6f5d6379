//! `weir certs dev`: a throwaway CA with server and client certificates for trying TLS and mutual TLS locally, and
//! the settings and client commands that use them, ready to paste.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::CertsCommand;
use crate::settings::Settings;

pub fn run(settings: Settings, cmd: CertsCommand) -> Result<()> {
    match cmd {
        CertsCommand::Dev { dir, host, client } => {
            let dir = dir.unwrap_or_else(|| settings.data_dir.join("certs"));
            let hosts = if host.is_empty() { vec!["localhost".to_string(), "127.0.0.1".to_string()] } else { host };
            let certs = weir_security::tls::dev_certs(&dir, &hosts, &client).map_err(super::one_line)?;
            // Absolute paths, so the snippet works whichever directory the settings file and weir end up in.
            let dir = std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
            let at = |p: &Path| dir.join(p.file_name().unwrap_or(p.as_os_str()));
            let (ca, cert, key) = (at(&certs.ca_cert), at(&certs.server_cert), at(&certs.server_key));
            let (client_cert, client_key) = (at(&certs.client_cert), at(&certs.client_key));
            print!("{}", instructions(&dir, &hosts, &client, [&ca, &cert, &key, &client_cert, &client_key]));
        }
    }
    Ok(())
}

/// What `weir certs dev` prints: the files, the `[security.tls]` table, and how kcat and curl connect with them.
fn instructions(dir: &Path, hosts: &[String], client: &str, files: [&PathBuf; 5]) -> String {
    let [ca, cert, key, client_cert, client_key] = files.map(|p| p.display().to_string());
    // An IPv6 address goes in brackets before a port.
    let host = if hosts[0].contains(':') { format!("[{}]", hosts[0]) } else { hosts[0].clone() };
    let mut out = format!("wrote dev certificates in {} (valid 365 days; for local use only):\n", dir.display());
    out.push_str(&format!("  CA certificate       {ca}  (its key: ca-key.pem)\n"));
    out.push_str(&format!("  server certificate   {cert}  (for {})\n", hosts.join(", ")));
    out.push_str(&format!("  server key           {key}\n"));
    out.push_str(&format!("  client certificate   {client_cert}  (principal User:CN={client},O=weir)\n"));
    out.push_str(&format!("  client key           {client_key}\n"));
    out.push_str(&format!(
        "\nFor the settings file (--config):\n\n\
         [security.tls]\n\
         cert = {cert:?}\n\
         key = {key:?}\n\
         client_ca = {ca:?}   # mutual TLS: clients must present a certificate; drop this line for TLS alone\n\
         # listeners = [\"kafka\", \"http\"]\n\n\
         Then, with `weir up` running:\n\n\
         kcat -b {host}:9092 -L -X security.protocol=SSL -X ssl.ca.location={ca} \\\n    \
         -X ssl.certificate.location={client_cert} -X ssl.key.location={client_key}\n\
         curl --cacert {ca} --cert {client_cert} --key {client_key} https://{host}:8080/health\n\n\
         With [security] authorizer = \"acl\", the client certificate's principal needs ACLs like any user's:\n\n\
         weir acls add --allow 'User:CN={client},O=weir' --operation all --topic '*'\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snippet_is_valid_settings() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let files = [&p("ca.pem"), &p("server.pem"), &p("server-key.pem"), &p("client.pem"), &p("client-key.pem")];
        let text = instructions(dir.path(), &["localhost".into()], "client", files);
        let start = text.find("[security.tls]").unwrap();
        let end = text.find("Then, with").unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, &text[start..end]).unwrap();
        let settings = Settings::load_from(Some(&file), None, Vec::new()).unwrap();
        let tls = settings.tls.unwrap();
        assert_eq!(tls.files.cert, p("server.pem"));
        assert_eq!(tls.files.client_ca, Some(p("ca.pem")));
        assert!(tls.kafka && tls.http);
    }
}
