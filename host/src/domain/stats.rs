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
    /// Of the pending: waiting on a recipient rule (SPEC §4.1).
    pub held: u64,
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

impl Counters {
    /// Adds `count` messages in `status`, held by rule `hold` ('' when none).
    pub fn add_held(&mut self, status: MessageStatus, hold: &str, count: u64) {
        self.add(status, count);
        if is_held(status, hold) {
            self.held += count;
        }
    }
}

/// Whether a message in `status` with hold rule `hold` waits on a rule: a
/// queued one keeps the rule that last held it until it is handed out.
fn is_held(status: MessageStatus, hold: &str) -> bool {
    status == MessageStatus::Queued && !hold.is_empty()
}

/// A campaign's (or task's) counters: overall, per variant, and held messages per rule.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub all: Counters,
    pub variants: BTreeMap<String, Counters>,
    pub held_by_rule: BTreeMap<String, u64>,
}

/// Tallies `(variant, status, hold rule, count)` rows.
pub fn tally<'a>(rows: impl IntoIterator<Item = (&'a str, MessageStatus, &'a str, u64)>) -> Tally {
    let mut tally = Tally::default();
    for (variant, status, hold, count) in rows {
        tally.all.add_held(status, hold, count);
        tally
            .variants
            .entry(variant.to_string())
            .or_default()
            .add_held(status, hold, count);
        if is_held(status, hold) && count > 0 {
            *tally.held_by_rule.entry(hold.to_string()).or_default() += count;
        }
    }
    tally
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
        let Tally { all, variants, .. } = tally([
            ("a", Delivered, "", 3),
            ("a", Sent, "", 1),
            ("b", Failed, "", 1),
            ("b", Queued, "", 2),
        ]);
        assert_eq!(
            all,
            Counters {
                sent: 4,
                delivered: 3,
                failed: 1,
                pending: 2,
                held: 0,
            }
        );
        assert_eq!(all.delivery_rate(), 0.75);
        assert_eq!(all.success_rate(), 0.57);
        assert_eq!(variants["b"].sent, 0);
        assert_eq!(Counters::default().delivery_rate(), 0.0);
    }

    #[test]
    fn held_messages_are_pending_and_counted_by_rule() {
        use MessageStatus::*;
        let counted = tally([
            ("a", Queued, "us-fl", 2),
            ("b", Queued, "us-federal", 1),
            ("a", Queued, "", 4),
            // Handed out since: no longer held, whatever held it before.
            ("a", Sending, "", 3),
        ]);
        assert_eq!(counted.all.pending, 10);
        assert_eq!(counted.all.held, 3);
        assert_eq!(counted.variants["b"].held, 1);
        assert_eq!(
            counted.held_by_rule,
            BTreeMap::from([("us-federal".to_string(), 1), ("us-fl".to_string(), 2)])
        );
    }
}
