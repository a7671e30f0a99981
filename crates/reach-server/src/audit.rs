//! The audit trail: who did what, from where, on which machine, when, and
//! how it ended. Every state-changing API call, every sign-in and token
//! request, every result download link and download, every read of the
//! audit trail itself, every agent enrollment, and every command handed to
//! and finished by an agent is recorded.
//!
//! Entries are append-only and chained: each carries the hash of the one
//! before it (`link_hash`), so `verify` finds the first entry that was
//! altered, removed or inserted. The store places entries in the chain
//! (`AuditLog::append_audit`); this module decides what an entry says.
//!
//! HTTP calls are recorded by one middleware (`record_api`) after the
//! handler answers and before the response leaves, so an entry exists by
//! the time the caller sees the outcome. Handlers add what only they know
//! (the machine, the action id, the commands) through `Notes`. Writes from
//! many requests are committed together (`Auditor`), one transaction per
//! batch.
//!
//! This module never records a secret, a token or file contents: details
//! hold names, hashes, ids and the commands' parameters, which the action
//! itself shows to any reader of the API.

pub mod refusals;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use reach_proto::agent::CommandRef;
use reach_proto::api::AuditLogEntry;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::SharedState;
use crate::store::audit::{GENESIS, link_hash};
use crate::store::{AuditEntry, AuditEvent, AuditLog};
use crate::time::Micros;

/// An entry as clients and SIEMs read it.
pub fn to_wire(entry: AuditEntry) -> AuditLogEntry {
    let event = entry.event;
    AuditLogEntry {
        id: entry.seq,
        timestamp: event.time.to_wire(),
        tenant_id: event.tenant_id,
        actor_type: event.actor_type,
        actor_id: event.actor_id,
        actor_name: event.actor_name,
        source_ip: event.source_ip,
        operation: event.operation,
        machine_id: event.machine_id,
        target: event.target,
        outcome: event.outcome,
        http_status: event.http_status,
        details: serde_json::from_str(&event.details).unwrap_or(Value::String(event.details)),
        previous_hash: entry.prev_hash,
        hash: entry.hash,
    }
}

/// Who an event is about, as the trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: &'static str,
    pub id: String,
    pub name: String,
}

impl Actor {
    /// A client app, by client id and display name.
    pub fn app(client_id: &str, name: &str) -> Self {
        Self {
            kind: "app",
            id: client_id.to_string(),
            name: name.to_string(),
        }
    }

    /// A console user, by name.
    pub fn user(name: &str) -> Self {
        Self {
            kind: "user",
            id: name.to_string(),
            name: name.to_string(),
        }
    }

    /// Whoever holds a signed download link.
    pub fn link() -> Self {
        Self {
            kind: "link",
            id: String::new(),
            name: "download link".into(),
        }
    }

    pub fn machine(machine_id: &str) -> Self {
        Self {
            kind: "machine",
            id: machine_id.to_string(),
            name: machine_id.to_string(),
        }
    }

    /// Someone running `reach-server` subcommands on the server itself.
    pub fn operator() -> Self {
        let name = std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            kind: "operator",
            id: name.clone(),
            name,
        }
    }

    pub fn system() -> Self {
        Self {
            kind: "system",
            id: "reach-server".into(),
            name: "reach-server".into(),
        }
    }

    fn anonymous() -> Self {
        Self {
            kind: "anonymous",
            id: String::new(),
            name: String::new(),
        }
    }
}

/// An event outside an HTTP call (a command started, an app created).
pub fn event(
    tenant_id: &str,
    actor: Actor,
    operation: &str,
    outcome: &str,
    details: Value,
) -> AuditEvent {
    AuditEvent {
        time: Micros::now(),
        tenant_id: tenant_id.to_string(),
        actor_type: actor.kind.to_string(),
        actor_id: actor.id,
        actor_name: actor.name,
        source_ip: None,
        operation: operation.to_string(),
        machine_id: None,
        target: None,
        outcome: outcome.to_string(),
        http_status: None,
        details: details.to_string(),
    }
}

/// An event about one command of an action on a machine (its target is
/// `action/index`).
pub fn command_event(
    tenant_id: &str,
    actor: Actor,
    machine_id: &str,
    command: &CommandRef,
    operation: &str,
    outcome: &str,
    details: Value,
) -> AuditEvent {
    let mut event = event(tenant_id, actor, operation, outcome, details);
    event.machine_id = Some(machine_id.to_string());
    event.target = Some(format!("{}/{}", command.action_id, command.index));
    event
}

/// How a finished command reads in the trail: its outcome and details.
pub fn finish_details(finish: &crate::store::Finish) -> (&'static str, Value) {
    match finish {
        crate::store::Finish::Completed { file_sha256 } => (
            "Succeeded",
            serde_json::json!({ "fileSha256": file_sha256 }),
        ),
        crate::store::Finish::Failed { errors, timed_out } => (
            "Failed",
            serde_json::json!({ "errors": errors, "timedOut": timed_out }),
        ),
    }
}

/// Appends events in batches: each caller waits until its event is
/// committed, and events that arrive while a batch commits go together in
/// the next one (one transaction per batch, not per event).
pub struct Auditor {
    queue: mpsc::Sender<(AuditEvent, oneshot::Sender<bool>)>,
}

/// Events per transaction, at most.
const BATCH: usize = 256;

