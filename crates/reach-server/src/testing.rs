//! The one harness for tests of Reach's crates (feature `testing`, never
//! in a release build): a real server in this process on 127.0.0.1:0
//! (`TestServer`) with in-process agents (`Device`), the request builders
//! and checks the suites share, the real services some suites need, and
//! waiting with one deadline instead of sleeping blindly.
//!
//! A test waits for something with `eventually` or `wait_for`, which poll
//! (the check may be async) until it holds and fail after `DEADLINE`.

mod device;
mod requests;
mod server;
mod services;

use std::time::Duration;

use reach_client::Client;
use reach_proto::api::MachineAction;

pub use device::{AgentSocket, Device, agent_socket, bearer};
pub use requests::{assert_error, assert_status, get_file, gunzip, put_file, request, run_script};
pub use server::TestServer;
pub use services::{POSTGRES_VAR, S3_VAR, fresh_postgres, fresh_s3_prefix, service_url};

/// How long a test waits for anything before it fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often a check is repeated.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it answers `Some`, and returns that; panics naming
/// `what` after `DEADLINE`.
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened within {} s",
            DEADLINE.as_secs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it holds; panics naming `what` after `DEADLINE`.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    wait_for(what, async || check().await.then_some(())).await
}

/// Polls an action until it is final; panics after `DEADLINE`.
pub async fn wait_final(client: &Client, id: &str) -> MachineAction {
    wait_for(&format!("action {id} ending"), async || {
        let action = client.action(id).await.expect("reading the action");
        action.status.is_final().then_some(action)
    })
    .await
}
