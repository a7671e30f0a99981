//! The live response library: `POST /api/libraryfiles` (multipart upload,
//! streamed to the object store while hashed), `GET /api/libraryfiles`,
//! `GET /api/libraryfiles/{name}` and `DELETE /api/libraryfiles/{name}`.
//!
//! Bytes are stored content-addressed, so replacing a file never changes the
//! bytes a queued action will run; old bytes are deleted once nothing uses them.

use crate::http::Path;
use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use futures::TryStreamExt;
use reach_proto::api::{Collection, LibraryFile};

use super::{Access, authorize};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::files::{FileError, Files};
use crate::http::odata_context;
use crate::store::LibraryRow;
use crate::time::Micros;

/// Longest file name accepted.
pub const MAX_NAME: usize = reach_proto::api::MAX_LIBRARY_NAME;
/// Most parts in one upload.
const MAX_PARTS: usize = 16;
/// Longest text field (Description, ParametersDescription) accepted.
const MAX_TEXT_FIELD: usize = 16 * 1024;

/// Library names: `reach_proto::api::is_safe_library_name`.
pub fn check_name(name: &str) -> ApiResult<()> {
    if reach_proto::api::is_safe_library_name(name) {
        Ok(())
    } else {
        Err(ApiError::InvalidInput(format!(
            "Invalid file name '{}': use 1 to {MAX_NAME} letters, digits, '-', '_' and '.', without '..' or a trailing '.', and not a Windows device name (CON, PRN, AUX, NUL, COM1, LPT1, ...)",
            name.escape_default()
        )))
    }
}

/// An entry as clients read it.
pub fn to_wire(row: LibraryRow) -> LibraryFile {
    LibraryFile {
        odata_context: None,
        file_name: row.file_name,
        sha256: row.sha256,
        description: row.description,
        creation_time: row.creation_time.to_wire(),
        last_updated_time: row.last_updated_time.to_wire(),
        created_by: row.created_by,
        last_updated_by: row.last_updated_by,
        has_parameters: row.has_parameters,
        parameters_description: row.parameters_description,
        size: row.size,
        signature: row.signature,
    }
}

fn parse_bool(field: &str, value: &str) -> ApiResult<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(ApiError::InvalidInput(format!(
            "{field} must be true or false, got '{value}'"
        ))),
    }
}

/// The parsed form, with the file already streamed to a temporary key.
#[derive(Default)]
struct Upload {
    file: Option<(String, String, crate::files::Stored)>,
    description: Option<String>,
    parameters_description: Option<String>,
    has_parameters: bool,
    override_if_exists: bool,
    signature: Option<String>,
}

async fn read_form(
    state: &SharedState,
    mut multipart: Multipart,
    upload: &mut Upload,
) -> ApiResult<()> {
    let mut parts = 0;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(ApiError::BadRequest(format!(
                "The upload has more than {MAX_PARTS} parts"
            )));
        }
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            if upload.file.is_some() {
                return Err(ApiError::BadRequest("Send exactly one File part".into()));
            }
            let file_name = field.file_name().map(str::to_string).ok_or_else(|| {
                ApiError::MissingParameter("File (the part has no filename)".into())
            })?;
            check_name(&file_name)?;
            let temp = format!("tmp/{}", uuid::Uuid::new_v4());
            let max = state.config.limits.library_file_max_bytes;
            let stream = field.map_err(|e| match refused(&e) {
                Some(refusal) => refusal.to_string(),
                None => e.body_text(),
            });
            let stored = state
                .files
                .put_stream(&temp, stream, Some(max))
                .await
                .map_err(|err| match err {
                    FileError::TooLarge(max) => ApiError::PayloadTooLarge(format!(
                        "The file is larger than the library limit of {max} bytes"
                    )),
                    FileError::Body(why) if why.contains(crate::http::slow_body::STALLED) => {
                        ApiError::RequestTimeout(why)
                    }
                    FileError::Body(why) => {
                        ApiError::BadRequest(format!("The upload failed: {why}"))
                    }
                    other => ApiError::internal(other),
                })?;
            upload.file = Some((file_name, temp, stored));
            continue;
        }
        let text = read_text(field, &name).await?;
        match name.as_str() {
            "description" => upload.description = Some(text),
            "parametersdescription" => upload.parameters_description = Some(text),
            "hasparameters" => upload.has_parameters = parse_bool("HasParameters", &text)?,
            "overrideifexists" => {
                upload.override_if_exists = parse_bool("OverrideIfExists", &text)?
            }
            "signature" if !text.trim().is_empty() => {
                reach_client::signing::check_signature_form(&text).map_err(|_| {
                    ApiError::InvalidInput(
                        "Signature must be an Ed25519 signature: 64 bytes in base64".into(),
                    )
                })?;
                upload.signature = Some(text.trim().to_string());
            }
            _ => {} // Unknown fields are ignored, as Defender does.
        }
    }
    Ok(())
}

