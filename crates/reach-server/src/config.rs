//! The server's one `Config`: read from a TOML file, then overridden by
//! `REACH_*` environment variables, then by command-line flags. Every default
//! is defined here, once, and documented in `EXAMPLE`, which `reach-server
//! print-config` prints and a test parses.
//!
//! This module never reads files other than the config file, and never logs
//! secrets: `Debug` redacts them.

mod env;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The documented example configuration, with every default spelled out.
pub const EXAMPLE: &str = include_str!("../reach-server.example.toml");

/// reach-server's configuration: defaults, then a TOML file, then `REACH_*` variables; `reach-server.example.toml` documents every key and default.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on. `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Directory for the SQLite database and stored files (when the URLs
    /// below leave them local), and dev-mode files.
    pub data_dir: PathBuf,
    /// The database: empty for SQLite in `data_dir` (one node), or
    /// `postgres://user:password@host/db` for several nodes sharing one.
    pub database_url: String,
    /// Where library files and results live: empty for `data_dir/blobs`,
    /// `file:///path`, or `s3://bucket/prefix` (credentials and endpoint from
    /// the usual AWS_* variables).
    pub object_store_url: String,
    /// Base URL clients use to reach this server, for `@odata.context` and
    /// download links. Empty: derived from each request's Host header.
    pub public_url: String,
    /// Reverse proxies (addresses or blocks, `10.0.0.0/8`) whose
    /// `X-Forwarded-For` names the client, for the audit trail's source
    /// address and machines' `lastIpAddress`. Empty: the TCP peer.
    pub trusted_proxies: Vec<crate::net::IpNet>,
    /// Caps on calls, bodies, queues and results (`[limits]`).
    pub limits: Limits,
    /// Live response: queue TTL, timeouts, chunks, the library (`[live_response]`).
    pub live_response: LiveResponse,
    /// Agents' connections: heartbeats (`[agents]`).
    pub agents: Agents,
    /// Tokens and an external issuer (`[auth]`).
    pub auth: Auth,
    /// HTTPS (`[tls]`).
    pub tls: Tls,
    /// How long results, library files and audit entries are kept (`[retention]`).
    pub retention: Retention,
    /// Connections and request timing (`[http]`).
    pub http: Http,
    /// Devices' network isolation (`[isolation]`).
    pub isolation: Isolation,
}

/// Devices' network isolation.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Isolation {
    /// What a `Selective` isolation keeps reachable besides the agent's
    /// servers, DNS and DHCP: `ADDRESS[/PREFIX][:PORT]` each (a network,
    /// and one TCP or UDP port or all). Sent to the agent with the action.
    pub selective_allow: Vec<reach_proto::destination::Destination>,
}

/// Connections and request timing: what one client may hold open and how
/// slowly it may send.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// A request's headers must arrive within this many seconds; a
    /// keep-alive connection idle this long is closed.
    pub header_timeout_secs: u64,
    /// A JSON or form body must arrive whole within this many seconds.
    pub body_timeout_secs: u64,
    /// A streamed upload (library files, agents' results) may keep the
    /// server waiting at most this many seconds for each `min_body_bytes`.
    pub stall_secs: u64,
    /// See `stall_secs`.
    pub min_body_bytes: u64,
    /// Open API connections from one client address. Agents' WebSockets
    /// stop counting once established.
    pub max_connections_per_address: usize,
    /// Open API connections in all. 0: half of what agents' default cap
    /// leaves of the open-file limit (500 at most).
    pub max_api_connections: usize,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            header_timeout_secs: 30,
            body_timeout_secs: 30,
            stall_secs: 30,
            min_body_bytes: 1024,
            max_connections_per_address: 256,
            max_api_connections: 0,
        }
    }
}

/// How long stored things are kept. 0 keeps them forever.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Results and collected files of actions that ended this many days ago
    /// are deleted (the action, its commands' statuses and the collected
    /// files' hashes stay).
    pub results_days: u64,
    /// Library files that no action used for this many days, and that were
    /// not changed in that time, are deleted. 0: library files are kept.
    pub unused_library_days: u64,
    /// Audit entries older than this are deleted; the deletion is itself an
    /// audit entry.
    pub audit_days: u64,
    /// How often retention runs, in seconds.
    pub interval_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            results_days: 30,
            unused_library_days: 0,
            audit_days: 365,
            interval_secs: 3600,
        }
    }
}

/// HTTPS. Both paths empty: plain HTTP (put a TLS-terminating proxy in front).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain, server certificate first.
    pub cert_path: String,
    /// PEM private key of that certificate.
    pub key_path: String,
}

impl Tls {
    /// Whether HTTPS is configured (either path set).
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty() || !self.key_path.is_empty()
    }
}

