//! Metering: every successful call is one transaction on its instance's
//! bill, counted by (account, instance, action, minute) in SQLite in
//! `storage.dir/metering.sqlite3`; the broker side counts messages published
//! and delivered by QoS, and the peak of concurrent connections, per
//! instance and minute.
//!
//! Durability: a call is answered only after its transaction is committed
//! (`synchronous=FULL`, WAL). One writer thread batches whatever has queued
//! while the previous commit ran into the next transaction (group commit),
//! so a commit costs one fsync however many calls it carries. A crash can
//! therefore leave calls billed that were never answered (committed, then
//! killed before the answer went out), never the reverse.
//!
//! Broker counters live in memory and are written every
//! [`BROKER_FLUSH_EVERY`] (and at shutdown): a crash loses at most that much
//! of them, and a minute's counts may lean up to that much into the next.
//!
//! Tables (open the file with `sqlite3` to read them; times are Unix seconds
//! of the start of a UTC minute):
//! `api_transactions(minute, account_id, instance_id, action, transactions)`,
//! `broker_messages(minute, account_id, instance_id, direction, qos, messages)`,
//! `broker_connections(minute, account_id, instance_id, peak_connections)`.

pub mod report;

use crate::error::{ApiError, ErrorCode};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// File name of the metering database inside `storage.dir`.
pub const DATABASE: &str = "metering.sqlite3";
/// How often broker counters are written.
pub const BROKER_FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Most operations one transaction carries.
const MAX_BATCH: usize = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_transactions (
    minute INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    action TEXT NOT NULL,
    transactions INTEGER NOT NULL,
    PRIMARY KEY (minute, account_id, instance_id, action)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS broker_messages (
    minute INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('published', 'delivered')),
    qos INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (minute, account_id, instance_id, direction, qos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS broker_connections (
    minute INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    peak_connections INTEGER NOT NULL,
    PRIMARY KEY (minute, account_id, instance_id)
) WITHOUT ROWID;
";

/// The start of the UTC minute of `t`, in Unix seconds.
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60) * 60
}

/// The start of the UTC month of `t`.
pub fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// The start of the UTC month after `t`'s.
pub fn next_month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// Broker-side counts of one instance over one flush interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerCounts {
    pub account_id: String,
    pub instance_id: String,
    pub minute: i64,
    pub published: [u64; 3],
    pub delivered: [u64; 3],
    pub peak_connections: u64,
}

/// Why the metering store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Database {
        path: String,
        source: rusqlite::Error,
    },
    #[error("{path}: cannot read this month's totals: {source}")]
    MonthTotals {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot start the metering writer: {0}")]
    Writer(std::io::Error),
}

/// Why a write did not become durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the metering writer stopped")]
    WriterStopped,
    #[error("the batch could not be committed: {0}")]
    Commit(Arc<rusqlite::Error>),
}

type Done = oneshot::Sender<Result<(), WriteError>>;

enum Op {
    Call {
        minute: i64,
        account_id: String,
        instance_id: String,
        action: &'static str,
        done: Done,
    },
    Broker(BrokerCounts, Option<Done>),
}

/// This month's transactions per instance: committed, and admitted but not
/// yet committed, so that concurrent calls cannot overrun a quota.
#[derive(Debug, Default)]
struct MonthCounts {
    /// This month's first second and the next month's, unix time.
    month: i64,
    next_month: i64,
    committed: HashMap<String, u64>,
    in_flight: HashMap<String, u64>,
}

/// The metering store: a queue to the writer thread, and this month's
/// counts for quotas.
pub struct Meter {
    path: PathBuf,
    queue: mpsc::Sender<Op>,
    /// Shared with the writer thread, which moves a call from in flight to
    /// committed when its transaction commits: whether or not the caller
    /// is still there to hear it.
    month: Arc<Mutex<MonthCounts>>,
}

/// A call admitted under its instance's quota; released when dropped,
/// turned into a transaction by [`Meter::commit`].
pub struct Admission<'a> {
    meter: &'a Meter,
    instance_id: String,
    released: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.released {
            lock_month(&self.meter.month).settle(&self.instance_id, false);
        }
    }
}

