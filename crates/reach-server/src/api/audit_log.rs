//! `GET /api/auditlog`: the caller's tenant's audit trail, newest first,
//! with OData `$filter`, `$top`, `$skip`, `$orderby` and `$count`. Needs the
//! `AuditLog.Read` role, which no Defender permission implies. Reading the
//! trail is itself recorded.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use reach_proto::api::{AuditLogEntry, Collection};

use super::paging::Page;
use super::{Access, authorize};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{base_url, odata_context};
use crate::odata::Query;

/// `GET /api/auditlog` with OData.
pub async fn list(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Collection<AuditLogEntry>>> {
    authorize(&state, &principal, Access::ReadAuditLog).await?;
    let raw = query;
    let mut query = Query::parse(raw.as_deref()).map_err(|e| ApiError::OData(e.0))?;
    let page = Page::ask(&mut query, state.config.limits.page_size);
    let (mut rows, count) = state.store.list_audit(&principal.tenant_id, &query).await?;
    let url = format!("{}/api/auditlog", base_url(&state, &headers));
    let next_link = page.finish(&mut rows, &url, raw.as_deref());
    Ok(Json(Collection {
        odata_context: odata_context(&state, &headers, "AuditLog"),
        count,
        value: rows.into_iter().map(crate::audit::to_wire).collect(),
        next_link,
    }))
}
