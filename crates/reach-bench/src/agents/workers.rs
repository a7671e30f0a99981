//! The coordinator's side of the simulated fleet: starts the worker
//! processes (`reach-bench agents`), each on its own loopback source
//! address, reads their JSON event lines, and stops them when dropped. It
//! never starts an agent itself.

use std::io::BufRead;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};

use super::{Event, PER_WORKER};

/// Agents connecting at once, over all workers: enough to keep the servers
/// busy, few enough that a large fleet on a small machine does not bury
/// their database pools (each worker gets its share, at most 256).
const CONNECTING_AT_ONCE: usize = 512;

/// The coordinator's handle on the worker processes.
pub struct Workers {
    children: Vec<Child>,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    reconnects: Arc<AtomicUsize>,
}

impl Workers {
    /// The worker processes, and this one (which submits and polls): the
    /// load generator, whose CPU time the reports show beside the server's.
    pub fn generator_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.children.iter().map(Child::id).collect();
        pids.push(std::process::id());
        pids
    }

    /// Starts enough workers for `count` agents spread over `servers`.
    pub fn start(servers: &[String], token: &str, count: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut children = Vec::new();
        let workers = count.div_ceil(PER_WORKER).max(1);
        let parallel = (CONNECTING_AT_ONCE / workers).clamp(1, 256);
        let reconnects = Arc::new(AtomicUsize::new(0));
        for w in 0..workers {
            let share = count / workers + usize::from(w < count % workers);
            let mut child = Command::new(&exe)
                .arg("agents")
                .arg("--servers")
                .arg(servers.join(","))
                .arg("--token")
                .arg(token)
                .arg("--count")
                .arg(share.to_string())
                .arg("--bind")
                .arg(format!("127.0.0.{}", 2 + w))
                .arg("--label")
                .arg(format!("bench-w{w}"))
                .arg("--parallel")
                .arg(parallel.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting a worker")?;
            let stdout: ChildStdout = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            let reconnects = reconnects.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Event>(&line) {
                        Ok(Event::Reconnecting { message }) => {
                            if reconnects.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("reach-bench: an agent reconnects: {message}");
                            }
                        }
                        Ok(event) => {
                            if tx.send(event).is_err() {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
            });
            children.push(child);
        }
        Ok(Self {
            children,
            events,
            reconnects,
        })
    }

    /// How many times an agent's connection failed or dropped so far (each
    /// time it tried again); the first three are printed on stderr.
    pub fn reconnects(&self) -> Arc<AtomicUsize> {
        self.reconnects.clone()
    }

    /// Waits until every agent is connected; fails on a worker's error.
    pub async fn wait_connected(&mut self, count: usize) -> anyhow::Result<()> {
        let mut connected = 0;
        while connected < count {
            match self.events.recv().await {
                Some(Event::Connected { count }) => connected += count,
                Some(Event::Error { message }) => bail!("an agent failed: {message}"),
                Some(Event::Run { .. } | Event::Finished { .. } | Event::Reconnecting { .. }) => {}
                None => bail!("the workers stopped before all agents connected"),
            }
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
