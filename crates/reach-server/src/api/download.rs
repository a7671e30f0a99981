//! Result download links. `GET .../GetLiveResponseResultDownloadLink(index=N)`
//! mints a fresh link, shaped like Defender's Azure SAS URL: read-only, with
//! its expiry in `se` and an HMAC-SHA256 `sig` over the blob path, expiry and
//! the tenant it was issued to (`tid`).
//! `GET /download/...` serves the bytes to anyone holding a valid link (no
//! Authorization header needed), streaming from the object store. With S3
//! the link is instead a presigned S3 GET URL, as Defender's are presigned
//! blob URLs, and the bytes go straight from the object store.

use crate::http::Path;
use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use reach_proto::agent::Work;
use reach_proto::api::{CommandStatus, StringValue};
use sha2::Sha256;

use super::{Access, authorize};
use crate::SharedState;
use crate::auth::{Principal, constant_time_eq};
use crate::error::{ApiError, ApiResult};
use crate::files::{FileError, Files};
use crate::http::{base_url, odata_context};
use crate::time::Micros;
use futures::{StreamExt, TryStreamExt};

const SAS_VERSION: &str = "2019-07-07";

/// The link's signature over its path, its expiry and the tenant it was
/// issued to (`tid`, so that the download is recorded in that tenant's
/// audit trail).
fn sign(key: &[u8], path: &str, expiry: &str, tenant_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.as_bytes());
    mac.update(b"\n");
    mac.update(tenant_id.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `results/{a}/{i}/segments/{n}/{size}` → (`results/{a}/{i}/segments`, n,
/// size); also the `.../chunks/...` of results collected before segments.
fn chunked(key: &str) -> Option<(&str, u32, u64)> {
    let (rest, size) = key.rsplit_once('/')?;
    let (prefix, chunks) = rest.rsplit_once('/')?;
    if !(prefix.ends_with("/segments") || prefix.ends_with("/chunks")) {
        return None;
    }
    Some((prefix, chunks.parse().ok()?, size.parse().ok()?))
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The file name a result is served under.
fn result_file_name(work: &Work) -> String {
    match work {
        Work::RunScript { .. } => "transcript.json".into(),
        Work::GetFile { path } => {
            let base = path
                .rsplit(['/', '\\'])
                .find(|s| !s.is_empty())
                .unwrap_or("file");
            let safe: String = base
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{safe}.gz")
        }
        Work::PutFile { .. } => "putfile.json".into(),
        Work::CollectInvestigationPackage => "package.zip".into(),
        other => format!("{}.json", other.kind().to_ascii_lowercase()),
    }
}

fn content_type(file_name: &str) -> &'static str {
    if file_name.ends_with(".json") {
        "application/json"
    } else if file_name.ends_with(".zip") {
        "application/zip"
    } else {
        "application/gzip"
    }
}

/// `GET /api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=N)`.
pub async fn link(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path((id, args)): Path<(String, String)>,
    notes: crate::audit::Notes,
) -> ApiResult<Json<StringValue>> {
    notes.target(format!("{id}/{args}"));
    authorize(&state, &principal, Access::DownloadResults).await?;
    let index: u32 = args
        .strip_prefix("index=")
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::InvalidInput(format!(
                "Expected GetLiveResponseResultDownloadLink(index=N) with N a command index, got ({args})"
            ))
        })?;
    let url = command_link(&state, &principal, &headers, &notes, &id, index).await?;
    Ok(Json(StringValue {
        odata_context: odata_context(&state, &headers, "Edm.String"),
        value: url,
    }))
}

/// `GET /api/machineactions/{id}/getPackageUri`: the investigation
/// package's link (a zip, served as it is), once the collection
/// Succeeded; 404 `ResourceNotFound` before, and for another action type.
pub async fn package_uri(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    notes: crate::audit::Notes,
) -> ApiResult<Json<StringValue>> {
    notes.target(format!("{id}/getPackageUri"));
    authorize(&state, &principal, Access::PackageUri).await?;
    let action = super::machine_actions::visible_action(&state, &principal, &id).await?;
    if action.kind != reach_proto::api::ActionType::CollectInvestigationPackage {
        return Err(ApiError::ResourceNotFound(format!(
            "Action {id} is {}, not an investigation package collection",
            action.kind
        )));
    }
    let url = command_link(&state, &principal, &headers, &notes, &id, 0).await?;
    Ok(Json(StringValue {
        odata_context: odata_context(&state, &headers, "Edm.String"),
        value: url,
    }))
}

