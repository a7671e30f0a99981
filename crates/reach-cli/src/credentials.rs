//! Where `reach` finds its server and client credentials: the `REACH_*`
//! environment variables, else the file `reach login` wrote
//! (`$REACH_CONFIG_DIR` or `~/.config/reach`, `credentials.json`, mode 0600).

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Trust only this CA (PEM) for the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

fn path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("REACH_CONFIG_DIR") {
        return Ok(PathBuf::from(dir).join("credentials.json"));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .or_else(|| std::env::var_os("APPDATA").map(PathBuf::from))
        .context("cannot find a configuration directory; set REACH_CONFIG_DIR")?;
    Ok(base.join("reach").join("credentials.json"))
}

impl Credentials {
    pub fn load() -> anyhow::Result<Self> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(server), Some(tenant_id), Some(client_id), Some(client_secret)) = (
            env("REACH_SERVER"),
            env("REACH_TENANT_ID"),
            env("REACH_CLIENT_ID"),
            env("REACH_CLIENT_SECRET"),
        ) {
            return Ok(Self {
                server,
                tenant_id,
                client_id,
                client_secret,
                ca_file: env("REACH_CA_FILE"),
            });
        }
        let path = path()?;
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no credentials: run `reach login` or set REACH_SERVER, REACH_TENANT_ID, REACH_CLIENT_ID and REACH_CLIENT_SECRET (looked for {})",
                path.display()
            )
        })?;
        let mut creds: Self =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(ca) = env("REACH_CA_FILE") {
            creds.ca_file = Some(ca);
        }
        Ok(creds)
    }

    /// A client for the server, trusting `ca_file` when set.
    pub fn client(&self) -> anyhow::Result<reach_client::Client> {
        Ok(match &self.ca_file {
            Some(ca) => {
                let tls = reach_client::tls::client_config(Some(std::path::Path::new(ca)))?;
                reach_client::Client::with_tls(&self.server, tls)
            }
            None => reach_client::Client::new(&self.server),
        })
    }

    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path()?;
        let text = serde_json::to_string_pretty(self)?;
        reach_client::private_file::write_private(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
