//! Retry backoff for retryable carrier errors (SPEC §4).

use std::time::Duration;

/// Retry policy for retryable carrier errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Carrier attempts a message gets in all (SPEC: `dispatch.max_attempts`, default 5).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each attempt.
    pub base_delay: Duration,
    /// Upper bound of the exponential part.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delay before the next attempt after `attempts` failed ones (≥ 1;
    /// 0 counts as 1): `base * 2^(attempts-1)` capped at `max_delay`, with
    /// "equal jitter": `jitter` in `[0, 1)` picks a point between half and all
    /// of it; never less than the carrier's `retry_after`.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let doublings = attempts.max(1) - 1;
        // Overflow only happens far past the cap, so it saturates to the cap.
        let exponential = 2u32
            .checked_pow(doublings)
            .and_then(|factor| self.base_delay.checked_mul(factor))
            .map_or(self.max_delay, |delay| delay.min(self.max_delay));
        // A bad random source must not panic `mul_f64` or stretch the delay.
        let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        let half = exponential / 2;
        let jittered = half + half.mul_f64(jitter);
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(60),
    };

    #[test]
    fn delay_doubles_per_attempt() {
        // Jitter 0 gives exactly half of the exponential part.
        let secs = |attempts| POLICY.delay(attempts, None, 0.0).as_secs_f64();
        assert_eq!(secs(1), 1.0);
        assert_eq!(secs(2), 2.0);
        assert_eq!(secs(3), 4.0);
        assert_eq!(secs(4), 8.0);
        assert_eq!(secs(5), 16.0);
        assert_eq!(secs(0), secs(1));
    }

    #[test]
    fn delay_is_capped_and_saturates() {
        // 2 * 2^5 = 64 s > 60 s.
        assert_eq!(POLICY.delay(6, None, 0.0), Duration::from_secs(30));
        assert_eq!(POLICY.delay(40, None, 0.0), Duration::from_secs(30));
        assert_eq!(POLICY.delay(u32::MAX, None, 0.0), Duration::from_secs(30));
        let huge = RetryPolicy {
            base_delay: Duration::MAX,
            max_delay: Duration::from_secs(600),
            ..POLICY
        };
        assert_eq!(huge.delay(3, None, 0.0), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        for attempts in 1..=10 {
            let full = POLICY
                .base_delay
                .saturating_mul(1 << (attempts - 1))
                .min(POLICY.max_delay);
            for step in 0..100 {
                let delay = POLICY.delay(attempts, None, f64::from(step) / 100.0);
                assert!(
                    delay >= full / 2 && delay < full,
                    "attempt {attempts}: {delay:?} vs {full:?}"
                );
            }
            assert!(POLICY.delay(attempts, None, 0.999_999) < full);
            assert!(POLICY.delay(attempts, None, 0.75) > POLICY.delay(attempts, None, 0.25));
        }
        // Out-of-range jitter is clamped, never panics.
        assert_eq!(POLICY.delay(1, None, f64::NAN), Duration::from_secs(1));
        assert_eq!(POLICY.delay(1, None, -3.0), Duration::from_secs(1));
        assert_eq!(POLICY.delay(1, None, f64::INFINITY), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert_eq!(
            POLICY.delay(1, Some(Duration::from_secs(90)), 0.5),
            Duration::from_secs(90)
        );
        assert_eq!(
            POLICY.delay(1, Some(Duration::from_millis(10)), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(POLICY.delay(1, Some(Duration::ZERO), 0.0), Duration::from_secs(1));
    }
}
