//! Instance placement: each instance's broker serves devices on one node
//! at a time, the node that holds the instance's lease in Redis.
//!
//! - **Leases.** `{prefix}:lease:{instance}` = `"{node}|{relay address}"`,
//!   `PX` [`LEASE_TTL`]. Every node runs one script every
//!   [`PLACE_EVERY`] for all instances of the configuration: it renews the
//!   leases the node holds, claims the free ones it should hold, and
//!   returns every instance's holder. The node keeps that answer in memory;
//!   the front layer asks it ([`Placement::place`]) with no round trip.
//! - **Who claims a free lease.** A node that held the lease in its
//!   previous round (Redis restarted empty, or a renewal came late) takes
//!   it back at once. Otherwise the live node (its `{prefix}:node:{id}` key
//!   alive, [`super::presence`]) ranked first for the instance by
//!   rendezvous hashing (`SHA1(node|instance)`, highest wins, so that
//!   nodes started together spread the instances), once it has found the
//!   lease free in two rounds in a row: the previous holder gets one round
//!   to take it back before anyone else does. A held lease is never taken
//!   from its holder: a node that joins later takes only instances that
//!   are free, so devices are not moved without cause.
//! - **A node dies.** Its leases expire after at most [`LEASE_TTL`]; the
//!   live node ranked first claims each within two rounds (at most
//!   2 × [`PLACE_EVERY`] more). Its devices lost their connections with it (relayed
//!   ones too: the relaying node closes them) and connect again; until the
//!   take-over they are refused with "server unavailable" and a reason,
//!   then they land on the new holder. Sessions that the dead node held
//!   (subscriptions of `clean session = false` clients, queued messages)
//!   were in its memory and are lost: a client subscribes again after its
//!   CONNACK says `session present = 0`, as MQTT has it do.
//! - **A node loses a lease while alive** (Redis was out of reach longer
//!   than the lease, and another node claimed it when Redis came back): at
//!   its next round it sees another holder and ends its connections of
//!   that instance (MQTT 5: DISCONNECT 0x9C, use another server); they
//!   connect again and are relayed to the new holder.
//! - **Redis out of reach.** The last known placement stays in force:
//!   devices stay connected and new ones are served or relayed as before.
//!   A node cut off from Redis but not from its devices keeps serving its
//!   instances; if another node took them meanwhile, the instance is split
//!   until the cut-off node sees Redis again (then it gives way, above).
//! - **Stale directory entries.** The node that takes an instance sweeps
//!   its directory of the entries of dead nodes and replaced epochs
//!   ([`super::presence`]), once the last node's key has surely expired,
//!   and every minute after.
//! - **A clean stop** releases the node's leases at once, so other nodes
//!   take its instances within one round instead of after the lease's
//!   time.

