//! The console's session cookie as the API reads it: the cookie's name,
//! and the header (`X-Requested-With: reach-console`) without which the
//! cookie does not count, since another site's form can make a browser
//! send a cookie but not that header. The console sets the cookie; this
//! module only reads it, and never logs it.

use axum::http::{HeaderMap, header};

use crate::error::{ApiError, ApiResult};

/// The session cookie's name.
pub const COOKIE: &str = "reach_session";
/// The header (and value) a console request must carry for its cookie to count.
pub const REQUESTED_WITH: &str = "reach-console";

/// The session token from the cookie, when the request may use it.
/// A cookie without `X-Requested-With: reach-console` is refused: it may
/// come from another site's form.
pub fn token(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(token) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let marked = headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == REQUESTED_WITH);
    if !marked {
        return Err(ApiError::Unauthorized(format!(
            "A console session is only accepted with the header X-Requested-With: {REQUESTED_WITH}"
        )));
    }
    Ok(Some(token))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}
