//! Cluster-wide delivery of hub events. An agent holds one connection to one
//! node, but any node may create, cancel or expire its commands. On a single
//! node (SQLite) events go straight to the local `Hub`. On PostgreSQL a node
//! that does not hold the machine's connection publishes the event with
//! `pg_notify`, and every node LISTENs and hands events for its own
//! connections to its hub.
//!
//! Followers of live output are woken the same way, on a channel of their
//! own (`OUTPUT_CHANNEL`): a piece stored by the node holding the agent's
//! connection wakes the followers on every node.
//!
//! Events are only wake-ups: what to run is always read from the database,
//! so a lost notification costs latency, never work. After its listening
//! connection is lost and re-made, a node wakes all its connections once to
//! cover what it may have missed. This module never reads or writes state.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use sqlx::postgres::PgListener;

use crate::SharedState;
use crate::followers::Followed;
use crate::hub::HubEvent;

/// The PostgreSQL notification channel.
const CHANNEL: &str = "reach_hub";

/// The channel of live output's wake-ups (`followers`).
const OUTPUT_CHANNEL: &str = "reach_output";

/// How hub events reach the node holding a machine's connection.
pub enum Cluster {
    /// One node: the local hub holds every connection.
    Single,
    /// Nodes sharing a PostgreSQL database.
    Postgres {
        /// This node's id, so that it skips its own notifications.
        node_id: String,
        /// Where notices are published.
        pool: AnyPool,
        /// The database URL, for the listening connection.
        url: String,
    },
}

/// A notification's payload (well under PostgreSQL's 8,000-byte limit).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Notice {
    node: String,
    machine: String,
    /// More machines the same event is for (a batch's wake-up in groups);
    /// nodes from before it read `machine` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    machines: Vec<String>,
    #[serde(flatten)]
    event: HubEvent,
}

/// A wake-up of live output's followers.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct OutputNotice {
    node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch: Option<String>,
}

/// Machine ids per notice of a group wake-up (40 to 64 bytes each).
const MACHINES_PER_NOTICE: usize = 100;

impl Cluster {
    /// A node of a cluster on PostgreSQL, with a fresh node id.
    pub fn postgres(pool: AnyPool, url: String) -> Self {
        Cluster::Postgres {
            node_id: uuid::Uuid::new_v4().to_string(),
            pool,
            url,
        }
    }
}

/// Delivers `event` to `machine_id`'s connection, on whichever node holds it:
/// here at once, and (on PostgreSQL) to the other nodes, in case the agent
/// has moved and this node still holds a connection about to time out.
pub async fn send(state: &SharedState, machine_id: &str, event: HubEvent) {
    state.hub.send(machine_id, event.clone());
    let Cluster::Postgres { node_id, pool, .. } = &state.cluster else {
        return;
    };
    let notice = Notice {
        node: node_id.clone(),
        machine: machine_id.to_string(),
        machines: Vec::new(),
        event: event.clone(),
    };
    publish(pool, &notice).await;
}

/// Wakes many machines' connections (a batch's), here at once and on the
/// other nodes with one notice per `MACHINES_PER_NOTICE` machines rather
/// than one each.
pub async fn wake_many(state: &SharedState, machine_ids: &[String]) {
    for machine_id in machine_ids {
        state.hub.send(machine_id, HubEvent::Wake);
    }
    let Cluster::Postgres { node_id, pool, .. } = &state.cluster else {
        return;
    };
    for group in machine_ids.chunks(MACHINES_PER_NOTICE) {
        let notice = Notice {
            node: node_id.clone(),
            machine: group[0].clone(),
            machines: group[1..].to_vec(),
            event: HubEvent::Wake,
        };
        publish(pool, &notice).await;
    }
}