/// A text part, read a chunk at a time and refused as soon as it passes
/// `MAX_TEXT_FIELD` bytes.
async fn read_text(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
) -> ApiResult<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ApiError::PayloadTooLarge(format!(
                "The {name} part must be at most {MAX_TEXT_FIELD} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::InvalidInput(format!("The {name} part is not UTF-8 text")))
}

fn malformed(e: axum::extract::multipart::MultipartError) -> ApiError {
    refused(&e).unwrap_or_else(|| {
        ApiError::BadRequest(format!(
            "The multipart body is malformed: {}",
            e.body_text()
        ))
    })
}

/// The refusal when one of the body's bounds (`part_headers`, `slow_body`)
/// stopped the stream.
fn refused(e: &axum::extract::multipart::MultipartError) -> Option<ApiError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(slow) = err.downcast_ref::<crate::http::slow_body::SlowBodyError>() {
            return Some(ApiError::RequestTimeout(format!(
                "The upload was cut off: {slow}"
            )));
        }
        if let Some(guard) = err.downcast_ref::<super::part_headers::GuardError>()
            && matches!(guard, super::part_headers::GuardError::HeadersTooLong)
        {
            return Some(ApiError::BadRequest(format!(
                "The multipart body is refused: {guard}"
            )));
        }
        source = err.source();
    }
    None
}

/// `POST /api/libraryfiles` (multipart: the file and its fields).
pub async fn upload(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    notes: crate::audit::Notes,
    request: Request,
) -> ApiResult<Json<LibraryFile>> {
    authorize(&state, &principal, Access::ManageLibrary).await?;
    // Each part's headers are bounded before the parser buffers them.
    let boundary = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(super::part_headers::boundary)
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "Upload library files as 'Content-Type: multipart/form-data' with a boundary"
                    .into(),
            )
        })?;
    let (parts, body) = request.into_parts();
    let guarded = super::part_headers::bounded(
        crate::http::slow_body::guard(body.into_data_stream(), &state.config.http),
        &boundary,
        super::part_headers::MAX_PART_HEADERS,
    );
    let request = Request::from_parts(parts, axum::body::Body::from_stream(guarded));
    let multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|_| {
            ApiError::UnsupportedMediaType(
                "Upload library files as 'Content-Type: multipart/form-data'".into(),
            )
        })?;
    let mut upload = Upload::default();
    let result = read_form(&state, multipart, &mut upload).await;
    if let Some((name, _, stored)) = &upload.file {
        notes.target(name);
        notes.detail("sha256", stored.sha256.as_str());
        notes.detail("size", stored.size);
        notes.detail("overrideIfExists", upload.override_if_exists);
    }
    let temp_key = upload.file.as_ref().map(|(_, temp, _)| temp.clone());
    let outcome = match result {
        Ok(()) => commit(&state, &principal, upload).await,
        Err(err) => Err(err),
    };
    if let Some(temp) = temp_key {
        let _ = state.files.delete(&temp).await;
    }
    let mut file = to_wire(outcome?);
    file.odata_context = Some(odata_context(&state, &headers, "LibraryFiles/$entity"));
    Ok(Json(file))
}

