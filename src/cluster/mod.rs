//! Several mqgate nodes behind one balancer, sharing one Redis (or Valkey):
//! `[cluster]` in the configuration. Without it a node stands alone and
//! nothing here runs.
//!
//! What the nodes share:
//! - **Replay nonces.** A signed request accepted by one node is refused by
//!   every other: after the node's own check, the nonce is claimed in Redis
//!   (`SET key 1 NX PX ttl`, the key a SHA-1 of the AccessKey id and the
//!   nonce, the ttl until the request's timestamp leaves the window), in
//!   the same script and round trip as the QPS step below.
//! - **QPS limits.** One GCRA bucket per account and limit for the whole
//!   cluster, kept by one Lua script against Redis's own clock (`TIME`), so
//!   the nodes' clocks do not enter it: over any `t` seconds the cluster
//!   admits at most `rate * t + burst` calls of an account's limit, the
//!   same promise a lone node makes.
//!
//! - **Where devices are** (the session directory, [`presence`]): each
//!   node writes which devices are connected to it, and
//!   QuerySessionByClientId and the batch view answer for a device
//!   connected to any live node.
//!
//! - **Kicks and messages** ([`reach`]): `CloseConnection` and the EMQX
//!   API's kicks on any node close the device's connection on the node
//!   that holds it; `SendMessage` on any node goes to the node that serves
//!   the instance.
//!
//! - **Instance placement** ([`placement`]): each instance is served by
//!   the one node that holds its lease; the other nodes' front layers relay
//!   its devices there (`broker::front`'s relay), and another node takes it
//!   over when that node dies.
//!
//! - **The bill's totals and monthly quotas** ([`bill`]): each node bills
//!   what it answers in its own database and copies it into Redis; reports
//!   add the nodes' bills, quota checks count the other nodes' calls.
//!
//! - **Traces** ([`reach`]): a trace query runs on every node and the
//!   answers are merged by time ([`crate::trace::query`]).
//!
//! - **The EMQX API's calls on devices** ([`reach`]): relayed to the node
//!   that serves the instance (`emqx::calls::ClientCall`).
//!
//! - **The device-side state** ([`devices`]): group ids, tokens,
//!   credentials, custom auth, the blacklist and tags; each node holds all
//!   of it in its SQLite, every change goes through one log in Redis and
//!   is applied on every node in the log's order.
//!
//! **Failures.** Every round trip waits at most `cluster.timeout_ms`; a
//! call that cannot get its answer from Redis in that time is answered
//! `ServiceUnavailable` (503), never admitted unchecked. The connection
//! ([`ConnectionManager`]) reconnects by itself, so calls are served again
//! as soon as Redis is back, without a restart. At start a node that
//! cannot reach Redis within the timeout does not start, and says why.

pub mod bill;
pub mod devices;
pub mod placement;
pub mod presence;
pub mod reach;

use crate::api::Limit;
use crate::config::ClusterConfig;
use crate::error::{ApiError, ErrorCode};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha1::{Digest, Sha1};
use std::time::Duration;

/// A call's admission, atomic in Redis and one round trip: the nonce
/// claimed, then the GCRA step. KEYS[1]: the bucket (its theoretical
/// arrival time in µs of Redis's clock); KEYS[2], if given: the nonce's
/// key. ARGV[1]: the emission interval in µs (1 s / rate; 0: no limit);
/// ARGV[2]: the burst; ARGV[3]: the nonce's expiry in ms. Returns -1 when
/// the nonce was claimed already (a replay: the bucket is not touched), 0
/// when the call is admitted (and the bucket moves on), otherwise how
/// many µs until a call would be. A call is admitted when, after it, the
/// bucket runs at most `burst` intervals ahead of now.
const ADMIT: &str = r"
if #KEYS > 1 and not redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[3]) then
  return -1
end
local interval = tonumber(ARGV[1])
if interval == 0 then return 0 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - now - burst * interval
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
";

/// This node's link to the cluster's Redis.
pub struct Cluster {
    node_id: String,
    prefix: String,
    timeout: Duration,
    /// For connections of their own (the command channel's subscription).
    client: redis::Client,
    redis: ConnectionManager,
    admit: redis::Script,
    /// This run's generation of the node's directory entries: entries
    /// written under another are stale ([`presence`]).
    epoch: std::sync::atomic::AtomicU64,
    /// Set when the node's entries in Redis may be missing or stale (Redis
    /// lost them, or a write failed): the presence task writes them all
    /// again under a new epoch.
    resync: tokio::sync::Notify,
    scripts: presence::Scripts,
    leases: placement::Leases,
}

/// What the cluster says of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Its nonce was claimed already, by this node or another.
    Replayed,
    /// Over the cluster's limit: a call could be admitted after this.
    Throttled(Duration),
}

/// A signed call's nonce, to be claimed for the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Nonce<'a> {
    pub access_key_id: &'a str,
    pub nonce: &'a str,
    /// How long it must be remembered: until the request's timestamp has
    /// left the window.
    pub remember: Duration,
}

/// Redis did not give an answer a call needs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("Redis failed: {0}")]
    Failed(String),
}

