//! Request bodies read whole: JSON (`JsonBody`, `OptionalJsonBody`) and
//! bytes (`RawBody`), bounded by `limits.json_body_max_bytes` and by
//! `http.body_timeout_secs`, every refusal in the error envelope with
//! Defender's codes (415, 413, 408, 400 `InvalidRequestBody`). Streamed
//! uploads do not come here; they read their body as a stream.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::SharedState;
use crate::error::{ApiError, ApiResult};

/// A JSON request body, with Defender's errors: 415 without a JSON content
/// type, 413 when too large, 400 `InvalidRequestBody` when malformed.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let bytes = read_body(request, state).await?;
        parse_json(&headers, &bytes).map(JsonBody)
    }
}

/// A whole request body as bytes, bounded like every body, its refusals
/// (413 past the limit) in the envelope.
pub struct RawBody(pub Bytes);

impl FromRequest<SharedState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        read_body(request, state).await.map(RawBody)
    }
}

/// Like `JsonBody`, but an empty body is accepted (as `None`), whatever its content type.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<SharedState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&headers, &bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// A whole (bounded) body, which must arrive within `http.body_timeout_secs`
/// however slowly it trickles in: past it, 408.
async fn read_body(request: Request, state: &SharedState) -> ApiResult<Bytes> {
    let limit = std::time::Duration::from_secs(state.config.http.body_timeout_secs.max(1));
    let read = tokio::time::timeout(limit, Bytes::from_request(request, state))
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "The request body did not arrive within {} s",
                limit.as_secs()
            ))
        })?;
    read.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("The request body is larger than the server accepts".into())
        } else {
            ApiError::BadRequest(format!("The request body could not be read: {rejection}"))
        }
    })
}

fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<T> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let is_json = mime.eq_ignore_ascii_case("application/json")
        || (mime.to_ascii_lowercase().starts_with("application/")
            && mime.to_ascii_lowercase().ends_with("+json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Expected 'Content-Type: application/json', got '{content_type}'"
        )));
    }
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::InvalidRequestBody(format!("Request body is incorrect: {err}")))
}