async fn commit(
    state: &SharedState,
    principal: &Principal,
    upload: Upload,
) -> ApiResult<LibraryRow> {
    let (file_name, temp, stored) = upload
        .file
        .ok_or_else(|| ApiError::MissingParameter("File".into()))?;
    if !state.trusted_keys.is_empty() {
        let check = reach_client::signing::Check {
            sha256: &stored.sha256,
            name: &file_name,
            used_for: None,
            accept_v1: state.config.live_response.library_accept_v1_signatures,
        };
        reach_client::signing::verify(&state.trusted_keys, check, upload.signature.as_deref())
            .map_err(|why| {
                ApiError::InvalidInput(format!(
                    "This server only accepts library files signed by a trusted key, and {why}"
                ))
            })?;
    }
    let key = Files::library_key(&principal.tenant_id, &stored.sha256);
    state
        .files
        .rename(&temp, &key)
        .await
        .map_err(ApiError::internal)?;
    let now = Micros::now();
    let row = LibraryRow {
        tenant_id: principal.tenant_id.clone(),
        file_name,
        sha256: stored.sha256.clone(),
        size: stored.size,
        description: upload.description,
        has_parameters: upload.has_parameters,
        parameters_description: upload.parameters_description,
        created_by: principal.name.clone(),
        last_updated_by: None,
        creation_time: now,
        last_updated_time: now,
        signature: upload.signature,
    };
    let replaced = match state
        .store
        .put_library_file(&row, upload.override_if_exists)
        .await
    {
        Ok(replaced) => replaced,
        Err(err) => {
            crate::retention::release_library_blob(state, &principal.tenant_id, &stored.sha256)
                .await;
            return Err(err.into());
        }
    };
    if let Some(old) = &replaced
        && old.sha256 != row.sha256
    {
        crate::retention::release_library_blob(state, &principal.tenant_id, &old.sha256).await;
    }
    tracing::info!(library.file = %row.file_name, sha256 = %row.sha256, bytes = row.size, replaced = replaced.is_some(), "library file stored");
    Ok(state
        .store
        .get_library_file(&principal.tenant_id, &row.file_name)
        .await?)
}

/// `GET /api/libraryfiles`.
pub async fn list(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
) -> ApiResult<Json<Collection<LibraryFile>>> {
    authorize(&state, &principal, Access::ManageLibrary).await?;
    let rows = state.store.list_library_files(&principal.tenant_id).await?;
    Ok(Json(Collection {
        odata_context: odata_context(&state, &headers, "LibraryFiles"),
        count: None,
        value: rows.into_iter().map(to_wire).collect(),
        next_link: None,
    }))
}

/// `GET /api/libraryfiles/{name}`.
pub async fn get(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<LibraryFile>> {
    authorize(&state, &principal, Access::ManageLibrary).await?;
    check_name(&name)?;
    let row = state
        .store
        .get_library_file(&principal.tenant_id, &name)
        .await?;
    let mut file = to_wire(row);
    file.odata_context = Some(odata_context(&state, &headers, "LibraryFiles/$entity"));
    Ok(Json(file))
}

/// `DELETE /api/libraryfiles/{name}`.
pub async fn delete(
    State(state): State<SharedState>,
    principal: Principal,
    Path(name): Path<String>,
    notes: crate::audit::Notes,
) -> ApiResult<StatusCode> {
    notes.target(&name);
    authorize(&state, &principal, Access::ManageLibrary).await?;
    check_name(&name)?;
    let row = state
        .store
        .delete_library_file(&principal.tenant_id, &name)
        .await?;
    notes.detail("sha256", row.sha256.as_str());
    crate::retention::release_library_blob(&state, &principal.tenant_id, &row.sha256).await;
    tracing::info!(library.file = %row.file_name, requestor = %principal.name, "library file deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_restricted() {
        for ok in [
            "script.sh",
            "Tool-1_x.PS1",
            "a",
            "console.sh",
            "com10.sh",
            "nul-check.sh",
            "LPT.ps1",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "../x",
            "x..y",
            "a\0b",
            "ѕcript.sh",
            "a b",
            long.as_str(),
            "CON",
            "nul",
            "NUL.txt",
            "com1.sh",
            "Lpt9",
            "aux.tar.gz",
            "script.",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
