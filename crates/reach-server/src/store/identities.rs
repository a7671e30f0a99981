//! Tenants, client apps, console users, device groups and the server's own
//! secrets: who may call, with which roles, limited to which machines.

use async_trait::async_trait;

use super::*;
use crate::time::Micros;

/// A tenant: the unit every other record belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Its id (a GUID; the `{tenant}` of the token endpoints).
    pub id: String,
    /// Its name, for people.
    pub name: String,
}

/// A client app (client-credentials identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// The app's client id (a GUID).
    pub client_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its display name (shown as `requestor`).
    pub name: String,
    /// argon2 PHC string.
    pub secret_hash: String,
    /// Its roles (`reach_proto::api::roles`).
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
    /// The user's name (unique without case).
    pub name: String,
    /// Its tenant.
    pub tenant_id: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Disabled users cannot sign in, and their tokens stop working.
    pub disabled: bool,
    /// Bumped when the user is disabled: older tokens stop working.
    pub token_generation: u64,
    /// Device groups the user is limited to; empty: every machine.
    pub device_groups: Vec<String>,
}

/// A named set of machine tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGroup {
    /// Its tenant.
    pub tenant_id: String,
    /// Its name, as app and user records name it.
    pub name: String,
    /// Machines carrying any of these tags (without case) are in the group.
    pub tags: Vec<String>,
}

/// Who may call, with which roles, limited to which machines; and the server's own secrets.
#[async_trait]
pub trait Identities: Send + Sync {
    /// A number that grows whenever this process changes an account's
    /// standing or a device group (secret, disabled, sessions ended, group
    /// tags): what was read of accounts at an older number may be stale.
    /// Changes made by other processes do not move it.
    fn identities_epoch(&self) -> u64;
    /// The secret stored under `name`, storing `fresh` first if there is none.
    /// Concurrent callers all get the one value that won.
    async fn secret(&self, name: &str, fresh: &str, now: Micros) -> StoreResult<String>;
    /// Conflict when the id exists.
    async fn create_tenant(&self, tenant: &Tenant, now: Micros) -> StoreResult<()>;
    /// By id.
    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant>;
    /// Every tenant.
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    /// Conflict when the client id exists.
    async fn create_app(&self, app: &App, now: Micros) -> StoreResult<()>;
    /// By client id.
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
    /// A tenant's device groups.
    async fn list_device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>>;
}
