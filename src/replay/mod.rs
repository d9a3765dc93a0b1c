//! Replay protection: a signed request is accepted once, and only while its
//! timestamp is within the window (15 minutes either way by default).
//!
//! * The timestamp bounds how long a nonce must be remembered: once a
//!   request's timestamp leaves the window, the request is refused for its
//!   age, so its nonce can be forgotten.
//! * Memory is bounded: nonces are kept as 128-bit keyed hashes of
//!   (AccessKeyId, SignatureNonce), in generations by expiry that are
//!   dropped whole ([`nonces`]: O(1) per request, no sweep); when the set is
//!   full of live nonces new requests are refused (`ServiceUnavailable`)
//!   rather than forgetting a live nonce, which would let its request be
//!   replayed.
//! * Restarts. Nonces live in memory, so every request a previous run may
//!   have accepted must be refused by its timestamp alone:
//!   - the **fence**: requests signed before it are refused
//!     (`InvalidTimeStamp.Expired`, saying so). It is this run's first
//!     second if the previous run recorded its stop in an earlier second
//!     (or there was none); otherwise (killed, crashed, or stopped in this
//!     very second) it is the next second, and the server waits for it
//!     before it serves (at most 1 s). `Timestamp` has a resolution of a
//!     second: a request signed in the second a killed run died in may
//!     have been accepted by it.
//!   - requests signed **ahead** of this server's clock (a later second
//!     than now) lie beyond any fence: their nonces are committed to the
//!     journal ([`journal`], `storage.dir/replay.sqlite3`) before the answer
//!     and remembered again at the next start.
//!
//!   The cost: a client whose clock runs behind this server's by `d`
//!   seconds sees its requests refused for the first `d` seconds after a
//!   restart, with a message that says why; a client whose clock runs
//!   ahead waits for one fsync per call (grouped with its peers'). If the
//!   server's clock is stepped back across a crash, requests signed in the
//!   repeated seconds are not covered.

pub mod journal;
pub mod nonces;

use crate::error::{ApiError, ErrorCode};
use chrono::{DateTime, SecondsFormat, Utc};
use journal::{Entry, Journal, PreviousRun};
use nonces::NonceSet;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::Mutex;

pub struct ReplayGuard {
    window_secs: i64,
    /// Requests signed before this unix second are refused (see module
    /// docs).
    fence: i64,
    hashers: (RandomState, RandomState),
    nonces: Mutex<NonceSet>,
    /// Absent: memory only (tests, benches).
    journal: Option<Journal>,
}

/// A nonce that must be made durable before the request is answered
/// ([`ReplayGuard::persist`]).
#[must_use = "a request signed ahead of the clock is answered only once its nonce is durable"]
#[derive(Debug)]
pub struct MustPersist(Entry, i64);

/// Generations of the nonce set are this fraction of the window wide.
const GENERATIONS_PER_WINDOW: i64 = 2;

impl ReplayGuard {
    /// A guard in memory only, whose fence is `started_at` truncated to the
    /// second (the resolution of `Timestamp`): for tests and benches, where
    /// no earlier run exists.
    pub fn new(window_secs: u64, started_at: DateTime<Utc>, capacity: usize) -> ReplayGuard {
        let window_secs = window_secs as i64;
        ReplayGuard {
            window_secs,
            fence: started_at.timestamp(),
            hashers: (RandomState::new(), RandomState::new()),
            nonces: Mutex::new(NonceSet::new(
                (window_secs / GENERATIONS_PER_WINDOW).max(1),
                capacity,
            )),
            journal: None,
        }
    }

    /// The guard of a server whose state lives in `dir`: the fence follows
    /// how the previous run ended, and the nonces it committed are
    /// remembered again. Serve no request before [`ReplayGuard::serve_from`].
    pub fn open(
        dir: &Path,
        window_secs: u64,
        capacity: usize,
        now: DateTime<Utc>,
    ) -> Result<ReplayGuard, String> {
        let opened = Journal::open(dir, now.timestamp_millis())?;
        let mut guard = ReplayGuard::new(window_secs, now, capacity);
        guard.fence = fence_after(opened.previous, now);
        {
            let mut set = guard.nonces.lock().unwrap_or_else(|e| e.into_inner());
            for entry in &opened.live {
                let key = guard.key(&entry.access_key_id, &entry.nonce);
                // Full: the journal outlived a smaller capacity; refusing
                // everything until they expire is what a full set does.
                let _ = set.insert(key, entry.forget_after);
            }
        }
        guard.journal = Some(opened.journal);
        Ok(guard)
    }

