//! The session directory: which node each connected device is on.
//!
//! - Every session that begins or ends on this node is told to one task
//!   ([`PresenceEvent`], in the order the instance's registry saw it),
//!   which writes it to Redis (what queued up while the last write was in
//!   flight, up to 512 events, in one pipelined round trip): `HSET {prefix}:where:{instance} client
//!   "node|epoch|connection"` when it begins; when it ends, the field is
//!   deleted only if it still names that connection (a late end of an
//!   older connection does not remove a newer one).
//! - The node keeps `{prefix}:node:{node_id}` = its epoch alive (`PX` 3 s,
//!   renewed every second). An entry counts only while its node's key
//!   holds the entry's epoch: a node that dies (SIGKILL) has its devices
//!   counted offline within 3 s, without anyone cleaning up after it.
//! - When a write fails, or the node's key was found missing (Redis
//!   restarted empty), the task takes a new epoch and writes every session
//!   it holds again: every older entry of this node is stale at once,
//!   without a scan.
//! - Stale entries (of dead nodes, of replaced epochs) are deleted by the
//!   node that serves the instance, when it takes the instance and every
//!   minute after (`SWEEP`, a few hundred fields per round trip).
//! - A lookup ([`Cluster::online_elsewhere`]) is one script: the entries,
//!   then their nodes' keys. This node's own entries are skipped: its
//!   registry is the truth for its devices. On the node that serves the
//!   instance ([`super::placement`]) there is no lookup at all: every
//!   device of the instance is connected there.

use super::{Cluster, StoreError};
use crate::broker::registry::{PresenceEvent, PresenceSink};
use crate::broker::{Place, Placement};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a node's key lives without a heartbeat: a dead node's devices
/// count as offline after at most this.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// How often the key is renewed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How often a failed directory is tried again.
const RESYNC_EVERY: Duration = Duration::from_millis(500);
/// Most session events written in one round trip.
const MAX_BATCH: usize = 512;

/// KEYS[1]: an instance's directory; ARGV[1]: the client id; ARGV[2]: the
/// entry that must still be there to be deleted.
const FORGET: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// KEYS[1]: an instance's directory; ARGV[1]: the prefix of node keys;
/// ARGV[2]: this node; ARGV[3..]: client ids. For each, the node its entry
/// names if that is another node whose key holds the entry's epoch, else
/// false. (It reads node keys it was not given in KEYS: fine on one Redis,
/// not on a Redis Cluster, which mqgate does not support.)
const LOOKUP: &str = r"
local out = {}
for i = 3, #ARGV do
  local holder = false
  local entry = redis.call('HGET', KEYS[1], ARGV[i])
  if entry then
    local node, epoch = string.match(entry, '^([^|]+)|([^|]+)|')
    if node and node ~= ARGV[2] and redis.call('GET', ARGV[1] .. node) == epoch then
      holder = node
    end
  end
  out[i - 2] = holder
end
return out
";

/// KEYS[1]: an instance's directory; ARGV[1]: the prefix of node keys;
/// ARGV[2]: the HSCAN cursor; ARGV[3]: how many fields to look at.
/// Deletes the entries whose node's key does not hold their epoch (a dead
/// node's, or a replaced epoch's); returns the next cursor.
const SWEEP: &str = r"
local scanned = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local fields = scanned[2]
for i = 1, #fields, 2 do
  local node, epoch = string.match(fields[i + 1], '^([^|]+)|([^|]+)|')
  if not node or redis.call('GET', ARGV[1] .. node) ~= epoch then
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return scanned[1]
";

/// Fields one sweep call looks at.
const SWEEP_COUNT: usize = 500;

/// The directory's scripts, kept by the cluster handle.
pub(super) struct Scripts {
    lookup: redis::Script,
    sweep: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            lookup: redis::Script::new(LOOKUP),
            sweep: redis::Script::new(SWEEP),
        }
    }
}

impl Cluster {
    /// Starts keeping this node's part of the directory (until `stop`);
    /// the sink is what the instances' registries tell sessions to.
    pub fn start_presence(self: &Arc<Self>, stop: CancellationToken) -> PresenceSink {
        let (sink, events) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(presence_task(self.clone(), events, stop.clone()));
        tokio::spawn(heartbeat_task(self.clone(), stop));
        sink
    }

    /// Of `client_ids`, not connected to this node, which are connected to
    /// another live node of the cluster, in the same order.
    pub async fn online_elsewhere(
        &self,
        instance_id: &str,
        client_ids: &[&str],
    ) -> Result<Vec<bool>, StoreError> {
        let holders = self.holders(instance_id, client_ids).await?;
        Ok(holders.iter().map(Option::is_some).collect())
    }

    /// For each of `client_ids`, the other live node that holds it, if any.
    pub(super) async fn holders(
        &self,
        instance_id: &str,
        client_ids: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        // The node that serves the instance has all its devices (the others
        // relay them here): no other node holds one.
        if client_ids.is_empty() || self.place(instance_id) == Place::Here {
            return Ok(vec![None; client_ids.len()]);
        }
        let mut invocation = self.scripts.lookup.key(self.where_key(instance_id));
        invocation
            .arg(format!("{}:node:", self.prefix))
            .arg(&self.node_id);
        for client_id in client_ids {
            invocation.arg(*client_id);
        }
        let mut redis = self.redis.clone();
        self.within(invocation.invoke_async::<Vec<Option<String>>>(&mut redis))
            .await
    }

