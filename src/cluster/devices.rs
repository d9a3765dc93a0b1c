//! The device-side state shared by every node: group ids, tokens, device
//! credentials, custom-auth identities and permissions, the connection
//! blacklist and tags. Each node keeps its whole copy in its SQLite
//! (`devices::replica` queues and applies the rows); Redis holds the
//! cluster's copy and the one order of changes.
//!
//! # In Redis
//! - `{prefix}:dev:{instance}`: a hash, a field per row (its name, see
//!   `devices::replica::RowChange`) holding its image. With
//!   `{prefix}:devinstances` (the instances with rows), the whole state: a
//!   node that joins, or that was away longer than the log reaches back,
//!   copies it.
//! - `{prefix}:devlog`: a stream, one entry per changed row (`n` node, `i`
//!   instance, `f` row name, `r` image or empty when deleted), the last
//!   [`LOG_LENGTH`] or so kept. Every node follows it (`XREAD BLOCK`) and
//!   applies each entry in order, its own included.
//! - `{prefix}:devepoch`: the generation of that copy. A node whose copy
//!   belongs to another generation copies the cluster's again.
//!
//! One Lua script writes a batch of rows into the hashes and the log at
//! once, so the copy and the log never disagree. It refuses when the
//! generation is not the node's: then Redis lost the store, and shipping
//! into it would build a copy from one node's latest changes only.
//!
//! # Redis lost the store (restarted empty, no persistence)
//! The first node to notice (a lock, `{prefix}:devseed`) writes its whole
//! copy back under a new generation; the others ship what they had not
//! shipped yet, then copy the cluster's. Lost are the changes a node had
//! applied from the log but another had not yet: the log is applied within
//! milliseconds, so that is the window. Configure Redis with
//! `appendonly yes` and `appendfsync always` (README) and a restart loses
//! nothing.

use super::{Cluster, StoreError};
use crate::broker::Brokers;
use crate::devices::DeviceStore;
use crate::devices::replica::{ReplicaMark, Replication, RowChange, Touched};
use redis::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// About how many entries the log keeps (`XADD MAXLEN ~`): a node away
/// for more changes than this copies the whole state.
pub const LOG_LENGTH: usize = 100_000;
/// How many log entries one round applies.
const APPLY_BATCH: usize = 512;
/// How many queued rows one script ships.
const SHIP_BATCH: usize = 256;
/// How long one `XREAD` waits for entries before the round checks the
/// generation again.
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);
/// How long a seeding node holds the seed lock at most.
const SEED_LOCK: Duration = Duration::from_secs(60);

/// KEYS[1]: the log; KEYS[2]: the set of instances; KEYS[3]: the
/// generation. ARGV[1]: the hashes' key prefix; ARGV[2]: this node;
/// ARGV[3]: the generation this node holds; ARGV[4]: the log's length;
/// then (instance, row name, image or '' when deleted) for each row.
/// Returns the last entry's id, or false when the generation is another.
const SHIP: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return false end
local last = false
for i = 5, #ARGV, 3 do
  local instance, field, row = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local hash = ARGV[1] .. instance
  if row == '' then
    redis.call('HDEL', hash, field)
  else
    redis.call('HSET', hash, field, row)
    redis.call('SADD', KEYS[2], instance)
  end
  last = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*',
    'n', ARGV[2], 'i', instance, 'f', field, 'r', row)
end
return last
";

/// The keys of the shared device state.
struct Keys {
    log: String,
    instances: String,
    epoch: String,
    seed: String,
    /// Prefix of the instances' hashes.
    rows: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            log: format!("{prefix}:devlog"),
            instances: format!("{prefix}:devinstances"),
            epoch: format!("{prefix}:devepoch"),
            seed: format!("{prefix}:devseed"),
            rows: format!("{prefix}:dev:"),
        }
    }
}

