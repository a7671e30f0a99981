//! The SQL of `Machines` (see `store::machines`), for both engines. A
//! machine's identity is its id; names are what its agent reports and never
//! authenticate it.

use async_trait::async_trait;
use reach_proto::agent::MachineInfo;

use super::*;
use crate::odata::Query;
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl Machines for SqlStore {
    async fn set_machine_tags(&self, machine_id: &str, tags: &[String]) -> StoreResult<()> {
        let done = self
            .write_one(
                exec::query("UPDATE machines SET tags = $2 WHERE id = $1")
                    .bind(machine_id)
                    .bind(json(&tags)),
            )
            .await?;
        found(done.rows_affected(), || format!("Machine {machine_id}"))
    }

    async fn change_machine_tags(
        &self,
        tenant_id: &str,
        machine_id: &str,
        add: &[String],
        remove: &[String],
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.write().await?;
        let sql = format!(
            "SELECT m.tags FROM machines m WHERE m.id = $1 AND m.tenant_id = $2{}",
            self.engine.for_update_of("m")
        );
        let row = exec::query(sql)
            .bind(machine_id)
            .bind(tenant_id)
            .fetch_optional(&mut tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Machine {machine_id}")))?;
        let mut tags: Vec<String> = from_json(row.try_get::<&str>("tags")?)?;
        tags.retain(|t| !remove.iter().any(|r| r.eq_ignore_ascii_case(t)));
        for tag in add {
            if !tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                tags.push(tag.clone());
            }
        }
        exec::query("UPDATE machines SET tags = $2 WHERE id = $1")
            .bind(machine_id)
            .bind(json(&tags))
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(tags)
    }

    async fn revoked_connected(&self) -> StoreResult<Vec<String>> {
        Ok(
            exec::query_scalar("SELECT id FROM machines WHERE revoked = 1 AND connected = 1")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn waiting_connected(
        &self,
        waited_since: Micros,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        // Oldest first through `actions_pending_by_creation`, so the read
        // stops at `limit`. Only actions a claim would hand out (not those
        // of a paused batch or a wave to come, which would otherwise fill
        // every answer and hide a lost wake-up behind them) and machines
        // that run nothing of that action's lane (a busy lane claims when
        // it is done; response actions run beside live response).
        let sql = format!(
            "SELECT a.machine_id FROM actions a JOIN machines m ON m.id = a.machine_id
             WHERE a.status = 'Pending' AND a.created_us < $1 AND m.connected = 1 AND {MAY_RUN}
               AND NOT EXISTS (SELECT 1 FROM actions x WHERE x.machine_id = a.machine_id
                   AND x.status = 'InProgress'
                   AND (x.kind = 'LiveResponse') = (a.kind = 'LiveResponse'))
             ORDER BY a.created_us LIMIT $2"
        );
        Ok(exec::query_scalar(sql)
            .bind(waited_since.0)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn machine_connected(
        &self,
        machine_id: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        isolated: Option<bool>,
        now: Micros,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.write().await?;
        let former: Option<String> =
            exec::query_scalar("SELECT computer_dns_name FROM machines WHERE id = $1")
                .bind(machine_id)
                .fetch_optional(&mut tx)
                .await?;
        exec::query(
            "UPDATE machines SET computer_dns_name = $1, os_platform = $2, os_version = $3, os_architecture = $4,
                agent_version = $5, last_ip = COALESCE($6, last_ip), last_seen_us = $7, connected = 1,
                ip_addresses = $8, isolated = COALESCE($10, isolated)
             WHERE id = $9",
        )
        .bind(&info.hostname)
        .bind(&info.os_platform)
        .bind(&info.os_version)
        .bind(&info.os_architecture)
        .bind(&info.agent_version)
        .bind(ip)
        .bind(now.0)
        .bind(json(&info.ip_addresses))
        .bind(machine_id)
        .bind(isolated.map(i64::from))
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(former.filter(|name| *name != info.hostname))
    }

    async fn machines_seen(&self, machine_ids: &[String], now: Micros) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for chunk in machine_ids.chunks(500) {
            let ids = placeholders(2, chunk.len());
            let sql =
                format!("UPDATE machines SET last_seen_us = $1, connected = 1 WHERE id IN ({ids})");
            let mut query = exec::query(sql).bind(now.0);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn machine_disconnected(&self, machine_id: &str, now: Micros) -> StoreResult<()> {
        self.write_one(
            exec::query("UPDATE machines SET last_seen_us = $1, connected = 0 WHERE id = $2")
                .bind(now.0)
                .bind(machine_id),
        )
        .await?;
        Ok(())
    }

    async fn machine_by_id(&self, tenant_id: &str, id: &str) -> StoreResult<Option<MachineRow>> {
        let sql = format!(
            "SELECT m.*, {ISOLATION_STATE} AS isolation_state FROM machines m WHERE m.id = $1 AND m.tenant_id = $2"
        );
        let row = exec::query(sql)
            .bind(id.to_ascii_lowercase())
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::machine).transpose()
    }

    async fn machines_named(&self, tenant_id: &str, name: &str) -> StoreResult<Vec<MachineRow>> {
        let rows = exec::query(format!(
            "SELECT m.*, {ISOLATION_STATE} AS isolation_state FROM machines m
             WHERE m.tenant_id = $1 AND lower(m.computer_dns_name) = lower($2) AND m.revoked = 0
             ORDER BY m.last_seen_us DESC LIMIT 50"
        ))
        .bind(tenant_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::machine).collect()
    }

    async fn duplicated_names(&self, tenant_id: &str) -> StoreResult<Vec<(String, Vec<String>)>> {
        let rows = exec::query(
            "SELECT lower(computer_dns_name) AS name, tags FROM machines
             WHERE tenant_id = $1 AND revoked = 0 AND lower(computer_dns_name) IN (
                 SELECT lower(computer_dns_name) FROM machines WHERE tenant_id = $1 AND revoked = 0
                 GROUP BY lower(computer_dns_name) HAVING count(*) > 1)",
        )
        .bind(tenant_id)
        .long()
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String>("name")?,
                    from_json(row.try_get::<&str>("tags")?)?,
                ))
            })
            .collect()
    }

    async fn list_machines(
        &self,
        tenant_id: &str,
        query: &Query,
        active_since: Micros,
    ) -> StoreResult<(Vec<MachineRow>, Option<u64>)> {
        let (rows, count) = select_page(
            &mut self.pool.acquire().await?,
            self.engine,
            "machines",
            "m",
            &format!("m.*, {ISOLATION_STATE} AS isolation_state"),
            tenant_id,
            query,
            &machine_fields(active_since),
            "m.computer_dns_name ASC, m.id ASC",
        )
        .await?;
        let machines = rows
            .iter()
            .map(rows::machine)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((machines, count))
    }

    async fn machine_targets(
        &self,
        tenant_id: &str,
        query: &Query,
        active_since: Micros,
    ) -> StoreResult<Vec<BatchTarget>> {
        machine_targets(self, tenant_id, query, active_since).await
    }
}

