//! The per-buyer request rate limit: a token bucket per subject (governor's
//! GCRA, which keeps one timestamp a key). A buyer who asks faster than the
//! rate, past the burst, is told `429` with how long to wait.
//!
//! Each API process keeps its own buckets: behind a balancer that spreads a
//! buyer's requests over N processes, a buyer gets up to N times the rate;
//! a balancer that routes by subject (or by the Authorization header) makes
//! it exact. Sharing the buckets in Redis would cost a round trip a request.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Buckets = RateLimiter<Box<str>, DefaultKeyedStateStore<Box<str>>, DefaultClock>;

/// Every buyer's bucket.
pub struct BuyerLimits {
    buckets: Buckets,
}

/// How fast one buyer may ask: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl BuyerLimits {
    pub fn new(rate: Rate) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        Self {
            buckets: RateLimiter::keyed(quota),
        }
    }

    /// `Ok` if `subject` may ask now (which uses one of its tokens), else
    /// how long until it may.
    pub fn admit(&self, subject: &str) -> Result<(), Duration> {
        match self.buckets.check_key(&Box::from(subject)) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(self.buckets.clock().now())),
        }
    }

    /// Forgets the buckets that are full again (their buyers asked long
    /// enough ago); returns how many buyers are still remembered.
    pub fn forget_idle(&self) -> usize {
        self.buckets.retain_recent();
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buyer_past_the_burst_waits_and_others_do_not() {
        let limits = BuyerLimits::new(Rate {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        });
        for _ in 0..3 {
            assert_eq!(limits.admit("alice"), Ok(()));
        }
        let wait = limits.admit("alice").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limits.admit("bob"), Ok(()));
    }
}
