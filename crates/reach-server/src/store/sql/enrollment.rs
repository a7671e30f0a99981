//! The SQL of `Enrollment` (see `store::enrollment`), for both engines.
//! Tokens and credentials are stored only as hashes.

use async_trait::async_trait;
use reach_proto::agent::MachineInfo;

use super::*;
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl Enrollment for SqlStore {
    async fn create_enrollment_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        expires: Option<Micros>,
        max_uses: Option<u64>,
        now: Micros,
    ) -> StoreResult<()> {
        self.write_one(
            exec::query(
                "INSERT INTO enrollment_tokens (token_hash, tenant_id, created_us, expires_us, max_uses)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(tenant_id)
            .bind(now.0)
            .bind(expires.map(|e| e.0))
            .bind(max_uses.map(|m| i64::try_from(m).unwrap_or(i64::MAX))),
        )
        .await?;
        Ok(())
    }

    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentTokenRow>> {
        let rows = exec::query("SELECT * FROM enrollment_tokens ORDER BY created_us DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::enrollment_token).collect()
    }

    async fn revoke_enrollment_token(
        &self,
        id: &str,
        now: Micros,
    ) -> StoreResult<EnrollmentTokenRow> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 6 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound(format!("Enrollment token {id}")));
        }
        let mut tx = self.write().await?;
        let rows = exec::query("SELECT * FROM enrollment_tokens WHERE token_hash LIKE $1 LIMIT 2")
            .bind(format!("{id}%"))
            .fetch_all(&mut tx)
            .await?;
        let row = match rows.as_slice() {
            [] => return Err(StoreError::NotFound(format!("Enrollment token {id}"))),
            [row] => row,
            _ => {
                return Err(StoreError::Conflict(format!(
                    "More than one enrollment token starts with {id}; give more of its id"
                )));
            }
        };
        let hash: String = row.try_get("token_hash")?;
        exec::query(
            "UPDATE enrollment_tokens SET revoked_us = COALESCE(revoked_us, $2) WHERE token_hash = $1",
        )
        .bind(&hash)
        .bind(now.0)
        .execute(&mut tx)
        .await?;
        let row = exec::query("SELECT * FROM enrollment_tokens WHERE token_hash = $1")
            .bind(&hash)
            .fetch_one(&mut tx)
            .await?;
        tx.commit().await?;
        rows::enrollment_token(&row)
    }

    async fn enroll_machine(
        &self,
        token_hash: &str,
        machine_id: &str,
        credential_hash: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        now: Micros,
    ) -> StoreResult<MachineRow> {
        let enrolled = Enrolling {
            token_hash,
            machine_id,
            credential_hash,
            info,
            ip,
            now,
        };
        let row = match self.engine {
            Engine::Postgres => self.enroll_in_one_statement(&enrolled).await?,
            Engine::Sqlite => self.enroll_in_transaction(&enrolled).await?,
        };
        match row {
            Some(row) => rows::machine(&row),
            None => Err(self.why_refused(token_hash, now).await?),
        }
    }

    async fn machine_credential(&self, machine_id: &str) -> StoreResult<MachineCredential> {
        let row = exec::query(
            "SELECT tenant_id, credential_hash, revoked, offboarded_us FROM machines WHERE id = $1",
        )
        .bind(machine_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Machine {machine_id}")))?;
        Ok(MachineCredential {
            tenant_id: row.try_get("tenant_id")?,
            credential_hash: row.try_get("credential_hash")?,
            revoked: row.try_get::<i64>("revoked")? != 0,
            offboarded: row.try_get::<Option<i64>>("offboarded_us")?.is_some(),
        })
    }

    async fn revoke_machine(&self, machine_id: &str) -> StoreResult<()> {
        let done = self
            .write_one(
                exec::query("UPDATE machines SET revoked = 1 WHERE id = $1").bind(machine_id),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("Machine {machine_id}")));
        }
        Ok(())
    }
}

/// One enrollment's values, as both engines' statements bind them.
struct Enrolling<'a> {
    token_hash: &'a str,
    machine_id: &'a str,
    credential_hash: &'a str,
    info: &'a MachineInfo,
    ip: Option<&'a str>,
    now: Micros,
}