/// Request limits. Defaults are Defender's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Calls per minute per client app to `runliveresponse`.
    pub run_live_response_per_minute: u32,
    /// Batches created per minute per client app (`POST /api/batches`).
    pub batches_per_minute: u32,
    /// Calls per minute per client app to every other endpoint.
    pub api_per_minute: u32,
    /// Calls per hour per client app to every other endpoint.
    pub api_per_hour: u32,
    /// Live response actions running on devices (InProgress) per tenant:
    /// Defender's concurrent sessions. Queued ones do not count.
    pub active_actions_per_tenant: u32,
    /// Live response actions waiting for their devices (Pending) per app
    /// (or console user).
    pub pending_actions_per_app: u32,
    /// Most entities in one page of a collection (machines, machine
    /// actions, the audit log); past it the answer carries
    /// `@odata.nextLink`. At most 10,000, Defender's page.
    pub page_size: u32,
    /// Largest library file accepted, in bytes.
    pub library_file_max_bytes: u64,
    /// Largest JSON request body, in bytes.
    pub json_body_max_bytes: usize,
    /// Most commands in one live response action.
    pub commands_per_action: usize,
    /// Largest command result (a collected file, gzip-compressed, or a
    /// transcript) accepted, in bytes (32 GiB). 0: no limit.
    pub result_max_bytes: u64,
    /// File transfer rate per agent (both directions), bytes per second. 0: no cap.
    pub agent_bytes_per_sec: u64,
    /// File transfer rate of the whole server, bytes per second. 0: no cap.
    pub total_bytes_per_sec: u64,
    /// Token requests per minute from one client address (per node).
    pub token_per_minute_per_address: u32,
    /// Console sign-ins per minute from one client address (per node).
    pub sign_in_per_minute_per_address: u32,
    /// Agent enrollments per minute from one client address (per node).
    pub enroll_per_minute_per_address: u32,
    /// Result downloads per minute from one client address (per node).
    pub download_per_minute_per_address: u32,
    /// argon2 password checks running at once. 0: the CPUs, at most 8.
    pub password_checks_at_once: usize,
    /// Callers that may wait for a password check; past it, 429.
    pub password_check_queue: usize,
    /// Refusals of callers without a valid token, from one address to one
    /// operation with one status, are recorded once per this many seconds
    /// and then as one entry with their count.
    pub refusal_audit_window_secs: u64,
}

/// Live response timings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LiveResponse {
    /// How long an action waits for an offline device before it ends TimeOut.
    pub queue_ttl_secs: u64,
    /// RunScript timeout: the script's process group is killed after this.
    pub script_timeout_secs: u64,
    /// Timeout of PutFile and GetFile commands.
    pub transfer_timeout_secs: u64,
    /// Extra time after a command's timeout before the server gives up on
    /// hearing from the agent and fails the command.
    pub lease_grace_secs: u64,
    /// Validity of result download links.
    pub download_link_ttl_secs: u64,
    /// How often expired actions and leases are swept, in milliseconds.
    pub sweep_interval_ms: u64,
    /// A connected machine's action still Pending after this many seconds
    /// lost its wake-up (a notification between nodes that failed): the
    /// sweeper wakes the machine's connection again.
    pub rewake_after_secs: u64,
    /// GetFile uploads files in chunks of this many bytes (before
    /// compression); a transfer resumes from the last chunk stored.
    pub chunk_bytes: u64,
    /// A PutFile's or RunScript's library file of at most this many bytes
    /// travels inside the command's `Run` message instead of being
    /// downloaded by the agent in a request of its own. 0: always download.
    pub inline_payload_bytes: u64,
    /// A RunScript transcript of at most this many bytes travels inside the
    /// agent's `Finished` message instead of an upload of its own (the
    /// server tells each agent this in `Welcome`, capped to fit in
    /// `agents.max_message_bytes`). 0: agents always upload.
    pub inline_result_bytes: u64,
    /// The largest piece of a running script's output an agent sends at
    /// once (live output; the server tells each agent in `Welcome`, capped
    /// to fit in `agents.max_message_bytes`). 0: no live output, scripts'
    /// output comes with their transcript only.
    pub live_output_bytes: u64,
    /// Most live output kept per stream (stdout, stderr) of one command;
    /// past it the rest comes with the transcript.
    pub live_output_max_bytes: u64,
    /// Live output is kept this long after its command ended, so that a
    /// client may still read or resume it; the transcript stays.
    pub live_output_keep_secs: u64,
    /// Ed25519 public keys (base64). When any is set, a library upload must
    /// carry a signature by one of them. Agents check signatures themselves
    /// (their own `trusted_keys`); this catches a wrong one at upload.
    pub library_trusted_keys: Vec<String>,
    /// Accept library signatures of the first format (the SHA-256 alone).
    pub library_accept_v1_signatures: bool,
}

