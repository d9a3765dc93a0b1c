//! Flow control: calls per second per account and [`Limit`] (each RPC
//! action, and the EMQX API as a whole), with a small burst, GCRA (the
//! `governor` crate). Defaults come from the action table
//! ([`crate::api`]); every limit can be changed for all accounts
//! (`[limits]`) or one (`[accounts.limits]`).
//!
//! The burst of an action is a tenth of its rate, but at least the rate
//! itself up to 10 (so an action limited to 10 calls per second takes 10
//! at once, as a per-second window would): a quiet account may send that
//! many calls at once, and over any interval of `t` seconds at most
//! `rate * t + burst` calls are admitted. The EMQX API's
//! burst is a whole second's worth: a dashboard or a script reads many
//! things at once, then nothing for a while.
//!
//! A refusal is a [`Throttled`]: each API answers it in its own shape.

use crate::api::Limit;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The burst that goes with a limit's rate.
pub fn burst(limit: Limit, rate: u32) -> u32 {
    match limit {
        Limit::Action(_) => (rate / 10).max(rate.min(10)).max(1),
        Limit::EmqxApi => rate.max(1),
    }
}

/// A call refused by flow control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    pub limit: Limit,
    /// Calls per second allowed.
    pub rate: u32,
    pub burst: u32,
    /// How long until a call can be admitted again (at least 1 ms).
    pub wait: Duration,
}

impl Throttled {
    /// The wait in whole milliseconds, at least 1.
    pub fn wait_ms(&self) -> u64 {
        (self.wait.as_millis() as u64).max(1)
    }
}

/// One limit's rate and its bucket.
type Bucket = (u32, Arc<DefaultDirectRateLimiter>);

/// One limiter per (account, limit), found by account first so that a
/// call's `&str` account id is the key (no allocation per call).
pub struct Throttle {
    /// Shared (`Arc`) so that a reload keeps the buckets whose rate it does
    /// not change.
    limiters: HashMap<String, Vec<Option<Bucket>>>,
    clock: DefaultClock,
}

impl Throttle {
    /// `rates` gives each account's rate for each limit.
    pub fn new(rates: impl IntoIterator<Item = (String, Limit, u32)>) -> Throttle {
        Throttle::carrying_over(rates, None)
    }

    /// A throttle for new `rates` that keeps `previous`'s bucket, with what
    /// it has used, wherever an account's rate for a limit is unchanged: a
    /// configuration reload must not hand every account a fresh burst.
    pub fn carrying_over(
        rates: impl IntoIterator<Item = (String, Limit, u32)>,
        previous: Option<&Throttle>,
    ) -> Throttle {
        let mut limiters: HashMap<String, Vec<Option<_>>> = HashMap::new();
        for (account, limit, rate) in rates {
            let kept = previous
                .and_then(|p| p.limiters.get(&account))
                .and_then(|by_limit| by_limit[limit.index()].as_ref())
                .filter(|(old_rate, _)| *old_rate == rate)
                .map(|(_, limiter)| limiter.clone());
            let by_limit = limiters
                .entry(account)
                .or_insert_with(|| (0..Limit::COUNT).map(|_| None).collect());
            if let Some(limiter) = kept {
                by_limit[limit.index()] = Some((rate, limiter));
                continue;
            }
            let rate_nz = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
            let burst_nz = NonZeroU32::new(burst(limit, rate)).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::per_second(rate_nz).allow_burst(burst_nz);
            by_limit[limit.index()] = Some((rate, Arc::new(RateLimiter::direct(quota))));
        }
        Throttle {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    /// An account's rate for `limit` and its burst, as [`Throttle::check`]
    /// applies them (`None`: the account has no limiter). A cluster keeps
    /// one bucket for all its nodes with these figures
    /// ([`crate::cluster`]).
    pub fn rate_of(&self, account_id: &str, limit: Limit) -> Option<(u32, u32)> {
        let (rate, _) = self
            .limiters
            .get(account_id)
            .and_then(|by_limit| by_limit[limit.index()].as_ref())?;
        Some((*rate, burst(limit, *rate)))
    }

    /// Admits the call or says how long to wait. An account without a
    /// limiter (not in the configuration) is refused by authentication long
    /// before this.
    pub fn check(&self, account_id: &str, limit: Limit) -> Result<(), Throttled> {
        let Some((rate, limiter)) = self
            .limiters
            .get(account_id)
            .and_then(|by_limit| by_limit[limit.index()].as_ref())
        else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| Throttled {
            limit,
            rate: *rate,
            burst: burst(limit, *rate),
            wait: not_until.wait_time_from(self.clock.now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Action;

    const QUERY: Limit = Limit::Action(Action::QuerySessionByClientId);

    #[test]
    fn a_burst_admits_the_burst_and_then_refuses_with_a_wait() {
        let throttle = Throttle::new([("a".to_string(), QUERY, 500)]);
        let admitted = (0..1000)
            .filter(|_| throttle.check("a", QUERY).is_ok())
            .count();
        // All at once: the burst (50), plus what refills while the loop runs.
        assert!((50..=60).contains(&admitted), "{admitted}");
        let refused = throttle.check("a", QUERY).unwrap_err();
        assert_eq!((refused.rate, refused.burst), (500, 50));
        assert!(refused.wait_ms() >= 1);
    }

    #[test]
    fn bursts_are_a_tenth_of_the_rate_but_a_seconds_worth_for_small_rates() {
        let action = Limit::Action(Action::CreateGroupId);
        let cases = [(500, 50), (100, 10), (50, 10), (10, 10), (5, 5), (1, 1)];
        for (rate, expected) in cases {
            assert_eq!(burst(action, rate), expected, "{rate}");
        }
        assert_eq!(burst(Limit::EmqxApi, 100), 100);
    }

    #[test]
    fn a_reload_keeps_the_buckets_whose_rate_it_does_not_change() {
        let before = Throttle::new([
            ("a".to_string(), QUERY, 1),
            ("a".to_string(), Limit::EmqxApi, 1),
        ]);
        before.check("a", QUERY).unwrap();
        before.check("a", Limit::EmqxApi).unwrap();
        // The reload changes a's EmqxApi rate and adds b.
        let after = Throttle::carrying_over(
            [
                ("a".to_string(), QUERY, 1),
                ("a".to_string(), Limit::EmqxApi, 2),
                ("b".to_string(), QUERY, 1),
            ],
            Some(&before),
        );
        assert!(
            after.check("a", QUERY).is_err(),
            "a fresh burst after reload"
        );
        after.check("a", Limit::EmqxApi).unwrap();
        after.check("b", QUERY).unwrap();
    }

    #[test]
    fn accounts_and_limits_do_not_share_buckets() {
        let throttle = Throttle::new([
            ("a".to_string(), QUERY, 1),
            ("b".to_string(), QUERY, 1),
            ("a".to_string(), Limit::EmqxApi, 1),
        ]);
        throttle.check("a", QUERY).unwrap();
        throttle.check("a", QUERY).unwrap_err();
        throttle.check("b", QUERY).unwrap();
        throttle.check("a", Limit::EmqxApi).unwrap();
        throttle.check("a", Limit::EmqxApi).unwrap_err();
    }
}
