//! The HTTP surface: routing, path normalisation, and the pieces every
//! handler shares (the caller's identity, permission and rate checks, JSON
//! bodies, the public base URL). One file per resource below.
//!
//! Handlers convert store rows to reach-proto types here; nothing below this
//! module serialises internal rows. Every error leaves through `ApiError`.

pub mod audit_log;
pub mod by_address;
pub mod download;
pub mod extract;
pub mod library;
pub mod live_response;
pub mod machine_actions;
pub mod machine_tags;
pub mod machines;
pub mod paging;
pub mod part_headers;
pub mod paths;
pub mod slow_body;
pub mod token;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post, put};
use reach_proto::agent::paths as agents_paths;
use serde::de::DeserializeOwned;

use crate::SharedState;
use crate::agents;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::Window;

pub fn router(state: SharedState) -> Router {
    let json_limit = state.config.limits.json_body_max_bytes;
    Router::new()
        .route("/{tenant}/oauth2/token", post(token::token))
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route("/api/machines", get(machines::list))
        .route("/api/machines/{id}", get(machines::get))
        .route("/api/machines/{id}/tags", post(machine_tags::tag_one))
        .route(
            "/api/machines/addorremovetagformultiplemachines",
            post(machine_tags::tag_many),
        )
        .route("/api/machines/findbytag", get(machine_tags::find_by_tag))
        .route(
            "/api/machines/{id}/runliveresponse",
            post(live_response::run),
        )
        .route("/api/auditlog", get(audit_log::list))
        .route("/api/machineactions", get(machine_actions::list))
        .route("/api/machineactions/{id}", get(machine_actions::get))
        .route(
            "/api/machineactions/{id}/cancel",
            post(machine_actions::cancel),
        )
        .route(
            "/api/machineactions/{id}/getliveresponseresultdownloadlink/{args}",
            get(download::link),
        )
        .route(
            "/api/libraryfiles",
            get(library::list)
                .post(library::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/libraryfiles/{name}",
            get(library::get).delete(library::delete),
        )
        .route("/download/{*path}", get(download::download))
        .route(agents_paths::ENROLL, post(agents::gateway::enroll))
        .route(agents_paths::CONNECT, get(agents::gateway::connect))
        .route(
            "/agent/v1/commands/{action}/{index}/payload",
            get(agents::transfer::payload),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/result",
            put(agents::transfer::result).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/chunks",
            get(agents::transfer::list_chunks),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/chunks/{n}",
            put(agents::transfer::put_chunk).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/complete",
            post(agents::transfer::complete),
        )
        .route("/", get(crate::console::index))
        .route("/console/{file}", get(crate::console::asset))
        .route(
            "/console/session",
            get(crate::console::current)
                .post(crate::console::sign_in)
                .delete(crate::console::sign_out),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            by_address::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record_api,
        ))
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::map_response(
            crate::console::security_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forwarding,
        ))
        .with_state(state)
}

/// `GET /readyz`: 200 when the database and the object store answer, else 503.
async fn readyz(
    axum::extract::State(state): axum::extract::State<SharedState>,
) -> ApiResult<&'static str> {
    state
        .store
        .ping()
        .await
        .map_err(|err| ApiError::Unavailable(format!("The database does not answer: {err}")))?;
    state
        .files
        .probe()
        .await
        .map_err(|err| ApiError::Unavailable(format!("The object store does not answer: {err}")))?;
    Ok("ready")
}

