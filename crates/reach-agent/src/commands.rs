//! The live response commands the agent runs, one file each, and what they
//! share: the context (server client, working folder, output cap), library
//! file download with hash check, and the timeout and cancel wrapper. Every
//! failure becomes a human-readable error in the command's `errors`.

pub mod get_file;
pub mod isolate;
pub mod package;
pub mod put_file;
pub mod quarantine;
pub mod run_script;

use std::path::PathBuf;
use std::time::Duration;

use reach_client::AgentClient;
use reach_proto::agent::{Assignment, Outcome, Work};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// What every command needs from the agent.
#[derive(Clone)]
pub struct Context {
    /// The agent's client of its server.
    pub client: AgentClient,
    /// Where PutFile puts files and RunScript runs scripts.
    pub work_dir: PathBuf,
    /// Most bytes of a script's stdout and stderr kept (the rest is counted).
    pub output_cap_bytes: usize,
    /// Keys library files must be signed by (empty: no signature needed).
    pub trusted_keys: Vec<reach_client::signing::TrustedKey>,
    /// GetFile may collect devices, FIFOs and sockets.
    pub allow_special_files: bool,
    /// Signatures of the first format (the SHA-256 alone) are accepted.
    pub accept_v1_signatures: bool,
    /// Where scripts' processes are held (cgroups, markers, records).
    pub containment: std::sync::Arc<crate::containment::Containment>,
    /// A running script's output on its way to the server.
    pub live: std::sync::Arc<crate::live_output::LiveOutput>,
    /// The device's network isolation.
    pub isolation: std::sync::Arc<isolate::Isolation>,
    /// The agent's state file (the quarantine folder lies beside it).
    pub state_path: PathBuf,
    /// This machine's id (the investigation package's manifest names it).
    pub machine_id: String,
}

/// A command failure, with the message shown to the analyst.
#[derive(Debug)]
pub struct Failure {
    /// What the analyst reads.
    pub message: String,
    /// The command was killed for running past its timeout.
    pub timed_out: bool,
}

impl Failure {
    /// A failure that is not a timeout.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            timed_out: false,
        }
    }
}

impl From<reach_client::ClientError> for Failure {
    fn from(err: reach_client::ClientError) -> Self {
        match err {
            // The server's own words say why (a size limit, a cancelled command).
            reach_client::ClientError::Api { message, .. } => Failure::new(message),
            other => Failure::new(format!("Talking to the server failed: {other}")),
        }
    }
}

/// What a command produced: how it ended, and for RunScript the transcript
/// to upload (GetFile streams its file during the command).
pub struct Done {
    /// How it ended.
    pub outcome: Outcome,
    /// The transcript to upload first (RunScript).
    pub result: Option<Vec<u8>>,
}

/// What a command returns on success: the collected file's hash (GetFile),
/// where a put file is (PutFile) and the result bytes still to upload
/// (RunScript).
#[derive(Default)]
pub struct Success {
    /// GetFile: hex SHA-256 of the collected file.
    pub sha256: Option<String>,
    /// PutFile: where the file now is.
    pub path: Option<String>,
    /// RunScript: the transcript to upload.
    pub result: Option<Vec<u8>>,
}

/// Runs one assignment to its outcome, honouring its timeout and `cancel`.
pub async fn execute(
    context: &Context,
    assignment: &Assignment,
    cancel: CancellationToken,
) -> Done {
    let result = match check_signature(context, &assignment.work) {
        Ok(()) => run(context, assignment, cancel).await,
        Err(failure) => Err(failure),
    };
    match result {
        Ok(success) => Done {
            outcome: Outcome::Completed {
                sha256: success.sha256,
                path: success.path,
            },
            result: success.result,
        },
        Err(failure) => Done {
            outcome: Outcome::Failed {
                errors: vec![failure.message],
                timed_out: failure.timed_out,
            },
            result: None,
        },
    }
}

