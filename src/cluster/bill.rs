//! The cluster's bill: each node's own bill, merged.
//!
//! Each node keeps its durable bill in its own SQLite (`metering`), billed
//! before the answer as on one node, so a call answered by any node is
//! billed exactly once, by that node. Every [`SYNC_EVERY`] the node copies
//! its bill into Redis as absolute counts under its own name:
//!
//! - `{prefix}:bill:{instance}:{day}`: field `node|minute|account|action` =
//!   the calls that node billed in that minute (the minutes of the last
//!   two minutes again each round, since the current one still grows; the
//!   whole bill at start and whenever Redis may have lost it);
//! - `{prefix}:billmonth:{instance}:{month start}`: field `node` = the calls
//!   that node billed on the instance this month, for the quotas.
//!
//! Absolute counts under the node's name make the copy idempotent: writing
//! a row again, after a failure or a restart, never counts a call twice.
//! `DescribeMeteringReport` and `mqgate report` read this node's bill from
//! its database and every other node's from Redis, and add them.
//!
//! - **Lag.** Another node's calls show in the totals within about
//!   [`SYNC_EVERY`]. A node killed loses none of its bill: what it did not
//!   copy yet, it copies when it starts again on its storage.
//! - **Quotas.** A quota check counts this node's calls (exact, in flight
//!   included) and the other nodes' as they last copied them, so the
//!   cluster can go over an instance's monthly quota by what the other
//!   nodes admitted within the last [`SYNC_EVERY`] or so.
//! - **A lost Redis.** Each live node writes its whole bill again (it
//!   notices its marker key missing); a node that is down meanwhile is
//!   missing from the totals until it starts again.

use super::{Cluster, StoreError};
use crate::directory::DirectoryHandle;
use crate::metering::Meter;
use crate::metering::report::{self, MinuteCalls};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node copies its bill into Redis.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Minutes (in seconds) copied again every round: a minute's count grows
/// until it is over, and its last calls reach the bill just after.
const RECOPIED: i64 = 120;
/// Fields written per pipeline.
const CHUNK: usize = 1_000;
/// The longest report range read from Redis, in days.
pub const MAX_DAYS: i64 = 1_000;

