//! Which servers a Reach client trusts: only a pinned CA file when given,
//! otherwise the platform's root certificates. One rustls configuration,
//! with the aws-lc-rs provider named explicitly, serves HTTP and WebSocket.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::BuilderVerifierExt;

/// Why a TLS configuration could not be built; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client config trusting only `ca_file` when given, else the platform's roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let config = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsError(format!("reading the CA file {}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| TlsError(format!("parsing {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("using {} as a CA: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(TlsError(format!(
                    "{} holds no CA certificate",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| TlsError(format!("loading the platform's root certificates: {e}")))?
            .with_no_client_auth(),
    };
    Ok(config)
}
