//! The `reach-server` subcommands operators run on the server itself:
//! tenants, apps, users, enrollment tokens, device groups, machines, queued
//! actions and the audit trail. Each opens the configured store, does one
//! thing, and records it in the audit trail as the operator (the OS user).

mod args;

use anyhow::Context;
use reach_server::{Config, admin, audit};
use serde_json::json;

pub use args::Command;
use args::*;

/// The tenant named on the command line, or the only one there is.
async fn tenant_or_only(
    state: &reach_server::SharedState,
    tenant: Option<String>,
) -> anyhow::Result<String> {
    if let Some(tenant) = tenant {
        return Ok(tenant);
    }
    let tenants = state.store.list_tenants().await?;
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

/// A comma-separated list, without empty items.
fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Records an administrative change made from this command line.
async fn audit(
    state: &reach_server::SharedState,
    tenant_id: &str,
    operation: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let event = audit::event(
        tenant_id,
        audit::Actor::operator(),
        operation,
        "Succeeded",
        details,
    );
    if !state.auditor.record(event).await {
        anyhow::bail!("the change was made but its audit entry could not be written; see the log");
    }
    Ok(())
}

/// `apps disable` / `apps enable`: either way the app's earlier tokens stop working.
async fn set_app_disabled(
    state: &reach_server::SharedState,
    client_id: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let app = state.store.get_app(client_id).await?;
    state.store.set_app_disabled(client_id, disabled).await?;
    let operation = if disabled {
        "AppDisabled"
    } else {
        "AppEnabled"
    };
    audit(
        state,
        &app.tenant_id,
        operation,
        json!({ "clientId": client_id }),
    )
    .await?;
    match disabled {
        true => println!("app {client_id} disabled; its tokens no longer work"),
        false => println!("app {client_id} enabled; request new tokens"),
    }
    Ok(())
}

/// `users disable` / `users enable`: either way the user's earlier tokens stop working.
async fn set_user_disabled(
    state: &reach_server::SharedState,
    name: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let user = state.store.get_user(name).await?;
    state.store.set_user_disabled(name, disabled).await?;
    let operation = if disabled {
        "UserDisabled"
    } else {
        "UserEnabled"
    };
    audit(
        state,
        &user.tenant_id,
        operation,
        json!({ "name": user.name }),
    )
    .await?;
    match disabled {
        true => println!("user {} disabled; their sessions no longer work", user.name),
        false => println!(
            "user {} enabled; earlier sessions stay signed out",
            user.name
        ),
    }
    Ok(())
}

pub async fn administer(config: Config, command: Command) -> anyhow::Result<()> {
    let state = reach_server::open(config).await?;
    let store = state.store.as_ref();
    match command {
        Command::Tenants {
            command: TenantCommand::Create { name },
        } => {
            let tenant = admin::create_tenant(store, &name).await?;
            audit(&state, &tenant.id, "TenantCreated", json!({ "name": name })).await?;
            println!("tenant id: {}", tenant.id);
        }
        Command::Apps {
            command:
                AppCommand::Create {
                    name,
                    roles,
                    tenant,
                    groups,
                },
        } => {
            let roles = admin::parse_roles(&roles)?;
            let tenant = tenant_or_only(&state, tenant).await?;
            let groups = list(groups.as_deref());
            let app =
                admin::create_scoped_app(store, &tenant, &name, roles, groups.clone()).await?;
            let details = json!({ "clientId": app.client_id, "name": name, "roles": app.roles, "deviceGroups": groups });
            audit(&state, &tenant, "AppCreated", details).await?;
            println!("tenant id:     {}", app.tenant_id);
            println!("client id:     {}", app.client_id);
            println!("client secret: {}", app.client_secret);
            println!("roles:         {}", app.roles.join(","));
            println!("The secret is shown only now; it is stored hashed.");
        }
        Command::Users {
            command:
                UserCommand::Create {
                    name,
                    roles,
                    tenant,
                    password_stdin,
                    groups,
                },
        } => {
            let groups = list(groups.as_deref());
            let roles = admin::parse_roles(&roles)?;
            let tenant = tenant_or_only(&state, tenant).await?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            let user =
                admin::create_user(store, &tenant, &name, roles, groups.clone(), password).await?;
            let details = json!({ "name": user.name, "roles": user.roles, "deviceGroups": groups });
            audit(&state, &tenant, "UserCreated", details).await?;
            println!("tenant id: {}", user.tenant_id);
            println!("user:      {}", user.name);
            if !password_stdin {
                println!("password:  {}", user.password);
                println!("The password is shown only now; it is stored hashed.");
            }
            println!("roles:     {}", user.roles.join(","));
        }
        Command::Apps {
            command: AppCommand::RotateSecret { client_id },
        } => {
            let app = store.get_app(&client_id).await?;
            let secret = admin::rotate_app_secret(store, &client_id).await?;
            let details = json!({ "clientId": client_id });
            audit(&state, &app.tenant_id, "AppSecretRotated", details).await?;
            println!("client id:     {client_id}");
            println!("client secret: {secret}");
            println!("The secret is shown only now; tokens issued before this no longer work.");
        }
        Command::Apps {
            command: AppCommand::Disable { client_id },
        } => set_app_disabled(&state, &client_id, true).await?,
        Command::Apps {
            command: AppCommand::Enable { client_id },
        } => set_app_disabled(&state, &client_id, false).await?,
        Command::Users {
            command: UserCommand::Disable { name },
        } => set_user_disabled(&state, &name, true).await?,
        Command::Users {
            command: UserCommand::Enable { name },
        } => set_user_disabled(&state, &name, false).await?,
        Command::Groups {
            command: GroupCommand::Create { name, tags, tenant },
        } => {
            let tenant = tenant_or_only(&state, tenant).await?;
            let group = admin::create_group(store, &tenant, &name, &list(Some(&tags))).await?;
            let details = json!({ "name": group.name, "tags": group.tags });
            audit(&state, &tenant, "DeviceGroupDefined", details).await?;
            println!(
                "device group {}: machines tagged {}",
                group.name,
                group.tags.join(", ")
            );
        }
        Command::Groups {
            command: GroupCommand::List { tenant },
        } => {
            let tenant = tenant_or_only(&state, tenant).await?;
            for group in store.list_device_groups(&tenant).await? {
                println!("{}\t{}", group.name, group.tags.join(","));
            }
        }
        Command::Machines {
            command: MachineCommand::Tag { id, add, remove },
        } => {
            let machine = store.machine_credential(&id).await?;
            let tags = admin::change_tags(
                store,
                &machine.tenant_id,
                &id,
                &list(add.as_deref()),
                &list(remove.as_deref()),
            )
            .await?;
            let details = json!({ "added": list(add.as_deref()), "removed": list(remove.as_deref()), "tags": tags });
            audit(&state, &machine.tenant_id, "MachineTagged", details).await?;
            println!("machine {id} tags: {}", tags.join(", "));
        }
        Command::EnrollmentToken {
            command:
                TokenCommand::Create {
                    tenant,
                    expires,
                    uses,
                },
        } => {
            let tenant = tenant_or_only(&state, tenant).await?;
            let valid_for = admin::parse_validity(&expires)?;
            let token = admin::create_enrollment_token(store, &tenant, valid_for, uses).await?;
            let details =
                json!({ "validForSecs": valid_for.map(|d| d.as_secs()), "maxUses": uses });
            audit(&state, &tenant, "EnrollmentTokenCreated", details).await?;
            println!("{token}");
        }
        Command::EnrollmentToken {
            command: TokenCommand::List,
        } => {
            let now = reach_server::time::Micros::now();
            for token in store.list_enrollment_tokens().await? {
                println!("{}", admin::describe_token(&token, now));
            }
        }
        Command::EnrollmentToken {
            command: TokenCommand::Revoke { id },
        } => {
            let token = store
                .revoke_enrollment_token(&id, reach_server::time::Micros::now())
                .await?;
            audit(
                &state,
                &token.tenant_id,
                "EnrollmentTokenRevoked",
                json!({ "tokenId": token.id }),
            )
            .await?;
            println!("enrollment token {} revoked", token.id);
        }
        Command::Actions {
            command: ActionCommand::Pending { app },
        } => {
            for action in admin::pending_actions(store, &app).await? {
                println!(
                    "{}  {}  {}  created {}",
                    action.id,
                    action.machine_id,
                    action.computer_dns_name,
                    action.created.to_wire()
                );
            }
        }
        Command::Actions {
            command: ActionCommand::CancelPending { app, comment },
        } => {
            let app_row = store.get_app(&app).await?;
            let cancelled = admin::cancel_pending(store, &app, &comment).await?;
            let details = json!({ "clientId": app, "cancelled": cancelled });
            audit(
                &state,
                &app_row.tenant_id,
                "PendingActionsCancelled",
                details,
            )
            .await?;
            println!("{} pending actions of app {app} cancelled", cancelled.len());
        }
        Command::Machines {
            command: MachineCommand::Revoke { id },
        } => {
            let machine = store.machine_credential(&id).await?;
            store.revoke_machine(&id).await?;
            let details = json!({ "machineId": id });
            audit(&state, &machine.tenant_id, "MachineRevoked", details).await?;
            println!("machine {id} revoked");
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => match audit::verify(store).await? {
            audit::Verdict::Intact {
                entries,
                first,
                head,
            } => {
                println!("audit trail intact: {entries} entries");
                if let Some((seq, hash)) = head {
                    println!("entries {first} to {seq}; newest entry's hash: {hash}");
                    println!(
                        "Keep the newest hash elsewhere: a trail cut short at its end is still intact."
                    );
                }
            }
            audit::Verdict::Broken { seq, reason } => {
                println!("audit trail BROKEN at entry {seq}: {reason}");
                std::process::exit(1);
            }
        },
        Command::Audit {
            command: AuditCommand::Export { since, tenant },
        } => {
            let since = match since {
                Some(text) => reach_server::time::Micros::parse(&text).with_context(|| {
                    format!("--since '{text}' is not a date-time (e.g. 2026-11-01T00:00:00Z)")
                })?,
                None => reach_server::time::Micros(i64::MIN),
            };
            audit::export(
                store,
                since,
                tenant.as_deref(),
                &mut std::io::stdout().lock(),
            )
            .await?;
        }
        Command::PrintConfig => unreachable!("handled before opening the store"),
    }
    Ok(())
}
