//! Metering: every successful call is one transaction on its instance's
//! bill, counted by (account, instance, action, minute) in SQLite in
//! `storage.dir/metering.sqlite3`; the broker side counts messages published
//! and delivered by QoS, and the peak of concurrent connections, per
//! instance and minute.
//!
//! Durability: a call is answered only after it is on disk. One writer
//! thread takes whatever has queued while its previous write ran (group
//! commit), counts it by (minute, account, instance, action), and appends
//! that as one block to the bill journal ([`journal`]), with one
//! synchronous write (`O_DSYNC`) however many calls it carries; then it
//! answers them. Without load (no other call committing, and the last
//! block carried one call) a call writes its own block on its worker
//! thread, sparing two thread handoffs. The
//! journal is folded into the SQLite tables (`synchronous=FULL`, WAL) off
//! the hot path, in one transaction that also records the last block
//! folded; at start, blocks not folded yet are folded first; a report reads
//! the tables and the blocks not folded yet in one snapshot, so it is exact
//! while mqgate runs and after it was killed. A crash can leave calls billed
//! that were never answered (written, then killed before the answer went
//! out), never the reverse.
//!
//! Broker counters live in memory and are written every
//! [`BROKER_FLUSH_EVERY`] (and at shutdown): a crash loses at most that much
//! of them, and a minute's counts may lean up to that much into the next.
//!
//! Tables (open the file with `sqlite3` to read them; times are Unix seconds
//! of the start of a UTC minute):
//! `api_transactions(minute, account_id, instance_id, action, transactions)`,
//! `broker_messages(minute, account_id, instance_id, direction, qos, messages)`,
//! `broker_connections(minute, account_id, instance_id, peak_connections)`,
//! `bill_journal(folded_sequence)`: the last journal block in the tables.

pub mod journal;
mod outcome;
pub mod report;

use crate::directory::Instance;
use crate::error::{ApiError, ErrorCode};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use journal::Journal;
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
CREATE TABLE IF NOT EXISTS bill_journal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    folded_sequence INTEGER NOT NULL
);
INSERT OR IGNORE INTO bill_journal (id, folded_sequence) VALUES (1, 0);
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
    #[error("{path}: cannot read or fold the bill journal: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot fold the bill journal into the tables: {source}")]
    Fold {
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
    #[error("the batch could not be written to the bill journal: {0}")]
    Journal(Arc<std::io::Error>),
}

type Done = oneshot::Sender<Result<(), WriteError>>;

enum Op {
    Call {
        minute: i64,
        /// Billed to its account and id (shared, not copied per call).
        instance: Arc<Instance>,
        action: &'static str,
        /// Where its caller waits for the outcome ([`outcome`]).
        slot: u32,
    },
    Broker(BrokerCounts, Option<Done>),
    /// Nothing to write: the writer folds if it is time (sent by a lone
    /// call that wrote its own block when a fold came due).
    Fold,
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
    /// In a cluster: what the other nodes billed this month, per instance,
    /// as they last told Redis (`cluster::bill`).
    elsewhere: HashMap<String, u64>,
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
    /// Where callers wait for their batch, shared with the writer.
    outcomes: Arc<outcome::Outcomes>,
    /// Why the last batch that failed did (callers of a failed batch read
    /// it; failures are rare and their cause the same for a whole batch).
    last_failure: Arc<Mutex<Option<WriteError>>>,
    /// The journal, shared with the writer thread: a lone call writes its
    /// own block.
    journal: Arc<Mutex<JournalState>>,
    /// Calls between entering [`Meter::commit`] and leaving it.
    committing: std::sync::atomic::AtomicUsize,
    /// Calls the last block carried, written by the writer thread or by a
    /// lone call: a call writes its own only after a block of one, so that
    /// under load (blocks of many) no worker thread blocks on the disk.
    last_block_calls: Arc<std::sync::atomic::AtomicUsize>,
    /// Joined when the meter is dropped, after its queue closed: the writer
    /// folds the journal into the tables before it ends, and nothing may
    /// open the store again (a restart in the same process, a test) while
    /// it does.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Meter {
    fn drop(&mut self) {
        // Close the queue (this is its only sender), then wait for the
        // writer's last fold.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the metering writer panicked");
        }
    }
}

