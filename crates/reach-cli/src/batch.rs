//! Batches from the command line: `reach run --machines|--tag|--filter|--all`
//! creates one and follows it with a progress bar (counts and an ETA), then
//! prints a summary by status and a line per machine that did not succeed,
//! and saves collected files as `DIR/<computerDnsName>/<file>`; `reach
//! batches` and `reach batch ...` list, show, control and fetch results.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reach_client::Client;
use reach_proto::api::{Batch, BatchRollout, BatchTargets, Command, CreateBatchRequest};
use serde_json::{Value, json};

use crate::text::clean;

/// Which machines, when not one: what `reach run` makes a batch of, and
/// what `reach isolate` and `reach release` act on one by one.
#[derive(Args, Debug, Default)]
pub struct Selection {
    /// Machine ids, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub machines: Vec<String>,
    /// Machines carrying this tag (repeatable: any of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Machines matching an OData filter, as `GET /api/machines` takes it.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Every machine you can see.
    #[arg(long)]
    pub all: bool,
}

/// Which machines `reach run` targets when not one machine, and how its
/// batch rolls out.
#[derive(Args, Debug, Default)]
pub struct Targets {
    #[command(flatten)]
    pub selection: Selection,
    /// Dispatch this many machines at a time.
    #[arg(long, value_name = "N")]
    pub wave_size: Option<u64>,
    /// With --wave-size: pause when more than this share of the finished
    /// machines failed.
    #[arg(long, value_name = "PERCENT", requires = "wave_size")]
    pub max_failed_percent: Option<u8>,
    /// Seconds before actions still waiting (offline machines) time out.
    #[arg(long, value_name = "SECS")]
    pub expires_in: Option<u64>,
}

impl Targets {
    /// The API's selector, when any target flag was given.
    pub fn selector(&self) -> Option<BatchTargets> {
        self.selection.selector()
    }
}

impl Selection {
    /// The API's selector, when any target flag was given (the first of
    /// ids, tags, filter, all).
    pub fn selector(&self) -> Option<BatchTargets> {
        let mut targets = BatchTargets::default();
        if !self.machines.is_empty() {
            targets.ids = Some(self.machines.clone());
        } else if !self.tags.is_empty() {
            targets.tags = Some(self.tags.clone());
        } else if let Some(filter) = &self.filter {
            targets.filter = Some(filter.clone());
        } else if self.all {
            targets.all = Some(true);
        } else {
            return None;
        }
        Some(targets)
    }
}

/// `reach batch`: show one, or control it.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    action: Option<BatchAction>,
    /// The batch to show.
    id: Option<String>,
}

