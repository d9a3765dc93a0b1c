//! Replay protection: a signed request is accepted once, and only while its
//! timestamp is within the window (15 minutes either way by default).
//!
//! * The timestamp bounds how long a nonce must be remembered: once a
//!   request's timestamp leaves the window, the request is refused for its
//!   age, so its nonce can be forgotten.
//! * Memory is bounded: nonces are kept as 128-bit keyed hashes of
//!   (AccessKeyId, SignatureNonce) with their expiry, expired ones are swept
//!   when the set grows, and when the set is full of live nonces new requests
//!   are refused (`ServiceUnavailable`) rather than forgetting a live nonce,
//!   which would let its request be replayed.
//! * Restarts: nonces live in memory only, so a request signed before this
//!   process started is refused (`InvalidTimeStamp.Expired`, saying so). A
//!   request captured before a restart therefore cannot be replayed after
//!   it. The cost: a client whose clock runs behind this server's by `d`
//!   seconds sees its requests refused for the first `d` seconds after a
//!   restart, with a message that says why.

use crate::error::{ApiError, ErrorCode};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

pub struct ReplayGuard {
    window_secs: i64,
    /// Requests signed before this instant are refused (see module docs).
    fence: DateTime<Utc>,
    hashers: (RandomState, RandomState),
    nonces: Mutex<NonceSet>,
}

/// The nonce set's keys are keyed hashes already, uniformly spread: hashing
/// them again (SipHash, the default) would only cost time on every call.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

struct NonceSet {
    /// Keyed hash of (AccessKeyId, nonce) -> unix second after which the
    /// entry may be forgotten.
    expiry: HashMap<u128, i64, BuildHasherDefault<PassThrough>>,
    capacity: usize,
    /// Size at which the next sweep of expired entries runs.
    sweep_at: usize,
    /// No sweep before this unix second: when the set is full of live
    /// nonces, sweeping on every request would only burn CPU.
    no_sweep_before: i64,
}

impl ReplayGuard {
    /// A guard whose fence is `started_at` (truncated to the second, the
    /// resolution of `Timestamp`).
    pub fn new(window_secs: u64, started_at: DateTime<Utc>, capacity: usize) -> ReplayGuard {
        let fence = DateTime::from_timestamp(started_at.timestamp(), 0).unwrap_or(started_at);
        ReplayGuard {
            window_secs: window_secs as i64,
            fence,
            hashers: (RandomState::new(), RandomState::new()),
            nonces: Mutex::new(NonceSet {
                expiry: HashMap::default(),
                capacity,
                sweep_at: 1024.min(capacity),
                no_sweep_before: 0,
            }),
        }
    }

    /// Checks the timestamp and records the nonce; an error says which rule
    /// the request broke.
    pub fn check(
        &self,
        access_key_id: &str,
        timestamp: &str,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
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
        if signed_at < self.fence {
            return Err(ApiError::new(
                ErrorCode::InvalidTimeStampExpired,
                format!(
                    "Specified time stamp or date value is expired: the request was signed at {}, before this service started at {}; a request signed before a restart is not accepted after it. Sign the request again.",
                    iso(signed_at),
                    iso(self.fence)
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
        let mut set = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        let now_secs = now.timestamp();
        match set.expiry.get(&key) {
            Some(&until) if until >= now_secs => {
                return Err(ApiError::new(
                    ErrorCode::SignatureNonceUsed,
                    format!(
                        "Specified signature nonce was used already: \"{nonce}\" was seen within the last {} seconds. Send a fresh SignatureNonce with every request.",
                        self.window_secs
                    ),
                ));
            }
            _ => {}
        }
        if set.expiry.len() >= set.sweep_at && now_secs >= set.no_sweep_before {
            set.expiry.retain(|_, until| *until >= now_secs);
            // Sweep again when the set has doubled, so that sweeping costs
            // O(1) per request on average.
            set.sweep_at = (set.expiry.len() * 2).clamp(1024.min(set.capacity), set.capacity);
        }
        if set.expiry.len() >= set.capacity {
            set.no_sweep_before = now_secs + 1;
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The request has failed due to a temporary failure of the server: too many signed requests within the replay window to remember another nonce. Try again later.",
            ));
        }
        set.expiry.insert(key, forget_after);
        Ok(())
    }

    /// Nonces currently remembered.
    pub fn remembered(&self) -> usize {
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expiry
            .len()
    }

    fn key(&self, access_key_id: &str, nonce: &str) -> u128 {
        let pair = (access_key_id, nonce);
        let high = self.hashers.0.hash_one(pair) as u128;
        let low = self.hashers.1.hash_one(pair) as u128;
        (high << 64) | low
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
}
