//! Batches (Reach's extension): `POST /api/batches` runs one set of
//! commands on every machine it targets, each machine's part an ordinary
//! MachineAction with a `batchId`; `GET /api/batches`, `GET
//! /api/batches/{id}` and `GET /api/batches/{id}/machineactions` read them.
//! Targets are resolved once, at creation, among the machines the caller
//! can see. A caller limited to device groups sees the batches it created.
//! This module never lets a batch reach a machine its caller cannot see.

pub mod control;
pub mod output;
pub mod results;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use reach_proto::api::{self as wire, BatchTargets, Collection, CreateBatchRequest, MachineAction};

use super::{Access, authorize};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{JsonBody, Path, odata_context};
use crate::odata::{CompareOp, Expr, Literal, Query, parse_filter};
use crate::store::{BatchRow, BatchTarget, NewBatch, Rollout, Scope};
use crate::time::Micros;

/// The longest `ExpiresInSeconds` accepted: 30 days.
pub const MAX_EXPIRES_SECS: u64 = 30 * 24 * 3600;

/// The largest `Rollout.WaveSize` accepted (past any fleet; keeps the
/// database's wave arithmetic far from overflow).
pub const MAX_WAVE_SIZE: u64 = 10_000_000;

/// Ids per store query when targets are given by id.
const IDS_PER_QUERY: usize = 500;

/// A batch as clients read it.
pub fn to_wire(row: BatchRow) -> wire::Batch {
    wire::Batch {
        odata_context: None,
        id: row.id,
        status: row.status.as_str().into(),
        paused_reason: row.paused_reason,
        requestor: row.requestor,
        requestor_comment: row.requestor_comment,
        creation_date_time_utc: row.created.to_wire(),
        last_update_date_time_utc: row.last_update.to_wire(),
        expiration_date_time_utc: row.expires.to_wire(),
        commands: row.commands,
        machine_count: row.machine_count,
        counts: wire::BatchCounts {
            pending: row.counts.pending,
            in_progress: row.counts.in_progress,
            succeeded: row.counts.succeeded,
            failed: row.counts.failed,
            timed_out: row.counts.timed_out,
            cancelled: row.counts.cancelled,
        },
        rollout: row.rollout.map(|r| wire::BatchRollout {
            wave_size: r.wave_size,
            max_failed_percent: r.max_failed_percent,
        }),
        cancellation_requestor: row.cancellation_requestor,
        cancellation_comment: row.cancellation_comment,
    }
}