/// With trusted keys configured, a library file is put or run only when
/// one of them signed it; checked before a byte is downloaded (the bytes
/// must then match the signed SHA-256).
fn check_signature(context: &Context, work: &Work) -> Result<(), Failure> {
    if context.trusted_keys.is_empty() {
        return Ok(());
    }
    use reach_client::signing::{Check, Use};
    let (name, sha256, signature, used_for) = match work {
        Work::PutFile {
            file_name,
            sha256,
            signature,
        } => (file_name, sha256, signature, Use::PutFile),
        Work::RunScript {
            script_name,
            sha256,
            signature,
            ..
        } => (script_name, sha256, signature, Use::RunScript),
        Work::GetFile { .. }
        | Work::Isolate { .. }
        | Work::Unisolate
        | Work::Offboard
        | Work::StopAndQuarantineFile { .. }
        | Work::CollectInvestigationPackage => return Ok(()),
    };
    let check = Check {
        sha256,
        name,
        used_for: Some(used_for),
        accept_v1: context.accept_v1_signatures,
    };
    reach_client::signing::verify(&context.trusted_keys, check, signature.as_deref()).map_err(
        |why| {
            tracing::warn!(library.file = %name, sha256 = %sha256, reason = %why, "refused an unsigned or wrongly signed library file");
            Failure::new(format!(
                "Refused '{name}': this agent only puts and runs library files signed by a key it trusts, and {why}"
            ))
        },
    )
}

async fn run(
    context: &Context,
    assignment: &Assignment,
    cancel: CancellationToken,
) -> Result<Success, Failure> {
    let timeout = Duration::from_secs(assignment.timeout_secs.max(1));
    let command = &assignment.command;
    match &assignment.work {
        Work::PutFile {
            file_name, sha256, ..
        } => {
            let payload = Payload {
                command,
                name: file_name,
                sha256,
                inline: assignment.inline_payload.as_deref(),
            };
            guarded(timeout, &cancel, put_file::run(context, &payload)).await
        }
        Work::RunScript {
            script_name,
            sha256,
            args,
            ..
        } => {
            // The script handles its own timeout and cancel, to kill its process tree.
            let payload = Payload {
                command,
                name: script_name,
                sha256,
                inline: assignment.inline_payload.as_deref(),
            };
            run_script::run(context, &payload, args.as_deref(), timeout, &cancel).await
        }
        Work::GetFile { path } => {
            guarded(
                timeout,
                &cancel,
                get_file::run(context, command, path, assignment.chunk_bytes),
            )
            .await
        }
        // Neither is cut short by a cancel or a timeout: each is a few
        // seconds, bounded by `isolate::PROOF`, and one stopped halfway
        // would leave rules without their record.
        Work::Isolate { selective, allow } => context.isolation.isolate(*selective, allow).await,
        Work::Unisolate => context
            .isolation
            .release()
            .await
            .map(|_| Success::default()),
        // The rest (the credential deleted, the agent stopped) follows the
        // server's 410 at the next connection, once the report is in.
        Work::Offboard => context.isolation.leave().await.map(|_| Success::default()),
        Work::CollectInvestigationPackage => {
            guarded(
                timeout,
                &cancel,
                package::run(context, command, assignment.chunk_bytes),
            )
            .await
        }
        Work::StopAndQuarantineFile { sha1 } => {
            guarded(
                timeout,
                &cancel,
                quarantine::run(command, sha1, &context.state_path),
            )
            .await
        }
    }
}

async fn guarded<T>(
    timeout: Duration,
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::select! {
        result = tokio::time::timeout(timeout, work) => result.unwrap_or_else(|_| Err(Failure {
            message: format!("The command timed out after {} s", timeout.as_secs()),
            timed_out: true,
        })),
        _ = cancel.cancelled() => Err(Failure::new("Cancelled")),
    }
}

/// A library file name is used as a file name in the working folder: it must
/// not be able to point anywhere else.
fn safe_name(name: &str) -> Result<&str, Failure> {
    if reach_proto::api::is_safe_library_name(name) {
        Ok(name)
    } else {
        Err(Failure::new(format!(
            "Refusing unsafe library file name '{}'",
            name.escape_default()
        )))
    }
}

/// The chunks of a command's upload the server already holds, by number:
/// what a resumed transfer need not send again.
pub async fn held_chunks(
    context: &Context,
    command: &reach_proto::agent::CommandRef,
) -> Result<std::collections::HashMap<u32, reach_proto::agent::ChunkInfo>, Stop> {
    Ok(context
        .client
        .chunks(&command.action_id, command.index)
        .await
        .map_err(classify)?
        .into_iter()
        .map(|c| (c.n, c))
        .collect())
}

