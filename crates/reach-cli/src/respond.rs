//! `reach isolate`, `reach release` and `reach offboard`: Defender's
//! response actions on one machine (by id or computer name), or on many
//! (--machines, --tag, --filter, --all), one call per machine as the API
//! takes them (as SOAR playbooks fan out), each machine's outcome reported
//! and failures collected. Many machines (and any offboarding) need a `y`
//! on a terminal, or `--yes`. Waits for each action to end unless
//! --no-wait; exits 1 when any did not succeed.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reach_client::Client;
use reach_proto::api::{ActionStatus, Machine, MachineAction};
use serde_json::json;

use crate::text::clean;

/// Which machines, and how.
#[derive(Args, Debug)]
pub struct RespondArgs {
    /// One machine, by id or computer name.
    pub machine: Option<String>,
    #[command(flatten)]
    pub selection: crate::batch::Selection,
    /// Why (required: the audit trail records it).
    #[arg(long)]
    pub comment: String,
    /// Act on several machines without asking.
    #[arg(long)]
    pub yes: bool,
    /// Return once the actions are created.
    #[arg(long)]
    pub no_wait: bool,
}

/// `reach isolate`'s own flag.
#[derive(Args, Debug)]
pub struct IsolateArgs {
    #[command(flatten)]
    pub targets: RespondArgs,
    /// Selective isolation: also keep what the server's
    /// `[isolation] selective_allow` lists.
    #[arg(long)]
    pub selective: bool,
}

/// `reach quarantine`'s own flag.
#[derive(Args, Debug)]
pub struct QuarantineArgs {
    #[command(flatten)]
    pub targets: RespondArgs,
    /// The executable's SHA-1 (40 hexadecimal digits).
    #[arg(long)]
    pub sha1: String,
}

/// What is asked of each machine.
#[derive(Debug, Clone)]
pub enum Response {
    /// `isolate`, Full or Selective.
    Isolate {
        /// Selective isolation.
        selective: bool,
    },
    /// `unisolate`.
    Release,
    /// `offboard`.
    Offboard,
    /// `collectInvestigationPackage`.
    Collect,
    /// `StopAndQuarantineFile`.
    Quarantine {
        /// Hex SHA-1 of the executable.
        sha1: String,
    },
}

impl Response {
    fn verb(&self) -> &'static str {
        match self {
            Response::Isolate { .. } => "isolate",
            Response::Release => "release",
            Response::Offboard => "offboard",
            Response::Quarantine { .. } => "stop and quarantine the file on",
            Response::Collect => "collect the investigation package of",
        }
    }

    fn consequence(&self) -> &'static str {
        match self {
            Response::Isolate { .. } => {
                "each loses its network but its Reach servers until released"
            }
            Response::Release => "each gets its network back",
            Response::Offboard => {
                "each machine is revoked and its agent deletes its credential and stops: it takes a new enrollment to come back"
            }
            Response::Quarantine { .. } => {
                "every process running that executable is killed and the file moved to the agent's quarantine"
            }
            Response::Collect => "each device's forensic data is read and sent as a zip",
        }
    }

    async fn call(
        &self,
        client: &Client,
        machine: &str,
        comment: &str,
    ) -> reach_client::Result<MachineAction> {
        match self {
            Response::Isolate { selective } => {
                let kind = if *selective { "Selective" } else { "Full" };
                client.isolate(machine, comment, kind).await
            }
            Response::Release => client.unisolate(machine, comment).await,
            Response::Offboard => client.offboard(machine, comment).await,
            Response::Collect => client.collect_investigation_package(machine, comment).await,
            Response::Quarantine { sha1 } => {
                client
                    .stop_and_quarantine_file(machine, comment, sha1)
                    .await
            }
        }
    }
}

/// Most machines a fan-out reads per page of `GET /api/machines`.
const PAGE: usize = 1000;

