//! `GET /api/machines` and `GET /api/machines/{id or computerDnsName}`: the
//! devices whose agents enrolled, with `healthStatus` derived from the
//! agent's connection and heartbeats.

use crate::http::Path;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use reach_proto::api::{Collection, Machine, MachineIpAddress};

use super::{Access, authorize};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::odata_context;
use crate::odata::Query;
use crate::store::MachineRow;
use crate::time::Micros;

/// Machines heard from since this instant (and connected) are Active.
pub fn active_since(state: &SharedState) -> Micros {
    Micros::now().minus_secs(state.config.agents.heartbeat_secs.max(1) * 3)
}

/// A machine as clients read it; Active when connected and heard from since `active_since`.
pub fn to_wire(row: MachineRow, active_since: Micros) -> Machine {
    let active = row.connected && row.last_seen >= active_since;
    Machine {
        odata_context: None,
        id: row.id,
        computer_dns_name: row.info.hostname,
        first_seen: row.first_seen.to_wire(),
        last_seen: row.last_seen.to_wire(),
        os_platform: row.info.os_platform,
        os_version: row.info.os_version,
        os_architecture: row.info.os_architecture,
        version: row.info.agent_version,
        last_ip_address: row.last_ip,
        ip_addresses: row
            .info
            .ip_addresses
            .into_iter()
            .map(|ip| MachineIpAddress {
                ip_address: ip.ip_address,
                mac_address: ip.mac_address,
                kind: None,
                operational_status: "Up".into(),
            })
            .collect(),
        health_status: if active { "Active" } else { "Inactive" }.into(),
        onboarding_status: "Onboarded".into(),
        machine_tags: row.tags,
        duplicate_name: false,
        isolation_state: row.isolation_state,
        unknown: Default::default(),
    }
}

/// Names (lower case) that several machines the caller can see carry.
async fn duplicated_names(
    state: &SharedState,
    principal: &Principal,
) -> ApiResult<std::collections::HashSet<String>> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for (name, tags) in state.store.duplicated_names(&principal.tenant_id).await? {
        if principal.scope.allows(&tags) {
            *seen.entry(name).or_default() += 1;
        }
    }
    Ok(seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name)
        .collect())
}

/// `machines` with `duplicateName` set where the caller sees the name twice.
pub async fn mark_duplicates(
    state: &SharedState,
    principal: &Principal,
    machines: &mut [Machine],
) -> ApiResult<()> {
    if machines.is_empty() {
        return Ok(());
    }
    let duplicated = duplicated_names(state, principal).await?;
    for machine in machines {
        machine.duplicate_name = duplicated.contains(&machine.computer_dns_name.to_lowercase());
    }
    Ok(())
}

/// `GET /api/machines` with OData.
pub async fn list(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Collection<Machine>>> {
    authorize(&state, &principal, Access::ReadMachines).await?;
    let raw = query;
    let mut query = Query::parse(raw.as_deref()).map_err(|e| ApiError::OData(e.0))?;
    let page = super::paging::Page::ask(&mut query, state.config.limits.page_size);
    let since = active_since(&state);
    let (mut rows, count) = match super::scoped(query, &principal.scope) {
        Some(query) => {
            state
                .store
                .list_machines(&principal.tenant_id, &query, since)
                .await?
        }
        None => (Vec::new(), Some(0)),
    };
    let url = format!("{}/api/machines", crate::http::base_url(&state, &headers));
    let next_link = page.finish(&mut rows, &url, raw.as_deref());
    let mut value: Vec<Machine> = rows.into_iter().map(|r| to_wire(r, since)).collect();
    mark_duplicates(&state, &principal, &mut value).await?;
    Ok(Json(Collection {
        odata_context: odata_context(&state, &headers, "Machines"),
        count,
        value,
        next_link,
    }))
}

/// `GET /api/machines/{id}` (by id or computer name).
pub async fn get(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Machine>> {
    authorize(&state, &principal, Access::ReadMachines).await?;
    let row = super::visible_machine(&state, &principal, &id).await?;
    let mut machine = to_wire(row, active_since(&state));
    mark_duplicates(&state, &principal, std::slice::from_mut(&mut machine)).await?;
    machine.odata_context = Some(odata_context(&state, &headers, "Machines/$entity"));
    Ok(Json(machine))
}