/// `POST /api/batches`.
pub async fn create(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    notes: crate::audit::Notes,
    JsonBody(request): JsonBody<CreateBatchRequest>,
) -> ApiResult<(StatusCode, Json<wire::Batch>)> {
    authorize(&state, &principal, Access::CreateBatch).await?;
    let (commands, checked) = super::live_response::check_commands(
        &state,
        &principal,
        request.commands,
        request.comment.as_deref(),
    )?;
    let selector = request
        .machines
        .ok_or_else(|| ApiError::MissingParameter("Machines".into()))?;
    let rollout = request.rollout.map(check_rollout).transpose()?;
    let expires_secs = match request.expires_in_seconds {
        None => state.config.live_response.queue_ttl_secs,
        Some(secs) if (1..=MAX_EXPIRES_SECS).contains(&secs) => secs,
        Some(secs) => {
            return Err(ApiError::InvalidInput(format!(
                "ExpiresInSeconds must be from 1 to {MAX_EXPIRES_SECS}, got {secs}"
            )));
        }
    };
    notes.detail("machines", selector_detail(&selector));
    let targets = resolve_targets(&state, &principal, &selector).await?;
    let new_commands =
        super::live_response::resolve_commands(&state, &principal, commands, checked).await?;
    notes.detail(
        "commands",
        serde_json::to_value(new_commands.iter().map(|c| &c.work).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    notes.detail("machineCount", targets.len());
    if let Some(comment) = &request.comment {
        notes.detail("comment", comment.as_str());
    }
    let now = Micros::now();
    let batch = NewBatch {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: principal.tenant_id.clone(),
        requestor: principal.name.clone(),
        requestor_id: principal.rate_key(),
        requestor_comment: request.comment,
        commands: new_commands,
        targets,
        rollout,
        expires: now.plus_secs(expires_secs),
        now,
    };
    let row = state.store.create_batch(&batch).await?;
    notes.target(&row.id);
    tracing::info!(batch.id = %row.id, requestor = %row.requestor, machines = row.machine_count, "batch created");
    let first_wave: Vec<String> = batch
        .targets
        .iter()
        .take(rollout.map_or(usize::MAX, |r| r.wave_size as usize))
        .map(|t| t.machine_id.clone())
        .collect();
    // Woken after the answer: with thousands of machines the wake-ups
    // (their claims, the other nodes' notices) need not delay it, and one
    // lost is made good by the sweeper's re-wake.
    let waking = state.clone();
    tokio::spawn(async move { crate::cluster::wake_many(&waking, &first_wave).await });
    Ok((StatusCode::CREATED, Json(entity(&state, &headers, row))))
}

/// A batch as one entity answers it: with its `@odata.context`.
fn entity(state: &SharedState, headers: &HeaderMap, row: BatchRow) -> wire::Batch {
    let mut body = to_wire(row);
    body.odata_context = Some(odata_context(state, headers, "Batches/$entity"));
    body
}

fn check_rollout(rollout: wire::BatchRollout) -> ApiResult<Rollout> {
    if !(1..=MAX_WAVE_SIZE).contains(&rollout.wave_size) {
        return Err(ApiError::InvalidInput(format!(
            "Rollout.WaveSize must be from 1 to {MAX_WAVE_SIZE}, got {}",
            rollout.wave_size
        )));
    }
    if rollout.max_failed_percent > 100 {
        return Err(ApiError::InvalidInput(format!(
            "Rollout.MaxFailedPercent must be from 0 to 100, got {}",
            rollout.max_failed_percent
        )));
    }
    Ok(Rollout {
        wave_size: rollout.wave_size,
        max_failed_percent: rollout.max_failed_percent,
    })
}

/// What the audit entry says of the targets (ids are counted, not listed).
fn selector_detail(selector: &BatchTargets) -> serde_json::Value {
    match selector {
        BatchTargets { ids: Some(ids), .. } => serde_json::json!({ "ids": ids.len() }),
        BatchTargets {
            filter: Some(filter),
            ..
        } => serde_json::json!({ "filter": filter }),
        BatchTargets {
            tags: Some(tags), ..
        } => serde_json::json!({ "tags": tags }),
        _ => serde_json::json!({ "all": true }),
    }
}

/// The machines a batch targets, among those the caller can see, each
/// once, in the order their waves take them.
async fn resolve_targets(
    state: &SharedState,
    principal: &Principal,
    selector: &BatchTargets,
) -> ApiResult<Vec<BatchTarget>> {
    let given = [
        selector.ids.is_some(),
        selector.filter.is_some(),
        selector.tags.is_some(),
        selector.all.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if given != 1 {
        return Err(ApiError::InvalidRequestBody(
            "Machines must hold exactly one of Ids, Filter, Tags or All".into(),
        ));
    }
    let since = super::machines::active_since(state);
    let targets = match selector {
        BatchTargets { ids: Some(ids), .. } => by_ids(state, principal, ids).await?,
        BatchTargets {
            filter: Some(filter),
            ..
        } => {
            let filter = parse_filter(filter).map_err(|e| ApiError::OData(e.0))?;
            matching(state, principal, Some(filter), since).await?
        }
        BatchTargets {
            tags: Some(tags), ..
        } => {
            if tags.is_empty() || tags.iter().any(|t| t.trim().is_empty()) {
                return Err(ApiError::InvalidInput(
                    "Machines.Tags must hold at least one tag, none empty".into(),
                ));
            }
            let any_of = Expr::In {
                field: "machineTags".into(),
                values: tags.iter().cloned().map(Literal::Text).collect(),
            };
            matching(state, principal, Some(any_of), since).await?
        }
        BatchTargets { all, .. } => {
            if *all != Some(true) {
                return Err(ApiError::InvalidInput(
                    "Machines.All must be true when given".into(),
                ));
            }
            matching(state, principal, None, since).await?
        }
    };
    if targets.is_empty() {
        return Err(ApiError::InvalidInput(
            "The batch targets no machine the caller can see".into(),
        ));
    }
    Ok(targets)
}

/// The caller's visible machines matching `filter`.
async fn matching(
    state: &SharedState,
    principal: &Principal,
    filter: Option<Expr>,
    since: Micros,
) -> ApiResult<Vec<BatchTarget>> {
    let query = Query {
        filter,
        ..Query::default()
    };
    match super::scoped(query, &principal.scope) {
        Some(query) => Ok(state
            .store
            .machine_targets(&principal.tenant_id, &query, since)
            .await?),
        None => Ok(Vec::new()),
    }
}

/// Machines by id: each must be one the caller can see (404 naming the
/// first that is not). Repeated ids count once.
async fn by_ids(
    state: &SharedState,
    principal: &Principal,
    ids: &[String],
) -> ApiResult<Vec<BatchTarget>> {
    let mut unique: Vec<&String> = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if id.trim().is_empty() {
            return Err(ApiError::InvalidInput(
                "Machines.Ids must not hold an empty id".into(),
            ));
        }
        if seen.insert(id.to_ascii_lowercase()) {
            unique.push(id);
        }
    }
    let since = super::machines::active_since(state);
    let mut found = std::collections::HashMap::new();
    for chunk in unique.chunks(IDS_PER_QUERY) {
        let filter = Expr::In {
            field: "id".into(),
            values: chunk
                .iter()
                .map(|id| Literal::Text((*id).clone()))
                .collect(),
        };
        for target in matching(state, principal, Some(filter), since).await? {
            found.insert(target.machine_id.to_ascii_lowercase(), target);
        }
    }
    unique
        .into_iter()
        .map(|id| {
            found
                .remove(&id.to_ascii_lowercase())
                .ok_or_else(|| ApiError::ResourceNotFound(format!("Machine {id} was not found")))
        })
        .collect()
}

/// A batch the caller can see: its tenant's, and for a caller limited to
/// device groups, one it created (others answer 404, as a missing one).
pub(crate) async fn visible_batch(
    state: &SharedState,
    principal: &Principal,
    id: &str,
) -> ApiResult<BatchRow> {
    let row = state.store.get_batch(&principal.tenant_id, id).await?;
    if matches!(principal.scope, Scope::Tags(_)) && row.requestor_id != principal.rate_key() {
        return Err(ApiError::ResourceNotFound(format!(
            "Batch {id} was not found"
        )));
    }
    Ok(row)
}

/// `GET /api/batches/{id}`.
pub async fn get(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<wire::Batch>> {
    authorize(&state, &principal, Access::ReadBatches).await?;
    let row = visible_batch(&state, &principal, &id).await?;
    Ok(Json(entity(&state, &headers, row)))
}

/// `GET /api/batches` with OData, newest first.
pub async fn list(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Collection<wire::Batch>>> {
    authorize(&state, &principal, Access::ReadBatches).await?;
    let raw = query;
    let mut query = Query::parse(raw.as_deref()).map_err(|e| ApiError::OData(e.0))?;
    let page = super::paging::Page::ask(&mut query, state.config.limits.page_size);
    if matches!(principal.scope, Scope::Tags(_)) {
        let own = Expr::Compare {
            field: "requestorKey".into(),
            op: CompareOp::Eq,
            value: Literal::Text(principal.rate_key()),
        };
        query.and(own);
    }
    let (mut rows, count) = state
        .store
        .list_batches(&principal.tenant_id, &query)
        .await?;
    let url = format!("{}/api/batches", crate::http::base_url(&state, &headers));
    let next_link = page.finish(&mut rows, &url, raw.as_deref());
    Ok(Json(Collection {
        odata_context: odata_context(&state, &headers, "Batches"),
        count,
        value: rows.into_iter().map(to_wire).collect(),
        next_link,
    }))
}

/// `GET /api/batches/{id}/machineactions`: the batch's actions, with OData,
/// limited to the machines the caller can see.
pub async fn machine_actions(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Collection<MachineAction>>> {
    authorize(&state, &principal, Access::ReadBatches).await?;
    let batch = visible_batch(&state, &principal, &id).await?;
    let of_batch = Expr::Compare {
        field: "batchId".into(),
        op: CompareOp::Eq,
        value: Literal::Text(batch.id.clone()),
    };
    super::machine_actions::page_of_actions(
        &state,
        &principal,
        &headers,
        query.as_deref(),
        Some(of_batch),
        &format!("/api/batches/{}/machineactions", batch.id),
    )
    .await
}
