//! Retrying transient failures: bounded exponential backoff with jitter.
//!
//! A failure is *transient* when repeating the same request may succeed: the connection was
//! refused, reset or timed out, a body ended early, or the registry answered 408, 429, 500,
//! 502, 503 or 504 ([`super::Error::is_transient`]). Everything else (401, 403, 404, a digest
//! that does not match, a protocol violation, a certificate that does not verify) fails at
//! once.
//!
//! One [`Backoff`] is one budget: a blob download shares it between the requests it sends and
//! the body reads that break, so a blob is tried at most [`RetryPolicy::max_attempts`] times
//! whatever failed. The wait before attempt `n + 1` is `base_delay · 2^(n-1)` capped at
//! `max_delay`, of which a random half is kept ("equal jitter": `d/2 + rand(0..=d/2)`) so that
//! clients failing together do not retry together; a `Retry-After` (seconds) longer than that
//! is honoured, still capped at `max_delay`. `Retry-After` may be delay-seconds or an HTTP
//! date (the time left until it).

use std::time::{Duration, SystemTime};

/// How transient failures are retried (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `0` and `1` both mean no retry.
    pub max_attempts: u32,
    /// The wait before the first retry (doubled for each further one, before jitter).
    pub base_delay: Duration,
    /// The longest wait between two attempts (also caps `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms doubling up to 10 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries: every failure is reported at once.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// A fresh budget.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 1,
        }
    }

    /// The wait after failed attempt `attempt` (1-based), before jitter.
    fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// The attempts left to one operation.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    /// The attempt under way (1-based).
    attempt: u32,
}

impl Backoff {
    /// Called after a transient failure: how long to wait before the next attempt, or `None`
    /// when the budget is spent. `retry_after` is the server's `Retry-After`, if any.
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempt >= self.policy.max_attempts {
            return None;
        }
        let ceiling = self.policy.ceiling(self.attempt);
        self.attempt += 1;
        let half = ceiling / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter_ns == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(rand::random::<u64>() % (jitter_ns + 1))
        };
        let mut wait = half + jitter;
        if let Some(ra) = retry_after {
            wait = wait.max(ra);
        }
        Some(wait.min(self.policy.max_delay))
    }

    /// The attempt under way (1-based).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (IMF-fixdate, RFC 850 or asctime)
/// turned into the time left until it (zero for a date already past).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`] as seen at `now`.
fn retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether an HTTP status is worth repeating the request for.
pub(crate) fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_jittered_and_bounded() {
        let p = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let mut b = p.backoff();
        let ceilings = [100u64, 200, 400, 500, 500];
        for c in ceilings {
            let d = b.next_delay(None).unwrap();
            let c = Duration::from_millis(c);
            assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
        }
        assert_eq!(b.attempt(), 6);
        assert!(b.next_delay(None).is_none(), "the budget is spent");
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
        };
        let mut b = p.backoff();
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(1))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(60))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(b.next_delay(None), None);
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        // An HTTP date: the time left until it, zero once past; garbage is ignored.
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            retry_after_at("Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after_at("Wednesday, 21-Oct-15 07:28:03 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after_at("Wed Oct 21 07:28:02 2015", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after_at("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_at("soon", now), None);
    }

    #[test]
    fn no_retry_policies() {
        assert!(RetryPolicy::none().backoff().next_delay(None).is_none());
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(zero.backoff().next_delay(None).is_none());
        // Huge attempt numbers do not overflow.
        assert_eq!(
            RetryPolicy::default().ceiling(200),
            RetryPolicy::default().max_delay
        );
        assert!(transient_status(503) && transient_status(429) && !transient_status(404));
    }
}
