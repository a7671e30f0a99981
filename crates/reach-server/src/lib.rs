//! reach-server: the Defender-compatible live response API under `/api`,
//! the OAuth2 token endpoints, result download links, and the agent gateway,
//! on top of a `Store` (SQLite by default, or PostgreSQL shared by several
//! nodes) and `Files` (local disk by default, or S3-compatible storage).
//!
//! The database is the single source of truth: this crate keeps only agent
//! connections and caches in memory. It never runs
//! commands itself; agents do.
//!
//! Entry points: `open` builds the shared state from a `Config`, `serve` runs
//! the HTTP server on a listener until a shutdown signal, `admin` creates
//! tenants, apps and enrollment tokens, and `dev` is the `--dev` mode.

pub mod admin;
pub mod agents;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bandwidth;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod console;
pub mod data_dir;
pub mod dev;
pub mod error;
pub mod files;
pub mod followers;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod odata;
pub mod process;
pub mod ratelimit;
pub mod retention;
pub mod router;
pub mod store;
pub mod sweeper;
#[cfg(feature = "testing")]
// The test harness: a panic there is a failed test, with its message.
#[allow(clippy::unwrap_used)]
pub mod testing;
pub mod time;
pub mod tls;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The memory allocator of the server's processes (`reach-server` and the
/// bench's server): mimalloc, which took about a fifth of the server's CPU
/// per action off glibc's malloc (BENCHMARKS.md, "The allocator"). Only
/// Rust's allocations use it; SQLite and the other C libraries keep the
/// system's. The agent keeps the system allocator (a smaller footprint on
/// every device).
pub type Allocator = mimalloc::MiMalloc;

/// Everything a request handler or agent connection needs, shared.
pub struct AppState {
    /// The configuration it started with.
    pub config: Config,
    /// Every durable record (SQLite or PostgreSQL).
    pub store: Arc<dyn store::Store>,
    /// Every file's bytes (local disk or S3).
    pub files: files::Files,
    /// Issues and checks tokens.
    pub auth: auth::Authenticator,
    /// Where rate-limited calls are counted (this process, or the database).
    pub limiter: ratelimit::Limiter,
    /// Calls per client address to the endpoints that take no token,
    /// counted in this process.
    pub address_limiter: ratelimit::Limiter,
    /// Every secret and password check passes here.
    pub gate: auth::secrets::Gate,
    /// Accounts recently read to admit tokens (at most a second old).
    pub admitted: auth::Admitted,
    /// This node's agent connections.
    pub hub: hub::Hub,
    /// Clients following live output on this node.
    pub followers: followers::Followers,
    /// Claims this node's connections run at once (`agents::CLAIMS_AT_ONCE`
    /// on PostgreSQL; no limit on SQLite).
    pub claims: tokio::sync::Semaphore,
    /// How hub events reach connections held by other nodes.
    pub cluster: cluster::Cluster,
    /// Caps on file transfer rates.
    pub bandwidth: Arc<bandwidth::Bandwidth>,
    /// Whole-file hashes of GetFiles whose chunks arrive here in order.
    pub chunks_in_order: agents::verify::InOrder,
    /// Small library files read for `Run` messages, kept in memory.
    pub inline_payloads: agents::inline_cache::InlineCache,
    /// Counters and histograms for `/metrics`.
    pub metrics: metrics::Metrics,
    /// Open API connections, per address and in all.
    pub connections: Arc<connections::Counts>,
    /// Appends to the audit trail.
    pub auditor: audit::Auditor,
    /// Unauthenticated refusals counted per source until their window ends.
    pub refusals: audit::refusals::Refusals,
    /// Keys library uploads must be signed by (empty: none needed).
    pub trusted_keys: Vec<reach_client::signing::TrustedKey>,
    /// Cancelled when the server shuts down; agent connections close on it.
    pub shutdown: CancellationToken,
}

/// The state every handler and task shares.
pub type SharedState = Arc<AppState>;

