//! Helpers for tests of Reach's own crates (feature `testing`, never in a
//! release build): a real server in-process on 127.0.0.1:0 with a tenant,
//! an app holding every role and an enrollment token; and waiting for
//! things with a deadline instead of sleeping blindly.

use std::time::Duration;

use reach_client::Client;
use reach_proto::api::{MachineAction, roles};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{Config, SharedState, admin};

/// How long a test waits for anything before it fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` every 20 ms until it holds; panics after `DEADLINE`.
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an action until it is final; panics after `DEADLINE`.
pub async fn wait_final(client: &Client, id: &str) -> MachineAction {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let action = client.action(id).await.expect("reading the action");
        if action.status.is_final() {
            return action;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the action never ended: {action:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server running in this process, stopped when dropped.
pub struct InProcess {
    pub url: String,
    pub state: SharedState,
    pub tenant_id: String,
    pub app: admin::NewApp,
    pub enrollment_token: String,
    /// The CA to trust when the server speaks HTTPS (see `start_tls`).
    pub ca_file: Option<std::path::PathBuf>,
    _stop: DropGuard,
}

impl InProcess {
    /// Starts `config` on 127.0.0.1:0, with API rate limits raised so that
    /// tests may poll.
    /// Like `start`, speaking HTTPS with a dev CA made under the data directory.
    pub async fn start_tls(mut config: Config) -> Self {
        let pki = crate::tls::dev_pki(&config.data_dir.join("tls"), &["127.0.0.1".to_string()])
            .expect("making a dev CA");
        config.tls.cert_path = pki.cert_path.display().to_string();
        config.tls.key_path = pki.key_path.display().to_string();
        let mut server = Self::start(config).await;
        server.ca_file = Some(pki.ca_path);
        server
    }

    pub async fn start(mut config: Config) -> Self {
        config.limits.api_per_minute = config.limits.api_per_minute.max(100_000);
        config.limits.api_per_hour = config.limits.api_per_hour.max(1_000_000);
        // Every test client calls from 127.0.0.1.
        let per_address = &mut config.limits;
        for limit in [
            &mut per_address.token_per_minute_per_address,
            &mut per_address.sign_in_per_minute_per_address,
            &mut per_address.enroll_per_minute_per_address,
            &mut per_address.download_per_minute_per_address,
        ] {
            *limit = (*limit).max(100_000);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let scheme = if config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        let url = format!(
            "{scheme}://{}",
            listener.local_addr().expect("local address")
        );
        let state = crate::open(config).await.expect("opening the server");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(crate::serve(state.clone(), listener, async move {
            stop.cancelled().await
        }));
        let store = state.store.as_ref();
        let tenant = admin::create_tenant(store, "test").await.expect("tenant");
        let all = roles::ALL.iter().map(|r| r.to_string()).collect();
        let app = admin::create_app(store, &tenant.id, "test-app", all)
            .await
            .expect("app");
        let enrollment_token = admin::create_enrollment_token(store, &tenant.id, None, None)
            .await
            .expect("token");
        Self {
            url,
            state,
            tenant_id: tenant.id,
            app,
            enrollment_token,
            ca_file: None,
            _stop: shutdown.drop_guard(),
        }
    }

    /// A client logged in as the app holding every role.
    pub async fn client(&self) -> Client {
        let client = match &self.ca_file {
            Some(ca) => Client::with_tls(
                &self.url,
                reach_client::tls::client_config(Some(ca)).expect("trusting the dev CA"),
            ),
            None => Client::new(&self.url),
        };
        client
            .login(
                &self.tenant_id,
                &self.app.client_id,
                &self.app.client_secret,
            )
            .await
            .expect("logging in")
    }
}

/// The variable naming a PostgreSQL server the tests may create databases on.
pub const POSTGRES_VAR: &str = "REACH_TEST_DATABASE_URL";
/// The variable naming an S3 bucket the tests may write under
/// (`s3://bucket`), with AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
/// (and AWS_ALLOW_HTTP for a plain-http endpoint) set for it.
pub const S3_VAR: &str = "REACH_TEST_S3_URL";

/// The value of `var`, or None after printing the skip notice. Under CI
/// (`CI` set), a missing variable fails the test instead: CI skips nothing.
pub fn service_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set under CI; .ci/run starts {what} and sets it"
            );
            eprintln!("skipped: set {var} to run this test on {what} (.ci/run does)");
            None
        }
    }
}

/// A fresh, empty PostgreSQL database on the server named by
/// `REACH_TEST_DATABASE_URL`, or None (with a skip notice) when unset.
pub async fn fresh_postgres() -> Option<String> {
    let base = service_url(POSTGRES_VAR, "PostgreSQL")?;
    let name = format!("reach_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connecting to REACH_TEST_DATABASE_URL");
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("creating a test database");
    let mut url = url::Url::parse(&base).expect("REACH_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// A fresh, empty prefix in the bucket named by `REACH_TEST_S3_URL`, as an
/// `s3://bucket/prefix` URL, or None (with a skip notice) when unset.
pub fn fresh_s3_prefix() -> Option<String> {
    let bucket = service_url(S3_VAR, "an S3 server")?;
    Some(format!(
        "{}/{}",
        bucket.trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    ))
}