/// A call admitted under its instance's quota; released when dropped,
/// turned into a transaction by [`Meter::commit`].
pub struct Admission<'a> {
    meter: &'a Meter,
    instance: Arc<Instance>,
    released: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.released {
            lock_month(&self.meter.month).settle(&self.instance.id, false);
        }
    }
}

impl Meter {
    /// Opens (creating if needed) the database in `dir` and starts the
    /// writer thread.
    pub fn open(dir: &Path) -> Result<Meter, OpenError> {
        let path = dir.join(DATABASE);
        let mut connection = open_writer(&path).map_err(|source| OpenError::Database {
            path: path.display().to_string(),
            source,
        })?;
        let journal = recover_journal(&mut connection, &dir.join(journal::FILE))?;
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
            elsewhere: HashMap::new(),
        }));
        let shared = Shared {
            month: month.clone(),
            outcomes: Arc::default(),
            last_failure: Arc::default(),
            journal: Arc::new(Mutex::new(JournalState {
                journal,
                unfolded: Unfolded::default(),
                last_fold: std::time::Instant::now(),
            })),
            last_block_calls: Arc::default(),
        };
        let (outcomes, last_failure, journal, last_block_calls) = (
            shared.outcomes.clone(),
            shared.last_failure.clone(),
            shared.journal.clone(),
            shared.last_block_calls.clone(),
        );
        let writer = std::thread::Builder::new()
            .name("metering-writer".into())
            .spawn(move || writer(connection, receiver, shared, runtime))
            .map_err(OpenError::Writer)?;
        Ok(Meter {
            path,
            queue,
            month,
            outcomes,
            last_failure,
            journal,
            committing: Default::default(),
            last_block_calls,
            writer: Some(writer),
        })
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This month's first second (unix time) and the calls this node
    /// billed this month, per instance.
    pub fn month_billed(&self) -> (i64, HashMap<String, u64>) {
        let month = lock_month(&self.month);
        (month.month, month.committed.clone())
    }

    /// In a cluster: what the other nodes billed in the month starting at
    /// `month_start`, per instance; counted by the quota check beside this
    /// node's own (ignored if the month has turned meanwhile).
    pub fn set_billed_elsewhere(&self, month_start: i64, elsewhere: HashMap<String, u64>) {
        let mut month = lock_month(&self.month);
        if month.month == month_start {
            month.elsewhere = elsewhere;
        }
    }

    /// Admits a call on `instance` if its monthly quota (if any) has room,
    /// counting calls still in flight.
    pub fn admit(&self, instance: &Arc<Instance>) -> Result<Admission<'_>, ApiError> {
        let (instance_id, quota) = (instance.id.as_str(), instance.monthly_transaction_quota);
        let mut month = lock_month(&self.month);
        let committed = month.committed.get(instance_id).copied().unwrap_or(0)
            + month.elsewhere.get(instance_id).copied().unwrap_or(0);
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
            instance: instance.clone(),
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
        action: &'static str,
    ) -> Result<(), ApiError> {
        let _committing = Committing::enter(&self.committing);
        if _committing.alone
            && self.last_block_calls.load(Ordering::Relaxed) <= 1
            && let Some(result) = self.write_alone(&mut admission, action)
        {
            return result.map_err(commit_error);
        }
        let mut ticket = self.outcomes.take().await;
        let op = Op::Call {
            minute: minute_of(Utc::now()),
            instance: admission.instance.clone(),
            action,
            slot: ticket.index(),
        };
        let result = match self.queue.send(op).await {
            Ok(()) => {
                ticket.queued();
                admission.released = true;
                if ticket.outcome().await {
                    Ok(())
                } else {
                    let failure = self.last_failure.lock().unwrap_or_else(|e| e.into_inner());
                    Err(failure.clone().unwrap_or(WriteError::WriterStopped))
                }
            }
            // Not queued: the admission, dropped, releases itself.
            Err(_) => Err(WriteError::WriterStopped),
        };
        drop(admission);
        result.map_err(commit_error)
    }

    /// A call with no other call committing, after a block that carried one
    /// call (no load: under load blocks carry many): nobody shares its fsync, so
    /// handing it to the writer thread and being woken back would only add
    /// two thread handoffs to the fsync (about half of a lone call's time
    /// beyond its fsync on the benchmark machine). It writes its own block
    /// here, on its worker thread, which the fsync blocks (tens of
    /// microseconds to a few milliseconds, with the other workers free).
    /// `None` when the writer thread holds the journal, or a fold is due
    /// (the writer folds): then the call queues as usual.
    fn write_alone(
        &self,
        admission: &mut Admission<'_>,
        action: &'static str,
    ) -> Option<Result<(), WriteError>> {
        let mut state = self.journal.try_lock().ok()?;
        if state.fold_due() {
            drop(state);
            // Wake the writer to fold, without waiting for it.
            let _ = self.queue.try_send(Op::Fold);
            return None;
        }
        let instance = &admission.instance;
        let written = state.write(&[(
            minute_of(Utc::now()),
            &instance.account_id,
            &instance.id,
            action,
            1,
        )]);
        self.last_block_calls.store(1, Ordering::Relaxed);
        // Quotas count what the bill holds, before the call is answered.
        admission.released = true;
        lock_month(&self.month).settle(&instance.id, written.is_ok());
        Some(written)
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

/// Reads the journal at `path`, folds what it holds beyond the tables'
/// last fold into them, and clears it for this run.
fn recover_journal(connection: &mut Connection, path: &Path) -> Result<Journal, OpenError> {
    let journal_error = |source| OpenError::Journal {
        path: path.display().to_string(),
        source,
    };
    let fold_error = |source| OpenError::Fold {
        path: path.display().to_string(),
        source,
    };
    let folded = folded_sequence(connection).map_err(fold_error)?;
    let (mut journal, blocks) = Journal::open(path, folded).map_err(journal_error)?;
    if let Some(last) = blocks.last().map(|b| b.sequence) {
        let mut unfolded = Unfolded::default();
        for block in &blocks {
            for entry in &block.entries {
                unfolded.add(
                    (
                        entry.minute,
                        &entry.account_id,
                        &entry.instance_id,
                        &entry.action,
                    ),
                    entry.calls,
                );
            }
        }
        fold(connection, &unfolded, &[], last).map_err(fold_error)?;
        tracing::info!(
            blocks = blocks.len(),
            through = last,
            "bill journal: calls written before the last stop folded into the tables"
        );
    }
    journal.clear().map_err(journal_error)?;
    Ok(journal)
}

/// The last journal block the tables hold.
fn folded_sequence(connection: &Connection) -> rusqlite::Result<u64> {
    connection
        .query_row(
            "SELECT folded_sequence FROM bill_journal WHERE id = 1",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n.max(0) as u64)
}

/// Calls in the journal, not yet in the tables, by (minute, account,
/// instance, action).
#[derive(Debug, Default)]
struct Unfolded(Vec<((i64, String, String, String), u64)>);

impl Unfolded {
    fn add(&mut self, (minute, account, instance, action): (i64, &str, &str, &str), calls: u64) {
        // The same few keys come back call after call until the next fold
        // (a second): found without allocating, allocated once.
        let found = self
            .0
            .iter_mut()
            .find(|((m, a, i, x), _)| *m == minute && x == action && i == instance && a == account);
        match found {
            Some((_, n)) => *n += calls,
            None => self.0.push((
                (
                    minute,
                    account.to_string(),
                    instance.to_string(),
                    action.to_string(),
                ),
                calls,
            )),
        }
    }
}

/// The journal and what it holds beyond the tables, shared by the writer
/// thread and a lone call that writes its own block
/// ([`Meter::commit`]).
struct JournalState {
    journal: Journal,
    unfolded: Unfolded,
    last_fold: std::time::Instant,
}

/// Calls billed to one (minute, account, instance, action), as a block
/// carries them.
type Count<'a> = (i64, &'a str, &'a str, &'a str, u64);

