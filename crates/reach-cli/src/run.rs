//! `reach run`: builds the live response request from flags (always in the
//! API's order: PutFile, then RunScript, then GetFile), submits it, waits
//! with a live status line, prints script transcripts, and saves collected
//! files un-gzipped. Also `reach result`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;

use crate::text::clean;
use reach_client::Client;
use reach_proto::api::{
    ActionStatus, Command, CommandStatus, CommandType, MachineAction, RunLiveResponseRequest,
    ScriptTranscript,
};

#[derive(Args)]
pub struct RunArgs {
    /// Machine id or computer name (or target many: --machines, --tag,
    /// --filter, --all).
    machine: Option<String>,
    #[command(flatten)]
    targets: crate::batch::Targets,
    /// Put a library file into the device's working folder (repeatable).
    #[arg(long = "put-file", value_name = "NAME")]
    put_file: Vec<String>,
    /// Run a library script (repeatable); `--args` after it applies to it.
    #[arg(long = "script", value_name = "NAME")]
    script: Vec<String>,
    /// Arguments for the preceding --script, split as a shell would.
    #[arg(long = "args", value_name = "ARGS", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Collect a file from the device (repeatable).
    #[arg(long = "get-file", value_name = "PATH")]
    get_file: Vec<String>,
    #[arg(long, default_value = "Run with the reach CLI")]
    comment: String,
    /// Save collected files here, un-gzipped.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Submit and print the action without waiting for it.
    #[arg(long)]
    no_wait: bool,
    /// Show each script's output as it runs (on a batch, each line with
    /// its machine's name), then the summary. Ctrl-C asks whether to cancel.
    #[arg(long, conflicts_with = "no_wait")]
    pub follow: bool,
}

/// Pairs each `--args` with the `--script` given before it.
fn script_commands(args: &RunArgs, matches: &clap::ArgMatches) -> anyhow::Result<Vec<Command>> {
    let script_at: Vec<usize> = matches
        .indices_of("script")
        .map(|i| i.collect())
        .unwrap_or_default();
    let args_at: Vec<usize> = matches
        .indices_of("args")
        .map(|i| i.collect())
        .unwrap_or_default();
    let mut script_args: Vec<Option<String>> = vec![None; args.script.len()];
    for (value, at) in args.args.iter().zip(args_at) {
        let Some(owner) = script_at.iter().rposition(|s| *s < at) else {
            bail!("--args must follow the --script it belongs to");
        };
        if script_args[owner].is_some() {
            bail!("--script {} has more than one --args", args.script[owner]);
        }
        script_args[owner] = Some(value.clone());
    }
    Ok(args
        .script
        .iter()
        .zip(script_args)
        .map(|(name, a)| match a {
            Some(a) => Command::new(
                CommandType::RunScript,
                &[("ScriptName", name), ("Args", &a)],
            ),
            None => Command::new(CommandType::RunScript, &[("ScriptName", name)]),
        })
        .collect())
}