    /// Deletes the stale entries of `instance_id`'s directory (those of
    /// dead nodes and replaced epochs, which readers ignore but which
    /// would otherwise stay until their client id connects again), a few
    /// hundred fields per round trip.
    pub(super) async fn sweep(&self, instance_id: &str) -> Result<(), StoreError> {
        let mut cursor = "0".to_string();
        loop {
            let mut invocation = self.scripts.sweep.key(self.where_key(instance_id));
            invocation
                .arg(format!("{}:node:", self.prefix))
                .arg(&cursor)
                .arg(SWEEP_COUNT);
            let mut redis = self.redis.clone();
            cursor = self
                .within(invocation.invoke_async::<String>(&mut redis))
                .await?;
            if cursor == "0" {
                return Ok(());
            }
        }
    }

    fn where_key(&self, instance_id: &str) -> String {
        format!("{}:where:{instance_id}", self.prefix)
    }

    fn node_key(&self) -> String {
        format!("{}:node:{}", self.prefix, self.node_id)
    }

    fn entry(&self, connection_id: u64) -> String {
        format!(
            "{}|{}|{connection_id}",
            self.node_id,
            self.epoch.load(Ordering::Relaxed)
        )
    }

    /// Renews the node's key; true if it was missing (expired, or Redis
    /// lost it), so that the entries may be too.
    async fn renew(&self) -> Result<bool, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.node_key())
            .arg(self.epoch.load(Ordering::Relaxed))
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .arg("GET");
        let mut redis = self.redis.clone();
        let previous = self
            .within(set.query_async::<Option<String>>(&mut redis))
            .await?;
        Ok(previous.is_none())
    }

    /// Writes sessions' beginnings and ends, in order, in one round trip.
    async fn tell(&self, events: &[PresenceEvent]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for event in events {
            let key = self.where_key(&event.instance_id);
            let entry = self.entry(event.connection_id);
            if event.online {
                pipe.cmd("HSET")
                    .arg(key)
                    .arg(&event.client_id)
                    .arg(entry)
                    .ignore();
            } else {
                // The script's text each time: EVALSHA could meet a Redis
                // that lost its scripts (restarted) in mid-pipeline.
                pipe.cmd("EVAL")
                    .arg(FORGET)
                    .arg(1)
                    .arg(key)
                    .arg(&event.client_id)
                    .arg(entry)
                    .ignore();
            }
        }
        let mut redis = self.redis.clone();
        self.within(pipe.query_async::<()>(&mut redis)).await
    }

    /// A new epoch, the node's key set to it, then every session in
    /// `online` written again under it.
    async fn resync(&self, online: &HashMap<(Arc<str>, String), u64>) -> Result<(), StoreError> {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.renew().await?;
        if online.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for ((instance_id, client_id), connection_id) in online {
            pipe.cmd("HSET")
                .arg(self.where_key(instance_id))
                .arg(client_id)
                .arg(self.entry(*connection_id))
                .ignore();
        }
        let mut redis = self.redis.clone();
        self.within(pipe.query_async::<()>(&mut redis)).await
    }

    /// At a clean stop: the node's key goes, so its entries are stale at
    /// once rather than after [`NODE_TTL`].
    async fn retire(&self) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.node_key());
        let mut redis = self.redis.clone();
        self.within(del.query_async::<i64>(&mut redis)).await?;
        Ok(())
    }
}

/// Applies the registries' events in order; after a failure, writes the
/// whole directory of this node again until Redis takes it.
async fn presence_task(
    cluster: Arc<Cluster>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<PresenceEvent>,
    stop: CancellationToken,
) {
    let mut online: HashMap<(Arc<str>, String), u64> = HashMap::new();
    let mut in_sync = cluster.resync(&online).await.is_ok();
    let mut batch = Vec::new();
    loop {
        batch.clear();
        let woke = tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    batch.push(event);
                    true
                }
                None => break,
            },
            () = cluster.resync.notified() => {
                in_sync = false;
                false
            }
            () = tokio::time::sleep(RESYNC_EVERY), if !in_sync => false,
            () = stop.cancelled() => break,
        };
        // What queued up meanwhile (a CONNECT storm) goes in the same round
        // trip.
        while woke && batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        for event in &batch {
            let key = (event.instance_id.clone(), event.client_id.clone());
            if event.online {
                online.insert(key, event.connection_id);
            } else if online.get(&key) == Some(&event.connection_id) {
                online.remove(&key);
            }
        }
        if in_sync {
            if !batch.is_empty()
                && let Err(e) = cluster.tell(&batch).await
            {
                tracing::warn!(error = %e, "cluster: sessions could not be written to the directory; writing them all again once Redis answers");
                in_sync = false;
            }
            continue;
        }
        match cluster.resync(&online).await {
            Ok(()) => {
                tracing::info!(
                    sessions = online.len(),
                    "cluster: this node's sessions written to the directory again"
                );
                in_sync = true;
            }
            Err(e) => tracing::debug!(error = %e, "cluster: the directory is still out of reach"),
        }
    }
    if let Err(e) = cluster.retire().await {
        tracing::debug!(error = %e, "cluster: the node's key could not be removed at stop; it expires");
    }
}

/// Keeps the node's key alive; asks for a full write when it was gone.
async fn heartbeat_task(cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match cluster.renew().await {
            Ok(true) => cluster.resync.notify_one(),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "cluster: the node's key could not be renewed"),
        }
    }
}