impl JournalState {
    /// Writes `counts` as one block, durable when this returns, and adds
    /// them to what is to be folded: for the writer thread's batches and a
    /// lone call's block alike.
    fn write(&mut self, counts: &[Count<'_>]) -> Result<(), WriteError> {
        // A batch of broker counts alone writes no block.
        if counts.is_empty() {
            return Ok(());
        }
        self.journal
            .append(counts.iter().copied())
            .map_err(|e| WriteError::Journal(Arc::new(e)))?;
        for &(minute, account, instance, action, calls) in counts {
            self.unfolded
                .add((minute, account, instance, action), calls);
        }
        Ok(())
    }

    /// Whether the journal should be folded into the tables now.
    fn fold_due(&self) -> bool {
        !self.journal.is_empty()
            && (self.journal.half_full() || self.last_fold.elapsed() >= journal::FOLD_EVERY)
    }
}

fn lock_journal(state: &Mutex<JournalState>) -> std::sync::MutexGuard<'_, JournalState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the writer thread shares with the meter.
struct Shared {
    month: Arc<Mutex<MonthCounts>>,
    outcomes: Arc<outcome::Outcomes>,
    last_failure: Arc<Mutex<Option<WriteError>>>,
    journal: Arc<Mutex<JournalState>>,
    last_block_calls: Arc<std::sync::atomic::AtomicUsize>,
}

/// Who waits for a batch: a call (in its outcome slot), or broker counts
/// flushed with a wait.
enum Waiter {
    Call(u32),
    Broker(Done, Result<(), WriteError>),
}

/// A batch's waiters and its outcome: told when dropped, so that they
/// hear it even if the task meant to tell them never runs (the runtime
/// shutting down).
struct Answers {
    waiting: Vec<Waiter>,
    durable: bool,
    outcomes: Arc<outcome::Outcomes>,
}

impl Drop for Answers {
    fn drop(&mut self) {
        for waiter in self.waiting.drain(..) {
            match waiter {
                Waiter::Call(slot) => self.outcomes.settle(slot, self.durable),
                Waiter::Broker(done, result) => {
                    let _ = done.send(result);
                }
            }
        }
    }
}

/// The writer thread: takes what has queued, writes its calls as one
/// journal block, answers everyone in it; folds the journal into the
/// tables when it is time.
fn writer(
    mut connection: Connection,
    mut queue: mpsc::Receiver<Op>,
    shared: Shared,
    runtime: Option<tokio::runtime::Handle>,
) {
    let Shared {
        month,
        outcomes,
        last_failure,
        journal,
        last_block_calls,
    } = shared;
    lower_own_priority();
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut state = lock_journal(&journal);
        let state = &mut *state;
        let counts = counts_of(&batch);
        let calls_result = state.write(&counts);
        let calls: u64 = counts.iter().map(|(.., n)| n).sum();
        if calls > 0 {
            last_block_calls.store(calls as usize, Ordering::Relaxed);
        }
        let has_broker = batch.iter().any(|op| matches!(op, Op::Broker(..)));
        let broker_result = if has_broker || state.fold_due() {
            let brokers: Vec<&BrokerCounts> = batch
                .iter()
                .filter_map(|op| match op {
                    Op::Broker(counts, _) => Some(counts),
                    _ => None,
                })
                .collect();
            fold_state(&mut connection, state, &brokers)
        } else {
            Ok(())
        };
        // Quotas count what the bill holds, before anyone is answered.
        {
            let mut month = lock_month(&month);
            for op in &batch {
                if let Op::Call { instance, .. } = op {
                    month.settle(&instance.id, calls_result.is_ok());
                }
            }
        }
        if let Err(e) = &calls_result {
            *last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
        }
        let durable = calls_result.is_ok();
        let waiting: Vec<_> = batch
            .into_iter()
            .filter_map(|op| match op {
                Op::Call { slot, .. } => Some(Waiter::Call(slot)),
                Op::Broker(_, done) => done.map(|done| Waiter::Broker(done, broker_result.clone())),
                Op::Fold => None,
            })
            .collect();
        let answers = Answers {
            waiting,
            durable,
            outcomes: outcomes.clone(),
        };
        let answer_all = move || drop(answers);
        // Waking a call from this thread costs a lock on the runtime's
        // shared queue and often a futex call to unpark a worker; woken from
        // a task on a worker, calls go to its local queue. So a batch is
        // answered from one task: one cross-thread wake per batch.
        match &runtime {
            Some(runtime) => drop(runtime.spawn(async move { answer_all() })),
            None => answer_all(),
        }
    }
    // Shutting down: everything journaled goes into the tables.
    let mut state = lock_journal(&journal);
    if !state.journal.is_empty()
        && let Err(e) = fold_state(&mut connection, &mut state, &[])
    {
        tracing::error!(error = %e, "bill journal: the last fold failed; the next start folds it");
    }
}