/// Opens the store, the file store and the signing keys named by `config`.
pub async fn open(config: Config) -> anyhow::Result<SharedState> {
    let store = if config.database_url.is_empty() {
        store::sql::SqlStore::open_sqlite(&config.data_dir).await?
    } else {
        store::sql::SqlStore::connect(&config.database_url).await?
    };
    let cluster = match store.postgres_pool() {
        None => cluster::Cluster::Single,
        Some(pool) => cluster::Cluster::postgres(pool.clone(), config.database_url.clone()),
    };
    let files = files::Files::open(&config.object_store_url, &config.data_dir)?;
    tracing::info!(
        database = %if config.database_url.is_empty() {
            format!("sqlite in {}", config.data_dir.display())
        } else {
            net::redact_url(&config.database_url)
        },
        files = %files.location(),
        "storage opened"
    );
    let keys = auth::Keys::load_or_create(&store)
        .await
        .context("loading signing keys")?;
    let issuer = if config.auth.issuer.is_empty() {
        "reach".to_string()
    } else {
        config.auth.issuer.clone()
    };
    let oidc = config.auth.oidc.clone().map(auth::oidc::Oidc::new);
    let auth = auth::Authenticator::new(keys, issuer, config.auth.token_lifetime_secs, oidc);
    let bandwidth = Arc::new(bandwidth::Bandwidth::new(
        config.limits.agent_bytes_per_sec,
        config.limits.total_bytes_per_sec,
    ));
    let trusted_keys = config
        .live_response
        .library_trusted_keys
        .iter()
        .map(|key| reach_client::signing::TrustedKey::parse(key))
        .collect::<Result<Vec<_>, _>>()
        .context("reading live_response.library_trusted_keys")?;
    let store: Arc<dyn store::Store> = Arc::new(store);
    let refusals = audit::refusals::Refusals::new(config.limits.refusal_audit_window_secs);
    let gate = auth::secrets::Gate::new(
        config.limits.password_checks_at_once,
        config.limits.password_check_queue,
    );
    Ok(Arc::new(AppState {
        config,
        auditor: audit::Auditor::start(store.clone()),
        refusals,
        connections: Arc::default(),
        trusted_keys,
        store,
        files,
        auth,
        limiter: match &cluster {
            cluster::Cluster::Single => ratelimit::Limiter::local(),
            cluster::Cluster::Postgres { .. } => ratelimit::Limiter::shared(),
        },
        address_limiter: ratelimit::Limiter::local(),
        gate,
        admitted: auth::Admitted::default(),
        hub: hub::Hub::default(),
        followers: followers::Followers::default(),
        claims: tokio::sync::Semaphore::new(match &cluster {
            // SQLite's writer queues claims itself, and a crowd of them
            // shares one COMMIT (group commit): no limit in front of it.
            cluster::Cluster::Single => tokio::sync::Semaphore::MAX_PERMITS,
            cluster::Cluster::Postgres { .. } => agents::CLAIMS_AT_ONCE,
        }),
        chunks_in_order: agents::verify::InOrder::default(),
        inline_payloads: agents::inline_cache::InlineCache::default(),
        cluster,
        bandwidth,
        metrics: metrics::Metrics::default(),
        shutdown: CancellationToken::new(),
    }))
}

/// Serves the API and the agent gateway on `listener` until `shutdown`
/// completes; then closes agent connections and finishes open requests.
pub async fn serve(
    state: SharedState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = if state.config.tls.enabled() {
        let tls = &state.config.tls;
        Some(tls::server_config(
            std::path::Path::new(&tls.cert_path),
            std::path::Path::new(&tls.key_path),
        )?)
    } else {
        None
    };
    // Each agent holds a socket: take every file the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
    let sweeper = tokio::spawn(sweeper::run(state.clone()));
    let retention = tokio::spawn(retention::run(state.clone()));
    let listener_task = tokio::spawn(cluster::listen(state.clone()));
    let app = router::app(state.clone());
    tracing::info!(listen = %listener.local_addr()?, https = tls.is_some(), "reach-server listening");
    let stop = state.shutdown.clone();
    let serving = tokio::spawn(connections::serve(
        listener,
        app,
        tls,
        state.config.http.clone(),
        state.connections.clone(),
        stop.clone(),
    ));
    tokio::pin!(shutdown);
    let mut serving = serving;
    let result = tokio::select! {
        _ = &mut shutdown => {
            stop.cancel();
            (&mut serving).await
        }
        ended = &mut serving => ended,
    };
    state.shutdown.cancel();
    // Refusals still being counted are written before the process ends.
    for event in state.refusals.take_due(time::Micros(i64::MAX)) {
        state.auditor.record(event).await;
    }
    sweeper.abort();
    retention.abort();
    listener_task.abort();
    result.context("serving HTTP")
}
