//! Per-carrier admission: `max_per_second` counted in SMS segments (as carriers
//! count them), `max_concurrency` calls at once, and a pause when the carrier
//! says it is rate-limiting us.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

pub struct CarrierGate {
    rate: DefaultDirectRateLimiter,
    burst: NonZeroU32,
    concurrency: Semaphore,
    paused_until: Mutex<Option<Instant>>,
    /// Set when the carrier reported itself misconfigured: calls are not even
    /// tried until then (unlike a rate-limit pause, which jobs wait out).
    suspended_until: Mutex<Option<Instant>>,
    tripped: AtomicBool,
}

impl CarrierGate {
    pub fn new(max_per_second: u32, max_concurrency: u32) -> Self {
        let per_second = NonZeroU32::new(max_per_second.max(1)).expect("at least 1");
        Self {
            rate: RateLimiter::direct(Quota::per_second(per_second)),
            burst: per_second,
            concurrency: Semaphore::new(max_concurrency.max(1) as usize),
            paused_until: Mutex::new(None),
            suspended_until: Mutex::new(None),
            tripped: AtomicBool::new(false),
        }
    }

    /// Waits for a call slot and for `segments` of rate budget.
    pub async fn acquire(&self, segments: u32) -> SemaphorePermit<'_> {
        let permit = self.concurrency.acquire().await.expect("the semaphore is never closed");
        loop {
            let until = *self.paused_until.lock().expect("gate lock");
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        // A message longer than a second's budget still goes, using the whole budget.
        let cost = NonZeroU32::new(segments.max(1)).expect("at least 1").min(self.burst);
        let _ = self.rate.until_n_ready(cost).await;
        permit
    }

    /// Holds every call to this carrier for `pause`.
    pub fn pause_for(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut paused = self.paused_until.lock().expect("gate lock");
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// Refuses calls for `pause` (jobs go back to the scheduler instead of waiting).
    pub fn suspend_for(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut suspended = self.suspended_until.lock().expect("gate lock");
        if suspended.is_none_or(|current| current < until) {
            *suspended = Some(until);
        }
    }

    /// How much longer calls are refused, if they are.
    pub fn suspended(&self) -> Option<Duration> {
        let suspended = *self.suspended_until.lock().expect("gate lock");
        suspended.and_then(|until| until.checked_duration_since(Instant::now()))
    }

    /// Records whether the carrier is tripped or paused; true when that changed.
    pub fn mark_tripped(&self, tripped: bool) -> bool {
        self.tripped.swap(tripped, Ordering::AcqRel) != tripped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_calls_and_a_longer_one_wins() {
        let gate = CarrierGate::new(1_000, 4);
        gate.pause_for(Duration::from_secs(2));
        gate.pause_for(Duration::from_secs(1));
        let started = Instant::now();
        drop(gate.acquire(1).await);
        assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn concurrency_is_capped() {
        let gate = CarrierGate::new(1_000, 1);
        let held = gate.acquire(1).await;
        let second = tokio::time::timeout(Duration::from_millis(50), gate.acquire(1)).await;
        assert!(second.is_err(), "a second call waits for the first");
        drop(held);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), gate.acquire(1))
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspension_refuses_until_it_ends() {
        let gate = CarrierGate::new(1_000, 4);
        assert_eq!(gate.suspended(), None);
        gate.suspend_for(Duration::from_secs(30));
        assert!(gate.suspended().is_some_and(|left| left > Duration::from_secs(29)));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(gate.suspended(), None);
    }

    #[test]
    fn trips_are_reported_once_per_change() {
        let gate = CarrierGate::new(1, 1);
        assert!(gate.mark_tripped(true));
        assert!(!gate.mark_tripped(true));
        assert!(gate.mark_tripped(false));
    }
}