/// This node's side of the shared device state.
struct DeviceSync {
    cluster: Arc<Cluster>,
    devices: Arc<DeviceStore>,
    replication: Arc<Replication>,
    brokers: Arc<Brokers>,
    keys: Keys,
    ship: redis::Script,
    /// The generation and log position this node holds (as in SQLite).
    mark: tokio::sync::Mutex<ReplicaMark>,
    /// One shipping at a time: the log's order of a node's rows is the
    /// order they were queued in.
    shipping: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// Shares `devices` with the cluster: from now on its changes are
    /// shipped before their calls are answered, and the other nodes'
    /// changes are applied here (to `brokers`' connections too: a revoked
    /// token, a changed rule, a blacklisted client id). Returns once this
    /// node holds the cluster's state (or after three failed tries, with a
    /// warning: the follower goes on trying).
    pub async fn share_devices(
        self: &Arc<Self>,
        devices: Arc<DeviceStore>,
        brokers: Arc<Brokers>,
        stop: CancellationToken,
    ) -> Result<(), String> {
        self.same_device_key(&devices.key_fingerprint()).await?;
        let replication = devices
            .replicate(self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let mark = devices.replica_mark().await.map_err(|e| e.to_string())?;
        let sync = Arc::new(DeviceSync {
            cluster: self.clone(),
            devices,
            replication,
            brokers,
            keys: Keys::new(&self.prefix),
            ship: redis::Script::new(SHIP),
            mark: tokio::sync::Mutex::new(mark),
            shipping: tokio::sync::Mutex::new(()),
        });
        let mut follower = None;
        for attempt in 1..=3 {
            let mut connection = match sync.follow_connection().await {
                Ok(connection) => connection,
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "device state: cannot reach Redis");
                    continue;
                }
            };
            match sync.catch_up(&mut connection).await {
                Ok(()) => {
                    follower = Some(connection);
                    break;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "device state: not yet in step with the cluster")
                }
            }
        }
        tokio::spawn(sync.clone().follow(follower, stop.clone()));
        tokio::spawn(sync.ship_task(stop));
        Ok(())
    }
}

impl Cluster {
    /// Every node must hold the same server key: device credentials'
    /// secrets are derived from it and custom-auth secrets sealed with it.
    /// The first node records its key's fingerprint; a node with another
    /// key does not start.
    async fn same_device_key(&self, fingerprint: &str) -> Result<(), String> {
        let key = format!("{}:devkey", self.prefix);
        let mut redis = self.redis.clone();
        let mut claim = redis::cmd("SET");
        claim.arg(&key).arg(fingerprint).arg("NX").arg("GET");
        let held: Option<String> =
            self.within(claim.query_async(&mut redis))
                .await
                .map_err(|e| {
                    format!("cluster: cannot compare the device key with the cluster's: {e}")
                })?;
        match held {
            Some(held) if held != fingerprint => Err(format!(
                "cluster: this node's device key (storage.device_key_file, fingerprint {fingerprint}) is not the one the cluster's other nodes use (fingerprint {held}); device credentials would not log in through this node. Give every node a copy of the same key file"
            )),
            _ => Ok(()),
        }
    }
}

impl DeviceSync {
    async fn follow_connection(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        // A connection of its own: XREAD BLOCK holds it.
        self.cluster.blocking_connection().await
    }

    /// Brings this node in step: the right generation (seeding Redis or
    /// copying the cluster's state as needed), then every log entry up to
    /// now applied.
    async fn catch_up(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), StoreError> {
        self.check_generation().await?;
        if self.log_has_gap().await? {
            let epoch = self.mark.lock().await.epoch.clone();
            if let Some(epoch) = epoch {
                self.copy_cluster_state(epoch).await?;
            }
        }
        while self.follow_round(connection, None).await? >= APPLY_BATCH {}
        Ok(())
    }

