//! How the agent trusts its server: the platform's root certificates, or
//! only a pinned CA file. Also refuses plain HTTP to anything but loopback
//! unless explicitly allowed, since the agent's credential and commands
//! would travel in clear.

use std::path::Path;

use anyhow::Context;
use rustls::ClientConfig;

/// A client config trusting only `ca_file` when given, else the platform's roots.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<ClientConfig> {
    Ok(reach_client::tls::client_config(ca_file)?)
}

/// Refuses `http://` to a host that is not loopback, unless `insecure_http`.
pub fn check_server_url(server: &str, insecure_http: bool) -> anyhow::Result<()> {
    let url = url::Url::parse(server).with_context(|| format!("'{server}' is not a URL"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback || insecure_http {
                Ok(())
            } else {
                anyhow::bail!(
                    "refusing plain http to {server}: the credential and commands would travel in clear; use https, or pass --insecure-http"
                )
            }
        }
        other => anyhow::bail!("unsupported scheme '{other}' in {server}; use https"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://reach.example",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://localhost:1",
            "http://[::1]:80",
        ] {
            assert!(check_server_url(ok, false).is_ok(), "{ok}");
        }
        let err = check_server_url("http://10.0.0.5:8080", false).unwrap_err();
        assert!(err.to_string().contains("--insecure-http"), "{err}");
        assert!(check_server_url("http://10.0.0.5:8080", true).is_ok());
        assert!(check_server_url("ftp://x", true).is_err());
        assert!(check_server_url("not a url", false).is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(client_config(Some(&empty)).is_err());
        assert!(client_config(Some(&dir.path().join("missing.pem"))).is_err());
        client_config(None).unwrap();
    }
}