/// Folds what the journal holds (and `brokers`) into the tables; once that
/// is durable, the journal starts again from its first byte.
fn fold_state(
    connection: &mut Connection,
    state: &mut JournalState,
    brokers: &[&BrokerCounts],
) -> Result<(), WriteError> {
    let through = state.journal.next_sequence() - 1;
    let result = fold(connection, &state.unfolded, brokers, through)
        .map_err(|e| WriteError::Commit(Arc::new(e)));
    match &result {
        Ok(()) => {
            state.unfolded.0.clear();
            state.journal.restart();
            state.last_fold = std::time::Instant::now();
        }
        // The journal keeps the calls; the next fold retries.
        Err(e) => tracing::error!(error = %e, "bill journal: folding into the tables failed"),
    }
    result
}

/// The batch's calls counted by (minute, account, instance, action), in
/// order of arrival. A batch has a few keys: a linear search beats hashing
/// strings per call.
fn counts_of(batch: &[Op]) -> Vec<Count<'_>> {
    let mut counts: Vec<Count<'_>> = Vec::new();
    for op in batch {
        let Op::Call {
            minute,
            instance,
            action,
            ..
        } = op
        else {
            continue;
        };
        let key = (
            *minute,
            instance.account_id.as_str(),
            instance.id.as_str(),
            *action,
        );
        match counts
            .iter_mut()
            .find(|(m, a, i, x, _)| (*m, *a, *i, *x) == key)
        {
            Some((.., n)) => *n += 1,
            None => counts.push((key.0, key.1, key.2, key.3, 1)),
        }
    }
    counts
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

