//! Where a queued call hears whether its batch became durable: one slot per
//! call in flight, taken from a free list and given back, so that waiting
//! for the writer allocates nothing per call (a `oneshot` channel would
//! allocate its shared state every time).
//!
//! A slot's life: the caller takes it ([`Outcomes::take`], state
//! `WAITING`), queues its call naming the slot, and waits on the slot's
//! [`Notify`]; the writer sets the outcome (`DURABLE` or `FAILED`) and
//! notifies; the caller reads the outcome and gives the slot back. If the
//! caller goes away first (its future dropped), it marks the slot
//! `ABANDONED` and the writer gives it back once it has an outcome; if the
//! outcome came first, the caller gives it back itself. Exactly one of the
//! two frees a slot, decided by one compare-and-swap.
//!
//! Slots are made in chunks of [`CHUNK`], when the free list runs out, up
//! to [`MAX_SLOTS`] (more calls waiting at once than that wait in the
//! ordinary way, for a slot to come free).

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::Notify;

const FREE: u8 = 0;
const WAITING: u8 = 1;
const DURABLE: u8 = 2;
const FAILED: u8 = 3;
const ABANDONED: u8 = 4;

/// Slots per chunk.
const CHUNK: usize = 1024;
/// Most calls waiting at once with a slot of their own.
const MAX_SLOTS: usize = 128 * CHUNK;
const CHUNKS: usize = MAX_SLOTS / CHUNK;

struct Slot {
    state: AtomicU8,
    notify: Notify,
}

/// The slots, and the free list.
pub struct Outcomes {
    chunks: [OnceLock<Box<[Slot]>>; CHUNKS],
    free: Mutex<FreeList>,
    /// Signalled when a slot is given back to an empty free list that has
    /// no room to grow.
    freed: Notify,
}

struct FreeList {
    indices: Vec<u32>,
    chunks_made: usize,
}

/// A slot taken by a caller; gives itself back when dropped (or leaves
/// that to the writer, if the call is still in its hands).
pub struct Ticket<'a> {
    outcomes: &'a Outcomes,
    index: u32,
    /// Whether the call naming this slot reached the writer's queue.
    queued: bool,
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            free: Mutex::new(FreeList {
                indices: Vec::new(),
                chunks_made: 0,
            }),
            freed: Notify::new(),
        }
    }
}

impl Outcomes {
    fn slot(&self, index: u32) -> &Slot {
        let index = index as usize;
        let chunk = self.chunks[index / CHUNK]
            .get()
            .expect("a slot's chunk is made before its index is handed out");
        &chunk[index % CHUNK]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FreeList> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free slot, set to wait for an outcome.
    pub async fn take(&self) -> Ticket<'_> {
        loop {
            let freed = self.freed.notified();
            if let Some(index) = self.try_take() {
                self.slot(index).state.store(WAITING, Ordering::Release);
                return Ticket {
                    outcomes: self,
                    index,
                    queued: false,
                };
            }
            freed.await;
        }
    }

    fn try_take(&self) -> Option<u32> {
        let mut free = self.lock();
        if let Some(index) = free.indices.pop() {
            return Some(index);
        }
        if free.chunks_made == CHUNKS {
            return None;
        }
        let chunk = free.chunks_made;
        let slots = (0..CHUNK)
            .map(|_| Slot {
                state: AtomicU8::new(FREE),
                notify: Notify::new(),
            })
            .collect();
        let _ = self.chunks[chunk].set(slots);
        free.chunks_made += 1;
        let first = (chunk * CHUNK) as u32;
        free.indices.extend((first + 1..first + CHUNK as u32).rev());
        Some(first)
    }

    fn give_back(&self, index: u32) {
        self.slot(index).state.store(FREE, Ordering::Release);
        let mut free = self.lock();
        free.indices.push(index);
        let was_empty = free.indices.len() == 1;
        drop(free);
        if was_empty {
            self.freed.notify_waiters();
        }
    }

