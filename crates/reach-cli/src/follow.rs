//! Following a script's output while it runs (`reach run --follow`,
//! `reach output --follow`): a command's stdout goes to stdout and its
//! stderr to stderr as the server streams them; a batch's lines are
//! prefixed with the machine's name. `--json` prints each event as one JSON
//! line instead. Ctrl-C asks whether to cancel the action (or the batch);
//! without a terminal to ask on, it only stops following.
//!
//! Text is escaped as all server text is (`text::clean`) unless `--raw`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use anyhow::Context;
use reach_client::Client;
use reach_client::output::{Follow, OutputEvent};
use reach_proto::api::{OutputEnd, OutputMachine, OutputPiece};
use serde_json::json;

use crate::text::clean;

/// What is followed, for Ctrl-C.
pub enum Followed<'a> {
    /// One action's command.
    Action(&'a str),
    /// A batch's command on every machine.
    Batch(&'a str),
}

/// How following ended.
pub enum Ended {
    /// The stream's end came: a command's `end`, a batch's `done`.
    Finished(Option<OutputEnd>),
    /// Ctrl-C, and the user chose not to cancel: the action runs on.
    Left,
}

/// Follows `follow` to its end, printing as it comes.
pub async fn print(
    client: &Client,
    mut follow: Follow<'_>,
    followed: Followed<'_>,
    json: bool,
) -> anyhow::Result<Ended> {
    let mut lines = Lines::default();
    let mut last_end = None;
    let mut asked = false;
    loop {
        let event = tokio::select! {
            event = follow.next() => event?,
            _ = tokio::signal::ctrl_c(), if !asked => {
                asked = true;
                lines.flush();
                if !cancel_on_request(client, &followed).await? {
                    return Ok(Ended::Left);
                }
                continue;
            }
        };
        let Some(event) = event else {
            lines.flush();
            return Ok(Ended::Finished(last_end));
        };
        if json {
            println!("{}", event_json(&event, follow.last_id.as_deref()));
            if let OutputEvent::End(end) = event {
                last_end = Some(end);
            }
            continue;
        }
        match event {
            OutputEvent::Stdout(piece) => lines.piece(Stream::Out, &piece),
            OutputEvent::Stderr(piece) => lines.piece(Stream::Err, &piece),
            OutputEvent::End(end) => {
                lines.end(&end.machine);
                if let Some(name) = &end.machine.computer_dns_name {
                    let code = end.exit_code.map_or("-".to_string(), |c| c.to_string());
                    eprintln!("{}: {} (exit code {code})", clean(name), end.command_status);
                }
                last_end = Some(end);
            }
            OutputEvent::Done => {}
        }
    }
}

fn event_json(event: &OutputEvent, id: Option<&str>) -> serde_json::Value {
    let (name, data) = match event {
        OutputEvent::Stdout(piece) => ("stdout", serde_json::to_value(piece)),
        OutputEvent::Stderr(piece) => ("stderr", serde_json::to_value(piece)),
        OutputEvent::End(end) => ("end", serde_json::to_value(end)),
        OutputEvent::Done => ("done", Ok(json!({}))),
    };
    json!({ "event": name, "id": id, "data": data.unwrap_or_default() })
}

/// Asks on the terminal whether to cancel; cancels when told so. False:
/// stop following and leave it running.
async fn cancel_on_request(client: &Client, followed: &Followed<'_>) -> anyhow::Result<bool> {
    let (what, id) = match followed {
        Followed::Action(id) => ("action", *id),
        Followed::Batch(id) => ("batch", *id),
    };
    let hint = || {
        eprintln!(
            "stopped following; {what} {} goes on (`reach {}` shows it)",
            clean(id),
            match followed {
                Followed::Action(_) => format!("action {}", clean(id)),
                Followed::Batch(_) => format!("batch {}", clean(id)),
            }
        )
    };
    if !std::io::stdin().is_terminal() {
        hint();
        return Ok(false);
    }
    eprint!("\ncancel {what} {}? [y/N] ", clean(id));
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("reading the answer")??;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        hint();
        return Ok(false);
    }
    let comment = "Cancelled with the reach CLI while following its output";
    match followed {
        Followed::Action(id) => {
            client.cancel(id, comment).await?;
        }
        Followed::Batch(id) => {
            client.batch_control(id, "cancel", Some(comment)).await?;
        }
    }
    eprintln!(
        "{what} {} cancelled; its output to the end follows",
        clean(id)
    );
    Ok(true)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Stream {
    Out,
    Err,
}

/// Text printed as it comes: a command's as is; a batch's whole lines at a
/// time, each with its machine's name, the rest of a line kept until its
/// newline (or its machine's end).
#[derive(Default)]
struct Lines {
    partial: HashMap<(String, Stream), String>,
}

impl Lines {
    fn piece(&mut self, stream: Stream, piece: &OutputPiece) {
        let Some(name) = &piece.machine.computer_dns_name else {
            write(stream, &clean(&piece.text));
            return;
        };
        let key = (name.clone(), stream);
        let pending = self.partial.entry(key).or_default();
        pending.push_str(&piece.text);
        if let Some(last) = pending.rfind('\n') {
            let rest = pending.split_off(last + 1);
            let whole = std::mem::replace(pending, rest);
            let mut out = String::new();
            for line in whole.lines() {
                out.push_str(&format!("{}: {}\n", clean(name), clean(line)));
            }
            write(stream, &out);
        }
    }

    /// A machine ended: the rest of its last lines.
    fn end(&mut self, machine: &OutputMachine) {
        let Some(name) = &machine.computer_dns_name else {
            return;
        };
        for stream in [Stream::Out, Stream::Err] {
            if let Some(rest) = self.partial.remove(&(name.clone(), stream))
                && !rest.is_empty()
            {
                write(stream, &format!("{}: {}\n", clean(name), clean(&rest)));
            }
        }
    }

    fn flush(&mut self) {
        for ((name, stream), rest) in std::mem::take(&mut self.partial) {
            if !rest.is_empty() {
                write(stream, &format!("{}: {}\n", clean(&name), clean(&rest)));
            }
        }
    }
}

fn write(stream: Stream, text: &str) {
    // A closed pipe (`| head`) ends the output, not the program with a panic.
    let _ = match stream {
        Stream::Out => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|_| out.flush())
        }
        Stream::Err => {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes()).and_then(|_| err.flush())
        }
    };
}
