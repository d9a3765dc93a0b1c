//! Reaching a device on another node: a command published to the channel
//! of the node that holds it (`{prefix}:commands:{node_id}`), which every
//! node subscribes to for itself.
//!
//! Two commands: a kick (`CloseConnection` for a device on another node)
//! and a message (`SendMessage` for an instance another node serves,
//! [`super::placement`]). `PUBLISH` says how many subscribers received it:
//! none means the node that holds the device or instance is not
//! listening, and the call is answered `ServiceUnavailable` rather than
//! pretending the device was closed or the message sent. A message is
//! handed to the serving node's broker as a local `SendMessage` would;
//! the caller's answer comes once that node has received the command. The kick itself runs on the holding
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
    Publish {
        instance_id: String,
        topic: String,
        payload: String,
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
        self.command(&node, &command).await?;
        Ok(true)
    }

    /// Hands a message for `instance_id`'s subscribers to node `node`,
    /// which serves the instance; returns once that node has it.
    pub async fn publish_on(
        &self,
        node: &str,
        instance_id: &str,
        topic: &str,
        payload: String,
    ) -> Result<(), StoreError> {
        let command = Command::Publish {
            instance_id: instance_id.to_string(),
            topic: topic.to_string(),
            payload,
        };
        self.command(node, &command).await
    }

    /// Publishes `command` to `node`'s channel; an error unless the node
    /// received it.
    async fn command(&self, node: &str, command: &Command) -> Result<(), StoreError> {
        let payload = serde_json::to_string(command)
            .map_err(|e| StoreError::Failed(format!("a command could not be encoded: {e}")))?;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.command_channel(node)).arg(payload);
        let mut redis = self.redis.clone();
        let received = self.within(publish.query_async::<i64>(&mut redis)).await?;
        if received == 0 {
            return Err(StoreError::Failed(format!(
                "node {node} is not taking commands"
            )));
        }
        Ok(())
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
        Ok(Command::Publish {
            instance_id,
            topic,
            payload,
        }) => {
            let Some(broker) = brokers.instance(&instance_id) else {
                return tracing::warn!(%instance_id, "cluster: a message for an instance this node does not serve");
            };
            tokio::spawn(async move {
                let payload = bytes::Bytes::from(payload.into_bytes());
                if let Err(e) = broker.publish(&topic, payload).await {
                    tracing::warn!(%instance_id, %topic, error = %e, "cluster: a message from another node could not be published");
                }
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
        let message = Command::Publish {
            instance_id: "post-cn-1".into(),
            topic: "a/b".into(),
            payload: "\u{0}\"{}\n".into(),
        };
        let text = serde_json::to_string(&message).unwrap();
        assert!(text.contains(r#""command":"publish""#), "{text}");
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), message);
    }
}
