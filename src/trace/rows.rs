//! Message events as the store keeps them: grouped into one row per client
//! per batch, the row's events packed in a blob.
//!
//! Why not one row per event: every message makes at least three events
//! (its publish, its push, its acknowledgement), and each event found by
//! client and by MsgId would cost three B-tree inserts (the row and two
//! indexes), about 2 µs per event, 6.6 µs per message, more than a tenth
//! of what relaying the message costs. Packed, a batch costs one row (and
//! one client-index entry) per client active in it, and one MsgId-index
//! entry per (message, row) pair: measured at 1.5 µs per message in the
//! same layout.
//!
//! A row's blob is a sequence of records, in the order the events
//! arrived:
//!
//! ```text
//! msg_id  16 bytes, big-endian
//! action  1 byte  (MessageAction::code_byte)
//! time    varint, milliseconds after the row's first_ms
//! ip      varint length, then UTF-8 (empty but for a publish)
//! topic   varint length, then UTF-8
//! size    varint
//! qos     1 byte
//! ```
//!
//! A row spans at most [`ROW_SPAN_MS`] of time, so a query for a time
//! window finds every row that may hold its events by `first_ms` alone.

use super::events::{MessageAction, MessageEvent};

/// Longest time between a row's first and last event, in milliseconds: a
/// client's events of one batch that span more are split into rows.
pub const ROW_SPAN_MS: i64 = 5_000;

/// One event read back from a row (the row gives its instance and
/// client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowEvent {
    pub msg_id: u128,
    pub action: MessageAction,
    pub time_ms: i64,
    pub ip: String,
    pub topic: String,
    pub size: u32,
    pub qos: u8,
}

/// A row about to be written: one client's events of one batch.
#[derive(Debug, Default)]
pub struct NewRow<'a> {
    pub instance_id: &'a str,
    pub client_id: &'a str,
    pub first_ms: i64,
    pub last_ms: i64,
    pub events: Vec<&'a MessageEvent>,
}

impl NewRow<'_> {
    /// The packed events.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.events.len() * 48);
        for event in &self.events {
            out.extend_from_slice(&event.msg_id.to_be_bytes());
            out.push(event.action.code_byte());
            put_varint(&mut out, (event.time_ms - self.first_ms).max(0) as u64);
            // The address only with a publish (a delivery's is the
            // subscriber's, known from its connect).
            let ip = if event.action.publishes() {
                &*event.ip
            } else {
                ""
            };
            put_bytes(&mut out, ip.as_bytes());
            put_bytes(&mut out, event.topic.as_bytes());
            put_varint(&mut out, u64::from(event.size));
            out.push(event.qos);
        }
        out
    }

    /// The distinct MsgIds in the row (0, "not known", left out).
    pub fn msg_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self
            .events
            .iter()
            .map(|e| e.msg_id)
            .filter(|&id| id != 0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Groups a batch's events into rows: by (instance, client), in arrival
/// order, a new row whenever one would span more than [`ROW_SPAN_MS`].
pub fn group(events: &[MessageEvent]) -> Vec<NewRow<'_>> {
    let mut rows: Vec<NewRow<'_>> = Vec::new();
    let mut open: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for event in events {
        let key = (&*event.instance_id, &*event.client_id);
        let fits = open.get(&key).is_some_and(|&at| {
            let row = &rows[at];
            event.time_ms.max(row.last_ms) - event.time_ms.min(row.first_ms) <= ROW_SPAN_MS
        });
        if !fits {
            open.insert(key, rows.len());
            rows.push(NewRow {
                instance_id: key.0,
                client_id: key.1,
                first_ms: event.time_ms,
                last_ms: event.time_ms,
                events: Vec::new(),
            });
        }
        let row = &mut rows[open[&key]];
        row.first_ms = row.first_ms.min(event.time_ms);
        row.last_ms = row.last_ms.max(event.time_ms);
        row.events.push(event);
    }
    rows
}