/// Runs `response` on the machines `args` names.
pub async fn respond(
    client: &Client,
    response: Response,
    args: RespondArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let machines = targets(client, &args).await?;
    if machines.is_empty() {
        eprintln!("no machine matches");
        return Ok(ExitCode::from(1));
    }
    // Offboarding is asked about even for one machine: it cannot be undone.
    let ask = machines.len() > 1 || matches!(response, Response::Offboard);
    if ask && !args.yes && !confirm(&response, machines.len())? {
        return Ok(ExitCode::from(1));
    }
    let mut created = Vec::new();
    let mut failed = 0;
    for (id, name) in &machines {
        match response.call(client, id, &args.comment).await {
            Ok(action) => {
                if !json {
                    eprintln!(
                        "{} ({}): {} {}",
                        clean(name),
                        clean(id),
                        response.verb(),
                        clean(&action.id)
                    );
                }
                created.push((name.clone(), action));
            }
            Err(err) => {
                failed += 1;
                if json {
                    println!("{}", json!({ "machineId": id, "error": err.to_string() }));
                } else {
                    eprintln!(
                        "{} ({}): {}",
                        clean(name),
                        clean(id),
                        clean(&err.to_string())
                    );
                }
            }
        }
    }
    if !args.no_wait {
        created = wait_all(client, created).await?;
    }
    for (name, action) in &created {
        if json {
            println!("{}", serde_json::to_string(action)?);
            continue;
        }
        let errors = action
            .commands
            .iter()
            .flat_map(|c| c.errors.iter())
            .cloned()
            .collect::<Vec<_>>();
        let why = if errors.is_empty() {
            String::new()
        } else {
            format!(": {}", errors.join("; "))
        };
        println!(
            "{}\t{}\t{}{}",
            clean(name),
            clean(&action.id),
            action.status,
            clean(&why)
        );
        if matches!(response, Response::Collect) && action.status == ActionStatus::Succeeded {
            eprintln!(
                "  the package: reach result {} 0 -o package.zip",
                clean(&action.id)
            );
        }
        // Without waiting, an action not yet final is not a failure.
        let settled = action.status.is_final() || !args.no_wait;
        if settled && action.status != ActionStatus::Succeeded {
            failed += 1;
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The machines named, as (id, name): one named as given (the server
/// resolves a name), or those the selection finds.
async fn targets(client: &Client, args: &RespondArgs) -> anyhow::Result<Vec<(String, String)>> {
    let selection = &args.selection;
    let given = [
        !selection.machines.is_empty(),
        !selection.tags.is_empty(),
        selection.filter.is_some(),
        selection.all,
    ]
    .into_iter()
    .filter(|given| *given)
    .count();
    let targets = match (&args.machine, selection.selector()) {
        (Some(machine), None) => return Ok(vec![(machine.clone(), machine.clone())]),
        (None, Some(_)) if given > 1 => {
            anyhow::bail!("give one of --machines, --tag, --filter or --all")
        }
        (None, Some(targets)) => targets,
        (Some(_), Some(_)) => {
            anyhow::bail!("give a machine, or --machines, --tag, --filter or --all, not both")
        }
        (None, None) => anyhow::bail!("give a machine, or --machines, --tag, --filter or --all"),
    };
    if let Some(ids) = targets.ids {
        return Ok(ids.iter().map(|id| (id.clone(), id.clone())).collect());
    }
    let quote = |text: &str| text.replace('\'', "''");
    let filter = match (targets.tags, targets.filter) {
        (Some(tags), _) => Some(
            tags.iter()
                .map(|t| format!("machineTags/any(t: t eq '{}')", quote(t)))
                .collect::<Vec<_>>()
                .join(" or "),
        ),
        (None, filter) => filter,
    };
    let mut found = Vec::new();
    loop {
        let top = PAGE.to_string();
        let skip = found.len().to_string();
        let mut query = vec![("$top", top.as_str()), ("$skip", skip.as_str())];
        if let Some(filter) = &filter {
            query.push(("$filter", filter.as_str()));
        }
        let page = client
            .machines(&query)
            .await
            .context("listing the machines")?;
        let last = page.value.len() < PAGE;
        found.extend(
            page.value
                .into_iter()
                .map(|m: Machine| (m.id, m.computer_dns_name)),
        );
        if last {
            return Ok(found);
        }
    }
}

/// Asks on the terminal; without one, refuses (`--yes` is the answer).
fn confirm(response: &Response, count: usize) -> anyhow::Result<bool> {
    let what = match count {
        1 => "1 machine".to_string(),
        n => format!("{n} machines"),
    };
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "{what} match: give --yes to {} ({})",
            response.verb(),
            response.consequence()
        );
        return Ok(false);
    }
    eprint!(
        "{} {what}? {} [y/N] ",
        response.verb(),
        response.consequence()
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Polls every action until it is final.
async fn wait_all(
    client: &Client,
    mut actions: Vec<(String, MachineAction)>,
) -> anyhow::Result<Vec<(String, MachineAction)>> {
    loop {
        let mut waiting = 0;
        for (_, action) in actions.iter_mut() {
            if action.status.is_final() {
                continue;
            }
            *action = reach_client::patiently(|| client.action(&action.id)).await?;
            if !action.status.is_final() {
                waiting += 1;
            }
        }
        if waiting == 0 {
            return Ok(actions);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