/// One SQLite transaction: the journal's calls not yet in the tables, the
/// broker counts, and the number of the last journal block they cover.
fn fold(
    connection: &mut Connection,
    unfolded: &Unfolded,
    brokers: &[&BrokerCounts],
    through: u64,
) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO api_transactions (minute, account_id, instance_id, action, transactions)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (minute, account_id, instance_id, action)
             DO UPDATE SET transactions = transactions + excluded.transactions",
        )?;
        for ((minute, account, instance, action), n) in &unfolded.0 {
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
        for counts in brokers {
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
        transaction
            .prepare_cached("UPDATE bill_journal SET folded_sequence = ?1 WHERE id = 1")?
            .execute(params![through as i64])?;
    }
    transaction.commit()
}

/// The answer to a call whose bill could not be written. The cause (an I/O
/// or database error) is logged by the endpoint with the call's request
/// id, never sent.
fn commit_error(e: WriteError) -> ApiError {
    ApiError {
        internal: Some(format!("the transaction could not be recorded: {e}")),
        ..ApiError::new(
            ErrorCode::InternalError,
            "An error occurred while processing your request. Try again later: the call could not be recorded for billing, so it is not confirmed.",
        )
    }
}

/// Counts a call into [`Meter::commit`] and out of it; `alone` when no
/// other call was in it.
struct Committing<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    alone: bool,
}

