//! Per-carrier admission: `max_per_second` counted in SMS segments (as carriers
//! count them), `max_concurrency` calls at once, and a pause when the carrier
//! says it is rate-limiting us.
//!
//! `max_per_second` is the carrier's limit for all dispatchers together (SPEC
//! §8). With the in-process bus this process's dispatcher is the only one, and
//! a token bucket here enforces it. On a shared bus the dispatcher leases slots
//! from the carrier's budget on the bus ([`SharedRate`]): a lease of
//! `max(1, max_per_second / 20)` consecutive slots (a twentieth of a second's
//! worth), spent here one call at a time, each call no earlier than its slot.
//! While the bus cannot be reached no lease comes, and nothing is sent: the
//! gate fails closed, it never falls back to a limit of its own.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::backoff;
use crate::bus::rate::SharedRate;

/// Leases a shared budget is claimed in per second (at full speed): each is a
/// twentieth of a second's slots, so a claim's round trip is rare next to the
/// calls it admits, and a lease another dispatcher leaves unused is short.
const LEASES_PER_SECOND: u32 = 20;
/// How late a leased slot may still be used, counted from when the lease came
/// (a claim's round trip does not age it). One left unused for longer is given
/// up: a call made that late would add to a later second's calls.
const LATE: Duration = Duration::from_millis(20);

pub struct CarrierGate {
    rate: Rate,
    /// `max_per_second`: the most one message costs.
    burst: NonZeroU32,
    concurrency: Semaphore,
    paused_until: Mutex<Option<Instant>>,
    /// Set when the carrier reported itself misconfigured: calls are not even
    /// tried until then (unlike a rate-limit pause, which jobs wait out).
    suspended_until: Mutex<Option<Instant>>,
    tripped: AtomicBool,
}

/// Where the rate budget comes from.
enum Rate {
    /// This process's dispatcher is the only one: a token bucket here.
    Local(DefaultDirectRateLimiter),
    /// Slots leased from the budget every dispatcher shares.
    Shared(Leased),
}

impl CarrierGate {
    /// A gate enforcing `max_per_second` on its own (the only dispatcher).
    pub fn new(max_per_second: u32, max_concurrency: u32) -> Self {
        let per_second = NonZeroU32::new(max_per_second.max(1)).expect("at least 1");
        Self::with_rate(
            Rate::Local(RateLimiter::direct(Quota::per_second(per_second))),
            per_second,
            max_concurrency,
        )
    }

