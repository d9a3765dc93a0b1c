//! The four trace queries as values, so that a node can ask the others of
//! its cluster to run them (`cluster::reach`) and merge what each found.
//!
//! Each node records the events of what it serves: a device's connects and
//! messages on the node that served the instance at the time, a
//! `SendMessage`'s publish on the node that took the call. A trace query
//! on any node runs on every node; the answers are merged by time. For a
//! page, each node returns its first `page × size` events in the query's
//! order and how many it has; the merge takes the requested page of their
//! union.

use super::store::{DeviceTrace, MessageTrace, TraceError, TraceStore};
use serde::{Deserialize, Serialize};

/// The deepest a merged page may reach (`CurrentPage × PageSize`): each
/// node sends that many events.
pub const MAX_MERGED_EVENTS: u32 = 10_000;

/// A trace query, as every node runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum TraceQuery {
    /// `QueryMqttTraceDevice`.
    Device {
        instance_id: String,
        client_id: String,
        range: (i64, i64),
        /// Page `page` (from 1) of `size` events, in order.
        page: u32,
        size: u32,
        reverse: bool,
    },
    /// `QueryMqttTraceMessagePublish`.
    Publishes {
        instance_id: String,
        msg_id: String,
        range: (i64, i64),
    },
    /// `QueryMqttTraceMessageSubscribe`.
    Deliveries {
        instance_id: String,
        msg_id: String,
        client_id: Option<String>,
        range: (i64, i64),
        page: u32,
        size: u32,
        reverse: bool,
    },
    /// `QueryMqttTraceMessageOfClient`.
    ClientMessages {
        instance_id: String,
        client_id: String,
        range: (i64, i64),
        page: u32,
        size: u32,
        reverse: bool,
    },
}

/// What one node found: how many events match, and the first of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum TraceFound {
    Device {
        total: u64,
        events: Vec<DeviceTrace>,
    },
    Messages {
        total: u64,
        events: Vec<MessageTrace>,
    },
}

impl TraceQuery {
    /// Runs the query on this node's store.
    pub fn run(&self, store: &TraceStore) -> Result<TraceFound, TraceError> {
        Ok(match self {
            TraceQuery::Device {
                instance_id,
                client_id,
                range,
                page,
                size,
                reverse,
            } => {
                let (total, events) = store.device_events(
                    instance_id,
                    client_id,
                    *range,
                    (*page, *size),
                    *reverse,
                )?;
                TraceFound::Device { total, events }
            }
            TraceQuery::Publishes {
                instance_id,
                msg_id,
                range,
            } => {
                let events = store.message_publishes(instance_id, msg_id, *range)?;
                TraceFound::Messages {
                    total: events.len() as u64,
                    events,
                }
            }
            TraceQuery::Deliveries {
                instance_id,
                msg_id,
                client_id,
                range,
                page,
                size,
                reverse,
            } => {
                let (total, events) = store.message_deliveries(
                    instance_id,
                    msg_id,
                    client_id.as_deref(),
                    *range,
                    (*page, *size),
                    *reverse,
                )?;
                TraceFound::Messages { total, events }
            }
            TraceQuery::ClientMessages {
                instance_id,
                client_id,
                range,
                page,
                size,
                reverse,
            } => {
                let (total, events) = store.client_messages(
                    instance_id,
                    client_id,
                    *range,
                    (*page, *size),
                    *reverse,
                )?;
                TraceFound::Messages { total, events }
            }
        })
    }

    /// The page asked for: (page from 1, size). A query without pages
    /// asks for its first 100.
    pub fn page(&self) -> (u32, u32) {
        match self {
            TraceQuery::Publishes { .. } => (1, 100),
            TraceQuery::Device { page, size, .. }
            | TraceQuery::Deliveries { page, size, .. }
            | TraceQuery::ClientMessages { page, size, .. } => (*page, *size),
        }
    }

    /// The same query for its first `events` events: what each node
    /// answers when the pages are merged.
    pub fn from_the_first(&self, events: u32) -> TraceQuery {
        let mut whole = self.clone();
        match &mut whole {
            TraceQuery::Publishes { .. } => {}
            TraceQuery::Device { page, size, .. }
            | TraceQuery::Deliveries { page, size, .. }
            | TraceQuery::ClientMessages { page, size, .. } => {
                (*page, *size) = (1, events);
            }
        }
        whole
    }

    fn reverse(&self) -> bool {
        match self {
            TraceQuery::Publishes { .. } => false,
            TraceQuery::Device { reverse, .. }
            | TraceQuery::Deliveries { reverse, .. }
            | TraceQuery::ClientMessages { reverse, .. } => *reverse,
        }
    }
}

