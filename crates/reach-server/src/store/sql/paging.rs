//! OData pages of a tenant's rows: the compiled filter and order bound to
//! their parameters, one page, and with `$count` the number that match.

use super::exec::Row;
use super::*;
use crate::odata::Query;

pub(super) fn bind_all(mut query: exec::Query, binds: &[Bind]) -> exec::Query {
    for bind in binds {
        query = match bind {
            Bind::Text(t) => query.bind(t.as_str()),
            Bind::Int(n) => query.bind(*n),
        };
    }
    query
}

/// Runs a `SELECT count(*) ... WHERE tenant_id = $1 <filter>` with the filter's binds.
pub(super) async fn count(
    conn: &mut Conn,
    sql: String,
    tenant_id: &str,
    binds: &[Bind],
) -> StoreResult<u64> {
    let mut query = exec::query_scalar::<i64>(sql).bind(tenant_id).long();
    for bind in binds {
        query = match bind {
            Bind::Text(t) => query.bind(t.as_str()),
            Bind::Int(n) => query.bind(*n),
        };
    }
    Ok(query.fetch_one(conn).await? as u64)
}

/// `$first, $first+1, ...`: `count` placeholders for an `IN (...)` list.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `LIMIT $n OFFSET $n+1` after `$1` (the tenant) and the filter's binds.
pub(super) fn page_sql(binds: &[Bind]) -> String {
    let limit = binds.len() + 2;
    format!("LIMIT ${limit} OFFSET ${}", limit + 1)
}

/// One page of a tenant's rows of `table` (SQL alias `alias`, whose
/// `tenant_id` column is bound to `$1`) matching `query`, and with `$count`
/// how many match in all.
#[allow(clippy::too_many_arguments)]
pub(super) async fn select_page(
    conn: &mut Conn,
    engine: Engine,
    table: &str,
    alias: &str,
    columns: &str,
    tenant_id: &str,
    query: &Query,
    fields: &[Field],
    default_order: &str,
) -> StoreResult<(Vec<Row>, Option<u64>)> {
    let compiled = odata_to_sql::compile(query, fields, default_order, engine, 2).map_err(odata)?;
    let filter = if compiled.where_sql.is_empty() {
        String::new()
    } else {
        format!("AND {}", compiled.where_sql)
    };
    let from = format!("FROM {table} {alias} WHERE {alias}.tenant_id = $1 {filter}");
    let sql = format!(
        "SELECT {columns} {from} {} {}",
        compiled.order_sql,
        page_sql(&compiled.binds)
    );
    let rows = bind_all(exec::query(sql).bind(tenant_id).long(), &compiled.binds)
        .bind(i64::from(query.top.unwrap_or(crate::odata::MAX_TOP)))
        .bind(i64::from(query.skip))
        .fetch_all(&mut *conn)
        .await?;
    let count = if query.count {
        let sql = format!("SELECT count(*) {from}");
        Some(count(conn, sql, tenant_id, &compiled.binds).await?)
    } else {
        None
    };
    Ok((rows, count))
}
