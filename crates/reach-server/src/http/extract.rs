//! Extractors every handler shares whose refusals must leave in the error
//! envelope rather than as axum's plain text. `Path` is axum's path
//! extractor with its rejection (a segment that is not valid
//! percent-encoded UTF-8, `/api/machines/%FF`) turned into `ApiError`.
//! Nothing here reads the store.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The route's path parameters, or `400 InvalidInput` naming the problem.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| {
                ApiError::InvalidInput(format!(
                    "The path {} is not valid: {}",
                    parts.uri.path(),
                    rejection.body_text()
                ))
            })
    }
}
