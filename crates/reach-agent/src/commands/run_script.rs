//! RunScript: downloads the script (hash-checked), runs it with the
//! interpreter its extension names, in the working folder, in a hold of its
//! own (`containment`: a cgroup on Linux, so every process it starts stays
//! in it), with the arguments split as a shell would but never passed
//! through one. stdout and stderr are kept up to a cap each. When the
//! script exits, times out or is cancelled, everything in its hold is
//! killed, and the output is read for at most `OUTPUT_GRACE` more. The
//! transcript is returned for the durable outbox, which uploads it as the
//! command's result.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reach_proto::agent::Stream;
use reach_proto::api::ScriptTranscript;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::{Context, Failure, Payload, Success, fetch_payload};
use crate::live_output::Feed;

/// The program (and leading arguments) that runs a script with this extension.
pub fn interpreter(script: &Path) -> Result<(PathBuf, Vec<String>), Failure> {
    let ext = script
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let none = || Failure::new(format!("no interpreter for .{ext} on this device"));
    let found = match ext.as_str() {
        "sh" if cfg!(unix) => Some((PathBuf::from("/bin/sh"), vec![])),
        "bash" => find_program("bash").map(|p| (p, vec![])),
        "py" => find_program("python3")
            .or_else(|| find_program("python"))
            .map(|p| (p, vec![])),
        "ps1" => find_program("pwsh")
            .or_else(|| find_program("powershell"))
            .map(|p| {
                let args = [
                    "-NoProfile",
                    "-NonInteractive",
                    "-ExecutionPolicy",
                    "Bypass",
                    "-File",
                ];
                (p, args.iter().map(|s| s.to_string()).collect())
            }),
        _ => None,
    };
    found.ok_or_else(none)
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
        let exe = dir.join(format!("{name}.exe"));
        exe.is_file().then_some(exe)
    })
}

/// How long the output is read after the script exits: a process it left
/// holding the pipes open (and that its hold could not end) delays the
/// result by no more than this.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Reads a stream to its end (or until `stop`), keeping at most `cap`
/// bytes, and passes what it keeps to `feed` as it arrives (live output).
async fn capture(
    mut stream: impl AsyncRead + Unpin,
    cap: usize,
    stop: CancellationToken,
    mut feed: Option<Feed>,
) -> String {
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    let mut cut = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = stream.read(&mut buf) => read,
            _ = stop.cancelled() => {
                cut = true;
                break;
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                let keep = &buf[..n.min(room)];
                kept.extend_from_slice(keep);
                dropped += n.saturating_sub(room);
                if let Some(feed) = &mut feed {
                    feed.bytes(keep);
                }
            }
        }
    }
    if let Some(feed) = &mut feed {
        feed.end();
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!(
            "\n[output truncated: {dropped} more bytes not kept]"
        ));
    }
    if cut {
        text.push_str(&format!(
            "\n[output after the script exited was not read: a process it started held the output open for more than {} s]",
            OUTPUT_GRACE.as_secs()
        ));
    }
    text
}

/// Downloads the script, checks it, runs it in its own process group and returns its transcript.
pub async fn run(
    context: &Context,
    payload: &Payload<'_>,
    args: Option<&str>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Success, Failure> {
    let (script_name, command) = (payload.name, payload.command);
    let script = tokio::select! {
        script = fetch_payload(context, payload) => script?,
        _ = cancel.cancelled() => return Err(Failure::new("Cancelled")),
    };
    let (program, leading) = interpreter(&script)?;
    let args = match args {
        Some(args) => shlex::split(args)
            .ok_or_else(|| Failure::new("Args could not be split: a quote is not closed"))?,
        None => Vec::new(),
    };
    let mut process = tokio::process::Command::new(&program);
    process
        .args(&leading)
        .arg(&script)
        .args(&args)
        .current_dir(&context.work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Every process the script starts stays in its hold (its cgroup).
    let mut hold = context.containment.prepare(
        &mut process,
        &format!("{}.{}", command.action_id, command.index),
    );
    let mut child = match process.spawn() {
        Ok(child) => child,
        Err(e) => {
            hold.release(None).await;
            return Err(Failure::new(format!(
                "Starting {} failed: {e}",
                program.display()
            )));
        }
    };
    hold.attach(&child);
    let cap = context.output_cap_bytes;
    let stop_reading = CancellationToken::new();
    let feed = |stream| Some(Feed::new(context.live.clone(), command.clone(), stream));
    let stdout = tokio::spawn(capture(
        child.stdout.take().expect("piped stdout"),
        cap,
        stop_reading.clone(),
        feed(Stream::Stdout),
    ));
    let stderr = tokio::spawn(capture(
        child.stderr.take().expect("piped stderr"),
        cap,
        stop_reading.clone(),
        feed(Stream::Stderr),
    ));
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| Failure::new(format!("Waiting for the script failed: {e}"))),
        _ = tokio::time::sleep(timeout) => Err(Failure {
            message: format!("The script timed out after {} s and was killed", timeout.as_secs()),
            timed_out: true,
        }),
        _ = cancel.cancelled() => Err(Failure::new("Cancelled; the script and every process it started were killed")),
    };
    // Done, timed out or cancelled: whatever the script left running goes
    // too (its whole hold), so the output pipes close.
    hold.kill(Some(&mut child));
    let _ = child.wait().await;
    let status = match status {
        Ok(status) => status,
        Err(failure) => {
            stop_reading.cancel();
            hold.release(Some(&mut child)).await;
            return Err(failure);
        }
    };
    let read_all = async {
        (
            stdout.await.unwrap_or_default(),
            stderr.await.unwrap_or_default(),
        )
    };
    let (script_output, script_errors) = {
        let stop = stop_reading.clone();
        tokio::select! {
            both = read_all => both,
            _ = async {
                tokio::time::sleep(OUTPUT_GRACE).await;
                stop.cancel();
                std::future::pending::<()>().await
            } => unreachable!("the grace only cancels"),
        }
    };
    hold.release(Some(&mut child)).await;
    let exit_code = exit_code(&status);
    let transcript = ScriptTranscript {
        script_name: script_name.to_string(),
        exit_code,
        script_output,
        script_errors,
    };
    let body = serde_json::to_vec(&transcript).map_err(|e| Failure::new(e.to_string()))?;
    tracing::info!(exit_code, "script finished");
    // The transcript goes through the durable outbox, so it survives an
    // unreachable server and an agent restart.
    Ok(Success {
        result: Some(body),
        ..Success::default()
    })
}

fn exit_code(status: &std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    -1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_follow_the_extension() {
        assert_eq!(
            interpreter(Path::new("a.sh")).unwrap().0,
            PathBuf::from("/bin/sh")
        );
        let err = interpreter(Path::new("a.xyz")).unwrap_err();
        assert_eq!(err.message, "no interpreter for .xyz on this device");
    }

    #[tokio::test]
    async fn capture_notes_truncation() {
        let text = capture(&b"0123456789"[..], 4, CancellationToken::new(), None).await;
        assert_eq!(text, "0123\n[output truncated: 6 more bytes not kept]");
    }
}
