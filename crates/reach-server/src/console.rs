//! The web console's server side: the page and its assets (plain HTML, CSS
//! and JavaScript modules from `console/`, embedded in the binary), signing
//! users in and out, and the security headers every response carries.
//!
//! A signed-in user holds a user access token in an HttpOnly, SameSite=Strict
//! cookie (Secure over HTTPS), so no page script can read it. The console
//! then calls the same `/api` as every other client; the API accepts the
//! cookie only on requests that also carry `X-Requested-With: reach-console`,
//! a header no other site can make a browser send. Nothing here grants
//! anything the token itself does not.

use axum::Json;
use std::net::{IpAddr, SocketAddr};

use crate::http::Path;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::SharedState;
use crate::auth::Principal;
use crate::auth::session_cookie::COOKIE;
use crate::error::{ApiError, ApiResult};
use crate::http::JsonBody;
use crate::ratelimit::Window;
use crate::store::StoreError;
use crate::time::Micros;

/// The console's Content-Security-Policy: only this origin's own files, no
/// inline scripts or styles, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/ui.js"),
    ),
    (
        "devices.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/devices.js"),
    ),
    (
        "run.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/run.js"),
    ),
    (
        "actions.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/actions.js"),
    ),
    (
        "batches.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/batches.js"),
    ),
    (
        "library.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/library.js"),
    ),
    (
        "output.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/output.js"),
    ),
    (
        "respond.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/respond.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../console/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("../console/index.html");

/// Adds the security headers to every response.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

/// `GET /`: the console page.
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /console/{file}`: an embedded asset.
pub async fn asset(Path(name): Path<String>) -> ApiResult<Response> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .ok_or_else(|| ApiError::NotFound(format!("No console file named {name}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response())
}

/// The body of `POST /console/session`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignIn {
    /// The user's name.
    pub name: String,
    /// The user's password.
    pub password: String,
}

/// Who is signed in, for the console's header, and what the API lets them
/// do, for its buttons.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The user's name.
    pub name: String,
    /// The user's tenant.
    pub tenant_id: String,
    /// The user's roles, sorted.
    pub roles: Vec<String>,
    /// What the user may do, for the page to offer only that.
    pub capabilities: Capabilities,
}

/// What the API allows the signed-in user, decided from the very role
/// lists its handlers check, so the console never keeps a copy of them: a
/// button is enabled exactly when the call behind it would be authorised.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Start live response with GetFile (`runliveresponse`).
    pub collect_files: bool,
    /// Also PutFile and RunScript (advanced live response).
    pub put_files_and_run_scripts: bool,
    /// Cancel actions.
    pub cancel_actions: bool,
    /// Get download links of results.
    pub download_results: bool,
    /// Add and remove machine tags.
    pub tag_machines: bool,
    /// Upload and delete library files.
    pub manage_library: bool,
    /// Read the audit trail.
    pub read_audit_log: bool,
    /// Isolate devices and release them.
    pub isolate: bool,
    /// Offboard devices.
    pub offboard: bool,
    /// Stop and quarantine files.
    pub stop_and_quarantine: bool,
    /// Collect investigation packages.
    pub collect_forensics: bool,
}

impl Capabilities {
    fn of(roles: &[String]) -> Self {
        let holds = |allowed: &[&str]| roles.iter().any(|r| allowed.contains(&r.as_str()));
        use crate::auth::permissions;
        Self {
            collect_files: holds(permissions::RUN_LIVE_RESPONSE),
            put_files_and_run_scripts: holds(permissions::RUN_ADVANCED),
            cancel_actions: holds(permissions::CANCEL_ACTIONS),
            download_results: holds(permissions::DOWNLOAD_RESULTS),
            tag_machines: holds(permissions::TAG_MACHINES),
            manage_library: holds(permissions::MANAGE_LIBRARY),
            read_audit_log: holds(permissions::READ_AUDIT_LOG),
            isolate: holds(permissions::ISOLATE),
            offboard: holds(permissions::OFFBOARD),
            stop_and_quarantine: holds(permissions::STOP_AND_QUARANTINE),
            collect_forensics: holds(permissions::COLLECT_FORENSICS),
        }
    }
}

impl Session {
    fn new(name: String, tenant_id: String, mut roles: Vec<String>) -> Self {
        roles.sort();
        Self {
            capabilities: Capabilities::of(&roles),
            name,
            tenant_id,
            roles,
        }
    }
}

impl From<&Principal> for Session {
    fn from(principal: &Principal) -> Self {
        Self::new(
            principal.name.clone(),
            principal.tenant_id.clone(),
            principal.roles.iter().cloned().collect(),
        )
    }
}

fn set_cookie(state: &SharedState, value: &str, max_age: u64) -> HeaderValue {
    let secure = state.config.tls.enabled() || state.config.public_url.starts_with("https://");
    let text = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).expect("tokens are valid header text")
}

/// `POST /console/session`: checks a user's name and password and sets the
/// session cookie.
pub async fn sign_in(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    notes: crate::audit::Notes,
    JsonBody(body): JsonBody<SignIn>,
) -> ApiResult<Response> {
    let wrong = || ApiError::Unauthorized("Wrong user name or password".into());
    let client = crate::net::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    if body.name.is_empty() || body.name.len() > 200 || body.password.len() > 1024 {
        return Err(wrong());
    }
    slow_down_guesses(&state, &body.name, client).await?;
    let user = match state.store.get_user(&body.name).await {
        Ok(user) => Some(user),
        Err(StoreError::NotFound(_)) => None,
        Err(err) => return Err(err.into()),
    };
    // An unknown user's attempt is recorded outside any tenant.
    let tenant_id = user.as_ref().map_or("", |u| u.tenant_id.as_str());
    notes.claimed(crate::audit::Actor::user(&body.name), tenant_id);
    let matches = match &user {
        Some(user) => {
            state
                .gate
                .verify(&body.password, &user.password_hash)
                .await?
        }
        None => {
            // No hash to check: wait as long as a check takes instead.
            state.gate.imitate().await?;
            false
        }
    };
    let user = match user {
        Some(user) if matches && !user.disabled => user,
        _ => {
            tracing::info!(user = %body.name, "console sign-in refused");
            return Err(wrong());
        }
    };
    let token = state.auth.issue_user(&user).map_err(ApiError::internal)?;
    tracing::info!(user = %user.name, tenant.id = %user.tenant_id, "console sign-in");
    let session = Session::new(user.name, user.tenant_id, user.roles);
    let mut response = Json(session).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, &token, state.auth.lifetime_secs()),
    );
    Ok(response)
}

/// Password guessing is slow, cluster-wide: one address gets 10 tries a
/// minute and 30 an hour at one user name, then 429 until they age out.
/// Past 30 tries a minute at a name from all addresses together, each
/// further try waits `SLOWED` first: a spread-out attack is slowed, and the
/// real user, from their own address, can still sign in.
async fn slow_down_guesses(state: &SharedState, name: &str, client: IpAddr) -> ApiResult<()> {
    let name = name.to_lowercase();
    let now = Micros::now();
    let per_address = format!(
        "signin:{name}:{}",
        crate::http::by_address::client_block(client)
    );
    if let Err(retry_after_secs) = state
        .limiter
        .check(
            state.store.as_ref(),
            &per_address,
            &[Window::per_minute(10), Window::per_hour(30)],
            now,
        )
        .await?
    {
        return Err(ApiError::TooManyRequests {
            message: format!(
                "Too many sign-in attempts for this user from this address; retry in {retry_after_secs} s"
            ),
            retry_after_secs,
        });
    }
    let ceiling = format!("signin:{name}");
    if state
        .limiter
        .check(
            state.store.as_ref(),
            &ceiling,
            &[Window::per_minute(30)],
            now,
        )
        .await?
        .is_err()
    {
        tracing::info!(user = %name, "sign-in attempts at this user from many addresses; slowing them");
        tokio::time::sleep(SLOWED).await;
    }
    Ok(())
}

/// How long each sign-in waits once a user name draws more than its ceiling.
const SLOWED: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /console/session`: who the cookie belongs to (401 when signed out or expired).
pub async fn current(principal: Principal) -> Json<Session> {
    Json(Session::from(&principal))
}

/// `DELETE /console/session`: ends the signed-in user's sessions on the
/// server (every token issued to them so far stops working, in every
/// browser) and clears the cookie. Without a valid session it only clears
/// the cookie.
pub async fn sign_out(
    State(state): State<SharedState>,
    principal: Result<Principal, ApiError>,
) -> ApiResult<Response> {
    if let Ok(principal) = principal
        && principal.app_id.is_none()
        && principal.generation.is_some()
    {
        state.store.end_user_sessions(&principal.name).await?;
        tracing::info!(user = %principal.name, tenant.id = %principal.tenant_id, "console sign-out");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    Ok(response)
}
