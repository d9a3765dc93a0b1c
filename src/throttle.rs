//! Flow control: calls per second per account and action, with a small
//! burst, GCRA (the `governor` crate). Defaults come from the API pages
//! (QuerySessionByClientId 500/s, BatchQuerySessionByClientIds 100/s);
//! CloseConnection has no documented figure and gets 100/s. Every limit can
//! be changed for all accounts (`[limits]`) or one (`[accounts.limits]`).
//!
//! The burst is a tenth of the rate (at least 1): a quiet account may send
//! that many calls at once, and over any interval of `t` seconds at most
//! `rate * t + burst` calls are admitted.

use crate::actions::Action;
use crate::error::{ApiError, ErrorCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;

/// The documented default for an action, calls per second.
pub fn default_rate(action: Action) -> u32 {
    match action {
        Action::QuerySessionByClientId => 500,
        Action::BatchQuerySessionByClientIds => 100,
        Action::CloseConnection => 100,
        Action::DescribeMeteringReport => 10,
    }
}

/// The burst that goes with a rate.
pub fn burst(rate: u32) -> u32 {
    (rate / 10).max(1)
}

/// One limiter per (account, action), found by account first so that a
/// call's `&str` account id is the key (no allocation per call).
pub struct Throttle {
    limiters: HashMap<String, HashMap<Action, (u32, DefaultDirectRateLimiter)>>,
    clock: DefaultClock,
}

impl Throttle {
    /// `rates` gives each account's rate for each action.
    pub fn new(rates: impl IntoIterator<Item = (String, Action, u32)>) -> Throttle {
        let mut limiters: HashMap<String, HashMap<_, _>> = HashMap::new();
        for (account, action, rate) in rates {
            let rate_nz = NonZeroU32::new(rate.max(1)).expect("at least 1");
            let burst_nz = NonZeroU32::new(burst(rate)).expect("at least 1");
            let quota = Quota::per_second(rate_nz).allow_burst(burst_nz);
            limiters
                .entry(account)
                .or_default()
                .insert(action, (rate, RateLimiter::direct(quota)));
        }
        Throttle {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    /// Admits the call or refuses it with `SystemOverFlow` and how long to
    /// wait. An account without a limiter (not in the configuration) is
    /// refused by authentication long before this.
    pub fn check(&self, account_id: &str, action: Action) -> Result<(), ApiError> {
        let Some((rate, limiter)) = self
            .limiters
            .get(account_id)
            .and_then(|by_action| by_action.get(&action))
        else {
            return Ok(());
        };
        match limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let kind = if action == Action::BatchQuerySessionByClientIds {
                    ErrorCode::SystemOverFlowServer
                } else {
                    ErrorCode::SystemOverFlow
                };
                let mut error = ApiError::new(
                    kind,
                    format!(
                        "An error occurred while processing your request. Please try again: account {account_id} is over its limit of {rate} {} calls per second (burst {}); retry after {} ms.",
                        action.name(),
                        burst(*rate),
                        wait.as_millis().max(1)
                    ),
                );
                error.retry_after_ms = Some((wait.as_millis() as u64).max(1));
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_admits_the_burst_and_then_refuses_with_a_wait() {
        let throttle = Throttle::new([("a".to_string(), Action::QuerySessionByClientId, 500)]);
        let admitted = (0..1000)
            .filter(|_| throttle.check("a", Action::QuerySessionByClientId).is_ok())
            .count();
        // All at once: the burst (50), plus what refills while the loop runs.
        assert!((50..=60).contains(&admitted), "{admitted}");
        let e = throttle
            .check("a", Action::QuerySessionByClientId)
            .unwrap_err();
        assert_eq!((e.code().as_str(), e.status()), ("SystemOverFlow", 403));
        assert!(e.retry_after_ms.unwrap() >= 1);
    }

    #[test]
    fn batch_answers_500_and_accounts_do_not_share_limits() {
        let throttle = Throttle::new([
            ("a".to_string(), Action::BatchQuerySessionByClientIds, 1),
            ("b".to_string(), Action::BatchQuerySessionByClientIds, 1),
        ]);
        throttle
            .check("a", Action::BatchQuerySessionByClientIds)
            .unwrap();
        let e = throttle
            .check("a", Action::BatchQuerySessionByClientIds)
            .unwrap_err();
        assert_eq!((e.code().as_str(), e.status()), ("SystemOverFlow", 500));
        throttle
            .check("b", Action::BatchQuerySessionByClientIds)
            .unwrap();
    }
}