/// A fresh link to command `index` of action `id` once it Completed with a
/// stored result; 404 `ResourceNotFound` saying why otherwise.
async fn command_link(
    state: &SharedState,
    principal: &Principal,
    headers: &HeaderMap,
    notes: &crate::audit::Notes,
    id: &str,
    index: u32,
) -> ApiResult<String> {
    let action = super::machine_actions::visible_action(state, principal, id).await?;
    notes.machine(&action.machine_id);
    let command = super::machine_actions::command_of(&action, index)?;
    match command.status {
        CommandStatus::Completed => {}
        CommandStatus::Failed => {
            return Err(ApiError::ResourceNotFound(format!(
                "Command {index} failed, so it has no result; its errors are in the action's commands"
            )));
        }
        CommandStatus::Created | CommandStatus::InProgress => {
            return Err(ApiError::ResourceNotFound(format!(
                "Command {index} is {}; its result is available once it has Completed",
                command.status
            )));
        }
    }
    let blob = command
        .result
        .as_ref()
        .ok_or_else(|| match command.result_deleted {
            Some(when) => ApiError::ResourceNotFound(format!(
                "Command {index}'s result was deleted at {} after the retention period ({} days)",
                when.to_wire(),
                state.config.retention.results_days
            )),
            None => ApiError::ResourceNotFound(format!("Command {index} has no stored result")),
        })?;
    result_link(state, headers, &principal.tenant_id, blob, &command.work).await
}

/// A fresh link to a stored result: a presigned S3 GET URL where the
/// object store presigns (and the result is not kept in the database), else
/// a link to this server signed for `tenant_id`. Batch results use it too.
pub async fn result_link(
    state: &SharedState,
    headers: &HeaderMap,
    tenant_id: &str,
    blob: &crate::store::ResultBlob,
    work: &Work,
) -> ApiResult<String> {
    let ttl = state.config.live_response.download_link_ttl_secs;
    let file_name = result_file_name(work);
    // A result kept in the database is served by the nodes, on any store.
    let presigned = match blob.inline_command() {
        Some(_) => None,
        None => state
            .files
            .presigned_get(
                &blob.key,
                std::time::Duration::from_secs(ttl),
                &file_name,
                content_type(&file_name),
            )
            .await
            .map_err(ApiError::internal)?,
    };
    if let Some(url) = presigned {
        // The object store serves the bytes; they never pass through a node.
        return Ok(url.to_string());
    }
    // A chunked result's link names its chunk count and size, under the signature.
    let path = match blob.chunks {
        Some(chunks) => format!("{}/{chunks}/{}/{file_name}", blob.key, blob.size,),
        None => format!("{}/{file_name}", blob.key),
    };
    let expiry = Micros::now().plus_secs(ttl).to_wire_seconds();
    let sig = sign(state.auth.link_key(), &path, &expiry, tenant_id);
    Ok(format!(
        "{}/download/{path}?se={}&sp=r&sv={SAS_VERSION}&sr=b&tid={}&sig={}",
        base_url(state, headers),
        encode(&expiry),
        encode(tenant_id),
        encode(&sig)
    ))
}

/// `GET /download/...`: a result through a signed link, without a token.
pub async fn download(
    State(state): State<SharedState>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    notes: crate::audit::Notes,
) -> ApiResult<Response> {
    let denied = |why: &str| ApiError::Forbidden(format!("Download link refused: {why}"));
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(expiry), Some(sig)) = (param("se"), param("sig")) else {
        return Err(denied("the link has no signature"));
    };
    if param("sp") != Some("r") {
        return Err(denied("the link is not read-only"));
    }
    let tenant_id = param("tid").unwrap_or_default();
    let expected = sign(state.auth.link_key(), &path, expiry, tenant_id);
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return Err(denied("the signature does not match"));
    }
    notes.claimed(crate::audit::Actor::link(), tenant_id);
    notes.target(&path);
    let expires = Micros::parse(expiry).ok_or_else(|| denied("the expiry is malformed"))?;
    if Micros::now() >= expires {
        return Err(denied("the link has expired; request a new one"));
    }
    let (key, file_name) = path
        .rsplit_once('/')
        .ok_or_else(|| denied("the path is malformed"))?;
    if let Some(command) = crate::store::inline_result_command(key) {
        let bytes = state
            .store
            .inline_result(tenant_id, &command)
            .await
            .map_err(|err| match err {
                crate::store::StoreError::NotFound(_) => {
                    ApiError::ResourceNotFound("The result is no longer stored".into())
                }
                other => ApiError::internal(other),
            })?;
        let size = bytes.len() as u64;
        return Ok(attachment(Body::from(bytes), size, file_name));
    }
    if !(key.starts_with("results/") || key.starts_with("transcripts/")) {
        return Err(denied("the path is malformed"));
    }
    let gone = |err: FileError| match err {
        FileError::NotFound(_) => {
            ApiError::ResourceNotFound("The result is no longer stored".into())
        }
        other => ApiError::internal(other),
    };
    let (size, stream) = match chunked(key) {
        Some((prefix, chunks, size)) => {
            let parts = Files::result_parts(prefix, chunks);
            // Fail now, not mid-body, if the result is gone.
            state.files.check_exists(&parts[0]).await.map_err(gone)?;
            let stream = state.files.concat(parts);
            (size, stream.map_err(std::io::Error::other).boxed())
        }
        None => {
            let (size, stream) = state.files.get_stream(key).await.map_err(gone)?;
            (size, stream.map_err(std::io::Error::other).boxed())
        }
    };
    Ok(attachment(Body::from_stream(stream), size, file_name))
}

/// A result's bytes as a download named `file_name`.
fn attachment(body: Body, size: u64, file_name: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file_name)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}