    /// The first instant a request may be served: the fence.
    pub fn serve_from(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.fence, 0).unwrap_or_default()
    }

    /// Checks the timestamp and records the nonce; an error says which rule
    /// the request broke. `Some`: the request was signed ahead of the clock
    /// and its nonce must be made durable ([`ReplayGuard::persist`]) before
    /// it is answered.
    pub fn check(
        &self,
        access_key_id: &str,
        timestamp: &str,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<MustPersist>, ApiError> {
        let signed_at = parse_timestamp(timestamp)?;
        let skew = (now - signed_at).num_seconds();
        if skew.abs() > self.window_secs {
            return Err(ApiError::new(
                ErrorCode::InvalidTimeStampExpired,
                format!(
                    "Specified time stamp or date value is expired: the request was signed at {}, the server time is {}, and requests are accepted within {} seconds of it. Check the client's clock and sign the request again.",
                    iso(signed_at),
                    iso(now),
                    self.window_secs
                ),
            ));
        }
        if signed_at.timestamp() < self.fence {
            return Err(ApiError::new(
                ErrorCode::InvalidTimeStampExpired,
                format!(
                    "Specified time stamp or date value is expired: the request was signed at {}, before this service started at {}; a request signed before a restart is not accepted after it. Sign the request again.",
                    iso(signed_at),
                    iso(self.serve_from())
                ),
            ));
        }
        if nonce.is_empty() {
            return Err(ApiError::invalid(
                "SignatureNonce",
                "it is empty; send a unique random value with every request",
            ));
        }
        let key = self.key(access_key_id, nonce);
        let forget_after = signed_at.timestamp() + self.window_secs + 1;
        let now_secs = now.timestamp();
        {
            let mut set = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
            set.forget_expired(now_secs);
            if set.contains(key) {
                return Err(self.nonce_used(nonce));
            }
            if set.insert(key, forget_after).is_err() {
                return Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "The request has failed due to a temporary failure of the server: too many signed requests within the replay window to remember another nonce. Try again later.",
                ));
            }
        }
        // Signed in a later second than now: no restart's fence covers it.
        let ahead = signed_at.timestamp() > now_secs;
        Ok((ahead && self.journal.is_some()).then(|| {
            MustPersist(
                Entry {
                    access_key_id: access_key_id.to_string(),
                    nonce: nonce.to_string(),
                    forget_after,
                },
                now_secs,
            )
        }))
    }

    /// How long after `now` a request signed at `timestamp` (which
    /// [`ReplayGuard::check`] accepted) can still arrive within the window:
    /// as long as its nonce must be remembered. Zero for a timestamp that
    /// does not parse (`check` refused it already).
    pub fn remember_for(&self, timestamp: &str, now: DateTime<Utc>) -> std::time::Duration {
        let Ok(signed_at) = parse_timestamp(timestamp) else {
            return std::time::Duration::ZERO;
        };
        let forget_at = signed_at.timestamp() + self.window_secs + 1;
        (DateTime::from_timestamp(forget_at, 0).unwrap_or(now) - now)
            .to_std()
            .unwrap_or_default()
    }

    /// The refusal of a replayed request (a nonce seen within the window,
    /// by this node or, in a cluster, by another).
    pub fn nonce_used(&self, nonce: &str) -> ApiError {
        ApiError::new(
            ErrorCode::SignatureNonceUsed,
            format!(
                "Specified signature nonce was used already: \"{nonce}\" was seen within the last {} seconds. Send a fresh SignatureNonce with every request.",
                self.window_secs
            ),
        )
    }

    /// Makes a nonce [`ReplayGuard::check`] asked for durable.
    pub async fn persist(&self, entry: MustPersist) -> Result<(), ApiError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        journal.record(entry.0, entry.1).await.map_err(|cause| ApiError {
            internal: Some(format!("the nonce could not be recorded: {cause}")),
            ..ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The request has failed due to a temporary failure of the server: its nonce could not be recorded. Try again later.",
            )
        })
    }

    /// Records a clean stop (call once no request can be accepted any
    /// more): the next run then serves from its first second.
    pub fn record_stop(&self) {
        if let Some(journal) = &self.journal
            && let Err(e) = journal.record_stop(Utc::now().timestamp_millis())
        {
            tracing::warn!(error = %e, "could not record the stop in the replay journal; the next start waits for a new second");
        }
    }

    /// Nonces currently remembered.
    pub fn remembered(&self) -> usize {
        self.nonces.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn key(&self, access_key_id: &str, nonce: &str) -> u128 {
        let pair = (access_key_id, nonce);
        let high = self.hashers.0.hash_one(pair) as u128;
        let low = self.hashers.1.hash_one(pair) as u128;
        (high << 64) | low
    }
}

