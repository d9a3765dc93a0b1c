//! The trace store: what happened to each device (connect, close,
//! disconnect, each with its reason), kept off the message path and
//! answered by the trace actions (QueryMqttTraceDevice).
//!
//! - The front layer hands events to a [`Tracer`] without waiting: a
//!   bounded queue ([`QUEUE`] events) to one writer thread. When the queue
//!   is full (the disk cannot keep up) an event is dropped and counted
//!   (`mqgate_trace_events_dropped_total`), never the message or the
//!   connection it describes.
//! - The writer commits what has queued in one transaction, at least every
//!   [`BATCH_INTERVAL`] (SQLite, `storage.dir/traces.sqlite3`, WAL,
//!   `synchronous=NORMAL`): a crash of the process loses the batch being
//!   gathered (at most [`BATCH_INTERVAL`] of events) and what was queued,
//!   never a committed batch, and never corrupts the store.
//! - Every [`SWEEP_INTERVAL`] the writer deletes events older than
//!   `[trace] retention_hours` and, while the database is larger than
//!   `[trace] max_bytes`, the oldest events.
//!
//! Event names follow the Tea SDK's documented values ([`events`]); times
//! are answered as `YYYY-MM-DD HH:MM:SS.mmm` in UTC.

pub mod events;
pub mod store;

pub use events::{DeviceAction, DeviceEvent};
pub use store::{DeviceTrace, TraceStore};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Events waiting for the writer, at most.
pub const QUEUE: usize = 65_536;
/// How long the writer gathers a batch before committing it.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How often old events are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// File name of the trace database inside `storage.dir`.
pub const DATABASE: &str = "traces.sqlite3";

/// Where the front layer reports events. Cheap to share; does nothing when
/// tracing is off.
#[derive(Debug, Default)]
pub struct Tracer {
    queue: Option<std::sync::mpsc::SyncSender<Queued>>,
    dropped: AtomicU64,
    recorded: AtomicU64,
}

impl Tracer {
    /// A tracer that records nothing (`[trace] enabled = false`).
    pub fn off() -> Arc<Tracer> {
        Arc::new(Tracer::default())
    }

    pub(crate) fn new(queue: std::sync::mpsc::SyncSender<Queued>) -> Arc<Tracer> {
        Arc::new(Tracer {
            queue: Some(queue),
            ..Tracer::default()
        })
    }

    /// Whether events are recorded.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Records a device event, or counts it dropped if the writer is
    /// behind. Never waits.
    pub fn device(&self, event: DeviceEvent) {
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(Queued::Device(event)) {
            Ok(()) => self.recorded.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Waits (up to `timeout`) until everything queued before this call is
    /// committed: at shutdown, and for tests that read what they caused.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(queue) = &self.queue else {
            return true;
        };
        let (done, committed) = std::sync::mpsc::sync_channel(1);
        if queue.send(Queued::Flush(done)).is_err() {
            return false;
        }
        committed.recv_timeout(timeout).is_ok()
    }

    /// Events dropped because the writer was behind (or gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events handed to the writer.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
}

/// What the writer receives.
#[derive(Debug)]
pub(crate) enum Queued {
    Device(DeviceEvent),
    /// Commit now, then say so.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A trace time as the SDK documents it: `2021-05-21 15:51:54.867` (UTC).
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}
