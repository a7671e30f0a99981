//! HTTPS for reach-server: a rustls `ServerConfig` from a PEM certificate
//! chain and key (`connections` runs each handshake in its connection's own
//! task, so a slow client never holds up others), and dev mode's own CA and
//! server certificate.
//!
//! Only the aws-lc-rs crypto provider is used. This module never logs key
//! material.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The crypto provider every TLS config in Reach uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads a PEM certificate chain and private key.
pub fn server_config(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("reading certificates from {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading the private key in {}", key_path.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Dev mode's certificate authority and the server certificate it signed.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The CA certificate to trust.
    pub ca_path: PathBuf,
    /// The server's certificate.
    pub cert_path: PathBuf,
    /// The server's private key (0600).
    pub key_path: PathBuf,
    /// SHA-256 of the CA certificate (DER), as `AB:CD:...`.
    pub ca_fingerprint: String,
}

/// SHA-256 fingerprint of the first certificate in a PEM file.
pub fn fingerprint(pem_path: &Path) -> anyhow::Result<String> {
    let cert = CertificateDer::from_pem_file(pem_path)
        .with_context(|| format!("reading {}", pem_path.display()))?;
    let digest = Sha256::digest(cert.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Creates (once, then reuses) a CA and a server certificate for `hosts`
/// under `<dir>`: `ca.pem`, `server.pem`, `server.key` (0600).
pub fn dev_pki(dir: &Path, hosts: &[String]) -> anyhow::Result<DevPki> {
    let pki = DevPki {
        ca_path: dir.join("ca.pem"),
        cert_path: dir.join("server.pem"),
        key_path: dir.join("server.key"),
        ca_fingerprint: String::new(),
    };
    if !(pki.ca_path.exists() && pki.cert_path.exists() && pki.key_path.exists()) {
        crate::data_dir::create_private_dir(dir)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Reach dev CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "reach-server");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        std::fs::write(&pki.ca_path, ca.pem())?;
        std::fs::write(&pki.cert_path, cert.pem())?;
        crate::data_dir::write_private(&pki.key_path, key.serialize_pem().as_bytes())?;
    }
    Ok(DevPki {
        ca_fingerprint: fingerprint(&pki.ca_path)?,
        ..pki
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let first = dev_pki(&dir.path().join("tls"), &hosts).unwrap();
        let again = dev_pki(&dir.path().join("tls"), &hosts).unwrap();
        assert_eq!(first.ca_fingerprint, again.ca_fingerprint);
        assert_eq!(first.ca_fingerprint.len(), 32 * 3 - 1);
        server_config(&first.cert_path, &first.key_path).unwrap();
        let err = server_config(&first.ca_path, &first.key_path).unwrap_err();
        assert!(format!("{err:#}").contains("do not match"), "{err:#}");
    }
}
