//! The middleware that records API calls (`record_api`), after the handler
//! answered and before the response leaves, and the `Notes` through which
//! handlers and the `Principal` extractor add what only they know. Text a
//! caller chose (a claimed id, a path) is bounded before it is recorded;
//! repeated refusals of strangers are counted (`refusals`), not each
//! written.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value};

use super::{Actor, Outcome};
use crate::SharedState;
use crate::store::AuditEvent;
use crate::time::Micros;

/// What a handler adds to its call's audit entry. The middleware puts an
/// empty one in each audited request; the `Principal` extractor fills in
/// the caller; handlers fill in the rest.
#[derive(Debug, Clone, Default)]
pub struct Notes(Arc<Mutex<Noted>>);

#[derive(Debug, Default)]
struct Noted {
    actor: Option<Actor>,
    /// The caller presented a valid token.
    authenticated: bool,
    tenant_id: Option<String>,
    machine_id: Option<String>,
    target: Option<String>,
    details: Map<String, Value>,
}

impl Notes {
    fn with<R>(&self, f: impl FnOnce(&mut Noted) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The caller, once its token is verified and admitted.
    pub fn caller(&self, actor: Actor, tenant_id: &str) {
        self.with(|n| {
            n.actor = Some(actor);
            n.tenant_id = Some(tenant_id.to_string());
            n.authenticated = true;
        });
    }

    /// A caller known before (or without) a token: a token request's client
    /// id, a sign-in's user name, an enrolling agent's new machine.
    pub fn claimed(&self, actor: Actor, tenant_id: &str) {
        self.with(|n| {
            n.actor = Some(actor);
            n.tenant_id = Some(tenant_id.to_string());
        });
    }

    /// The machine the call concerns.
    pub fn machine(&self, machine_id: &str) {
        self.with(|n| n.machine_id = Some(machine_id.to_string()));
    }

    /// What the call acted on.
    pub fn target(&self, target: impl Into<String>) {
        self.with(|n| n.target = Some(target.into()));
    }

    /// One more detail of the call.
    pub fn detail(&self, key: &str, value: impl Into<Value>) {
        self.with(|n| {
            n.details.insert(key.to_string(), value.into());
        });
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Notes {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Outside an audited request the notes go nowhere.
        Ok(parts.extensions.get::<Notes>().cloned().unwrap_or_default())
    }
}

/// Whether a call is recorded: everything that changes state, and the reads
/// that matter to an investigation of the investigators (result links and
/// downloads, the audit trail). Agents' file transfers are not calls of
/// their own: the commands they belong to are recorded by the gateway.
fn audited(method: &Method, path: &str) -> bool {
    if path.starts_with("/agent/v1/commands/") || matches!(path, "/healthz" | "/readyz") {
        return false;
    }
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    lower.starts_with("/download/")
        || lower.starts_with("/api/auditlog")
        || lower.contains("/getliveresponseresultdownloadlink")
        || (lower.starts_with("/api/batches/") && lower.ends_with("/results"))
        || ((lower.starts_with("/api/batches/") || lower.starts_with("/api/machineactions/"))
            && lower.ends_with("/output"))
}

/// How an HTTP status reads in the trail.
fn outcome(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200..=399 => Outcome::Succeeded,
        401 | 403 => Outcome::Denied,
        _ => Outcome::Failed,
    }
}

/// Middleware: records an audited call once its handler has answered.
pub async fn record_api(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !audited(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let operation = match request.extensions().get::<MatchedPath>() {
        Some(route) => format!("{} {}", request.method(), route.as_str()),
        None => format!("{} (no such route)", request.method()),
    };
    let source_ip =
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| {
                crate::net::client_ip(peer.ip(), request.headers(), &state.config.trusted_proxies)
                    .to_string()
            });
    let notes = Notes::default();
    request.extensions_mut().insert(notes.clone());
    let time = Micros::now();
    let response = next.run(request).await;
    let status = response.status();
    let noted = std::mem::take(&mut *notes.0.lock().unwrap_or_else(|p| p.into_inner()));
    let actor = noted.actor.unwrap_or_else(Actor::anonymous);
    let refused_stranger = !noted.authenticated && matches!(status.as_u16(), 401 | 403 | 429);
    let event = AuditEvent {
        time,
        tenant_id: noted.tenant_id.unwrap_or_default(),
        actor_type: actor.kind.to_string(),
        actor_id: bounded(actor.id),
        actor_name: bounded(actor.name),
        source_ip,
        operation: bounded(operation),
        machine_id: noted.machine_id.map(bounded),
        target: noted.target.map(bounded),
        outcome: outcome(status).as_str().to_string(),
        http_status: Some(status.as_u16()),
        details: Value::Object(noted.details).to_string(),
    };
    if refused_stranger {
        // Repeated refusals of one source are counted, not each recorded.
        let (now, closed) = state.refusals.note(event);
        for event in closed.into_iter().chain(now) {
            state.auditor.record(event).await;
        }
    } else {
        state.auditor.record(event).await;
    }
    response
}

/// Caller-supplied text (a claimed client id, a path) cut to 256 bytes at a
/// character boundary, so that a hostile request cannot bloat the trail.
fn bounded(mut text: String) -> String {
    const MAX: usize = 256;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_links_and_downloads_are_audited_and_agent_transfers_are_not() {
        assert!(audited(&Method::POST, "/api/machines/abc/runliveresponse"));
        assert!(audited(&Method::DELETE, "/api/libraryfiles/x.sh"));
        assert!(audited(&Method::POST, "/t/oauth2/v2.0/token"));
        assert!(audited(
            &Method::GET,
            "/api/machineactions/a/GetLiveResponseResultDownloadLink(index=0)"
        ));
        assert!(audited(&Method::GET, "/download/results/a/0/x"));
        assert!(audited(&Method::GET, "/api/auditlog"));
        assert!(audited(
            &Method::GET,
            "/api/machineactions/a/commands/0/output"
        ));
        assert!(audited(&Method::GET, "/api/batches/b/output"));
        assert!(!audited(&Method::GET, "/api/machines"));
        assert!(!audited(&Method::PUT, "/agent/v1/commands/a/0/chunks/1"));
        assert_eq!(outcome(StatusCode::CREATED), Outcome::Succeeded);
        assert_eq!(outcome(StatusCode::FORBIDDEN), Outcome::Denied);
        assert_eq!(outcome(StatusCode::BAD_REQUEST), Outcome::Failed);
    }
}
