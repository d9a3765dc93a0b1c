//! The trace store: what happened to each device (connect, close,
//! disconnect, each with its reason) and to each message (who published
//! it, to whom it was pushed, who acknowledged it), kept off the message
//! path and answered by the trace actions.
//!
//! Every message that enters an instance gets a MsgId: a device's PUBLISH
//! in the front layer, a SendMessage call in its handler (the id it
//! answers). rumqttd carries no id of ours to the subscribers, so a
//! delivery is matched to its MsgId by what it carries: the publish
//! records (instance, topic, payload) -> MsgId in a table of recent
//! messages ([`RECENT_SLOTS`] slots, a hash of the three picks the slot),
//! and the delivery looks it up. Two messages with the same topic and
//! payload in flight at once are told apart only by time: the later one
//! takes the slot, so deliveries of the earlier one after that are traced
//! under the later MsgId. A delivery whose message is no longer in the
//! table (a retained message delivered after 65,536 newer messages took
//! its slot) is traced with MsgId 0 (`000...0`). An MQTT 5 client's
//! PUBLISH that names its topic by alias alone is traced under the topic
//! the alias stands for (the front layer keeps the client's aliases).
//!
//! - The front layer hands events to a [`Tracer`] without waiting: a
//!   bounded queue ([`QUEUE`] events) to one writer thread. When the queue
//!   is full (the disk cannot keep up) an event is dropped and counted
//!   (`mqgate_trace_events_dropped_total`), never the message or the
//!   connection it describes.
//! - The writer sleeps [`BATCH_INTERVAL`] between batches (senders never
//!   wake it) and commits what has queued in one transaction (SQLite,
//!   `storage.dir/traces.sqlite3`, WAL, `synchronous=NORMAL`): a crash of
//!   the process loses the batch being gathered (at most
//!   [`BATCH_INTERVAL`] of events) and what was queued, never a committed
//!   batch, and never corrupts the store. Device events are one row each;
//!   message events, which come at the message rate, are packed one row
//!   per client per batch ([`rows`]), found by client and by MsgId.
//! - Every [`SWEEP_INTERVAL`] the writer deletes events older than
//!   `[trace] retention_hours` and, while the database is larger than
//!   `[trace] max_bytes`, the oldest events.
//!
//! Event names follow the Tea SDK's documented values ([`events`]); times
//! are answered as `YYYY-MM-DD HH:MM:SS.mmm` in UTC.

pub mod events;
pub mod query;
pub mod rows;
pub mod store;

pub use events::{DeviceAction, DeviceEvent, EventNames, MessageAction, MessageEvent};
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
    /// Events handed to the writer and not yet taken by it: when the
    /// queue is full, an event is counted dropped before it is even built.
    queued: Arc<AtomicU64>,
    /// The writer thread, unparked by a flush.
    writer: Option<std::thread::Thread>,
    ids: MsgIds,
    recent: Recent,
}

/// Slots of the table of recent messages.
pub const RECENT_SLOTS: usize = 1 << 16;

/// MsgIds: 128 bits, the time the message entered (48 bits of Unix
/// milliseconds), then 40 random bits drawn at start, then a 40-bit
/// counter. Time first so that the store's index of MsgIds is swept by
/// range (see [`msg_ids_from`]); the random bits tell apart two mqgate
/// processes (a restart, another node) within one millisecond; the
/// counter, messages within one.
#[derive(Debug)]
struct MsgIds {
    run: u128,
    next: AtomicU64,
}

const MSG_ID_TIME_SHIFT: u32 = 80;
const MSG_ID_COUNTER_BITS: u32 = 40;

impl Default for MsgIds {
    fn default() -> Self {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        let random = u64::from_be_bytes(bytes) & ((1 << 40) - 1);
        MsgIds {
            run: u128::from(random) << MSG_ID_COUNTER_BITS,
            next: AtomicU64::new(1),
        }
    }
}

impl MsgIds {
    /// A new MsgId for a message entering at `now_ms` (never 0, which
    /// means "not known": the time is never 0).
    fn next(&self, now_ms: i64) -> u128 {
        let counter = self.next.fetch_add(1, Ordering::Relaxed) & ((1 << MSG_ID_COUNTER_BITS) - 1);
        msg_ids_from(now_ms.max(1)) | self.run | u128::from(counter)
    }
}

/// The lowest MsgId of a message that entered at `ms` or later.
pub fn msg_ids_from(ms: i64) -> u128 {
    u128::from(ms.clamp(0, (1 << 48) - 1) as u64) << MSG_ID_TIME_SHIFT
}

/// (instance, topic, payload) -> MsgId of the latest such message, in a
/// direct-mapped table (see the module's notes).
#[derive(Debug)]
struct Recent {
    slots: Vec<std::sync::Mutex<(u64, u128)>>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            slots: (0..RECENT_SLOTS)
                .map(|_| std::sync::Mutex::new((0, 0)))
                .collect(),
        }
    }
}

