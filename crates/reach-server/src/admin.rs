//! Administrative operations: creating tenants, client apps, console
//! users, device groups and enrollment tokens, rotating secrets, tagging
//! machines, cancelling an app's queue. The functions here are the changes
//! alone, as dev mode and tests set a server up; `operator` performs each
//! with its audit entry, as the `reach-server` subcommands do. Secrets are
//! returned once to the caller and stored only as hashes; nothing here
//! logs one.

pub mod operator;

use reach_proto::api::roles;

use crate::auth;
use crate::store::{App, DeviceGroup, Identities, Machines, Store, Tenant, User};
use crate::time::Micros;

/// A newly created client app, with its secret in clear (shown once).
#[derive(Debug, Clone)]
pub struct NewApp {
    /// The app's tenant.
    pub tenant_id: String,
    /// Its client id.
    pub client_id: String,
    /// Its secret, in clear: shown once, stored only as a hash.
    pub client_secret: String,
    /// Its display name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
}

/// Creates a tenant with a fresh id.
pub async fn create_tenant(store: &dyn Identities, name: &str) -> anyhow::Result<Tenant> {
    let tenant = Tenant {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
    };
    store.create_tenant(&tenant, Micros::now()).await?;
    Ok(tenant)
}

/// Checks role names against the ones Reach knows.
pub fn parse_roles(text: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let known = roles::ALL
            .iter()
            .chain([roles::READ, roles::READ_WRITE].iter())
            .find(|k| k.eq_ignore_ascii_case(role))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown role '{role}'; known roles: {}",
                    roles::ALL.join(", ")
                )
            })?;
        out.push(known.to_string());
    }
    if out.is_empty() {
        anyhow::bail!("give at least one role, for example Machine.LiveResponse");
    }
    Ok(out)
}

/// Creates an app with `roles` seeing every machine of the tenant.
pub async fn create_app(
    store: &dyn Identities,
    tenant_id: &str,
    name: &str,
    roles: Vec<String>,
) -> anyhow::Result<NewApp> {
    create_scoped_app(store, tenant_id, name, roles, Vec::new()).await
}

/// Like `create_app`, limited to `device_groups` (existing groups of the
/// tenant; empty: every machine).
pub async fn create_scoped_app(
    store: &dyn Identities,
    tenant_id: &str,
    name: &str,
    roles: Vec<String>,
    device_groups: Vec<String>,
) -> anyhow::Result<NewApp> {
    store.get_tenant(tenant_id).await?;
    check_groups(store, tenant_id, &device_groups).await?;
    let client_secret = auth::random_secret(32);
    let app = App {
        client_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant_id.to_string(),
        name: name.to_string(),
        secret_hash: auth::secrets::hash_client_secret(&client_secret),
        roles: roles.clone(),
        disabled: false,
        token_generation: 0,
        device_groups,
    };
    store.create_app(&app, Micros::now()).await?;
    Ok(NewApp {
        tenant_id: tenant_id.to_string(),
        client_id: app.client_id,
        client_secret,
        name: name.to_string(),
        roles,
    })
}

/// A newly created console user, with the password in clear (shown once).
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The user's tenant.
    pub tenant_id: String,
    /// The user's name.
    pub name: String,
    /// Its password, in clear: shown once, stored only as a hash.
    pub password: String,
    /// Its roles.
    pub roles: Vec<String>,
}

/// Creates a console user. Without `password`, a random one is made.
pub async fn create_user(
    store: &dyn Identities,
    tenant_id: &str,
    name: &str,
    roles: Vec<String>,
    device_groups: Vec<String>,
    password: Option<String>,
) -> anyhow::Result<NewUser> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        anyhow::bail!("a user name is 1 to 100 characters, without control characters");
    }
    let password = password.unwrap_or_else(|| auth::random_secret(15));
    if password.chars().count() < 12 {
        anyhow::bail!("a password has at least 12 characters");
    }
    store.get_tenant(tenant_id).await?;
    check_groups(store, tenant_id, &device_groups).await?;
    let user = User {
        name: name.to_string(),
        tenant_id: tenant_id.to_string(),
        password_hash: auth::secrets::hash_password(&password)?,
        roles: roles.clone(),
        disabled: false,
        token_generation: 0,
        device_groups,
    };
    store.create_user(&user, Micros::now()).await?;
    Ok(NewUser {
        tenant_id: tenant_id.to_string(),
        name: user.name,
        password,
        roles,
    })
}

/// Creates an agent enrollment token and returns it in clear (shown once),
/// valid for `valid_for` (None: until revoked) and `max_uses` enrollments
/// (None: any number).
pub async fn create_enrollment_token(
    store: &dyn Store,
    tenant_id: &str,
    valid_for: Option<std::time::Duration>,
    max_uses: Option<u64>,
) -> anyhow::Result<String> {
    store.get_tenant(tenant_id).await?;
    let token = format!("rch_enr_{}", auth::random_secret(24));
    let now = Micros::now();
    let expires = valid_for.map(|d| now.plus_secs(d.as_secs()));
    store
        .create_enrollment_token(tenant_id, &auth::sha256_hex(&token), expires, max_uses, now)
        .await?;
    Ok(token)
}