/// Why a row's blob could not be read (a damaged database: the row is
/// skipped, the rest answered).
#[derive(Debug, thiserror::Error)]
#[error("a trace row is damaged: {0}")]
pub struct DamagedRow(&'static str);

/// Reads a row's events back.
pub fn decode(first_ms: i64, mut blob: &[u8]) -> Result<Vec<RowEvent>, DamagedRow> {
    let mut events = Vec::new();
    while !blob.is_empty() {
        let msg_id = u128::from_be_bytes(take(&mut blob, 16)?.try_into().expect("16 bytes"));
        let action = MessageAction::from_code_byte(take(&mut blob, 1)?[0])
            .ok_or(DamagedRow("unknown action"))?;
        let time_ms = first_ms.saturating_add(get_varint(&mut blob)? as i64);
        let ip = get_string(&mut blob)?;
        let topic = get_string(&mut blob)?;
        let size = u32::try_from(get_varint(&mut blob)?).map_err(|_| DamagedRow("size"))?;
        let qos = take(&mut blob, 1)?[0];
        events.push(RowEvent {
            msg_id,
            action,
            time_ms,
            ip,
            topic,
            size,
            qos,
        });
    }
    Ok(events)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn take<'a>(blob: &mut &'a [u8], n: usize) -> Result<&'a [u8], DamagedRow> {
    if blob.len() < n {
        return Err(DamagedRow("cut short"));
    }
    let (head, rest) = blob.split_at(n);
    *blob = rest;
    Ok(head)
}

fn get_varint(blob: &mut &[u8]) -> Result<u64, DamagedRow> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(blob, 1)?[0];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DamagedRow("varint too long"))
}

fn get_string(blob: &mut &[u8]) -> Result<String, DamagedRow> {
    let len = usize::try_from(get_varint(blob)?).map_err(|_| DamagedRow("length"))?;
    let bytes = take(blob, len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DamagedRow("not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: &str, time_ms: i64, msg_id: u128, action: MessageAction) -> MessageEvent {
        MessageEvent {
            instance_id: "i1".into(),
            msg_id,
            action,
            client_id: client.into(),
            time_ms,
            ip: "10.0.0.1:5000".into(),
            topic: "devices/ü/cmd".into(),
            size: 70_000,
            qos: 1,
        }
    }

    #[test]
    fn a_row_reads_back_what_was_written() {
        let events = vec![
            event("c1", 1_000, u128::MAX, MessageAction::PubMqtt),
            event("c1", 1_003, 7, MessageAction::Ack),
            event("c1", 999, 7, MessageAction::Drop),
        ];
        let rows = group(&events);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].first_ms, rows[0].last_ms), (999, 1_003));
        assert_eq!(rows[0].msg_ids(), vec![7, u128::MAX]);
        let read = decode(rows[0].first_ms, &rows[0].encode()).unwrap();
        let expected: Vec<RowEvent> = events
            .iter()
            .map(|e| RowEvent {
                msg_id: e.msg_id,
                action: e.action,
                time_ms: e.time_ms,
                ip: if e.action.publishes() {
                    e.ip.to_string()
                } else {
                    String::new()
                },
                topic: e.topic.clone(),
                size: e.size,
                qos: e.qos,
            })
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn rows_are_per_client_and_span_at_most_row_span() {
        let events = vec![
            event("c1", 0, 1, MessageAction::PubMqtt),
            event("c2", 0, 1, MessageAction::Sub),
            event("c1", ROW_SPAN_MS, 2, MessageAction::PubMqtt),
            event("c1", ROW_SPAN_MS + 1, 3, MessageAction::PubMqtt),
        ];
        let rows = group(&events);
        let shape: Vec<(&str, usize, i64)> = rows
            .iter()
            .map(|r| (r.client_id, r.events.len(), r.first_ms))
            .collect();
        assert_eq!(
            shape,
            vec![("c1", 2, 0), ("c2", 1, 0), ("c1", 1, ROW_SPAN_MS + 1)]
        );
    }

    #[test]
    fn a_damaged_blob_is_an_error_not_a_panic() {
        let events = vec![event("c1", 5, 9, MessageAction::Sub)];
        let blob = group(&events)[0].encode();
        for cut in 0..blob.len() {
            assert!(decode(0, &blob[..cut]).is_err() || cut == 0);
        }
        let mut bad = blob.clone();
        bad[16] = 200;
        assert!(decode(0, &bad).is_err());
        assert!(decode(0, &[0xff; 40]).is_err());
    }
}
