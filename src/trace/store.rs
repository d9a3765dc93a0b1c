//! The trace database: its schema, the writer thread that commits events
//! in batches and sweeps old ones, and the queries the trace actions ask.

use super::events::{DeviceAction, DeviceEvent, MessageAction, MessageEvent};
use super::rows::RowEvent;
use super::{BATCH_INTERVAL, DATABASE, QUEUE, Queued, SWEEP_INTERVAL, Tracer};
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Version 1 kept one row per message event (`message_events`); version
/// 2 packs them ([`super::rows`]). Trace events are a diagnostic with a
/// retention of hours, so an older store's message events are dropped
/// rather than converted.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_events (
    id INTEGER PRIMARY KEY,
    instance_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS device_events_by_client ON device_events (instance_id, client_id, time_ms);
CREATE INDEX IF NOT EXISTS device_events_by_time ON device_events (time_ms);
CREATE TABLE IF NOT EXISTS message_rows (
    id INTEGER PRIMARY KEY,
    instance_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    events INTEGER NOT NULL,
    packed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS message_rows_by_client ON message_rows (instance_id, client_id, first_ms);
CREATE TABLE IF NOT EXISTS message_ids (
    msg_id BLOB NOT NULL,
    row_id INTEGER NOT NULL,
    PRIMARY KEY (msg_id, row_id)
) WITHOUT ROWID;
PRAGMA user_version = 2;
";

/// One message event as the trace answers list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageTrace {
    pub msg_id: String,
    pub action: MessageAction,
    pub client_id: String,
    pub time_ms: i64,
    pub topic: String,
    pub size: u32,
    pub qos: u8,
}

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events older than this are deleted.
    pub max_age: Duration,
    /// While the database is larger than this, the oldest events go.
    pub max_bytes: u64,
}

/// One device event as the trace answers list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceTrace {
    pub time_ms: i64,
    pub channel_id: u64,
    pub action: DeviceAction,
    pub info: String,
}

/// An opened store, the tracer that feeds it and the writer's thread.
pub type Opened = (Arc<TraceStore>, Arc<Tracer>, std::thread::JoinHandle<()>);

/// Why the trace database could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the trace database could not be read: {0}")]
    Read(#[from] rusqlite::Error),
}

/// The trace database, for queries (the writer has a connection of its
/// own).
#[derive(Debug)]
pub struct TraceStore {
    path: PathBuf,
    reader: Mutex<Connection>,
    retention: Retention,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // A committed batch survives a crash of the process (the WAL is in
    // the OS's hands); a power cut may lose the last batches, never the
    // database's integrity.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version < SCHEMA_VERSION {
        connection.execute_batch("DROP TABLE IF EXISTS message_events;")?;
    }
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