/// A minute's day, as in the keys: `2026-12-07`.
fn day_of(minute: i64) -> String {
    chrono::DateTime::from_timestamp(minute, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// A field of a day's key: `node|minute|account|action`.
fn field(node: &str, calls: &MinuteCalls) -> String {
    format!(
        "{node}|{}|{}|{}",
        calls.minute, calls.account_id, calls.action
    )
}

/// What a field and its count say, unless the field is malformed.
fn parse_field(instance_id: &str, field: &str, count: &str) -> Option<(String, MinuteCalls)> {
    let mut parts = field.splitn(4, '|');
    let node = parts.next()?;
    let minute = parts.next()?.parse().ok()?;
    let account_id = parts.next()?;
    let action = parts.next()?;
    Some((
        node.to_string(),
        MinuteCalls {
            minute,
            account_id: account_id.to_string(),
            instance_id: instance_id.to_string(),
            action: action.to_string(),
            calls: count.parse().ok()?,
        },
    ))
}

impl Cluster {
    /// Starts copying this node's bill into Redis (until `stop`), and
    /// feeding the other nodes' month counts to `meter`'s quota check.
    pub fn start_bill(
        self: &Arc<Self>,
        meter: Arc<Meter>,
        directory: Arc<DirectoryHandle>,
        stop: CancellationToken,
    ) {
        tokio::spawn(bill_task(self.clone(), meter, directory, stop));
    }

    fn bill_key(&self, instance_id: &str, day: &str) -> String {
        format!("{}:bill:{instance_id}:{day}", self.prefix)
    }

    fn month_key(&self, instance_id: &str, month_start: i64) -> String {
        format!("{}:billmonth:{instance_id}:{month_start}", self.prefix)
    }

    /// The calls the other nodes billed on `instance_id` in the minutes
    /// from `from` (inclusive) to `to` (exclusive), unix time, as they last
    /// copied them.
    pub async fn billed_elsewhere(
        &self,
        instance_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MinuteCalls>, StoreError> {
        let first_day = from.div_euclid(86_400);
        let last_day = (to - 1).div_euclid(86_400).min(first_day + MAX_DAYS);
        let mut pipe = redis::pipe();
        for day in first_day..=last_day {
            pipe.cmd("HGETALL")
                .arg(self.bill_key(instance_id, &day_of(day * 86_400)));
        }
        let mut redis = self.redis.clone();
        let days = self
            .within(pipe.query_async::<Vec<HashMap<String, String>>>(&mut redis))
            .await?;
        Ok(days
            .iter()
            .flatten()
            .filter_map(|(field, count)| parse_field(instance_id, field, count))
            .filter(|(node, calls)| node != &self.node_id && (from..to).contains(&calls.minute))
            .map(|(_, calls)| calls)
            .collect())
    }

    /// One round: this node's bill from `since` (unix time) copied, its
    /// month counts copied, the other nodes' month counts of instances
    /// with a quota read. Returns whether Redis had lost this node's marker
    /// (then the whole bill is copied again next round).
    async fn sync_bill(
        &self,
        meter: &Meter,
        directory: &DirectoryHandle,
        since: i64,
    ) -> Result<bool, StoreError> {
        let mut redis = self.redis.clone();
        let mut marker = redis::cmd("SET");
        marker
            .arg(format!("{}:billed:{}", self.prefix, self.node_id))
            .arg(1)
            .arg("GET");
        let lost = self
            .within(marker.query_async::<Option<String>>(&mut redis))
            .await?
            .is_none();
        let path = meter.path().to_path_buf();
        let rows = tokio::task::spawn_blocking(move || {
            report::open_read_only(&path).and_then(|c| report::minute_calls(&c, since))
        })
        .await
        .map_err(|e| StoreError::Failed(format!("the bill could not be read: {e}")))?
        .map_err(|e| StoreError::Failed(format!("the bill could not be read: {e}")))?;
        for chunk in rows.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for calls in chunk {
                pipe.cmd("HSET")
                    .arg(self.bill_key(&calls.instance_id, &day_of(calls.minute)))
                    .arg(field(&self.node_id, calls))
                    .arg(calls.calls)
                    .ignore();
            }
            self.within(pipe.query_async::<()>(&mut redis)).await?;
        }
        let (month_start, billed) = meter.month_billed();
        let quota_instances: Vec<String> = directory
            .current()
            .instances()
            .filter(|i| i.monthly_transaction_quota.is_some())
            .map(|i| i.id.clone())
            .collect();
        let mut pipe = redis::pipe();
        for (instance_id, calls) in &billed {
            pipe.cmd("HSET")
                .arg(self.month_key(instance_id, month_start))
                .arg(&self.node_id)
                .arg(*calls)
                .ignore();
        }
        for instance_id in &quota_instances {
            pipe.cmd("HGETALL")
                .arg(self.month_key(instance_id, month_start));
        }
        // Redis refuses an empty pipeline ("empty command"): a node that
        // has billed nothing this month and serves no instance with a
        // quota has nothing to send.
        let months = if billed.is_empty() && quota_instances.is_empty() {
            Vec::new()
        } else {
            self.within(pipe.query_async::<Vec<HashMap<String, u64>>>(&mut redis))
                .await?
        };
        let elsewhere: HashMap<String, u64> = quota_instances
            .into_iter()
            .zip(months)
            .map(|(instance_id, nodes)| {
                let others = nodes
                    .iter()
                    .filter(|(node, _)| **node != self.node_id)
                    .map(|(_, calls)| calls)
                    .sum();
                (instance_id, others)
            })
            .collect();
        meter.set_billed_elsewhere(month_start, elsewhere);
        Ok(lost)
    }
}

/// A round every [`SYNC_EVERY`]: the whole bill first, then the recent
/// minutes; the whole bill again after a failure or a lost Redis.
async fn bill_task(
    cluster: Arc<Cluster>,
    meter: Arc<Meter>,
    directory: Arc<DirectoryHandle>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = 0;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let round_start = chrono::Utc::now().timestamp();
        match cluster.sync_bill(&meter, &directory, since).await {
            Ok(lost) => {
                if failing {
                    tracing::info!("cluster: this node's bill is copied to Redis again");
                    failing = false;
                }
                since = if lost && since > 0 {
                    tracing::info!("cluster: Redis lost this node's bill; copying all of it again");
                    0
                } else {
                    round_start - round_start.rem_euclid(60) - RECOPIED
                };
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cluster: this node's bill could not be copied to Redis; the other nodes' reports miss its latest calls until it can");
                    failing = true;
                }
                since = 0;
            }
        }
    }
    // At a clean stop, the last calls too.
    if let Err(e) = cluster.sync_bill(&meter, &directory, since).await {
        tracing::debug!(error = %e, "cluster: the bill's last copy failed at stop; the next start copies it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_reads_back_as_written() {
        let calls = MinuteCalls {
            minute: 1_796_000_040,
            account_id: "1234567890".into(),
            instance_id: "post-cn-1".into(),
            action: "SendMessage".into(),
            calls: 42,
        };
        let written = field("n2", &calls);
        assert_eq!(written, "n2|1796000040|1234567890|SendMessage");
        assert_eq!(
            parse_field("post-cn-1", &written, "42"),
            Some(("n2".to_string(), calls))
        );
        assert_eq!(parse_field("i", "n2|x|a|b", "1"), None);
        assert_eq!(parse_field("i", "n2|60|a", "1"), None);
        assert_eq!(parse_field("i", "n2|60|a|b", "-1"), None);
    }

    #[test]
    fn a_minute_belongs_to_its_utc_day() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399), "1970-01-01");
        assert_eq!(day_of(86_400), "1970-01-02");
    }
}
