//! The SQL of `Identities` (see `store::identities`), for both engines.
//! Secrets and password hashes are stored as given (hashes, never the
//! secrets clients send).

use async_trait::async_trait;

use super::*;
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl Identities for SqlStore {
    fn identities_epoch(&self) -> u64 {
        self.identities_epoch
            .load(std::sync::atomic::Ordering::Acquire)
    }

    async fn secret(&self, name: &str, fresh: &str, now: Micros) -> StoreResult<String> {
        self.write_one(exec::query("INSERT INTO secrets (name, value, created_us) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(fresh)
            .bind(now.0)
            )
            .await?;
        Ok(
            exec::query_scalar("SELECT value FROM secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn create_tenant(&self, tenant: &Tenant, now: Micros) -> StoreResult<()> {
        self.write_one(
            exec::query("INSERT INTO tenants (id, name, created_us) VALUES ($1, $2, $3)")
                .bind(&tenant.id)
                .bind(&tenant.name)
                .bind(now.0),
        )
        .await?;
        Ok(())
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant> {
        let row = exec::query("SELECT id, name FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Tenant {id}")))?;
        rows::tenant(&row)
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let rows = exec::query("SELECT id, name FROM tenants ORDER BY created_us")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::tenant).collect()
    }

    async fn create_app(&self, app: &App, now: Micros) -> StoreResult<()> {
        self.write_one(exec::query(
            "INSERT INTO apps (client_id, tenant_id, name, secret_hash, roles, created_us, disabled, token_generation, device_groups)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&app.client_id)
        .bind(&app.tenant_id)
        .bind(&app.name)
        .bind(&app.secret_hash)
        .bind(json(&app.roles))
        .bind(now.0)
        .bind(i64::from(app.disabled))
        .bind(app.token_generation as i64)
        .bind(json(&app.device_groups))
        )
        .await?;
        Ok(())
    }

    async fn get_app(&self, client_id: &str) -> StoreResult<App> {
        let row = exec::query("SELECT * FROM apps WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("App {client_id}")))?;
        rows::app(&row)
    }

    async fn set_app_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<()> {
        let done = self
            .write_identity(
                exec::query(
                    "UPDATE apps SET secret_hash = $2, token_generation = token_generation + 1
                     WHERE client_id = $1",
                )
                .bind(client_id)
                .bind(secret_hash),
            )
            .await?;
        found(done.rows_affected(), || format!("App {client_id}"))
    }

    async fn rehash_app_secret(&self, client_id: &str, old: &str, new: &str) -> StoreResult<()> {
        self.write_one(
            exec::query(
                "UPDATE apps SET secret_hash = $3 WHERE client_id = $1 AND secret_hash = $2",
            )
            .bind(client_id)
            .bind(old)
            .bind(new),
        )
        .await?;
        Ok(())
    }

    async fn set_app_disabled(&self, client_id: &str, disabled: bool) -> StoreResult<()> {
        let done = self
            .write_identity(
                exec::query(
                    "UPDATE apps SET disabled = $2, token_generation = token_generation + 1
                     WHERE client_id = $1",
                )
                .bind(client_id)
                .bind(i64::from(disabled)),
            )
            .await?;
        found(done.rows_affected(), || format!("App {client_id}"))
    }

    async fn create_user(&self, user: &User, now: Micros) -> StoreResult<()> {
        self.write_one(
            exec::query(
                "INSERT INTO users (name, tenant_id, password_hash, roles, disabled, created_us, device_groups)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&user.name)
            .bind(&user.tenant_id)
            .bind(&user.password_hash)
            .bind(json(&user.roles))
            .bind(i64::from(user.disabled))
            .bind(now.0)
            .bind(json(&user.device_groups)),
        )
        .await
        .map_err(|err| {
            if err.is_unique_violation() {
                StoreError::Conflict(format!("A user named '{}' already exists", user.name))
            } else {
                err.into()
            }
        })?;
        Ok(())
    }

    async fn get_user(&self, name: &str) -> StoreResult<User> {
        let row = exec::query("SELECT * FROM users WHERE lower(name) = lower($1)")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("User {name}")))?;
        rows::user(&row)
    }

    async fn end_user_sessions(&self, name: &str) -> StoreResult<()> {
        let done = self
            .write_identity(
                exec::query(
                    "UPDATE users SET token_generation = token_generation + 1
                     WHERE lower(name) = lower($1)",
                )
                .bind(name),
            )
            .await?;
        found(done.rows_affected(), || format!("User {name}"))
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> StoreResult<()> {
        let done = self
            .write_identity(
                exec::query(
                    "UPDATE users SET disabled = $2, token_generation = token_generation + 1
                     WHERE lower(name) = lower($1)",
                )
                .bind(name)
                .bind(i64::from(disabled)),
            )
            .await?;
        found(done.rows_affected(), || format!("User {name}"))
    }

    async fn put_device_group(&self, group: &DeviceGroup, now: Micros) -> StoreResult<()> {
        self.write_identity(
            exec::query(
                "INSERT INTO device_groups (tenant_id, name, tags, created_us) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, name) DO UPDATE SET tags = excluded.tags",
            )
            .bind(&group.tenant_id)
            .bind(&group.name)
            .bind(json(&group.tags))
            .bind(now.0),
        )
        .await?;
        Ok(())
    }

    async fn list_device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>> {
        let rows = exec::query(
            "SELECT tenant_id, name, tags FROM device_groups WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceGroup {
                    tenant_id: row.try_get("tenant_id")?,
                    name: row.try_get("name")?,
                    tags: from_json(row.try_get::<&str>("tags")?)?,
                })
            })
            .collect()
    }
}