/// Agent connections.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Agents {
    /// Agents send a heartbeat this often; a device is Active while its agent
    /// is connected and heard from within three heartbeats.
    pub heartbeat_secs: u64,
    /// Largest message accepted from an agent on its WebSocket, in bytes.
    pub max_message_bytes: usize,
    /// Most agent connections this node holds; past it, new ones are refused
    /// with 503 (the agent retries, or moves to another node). 0: the
    /// process's open-file limit less 1,000 kept for everything else.
    pub max_connections: usize,
}

/// Token issuing and checking.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Lifetime of issued access tokens (Defender: 3599).
    pub token_lifetime_secs: u64,
    /// Issuer claim of tokens this server signs. Empty: `reach`.
    pub issuer: String,
    /// One external OIDC issuer whose JWTs are accepted too.
    pub oidc: Option<Oidc>,
}

/// An external OpenID Connect issuer (for example Entra ID).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Oidc {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// JWKS URL holding the issuer's signing keys.
    pub jwks_url: String,
    /// Reach tenant that this issuer's tokens act in. Empty: the tenant
    /// named by each token's `tid` claim.
    pub tenant_id: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("reach-data"),
            database_url: String::new(),
            object_store_url: String::new(),
            public_url: String::new(),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            live_response: LiveResponse::default(),
            agents: Agents::default(),
            auth: Auth::default(),
            tls: Tls::default(),
            retention: Retention::default(),
            http: Http::default(),
            isolation: Isolation::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            run_live_response_per_minute: 10,
            batches_per_minute: 10,
            api_per_minute: 100,
            api_per_hour: 1500,
            active_actions_per_tenant: 25,
            pending_actions_per_app: 250,
            page_size: crate::odata::MAX_TOP,
            library_file_max_bytes: 250 * 1024 * 1024,
            json_body_max_bytes: 1024 * 1024,
            commands_per_action: 100,
            result_max_bytes: 32 * 1024 * 1024 * 1024,
            agent_bytes_per_sec: 0,
            total_bytes_per_sec: 0,
            token_per_minute_per_address: 60,
            sign_in_per_minute_per_address: 30,
            enroll_per_minute_per_address: 120,
            download_per_minute_per_address: 600,
            password_checks_at_once: 0,
            password_check_queue: 32,
            refusal_audit_window_secs: 60,
        }
    }
}

impl Default for LiveResponse {
    fn default() -> Self {
        Self {
            queue_ttl_secs: 3 * 24 * 3600,
            script_timeout_secs: 600,
            transfer_timeout_secs: 1800,
            lease_grace_secs: 120,
            download_link_ttl_secs: 1800,
            sweep_interval_ms: 1000,
            rewake_after_secs: 5,
            chunk_bytes: 8 * 1024 * 1024,
            inline_payload_bytes: 64 * 1024,
            inline_result_bytes: 64 * 1024,
            live_output_bytes: 64 * 1024,
            live_output_max_bytes: 10 * 1024 * 1024,
            live_output_keep_secs: 3600,
            library_trusted_keys: Vec::new(),
            library_accept_v1_signatures: false,
        }
    }
}

impl Default for Agents {
    fn default() -> Self {
        Self {
            heartbeat_secs: 30,
            max_message_bytes: 1024 * 1024,
            max_connections: 0,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            token_lifetime_secs: 3599,
            issuer: String::new(),
            oidc: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &crate::net::redact_url(&self.database_url))
            .field("object_store_url", &self.object_store_url)
            .field("public_url", &self.public_url)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("limits", &self.limits)
            .field("live_response", &self.live_response)
            .field("agents", &self.agents)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("retention", &self.retention)
            .field("http", &self.http)
            .field("isolation", &self.isolation)
            .finish()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No secrets live here today; keep the list explicit so one added later is not printed by accident.
        f.debug_struct("Auth")
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .field("issuer", &self.issuer)
            .field("oidc", &self.oidc)
            .finish()
    }
}

impl Config {
    /// Loads the config: defaults, then the TOML file (if any), then `REACH_*` variables.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                Self::from_toml(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Self::default(),
        };
        config.apply_env(std::env::vars())?;
        Ok(config)
    }

    /// The configuration a TOML text gives (defaults for what it leaves out).
    pub fn from_toml(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_to_the_defaults() {
        let parsed = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let mut config = Config::default();
        config
            .apply_env([
                (
                    "REACH_LIMITS__API_PER_MINUTE".to_string(),
                    "500".to_string(),
                ),
                ("REACH_LISTEN".to_string(), "0.0.0.0:9000".to_string()),
                ("REACH_SERVER".to_string(), "http://ignored".to_string()),
            ])
            .unwrap();
        assert_eq!(config.limits.api_per_minute, 500);
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn bad_environment_value_is_an_error() {
        let mut config = Config::default();
        let err = config
            .apply_env([("REACH_LIMITS__API_PER_MINUTE".into(), "many".into())])
            .unwrap_err();
        assert!(format!("{err:#}").contains("REACH_LIMITS__API_PER_MINUTE"));
    }
}
