//! `POST /{tenant}/oauth2/token` (v1, `resource=`) and
//! `POST /{tenant}/oauth2/v2.0/token` (v2, `scope=`): the client-credentials
//! grant, answering like Entra ID with `expires_in` as a JSON number. Any
//! resource or scope is accepted. Secrets are checked through the gate
//! (`auth::secrets`) and never logged.

use std::collections::HashMap;

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use reach_proto::api::TokenResponse;

use crate::SharedState;
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::http::RawBody;
use crate::store::StoreError;

/// `POST /{tenant}/oauth2/token` and `/oauth2/v2.0/token`: the client-credentials grant.
pub async fn token(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    notes: crate::audit::Notes,
    RawBody(body): RawBody,
) -> ApiResult<Json<TokenResponse>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(ApiError::UnsupportedMediaType(
            "The token endpoint expects 'Content-Type: application/x-www-form-urlencoded'".into(),
        ));
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::MissingParameter(name.to_string()))
    };
    let grant = field("grant_type")?;
    if grant != "client_credentials" {
        return Err(ApiError::InvalidInput(format!(
            "grant_type '{grant}' is not supported; use client_credentials"
        )));
    }
    let client_id = field("client_id")?;
    let secret = field("client_secret")?;
    let invalid = || ApiError::Unauthorized("Invalid client id or secret for this tenant".into());
    use crate::audit::Actor;
    // An unknown app's attempt is recorded outside any tenant.
    notes.claimed(Actor::app(client_id, ""), "");
    let app = match state.store.get_app(client_id).await {
        Ok(app) => app,
        Err(StoreError::NotFound(_)) => return Err(invalid()),
        Err(err) => return Err(err.into()),
    };
    if !app.tenant_id.eq_ignore_ascii_case(&tenant) {
        return Err(invalid());
    }
    notes.claimed(Actor::app(client_id, &app.name), &app.tenant_id);
    let valid = state.gate.verify(secret, &app.secret_hash).await?;
    if valid && !auth::secrets::is_fast(&app.secret_hash) {
        // A secret hashed with argon2 before the fast hash existed: store
        // the fast hash now, so that later checks cost microseconds.
        let fast = auth::secrets::hash_client_secret(secret);
        if let Err(err) = state
            .store
            .rehash_app_secret(&app.client_id, &app.secret_hash, &fast)
            .await
        {
            tracing::warn!(app.id = %app.client_id, error = %err, "could not store the secret's fast hash");
        }
    }
    if !valid {
        tracing::info!(app.id = %app.client_id, "token request with a wrong secret");
        return Err(invalid());
    }
    if app.disabled {
        tracing::info!(app.id = %app.client_id, "token request for a disabled app");
        return Err(ApiError::Unauthorized("The app is disabled".into()));
    }
    let access_token = state.auth.issue(&app).map_err(ApiError::internal)?;
    Ok(Json(TokenResponse {
        token_type: "Bearer".into(),
        expires_in: state.auth.lifetime_secs(),
        ext_expires_in: state.auth.lifetime_secs(),
        access_token,
    }))
}
