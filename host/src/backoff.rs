//! One retry schedule for Herald's own loops against the database and the bus
//! (applying results, publishing jobs, results and events, reopening inboxes):
//! exponential from 100 ms to 5 s with jitter, so many loops failing at once
//! (the database or NATS went away) do not retry in lockstep, and a short
//! outage is noticed quickly. Take a fresh schedule for each run of failures.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

const FIRST: Duration = Duration::from_millis(100);
const LONGEST: Duration = Duration::from_secs(5);

/// The delays before each retry of one run of failures, without end.
pub type Delays = backon::ExponentialBackoff;

pub fn delays() -> Delays {
    ExponentialBuilder::default()
        .with_min_delay(FIRST)
        .with_max_delay(LONGEST)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_a_cap_and_never_end() {
        let delays: Vec<Duration> = delays().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(delays[0] >= FIRST && delays[0] < FIRST * 3, "{:?}", delays[0]);
        // Jitter adds up to one more delay on top of the capped one.
        assert!(delays.iter().all(|d| *d <= LONGEST * 2), "{delays:?}");
        assert!(delays[49] >= LONGEST, "{:?}", delays[49]);
    }
}
