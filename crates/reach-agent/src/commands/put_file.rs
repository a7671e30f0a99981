//! PutFile: copies a library file into the working folder, checking its
//! SHA-256. Nothing to upload: the server records where the file went (the
//! path reported with the outcome) as the command's result.

use reach_proto::agent::CommandRef;

use super::{Context, Failure, Success, download_payload};

/// Downloads the library file into the work directory, checking its hash (and signature).
pub async fn run(
    context: &Context,
    command: &CommandRef,
    file_name: &str,
    sha256: &str,
) -> Result<Success, Failure> {
    let path = download_payload(context, command, file_name, sha256).await?;
    tracing::info!(path = %path.display(), "library file put");
    Ok(Success {
        path: Some(path.display().to_string()),
        ..Success::default()
    })
}
