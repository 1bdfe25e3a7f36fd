//! Campaign statistics from message counts.

use std::collections::BTreeMap;

use super::message::MessageStatus;

/// Message counters of a campaign (or of one A/B variant).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counters {
    /// Accepted by the carrier, delivered ones included.
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Queued or sending.
    pub pending: u64,
}

impl Counters {
    /// Adds `count` messages in `status`.
    pub fn add(&mut self, status: MessageStatus, count: u64) {
        match status {
            MessageStatus::Sent => self.sent += count,
            MessageStatus::Delivered => {
                self.sent += count;
                self.delivered += count;
            }
            MessageStatus::Failed => self.failed += count,
            MessageStatus::Queued | MessageStatus::Sending => self.pending += count,
        }
    }

    pub fn total(&self) -> u64 {
        self.sent + self.failed + self.pending
    }

    /// Delivered / sent, rounded to 2 decimals; 0 when nothing was sent.
    pub fn delivery_rate(&self) -> f64 {
        ratio(self.delivered, self.sent)
    }

    /// Sent / all messages, rounded to 2 decimals; 0 when there are none.
    pub fn success_rate(&self) -> f64 {
        ratio(self.sent, self.total())
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 100.0).round() / 100.0
    }
}

/// Counters overall and per variant, from `(variant, status, count)` rows.
pub fn tally<'a>(
    rows: impl IntoIterator<Item = (&'a str, MessageStatus, u64)>,
) -> (Counters, BTreeMap<String, Counters>) {
    let mut overall = Counters::default();
    let mut variants: BTreeMap<String, Counters> = BTreeMap::new();
    for (variant, status, count) in rows {
        overall.add(status, count);
        variants.entry(variant.to_string()).or_default().add(status, count);
    }
    (overall, variants)
}

/// A send task's status: `queuing` until every eligible contact has its
/// message; then from its counters: `completed` when nothing is pending,
/// `scheduled` while nothing has been handed out and the window has not
/// opened yet, else `running`.
pub fn task_status(queuing: bool, counters: &Counters, handed_out: bool, scheduled_for_passed: bool) -> &'static str {
    if queuing {
        "queuing"
    } else if counters.pending == 0 {
        "completed"
    } else if !handed_out && !scheduled_for_passed {
        "scheduled"
    } else {
        "running"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_status_follows_the_messages() {
        let pending = Counters {
            pending: 3,
            ..Counters::default()
        };
        assert_eq!(task_status(false, &pending, false, false), "scheduled");
        assert_eq!(task_status(false, &pending, false, true), "running");
        assert_eq!(task_status(false, &pending, true, false), "running");
        assert_eq!(task_status(false, &Counters::default(), false, false), "completed");
        // Still creating its messages: whatever those already made say.
        assert_eq!(task_status(true, &pending, true, true), "queuing");
        assert_eq!(task_status(true, &Counters::default(), false, false), "queuing");
    }

    #[test]
    fn delivered_counts_as_sent_so_rates_stay_within_one() {
        use MessageStatus::*;
        let (all, variants) = tally([("a", Delivered, 3), ("a", Sent, 1), ("b", Failed, 1), ("b", Queued, 2)]);
        assert_eq!(
            all,
            Counters {
                sent: 4,
                delivered: 3,
                failed: 1,
                pending: 2
            }
        );
        assert_eq!(all.delivery_rate(), 0.75);
        assert_eq!(all.success_rate(), 0.57);
        assert_eq!(variants["b"].sent, 0);
        assert_eq!(Counters::default().delivery_rate(), 0.0);
    }
}
