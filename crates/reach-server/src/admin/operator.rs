//! The changes operators make with `reach-server` subcommands on the server
//! itself, each performed with its audit entry: the change first, then the
//! entry, as the operator (the OS user). A change whose entry cannot be
//! written is reported as an error, never silently. The binary only parses
//! arguments and prints what these return.

use serde_json::{Value, json};

use super::{NewApp, NewUser};
use crate::SharedState;
use crate::audit::{self, Actor, Operation, Outcome};
use crate::store::{DeviceGroup, EnrollmentTokenRow, Tenant, User};
use crate::time::Micros;

/// An operator's session: the server's state, and who the entries name.
pub struct Operator {
    state: SharedState,
    actor: Actor,
}

impl Operator {
    /// The operator is the OS user running the command.
    pub fn new(state: SharedState) -> Self {
        Self {
            state,
            actor: Actor::operator(),
        }
    }

    /// The server's state, for reads the binary prints.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    async fn audit(
        &self,
        tenant_id: &str,
        operation: Operation,
        details: Value,
    ) -> anyhow::Result<()> {
        let event = audit::event(
            tenant_id,
            self.actor.clone(),
            operation,
            Outcome::Succeeded,
            details,
        );
        if !self.state.auditor.record(event).await {
            anyhow::bail!(
                "the change was made but its audit entry could not be written; see the log"
            );
        }
        Ok(())
    }

    /// The tenant named, or the only one there is.
    pub async fn tenant_or_only(&self, tenant: Option<String>) -> anyhow::Result<String> {
        if let Some(tenant) = tenant {
            return Ok(tenant);
        }
        let tenants = self.state.store.list_tenants().await?;
        match tenants.as_slice() {
            [only] => Ok(only.id.clone()),
            [] => anyhow::bail!(
                "there is no tenant yet: create one with `reach-server tenants create --name NAME`"
            ),
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|t| format!("{} ({})", t.id, t.name))
                    .collect();
                anyhow::bail!("give --tenant, one of: {}", names.join(", "))
            }
        }
    }

    /// Creates a tenant.
    pub async fn create_tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        let tenant = super::create_tenant(self.state.store.as_ref(), name).await?;
        let details = json!({ "name": name });
        self.audit(&tenant.id, Operation::TenantCreated, details)
            .await?;
        Ok(tenant)
    }

    /// `roles` as written on the command line (comma-separated).
    pub async fn create_app(
        &self,
        tenant: Option<String>,
        name: &str,
        roles: &str,
        groups: Vec<String>,
    ) -> anyhow::Result<NewApp> {
        let roles = super::parse_roles(roles)?;
        let tenant = self.tenant_or_only(tenant).await?;
        let store = self.state.store.as_ref();
        let app = super::create_scoped_app(store, &tenant, name, roles, groups.clone()).await?;
        let details = json!({ "clientId": app.client_id, "name": name, "roles": app.roles, "deviceGroups": groups });
        self.audit(&tenant, Operation::AppCreated, details).await?;
        Ok(app)
    }

    /// Without `password`, a random one is made (and returned).
    pub async fn create_user(
        &self,
        tenant: Option<String>,
        name: &str,
        roles: &str,
        groups: Vec<String>,
        password: Option<String>,
    ) -> anyhow::Result<NewUser> {
        let roles = super::parse_roles(roles)?;
        let tenant = self.tenant_or_only(tenant).await?;
        let store = self.state.store.as_ref();
        let user =
            super::create_user(store, &tenant, name, roles, groups.clone(), password).await?;
        let details = json!({ "name": user.name, "roles": user.roles, "deviceGroups": groups });
        self.audit(&tenant, Operation::UserCreated, details).await?;
        Ok(user)
    }

    /// The new secret, in clear (shown once).
    pub async fn rotate_app_secret(&self, client_id: &str) -> anyhow::Result<String> {
        let store = self.state.store.as_ref();
        let app = store.get_app(client_id).await?;
        let secret = super::rotate_app_secret(store, client_id).await?;
        let details = json!({ "clientId": client_id });
        self.audit(&app.tenant_id, Operation::AppSecretRotated, details)
            .await?;
        Ok(secret)
    }

    /// Either way the app's earlier tokens stop working.
    pub async fn set_app_disabled(&self, client_id: &str, disabled: bool) -> anyhow::Result<()> {
        let store = self.state.store.as_ref();
        let app = store.get_app(client_id).await?;
        store.set_app_disabled(client_id, disabled).await?;
        let operation = match disabled {
            true => Operation::AppDisabled,
            false => Operation::AppEnabled,
        };
        let details = json!({ "clientId": client_id });
        self.audit(&app.tenant_id, operation, details).await
    }

    /// Either way the user's earlier tokens stop working.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> anyhow::Result<User> {
        let store = self.state.store.as_ref();
        let user = store.get_user(name).await?;
        store.set_user_disabled(name, disabled).await?;
        let operation = match disabled {
            true => Operation::UserDisabled,
            false => Operation::UserEnabled,
        };
        let details = json!({ "name": user.name });
        self.audit(&user.tenant_id, operation, details).await?;
        Ok(user)
    }

    /// Creates or redefines a device group.
    pub async fn define_group(
        &self,
        tenant: Option<String>,
        name: &str,
        tags: &[String],
    ) -> anyhow::Result<DeviceGroup> {
        let tenant = self.tenant_or_only(tenant).await?;
        let group = super::create_group(self.state.store.as_ref(), &tenant, name, tags).await?;
        let details = json!({ "name": group.name, "tags": group.tags });
        self.audit(&tenant, Operation::DeviceGroupDefined, details)
            .await?;
        Ok(group)
    }

    /// The tags the machine then carries.
    pub async fn tag_machine(
        &self,
        machine_id: &str,
        add: &[String],
        remove: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let store = self.state.store.as_ref();
        let machine = store.machine_credential(machine_id).await?;
        let tags = super::change_tags(store, &machine.tenant_id, machine_id, add, remove).await?;
        let details = json!({ "added": add, "removed": remove, "tags": tags });
        self.audit(&machine.tenant_id, Operation::MachineTagged, details)
            .await?;
        Ok(tags)
    }

    /// The token, in clear (shown once). `expires` as `parse_validity` reads it.
    pub async fn create_enrollment_token(
        &self,
        tenant: Option<String>,
        expires: &str,
        uses: Option<u64>,
    ) -> anyhow::Result<String> {
        let tenant = self.tenant_or_only(tenant).await?;
        let valid_for = super::parse_validity(expires)?;
        let store = self.state.store.as_ref();
        let token = super::create_enrollment_token(store, &tenant, valid_for, uses).await?;
        let details = json!({ "validForSecs": valid_for.map(|d| d.as_secs()), "maxUses": uses });
        self.audit(&tenant, Operation::EnrollmentTokenCreated, details)
            .await?;
        Ok(token)
    }

    /// Revokes the enrollment token whose id starts with `id`.
    pub async fn revoke_enrollment_token(&self, id: &str) -> anyhow::Result<EnrollmentTokenRow> {
        let store = self.state.store.as_ref();
        let token = store.revoke_enrollment_token(id, Micros::now()).await?;
        let details = json!({ "tokenId": token.id });
        self.audit(&token.tenant_id, Operation::EnrollmentTokenRevoked, details)
            .await?;
        Ok(token)
    }

    /// The ids of the app's Pending actions it cancelled.
    pub async fn cancel_pending(
        &self,
        client_id: &str,
        comment: &str,
    ) -> anyhow::Result<Vec<String>> {
        let store = self.state.store.as_ref();
        let app = store.get_app(client_id).await?;
        let cancelled = super::cancel_pending(store, client_id, comment).await?;
        let details = json!({ "clientId": client_id, "cancelled": cancelled });
        self.audit(&app.tenant_id, Operation::PendingActionsCancelled, details)
            .await?;
        Ok(cancelled)
    }

    /// The machine's credential stops working; its connection is closed by
    /// the sweeper of whichever node holds it.
    pub async fn revoke_machine(&self, machine_id: &str) -> anyhow::Result<()> {
        let store = self.state.store.as_ref();
        let machine = store.machine_credential(machine_id).await?;
        store.revoke_machine(machine_id).await?;
        let details = json!({ "machineId": machine_id });
        self.audit(&machine.tenant_id, Operation::MachineRevoked, details)
            .await
    }
}