impl Meter {
    /// Opens (creating if needed) the database in `dir` and starts the
    /// writer thread.
    pub fn open(dir: &Path) -> Result<Meter, OpenError> {
        let path = dir.join(DATABASE);
        let connection = open_writer(&path).map_err(|source| OpenError::Database {
            path: path.display().to_string(),
            source,
        })?;
        let now = Utc::now();
        let month_start_minute = month_start(now).timestamp();
        let committed = month_totals(&connection, month_start_minute).map_err(|source| {
            OpenError::MonthTotals {
                path: path.display().to_string(),
                source,
            }
        })?;
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let month = Arc::new(Mutex::new(MonthCounts {
            month: month_start_minute,
            next_month: next_month_start(now).timestamp(),
            committed,
            in_flight: HashMap::new(),
        }));
        let writer_month = month.clone();
        std::thread::Builder::new()
            .name("metering-writer".into())
            .spawn(move || writer(connection, receiver, writer_month, runtime))
            .map_err(OpenError::Writer)?;
        Ok(Meter { path, queue, month })
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Admits a call on `instance_id` if its monthly quota (if any) has
    /// room, counting calls still in flight.
    pub fn admit(&self, instance_id: &str, quota: Option<u64>) -> Result<Admission<'_>, ApiError> {
        let mut month = lock_month(&self.month);
        let committed = month.committed.get(instance_id).copied().unwrap_or(0);
        let in_flight = month.in_flight.get(instance_id).copied().unwrap_or(0);
        if let Some(quota) = quota
            && committed + in_flight >= quota
        {
            let until = next_month_start(Utc::now());
            return Err(ApiError::new(
                ErrorCode::InstanceQuotaExceeded,
                format!(
                    "The instance's monthly transaction quota is used up: instance {instance_id} has used {committed} of its {quota} transactions this month; calls succeed again from {} (UTC), or raise monthly_transaction_quota.",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        match month.in_flight.get_mut(instance_id) {
            Some(n) => *n += 1,
            None => {
                month.in_flight.insert(instance_id.to_string(), 1);
            }
        }
        Ok(Admission {
            meter: self,
            instance_id: instance_id.to_string(),
            released: false,
        })
    }

    /// Bills a successful call: returns once its transaction is durable.
    ///
    /// Once the transaction is queued, the admission belongs to the writer:
    /// it counts the call as committed when the commit succeeds, even if
    /// this future was dropped meanwhile (the caller went away), so the
    /// month's count always matches the bill.
    pub async fn commit(
        &self,
        mut admission: Admission<'_>,
        account_id: &str,
        action: &'static str,
    ) -> Result<(), ApiError> {
        let (done, wait) = oneshot::channel();
        let op = Op::Call {
            minute: minute_of(Utc::now()),
            account_id: account_id.to_string(),
            instance_id: admission.instance_id.clone(),
            action,
            done,
        };
        let result = match self.queue.send(op).await {
            Ok(()) => {
                admission.released = true;
                wait.await.unwrap_or(Err(WriteError::WriterStopped))
            }
            // Not queued: the admission, dropped, releases itself.
            Err(_) => Err(WriteError::WriterStopped),
        };
        drop(admission);
        match result {
            Ok(()) => Ok(()),
            // The cause (a database error) is logged by the endpoint with
            // the call's request id, never sent.
            Err(e) => Err(ApiError {
                internal: Some(format!("the transaction could not be recorded: {e}")),
                ..ApiError::new(
                    ErrorCode::InternalError,
                    "An error occurred while processing your request. Try again later: the call could not be recorded for billing, so it is not confirmed.",
                )
            }),
        }
    }

    /// Queues broker counts; with `wait`, returns once they are durable.
    pub async fn record_broker(&self, counts: BrokerCounts, wait: bool) -> Result<(), WriteError> {
        if !wait {
            return self
                .queue
                .send(Op::Broker(counts, None))
                .await
                .map_err(|_| WriteError::WriterStopped);
        }
        let (done, result) = oneshot::channel();
        self.queue
            .send(Op::Broker(counts, Some(done)))
            .await
            .map_err(|_| WriteError::WriterStopped)?;
        result.await.unwrap_or(Err(WriteError::WriterStopped))
    }
}

impl MonthCounts {
    /// A call admitted on `instance_id` is no longer in flight: committed,
    /// or given up.
    fn settle(&mut self, instance_id: &str, committed: bool) {
        if let Some(n) = self.in_flight.get_mut(instance_id) {
            *n = n.saturating_sub(1);
        }
        if committed {
            match self.committed.get_mut(instance_id) {
                Some(n) => *n += 1,
                None => {
                    self.committed.insert(instance_id.to_string(), 1);
                }
            }
        }
    }
}

/// This month's counts, first moved to the current month if it has changed.
fn lock_month(month: &Mutex<MonthCounts>) -> std::sync::MutexGuard<'_, MonthCounts> {
    let mut month = month.lock().unwrap_or_else(|e| e.into_inner());
    let now = Utc::now();
    // Most calls fall in the month already known: two comparisons instead
    // of a calendar computation.
    if !(month.month..month.next_month).contains(&now.timestamp()) {
        let current = month_start(now).timestamp();
        if month.month != current {
            month.committed.clear();
        }
        month.month = current;
        month.next_month = next_month_start(now).timestamp();
    }
    month
}

fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

fn month_totals(connection: &Connection, since: i64) -> rusqlite::Result<HashMap<String, u64>> {
    let mut statement = connection.prepare(
        "SELECT instance_id, SUM(transactions) FROM api_transactions WHERE minute >= ?1 GROUP BY instance_id",
    )?;
    let rows = statement.query_map(params![since], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
    })?;
    rows.collect()
}

/// The writer thread: takes what has queued, writes it in one transaction,
/// then answers everyone in it.
fn writer(
    mut connection: Connection,
    mut queue: mpsc::Receiver<Op>,
    month: Arc<Mutex<MonthCounts>>,
    runtime: Option<tokio::runtime::Handle>,
) {
    lower_own_priority();
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result =
            write_batch(&mut connection, &batch).map_err(|e| WriteError::Commit(Arc::new(e)));
        // Quotas count what the bill holds, before anyone is answered.
        {
            let mut month = lock_month(&month);
            for op in &batch {
                if let Op::Call { instance_id, .. } = op {
                    month.settle(instance_id, result.is_ok());
                }
            }
        }
        let waiting: Vec<_> = batch
            .into_iter()
            .filter_map(|op| match op {
                Op::Call { done, .. } => Some(done),
                Op::Broker(_, done) => done,
            })
            .collect();
        let answer_all = move || {
            for done in waiting {
                let _ = done.send(result.clone());
            }
        };
        // Waking a call from this thread costs a lock on the runtime's
        // shared queue and often a futex call to unpark a worker; woken from
        // a task on a worker, calls go to its local queue. So a batch is
        // answered from one task: one cross-thread wake per batch.
        match &runtime {
            Some(runtime) => drop(runtime.spawn(async move { answer_all() })),
            None => answer_all(),
        }
    }
}

/// Runs the calling thread at nice 10, below the threads that answer calls.
///
/// Why: on a saturated CPU an eager writer commits batches of a few calls
/// back to back, each commit costing its fixed price (locks, writes, the
/// fsync), and takes CPU from the very calls it is to commit. At a lower
/// priority it runs when the answering threads leave room, so under load a
/// batch grows and one fsync covers more calls; on an idle CPU it runs at
/// once. Nothing about durability changes: a call is still answered only
/// after its transaction is committed. (Measured: 31,800 -> 42,000 calls/s
/// at 1,000 connections on 2 cores; see bench/results.md.)
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls with integer arguments. On Linux, a
        // thread id given to setpriority(PRIO_PROCESS) names that thread
        // alone. Raising one's own nice value needs no privilege; if it
        // fails, the writer simply keeps the default priority. The one
        // unsafe call in mqgate (`unsafe_code` is denied crate-wide): the
        // standard library has no thread priority call.
        #[allow(unsafe_code)]
        let result =
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
        if result != 0 {
            tracing::debug!("the metering writer keeps the default CPU priority");
        }
    }
}

