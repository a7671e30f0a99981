//! How `reach` prints: aligned tables for people, JSON with `--json`.
//! Every piece of text from the server passes `text::clean` first.

use crate::text::clean;
use reach_proto::api::{CommandEntry, LibraryFile, Machine, MachineAction};
use serde::Serialize;

fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// What a command acts on: its library file name or device path.
pub fn target(entry: &CommandEntry) -> &str {
    entry
        .command
        .params
        .first()
        .map_or("", |p| p.value.as_str())
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| clean(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub fn machines(machines: &[Machine], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(machines);
    }
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.computer_dns_name.clone(),
                m.health_status.clone(),
                m.os_platform.clone(),
                m.version.clone(),
                m.isolation_state.clone(),
                m.last_seen.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "HEALTH",
            "OS",
            "AGENT",
            "ISOLATION",
            "LAST SEEN",
        ],
        &rows,
    );
    Ok(())
}

/// A machine's tags after a change: one per line, or the Machine as JSON.
pub fn machine_tags(machine: &Machine, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(machine);
    }
    println!(
        "{} ({}) tags: {}",
        clean(&machine.id),
        clean(&machine.computer_dns_name),
        clean(&machine.machine_tags.join(", "))
    );
    Ok(())
}

pub fn library(files: &[LibraryFile], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(files);
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            vec![
                f.file_name.clone(),
                f.size.to_string(),
                f.sha256.clone(),
                f.created_by.clone(),
                f.last_updated_time.clone(),
            ]
        })
        .collect();
    table(&["NAME", "BYTES", "SHA256", "CREATED BY", "UPDATED"], &rows);
    Ok(())
}

pub fn actions(actions: &[MachineAction], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(actions);
    }
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            let kinds: Vec<&str> = a.commands.iter().map(|c| c.command.kind.as_str()).collect();
            vec![
                a.id.clone(),
                a.status.to_string(),
                a.computer_dns_name.clone().unwrap_or_default(),
                a.requestor.clone(),
                a.creation_date_time_utc.clone(),
                kinds.join(","),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "MACHINE",
            "REQUESTOR",
            "CREATED",
            "COMMANDS",
        ],
        &rows,
    );
    Ok(())
}

pub fn action(action: &MachineAction, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(action);
    }
    println!("action   {}", clean(&action.id));
    println!("status   {}", action.status);
    println!(
        "machine  {} ({})",
        clean(&action.machine_id),
        clean(action.computer_dns_name.as_deref().unwrap_or("?"))
    );
    println!("by       {}", clean(&action.requestor));
    if let Some(comment) = &action.requestor_comment {
        println!("comment  {}", clean(comment));
    }
    if let Some(by) = &action.cancellation_requestor {
        println!(
            "cancelled by {}: {}",
            clean(by),
            clean(action.cancellation_comment.as_deref().unwrap_or(""))
        );
    }
    let rows: Vec<Vec<String>> = action
        .commands
        .iter()
        .map(|c| {
            vec![
                c.index.to_string(),
                c.command.kind.clone(),
                target(c).to_string(),
                c.command_status.to_string(),
                c.errors.join("; "),
            ]
        })
        .collect();
    table(&["#", "TYPE", "TARGET", "STATUS", "ERRORS"], &rows);
    Ok(())
}
