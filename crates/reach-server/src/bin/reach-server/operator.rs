//! The `reach-server` subcommands operators run on the server itself:
//! tenants, apps, users, enrollment tokens, device groups, machines, queued
//! actions and the audit trail. Each opens the configured store, does one
//! thing through `admin::operator::Operator` (which records the change in
//! the audit trail as the operator, the OS user), and prints the outcome.
//! This file parses and prints; it changes nothing itself.

mod args;

use anyhow::Context;
use reach_server::admin::{self, operator::Operator};
use reach_server::{Config, audit};

pub use args::Command;
use args::*;

/// A comma-separated list, without empty items.
fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Reads one line (the password) from standard input.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn administer(config: Config, command: Command) -> anyhow::Result<()> {
    let state = reach_server::open(config).await?;
    let operator = Operator::new(state.clone());
    let store = state.store.as_ref();
    match command {
        Command::Tenants {
            command: TenantCommand::Create { name },
        } => {
            let tenant = operator.create_tenant(&name).await?;
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
            let groups = list(groups.as_deref());
            let app = operator.create_app(tenant, &name, &roles, groups).await?;
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
            let password = match password_stdin {
                true => Some(password_from_stdin()?),
                false => None,
            };
            let user = operator
                .create_user(tenant, &name, &roles, groups, password)
                .await?;
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
            let secret = operator.rotate_app_secret(&client_id).await?;
            println!("client id:     {client_id}");
            println!("client secret: {secret}");
            println!("The secret is shown only now; tokens issued before this no longer work.");
        }
        Command::Apps {
            command: AppCommand::Disable { client_id },
        } => {
            operator.set_app_disabled(&client_id, true).await?;
            println!("app {client_id} disabled; its tokens no longer work");
        }
        Command::Apps {
            command: AppCommand::Enable { client_id },
        } => {
            operator.set_app_disabled(&client_id, false).await?;
            println!("app {client_id} enabled; request new tokens");
        }
        Command::Users {
            command: UserCommand::Disable { name },
        } => {
            let user = operator.set_user_disabled(&name, true).await?;
            println!("user {} disabled; their sessions no longer work", user.name);
        }
        Command::Users {
            command: UserCommand::Enable { name },
        } => {
            let user = operator.set_user_disabled(&name, false).await?;
            println!(
                "user {} enabled; earlier sessions stay signed out",
                user.name
            );
        }
        Command::Groups {
            command: GroupCommand::Create { name, tags, tenant },
        } => {
            let group = operator
                .define_group(tenant, &name, &list(Some(&tags)))
                .await?;
            println!(
                "device group {}: machines tagged {}",
                group.name,
                group.tags.join(", ")
            );
        }
        Command::Groups {
            command: GroupCommand::List { tenant },
        } => {
            let tenant = operator.tenant_or_only(tenant).await?;
            for group in store.list_device_groups(&tenant).await? {
                println!("{}\t{}", group.name, group.tags.join(","));
            }
        }
        Command::Machines {
            command: MachineCommand::Tag { id, add, remove },
        } => {
            let tags = operator
                .tag_machine(&id, &list(add.as_deref()), &list(remove.as_deref()))
                .await?;
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
            let token = operator
                .create_enrollment_token(tenant, &expires, uses)
                .await?;
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
            let token = operator.revoke_enrollment_token(&id).await?;
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
            let cancelled = operator.cancel_pending(&app, &comment).await?;
            println!("{} pending actions of app {app} cancelled", cancelled.len());
        }
        Command::Machines {
            command: MachineCommand::Revoke { id },
        } => {
            operator.revoke_machine(&id).await?;
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
