//! The web console end to end in a real browser: `reach-server --dev` (the
//! real binary, with its local agent) and Debian's chromium driven by
//! playwright-core (tests/browser/console.test.mjs). Needs
//! REACH_TEST_CHROMIUM (the browser, /usr/bin/chromium) and `npm ci` in
//! tests/browser; without the variable it prints a skip notice. The
//! screenshots of every page land in docs/screenshots/.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use reach_server::dev::DevCredentials;
use reach_server::testing::wait_for;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_console_does_the_whole_job_in_a_browser() {
    let Some(chromium) = reach_server::testing::service_url("REACH_TEST_CHROMIUM", "a browser")
    else {
        return;
    };
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in {}",
        browser_dir.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach-server"))
        .args(["--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("REACH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let credentials = reach_server::dev::credentials_path(&data);
    let creds: DevCredentials = wait_for("dev-credentials.json appearing", async || {
        let text = std::fs::read_to_string(&credentials).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    // A second console user, with basic live response only, made the way an
    // operator makes one.
    let basic_password = "basic user password, long enough";
    let mut create = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach-server"))
        .args(["--data-dir"])
        .arg(&data)
        .args([
            "users",
            "create",
            "--name",
            "basic",
            "--roles",
            "Machine.LiveResponse.Basic,Machine.Read.All",
            "--password-stdin",
        ])
        .env("REACH_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = create.stdin.take().unwrap();
        stdin
            .write_all(format!("{basic_password}\n").as_bytes())
            .await
            .unwrap();
    }
    assert!(
        create.wait().await.unwrap().success(),
        "users create failed"
    );
    let screenshots = workspace().join("docs/screenshots");
    let output = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(&browser_dir)
        .env("REACH_URL", &creds.server)
        .env("REACH_USER", &creds.console_user)
        .env("REACH_PASSWORD", &creds.console_password)
        .env("REACH_MACHINE", &creds.machine_id)
        .env("REACH_CHROMIUM", &chromium)
        .env("REACH_SCREENSHOTS", &screenshots)
        .env("REACH_BASIC_USER", "basic")
        .env("REACH_BASIC_PASSWORD", basic_password)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed (screenshot: {}):\n{stdout}\n{stderr}",
        screenshots.join("failure.png").display()
    );
}