    /// Compares the generation in Redis with this node's; seeds Redis when
    /// it has none, copies the cluster's state when it is another.
    async fn check_generation(&self) -> Result<(), StoreError> {
        loop {
            let mut redis = self.cluster.redis.clone();
            let mut get = redis::cmd("GET");
            get.arg(&self.keys.epoch);
            let current: Option<String> = self.cluster.within(get.query_async(&mut redis)).await?;
            let held = self.mark.lock().await.epoch.clone();
            match current {
                Some(current) if Some(&current) == held.as_ref() => return Ok(()),
                Some(current) => {
                    // Ours first, so that the copy holds them.
                    self.ship_queued(&current).await?;
                    self.copy_cluster_state(current).await?;
                    return Ok(());
                }
                None => {
                    if self.seed().await? {
                        return Ok(());
                    }
                    // Another node is seeding: wait for its generation.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Writes this node's whole state into an empty store under a new
    /// generation; `false` if another node holds the seed lock.
    async fn seed(&self) -> Result<bool, StoreError> {
        let mut redis = self.cluster.redis.clone();
        let mut lock = redis::cmd("SET");
        lock.arg(&self.keys.seed)
            .arg(&self.cluster.node_id)
            .arg("NX")
            .arg("PX")
            .arg(SEED_LOCK.as_millis() as u64);
        let locked: Option<String> = self.cluster.within(lock.query_async(&mut redis)).await?;
        if locked.is_none() {
            return Ok(false);
        }
        let seeded = self.seed_locked(&mut redis).await;
        if seeded.is_err() {
            // Best effort: the others need not wait out the lock's time.
            let mut unlock = redis::cmd("DEL");
            unlock.arg(&self.keys.seed);
            let _ = self
                .cluster
                .within(unlock.query_async::<()>(&mut redis))
                .await;
        }
        seeded.map(|()| true)
    }

    /// [`DeviceSync::seed`]'s work, under the seed lock.
    async fn seed_locked(
        &self,
        redis: &mut redis::aio::ConnectionManager,
    ) -> Result<(), StoreError> {
        let rows = self.devices.snapshot().await.map_err(store_failed)?;
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        for chunk in rows.chunks(SHIP_BATCH) {
            let mut pipe = redis::pipe();
            for row in chunk {
                if let Some(image) = &row.row {
                    pipe.hset(
                        format!("{}{}", self.keys.rows, row.instance_id),
                        &row.field,
                        image,
                    )
                    .ignore();
                    pipe.sadd(&self.keys.instances, &row.instance_id).ignore();
                }
            }
            self.cluster.within(pipe.query_async::<()>(redis)).await?;
        }
        let applied = self.log_end().await?;
        let mut pipe = redis::pipe();
        pipe.set(&self.keys.epoch, &epoch).ignore();
        pipe.del(&self.keys.seed).ignore();
        self.cluster.within(pipe.query_async::<()>(redis)).await?;
        let mark = ReplicaMark {
            epoch: Some(epoch),
            applied: Some(applied),
        };
        self.devices
            .set_replica_mark(mark.clone())
            .await
            .map_err(store_failed)?;
        *self.mark.lock().await = mark;
        tracing::info!(
            rows = rows.len(),
            "device state: the cluster's store was empty; this node's state seeded it"
        );
        Ok(())
    }

    /// Replaces this node's state by the cluster's (generation `epoch`).
    async fn copy_cluster_state(&self, epoch: String) -> Result<(), StoreError> {
        // The log's end first: entries written while the hashes are read
        // are applied again after, which alters nothing they hold.
        let applied = self.log_end().await?;
        let mut redis = self.cluster.redis.clone();
        let mut members = redis::cmd("SMEMBERS");
        members.arg(&self.keys.instances);
        let instances: Vec<String> = self.cluster.within(members.query_async(&mut redis)).await?;
        let mut rows = Vec::new();
        for instance in instances {
            let mut all = redis::cmd("HGETALL");
            all.arg(format!("{}{instance}", self.keys.rows));
            let fields: Vec<(String, String)> =
                self.cluster.within(all.query_async(&mut redis)).await?;
            rows.extend(fields.into_iter().map(|(field, row)| RowChange {
                instance_id: instance.clone(),
                field,
                row: Some(row),
            }));
        }
        let mark = ReplicaMark {
            epoch: Some(epoch),
            applied: Some(applied),
        };
        let (before, after) = self
            .devices
            .replace_all(rows, mark.clone())
            .await
            .map_err(store_failed)?;
        *self.mark.lock().await = mark;
        tracing::info!(
            rows_before = before,
            rows_now = after,
            "device state: copied the cluster's"
        );
        Ok(())
    }

    /// The id of the log's last entry (`0-0`: none).
    async fn log_end(&self) -> Result<String, StoreError> {
        let mut redis = self.cluster.redis.clone();
        let mut last = redis::cmd("XREVRANGE");
        last.arg(&self.keys.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let found: Value = self.cluster.within(last.query_async(&mut redis)).await?;
        Ok(entries_of(&found)
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_string(), |(id, _)| id))
    }

    /// Whether entries this node has not applied were trimmed from the log.
    async fn log_has_gap(&self) -> Result<bool, StoreError> {
        let applied = self.mark.lock().await.applied.clone();
        let Some(applied) = applied else {
            return Ok(false);
        };
        let mut redis = self.cluster.redis.clone();
        let mut info = redis::cmd("XINFO");
        info.arg("STREAM").arg(&self.keys.log);
        let info: Value = match self.cluster.within(info.query_async(&mut redis)).await {
            Ok(info) => info,
            // No log yet: nothing was trimmed.
            Err(StoreError::Failed(why)) if why.contains("no such key") => return Ok(false),
            Err(e) => return Err(e),
        };
        // Redis 7: the highest id ever trimmed; without it, conservatively
        // the first entry held.
        let trimmed = field_of(&info, "max-deleted-entry-id").and_then(|v| text(&v));
        Ok(match trimmed {
            Some(trimmed) => entry_id(&trimmed) > entry_id(&applied),
            None => field_of(&info, "first-entry")
                .and_then(|entry| entries_of(&Value::Array(vec![entry])).into_iter().next())
                .is_some_and(|(first, _)| entry_id(&first) > entry_id(&applied)),
        })
    }

    /// One `XREAD`: applies what it returns; how many entries that was.
    async fn follow_round(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
        block: Option<Duration>,
    ) -> Result<usize, StoreError> {
        let (epoch, after) = {
            let mark = self.mark.lock().await;
            (
                mark.epoch.clone(),
                mark.applied.clone().unwrap_or_else(|| "0-0".into()),
            )
        };
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(APPLY_BATCH);
        if let Some(block) = block {
            read.arg("BLOCK").arg(block.as_millis() as u64);
        }
        read.arg("STREAMS").arg(&self.keys.log).arg(&after);
        let wait = block.unwrap_or_default() + self.cluster.timeout;
        let found: Value = match tokio::time::timeout(wait, read.query_async(connection)).await {
            Err(_) => return Err(StoreError::TimedOut(wait)),
            Ok(Err(e)) => return Err(StoreError::Failed(e.to_string())),
            Ok(Ok(found)) => found,
        };
        let entries = match &found {
            Value::Array(streams) => streams
                .first()
                .and_then(|stream| match stream {
                    Value::Array(pair) => pair.get(1).cloned(),
                    _ => None,
                })
                .map(|entries| entries_of(&entries))
                .unwrap_or_default(),
            Value::Map(streams) => streams
                .first()
                .map(|(_, entries)| entries_of(entries))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let Some(last) = entries.last().map(|(id, _)| id.clone()) else {
            return Ok(0);
        };
        let count = entries.len();
        let changes: Vec<RowChange> = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                let change = (|| {
                    Some(RowChange {
                        instance_id: get("i")?,
                        field: get("f")?,
                        row: get("r").filter(|r| !r.is_empty()),
                    })
                })();
                if change.is_none() {
                    // Not written by mqgate's script: skipped, so that it
                    // cannot stop the log, but said.
                    tracing::warn!(entry = %id, "a device-state log entry without its instance or row name; skipped");
                }
                change
            })
            .collect();
        let mark = ReplicaMark {
            epoch,
            applied: Some(last),
        };
        let touched = self
            .devices
            .apply_changes(changes, mark.clone())
            .await
            .map_err(store_failed)?;
        *self.mark.lock().await = mark;
        self.take_effect(&touched).await;
        Ok(count)
    }

    /// What an applied change means for the devices connected here (the
    /// same as the call that made it does on its own node).
    async fn take_effect(&self, touched: &[Touched]) {
        let mut rights_changed = BTreeSet::new();
        for row in touched {
            let Some(broker) = self.brokers.instance(&row.instance_id) else {
                continue;
            };
            match row.table {
                "tokens" | "custom_auth_permissions" => {
                    rights_changed.insert(row.instance_id.clone());
                }
                "connect_blacklist" if !row.deleted => {
                    if let Some(client_id) = row.key_text(1) {
                        broker
                            .kick(
                                client_id,
                                "the client id was put on the connection blacklist",
                            )
                            .await;
                    }
                }
                // RefreshDeviceCredential (the same key id, a new
                // generation): a device logged in with that credential used
                // the old secret. As on one node, registering anew or
                // unregistering ends no connection.
                "device_credentials" if !row.deleted => {
                    let access_key_id = row.column("access_key_id");
                    let refreshed = access_key_id.is_some()
                        && row.previous_column("access_key_id") == access_key_id
                        && row.previous_column("generation") != row.column("generation");
                    let (true, Some(client_id), Some(serde_json::Value::String(access_key_id))) =
                        (refreshed, row.key_text(1), access_key_id)
                    else {
                        continue;
                    };
                    let login = format!("DeviceCredential|{access_key_id}|");
                    let logged_in_with_it = broker.sessions.get(client_id).is_some_and(|s| {
                        s.info
                            .username
                            .as_deref()
                            .is_some_and(|u| u.starts_with(&login))
                    });
                    if logged_in_with_it {
                        broker
                            .kick(
                                client_id,
                                "the device credential was refreshed; connect with the new secret",
                            )
                            .await;
                    }
                }
                _ => {}
            }
        }
        for instance in rights_changed {
            if let Some(broker) = self.brokers.instance(&instance) {
                broker.rights_changed();
            }
        }
    }

    /// Ships every queued row under generation `epoch`.
    async fn ship_queued(&self, epoch: &str) -> Result<(), StoreError> {
        let _one = self.shipping.lock().await;
        loop {
            let (last, changes) = self
                .devices
                .queued(SHIP_BATCH)
                .await
                .map_err(store_failed)?;
            if changes.is_empty() {
                return Ok(());
            }
            let mut invocation = self.ship.prepare_invoke();
            invocation
                .key(&self.keys.log)
                .key(&self.keys.instances)
                .key(&self.keys.epoch)
                .arg(&self.keys.rows)
                .arg(&self.cluster.node_id)
                .arg(epoch)
                .arg(LOG_LENGTH);
            for change in &changes {
                invocation
                    .arg(&change.instance_id)
                    .arg(&change.field)
                    .arg(change.row.as_deref().unwrap_or(""));
            }
            let mut redis = self.cluster.redis.clone();
            let shipped: Option<String> = self
                .cluster
                .within(invocation.invoke_async(&mut redis))
                .await?;
            if shipped.is_none() {
                return Err(StoreError::Failed(
                    "the cluster's device store is of another generation (Redis lost it); shipping waits until this node is in step".into(),
                ));
            }
            self.devices
                .forget_queued(last)
                .await
                .map_err(store_failed)?;
            self.replication.shipped.send_replace(last);
        }
    }

    /// Ships queued rows as they come (a write wakes it), and every second.
    async fn ship_task(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.replication.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let epoch = self.mark.lock().await.epoch.clone();
            let Some(epoch) = epoch else { continue };
            if let Err(e) = self.ship_queued(&epoch).await {
                tracing::debug!(error = %e, "device state: shipping waits");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Follows the log until `stop`: checks the generation, then waits for
    /// entries and applies them. After a failure it checks the log for a
    /// gap too.
    async fn follow(
        self: Arc<Self>,
        mut connection: Option<redis::aio::MultiplexedConnection>,
        stop: CancellationToken,
    ) {
        let mut in_step = connection.is_some();
        loop {
            if stop.is_cancelled() {
                return;
            }
            let round = async {
                let live = match connection.as_mut() {
                    Some(live) => live,
                    None => connection.insert(self.follow_connection().await?),
                };
                if in_step {
                    self.check_generation().await?;
                } else {
                    self.catch_up(live).await?;
                    in_step = true;
                }
                self.follow_round(live, Some(FOLLOW_BLOCK)).await
            };
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = round => outcome,
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "device state: following the cluster's changes failed; retrying");
                connection = None;
                in_step = false;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

fn store_failed(e: crate::devices::StoreError) -> StoreError {
    StoreError::Failed(format!("the device database: {e}"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A stream id as a comparable pair.
fn entry_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// A field of an `XINFO STREAM` answer (a map, or a flat array of pairs).
fn field_of(info: &Value, name: &str) -> Option<Value> {
    match info {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .map(|(_, v)| v.clone()),
        Value::Array(flat) => flat
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| pair.get(1).cloned()),
        _ => None,
    }
}

/// Stream entries (`[[id, [k, v, ...]], ...]`) as ids and fields.
fn entries_of(value: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let id = text(parts.first()?)?;
            let fields = match parts.get(1)? {
                Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|pair| Some((text(&pair[0])?, text(pair.get(1)?)?)))
                    .collect(),
                _ => Vec::new(),
            };
            Some((id, fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(entry_id("1700000000000-10") > entry_id("1700000000000-9"));
        assert!(entry_id("1700000000001-0") > entry_id("1700000000000-99"));
        assert_eq!(entry_id("0-0"), (0, 0));
    }

    #[test]
    fn entries_are_read_with_their_fields() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let answer = Value::Array(vec![Value::Array(vec![
            bulk("5-1"),
            Value::Array(vec![bulk("i"), bulk("inst"), bulk("r"), bulk("")]),
        ])]);
        let entries = entries_of(&answer);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "5-1");
        assert_eq!(
            entries[0].1,
            vec![("i".into(), "inst".into()), ("r".into(), String::new())]
        );
    }
}
