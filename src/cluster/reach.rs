//! Reaching a device on another node: a command published to the channel
//! of the node that holds it (`{prefix}:commands:{node_id}`), which every
//! node subscribes to for itself.
//!
//! Three commands: a kick (`CloseConnection` for a device on another
//! node), a message (`SendMessage` for an instance another node serves,
//! [`super::placement`]), and a trace query, published to every node at
//! once (`{prefix}:commands`, which every node also subscribes to): each
//! other node runs it on its own trace store and pushes what it found to a
//! list named in the command, which the asking node pops until every node
//! that received the query has answered ([`crate::trace::query`]). `PUBLISH` says how many subscribers received it:
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
use crate::trace::query::{TraceFound, TraceQuery};
use crate::trace::{TraceStore, Tracer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a node waits before subscribing again after losing Redis.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);
/// The least time the other nodes get to answer a trace query (each reads
/// its own store); `cluster.timeout_ms` if longer.
const TRACE_ANSWER_TIME: Duration = Duration::from_secs(2);
/// How long an answer list lives if its asker has gone.
const REPLY_TTL_SECS: u64 = 30;

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
        /// The MsgId the asking node gave the message (its trace's).
        msg_id: String,
    },
    /// Run `query` on this node's traces and push the result to the list
    /// `reply_to` (unless this node is `from`, the asker).
    Trace {
        from: String,
        reply_to: String,
        query: TraceQuery,
    },
    /// Answer a call of the EMQX API for an instance this node serves, to
    /// the list `reply_to`.
    Read {
        reply_to: String,
        request: serde_json::Value,
    },
}

/// What answers a call of the EMQX API another node relayed to this one:
/// its status and body (`crate::emqx::calls::answer_relayed`).
pub type ReadAnswerer = Arc<
    dyn Fn(serde_json::Value) -> futures_util::future::BoxFuture<'static, (u16, serde_json::Value)>
        + Send
        + Sync,
>;

impl Cluster {
    /// Starts taking commands from the other nodes (until `stop`), run
    /// against `brokers`, `traces`, `tracer` and `reads`.
    pub fn start_commands(
        self: &Arc<Self>,
        brokers: Arc<Brokers>,
        traces: Arc<TraceStore>,
        tracer: Arc<Tracer>,
        reads: ReadAnswerer,
        stop: CancellationToken,
    ) {
        let local = Local {
            brokers,
            traces,
            tracer,
            reads,
        };
        tokio::spawn(command_task(self.clone(), local, stop));
    }

    /// Runs `query` on every other live node: what each found.
    /// `ServiceUnavailable` material if a node that received the query did
    /// not answer in time.
    pub async fn traces_elsewhere(
        &self,
        query: &TraceQuery,
    ) -> Result<Vec<TraceFound>, StoreError> {
        let answers = self
            .ask(None, |reply_to| Command::Trace {
                from: self.node_id.clone(),
                reply_to,
                query: query.clone(),
            })
            .await?;
        answers
            .iter()
            .map(
                |answer| match serde_json::from_str::<Result<TraceFound, String>>(answer) {
                    Ok(Ok(found)) => Ok(found),
                    Ok(Err(why)) => Err(StoreError::Failed(format!(
                        "a node could not read its traces: {why}"
                    ))),
                    Err(e) => Err(StoreError::Failed(format!(
                        "a node's trace answer could not be read: {e}"
                    ))),
                },
            )
            .collect()
    }

    /// Relays a call of the EMQX API to node `node` (`request`, which that
    /// node's [`ReadAnswerer`] takes): the status and body it answered.
    pub async fn call_on(
        &self,
        node: &str,
        request: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), StoreError> {
        let answers = self
            .ask(Some(node), |reply_to| Command::Read { reply_to, request })
            .await?;
        let answer = answers
            .first()
            .ok_or_else(|| StoreError::Failed(format!("node {node} is not taking commands")))?;
        serde_json::from_str(answer)
            .map_err(|e| StoreError::Failed(format!("node {node}'s answer could not be read: {e}")))
    }

