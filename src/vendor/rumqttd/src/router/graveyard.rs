use std::collections::{HashMap, HashSet, VecDeque};

use super::{
    scheduler::{PauseReason, Tracker},
    ConnectionEvents,
};

pub struct Graveyard {
    connections: HashMap<String, SavedState>,
    /// mqgate: how many saved sessions subscribe to each filter, so that
    /// the router keeps a filter's log while a session may come back for
    /// it, and drops it otherwise (see PATCHES.md).
    holders: HashMap<String, usize>,
}

impl Graveyard {
    pub fn new() -> Graveyard {
        Graveyard {
            connections: HashMap::new(),
            holders: HashMap::new(),
        }
    }

    /// Add a new connection.
    /// Return tracker of previous connection if connection id already exists
    pub fn retrieve(&mut self, id: &str) -> Option<SavedState> {
        let saved = self.connections.remove(id)?;
        if let Some(state) = &saved.session_state {
            for filter in &state.subscriptions {
                if let Some(n) = self.holders.get_mut(filter) {
                    *n -= 1;
                    if *n == 0 {
                        self.holders.remove(filter);
                    }
                }
            }
        }
        Some(saved)
    }

    /// mqgate: whether a saved session subscribes to `filter`.
    pub fn holds(&self, filter: &str) -> bool {
        self.holders.contains_key(filter)
    }

    /// Save connection tracker
    pub fn save_state(
        &mut self,
        mut tracker: Tracker,
        subscriptions: HashSet<String>,
        metrics: ConnectionEvents,
        unacked_pubrels: VecDeque<u16>,
    ) {
        tracker.pause(PauseReason::Busy);
        let id = tracker.id.clone();
        // A session saved twice under one client id: the older one's
        // subscriptions are no longer held by it.
        drop(self.retrieve(&id));
        for filter in &subscriptions {
            *self.holders.entry(filter.clone()).or_default() += 1;
        }

        let session_state = SessionState {
            tracker,
            subscriptions,
            unacked_pubrels,
        };

        self.connections.insert(
            id,
            SavedState {
                session_state: Some(session_state),
                metrics,
            },
        );
    }

    /// Save only metrics for connection
    pub fn save_metrics(&mut self, id: String, metrics: ConnectionEvents) {
        drop(self.retrieve(&id));
        self.connections.insert(
            id,
            SavedState {
                session_state: None,
                metrics,
            },
        );
    }
}

#[derive(Debug)]
pub struct SavedState {
    pub session_state: Option<SessionState>,
    pub metrics: ConnectionEvents,
}

#[derive(Debug)]
pub struct SessionState {
    pub tracker: Tracker,
    pub subscriptions: HashSet<String>,
    // used for pubrel in qos2
    pub unacked_pubrels: VecDeque<u16>,
}