/// Wakes the followers of `action_id` (and of its batch) on every node:
/// something of its output is new (a piece, or its end).
pub async fn output_changed(state: &SharedState, action_id: &str, batch_id: Option<&str>) {
    let action = Followed::Action(action_id.to_string());
    state.followers.wake(&action);
    if let Some(batch) = batch_id {
        state.followers.wake(&Followed::Batch(batch.to_string()));
    }
    let Cluster::Postgres { node_id, pool, .. } = &state.cluster else {
        return;
    };
    let notice = OutputNotice {
        node: node_id.clone(),
        action: Some(action_id.to_string()),
        batch: batch_id.map(str::to_string),
    };
    let payload = serde_json::to_string(&notice).expect("notices serialise");
    if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(OUTPUT_CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
    {
        // Followers on other nodes poll the store: they see it a little later.
        tracing::warn!(action.id = %action_id, error = %err, "publishing a live output wake-up failed");
    }
}

fn output_notice(state: &SharedState, node_id: &str, payload: &str) {
    match serde_json::from_str::<OutputNotice>(payload) {
        Ok(notice) if notice.node == node_id => {}
        Ok(notice) => {
            if let Some(action) = notice.action {
                state.followers.wake(&Followed::Action(action));
            }
            if let Some(batch) = notice.batch {
                state.followers.wake(&Followed::Batch(batch));
            }
        }
        Err(err) => tracing::warn!(error = %err, "ignoring a malformed live output notice"),
    }
}

async fn publish(pool: &AnyPool, notice: &Notice) {
    let payload = serde_json::to_string(notice).expect("notices serialise");
    if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
    {
        // The sweeper wakes the machine again once its action has waited
        // `rewake_after_secs` (or the agent claims it on its next connect).
        tracing::warn!(machine.id = %notice.machine, machines = notice.machines.len() + 1, error = %err, "publishing a wake-up failed");
    }
}

/// Listens for other nodes' events until shutdown (PostgreSQL only).
pub async fn listen(state: SharedState) {
    let Cluster::Postgres { node_id, url, .. } = &state.cluster else {
        return;
    };
    let mut first = true;
    loop {
        let listener = async {
            let mut listener = PgListener::connect(url).await?;
            listener.listen_all([CHANNEL, OUTPUT_CHANNEL]).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            listener = listener => match listener {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for cluster wake-ups; retrying");
                    tokio::select! {
                        _ = state.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        if !first {
            tracing::info!("listening for cluster wake-ups again; waking every local agent once");
            state.hub.wake_all();
        }
        first = false;
        loop {
            let received = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            let notification = match received {
                Ok(Some(notification)) => notification,
                Ok(None) => {
                    tracing::warn!("lost the connection that listens for cluster wake-ups");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "listening for cluster wake-ups failed");
                    break;
                }
            };
            if notification.channel() == OUTPUT_CHANNEL {
                output_notice(&state, node_id, notification.payload());
                continue;
            }
            match serde_json::from_str::<Notice>(notification.payload()) {
                Ok(notice) if notice.node == *node_id => {}
                Ok(notice) => {
                    for machine in std::iter::once(&notice.machine).chain(&notice.machines) {
                        state.hub.send(machine, notice.event.clone());
                    }
                }
                Err(err) => tracing::warn!(error = %err, "ignoring a malformed cluster notice"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes of different versions read each other's notices: the text
    /// of each event is pinned.
    #[test]
    fn notices_round_trip() {
        let notice = Notice {
            node: "n".into(),
            machine: "m".into(),
            machines: Vec::new(),
            event: HubEvent::Cancel {
                action_id: "a".into(),
            },
        };
        let text = serde_json::to_string(&notice).unwrap();
        assert_eq!(
            text,
            r#"{"node":"n","machine":"m","event":"cancel","action":"a"}"#
        );
        let back: Notice = serde_json::from_str(&text).unwrap();
        assert_eq!(back, notice);
        for (event, text) in [
            (
                HubEvent::Wake,
                r#"{"node":"n","machine":"m","event":"wake"}"#,
            ),
            (
                HubEvent::Close,
                r#"{"node":"n","machine":"m","event":"close"}"#,
            ),
        ] {
            let notice = Notice {
                node: "n".into(),
                machine: "m".into(),
                machines: Vec::new(),
                event,
            };
            assert_eq!(serde_json::to_string(&notice).unwrap(), text);
        }
        // A group wake-up; a node from before `machines` reads the first.
        let group = Notice {
            node: "n".into(),
            machine: "m1".into(),
            machines: vec!["m2".into(), "m3".into()],
            event: HubEvent::Wake,
        };
        let text = serde_json::to_string(&group).unwrap();
        assert_eq!(
            text,
            r#"{"node":"n","machine":"m1","machines":["m2","m3"],"event":"wake"}"#
        );
        assert_eq!(serde_json::from_str::<Notice>(&text).unwrap(), group);
        // Live output's wake-ups, on their own channel.
        let output = OutputNotice {
            node: "n".into(),
            action: Some("a".into()),
            batch: Some("b".into()),
        };
        let text = serde_json::to_string(&output).unwrap();
        assert_eq!(text, r#"{"node":"n","action":"a","batch":"b"}"#);
        assert_eq!(serde_json::from_str::<OutputNotice>(&text).unwrap(), output);
    }
}