impl Recent {
    fn key(instance_id: &str, topic: &[u8], payload: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        instance_id.hash(&mut hasher);
        topic.hash(&mut hasher);
        payload.hash(&mut hasher);
        hasher.finish()
    }

    fn slot(&self, key: u64) -> std::sync::MutexGuard<'_, (u64, u128)> {
        self.slots[(key as usize) % RECENT_SLOTS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, key: u64, msg_id: u128) {
        *self.slot(key) = (key, msg_id);
    }

    fn find(&self, key: u64) -> u128 {
        let slot = self.slot(key);
        if slot.0 == key { slot.1 } else { 0 }
    }
}

impl Tracer {
    /// A tracer that records nothing (`[trace] enabled = false`).
    pub fn off() -> Arc<Tracer> {
        Arc::new(Tracer::default())
    }

    /// A message entered the instance: gives it a MsgId, remembers it for
    /// its deliveries, and records the publish. (With tracing off: a fresh
    /// id, nothing recorded.)
    pub fn published(
        &self,
        names: &EventNames,
        action: MessageAction,
        topic: &[u8],
        payload: &[u8],
        qos: u8,
    ) -> u128 {
        let entered = self.entering(&names.instance_id, topic, payload);
        self.record_publish(&entered, names, action, payload.len(), qos);
        entered.msg_id
    }

    /// A message is about to enter the instance: its MsgId, remembered
    /// for its deliveries (before the broker has it, so that no push can
    /// come first). Its publish is recorded by [`Tracer::record_publish`]
    /// once the broker took it.
    pub fn entering<'a>(
        &self,
        instance_id: &'a str,
        topic: &'a [u8],
        payload: &[u8],
    ) -> Entering<'a> {
        let time_ms = now_ms();
        let msg_id = self.ids.next(time_ms);
        if self.queue.is_some() {
            self.recent
                .remember(Recent::key(instance_id, topic, payload), msg_id);
        }
        Entering {
            topic,
            msg_id,
            time_ms,
        }
    }

    /// A message another node named (`SendMessage` taken there, for an
    /// instance this node serves) is about to enter: its MsgId remembered
    /// for its deliveries here; its publish is that node's to record.
    pub fn entering_named(&self, instance_id: &str, topic: &[u8], payload: &[u8], msg_id: u128) {
        if self.queue.is_some() {
            self.recent
                .remember(Recent::key(instance_id, topic, payload), msg_id);
        }
    }

    /// Records the publish of a message that [`Tracer::entering`] named,
    /// by the client `names` name.
    pub fn record_publish(
        &self,
        entered: &Entering<'_>,
        names: &EventNames,
        action: MessageAction,
        size: usize,
        qos: u8,
    ) {
        if self.queue.is_none() || !self.has_room() {
            return;
        }
        let mut event = names.event(entered.msg_id, action, entered.time_ms, size, qos);
        event.topic = String::from_utf8_lossy(entered.topic).into_owned();
        self.message(event);
    }

    /// The MsgId of a message about to be pushed to a subscriber (0: not
    /// known).
    pub fn msg_id_of(&self, instance_id: &str, topic: &[u8], payload: &[u8]) -> u128 {
        if self.queue.is_none() {
            return 0;
        }
        self.recent.find(Recent::key(instance_id, topic, payload))
    }

    /// Records a message event (a delivery, an acknowledgement, a drop).
    pub fn message(&self, event: MessageEvent) {
        let Some(queue) = &self.queue else {
            return;
        };
        self.send(queue, Queued::Message(event));
    }

    pub(crate) fn new(
        queue: std::sync::mpsc::SyncSender<Queued>,
        queued: Arc<AtomicU64>,
        writer: std::thread::Thread,
    ) -> Arc<Tracer> {
        Arc::new(Tracer {
            queue: Some(queue),
            queued,
            writer: Some(writer),
            ..Tracer::default()
        })
    }

    /// Whether the writer's queue has room (checked before building an
    /// event; counts the event dropped if not).
    pub fn has_room(&self) -> bool {
        if self.queued.load(Ordering::Relaxed) >= QUEUE as u64 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn send(&self, queue: &std::sync::mpsc::SyncSender<Queued>, item: Queued) {
        match queue.try_send(item) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                self.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
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
        self.send(queue, Queued::Device(event));
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
        if let Some(writer) = &self.writer {
            writer.unpark();
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

/// A message named by [`Tracer::entering`], its publish not yet recorded.
#[derive(Debug)]
pub struct Entering<'a> {
    topic: &'a [u8],
    pub msg_id: u128,
    time_ms: i64,
}

/// What the writer receives.
#[derive(Debug)]
pub(crate) enum Queued {
    Device(DeviceEvent),
    Message(MessageEvent),
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
