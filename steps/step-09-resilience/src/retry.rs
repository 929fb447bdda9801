//! Retries that cannot become a storm: which calls, which failures, how long to wait, and a
//! budget that caps how much extra load retries may add.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::{Method, StatusCode};

// ANCHOR: policy
/// How often, and how far apart, a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (gRPC's `maxAttempts`, 3 in the Go article).
    pub max_attempts: u32,
    /// The wait before the first retry (`initialBackoff`), doubled for each one after it...
    pub base: Duration,
    /// ...up to this (`maxBackoff`).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// The Go article's gRPC retry policy: 3 attempts, 0.1 s doubling up to 1 s.
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first), given `random` in [0, 1):
    /// "equal jitter", between half the exponential step and all of it. Half is random, so
    /// clients that failed together do not come back together; half is not, so until the cap
    /// each wait is at least as long as the one before.
    pub fn backoff(&self, retry: u32, random: f64) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1 << retry.saturating_sub(1).min(16));
        let step = doubled.min(self.cap);
        step / 2 + step.mul_f64(random.clamp(0.0, 1.0) / 2.0)
    }
}

/// Whether sending `method` twice does what sending it once does (RFC 9110, 9.2.2). A `POST`
/// that timed out may have created the item: sending it again could create a second one.
pub fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
    ]
    .contains(method)
}

/// The answers worth trying again: a proxy that found no healthy instance (502) or an
/// instance that said it is unavailable (503), the two gRPC turns into `UNAVAILABLE`. A 500 is
/// a bug that will happen again; a 504 means time already ran out.
pub fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE
}
// ANCHOR_END: policy

// ANCHOR: budget
/// A token bucket for retries. Each call puts in `ratio` of a token, each retry takes one out,
/// and the bucket holds at most `size` (and starts full). So over any stretch of time,
/// retries ≤ `ratio` × calls + `size`: with the defaults, 10 % more load plus 10, where three
/// attempts per call would triple it. While the upstream is healthy the bucket stays full.
pub struct RetryBudget {
    ratio: f64,
    size: f64,
    tokens: Mutex<f64>,
}

impl RetryBudget {
    pub fn new(ratio: f64, size: f64) -> RetryBudget {
        RetryBudget {
            ratio,
            size,
            tokens: Mutex::new(size),
        }
    }

    /// A call begins.
    pub fn deposit(&self) {
        let mut tokens = self.lock();
        *tokens = (*tokens + self.ratio).min(self.size);
    }

    /// Whether a retry may go, taking its token if so.
    pub fn withdraw(&self) -> bool {
        let mut tokens = self.lock();
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget::new(0.1, 10.0)
    }
}
// ANCHOR_END: budget

/// Numbers in [0, 1) for the jitter: SipHash of a counter under a key the standard library
/// draws at random, which is plenty for spreading retries (no crate needed).
#[derive(Default)]
pub struct Jitter {
    key: RandomState,
    count: AtomicU64,
}

impl Jitter {
    pub fn next(&self) -> f64 {
        let bits = self
            .key
            .hash_one(self.count.fetch_add(1, Ordering::Relaxed));
        (bits >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_are_jittered_and_stop_growing_at_the_cap() {
        let policy = RetryPolicy::default();
        let ms = Duration::from_millis;

        assert_eq!(policy.backoff(1, 0.0), ms(50));
        assert_eq!(
            policy.backoff(1, 0.999_999),
            ms(100) - Duration::from_nanos(50)
        );
        assert_eq!(policy.backoff(2, 0.0), ms(100));
        assert_eq!(policy.backoff(3, 0.5), ms(300));
        assert_eq!(policy.backoff(30, 1.0), ms(1000));
        // 100, 200, 400, 800 ms steps: each wait at least the one before.
        for retry in 1..4 {
            assert!(policy.backoff(retry + 1, 0.0) >= policy.backoff(retry, 1.0));
        }
    }

    #[test]
    fn the_budget_allows_its_size_then_a_tenth_of_the_calls() {
        let budget = RetryBudget::default();
        let mut retries = 0;

        for _ in 0..1000 {
            budget.deposit();
            while budget.withdraw() {
                retries += 1;
            }
        }

        // 10 to start with, then one per ten calls (give or take float rounding).
        assert!((108..=110).contains(&retries), "{retries}");
    }

    #[test]
    fn jitter_is_spread_over_zero_to_one() {
        let jitter = Jitter::default();
        let draws: Vec<f64> = (0..1000).map(|_| jitter.next()).collect();

        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(draws.iter().filter(|x| **x < 0.5).count() > 400);
        assert!(draws.iter().filter(|x| **x >= 0.5).count() > 400);
    }
}
