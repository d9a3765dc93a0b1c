//! Reaching a device on another node: a command published to the channel
//! of the node that holds it (`{prefix}:commands:{node_id}`), which every
//! node subscribes to for itself.
//!
//! So far the one command is a kick (`CloseConnection` for a device on
//! another node). `PUBLISH` says how many subscribers received it: none
//! means the node that holds the device (by the directory) is not
//! listening, and the call is answered `ServiceUnavailable` rather than
//! pretending the device was closed. The kick itself runs on the holding
//! node as a local `CloseConnection` would; the caller does not wait for
//! the connection to end (a local kick does), so the device may still show
//! online for the few milliseconds that takes.

use super::{Cluster, StoreError};
use crate::broker::Brokers;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a node waits before subscribing again after losing Redis.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// A command to another node.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "snake_case")]
enum Command {
    Kick {
        instance_id: String,
        client_id: String,
        why: String,
    },
}

impl Cluster {
    /// Starts taking commands from the other nodes (until `stop`), run
    /// against `brokers`.
    pub fn start_commands(self: &Arc<Self>, brokers: Arc<Brokers>, stop: CancellationToken) {
        tokio::spawn(command_task(self.clone(), brokers, stop));
    }

    /// Closes `client_id`'s connection on the other live node that holds
    /// it: `false` if none does.
    pub async fn kick_elsewhere(
        &self,
        instance_id: &str,
        client_id: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        let holder = self
            .holders(instance_id, &[client_id])
            .await?
            .pop()
            .flatten();
        let Some(node) = holder else {
            return Ok(false);
        };
        let command = Command::Kick {
            instance_id: instance_id.to_string(),
            client_id: client_id.to_string(),
            why: why.to_string(),
        };
        let payload = serde_json::to_string(&command)
            .map_err(|e| StoreError::Failed(format!("a command could not be encoded: {e}")))?;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.command_channel(&node)).arg(payload);
        let mut redis = self.redis.clone();
        let received = self.within(publish.query_async::<i64>(&mut redis)).await?;
        if received == 0 {
            return Err(StoreError::Failed(format!(
                "node {node} holds the device but is not taking commands"
            )));
        }
        Ok(true)
    }

    fn command_channel(&self, node_id: &str) -> String {
        format!("{}:commands:{node_id}", self.prefix)
    }
}

/// Subscribes to this node's channel and runs what comes; subscribes again
/// whenever the connection is lost.
async fn command_task(cluster: Arc<Cluster>, brokers: Arc<Brokers>, stop: CancellationToken) {
    let channel = cluster.command_channel(&cluster.node_id);
    loop {
        match cluster.client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            message = messages.next() => message,
                            () = stop.cancelled() => return,
                        };
                        let Some(message) = message else { break };
                        run(&brokers, message.get_payload_bytes());
                    }
                    tracing::warn!("cluster: lost the command channel; subscribing again");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: cannot subscribe to the command channel")
                }
            },
            Err(e) => tracing::debug!(error = %e, "cluster: cannot open the command channel"),
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Runs one command, in a task of its own (a kick waits for the
/// connection to end).
fn run(brokers: &Arc<Brokers>, payload: &[u8]) {
    match serde_json::from_slice::<Command>(payload) {
        Ok(Command::Kick {
            instance_id,
            client_id,
            why,
        }) => {
            let Some(broker) = brokers.instance(&instance_id) else {
                return tracing::warn!(%instance_id, "cluster: a kick for an instance this node does not serve");
            };
            tokio::spawn(async move {
                broker.kick(&client_id, &why).await;
            });
        }
        Err(e) => tracing::warn!(error = %e, "cluster: a command this node does not understand"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_round_trips_through_its_text() {
        let kick = Command::Kick {
            instance_id: "post-cn-1".into(),
            client_id: "GID_a@@@b".into(),
            why: "closed".into(),
        };
        let text = serde_json::to_string(&kick).unwrap();
        assert!(text.contains(r#""command":"kick""#), "{text}");
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), kick);
    }
}