/// Runs `attempt` until it succeeds or fails for good, waiting between
/// tries (from `RETRY_MIN`, doubling up to `RETRY_MAX`) while the server
/// is unreachable; `what` names the transfer in the log.
pub async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Stop>>,
{
    let mut delay = RETRY_MIN;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(Stop::Fatal(failure)) => return Err(failure),
            Err(Stop::Retry(why)) => {
                tracing::warn!(error = %why, delay_ms = delay.as_millis() as u64, "{what} paused; resuming");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Waits between attempts while the server is unreachable.
pub const RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a transfer attempt stopped.
pub enum Stop {
    /// The command fails (the server refused, or a local file failed).
    Fatal(Failure),
    /// The server was unreachable or the connection broke; try again.
    Retry(String),
}

/// Whether a failed call ends the command (the server refused) or may be tried again (it was unreachable).
pub fn classify(err: reach_client::ClientError) -> Stop {
    match err {
        reach_client::ClientError::Api { status, .. } if status.is_client_error() => {
            Stop::Fatal(err.into())
        }
        other => Stop::Retry(other.to_string()),
    }
}

/// The library file a PutFile or RunScript command needs.
pub struct Payload<'a> {
    /// The command it belongs to.
    pub command: &'a reach_proto::agent::CommandRef,
    /// The name it is put under in the working folder.
    pub name: &'a str,
    /// Hex SHA-256 of the file, as recorded when the action was submitted.
    pub sha256: &'a str,
    /// The file itself (base64), when the server sent it with the command.
    pub inline: Option<&'a str>,
}

/// Puts the command's library file into the working folder, checking the
/// whole file's SHA-256 before it becomes visible under its name: the bytes
/// that came with the command when there are any, or else a download that
/// checks every chunk's SHA-256 as it arrives and resumes from the next
/// chunk after a break, so at most one chunk is fetched twice.
pub async fn fetch_payload(context: &Context, payload: &Payload<'_>) -> Result<PathBuf, Failure> {
    let name = safe_name(payload.name)?;
    let target = context.work_dir.join(name);
    let partial = context.work_dir.join(format!(".{name}.partial"));
    match payload.inline {
        Some(inline) => write_inline(&partial, inline, payload.sha256).await?,
        None => download(context, payload.command, &partial, payload.sha256).await?,
    }
    tokio::fs::rename(&partial, &target)
        .await
        .map_err(|e| Failure::new(format!("Saving {name} in the working folder failed: {e}")))?;
    Ok(target)
}

fn writing(partial: &std::path::Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::new(format!("Writing {} failed: {e}", partial.display()))
}

/// Writes the bytes that came with the command to `partial`, once they
/// match `sha256`.
async fn write_inline(
    partial: &std::path::Path,
    inline: &str,
    sha256: &str,
) -> Result<(), Failure> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inline)
        .map_err(|_| {
            Failure::new("The server sent the library file in a form that is not base64")
        })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(Failure::new(format!(
            "The library file sent with the command has SHA-256 {actual}, not the library's {sha256}"
        )));
    }
    tokio::fs::write(partial, &bytes)
        .await
        .map_err(writing(partial))
}