/// `machine_targets`, outside the trait's impl block for length.
pub(super) async fn machine_targets(
    store: &SqlStore,
    tenant_id: &str,
    query: &Query,
    active_since: Micros,
) -> StoreResult<Vec<BatchTarget>> {
    let filter_only = Query {
        filter: query.filter.clone(),
        ..Query::default()
    };
    let compiled = odata_to_sql::compile(
        &filter_only,
        &machine_fields(active_since),
        "m.computer_dns_name ASC, m.id ASC",
        store.engine,
        2,
    )
    .map_err(odata)?;
    let filter = if compiled.where_sql.is_empty() {
        String::new()
    } else {
        format!("AND {}", compiled.where_sql)
    };
    let sql = format!(
        "SELECT m.id, m.computer_dns_name FROM machines m
         WHERE m.tenant_id = $1 AND m.revoked = 0 {filter} {}",
        compiled.order_sql
    );
    let rows = paging::bind_all(exec::query(sql).bind(tenant_id).long(), &compiled.binds)
        .fetch_all(&store.pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(BatchTarget {
                machine_id: row.try_get("id")?,
                computer_dns_name: row.try_get("computer_dns_name")?,
            })
        })
        .collect()
}

/// A machine's `isolationState`: Pending while an isolate or release of it
/// waits or runs (found through `actions_one_active_per_machine`), else
/// what its agent last reported or its last isolate or release did.
const ISOLATION_STATE: &str = "(CASE WHEN EXISTS (SELECT 1 FROM actions x WHERE x.machine_id = m.id
        AND x.status IN ('Pending', 'InProgress') AND x.kind IN ('Isolate', 'Unisolate'))
    THEN 'Pending' WHEN m.isolated = 1 THEN 'Isolated' ELSE 'NotIsolated' END)";

/// Machine properties. `active_since` is a number we produce, never client text.
pub(super) fn machine_fields(active_since: Micros) -> Vec<Field> {
    let health = format!(
        "(CASE WHEN m.connected = 1 AND m.last_seen_us >= {} THEN 'Active' ELSE 'Inactive' END)",
        active_since.0
    );
    let mut fields = vec![
        Field::new("id", "m.id", Kind::Text),
        Field::new("computerDnsName", "m.computer_dns_name", Kind::Text),
        Field::new("osPlatform", "m.os_platform", Kind::Text),
        Field::new("osVersion", "m.os_version", Kind::Text),
        Field::new("osArchitecture", "m.os_architecture", Kind::Text),
        Field::new("version", "m.agent_version", Kind::Text),
        Field::new("lastIpAddress", "m.last_ip", Kind::Text),
        Field::new("healthStatus", health, Kind::Text),
        Field::new("onboardingStatus", "'Onboarded'", Kind::Text),
        Field::new("machineTags", "m.tags", Kind::TextList),
        Field::new("firstSeen", "m.first_seen_us", Kind::Time),
        Field::new("lastSeen", "m.last_seen_us", Kind::Time),
        Field::new("isolationState", ISOLATION_STATE, Kind::Text),
    ];
    // Defender properties Reach does not track: filters on them match nothing.
    for name in [
        "deviceValue",
        "aadDeviceId",
        "exposureLevel",
        "riskScore",
        "rbacGroupId",
    ] {
        fields.push(Field::new(name, "CAST(NULL AS TEXT)", Kind::Text));
    }
    fields
}