fn write_batch(connection: &mut Connection, batch: &[Op]) -> rusqlite::Result<()> {
    // Same key, same batch: one row update.
    let mut calls: HashMap<(i64, &str, &str, &str), u64> = HashMap::new();
    for op in batch {
        if let Op::Call {
            minute,
            account_id,
            instance_id,
            action,
            ..
        } = op
        {
            *calls
                .entry((*minute, account_id.as_str(), instance_id.as_str(), *action))
                .or_default() += 1;
        }
    }
    let transaction = connection.transaction()?;
    {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO api_transactions (minute, account_id, instance_id, action, transactions)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (minute, account_id, instance_id, action)
             DO UPDATE SET transactions = transactions + excluded.transactions",
        )?;
        for ((minute, account, instance, action), n) in &calls {
            upsert.execute(params![minute, account, instance, action, *n as i64])?;
        }
        let mut messages = transaction.prepare_cached(
            "INSERT INTO broker_messages (minute, account_id, instance_id, direction, qos, messages)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (minute, account_id, instance_id, direction, qos)
             DO UPDATE SET messages = messages + excluded.messages",
        )?;
        let mut peaks = transaction.prepare_cached(
            "INSERT INTO broker_connections (minute, account_id, instance_id, peak_connections)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (minute, account_id, instance_id)
             DO UPDATE SET peak_connections = MAX(peak_connections, excluded.peak_connections)",
        )?;
        for op in batch {
            let Op::Broker(counts, _) = op else { continue };
            for (direction, by_qos) in [
                ("published", counts.published),
                ("delivered", counts.delivered),
            ] {
                for (qos, n) in by_qos.iter().enumerate() {
                    if *n > 0 {
                        messages.execute(params![
                            counts.minute,
                            counts.account_id,
                            counts.instance_id,
                            direction,
                            qos as i64,
                            *n as i64
                        ])?;
                    }
                }
            }
            peaks.execute(params![
                counts.minute,
                counts.account_id,
                counts.instance_id,
                counts.peak_connections as i64
            ])?;
        }
    }
    transaction.commit()
}

