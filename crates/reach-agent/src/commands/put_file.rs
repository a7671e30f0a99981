//! PutFile: copies a library file into the working folder, checking its
//! SHA-256. Nothing to upload: the server records where the file went (the
//! path reported with the outcome) as the command's result.

use super::{Context, Failure, Payload, Success, fetch_payload};

/// Puts the library file into the work directory, checking its hash (its
/// signature was checked before).
pub async fn run(context: &Context, payload: &Payload<'_>) -> Result<Success, Failure> {
    let path = fetch_payload(context, payload).await?;
    tracing::info!(path = %path.display(), "library file put");
    Ok(Success {
        path: Some(path.display().to_string()),
        ..Success::default()
    })
}