impl Auditor {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn AuditLog>) -> Self {
        let (queue, mut incoming) = mpsc::channel::<(AuditEvent, oneshot::Sender<bool>)>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while incoming.recv_many(&mut batch, BATCH).await > 0 {
                let (events, waiting): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let written = match store.append_audit(&events).await {
                    Ok(_) => true,
                    Err(err) => {
                        tracing::error!(
                            error = format!("{err:#}"),
                            events = events.len(),
                            "audit entries could not be written"
                        );
                        false
                    }
                };
                for done in waiting {
                    let _ = done.send(written);
                }
            }
        });
        Self { queue }
    }

    /// Appends one event and waits until it is committed. False (and an
    /// error in the log) when it could not be written.
    pub async fn record(&self, event: AuditEvent) -> bool {
        let (done, written) = oneshot::channel();
        if self.queue.send((event, done)).await.is_err() {
            tracing::error!("the audit writer has stopped; an entry was not written");
            return false;
        }
        written.await.unwrap_or(false)
    }
}

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

    pub fn machine(&self, machine_id: &str) {
        self.with(|n| n.machine_id = Some(machine_id.to_string()));
    }

    pub fn target(&self, target: impl Into<String>) {
        self.with(|n| n.target = Some(target.into()));
    }

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
}

/// How an HTTP status reads in the trail.
fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "Succeeded",
        401 | 403 => "Denied",
        _ => "Failed",
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
        outcome: outcome(status).to_string(),
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

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry links to the one before it. `head` is the last entry's
    /// number and hash (compare it with a copy kept elsewhere: removing the
    /// newest entries leaves an intact, shorter chain).
    Intact {
        entries: u64,
        first: i64,
        head: Option<(i64, String)>,
    },
    /// The first entry that does not fit, and why.
    Broken { seq: i64, reason: String },
}

/// Walks the whole chain, oldest first, a page at a time.
pub async fn verify(store: &dyn AuditLog) -> anyhow::Result<Verdict> {
    const PAGE: u32 = 5_000;
    let mut entries = 0u64;
    let mut first = 0i64;
    let mut last: Option<(i64, String)> = None;
    loop {
        let after = last.as_ref().map_or(0, |(seq, _)| *seq);
        let page = store.audit_page(after, Micros(i64::MIN), PAGE).await?;
        if page.is_empty() {
            break;
        }
        for entry in page {
            let expected_prev = match &last {
                Some((seq, hash)) => {
                    if entry.seq != seq + 1 {
                        return Ok(Verdict::Broken {
                            seq: seq + 1,
                            reason: format!("entries {} to {} are missing", seq + 1, entry.seq - 1),
                        });
                    }
                    hash.clone()
                }
                None => {
                    first = entry.seq;
                    if entry.seq == 1 {
                        GENESIS.to_string()
                    } else {
                        // Entries before it were pruned; the prune entry says
                        // which hash the first kept entry must follow.
                        match pruned_through(store, entry.seq - 1).await? {
                            Some(hash) => hash,
                            None => {
                                return Ok(Verdict::Broken {
                                    seq: 1,
                                    reason: format!(
                                        "entries 1 to {} are missing and no pruning entry accounts for them",
                                        entry.seq - 1
                                    ),
                                });
                            }
                        }
                    }
                }
            };
            if entry.prev_hash != expected_prev {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    reason: "its previous-hash does not match the entry before it".into(),
                });
            }
            if link_hash(entry.seq, &entry.event, &entry.prev_hash) != entry.hash {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    reason: "its contents do not match its hash (altered)".into(),
                });
            }
            entries += 1;
            last = Some((entry.seq, entry.hash));
        }
    }
    Ok(Verdict::Intact {
        entries,
        first,
        head: last,
    })
}

/// Writes entries at or after `since` (of one tenant, or all) as JSON
/// lines, oldest first, a page at a time.
pub async fn export(
    store: &dyn AuditLog,
    since: Micros,
    tenant_id: Option<&str>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<u64> {
    let mut after = 0;
    let mut written = 0;
    loop {
        let page = store.audit_page(after, since, 5_000).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        for entry in page {
            if tenant_id.is_some_and(|t| t != entry.event.tenant_id) {
                continue;
            }
            serde_json::to_writer(&mut *out, &to_wire(entry))?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}

/// Operation of the entry written when old entries are pruned.
pub const PRUNED: &str = "AuditPruned";

/// The hash of entry `through` as recorded by the pruning entry that
/// removed it, if there is one.
async fn pruned_through(store: &dyn AuditLog, through: i64) -> anyhow::Result<Option<String>> {
    let mut after = through;
    loop {
        let page = store.audit_page(after, Micros(i64::MIN), 5_000).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        after = last.seq;
        for entry in page {
            if entry.event.operation != PRUNED {
                continue;
            }
            let details: Value = serde_json::from_str(&entry.event.details).unwrap_or_default();
            if details["throughId"].as_i64() == Some(through)
                && let Some(hash) = details["throughHash"].as_str()
            {
                return Ok(Some(hash.to_string()));
            }
        }
    }
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
        assert!(!audited(&Method::GET, "/api/machines"));
        assert!(!audited(&Method::PUT, "/agent/v1/commands/a/0/chunks/1"));
        assert_eq!(outcome(StatusCode::CREATED), "Succeeded");
        assert_eq!(outcome(StatusCode::FORBIDDEN), "Denied");
        assert_eq!(outcome(StatusCode::BAD_REQUEST), "Failed");
    }
}