/// Broker-side counters of one instance, bumped by the front layer as
/// frames pass and drained by the flush task.
#[derive(Debug, Default)]
pub struct BrokerMeter {
    /// Since start (live metrics read these).
    published: [AtomicU64; 3],
    delivered: [AtomicU64; 3],
    /// Highest concurrent connection count since the last flush.
    peak_connections: AtomicU64,
    /// The totals at the last flush, so a flush writes only what is new.
    flushed: Mutex<([u64; 3], [u64; 3])>,
}

impl BrokerMeter {
    pub fn published(&self, qos: u8) {
        self.published[(qos as usize).min(2)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn delivered(&self, qos: u8) {
        self.delivered[(qos as usize).min(2)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connections_now(&self, current: u64) {
        self.peak_connections.fetch_max(current, Ordering::Relaxed);
    }

    /// Totals so far (for live metrics), without draining.
    pub fn totals(&self) -> ([u64; 3], [u64; 3]) {
        let read = |a: &[AtomicU64; 3]| [0, 1, 2].map(|i| a[i].load(Ordering::Relaxed));
        (read(&self.published), read(&self.delivered))
    }

    /// The counts since the last drain; the peak restarts from `current`
    /// connections.
    pub fn drain(&self, current: u64) -> ([u64; 3], [u64; 3], u64) {
        let (published, delivered) = self.totals();
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let delta = |now: [u64; 3], then: [u64; 3]| [0, 1, 2].map(|i| now[i] - then[i]);
        let out = (delta(published, flushed.0), delta(delivered, flushed.1));
        *flushed = (published, delivered);
        let peak = self
            .peak_connections
            .swap(current, Ordering::Relaxed)
            .max(current);
        (out.0, out.1, peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_committed_and_quotas_hold_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let meter = std::sync::Arc::new(Meter::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let meter = meter.clone();
            tasks.push(tokio::spawn(async move {
                match meter.admit("i", Some(30)) {
                    Ok(admission) => meter
                        .commit(admission, "a", "QuerySessionByClientId")
                        .await
                        .is_ok(),
                    Err(e) => {
                        assert_eq!(e.code(), "InstanceQuotaExceeded");
                        false
                    }
                }
            }));
        }
        let mut committed = 0;
        for task in tasks {
            committed += task.await.unwrap() as u32;
        }
        assert_eq!(committed, 30);
        let connection = Connection::open(dir.path().join(DATABASE)).unwrap();
        let total: i64 = connection
            .query_row("SELECT SUM(transactions) FROM api_transactions", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(total, 30);
        // A reopened store knows this month's count.
        drop(meter);
        let reopened = Meter::open(dir.path()).unwrap();
        assert!(reopened.admit("i", Some(30)).is_err());
        assert!(reopened.admit("i", Some(31)).is_ok());
    }

    /// A caller that goes away while its call waits for the commit: the
    /// writer still commits the call, and the quota counts it (before, the
    /// call was only dropped from "in flight" and the month undercounted
    /// until a restart).
    #[tokio::test]
    async fn a_commit_whose_caller_went_away_still_counts_toward_the_quota() {
        use std::future::Future;
        let dir = tempfile::tempdir().unwrap();
        let meter = Meter::open(dir.path()).unwrap();
        let admission = meter.admit("i", Some(1)).unwrap();
        // Boxed, so that dropping it drops the future itself.
        let mut commit = Box::pin(meter.commit(admission, "a", "QuerySessionByClientId"));
        // One poll queues the transaction (the queue has room), then waits
        // for the writer's answer, which this single-threaded runtime
        // cannot deliver before the next await: the caller goes away here.
        let queued = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(commit.as_mut().poll(cx).is_pending())
        })
        .await;
        assert!(queued, "the commit finished in one poll");
        drop(commit);
        // Broker counts queued behind the call: once durable, the call's
        // batch has been committed too.
        let counts = BrokerCounts {
            minute: 0,
            account_id: "a".into(),
            instance_id: "i".into(),
            published: [0; 3],
            delivered: [0; 3],
            peak_connections: 0,
        };
        meter.record_broker(counts, true).await.unwrap();
        let connection = Connection::open(dir.path().join(DATABASE)).unwrap();
        let billed: i64 = connection
            .query_row("SELECT SUM(transactions) FROM api_transactions", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(billed, 1);
        let e = meter
            .admit("i", Some(1))
            .err()
            .expect("the quota of 1 is used by the billed call");
        assert_eq!(e.code(), "InstanceQuotaExceeded");
    }

    #[test]
    fn months_and_minutes() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(
            minute_of(t),
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 0)
                .unwrap()
                .timestamp()
        );
        assert_eq!(
            month_start(t),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            next_month_start(t),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
    }
}