    /// Publishes the command `make` builds around a fresh reply list, to
    /// `node`'s channel or (`None`) to every node, and pops the answers of
    /// every node that received it but this one, within
    /// [`TRACE_ANSWER_TIME`] (or `cluster.timeout_ms` if longer).
    async fn ask(
        &self,
        node: Option<&str>,
        make: impl FnOnce(String) -> Command,
    ) -> Result<Vec<String>, StoreError> {
        let reply_to = format!("{}:reply:{}", self.prefix, uuid::Uuid::new_v4().simple());
        let payload = serde_json::to_string(&make(reply_to.clone()))
            .map_err(|e| StoreError::Failed(format!("a command could not be encoded: {e}")))?;
        // A connection of its own: BLPOP holds it while it waits.
        let mut waiting = self.blocking_connection().await?;
        let channel = match node {
            Some(node) => self.command_channel(node),
            None => self.broadcast_channel(),
        };
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(payload);
        let received = self
            .within(publish.query_async::<u64>(&mut waiting))
            .await?;
        // A broadcast reaches this node too, which does not answer itself.
        let expected = match node {
            Some(_) => received,
            None => received.saturating_sub(1),
        };
        let patience = self.timeout.max(TRACE_ANSWER_TIME);
        let deadline = tokio::time::Instant::now() + patience;
        let mut answers = Vec::new();
        while (answers.len() as u64) < expected {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Failed(format!(
                    "{} of the {expected} nodes asked did not answer within {} ms",
                    expected - answers.len() as u64,
                    patience.as_millis()
                )));
            }
            let mut pop = redis::cmd("BLPOP");
            pop.arg(&reply_to).arg(left.as_secs_f64().max(0.01));
            let answer = tokio::time::timeout(
                left + Duration::from_millis(200),
                pop.query_async::<Option<(String, String)>>(&mut waiting),
            )
            .await
            .map_err(|_| StoreError::TimedOut(left))?
            .map_err(|e| StoreError::Failed(e.to_string()))?;
            if let Some((_, answer)) = answer {
                answers.push(answer);
            }
        }
        let mut del = redis::cmd("DEL");
        del.arg(&reply_to);
        let _ = self.within(del.query_async::<i64>(&mut waiting)).await;
        Ok(answers)
    }

    /// Pushes `answer` to the reply list `reply_to`, which lives
    /// [`REPLY_TTL_SECS`] if its asker has gone.
    async fn reply(&self, reply_to: &str, answer: &impl Serialize) {
        let answer = match serde_json::to_string(answer) {
            Ok(answer) => answer,
            Err(e) => return tracing::warn!(error = %e, "cluster: an answer could not be encoded"),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg(reply_to).arg(answer).ignore();
        pipe.cmd("EXPIRE")
            .arg(reply_to)
            .arg(REPLY_TTL_SECS)
            .ignore();
        let mut redis = self.redis.clone();
        if let Err(e) = self.within(pipe.query_async::<()>(&mut redis)).await {
            tracing::warn!(error = %e, "cluster: an answer could not be sent");
        }
    }

    /// The channel every node subscribes to.
    fn broadcast_channel(&self) -> String {
        format!("{}:commands", self.prefix)
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
        msg_id: String,
    ) -> Result<(), StoreError> {
        let command = Command::Publish {
            instance_id: instance_id.to_string(),
            topic: topic.to_string(),
            payload,
            msg_id,
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

/// What the commands act on, on this node.
struct Local {
    brokers: Arc<Brokers>,
    traces: Arc<TraceStore>,
    tracer: Arc<Tracer>,
    reads: ReadAnswerer,
}

/// Subscribes to this node's channel and the broadcast one, and runs what
/// comes; subscribes again whenever the connection is lost.
async fn command_task(cluster: Arc<Cluster>, local: Local, stop: CancellationToken) {
    let channels = [
        cluster.command_channel(&cluster.node_id),
        cluster.broadcast_channel(),
    ];
    loop {
        match cluster.client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channels).await {
                Ok(()) => {
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            message = messages.next() => message,
                            () = stop.cancelled() => return,
                        };
                        let Some(message) = message else { break };
                        run(&cluster, &local, message.get_payload_bytes());
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
/// connection to end; a trace query reads the store).
fn run(cluster: &Arc<Cluster>, local: &Local, payload: &[u8]) {
    match serde_json::from_slice::<Command>(payload) {
        Ok(Command::Kick {
            instance_id,
            client_id,
            why,
        }) => {
            let Some(broker) = local.brokers.instance(&instance_id) else {
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
            msg_id,
        }) => {
            let Some(broker) = local.brokers.instance(&instance_id) else {
                return tracing::warn!(%instance_id, "cluster: a message for an instance this node does not serve");
            };
            // Its deliveries here are traced under the asking node's MsgId.
            if let Some(msg_id) = crate::trace::events::parse_msg_id(&msg_id) {
                local.tracer.entering_named(
                    &instance_id,
                    topic.as_bytes(),
                    payload.as_bytes(),
                    msg_id,
                );
            }
            tokio::spawn(async move {
                let payload = bytes::Bytes::from(payload.into_bytes());
                if let Err(e) = broker.publish(&topic, payload).await {
                    tracing::warn!(%instance_id, %topic, error = %e, "cluster: a message from another node could not be published");
                }
            });
        }
        Ok(Command::Trace {
            from,
            reply_to,
            query,
        }) => {
            if from == cluster.node_id {
                return;
            }
            let (cluster, traces) = (cluster.clone(), local.traces.clone());
            tokio::spawn(async move {
                let found = tokio::task::spawn_blocking(move || query.run(&traces))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|found| found.map_err(|e| e.to_string()));
                cluster.reply(&reply_to, &found).await;
            });
        }
        Ok(Command::Read { reply_to, request }) => {
            let (cluster, reads) = (cluster.clone(), local.reads.clone());
            tokio::spawn(async move {
                let answer = reads(request).await;
                cluster.reply(&reply_to, &answer).await;
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
            msg_id: "01a24f332a968339afa6fd0000000001".into(),
        };
        let text = serde_json::to_string(&message).unwrap();
        assert!(text.contains(r#""command":"publish""#), "{text}");
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), message);
    }
}