/// A validity written as `30m`, `24h`, `7d`, `3600s` or `never` (None).
pub fn parse_validity(text: &str) -> anyhow::Result<Option<std::time::Duration>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => anyhow::bail!("'{text}' is not a validity: use 30m, 24h, 7d, 3600s or never"),
    };
    let number: u64 = number.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        anyhow::anyhow!("'{text}' is not a validity: use 30m, 24h, 7d, 3600s or never")
    })?;
    Ok(Some(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    )))
}

/// One line per token, for `enrollment-token list`.
pub fn describe_token(token: &crate::store::EnrollmentTokenRow, now: Micros) -> String {
    let state = match (token.revoked, token.expires) {
        (Some(_), _) => "revoked".to_string(),
        (None, Some(expires)) if expires <= now => "expired".to_string(),
        _ if token.max_uses.is_some_and(|max| token.uses >= max) => "used up".to_string(),
        _ => "valid".to_string(),
    };
    let expires = token.expires.map_or("never".to_string(), |e| e.to_wire());
    let uses = match token.max_uses {
        Some(max) => format!("{}/{max}", token.uses),
        None => format!("{}/unlimited", token.uses),
    };
    format!(
        "{}  tenant {}  created {}  expires {expires}  uses {uses}  {state}",
        token.id,
        token.tenant_id,
        token.created.to_wire()
    )
}

/// Fails unless every name is a device group of the tenant.
async fn check_groups(
    store: &dyn Identities,
    tenant_id: &str,
    names: &[String],
) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let groups = store.list_device_groups(tenant_id).await?;
    for name in names {
        if !groups.iter().any(|g| g.name.eq_ignore_ascii_case(name)) {
            anyhow::bail!(
                "there is no device group '{name}'; create it with `reach-server groups create --name {name} --tags TAG,...`"
            );
        }
    }
    Ok(())
}

/// A machine tag or a group name: 1 to 200 characters, no control characters.
pub fn check_label(what: &str, text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 200 || text.chars().any(char::is_control) {
        anyhow::bail!("a {what} is 1 to 200 characters, without control characters");
    }
    Ok(text.to_string())
}

/// Creates (or redefines) a device group: the machines carrying any of `tags`.
pub async fn create_group(
    store: &dyn Identities,
    tenant_id: &str,
    name: &str,
    tags: &[String],
) -> anyhow::Result<DeviceGroup> {
    store.get_tenant(tenant_id).await?;
    let tags = tags
        .iter()
        .map(|t| check_label("machine tag", t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if tags.is_empty() {
        anyhow::bail!("a device group needs at least one tag");
    }
    let group = DeviceGroup {
        tenant_id: tenant_id.to_string(),
        name: check_label("group name", name)?,
        tags,
    };
    store.put_device_group(&group, Micros::now()).await?;
    Ok(group)
}

/// Gives an app a new secret (returned in clear, shown once); tokens issued
/// under the old one stop working at once.
pub async fn rotate_app_secret(store: &dyn Identities, client_id: &str) -> anyhow::Result<String> {
    let secret = auth::random_secret(32);
    store
        .set_app_secret(client_id, &auth::secrets::hash_client_secret(&secret))
        .await?;
    Ok(secret)
}

/// Adds and removes a machine's tags (compared without case); returns the
/// tags it then carries.
pub async fn change_tags(
    store: &dyn Machines,
    tenant_id: &str,
    machine_id: &str,
    add: &[String],
    remove: &[String],
) -> anyhow::Result<Vec<String>> {
    let machine = store.get_machine(tenant_id, machine_id).await?;
    let add = add
        .iter()
        .map(|t| check_label("machine tag", t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(store
        .change_machine_tags(tenant_id, &machine.id, &add, remove)
        .await?)
}

/// The live response actions an app queued that have not started yet
/// (Pending), oldest first.
pub async fn pending_actions(
    store: &dyn Store,
    client_id: &str,
) -> anyhow::Result<Vec<crate::store::ActionRow>> {
    store.get_app(client_id).await?;
    Ok(store
        .pending_actions_of(&format!("app:{client_id}"))
        .await?)
}

/// Cancels every action an app queued that has not started; returns the
/// ids cancelled (one that started meanwhile is left to run).
pub async fn cancel_pending(
    store: &dyn Store,
    client_id: &str,
    comment: &str,
) -> anyhow::Result<Vec<String>> {
    let mut cancelled = Vec::new();
    for action in pending_actions(store, client_id).await? {
        match store
            .cancel_action(
                &action.tenant_id,
                &action.id,
                "operator",
                Some(comment),
                Micros::now(),
            )
            .await
        {
            Ok(_) => cancelled.push(action.id),
            Err(crate::store::StoreError::Conflict(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(cancelled)
}