/// Downloads the library file into `partial`, chunk by chunk, resuming
/// after a break; removes it unless the whole file matches `sha256`.
async fn download(
    context: &Context,
    command: &reach_proto::agent::CommandRef,
    partial: &std::path::Path,
    sha256: &str,
) -> Result<(), Failure> {
    let io = writing(partial);
    let mut download = Download {
        file: tokio::fs::File::create(partial).await.map_err(&io)?,
        hasher: Sha256::new(),
        next_chunk: 0,
    };
    let mut delay = RETRY_MIN;
    loop {
        match download.fetch(context, command).await {
            Ok(()) => break,
            Err(Stop::Fatal(failure)) => {
                let _ = tokio::fs::remove_file(partial).await;
                return Err(failure);
            }
            Err(Stop::Retry(why)) => {
                tracing::warn!(error = %why, chunk = download.next_chunk, delay_ms = delay.as_millis() as u64, "downloading the library file paused; resuming");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
    download.file.flush().await.map_err(&io)?;
    drop(download.file);
    let actual = hex::encode(download.hasher.finalize());
    if !actual.eq_ignore_ascii_case(sha256) {
        let _ = tokio::fs::remove_file(partial).await;
        return Err(Failure::new(format!(
            "The downloaded file's SHA-256 {actual} does not match the library's {sha256}"
        )));
    }
    Ok(())
}

/// A library file download in progress: the verified chunks written and
/// hashed so far.
struct Download {
    file: tokio::fs::File,
    hasher: Sha256,
    next_chunk: u32,
}

fn header<T: std::str::FromStr>(
    response: &reach_client::reqwest::Response,
    name: &str,
) -> Option<T> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

impl Download {
    /// Fetches the remaining chunks, each checked against its SHA-256
    /// before it is written; a broken chunk is fetched again, nothing else.
    async fn fetch(
        &mut self,
        context: &Context,
        command: &reach_proto::agent::CommandRef,
    ) -> Result<(), Stop> {
        use reach_proto::agent::paths;
        loop {
            let response = context
                .client
                .payload(&command.action_id, command.index, self.next_chunk)
                .await
                .map_err(classify)?;
            let chunks: u32 = header(&response, paths::CHUNKS).ok_or_else(|| {
                Stop::Fatal(Failure::new(
                    "The server sent a payload chunk without its count",
                ))
            })?;
            let expected: String = header(&response, paths::SHA256).ok_or_else(|| {
                Stop::Fatal(Failure::new(
                    "The server sent a payload chunk without its SHA-256",
                ))
            })?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| Stop::Retry(format!("the download broke: {e}")))?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != expected {
                return Err(Stop::Retry(format!(
                    "chunk {} arrived with SHA-256 {actual} instead of {expected}",
                    self.next_chunk
                )));
            }
            self.file.write_all(&bytes).await.map_err(|e| {
                Stop::Fatal(Failure::new(format!(
                    "Writing the library file failed: {e}"
                )))
            })?;
            self.hasher.update(&bytes);
            self.next_chunk += 1;
            if self.next_chunk >= chunks {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn context(dir: &std::path::Path) -> Context {
        Context {
            client: AgentClient::new("http://127.0.0.1:9", "m.secret", None),
            work_dir: dir.to_path_buf(),
            output_cap_bytes: 1 << 20,
            trusted_keys: Vec::new(),
            allow_special_files: false,
            accept_v1_signatures: false,
            containment: crate::containment::Containment::open(dir, "test"),
            live: Default::default(),
            isolation: std::sync::Arc::new(isolate::Isolation::new(
                None,
                &dir.join("state.json"),
                Vec::new(),
                std::sync::Arc::new(crate::tls::client_config(None).unwrap()),
            )),
            state_path: dir.join("state.json"),
            machine_id: "m1".into(),
        }
    }

    /// A file that came with its command is checked exactly as a downloaded
    /// one: bytes that do not match the recorded SHA-256 fail the command
    /// and never appear under their name; matching bytes do.
    #[tokio::test]
    async fn an_inline_file_is_put_only_when_it_matches_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        let command = reach_proto::agent::CommandRef {
            action_id: "a".into(),
            index: 0,
        };
        let bytes = b"echo hi\n";
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let wrong = Payload {
            command: &command,
            name: "x.sh",
            sha256: &"ab".repeat(32),
            inline: Some(&encoded),
        };
        let failure = fetch_payload(&context, &wrong).await.unwrap_err();
        assert!(
            failure.message.contains("not the library's"),
            "{}",
            failure.message
        );
        assert!(!dir.path().join("x.sh").exists());
        let sha256 = hex::encode(Sha256::digest(bytes));
        let right = Payload {
            sha256: &sha256,
            ..wrong
        };
        let path = fetch_payload(&context, &right).await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), bytes);
        let garbled = Payload {
            inline: Some("not base64!"),
            ..right
        };
        assert!(fetch_payload(&context, &garbled).await.is_err());
    }
}