/// What every node found for `query`'s first events
/// ([`TraceQuery::from_the_first`]), merged: the total of all, and the
/// page `query` asks for of their events in time order (newest first with
/// `reverse`). A node's answer of the wrong kind is left out.
pub fn merge(query: &TraceQuery, found: Vec<TraceFound>) -> TraceFound {
    let (page, size) = query.page();
    let skip = (page.saturating_sub(1) as usize).saturating_mul(size as usize);
    let reverse = query.reverse();
    let mut total = 0;
    match query {
        TraceQuery::Device { .. } => {
            let lists = found
                .into_iter()
                .filter_map(|f| match f {
                    TraceFound::Device { total: t, events } => {
                        total += t;
                        Some(events)
                    }
                    TraceFound::Messages { .. } => None,
                })
                .collect();
            let events = page_of(lists, reverse, skip, size, |e: &DeviceTrace| e.time_ms);
            TraceFound::Device { total, events }
        }
        _ => {
            let lists = found
                .into_iter()
                .filter_map(|f| match f {
                    TraceFound::Messages { total: t, events } => {
                        total += t;
                        Some(events)
                    }
                    TraceFound::Device { .. } => None,
                })
                .collect();
            let mut events = page_of(lists, reverse, skip, size, |e: &MessageTrace| e.time_ms);
            if let TraceQuery::Publishes { .. } = query {
                // As one node answers: at most 100.
                events.truncate(100);
                total = total.min(100);
            }
            TraceFound::Messages { total, events }
        }
    }
}

/// The events of every node's list in time order (by time, node, recorded
/// order; newest first with `reverse`), `skip` of them left out and at
/// most `size` kept.
fn page_of<T>(
    lists: Vec<Vec<T>>,
    reverse: bool,
    skip: usize,
    size: u32,
    time: impl Fn(&T) -> i64,
) -> Vec<T> {
    let mut keys = keys(&lists, reverse, time);
    keys.sort_unstable();
    if reverse {
        keys.reverse();
    }
    let kept: Vec<(usize, usize)> = keys
        .into_iter()
        .skip(skip)
        .take(size as usize)
        .map(|(_, node, _, i)| (node, i))
        .collect();
    let mut lists: Vec<Vec<Option<T>>> = lists
        .into_iter()
        .map(|list| list.into_iter().map(Some).collect())
        .collect();
    kept.into_iter()
        .filter_map(|(node, i)| lists[node][i].take())
        .collect()
}

/// (time, node, recorded order, index) of every event of every node's
/// list. A reversed query's list comes newest first: its recorded order is
/// the index turned around, so that events of the same millisecond keep
/// the order they were recorded in.
fn keys<T>(
    lists: &[Vec<T>],
    reverse: bool,
    time: impl Fn(&T) -> i64,
) -> Vec<(i64, usize, usize, usize)> {
    let mut keys = Vec::new();
    for (node, events) in lists.iter().enumerate() {
        for (i, event) in events.iter().enumerate() {
            let recorded = if reverse { events.len() - 1 - i } else { i };
            keys.push((time(event), node, recorded, i));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::events::DeviceAction;

    fn device(time_ms: i64, info: &str) -> DeviceTrace {
        DeviceTrace {
            time_ms,
            channel_id: 1,
            action: DeviceAction::Connect,
            info: info.into(),
        }
    }

    fn query(page: u32, size: u32, reverse: bool) -> TraceQuery {
        TraceQuery::Device {
            instance_id: "i".into(),
            client_id: "c".into(),
            range: (0, 100),
            page,
            size,
            reverse,
        }
    }

    fn infos(found: &TraceFound) -> (u64, Vec<String>) {
        match found {
            TraceFound::Device { total, events } => {
                (*total, events.iter().map(|e| e.info.clone()).collect())
            }
            TraceFound::Messages { .. } => panic!("device events expected"),
        }
    }

    #[test]
    fn the_nodes_events_merge_in_time_order_a_page_at_a_time() {
        let n1 = TraceFound::Device {
            total: 3,
            events: vec![device(10, "a"), device(30, "c"), device(50, "e")],
        };
        let n2 = TraceFound::Device {
            total: 2,
            events: vec![device(20, "b"), device(40, "d")],
        };
        let found = vec![n1.clone(), n2.clone()];
        assert_eq!(
            infos(&merge(&query(1, 2, false), found.clone())),
            (5, vec!["a".into(), "b".into()])
        );
        assert_eq!(
            infos(&merge(&query(3, 2, false), found.clone())),
            (5, vec!["e".into()])
        );
        assert_eq!(infos(&merge(&query(4, 2, false), found)), (5, vec![]));
        assert_eq!(query(3, 2, false).from_the_first(6), query(1, 6, false));
        // Reversed: each node answers newest first; the merge too.
        let n1 = TraceFound::Device {
            total: 3,
            events: vec![device(50, "e"), device(30, "c"), device(10, "a")],
        };
        let n2 = TraceFound::Device {
            total: 2,
            events: vec![device(40, "d"), device(20, "b")],
        };
        assert_eq!(
            infos(&merge(&query(1, 3, true), vec![n1, n2])),
            (5, vec!["e".into(), "d".into(), "c".into()])
        );
    }

    #[test]
    fn a_query_round_trips_through_its_text() {
        let q = TraceQuery::Deliveries {
            instance_id: "i".into(),
            msg_id: "0123".into(),
            client_id: None,
            range: (1, 2),
            page: 2,
            size: 20,
            reverse: true,
        };
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<TraceQuery>(&text).unwrap(), q);
    }
}