#[derive(Subcommand)]
enum BatchAction {
    /// Cancel: every action not final ends, running scripts are killed.
    Cancel {
        id: String,
        #[arg(long, default_value = "Cancelled with the reach CLI")]
        comment: String,
    },
    /// Pause: nothing new is dispatched; what runs finishes.
    Pause { id: String },
    /// Resume a paused batch.
    Resume { id: String },
    /// Each machine's result of one command (NDJSON with --json).
    Results {
        id: String,
        /// The command's index in the batch.
        #[arg(long, default_value_t = 0)]
        index: u32,
        /// Save collected files as `DIR/<computerDnsName>/<file>`, un-gzipped.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
}

/// Creates the batch and, unless `no_wait`, follows it to the end.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    commands: Vec<Command>,
    comment: String,
    targets: &Targets,
    selector: BatchTargets,
    out: Option<&Path>,
    no_wait: bool,
    follow_output: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let kinds: Vec<String> = commands.iter().map(|c| c.kind.clone()).collect();
    let scripts: Vec<u32> = (0..commands.len() as u32)
        .filter(|i| crate::run::is_script(&commands[*i as usize]))
        .collect();
    let request = CreateBatchRequest {
        commands: Some(commands),
        comment: Some(comment),
        machines: Some(selector),
        rollout: targets.wave_size.map(|wave_size| BatchRollout {
            wave_size,
            max_failed_percent: targets.max_failed_percent.unwrap_or(100),
        }),
        expires_in_seconds: targets.expires_in,
    };
    let created = client.create_batch(&request).await?;
    if no_wait {
        print_batch(&created, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "batch {} created for {} machines",
        clean(&created.id),
        created.machine_count
    );
    if follow_output {
        for index in scripts {
            let stream = client.follow_batch_output(&created.id, index, None);
            let followed = crate::follow::Followed::Batch(&created.id);
            if let crate::follow::Ended::Left =
                crate::follow::print(client, stream, followed, json).await?
            {
                return Ok(ExitCode::from(130));
            }
        }
    }
    let done = follow(client, &created).await?;
    let indexed: Vec<(u32, String)> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| (i as u32, k))
        .collect();
    let machines = per_machine(client, &done, &indexed, out).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "batch": done, "machines": machines }))?
        );
    } else {
        summary(&done, &machines);
    }
    Ok(if done.counts.succeeded == done.machine_count {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Polls the batch until it is Completed, Cancelled or Paused, with a
/// progress bar on a terminal (indicatif draws nothing elsewhere).
async fn follow(client: &Client, created: &Batch) -> anyhow::Result<Batch> {
    let bar = ProgressBar::new(created.machine_count);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} final  {msg}  ETA {eta}")
            .context("the progress bar's template")?,
    );
    loop {
        let batch = reach_client::patiently(|| client.batch(&created.id)).await?;
        let c = batch.counts;
        bar.set_position(batch.machine_count - c.pending - c.in_progress);
        bar.set_message(format!(
            "Succeeded {} · Failed {} · TimeOut {} · Cancelled {} · InProgress {} · Pending {}",
            c.succeeded, c.failed, c.timed_out, c.cancelled, c.in_progress, c.pending
        ));
        if batch.status != "Running" {
            bar.finish();
            return Ok(batch);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One entry per machine: its action's status and each command's outcome
/// (exit code and output of a script, the saved path of a collected file).
async fn per_machine(
    client: &Client,
    batch: &Batch,
    commands: &[(u32, String)],
    out: Option<&Path>,
) -> anyhow::Result<Vec<Value>> {
    let mut machines: Vec<Value> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut folders = Folders::default();
    for (index, kind) in commands {
        let index = *index as usize;
        for line in client.batch_results(&batch.id, index as u32).await? {
            let machine = line["machineId"].as_str().unwrap_or_default().to_string();
            let slot = *at.entry(machine.clone()).or_insert_with(|| {
                machines.push(json!({
                    "machineId": machine,
                    "computerDnsName": line["computerDnsName"],
                    "actionId": line["actionId"],
                    "status": line["status"],
                    "commands": [],
                }));
                machines.len() - 1
            });
            let mut command = json!({
                "index": index,
                "type": kind,
                "commandStatus": line["commandStatus"],
                "errors": line["errors"],
            });
            if let Some(transcript) = line.get("transcript").filter(|t| !t.is_null()) {
                command["exitCode"] = transcript["exit_code"].clone();
                command["output"] = transcript["script_output"].clone();
                command["errorOutput"] = transcript["script_errors"].clone();
            }
            if let (Some(out), Some(url)) = (out, line["downloadUrl"].as_str())
                && kind == "GetFile"
            {
                let name = line["computerDnsName"].as_str().unwrap_or("machine");
                let dir = out.join(folders.of(name, &machine));
                let path = save(client, url, &dir, batch, index).await?;
                command["savedPath"] = json!(path.display().to_string());
            }
            if let Some(list) = machines[slot]["commands"].as_array_mut() {
                list.push(command);
            }
        }
    }
    Ok(machines)
}

/// One folder per machine, by computer name; a name two machines share
/// gets the machine id after it.
#[derive(Default)]
struct Folders(HashMap<String, String>);

impl Folders {
    fn of(&mut self, name: &str, machine: &str) -> String {
        let safe = crate::run::local_name(name, 0);
        match self.0.get(&safe) {
            Some(owner) if owner != machine => format!("{safe}-{machine}"),
            _ => {
                self.0.insert(safe.clone(), machine.to_string());
                safe
            }
        }
    }
}

/// Downloads a collected file through its link into `dir`, un-gzipped.
async fn save(
    client: &Client,
    url: &str,
    dir: &Path,
    batch: &Batch,
    index: usize,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let device_path = batch
        .commands
        .get(index)
        .and_then(|c| c.params.first())
        .map_or("file", |p| p.value.as_str());
    let path = dir.join(crate::run::local_name(device_path, index as u32));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut sink = flate2::write::MultiGzDecoder::new(file);
    let mut stream = client.download(url).await?.bytes_stream();
    while let Some(chunk) = stream.next().await {
        sink.write_all(&chunk?)?;
    }
    sink.try_finish()?;
    Ok(path)
}

fn summary(batch: &Batch, machines: &[Value]) {
    let c = batch.counts;
    println!("batch {}: {}", clean(&batch.id), batch.status);
    if let Some(reason) = &batch.paused_reason {
        println!("  paused: {}", clean(reason));
    }
    crate::output::table(
        &["STATUS", "MACHINES"],
        &[
            ("Succeeded", c.succeeded),
            ("Failed", c.failed),
            ("TimeOut", c.timed_out),
            ("Cancelled", c.cancelled),
            ("InProgress", c.in_progress),
            ("Pending", c.pending),
        ]
        .iter()
        .map(|(s, n)| vec![s.to_string(), n.to_string()])
        .collect::<Vec<_>>(),
    );
    for machine in machines.iter().filter(|m| m["status"] != "Succeeded") {
        let errors: Vec<&str> = machine["commands"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["errors"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  {} ({}): {} {}",
            clean(machine["computerDnsName"].as_str().unwrap_or("")),
            clean(machine["machineId"].as_str().unwrap_or("")),
            clean(machine["status"].as_str().unwrap_or("")),
            clean(&errors.join("; "))
        );
    }
}

fn print_batch(batch: &Batch, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(batch)?);
        return Ok(());
    }
    let c = batch.counts;
    println!(
        "batch {}: {} — {} machines: Succeeded {}, Failed {}, TimeOut {}, Cancelled {}, InProgress {}, Pending {}",
        clean(&batch.id),
        batch.status,
        batch.machine_count,
        c.succeeded,
        c.failed,
        c.timed_out,
        c.cancelled,
        c.in_progress,
        c.pending
    );
    Ok(())
}

/// `reach batches`: newest first.
pub async fn list(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let batches = client.batches(&[("$top", "50")]).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&batches.value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = batches
        .value
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.status.clone(),
                b.machine_count.to_string(),
                b.counts.succeeded.to_string(),
                (b.counts.failed + b.counts.timed_out).to_string(),
                b.creation_date_time_utc.clone(),
                b.requestor.clone(),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "ID",
            "STATUS",
            "MACHINES",
            "SUCCEEDED",
            "FAILED",
            "CREATED",
            "REQUESTOR",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `reach batch ID` and `reach batch cancel|pause|resume|results ID`.
pub async fn batch(client: &Client, args: BatchArgs, json: bool) -> anyhow::Result<ExitCode> {
    let batch = match (args.action, args.id) {
        (Some(BatchAction::Cancel { id, comment }), _) => {
            client.batch_control(&id, "cancel", Some(&comment)).await?
        }
        (Some(BatchAction::Pause { id }), _) => client.batch_control(&id, "pause", None).await?,
        (Some(BatchAction::Resume { id }), _) => client.batch_control(&id, "resume", None).await?,
        (Some(BatchAction::Results { id, index, out }), _) => {
            let batch = client.batch(&id).await?;
            let kind = batch
                .commands
                .get(index as usize)
                .map(|c| c.kind.clone())
                .unwrap_or_default();
            let machines = per_machine(client, &batch, &[(index, kind)], out.as_deref()).await?;
            for machine in &machines {
                if json {
                    println!("{}", serde_json::to_string(machine)?);
                    continue;
                }
                let command = &machine["commands"][0];
                println!(
                    "{} ({}): {} {}",
                    clean(machine["computerDnsName"].as_str().unwrap_or("")),
                    clean(machine["machineId"].as_str().unwrap_or("")),
                    clean(command["commandStatus"].as_str().unwrap_or("")),
                    command["savedPath"]
                        .as_str()
                        .map(|p| format!("saved to {}", clean(p)))
                        .or_else(|| command["exitCode"]
                            .as_i64()
                            .map(|c| format!("exit code {c}")))
                        .unwrap_or_default()
                );
                if let Some(output) = command["output"].as_str() {
                    for line in clean(output).lines() {
                        println!("    {line}");
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        (None, Some(id)) => client.batch(&id).await?,
        (None, None) => {
            eprintln!("error: give a batch id, or one of cancel, pause, resume, results");
            return Ok(ExitCode::from(2));
        }
    };
    print_batch(&batch, json)?;
    Ok(ExitCode::SUCCESS)
}