use super::{Cluster, StoreError};
use crate::broker::{Brokers, Place, Placement, reason};
use crate::directory::DirectoryHandle;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a lease lives without renewal: the longest an instance of a
/// dead node stays unserved, plus one round.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often a node renews its leases and looks for free ones.
pub const PLACE_EVERY: Duration = Duration::from_millis(500);
/// How often the serving node sweeps its instances' directories (and once
/// when it takes an instance).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// ARGV[1]: the key prefix; ARGV[2]: this node's id; ARGV[3]: this node's
/// lease value; ARGV[4]: the lease's time in ms; ARGV[5..]: the instances,
/// each prefixed `1` if this node held it in its previous round, `f` if
/// it found it free then, else `0`. Returns each instance's lease value after the round (`""`: free).
/// (Reads keys not given in KEYS: fine on one Redis, not on a Redis
/// Cluster, which mqgate does not support.)
const PLACE: &str = r"
local prefix, me, mine, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local nodes = prefix .. ':nodes'
redis.call('SADD', nodes, me)
local live = {}
for _, node in ipairs(redis.call('SMEMBERS', nodes)) do
  if node == me or redis.call('EXISTS', prefix .. ':node:' .. node) == 1 then
    live[#live + 1] = node
  else
    redis.call('SREM', nodes, node)
  end
end
local out = {}
for i = 5, #ARGV do
  local before = string.sub(ARGV[i], 1, 1)
  local instance = string.sub(ARGV[i], 2)
  local key = prefix .. ':lease:' .. instance
  local holder = redis.call('GET', key)
  if holder == mine then
    redis.call('PEXPIRE', key, ttl)
  elseif not holder then
    local first, first_rank = nil, nil
    for _, node in ipairs(live) do
      local rank = redis.sha1hex(node .. '|' .. instance)
      if first_rank == nil or rank > first_rank then
        first, first_rank = node, rank
      end
    end
    if before == '1' or (before == 'f' and first == me) then
      redis.call('SET', key, mine, 'PX', ttl)
      holder = mine
    end
  end
  out[#out + 1] = holder or ''
end
return out
";

/// ARGV[1]: the key prefix; ARGV[2]: this node's lease value; ARGV[3..]:
/// instances. Deletes the leases that are still this node's.
const RELEASE: &str = r"
local released = 0
for i = 3, #ARGV do
  local key = ARGV[1] .. ':lease:' .. ARGV[i]
  if redis.call('GET', key) == ARGV[2] then
    released = released + redis.call('DEL', key)
  end
end
return released
";

/// The placement's scripts and what the last round said.
pub(super) struct Leases {
    place: redis::Script,
    release: redis::Script,
    /// This node's lease value (`node|relay address`), once its relay
    /// listener is bound.
    mine: std::sync::OnceLock<String>,
    /// Each instance's lease value at the last round (`""`: free).
    holders: std::sync::RwLock<HashMap<String, String>>,
}

impl Leases {
    pub(super) fn new() -> Leases {
        Leases {
            place: redis::Script::new(PLACE),
            release: redis::Script::new(RELEASE),
            mine: std::sync::OnceLock::new(),
            holders: std::sync::RwLock::new(HashMap::new()),
        }
    }

    fn holders(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
        self.holders.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a lease value says, against this node's own.
fn place_of(value: Option<&String>, mine: Option<&String>) -> Place {
    match value {
        Some(value) if Some(value) == mine => Place::Here,
        Some(value) => match value.split_once('|') {
            Some((node, relay)) if !node.is_empty() && !relay.is_empty() => Place::There {
                node: node.to_string(),
                relay: relay.to_string(),
            },
            _ => Place::Unplaced,
        },
        None => Place::Unplaced,
    }
}

impl Placement for Cluster {
    fn place(&self, instance_id: &str) -> Place {
        place_of(
            self.leases.holders().get(instance_id),
            self.leases.mine.get(),
        )
    }
}

impl Cluster {
    /// Starts placing instances (until `stop`), this node taking relayed
    /// connections at `relay` (`host:port`). Returns after the first
    /// round, so that a node that reports itself started knows where every
    /// instance is served.
    pub async fn start_placement(
        self: &Arc<Self>,
        relay: String,
        directory: Arc<DirectoryHandle>,
        brokers: Arc<Brokers>,
        stop: CancellationToken,
    ) {
        let _ = self.leases.mine.set(format!("{}|{relay}", self.node_id));
        // A free lease is claimed in a node's second round that finds it
        // free: up to three rounds, until every instance has a holder.
        for round in 0..3 {
            if round > 0 {
                tokio::time::sleep(PLACE_EVERY).await;
            }
            match self.place_round(&directory, &brokers).await {
                Ok(()) if self.leases.holders().values().all(|v| !v.is_empty()) => break,
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: no placement yet; trying again every {} ms", PLACE_EVERY.as_millis());
                    break;
                }
            }
        }
        tokio::spawn(placement_task(self.clone(), directory, brokers, stop));
    }

    /// One round: leases renewed and claimed, every holder learned, and
    /// the connections of instances this node lost ended.
    async fn place_round(
        self: &Arc<Self>,
        directory: &DirectoryHandle,
        brokers: &Brokers,
    ) -> Result<(), StoreError> {
        let Some(mine) = self.leases.mine.get() else {
            return Ok(());
        };
        let mut instances: Vec<String> = directory
            .current()
            .instances()
            .map(|i| i.id.clone())
            .collect();
        instances.sort_unstable();
        let mut invocation = self.leases.place.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(&self.node_id)
            .arg(mine)
            .arg(LEASE_TTL.as_millis() as u64);
        {
            let before = self.leases.holders();
            for instance in &instances {
                let flag = match before.get(instance) {
                    Some(value) if value == mine => '1',
                    Some(value) if value.is_empty() => 'f',
                    _ => '0',
                };
                invocation.arg(format!("{flag}{instance}"));
            }
        }
        let mut redis = self.redis.clone();
        let values = self
            .within(invocation.invoke_async::<Vec<String>>(&mut redis))
            .await?;
        let now: HashMap<String, String> = instances.into_iter().zip(values).collect();
        let lost: Vec<(String, String)> = {
            let before = self.leases.holders();
            now.iter()
                .filter(|(instance, value)| *value != mine && before.get(*instance) == Some(mine))
                .map(|(instance, value)| (instance.clone(), value.clone()))
                .collect()
        };
        // Taken just now (at start too): the directory may hold the last
        // node's entries of its devices; swept in the background once that
        // node's key has surely expired.
        let gained: Vec<String> = {
            let before = self.leases.holders();
            now.iter()
                .filter(|(instance, value)| *value == mine && before.get(*instance) != Some(mine))
                .map(|(instance, _)| instance.clone())
                .collect()
        };
        *self
            .leases
            .holders
            .write()
            .unwrap_or_else(|e| e.into_inner()) = now;
        if !gained.is_empty() {
            self.sweep_later(gained, super::presence::NODE_TTL);
        }
        for (instance, value) in lost {
            let node = value.split('|').next().unwrap_or_default().to_string();
            tracing::warn!(%instance, %node, "cluster: another node holds this instance now; ending its connections here");
            if let Some(broker) = brokers.instance(&instance) {
                tokio::spawn(async move {
                    broker
                        .disconnect_all(
                            reason::USE_ANOTHER_SERVER,
                            &format!(
                                "instance {instance} is served by node {node} now; connect again"
                            ),
                        )
                        .await;
                });
            }
        }
        Ok(())
    }

    /// Sweeps the directories of `instances` in a task of its own, after
    /// `wait`.
    fn sweep_later(self: &Arc<Self>, instances: Vec<String>, wait: Duration) {
        let cluster = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            for instance in instances {
                if let Err(e) = cluster.sweep(&instance).await {
                    tracing::debug!(%instance, error = %e, "cluster: the directory's stale entries were not swept; the next sweep tries again");
                }
            }
        });
    }

    /// The instances this node serves.
    fn served(&self) -> Vec<String> {
        let Some(mine) = self.leases.mine.get() else {
            return Vec::new();
        };
        self.leases
            .holders()
            .iter()
            .filter(|(_, value)| *value == mine)
            .map(|(instance, _)| instance.clone())
            .collect()
    }

    /// At a clean stop: the leases this node holds are freed at once.
    async fn release_leases(&self) -> Result<i64, StoreError> {
        let Some(mine) = self.leases.mine.get() else {
            return Ok(0);
        };
        let held: Vec<String> = self
            .leases
            .holders()
            .iter()
            .filter(|(_, value)| *value == mine)
            .map(|(instance, _)| instance.clone())
            .collect();
        if held.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.leases.release.prepare_invoke();
        invocation.arg(&self.prefix).arg(mine);
        for instance in &held {
            invocation.arg(instance);
        }
        let mut redis = self.redis.clone();
        self.within(invocation.invoke_async::<i64>(&mut redis))
            .await
    }
}

/// A round every [`PLACE_EVERY`]; the leases released at stop.
async fn placement_task(
    cluster: Arc<Cluster>,
    directory: Arc<DirectoryHandle>,
    brokers: Arc<Brokers>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PLACE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = tokio::time::Instant::now();
            cluster.sweep_later(cluster.served(), Duration::ZERO);
        }
        match cluster.place_round(&directory, &brokers).await {
            Ok(()) if failing => {
                tracing::info!("cluster: placement rounds succeed again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cluster: cannot renew or learn leases; the last placement stays in force");
                failing = true;
            }
            Err(_) => {}
        }
    }
    match cluster.release_leases().await {
        Ok(released) => tracing::info!(released, "cluster: leases released"),
        Err(e) => tracing::debug!(error = %e, "cluster: leases not released at stop; they expire"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_value_says_where_an_instance_is_served() {
        let mine = "n1|127.0.0.1:4001".to_string();
        assert_eq!(place_of(Some(&mine), Some(&mine)), Place::Here);
        assert_eq!(
            place_of(Some(&"n2|10.0.0.2:4001".to_string()), Some(&mine)),
            Place::There {
                node: "n2".into(),
                relay: "10.0.0.2:4001".into()
            }
        );
        assert_eq!(place_of(Some(&String::new()), Some(&mine)), Place::Unplaced);
        assert_eq!(place_of(None, Some(&mine)), Place::Unplaced);
        assert_eq!(
            place_of(Some(&"junk".to_string()), Some(&mine)),
            Place::Unplaced
        );
    }
}