/// The fence of a run starting at `now` after `previous` (see module docs).
fn fence_after(previous: PreviousRun, now: DateTime<Utc>) -> i64 {
    let this_second = now.timestamp();
    match previous {
        PreviousRun::None => this_second,
        PreviousRun::Stopped(at_ms) => this_second.max(at_ms.div_euclid(1000) + 1),
        PreviousRun::Unclean => this_second + 1,
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` (UTC) as the SDKs send it; any RFC 3339 time with
/// an offset or fractional seconds is read too.
pub fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidTimeStampFormat,
                format!(
                    "Specified time stamp or date value is not well formatted: \"{value}\"; use UTC in ISO 8601 form, e.g. 2026-11-22T02:48:57Z."
                ),
            )
        })
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    const START: &str = "2026-11-22T02:00:00Z";

    #[test]
    fn a_nonce_is_accepted_once_per_key() {
        let g = ReplayGuard::new(900, at(START), 100);
        let now = at("2026-11-22T02:10:00Z");
        g.check("k", "2026-11-22T02:10:00Z", "n", now).unwrap();
        let e = g.check("k", "2026-11-22T02:10:00Z", "n", now).unwrap_err();
        assert_eq!(e.code(), "SignatureNonceUsed");
        g.check("other-key", "2026-11-22T02:10:00Z", "n", now)
            .unwrap();
    }

    #[test]
    fn timestamps_outside_the_window_either_way_are_expired() {
        let g = ReplayGuard::new(900, at(START), 100);
        let now = at("2026-11-22T03:00:00Z");
        assert_eq!(
            g.check("k", "2026-11-22T02:44:59Z", "a", now)
                .unwrap_err()
                .code(),
            "InvalidTimeStamp.Expired"
        );
        assert_eq!(
            g.check("k", "2026-11-22T03:15:01Z", "b", now)
                .unwrap_err()
                .code(),
            "InvalidTimeStamp.Expired"
        );
        g.check("k", "2026-11-22T02:45:00Z", "c", now).unwrap();
        g.check("k", "2026-11-22T03:15:00Z", "d", now).unwrap();
    }

    #[test]
    fn malformed_timestamps_say_what_form_to_use() {
        let g = ReplayGuard::new(900, at(START), 100);
        for bad in [
            "",
            "yesterday",
            "2026-11-22 02:10:00",
            "2026-11-22T02:10:00",
            "1700000000",
        ] {
            let e = g.check("k", bad, "n", at(START)).unwrap_err();
            assert_eq!(e.code(), "InvalidTimeStamp.Format", "{bad}");
            assert!(e.message.contains("2026-11-22T02:48:57Z"));
        }
    }

    #[test]
    fn requests_signed_before_the_start_are_refused() {
        let g = ReplayGuard::new(900, at("2026-11-22T02:00:00.700Z"), 100);
        let now = at("2026-11-22T02:00:05Z");
        let e = g.check("k", "2026-11-22T01:59:59Z", "n", now).unwrap_err();
        assert_eq!(e.code(), "InvalidTimeStamp.Expired");
        assert!(e.message.contains("before this service started"));
        g.check("k", "2026-11-22T02:00:00Z", "n", now).unwrap();
    }

    #[test]
    fn memory_is_bounded_and_expired_nonces_are_forgotten() {
        let capacity = 2000;
        let g = ReplayGuard::new(60, at(START), capacity);
        let t0 = at("2026-11-22T02:01:00Z");
        for i in 0..capacity {
            g.check("k", "2026-11-22T02:01:00Z", &format!("n{i}"), t0)
                .unwrap();
        }
        // Full of live nonces: refuse rather than forget one.
        let e = g
            .check("k", "2026-11-22T02:01:00Z", "one-more", t0)
            .unwrap_err();
        assert_eq!(e.code(), "ServiceUnavailable");
        assert!(g.remembered() <= capacity);
        // Two minutes later every one of them has expired and is swept.
        let t1 = at("2026-11-22T02:03:00Z");
        g.check("k", "2026-11-22T02:03:00Z", "fresh", t1).unwrap();
        assert!(g.remembered() < 10, "{}", g.remembered());
    }

    #[test]
    fn the_fence_follows_how_the_previous_run_ended() {
        let now = at("2026-11-22T02:00:00.300Z");
        let second = now.timestamp();
        assert_eq!(fence_after(PreviousRun::None, now), second);
        assert_eq!(fence_after(PreviousRun::Unclean, now), second + 1);
        let stopped_in_this_second = at("2026-11-22T02:00:00.100Z").timestamp_millis();
        assert_eq!(
            fence_after(PreviousRun::Stopped(stopped_in_this_second), now),
            second + 1
        );
        let stopped_before = at("2026-11-22T01:59:59.900Z").timestamp_millis();
        assert_eq!(
            fence_after(PreviousRun::Stopped(stopped_before), now),
            second
        );
    }

    /// The defect this guards against: killed and restarted within one
    /// second, a run accepted again a request the previous run had
    /// accepted, because the fence was the start truncated to the second.
    /// And a request signed ahead of the clock lies beyond any fence: its
    /// nonce must come back from the journal.
    #[tokio::test]
    async fn a_kill_and_restart_within_a_second_accepts_no_replay() {
        let dir = tempfile::tempdir().unwrap();
        let started = at("2026-11-22T02:00:00.050Z");
        let first = ReplayGuard::open(dir.path(), 900, 100, started).unwrap();
        assert_eq!(first.serve_from(), at("2026-11-22T02:00:00Z"));
        let accepted_at = at("2026-11-22T02:00:00.080Z");
        let same_second = first
            .check("k", "2026-11-22T02:00:00Z", "now", accepted_at)
            .unwrap();
        assert!(same_second.is_none(), "a present request needs no journal");
        let ahead = first
            .check("k", "2026-11-22T02:05:00Z", "ahead", accepted_at)
            .unwrap()
            .expect("a request signed ahead is journaled");
        first.persist(ahead).await.unwrap();
        drop(first); // killed: no stop recorded

        let restarted = at("2026-11-22T02:00:00.190Z");
        let second = ReplayGuard::open(dir.path(), 900, 100, restarted).unwrap();
        assert_eq!(second.serve_from(), at("2026-11-22T02:00:01Z"));
        let now = at("2026-11-22T02:00:01.010Z");
        let e = second
            .check("k", "2026-11-22T02:00:00Z", "now", now)
            .unwrap_err();
        assert_eq!(e.code(), "InvalidTimeStamp.Expired");
        let e = second
            .check("k", "2026-11-22T02:05:00Z", "ahead", now)
            .unwrap_err();
        assert_eq!(e.code(), "SignatureNonceUsed");
        second
            .check("k", "2026-11-22T02:00:01Z", "fresh", now)
            .unwrap();
        // A clean stop in an earlier second: the next run serves at once.
        second.record_stop();
        drop(second);
        let later = Utc::now() + chrono::Duration::seconds(2);
        let third = ReplayGuard::open(dir.path(), 900, 100, later).unwrap();
        assert_eq!(third.serve_from().timestamp(), later.timestamp());
    }
}
