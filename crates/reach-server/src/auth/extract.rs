//! `Principal` as an axum extractor: the caller of an API request, from
//! `Authorization: Bearer <token>` or (from the console) the session
//! cookie, verified and then admitted against its account (`admit`:
//! disabled accounts and rotated secrets stop within a second everywhere,
//! at once on the node that made the change). It records the caller in the
//! request's audit notes. Every refusal is a 401 in the error envelope and
//! never repeats the token.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::{Principal, session_cookie};
use crate::SharedState;
use crate::error::{ApiError, ApiResult};

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(value: &axum::http::HeaderValue) -> ApiResult<String> {
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("The Authorization header is not valid text".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("Use 'Authorization: Bearer <token>'".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(
            "Use 'Authorization: Bearer <token>'".into(),
        ));
    }
    Ok(token.trim().to_string())
}

impl FromRequestParts<SharedState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => bearer_token(value)?,
            // The web console's session cookie, when the request may use it.
            None => session_cookie::token(&parts.headers)?.ok_or_else(|| {
                ApiError::Unauthorized("The Authorization header is missing".into())
            })?,
        };
        let mut principal = state
            .auth
            .verify(&token)
            .await
            .map_err(|err| ApiError::Unauthorized(err.0))?;
        super::admit(state.store.as_ref(), &state.admitted, &mut principal)
            .await
            .map_err(|err| match err {
                super::AdmitError::Refused(why) => ApiError::Unauthorized(why.0),
                super::AdmitError::Store(err) => err.into(),
            })?;
        if let Some(notes) = parts.extensions.get::<crate::audit::Notes>() {
            notes.caller(principal.actor(), &principal.tenant_id);
        }
        Ok(principal)
    }
}