impl From<StoreError> for ApiError {
    fn from(cause: StoreError) -> ApiError {
        ApiError {
            internal: Some(format!("cluster store: {cause}")),
            ..ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The request has failed due to a temporary failure of the server: the cluster's other nodes, or the store this node shares with them, did not answer in time. Try again later.",
            )
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold Redis's password: not shown.
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the cluster's Redis, within `cluster.timeout_ms`, and
    /// checks that it answers (`PING`).
    pub async fn connect(config: &ClusterConfig) -> Result<Cluster, String> {
        let timeout = Duration::from_millis(config.timeout_ms);
        // redis's own message for a malformed URL does not repeat the URL
        // (which may hold a password).
        let client = redis::Client::open(config.redis_url.expose())
            .map_err(|e| format!("cluster.redis_url is not a usable Redis URL: {e}"))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let unreachable = |why: String| {
            format!(
                "cluster: cannot reach Redis at {} within {} ms ({why}); start redis-server (or check cluster.redis_url), or remove [cluster] to run this node alone",
                redacted(config.redis_url.expose()),
                config.timeout_ms
            )
        };
        let connecting = ConnectionManager::new_with_config(client.clone(), manager);
        let mut redis = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| unreachable("no answer".to_string()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let ping = redis::cmd("PING");
        tokio::time::timeout(timeout, ping.query_async::<String>(&mut redis))
            .await
            .map_err(|_| unreachable("no answer to PING".to_string()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Cluster {
            client,
            node_id: config.node_id.clone(),
            prefix: config.key_prefix.clone(),
            timeout,
            redis,
            admit: redis::Script::new(ADMIT),
            // Unique per run: the entries of an earlier run of this node
            // are stale from its first heartbeat.
            epoch: std::sync::atomic::AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as u64),
            ),
            resync: tokio::sync::Notify::new(),
            scripts: presence::Scripts::new(),
            leases: placement::Leases::new(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// One call of `account_id` under `limit` (`rate` a second, `burst` at
    /// once; `None`: no limit) against the cluster, in one round trip: its
    /// nonce claimed for every node (a signed RPC call; the EMQX API has
    /// none), then the cluster's bucket stepped.
    pub async fn admit(
        &self,
        account_id: &str,
        limit: Limit,
        rate_and_burst: Option<(u32, u32)>,
        nonce: Option<Nonce<'_>>,
    ) -> Result<Admission, StoreError> {
        let bucket = format!("{}:qps:{account_id}:{}", self.prefix, limit.name());
        let (interval_us, burst) = match rate_and_burst {
            Some((rate, burst)) => (1_000_000.0 / f64::from(rate.max(1)), burst.max(1)),
            None => (0.0, 0),
        };
        let mut invocation = self.admit.key(bucket);
        invocation.arg(interval_us).arg(burst);
        if let Some(nonce) = nonce {
            let ttl_ms = nonce.remember.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
            invocation
                .key(nonce_key(&self.prefix, nonce.access_key_id, nonce.nonce))
                .arg(ttl_ms);
        }
        let mut redis = self.redis.clone();
        let answer = self
            .within(invocation.invoke_async::<i64>(&mut redis))
            .await?;
        Ok(match answer {
            -1 => Admission::Replayed,
            0 => Admission::Admitted,
            wait_us => Admission::Throttled(Duration::from_micros(wait_us.unsigned_abs())),
        })
    }

    /// A connection of its own for a command that blocks (`BLPOP`, `XREAD
    /// BLOCK`): without the client's own response timeout (500 ms by
    /// default, which would cut a longer block short), since each caller
    /// bounds its wait itself.
    async fn blocking_connection(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        self.within(
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }

    /// `request`'s answer within the timeout.
    async fn within<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(StoreError::TimedOut(self.timeout)),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::TimedOut(self.timeout)),
            Ok(Err(e)) => Err(StoreError::Failed(e.to_string())),
            Ok(Ok(value)) => Ok(value),
        }
    }
}

/// A nonce's key: fixed length whatever the nonce's, and the nonce itself
/// not readable in Redis.
fn nonce_key(prefix: &str, access_key_id: &str, nonce: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(access_key_id.as_bytes());
    hash.update([0]);
    hash.update(nonce.as_bytes());
    let digest = hash.finalize();
    let mut key = String::with_capacity(prefix.len() + 7 + 40);
    key.push_str(prefix);
    key.push_str(":nonce:");
    for byte in digest {
        key.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    key
}

/// A Redis URL for a message: its password replaced.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_keys_are_fixed_length_and_differ_by_key_and_nonce() {
        let a = nonce_key("mqgate", "ak", "n1");
        assert!(a.starts_with("mqgate:nonce:"), "{a}");
        assert_eq!(a.len(), "mqgate:nonce:".len() + 40);
        assert_ne!(a, nonce_key("mqgate", "ak", "n2"));
        assert_ne!(a, nonce_key("mqgate", "ak2", "n1"));
        // The separator keeps ("a", "bc") and ("ab", "c") apart.
        assert_ne!(nonce_key("p", "a", "bc"), nonce_key("p", "ab", "c"));
        assert!(!nonce_key("p", "ak", &"x".repeat(10_000)).contains('x'));
    }

    #[test]
    fn a_url_in_a_message_has_no_password() {
        assert_eq!(
            redacted("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