    /// The writer's side: the call in slot `index` is durable (or not).
    /// Wakes its caller, or frees the slot if the caller went away.
    pub fn settle(&self, index: u32, durable: bool) {
        let slot = self.slot(index);
        let outcome = if durable { DURABLE } else { FAILED };
        match slot
            .state
            .compare_exchange(WAITING, outcome, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => slot.notify.notify_one(),
            // ABANDONED: nobody will read it.
            Err(_) => self.give_back(index),
        }
    }
}

impl Ticket<'_> {
    /// The slot's index, for the queued call to carry.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The call naming this slot is in the writer's queue: from now on the
    /// writer settles it.
    pub fn queued(&mut self) {
        self.queued = true;
    }

    /// Waits for the writer's outcome: `true` when the call is durable.
    pub async fn outcome(self) -> bool {
        let slot = self.outcomes.slot(self.index);
        loop {
            // A permit left by an earlier user of this slot wakes this
            // wait at once; the state, checked again, sends it back.
            let notified = slot.notify.notified();
            match slot.state.load(Ordering::Acquire) {
                DURABLE => return true,
                FAILED => return false,
                _ => notified.await,
            }
        }
        // Dropping `self` gives the slot back (state no longer WAITING).
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let slot = self.outcomes.slot(self.index);
        // Queued and still waiting: the writer holds the call and will free
        // the slot. Otherwise (an outcome, or never queued) it is this
        // ticket's to give back.
        let abandoned = self.queued
            && slot
                .state
                .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if !abandoned {
            self.outcomes.give_back(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_hears_its_outcome_and_the_slot_is_reused() {
        let outcomes = Outcomes::default();
        let mut ticket = outcomes.take().await;
        ticket.queued();
        let index = ticket.index();
        outcomes.settle(index, true);
        assert!(ticket.outcome().await);
        let mut again = outcomes.take().await;
        again.queued();
        assert_eq!(again.index(), index, "the freed slot comes back first");
        outcomes.settle(again.index(), false);
        assert!(!again.outcome().await);
    }

    #[tokio::test]
    async fn a_caller_that_went_away_leaves_the_slot_to_the_writer() {
        let outcomes = Outcomes::default();
        let mut ticket = outcomes.take().await;
        ticket.queued();
        let index = ticket.index();
        drop(ticket); // the caller's future dropped while its call is queued
        assert_eq!(outcomes.lock().indices.len(), CHUNK - 1, "not free yet");
        outcomes.settle(index, true);
        assert_eq!(outcomes.lock().indices.len(), CHUNK, "freed by the writer");
        // Reused; the writer's notification, which nobody took, wakes the
        // next caller once, and is no outcome for it.
        let mut next = outcomes.take().await;
        next.queued();
        assert_eq!(next.index(), index);
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), next.outcome()).await;
        assert!(early.is_err(), "a stale notification is no outcome");
        // That caller went away too: the writer frees the slot again.
        outcomes.settle(index, true);
        assert_eq!(outcomes.lock().indices.len(), CHUNK);
    }

    #[tokio::test]
    async fn a_ticket_never_queued_is_given_back_by_its_caller() {
        let outcomes = Outcomes::default();
        drop(outcomes.take().await); // e.g. the queue was closed
        assert_eq!(outcomes.lock().indices.len(), CHUNK);
    }

    #[tokio::test]
    async fn outcomes_reach_callers_on_other_tasks() {
        let outcomes = std::sync::Arc::new(Outcomes::default());
        let mut waiting = Vec::new();
        let mut indices = Vec::new();
        for _ in 0..3000 {
            let outcomes = outcomes.clone();
            let (sent, index) = tokio::sync::oneshot::channel();
            waiting.push(tokio::spawn(async move {
                let mut ticket = outcomes.take().await;
                ticket.queued();
                let _ = sent.send(ticket.index());
                ticket.outcome().await
            }));
            indices.push(index);
        }
        let mut all = Vec::new();
        for index in indices {
            all.push(index.await.unwrap());
        }
        for (n, index) in all.iter().enumerate() {
            outcomes.settle(*index, n % 2 == 0);
        }
        for (n, task) in waiting.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), n % 2 == 0);
        }
        let free = outcomes.lock();
        assert_eq!(free.chunks_made, 3, "3000 callers at once: 3 chunks");
        assert_eq!(free.indices.len(), 3 * CHUNK, "every slot given back");
    }
}