    /// A gate spending `carrier`'s `max_per_second` from `budget`, shared with
    /// every other dispatcher.
    pub fn shared(carrier: &str, max_per_second: u32, max_concurrency: u32, budget: Arc<dyn SharedRate>) -> Self {
        let per_second = NonZeroU32::new(max_per_second.max(1)).expect("at least 1");
        let now = Instant::now();
        let leased = Leased {
            budget,
            carrier: carrier.to_string(),
            interval: Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(per_second.get()))),
            lease_tokens: (per_second.get() / LEASES_PER_SECOND).max(1),
            slots: tokio::sync::Mutex::new(Slots {
                next: now,
                end: now,
                came: now,
            }),
        };
        Self::with_rate(Rate::Shared(leased), per_second, max_concurrency)
    }

    fn with_rate(rate: Rate, per_second: NonZeroU32, max_concurrency: u32) -> Self {
        Self {
            rate,
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
        match &self.rate {
            Rate::Local(limiter) => {
                let _ = limiter.until_n_ready(cost).await;
            }
            Rate::Shared(leased) => leased.take(cost.get()).await,
        }
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

/// A shared budget as this process spends it: one lease at a time.
struct Leased {
    budget: Arc<dyn SharedRate>,
    carrier: String,
    /// Between two slots: `1 / max_per_second`.
    interval: Duration,
    /// Slots claimed at once (more when one message costs more).
    lease_tokens: u32,
    /// What is left of the current lease. Held by a caller until its slot's
    /// time, so callers take slots in turn and one lease is claimed at a time.
    slots: tokio::sync::Mutex<Slots>,
}

/// The unspent slots of a lease: from `next` (the earliest) to `end`.
struct Slots {
    next: Instant,
    end: Instant,
    /// When the lease came: its slots are this process's from then on.
    came: Instant,
}

impl Leased {
    /// Waits for `cost` consecutive slots and their time; claims leases as
    /// needed, waiting (never sending) while the budget cannot be reached.
    async fn take(&self, cost: u32) {
        let mut slots = self.slots.lock().await;
        let need = self.interval * cost;
        let mut failures: Option<backoff::Delays> = None;
        loop {
            let now = Instant::now();
            // Slots usable here for over `LATE` (past their time, the lease come) are given up.
            let at = match now.checked_sub(LATE) {
                Some(stale_before) if slots.came < stale_before => slots.next.max(stale_before),
                _ => slots.next,
            };
            if at + need <= slots.end {
                slots.next = at + need;
                if at > now {
                    tokio::time::sleep_until(at).await;
                }
                return;
            }
            // Too little left (a slot too old is as good as spent): the rest is given up.
            match self
                .budget
                .claim(&self.carrier, self.lease_tokens.max(cost), self.interval)
                .await
            {
                Ok(lease) => {
                    if failures.take().is_some() {
                        tracing::info!(carrier = %self.carrier, "the shared rate budget answers again");
                    }
                    *slots = Slots {
                        next: lease.start,
                        end: lease.start + self.interval * lease.tokens,
                        came: Instant::now(),
                    };
                }
                Err(e) => {
                    let delay = failures.get_or_insert_with(backoff::delays).next().unwrap_or_default();
                    metrics::counter!("herald_rate_budget_failures_total", "carrier" => self.carrier.clone())
                        .increment(1);
                    tracing::warn!(
                        carrier = %self.carrier,
                        error = %e,
                        "cannot lease from the shared rate budget: not sending to this carrier; retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
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

    /// A shared budget in memory, as the bus keeps it (GCRA without burst),
    /// that can be made unreachable.
    #[derive(Default)]
    struct Budget {
        next: Mutex<Option<Instant>>,
        down: AtomicBool,
        claims: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl SharedRate for Budget {
        async fn claim(
            &self,
            _carrier: &str,
            tokens: u32,
            interval: Duration,
        ) -> Result<crate::bus::rate::Lease, crate::bus::BusError> {
            if self.down.load(Ordering::Acquire) {
                return Err(crate::bus::BusError::Unavailable("down".into()));
            }
            self.claims.fetch_add(1, Ordering::Relaxed);
            let mut next = self.next.lock().unwrap();
            let start = next.map_or(Instant::now(), |next| next.max(Instant::now()));
            *next = Some(start + interval * tokens);
            Ok(crate::bus::rate::Lease { start, tokens })
        }
    }

    /// The most of `times` in any window of one second.
    fn busiest_second(times: &[Instant]) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t - times[i] < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Calls `n` times on each gate at once; the instants the calls were let through, in order.
    async fn calls(gates: &[Arc<CarrierGate>], n: usize, segments: u32) -> Vec<Instant> {
        let mut tasks = tokio::task::JoinSet::new();
        for gate in gates {
            let gate = gate.clone();
            tasks.spawn(async move {
                let mut times = Vec::new();
                for _ in 0..n {
                    drop(gate.acquire(segments).await);
                    times.push(Instant::now());
                }
                times
            });
        }
        let mut times: Vec<Instant> = tasks.join_all().await.into_iter().flatten().collect();
        times.sort();
        times
    }

    #[tokio::test(start_paused = true)]
    async fn gates_sharing_a_budget_keep_its_rate_together() {
        let budget = Arc::new(Budget::default());
        let gates: Vec<Arc<CarrierGate>> = (0..3)
            .map(|_| Arc::new(CarrierGate::shared("c", 100, 4, budget.clone())))
            .collect();
        let started = Instant::now();
        let times = calls(&gates, 100, 1).await;
        // 300 calls at 100/s: three seconds, the first at once.
        let took = times[299] - started;
        assert!(
            took >= Duration::from_millis(2990) && took < Duration::from_millis(3100),
            "{took:?}"
        );
        assert!(busiest_second(&times) <= 101, "{}", busiest_second(&times));
        // Leases of five slots (a twentieth of a second).
        assert_eq!(budget.claims.load(Ordering::Relaxed), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_budget_counts_segments() {
        let budget = Arc::new(Budget::default());
        let gate = Arc::new(CarrierGate::shared("c", 10, 4, budget));
        let times = calls(&[gate], 4, 3).await;
        // Three segments each at ten a second: one call every 300 ms.
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(300));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_budget_lets_nothing_through_and_no_burst_after() {
        let budget = Arc::new(Budget::default());
        let gate = Arc::new(CarrierGate::shared("c", 10, 4, budget.clone()));
        budget.down.store(true, Ordering::Release);
        let waited = tokio::time::timeout(Duration::from_secs(30), gate.acquire(1))
            .await
            .is_err();
        assert!(waited, "no call while the budget cannot be reached");

        budget.down.store(false, Ordering::Release);
        let recovered = Instant::now();
        let times = calls(&[gate], 10, 1).await;
        // Within a retry's delay of the bus coming back, then paced from there.
        assert!(
            times[0] - recovered <= Duration::from_secs(10),
            "{:?}",
            times[0] - recovered
        );
        assert!(
            times[9] - times[0] >= Duration::from_millis(900),
            "{:?}",
            times[9] - times[0]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_left_unused_are_not_spent_later_in_a_burst() {
        let budget = Arc::new(Budget::default());
        // Leases of 50 slots, 1 ms apart.
        let gate = Arc::new(CarrierGate::shared("c", 1_000, 4, budget.clone()));
        drop(gate.acquire(1).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        let started = Instant::now();
        let times = calls(&[gate], 50, 1).await;
        // The 49 slots of the first lease are a second old: at most `LATE` of
        // them may still go at once, the rest are paced.
        let took = times[49] - started;
        assert!(took >= Duration::from_millis(49) - LATE, "{took:?}");
        assert_eq!(budget.claims.load(Ordering::Relaxed), 2);
    }

    /// A budget whose claims take `delay` to come back.
    struct Slow(Budget, Duration);

    #[async_trait::async_trait]
    impl SharedRate for Slow {
        async fn claim(
            &self,
            carrier: &str,
            tokens: u32,
            interval: Duration,
        ) -> Result<crate::bus::rate::Lease, crate::bus::BusError> {
            let lease = self.0.claim(carrier, tokens, interval).await;
            tokio::time::sleep(self.1).await;
            lease
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_claim_does_not_waste_its_lease() {
        // Claims that take longer than a slot is kept: the leases are still used.
        let budget = Arc::new(Slow(Budget::default(), LATE * 3));
        let gate = Arc::new(CarrierGate::shared("c", 10, 4, budget.clone()));
        let times = calls(&[gate], 5, 1).await;
        assert_eq!(times.len(), 5);
        assert_eq!(
            budget.0.claims.load(Ordering::Relaxed),
            5,
            "one claim per call, none wasted"
        );
    }

    #[test]
    fn trips_are_reported_once_per_change() {
        let gate = CarrierGate::new(1, 1);
        assert!(gate.mark_tripped(true));
        assert!(!gate.mark_tripped(true));
        assert!(gate.mark_tripped(false));
    }
}