impl TraceStore {
    /// Opens (creating if needed) `dir/traces.sqlite3` and starts its
    /// writer; returns the store, the tracer that feeds it, and the
    /// writer's thread (it ends once every tracer is dropped, after
    /// committing what was queued).
    pub fn open(dir: &Path, retention: Retention) -> Result<Opened, TraceError> {
        let path = dir.join(DATABASE);
        let opened = |path: &Path| {
            open_connection(path).map_err(|source| TraceError::Open {
                path: path.display().to_string(),
                source,
            })
        };
        let writer = opened(&path)?;
        let reader = opened(&path)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        let queued = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let taken = queued.clone();
        let thread = std::thread::Builder::new()
            .name("mqgate-trace".into())
            .spawn(move || write_events(writer, receiver, retention, &taken))
            .map_err(|e| TraceError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok((
            Arc::new(TraceStore {
                path,
                reader: Mutex::new(reader),
                retention,
            }),
            Tracer::new(sender, queued, thread.thread().clone()),
            thread,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How far back events are kept, in milliseconds.
    pub fn retention_ms(&self) -> i64 {
        i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX)
    }

    /// A device's events in `[begin_ms, end_ms]`, page `page` (from 1) of
    /// `size`, oldest first unless `reverse`; and how many there are in
    /// all.
    pub fn device_events(
        &self,
        instance_id: &str,
        client_id: &str,
        (begin_ms, end_ms): (i64, i64),
        (page, size): (u32, u32),
        reverse: bool,
    ) -> Result<(u64, Vec<DeviceTrace>), TraceError> {
        let connection = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        // The total and the page from one snapshot: a batch committed
        // between the two would otherwise make them disagree.
        let snapshot = connection.unchecked_transaction()?;
        let total: i64 = snapshot.query_row(
            "SELECT COUNT(*) FROM device_events
             WHERE instance_id = ?1 AND client_id = ?2 AND time_ms BETWEEN ?3 AND ?4",
            params![instance_id, client_id, begin_ms, end_ms],
            |row| row.get(0),
        )?;
        let order = if reverse { "DESC" } else { "ASC" };
        let mut statement = snapshot.prepare_cached(&format!(
            "SELECT time_ms, channel_id, action, info FROM device_events
             WHERE instance_id = ?1 AND client_id = ?2 AND time_ms BETWEEN ?3 AND ?4
             ORDER BY time_ms {order}, id {order} LIMIT ?5 OFFSET ?6"
        ))?;
        let offset = u64::from(page.saturating_sub(1)) * u64::from(size);
        let rows = statement.query_map(
            params![
                instance_id,
                client_id,
                begin_ms,
                end_ms,
                size,
                offset as i64
            ],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            },
        )?;
        let mut events = Vec::new();
        for row in rows {
            let (time_ms, channel_id, action, info) = row?;
            if let Some(action) = DeviceAction::from_label(&action) {
                events.push(DeviceTrace {
                    time_ms,
                    channel_id: channel_id as u64,
                    action,
                    info,
                });
            }
        }
        drop(statement);
        snapshot.finish()?;
        Ok((total as u64, events))
    }
}

/// A stored row's place and size, read before its events are.
struct RowHead {
    id: i64,
    first_ms: i64,
    last_ms: i64,
    events: u64,
}

impl TraceStore {
    /// Every event of message `msg_id` in `instance_id` within `range`,
    /// with the client of its row, in time order (then as recorded).
    fn events_of_message(
        &self,
        instance_id: &str,
        msg_id: &str,
        range: (i64, i64),
    ) -> Result<Vec<MessageTrace>, TraceError> {
        let Some(id) = super::events::parse_msg_id(msg_id) else {
            return Ok(Vec::new());
        };
        let connection = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut statement = connection.prepare_cached(
            "SELECT r.client_id, r.first_ms, r.packed FROM message_ids m
             JOIN message_rows r ON r.id = m.row_id
             WHERE m.msg_id = ?1 AND r.instance_id = ?2
             ORDER BY r.first_ms, r.id",
        )?;
        let rows = statement.query_map(params![&id.to_be_bytes()[..], instance_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (client_id, first_ms, packed) = row?;
            for event in decoded(first_ms, &packed) {
                if event.msg_id == id && (range.0..=range.1).contains(&event.time_ms) {
                    found.push(trace_of(&client_id, event));
                }
            }
        }
        // Rows come in order of their first event; a message's events in
        // time order (stable: equal times stay as recorded).
        found.sort_by_key(|event| event.time_ms);
        Ok(found)
    }

    /// Who published message `msg_id` (oldest first).
    pub fn message_publishes(
        &self,
        instance_id: &str,
        msg_id: &str,
        range: (i64, i64),
    ) -> Result<Vec<MessageTrace>, TraceError> {
        let mut events = self.events_of_message(instance_id, msg_id, range)?;
        events.retain(|event| event.action.publishes());
        events.truncate(100);
        Ok(events)
    }

    /// What happened to message `msg_id` after it was published (pushes,
    /// acknowledgements, drops), for one subscriber if `client_id` is
    /// given; a page of them and how many there are.
    pub fn message_deliveries(
        &self,
        instance_id: &str,
        msg_id: &str,
        client_id: Option<&str>,
        range: (i64, i64),
        (page, size): (u32, u32),
        reverse: bool,
    ) -> Result<(u64, Vec<MessageTrace>), TraceError> {
        let mut events = self.events_of_message(instance_id, msg_id, range)?;
        events.retain(|event| {
            !event.action.publishes() && client_id.is_none_or(|client| event.client_id == client)
        });
        if reverse {
            events.reverse();
        }
        let total = events.len() as u64;
        let skip = (page.saturating_sub(1) as usize).saturating_mul(size as usize);
        Ok((
            total,
            events.into_iter().skip(skip).take(size as usize).collect(),
        ))
    }

    /// The messages a client published or was pushed (and acknowledged or
    /// dropped) within `range`, in the order they were recorded; a page of
    /// them and how many there are. Reads the events of the rows that
    /// straddle the range's ends and of the page; the others are counted
    /// from their row's size.
    pub fn client_messages(
        &self,
        instance_id: &str,
        client_id: &str,
        (begin_ms, end_ms): (i64, i64),
        (page, size): (u32, u32),
        reverse: bool,
    ) -> Result<(u64, Vec<MessageTrace>), TraceError> {
        let connection = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        // The rows and their events from one snapshot.
        let snapshot = connection.unchecked_transaction()?;
        let mut heads: Vec<RowHead> = {
            let mut statement = snapshot.prepare_cached(
                "SELECT id, first_ms, last_ms, events FROM message_rows
                 WHERE instance_id = ?1 AND client_id = ?2
                   AND first_ms BETWEEN ?3 AND ?4 AND last_ms >= ?5
                 ORDER BY first_ms, id",
            )?;
            let rows = statement.query_map(
                params![
                    instance_id,
                    client_id,
                    begin_ms.saturating_sub(super::rows::ROW_SPAN_MS),
                    end_ms,
                    begin_ms
                ],
                |row| {
                    Ok(RowHead {
                        id: row.get(0)?,
                        first_ms: row.get(1)?,
                        last_ms: row.get(2)?,
                        events: row.get::<_, i64>(3)?.max(0) as u64,
                    })
                },
            )?;
            rows.collect::<Result<_, _>>()?
        };
        if reverse {
            heads.reverse();
        }
        let in_range = |event: &RowEvent| (begin_ms..=end_ms).contains(&event.time_ms);
        let read = |id: i64, first_ms: i64| -> Result<Vec<RowEvent>, TraceError> {
            let packed: Vec<u8> = snapshot.query_row(
                "SELECT packed FROM message_rows WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )?;
            let mut events = decoded(first_ms, &packed);
            events.retain(in_range);
            if reverse {
                events.reverse();
            }
            Ok(events)
        };
        // What each row holds within the range: rows wholly inside it
        // hold all their events; the others are read.
        let mut held: Vec<(u64, Option<Vec<RowEvent>>)> = Vec::with_capacity(heads.len());
        for head in &heads {
            if head.first_ms >= begin_ms && head.last_ms <= end_ms {
                held.push((head.events, None));
            } else {
                let events = read(head.id, head.first_ms)?;
                held.push((events.len() as u64, Some(events)));
            }
        }
        let total: u64 = held.iter().map(|(count, _)| count).sum();
        let mut skip = u64::from(page.saturating_sub(1)) * u64::from(size);
        let mut page_events = Vec::new();
        for (head, (count, events)) in heads.iter().zip(held) {
            if page_events.len() >= size as usize {
                break;
            }
            if skip >= count {
                skip -= count;
                continue;
            }
            let events = match events {
                Some(events) => events,
                None => read(head.id, head.first_ms)?,
            };
            let wanted = size as usize - page_events.len();
            page_events.extend(
                events
                    .into_iter()
                    .skip(skip as usize)
                    .take(wanted)
                    .map(|event| trace_of(client_id, event)),
            );
            skip = 0;
        }
        snapshot.finish()?;
        Ok((total, page_events))
    }
}

/// A row's events, or none if it is damaged (logged: the rest of the
/// answer stands).
fn decoded(first_ms: i64, packed: &[u8]) -> Vec<RowEvent> {
    super::rows::decode(first_ms, packed).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a damaged trace row was skipped");
        Vec::new()
    })
}

fn trace_of(client_id: &str, event: RowEvent) -> MessageTrace {
    MessageTrace {
        msg_id: super::events::msg_id_text(event.msg_id),
        action: event.action,
        client_id: client_id.to_string(),
        time_ms: event.time_ms,
        topic: event.topic,
        size: event.size,
        qos: event.qos,
    }
}

/// The writer: gathers what arrives for up to [`BATCH_INTERVAL`], commits
/// it in one transaction, and sweeps every [`SWEEP_INTERVAL`]. Ends when
/// every sender is gone, after committing what it holds.
fn write_events(
    mut connection: Connection,
    events: Receiver<Queued>,
    retention: Retention,
    queued: &std::sync::atomic::AtomicU64,
) {
    lower_priority();
    let mut last_sweep = Instant::now();
    let mut batch: Vec<DeviceEvent> = Vec::new();
    let mut messages: Vec<MessageEvent> = Vec::new();
    loop {
        // Asleep between batches, not blocked on the queue: a sender then
        // never has to wake this thread (a futex call per event, measured
        // at a tenth of the relay's CPU at 10,000 messages/s). A flush
        // unparks it.
        std::thread::park_timeout(BATCH_INTERVAL);
        let mut closed = false;
        let mut flushed = Vec::new();
        loop {
            let received = events.try_recv();
            if matches!(received, Ok(Queued::Device(_) | Queued::Message(_))) {
                queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            match received {
                Ok(Queued::Device(event)) => batch.push(event),
                Ok(Queued::Message(event)) => messages.push(event),
                Ok(Queued::Flush(done)) => flushed.push(done),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
            if batch.len() + messages.len() >= QUEUE {
                break;
            }
        }
        if !batch.is_empty() || !messages.is_empty() {
            if let Err(e) = commit(&mut connection, &batch, &messages) {
                tracing::error!(error = %e, events = batch.len() + messages.len(), "trace events could not be written; they are lost");
            }
            batch.clear();
            messages.clear();
        }
        for done in flushed {
            let _ = done.send(());
        }
        if last_sweep.elapsed() >= SWEEP_INTERVAL {
            if let Err(e) = sweep(&connection, retention, super::now_ms()) {
                tracing::warn!(error = %e, "trace sweep failed");
            }
            last_sweep = Instant::now();
        }
        if closed {
            return;
        }
    }
}

/// The writer runs at the lowest CPU priority (nice 19): when the cores
/// are busy moving messages, messages come first and the trace queue fills
/// (its overflow is counted and dropped) instead of the relay slowing
/// down for the trace.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid and setpriority on the calling thread have no
    // preconditions; a failure leaves the priority as it was.
    #[allow(unsafe_code)]
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

fn commit(
    connection: &mut Connection,
    batch: &[DeviceEvent],
    messages: &[MessageEvent],
) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO device_events (instance_id, client_id, time_ms, channel_id, action, info)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for event in batch {
            insert.execute(params![
                event.instance_id,
                event.client_id,
                event.time_ms,
                event.channel_id as i64,
                event.action.label(),
                event.info,
            ])?;
        }
        let mut insert_row = transaction.prepare_cached(
            "INSERT INTO message_rows (instance_id, client_id, first_ms, last_ms, events, packed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut insert_id = transaction
            .prepare_cached("INSERT OR IGNORE INTO message_ids (msg_id, row_id) VALUES (?1, ?2)")?;
        for row in super::rows::group(messages) {
            insert_row.execute(params![
                row.instance_id,
                row.client_id,
                row.first_ms,
                row.last_ms,
                row.events.len() as i64,
                row.encode(),
            ])?;
            let row_id = transaction.last_insert_rowid();
            for msg_id in row.msg_ids() {
                insert_id.execute(params![&msg_id.to_be_bytes()[..], row_id])?;
            }
        }
    }
    transaction.commit()
}

/// Deletes events past their age, then the oldest while the database is
/// over its size (freed pages are reused, so the file stops growing).
pub(crate) fn sweep(
    connection: &Connection,
    retention: Retention,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let oldest_kept = now_ms - retention.max_age.as_millis() as i64;
    connection.execute(
        "DELETE FROM device_events WHERE time_ms < ?1",
        params![oldest_kept],
    )?;
    // Message rows have no index on time (it would cost every insert
    // for a sweep a minute): their ids grow with their time, so the first
    // row to keep is found by bisection over ids. MsgIds begin with their
    // time (see `MsgIds`), so their index goes by range.
    if let Some(first_kept) = first_row_ending_at_or_after(connection, oldest_kept)? {
        connection.execute(
            "DELETE FROM message_rows WHERE id < ?1",
            params![first_kept],
        )?;
    }
    connection.execute(
        "DELETE FROM message_ids WHERE msg_id < ?1",
        params![&super::msg_ids_from(oldest_kept).to_be_bytes()[..]],
    )?;
    loop {
        let pages: i64 = connection.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = connection.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let page_size: i64 = connection.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let used = ((pages - free) * page_size) as u64;
        if used <= retention.max_bytes {
            return Ok(());
        }
        // A tenth of the events at a time, oldest first.
        let mut deleted = connection.execute(
            "DELETE FROM device_events WHERE id IN
             (SELECT id FROM device_events ORDER BY time_ms LIMIT
              (SELECT MAX(1, COUNT(*) / 10) FROM device_events))",
            [],
        )?;
        // Ids grow with time: the lowest ids are the oldest.
        deleted += connection.execute(
            "DELETE FROM message_rows WHERE id <
             (SELECT MIN(id) + MAX(1, (MAX(id) - MIN(id)) / 10) FROM message_rows)",
            [],
        )?;
        // Index entries of messages older than the oldest row left.
        let oldest_left: Option<i64> =
            connection.query_row("SELECT MIN(first_ms) FROM message_rows", [], |row| {
                row.get(0)
            })?;
        connection.execute(
            "DELETE FROM message_ids WHERE msg_id < ?1",
            params![&super::msg_ids_from(oldest_left.unwrap_or(i64::MAX)).to_be_bytes()[..]],
        )?;
        if deleted == 0 {
            return Ok(());
        }
    }
}

/// The lowest message-row id whose last event is at `at_ms` or later
/// (`None`: there is none, or no row at all), by bisection over ids: rows
/// are written in the order their batches were gathered, so times grow
/// with ids (a clock step back only makes a sweep keep a little more).
fn first_row_ending_at_or_after(
    connection: &Connection,
    at_ms: i64,
) -> rusqlite::Result<Option<i64>> {
    let bounds: (Option<i64>, Option<i64>) =
        connection.query_row("SELECT MIN(id), MAX(id) FROM message_rows", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let (Some(mut low), Some(mut high)) = bounds else {
        return Ok(None);
    };
    // The last time of the first row at or after an id.
    let time_from = |id: i64| -> rusqlite::Result<(i64, i64)> {
        connection.query_row(
            "SELECT id, last_ms FROM message_rows WHERE id >= ?1 ORDER BY id LIMIT 1",
            params![id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    };
    if time_from(high)?.1 < at_ms {
        return Ok(Some(high + 1));
    }
    while low < high {
        let middle = low + (high - low) / 2;
        let (id, time) = time_from(middle)?;
        if time < at_ms {
            low = id + 1;
        } else {
            high = id;
        }
    }
    Ok(Some(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: &str, time_ms: i64, action: DeviceAction, info: &str) -> DeviceEvent {
        DeviceEvent {
            instance_id: "i1".into(),
            client_id: client.into(),
            time_ms,
            channel_id: 7,
            action,
            info: info.into(),
        }
    }

    fn retention(max_bytes: u64) -> Retention {
        Retention {
            max_age: Duration::from_secs(3600),
            max_bytes,
        }
    }

    #[test]
    fn events_are_committed_queried_in_pages_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, tracer, writer) = TraceStore::open(dir.path(), retention(u64::MAX)).unwrap();
        for i in 0..25 {
            tracer.device(event("c1", 1_000 + i, DeviceAction::Connect, "accepted"));
        }
        tracer.device(event("c2", 1_000, DeviceAction::Close, "no heart"));
        drop(tracer);
        writer.join().unwrap();
        let (total, first) = store
            .device_events("i1", "c1", (0, i64::MAX), (1, 10), false)
            .unwrap();
        assert_eq!((total, first.len()), (25, 10));
        assert_eq!(first[0].time_ms, 1_000);
        let (_, last) = store
            .device_events("i1", "c1", (0, i64::MAX), (3, 10), false)
            .unwrap();
        assert_eq!(last.len(), 5);
        let (_, newest) = store
            .device_events("i1", "c1", (0, i64::MAX), (1, 1), true)
            .unwrap();
        assert_eq!(newest[0].time_ms, 1_024);
        let (total, _) = store
            .device_events("i1", "c1", (1_010, 1_014), (1, 100), false)
            .unwrap();
        assert_eq!(total, 5);
        // Past their age (an hour after 1,000 ms), every event goes.
        let connection = open_connection(store.path()).unwrap();
        sweep(&connection, retention(u64::MAX), 1_000 + 3_600_000 + 20).unwrap();
        let (total, _) = store
            .device_events("i1", "c1", (0, i64::MAX), (1, 100), false)
            .unwrap();
        assert_eq!(total, 5, "only events of the last hour stay");
    }

    fn message(client: &str, time_ms: i64, msg_id: u128, action: MessageAction) -> MessageEvent {
        MessageEvent {
            instance_id: "i1".into(),
            msg_id,
            action,
            client_id: client.into(),
            time_ms,
            ip: "".into(),
            topic: "t".into(),
            size: 1,
            qos: 1,
        }
    }

    /// 1,000 messages 100 ms apart (100 s), each published by p1 and
    /// pushed to s1, in one batch: rows of up to `ROW_SPAN_MS` per client.
    fn thousand_messages() -> (tempfile::TempDir, Arc<TraceStore>, Vec<u128>) {
        let dir = tempfile::tempdir().unwrap();
        let (store, tracer, writer) = TraceStore::open(dir.path(), retention(u64::MAX)).unwrap();
        let mut ids = Vec::new();
        for i in 0..1_000i64 {
            let time = 10_000 + i * 100;
            let id = crate::trace::msg_ids_from(time) | i as u128;
            ids.push(id);
            tracer.message(message("p1", time, id, MessageAction::PubMqtt));
            tracer.message(message("s1", time + 1, id, MessageAction::Sub));
        }
        drop(tracer);
        writer.join().unwrap();
        (dir, store, ids)
    }

    #[test]
    fn message_events_are_found_by_msg_id_and_by_client() {
        let (_dir, store, ids) = thousand_messages();
        let id = crate::trace::events::msg_id_text(ids[500]);
        let published = store.message_publishes("i1", &id, (0, i64::MAX)).unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(
            (
                published[0].msg_id.as_str(),
                published[0].client_id.as_str()
            ),
            (id.as_str(), "p1")
        );
        assert_eq!(published[0].time_ms, 60_000);
        let (total, pushed) = store
            .message_deliveries("i1", &id, Some("s1"), (0, i64::MAX), (1, 10), false)
            .unwrap();
        assert_eq!((total, pushed[0].client_id.as_str()), (1, "s1"));
        let (total, _) = store
            .message_deliveries("i1", &id, Some("p1"), (0, i64::MAX), (1, 10), false)
            .unwrap();
        assert_eq!(total, 0, "p1 published it, nothing was pushed to p1");
        // Another instance's MsgId query finds nothing.
        assert!(
            store
                .message_publishes("i2", &id, (0, i64::MAX))
                .unwrap()
                .is_empty()
        );
        let (total, _) = store
            .client_messages("i1", "p1", (0, i64::MAX), (1, 10), false)
            .unwrap();
        assert_eq!(total, 1_000);
    }

    #[test]
    fn client_pages_walk_every_event_in_range_once() {
        let (_dir, store, _) = thousand_messages();
        // A window whose ends fall inside rows: 20,050 ms to 71,234 ms.
        let range = (20_050, 71_234);
        let expected: Vec<i64> = (0..1_000i64)
            .map(|i| 10_000 + i * 100)
            .filter(|t| (range.0..=range.1).contains(t))
            .collect();
        for reverse in [false, true] {
            let mut seen = Vec::new();
            let mut page = 1;
            loop {
                let (total, events) = store
                    .client_messages("i1", "p1", range, (page, 7), reverse)
                    .unwrap();
                assert_eq!(total, expected.len() as u64);
                if events.is_empty() {
                    break;
                }
                seen.extend(events.iter().map(|e| e.time_ms));
                page += 1;
            }
            let mut want = expected.clone();
            if reverse {
                want.reverse();
            }
            assert_eq!(seen, want, "reverse: {reverse}");
        }
    }

    #[test]
    fn message_events_are_swept_by_age_row_by_row() {
        let (_dir, store, ids) = thousand_messages();
        // Past their age: events before 60,000 ms go, to within a row.
        let connection = open_connection(store.path()).unwrap();
        sweep(&connection, retention(u64::MAX), 60_000 + 3_600_000).unwrap();
        let (total, oldest) = store
            .client_messages("i1", "p1", (0, i64::MAX), (1, 1), false)
            .unwrap();
        assert!((500..=500 + 51).contains(&total), "{total} left");
        assert!(oldest[0].time_ms >= 60_000 - super::super::rows::ROW_SPAN_MS);
        let newer = crate::trace::events::msg_id_text(ids[500]);
        assert_eq!(
            store
                .message_publishes("i1", &newer, (0, i64::MAX))
                .unwrap()
                .len(),
            1
        );
        // An older MsgId's index entry is gone even if its row is kept.
        let older = crate::trace::events::msg_id_text(ids[499]);
        assert!(
            store
                .message_publishes("i1", &older, (0, i64::MAX))
                .unwrap()
                .is_empty()
        );
        sweep(&connection, retention(u64::MAX), 200_000 + 3_600_000).unwrap();
        let (total, _) = store
            .client_messages("i1", "p1", (0, i64::MAX), (1, 1), false)
            .unwrap();
        assert_eq!(total, 0);
        let index: i64 = connection
            .query_row("SELECT COUNT(*) FROM message_ids", [], |row| row.get(0))
            .unwrap();
        assert_eq!(index, 0);
    }

    #[test]
    fn a_version_1_store_opens_and_drops_its_message_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE);
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE message_events (id INTEGER PRIMARY KEY, msg_id BLOB);
             INSERT INTO message_events (msg_id) VALUES (x'00');",
        )
        .unwrap();
        drop(old);
        let (store, tracer, writer) = TraceStore::open(dir.path(), retention(u64::MAX)).unwrap();
        drop(tracer);
        writer.join().unwrap();
        let connection = open_connection(store.path()).unwrap();
        let tables: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'message_events'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn over_its_size_the_store_drops_its_oldest_events() {
        let dir = tempfile::tempdir().unwrap();
        let (store, tracer, writer) = TraceStore::open(dir.path(), retention(u64::MAX)).unwrap();
        for i in 0..20_000 {
            tracer.device(event("c1", i, DeviceAction::Connect, "accepted"));
        }
        drop(tracer);
        writer.join().unwrap();
        let connection = open_connection(store.path()).unwrap();
        sweep(&connection, retention(256 * 1024), 30_000).unwrap();
        let (total, oldest) = store
            .device_events("i1", "c1", (0, i64::MAX), (1, 1), false)
            .unwrap();
        assert!(total < 20_000 && total > 0, "{total} events left");
        // The newest ones are those kept.
        assert!(oldest[0].time_ms >= 20_000 - total as i64);
    }
}