pub async fn run(
    client: &Client,
    args: RunArgs,
    matches: &clap::ArgMatches,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut commands: Vec<Command> = args
        .put_file
        .iter()
        .map(|n| Command::new(CommandType::PutFile, &[("FileName", n)]))
        .collect();
    commands.extend(script_commands(&args, matches)?);
    commands.extend(
        args.get_file
            .iter()
            .map(|p| Command::new(CommandType::GetFile, &[("Path", p)])),
    );
    if commands.is_empty() {
        eprintln!("error: give at least one of --put-file, --script or --get-file");
        return Ok(ExitCode::from(2));
    }
    let machine = match (args.machine.clone(), args.targets.selector()) {
        (Some(machine), None) => machine,
        (None, Some(selector)) => {
            return crate::batch::run(
                client,
                commands,
                args.comment.clone(),
                &args.targets,
                selector,
                args.out.as_deref(),
                args.no_wait,
                args.follow,
                json,
            )
            .await;
        }
        (Some(_), Some(_)) => {
            eprintln!("error: give one machine, or --machines, --tag, --filter or --all, not both");
            return Ok(ExitCode::from(2));
        }
        (None, None) => {
            eprintln!("error: give a machine, or --machines, --tag, --filter or --all");
            return Ok(ExitCode::from(2));
        }
    };
    let request = RunLiveResponseRequest {
        commands: Some(commands),
        comment: Some(args.comment.clone()),
    };
    let created = client.run_live_response(&machine, &request).await?;
    if args.no_wait {
        crate::output::action(&created, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("action {} submitted", clean(&created.id));
    if args.follow {
        for command in created.commands.iter().filter(|c| is_script(&c.command)) {
            let follow = client.follow_output(&created.id, command.index, None);
            let followed = crate::follow::Followed::Action(&created.id);
            if let crate::follow::Ended::Left =
                crate::follow::print(client, follow, followed, json).await?
            {
                return Ok(ExitCode::from(130));
            }
        }
    }
    let done = wait(client, &created.id).await?;
    if json {
        crate::output::action(&done, true)?;
    } else {
        report(client, &done, args.out.as_deref(), args.follow).await?;
    }
    if let Some(out) = &args.out
        && json
    {
        save_collected(client, &done, out).await?;
    }
    Ok(if done.status == ActionStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Polls until the action is final, with a status line on a terminal.
async fn wait(client: &Client, id: &str) -> anyhow::Result<MachineAction> {
    let tty = std::io::stderr().is_terminal();
    loop {
        let action = reach_client::patiently(|| client.action(id)).await?;
        if tty {
            let done = action
                .commands
                .iter()
                .filter(|c| c.command_status == CommandStatus::Completed)
                .count();
            eprint!(
                "\r{} — {done}/{} commands completed   ",
                action.status,
                action.commands.len()
            );
            let _ = std::io::stderr().flush();
        }
        if action.status.is_final() {
            if tty {
                eprintln!();
            }
            return Ok(action);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) fn is_script(command: &Command) -> bool {
    CommandType::parse(&command.kind) == Some(CommandType::RunScript)
}

/// `reach output`: a script's output so far, or followed to its end.
pub async fn output(
    client: &Client,
    id: &str,
    index: u32,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if follow {
        let stream = client.follow_output(id, index, None);
        let followed = crate::follow::Followed::Action(id);
        return Ok(
            match crate::follow::print(client, stream, followed, json).await? {
                crate::follow::Ended::Left => ExitCode::from(130),
                crate::follow::Ended::Finished(end) => {
                    if let Some(end) = &end
                        && !json
                    {
                        let code = end.exit_code.map_or("-".to_string(), |c| c.to_string());
                        eprintln!("{} (exit code {code})", end.command_status);
                    }
                    if end.is_some_and(|e| e.command_status == "Completed") {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
            },
        );
    }
    let output = client.output(id, index).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", clean(&output.stdout));
    eprint!("{}", clean(&output.stderr));
    if !output.complete {
        eprintln!(
            "(still running: `reach output {} {index} --follow` follows it)",
            clean(id)
        );
    } else if let Some(code) = output.exit_code {
        eprintln!("(exit code {code})");
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(
    client: &Client,
    action: &MachineAction,
    out: Option<&Path>,
    followed: bool,
) -> anyhow::Result<()> {
    println!("action {}: {}", clean(&action.id), action.status);
    for command in &action.commands {
        let target = crate::output::target(command);
        println!(
            "[{}] {} {}: {}",
            command.index,
            clean(&command.command.kind),
            clean(target),
            command.command_status
        );
        for error in &command.errors {
            println!("    error: {}", clean(error));
        }
        if command.command_status != CommandStatus::Completed {
            continue;
        }
        match CommandType::parse(&command.command.kind) {
            Some(CommandType::RunScript) => {
                let url = client.download_link(&action.id, command.index).await?;
                let transcript: ScriptTranscript = client.download(&url).await?.json().await?;
                println!("    exit code: {}", transcript.exit_code);
                if !followed {
                    print_block("stdout", &transcript.script_output);
                    print_block("stderr", &transcript.script_errors);
                }
            }
            Some(CommandType::GetFile) => {
                if let Some(out) = out {
                    let path = save_one(client, action, command.index, target, out).await?;
                    println!("    saved to {}", path.display());
                } else {
                    println!(
                        "    (use --out DIR or `reach result {} {}` to download)",
                        clean(&action.id),
                        command.index
                    );
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn print_block(label: &str, text: &str) {
    if text.is_empty() {
        return;
    }
    println!("    --- {label}");
    for line in clean(text).lines() {
        println!("    {line}");
    }
}

async fn save_collected(client: &Client, action: &MachineAction, out: &Path) -> anyhow::Result<()> {
    for command in &action.commands {
        if command.command.kind == "GetFile" && command.command_status == CommandStatus::Completed {
            let target = crate::output::target(command);
            save_one(client, action, command.index, target, out).await?;
        }
    }
    Ok(())
}

/// The device path's last component, made safe as a local file name.
pub(crate) fn local_name(device_path: &str, index: u32) -> String {
    let base = device_path
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .unwrap_or("file");
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.trim_matches('.').is_empty() {
        format!("file-{index}")
    } else {
        safe
    }
}

async fn save_one(
    client: &Client,
    action: &MachineAction,
    index: u32,
    device_path: &str,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(local_name(device_path, index));
    download_to(client, &action.id, index, Some(&path), false).await?;
    Ok(path)
}

/// Streams a result to `output` (or stdout), gunzipping collected files unless `raw`.
async fn download_to(
    client: &Client,
    id: &str,
    index: u32,
    output: Option<&Path>,
    raw: bool,
) -> anyhow::Result<()> {
    let url = client.download_link(id, index).await?;
    let response = client.download(&url).await?;
    let gzip = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/gzip");
    let sink: Box<dyn Write + Send> = match output {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        // A file shown on a terminal could drive it: escape it there too.
        None if std::io::stdout().is_terminal() => {
            Box::new(crate::text::Escaping::new(std::io::stdout()))
        }
        None => Box::new(std::io::stdout()),
    };
    let mut sink: Box<dyn Write + Send> = if gzip && !raw {
        Box::new(flate2::write::MultiGzDecoder::new(sink))
    } else {
        sink
    };
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        sink.write_all(&chunk?)?;
    }
    sink.flush()?;
    Ok(())
}

pub async fn save_result(
    client: &Client,
    id: &str,
    index: u32,
    output: Option<&Path>,
    raw: bool,
) -> anyhow::Result<()> {
    download_to(client, id, index, output, raw).await
}