impl Enrolling<'_> {
    /// Binds $4 to $11: the credential's hash, what the machine reported
    /// of itself and the address it enrolled from (both engines' statements
    /// put them there).
    fn bind_details(&self, query: exec::Query) -> exec::Query {
        query
            .bind(self.credential_hash)
            .bind(&self.info.hostname)
            .bind(&self.info.os_platform)
            .bind(&self.info.os_version)
            .bind(&self.info.os_architecture)
            .bind(&self.info.agent_version)
            .bind(self.ip)
            .bind(json(&self.info.ip_addresses))
    }
}

/// Takes one use of the token if it may still be used; the token's tenant.
/// Counting the use and checking the token are one statement, so two nodes
/// cannot both take a token's last use.
macro_rules! take_use {
    () => {
        "UPDATE enrollment_tokens SET uses = uses + 1
         WHERE token_hash = $1 AND revoked_us IS NULL
           AND (expires_us IS NULL OR expires_us > $2)
           AND (max_uses IS NULL OR uses < max_uses)
         RETURNING tenant_id"
    };
}

/// The columns an enrollment writes.
macro_rules! machine_columns {
    () => {
        "id, tenant_id, credential_hash, computer_dns_name, os_platform, os_version,
         os_architecture, agent_version, last_ip, first_seen_us, last_seen_us, ip_addresses"
    };
}

impl SqlStore {
    /// PostgreSQL: the use and the machine in one autocommitted statement.
    /// A fleet enrolls with one token, so every enrollment locks the same
    /// row: held over four round trips, it made the whole cluster enroll
    /// one machine at a time (measured with 100,000 agents on six nodes).
    async fn enroll_in_one_statement(&self, e: &Enrolling<'_>) -> StoreResult<Option<exec::Row>> {
        const SQL: &str = concat!(
            "WITH taken AS (",
            take_use!(),
            ") INSERT INTO machines (",
            machine_columns!(),
            ") SELECT $3, tenant_id, $4, $5, $6, $7, $8, $9, $10, $2, $2, $11 FROM taken
             RETURNING *, 'NotIsolated' AS isolation_state"
        );
        let query = exec::query(SQL)
            .bind(e.token_hash)
            .bind(e.now.0)
            .bind(e.machine_id);
        Ok(e.bind_details(query).fetch_optional(&self.pool).await?)
    }

    /// SQLite: the same in the writer's transaction, statement by statement.
    async fn enroll_in_transaction(&self, e: &Enrolling<'_>) -> StoreResult<Option<exec::Row>> {
        let mut tx = self.write().await?;
        let taken: Option<String> = exec::query_scalar(take_use!())
            .bind(e.token_hash)
            .bind(e.now.0)
            .fetch_optional(&mut tx)
            .await?;
        let Some(tenant_id) = taken else {
            return Ok(None);
        };
        let query = exec::query(concat!(
            "INSERT INTO machines (",
            machine_columns!(),
            ") VALUES ($1, $2, $4, $5, $6, $7, $8, $9, $10, $3, $3, $11)"
        ))
        .bind(e.machine_id)
        .bind(&tenant_id)
        .bind(e.now.0);
        e.bind_details(query).execute(&mut tx).await?;
        let row =
            exec::query("SELECT *, 'NotIsolated' AS isolation_state FROM machines WHERE id = $1")
                .bind(e.machine_id)
                .fetch_one(&mut tx)
                .await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Why the token was refused, read after the refusal.
    async fn why_refused(&self, token_hash: &str, now: Micros) -> StoreResult<StoreError> {
        let row = exec::query("SELECT * FROM enrollment_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let why = match row.as_ref().map(rows::enrollment_token).transpose()? {
            None => "The enrollment token is not valid",
            Some(token) if token.revoked.is_some() => "The enrollment token was revoked",
            Some(token) if token.expires.is_some_and(|e| e <= now) => {
                "The enrollment token has expired"
            }
            Some(_) => "The enrollment token has been used as many times as it allows",
        };
        Ok(StoreError::Refused(why.into()))
    }
}