/// An unknown route. Under `/api/machines/{id}/...` the machine is looked
/// up first, so that an unknown machine answers `ResourceNotFound` on every
/// machine route, as Defender's do (Kibana's connector tests its connection
/// by expecting that code from an action on a machine that does not exist).
async fn not_found(
    axum::extract::State(state): axum::extract::State<SharedState>,
    request: Request,
) -> ApiError {
    let path = request.uri().path().to_string();
    let unknown = || ApiError::NotFound(format!("No resource at {path}"));
    let Some(id) = path
        .strip_prefix("/api/machines/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(id, _)| id)
    else {
        return unknown();
    };
    let Ok(id) = percent_encoding::percent_decode_str(id).decode_utf8() else {
        return ApiError::InvalidInput(format!("The path {path} is not valid UTF-8"));
    };
    let (mut parts, _) = request.into_parts();
    let principal = match Principal::from_request_parts(&mut parts, &state).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    match visible_machine(&state, &principal, &id).await {
        Ok(_) => unknown(),
        Err(err) => err,
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

/// Each API's rate limit budget, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    RunLiveResponse,
    Other(&'static str),
}

/// Checks the caller holds one of `roles` (403) and is within the API's rate
/// limit (429).
pub async fn authorize(
    state: &SharedState,
    principal: &Principal,
    roles: &[&str],
    api: Api,
) -> ApiResult<()> {
    if !principal.has_any(roles) {
        return Err(ApiError::Forbidden(format!(
            "The caller lacks the permission for this operation; it needs one of: {}",
            roles.join(", ")
        )));
    }
    let limits = &state.config.limits;
    let (name, windows) = match api {
        Api::RunLiveResponse => (
            "runliveresponse",
            vec![Window::per_minute(limits.run_live_response_per_minute)],
        ),
        Api::Other(name) => (
            name,
            vec![
                Window::per_minute(limits.api_per_minute),
                Window::per_hour(limits.api_per_hour),
            ],
        ),
    };
    let key = format!("{}/{name}", principal.rate_key());
    state
        .limiter
        .check(
            state.store.as_ref(),
            &key,
            &windows,
            crate::time::Micros::now(),
        )
        .await?
        .inspect_err(|_| crate::metrics::Metrics::add(&state.metrics.rate_limited, 1))
        .map_err(|retry_after_secs| ApiError::TooManyRequests {
            message: format!("Rate limit reached for {name}; retry in {retry_after_secs} s"),
            retry_after_secs,
        })
}

/// A machine of the caller's tenant and device groups, by id or name.
/// Outside its groups a machine answers as one that does not exist (404),
/// as Defender's do. A name that several visible machines carry answers
/// 409 listing their ids.
pub async fn visible_machine(
    state: &SharedState,
    principal: &Principal,
    id_or_name: &str,
) -> ApiResult<crate::store::MachineRow> {
    Ok(crate::store::resolve_machine(
        state.store.as_ref(),
        &principal.tenant_id,
        id_or_name,
        &principal.scope,
    )
    .await?)
}

/// `query` narrowed to the machines of the caller's device groups (through
/// the entity's `machineTags`); None when the caller may see no machine.
pub fn scoped(
    mut query: crate::odata::Query,
    scope: &crate::store::Scope,
) -> Option<crate::odata::Query> {
    use crate::odata::{Expr, Literal};
    let crate::store::Scope::Tags(tags) = scope else {
        return Some(query);
    };
    if tags.is_empty() {
        return None;
    }
    let within = Expr::In {
        field: "machineTags".into(),
        values: tags.iter().cloned().map(Literal::Text).collect(),
    };
    query.filter = Some(match query.filter.take() {
        Some(filter) => Expr::And(Box::new(filter), Box::new(within)),
        None => within,
    });
    Some(query)
}

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
            None => crate::console::session_token(&parts.headers)?.ok_or_else(|| {
                ApiError::Unauthorized("The Authorization header is missing".into())
            })?,
        };
        let mut principal = state
            .auth
            .verify(&token)
            .await
            .map_err(|err| ApiError::Unauthorized(err.0))?;
        crate::auth::admit(state.store.as_ref(), &mut principal)
            .await
            .map_err(|err| match err {
                crate::auth::AdmitError::Refused(why) => ApiError::Unauthorized(why.0),
                crate::auth::AdmitError::Store(err) => err.into(),
            })?;
        if let Some(notes) = parts.extensions.get::<crate::audit::Notes>() {
            notes.caller(&principal);
        }
        Ok(principal)
    }
}

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

/// The first value of header `name` (a proxy chain lists several).
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
}

/// The first value of header `name`, when it is a plausible host name
/// (letters, digits, `-.:[]`).
fn host_header(headers: &HeaderMap, name: &str) -> Option<String> {
    first_value(headers, name)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .map(str::to_string)
}

/// The base URL clients reach this server at: the configured `public_url`;
/// or the scheme and host a trusted proxy forwarded (`X-Forwarded-Proto`,
/// `X-Forwarded-Host`; `forwarding` removed them from anyone else's
/// request); or the request's own scheme and Host.
pub fn base_url(state: &SharedState, headers: &HeaderMap) -> String {
    if !state.config.public_url.is_empty() {
        return state.config.public_url.trim_end_matches('/').to_string();
    }
    let host = host_header(headers, "x-forwarded-host")
        .or_else(|| host_header(headers, header::HOST.as_str()))
        .unwrap_or_else(|| state.config.listen.to_string());
    let forwarded = first_value(headers, "x-forwarded-proto").map(str::to_ascii_lowercase);
    let scheme = match forwarded.as_deref() {
        Some("https") => "https",
        Some("http") => "http",
        _ if state.config.tls.enabled() => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// Middleware: drops the forwarded scheme and host of any request that did
/// not come from one of `trusted_proxies`.
async fn forwarding(
    axum::extract::State(state): axum::extract::State<SharedState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        Some(axum::extract::ConnectInfo(peer)) => {
            let peer = peer.ip();
            crate::net::forget_untrusted_forwarding(
                peer,
                request.headers_mut(),
                &state.config.trusted_proxies,
            );
        }
        // No peer known (not served by the accept loop): trust nobody.
        None => {
            for name in crate::net::FORWARDED_ORIGIN {
                request.headers_mut().remove(name);
            }
        }
    }
    next.run(request).await
}

/// `https://host/api/$metadata#<entity>`.
pub fn odata_context(state: &SharedState, headers: &HeaderMap, entity: &str) -> String {
    format!("{}/api/$metadata#{entity}", base_url(state, headers))
}
