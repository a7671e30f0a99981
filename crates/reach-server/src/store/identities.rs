//! Tenants, client apps, console users, device groups and the server's own
//! secrets: who may call, with which roles, limited to which machines.

use async_trait::async_trait;

use super::*;
use crate::time::Micros;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

/// A client app (client-credentials identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub client_id: String,
    pub tenant_id: String,
    pub name: String,
    /// argon2 PHC string.
    pub secret_hash: String,
    pub roles: Vec<String>,
    /// Disabled apps get no token, and their tokens stop working.
    pub disabled: bool,
    /// Bumped when the secret is rotated or the app disabled: tokens issued
    /// under an older generation stop working.
    pub token_generation: u64,
    /// Device groups the app is limited to; empty: every machine.
    pub device_groups: Vec<String>,
}

/// A person who signs in to the web console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub tenant_id: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    /// Bumped when the user is disabled: older tokens stop working.
    pub token_generation: u64,
    /// Device groups the user is limited to; empty: every machine.
    pub device_groups: Vec<String>,
}

/// A named set of machine tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGroup {
    pub tenant_id: String,
    pub name: String,
    pub tags: Vec<String>,
}

#[async_trait]
pub trait Identities: Send + Sync {
    /// The secret stored under `name`, storing `fresh` first if there is none.
    /// Concurrent callers all get the one value that won.
    async fn secret(&self, name: &str, fresh: &str, now: Micros) -> StoreResult<String>;
    async fn create_tenant(&self, tenant: &Tenant, now: Micros) -> StoreResult<()>;
    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    async fn create_app(&self, app: &App, now: Micros) -> StoreResult<()>;
    async fn get_app(&self, client_id: &str) -> StoreResult<App>;
    /// Replaces an app's secret hash; its earlier tokens stop working.
    async fn set_app_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<()>;
    /// Replaces an app's secret hash with another hash of the same secret,
    /// only while the stored one is still `old`; its tokens stay valid.
    async fn rehash_app_secret(&self, client_id: &str, old: &str, new: &str) -> StoreResult<()>;
    /// Disables or enables an app; either way its earlier tokens stop working.
    async fn set_app_disabled(&self, client_id: &str, disabled: bool) -> StoreResult<()>;
    /// Conflict when a user of that name (in any case) exists.
    async fn create_user(&self, user: &User, now: Micros) -> StoreResult<()>;
    /// By name, compared without case.
    async fn get_user(&self, name: &str) -> StoreResult<User>;
    /// Ends every session of a user (by name, without case): its earlier
    /// tokens stop working.
    async fn end_user_sessions(&self, name: &str) -> StoreResult<()>;
    /// Disables or enables a user (by name, without case); either way the
    /// user's earlier tokens stop working.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> StoreResult<()>;
    /// Creates or replaces a tenant's device group.
    async fn put_device_group(&self, group: &DeviceGroup, now: Micros) -> StoreResult<()>;
    async fn list_device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>>;
}