impl<'a> Committing<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Committing<'a> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        Committing {
            count,
            alone: before == 0,
        }
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
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

    /// Instance "i" of account "a", with a monthly quota.
    fn instance(quota: Option<u64>) -> Arc<Instance> {
        Arc::new(Instance {
            id: "i".into(),
            region: "r".into(),
            account_id: "a".into(),
            monthly_transaction_quota: quota,
            require_group_ids: false,
            max_group_ids: 0,
            max_device_credentials: 0,
            max_tokens: 0,
            max_blacklisted_clients: 0,
            max_custom_auth_identities: 0,
            max_custom_auth_permissions: 0,
        })
    }

    /// The calls a report of all time counts (tables and journal).
    fn billed(dir: &Path) -> u64 {
        let query = report::Query {
            kind: report::Kind::Transactions,
            from: Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap(),
            account_id: None,
            instance_id: None,
            group_by: report::GroupBy {
                instance: false,
                action: false,
                bucket: report::Bucket::Whole,
            },
        };
        let connection = report::open_read_only(&dir.join(DATABASE)).unwrap();
        report::run(&connection, &query)
            .unwrap()
            .iter()
            .map(|r| r.count)
            .sum()
    }

    /// The calls the tables hold, journal aside.
    fn in_tables(dir: &Path) -> i64 {
        Connection::open(dir.join(DATABASE))
            .unwrap()
            .query_row(
                "SELECT COALESCE(SUM(transactions), 0) FROM api_transactions",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// What a run killed before its fold leaves (blocks in the journal the
    /// tables do not hold): the next start folds them, once.
    #[tokio::test]
    async fn journal_blocks_left_by_a_killed_run_are_folded_once_at_start() {
        let dir = tempfile::tempdir().unwrap();
        drop(Meter::open(dir.path()).unwrap());
        // As the killed run's writer left it: two blocks, never folded.
        let path = dir.path().join(journal::FILE);
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        let now = minute_of(Utc::now());
        journal
            .append([(now, "a", "i", "QuerySessionByClientId", 5)].into_iter())
            .unwrap();
        journal
            .append([(now, "a", "i", "QuerySessionByClientId", 2)].into_iter())
            .unwrap();
        drop(journal);
        assert_eq!(in_tables(dir.path()), 0);
        // A report reads them while nothing has folded them.
        assert_eq!(billed(dir.path()), 7);
        let meter = Meter::open(dir.path()).unwrap();
        assert_eq!(in_tables(dir.path()), 7);
        assert_eq!(billed(dir.path()), 7);
        // The quota knows them.
        assert!(meter.admit(&instance(Some(7))).is_err());
        let admission = meter.admit(&instance(Some(8))).unwrap();
        meter
            .commit(admission, "QuerySessionByClientId")
            .await
            .unwrap();
        assert_eq!(billed(dir.path()), 8);
        drop(meter);
        // Folded at the stop; a second start adds nothing.
        assert_eq!(in_tables(dir.path()), 8);
        drop(Meter::open(dir.path()).unwrap());
        assert_eq!((in_tables(dir.path()), billed(dir.path())), (8, 8));
    }

    #[tokio::test]
    async fn calls_are_committed_and_quotas_hold_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let meter = std::sync::Arc::new(Meter::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let meter = meter.clone();
            tasks.push(tokio::spawn(async move {
                match meter.admit(&instance(Some(30))) {
                    Ok(admission) => meter
                        .commit(admission, "QuerySessionByClientId")
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
        // In the journal, not folded yet: a report counts them all.
        assert_eq!(billed(dir.path()), 30);
        // A reopened store knows this month's count.
        drop(meter);
        let reopened = Meter::open(dir.path()).unwrap();
        assert!(reopened.admit(&instance(Some(30))).is_err());
        assert!(reopened.admit(&instance(Some(31))).is_ok());
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
        let admission = meter.admit(&instance(Some(1))).unwrap();
        // Another call is committing, so this one queues for the writer
        // thread (alone, it would write its own block at once).
        meter.committing.fetch_add(1, Ordering::AcqRel);
        // Boxed, so that dropping it drops the future itself.
        let mut commit = Box::pin(meter.commit(admission, "QuerySessionByClientId"));
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
        // Broker counts are folded into the tables with the journal.
        assert_eq!((in_tables(dir.path()), billed(dir.path())), (1, 1));
        let e = meter
            .admit(&instance(Some(1)))
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
