//! The campaign forecast (SPEC §4, §4.1; issue 11 "Preview"): when a campaign
//! will finish under its window, daily limit, the carrier's rate and the
//! recipient rules. Pure: time and the rules come in as arguments.
//!
//! The model follows the scheduler. While the campaign may send and the daily
//! limit has room, it scans the due messages oldest first (`ORDER BY
//! not_before, id`): those allowed at their recipient are handed out, at the
//! carrier's rate; the others are passed over and rejoin the queue at their
//! group's next allowed instant, without using the limit or blocking the rest.
//! Messages due since the same instant are interleaved in the queue, so the
//! scan meets each group's in proportion to what it has there: a national
//! campaign sends Eastern numbers first, and the Pacific ones the scan has not
//! reached yet go, mixed with the Eastern backlog, once their morning comes;
//! the Pacific ones passed over go after.
//!
//! The simulation moves from event to event (a group opens or closes, a
//! campaign-local day starts, the limit is used up, the allowed messages at the
//! head of the queue run out), so its cost grows with groups and days, never
//! with recipients. Tests check it against a message-by-message run.

use std::collections::BTreeMap;

use chrono::{DateTime, MappedLocalTime, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// Hand-outs per second when the carrier has no rate limit: about what the
/// host's dispatch manages. Callers may pass their own measured figure.
pub const DEFAULT_UNTHROTTLED_RATE: f64 = 2000.0;

/// Fewer waiting messages than this count as none: the fluid model leaves
/// rounding dust that would otherwise keep a group alive forever.
const EMPTY: f64 = 1e-6;

/// Longest run of local time a zone has skipped (Pacific/Apia dropped all of
/// 2011-12-30), with slack; bounds the search for a day start in a gap.
const MAX_GAP: TimeDelta = TimeDelta::hours(26);

/// When the recipients of a group may be handed out: the campaign window and
/// every rule that holds them. Must be a pure function of its arguments: the
/// forecast asks once per change and trusts the answer until the next one.
pub trait Availability {
    /// For a group of recipients: the earliest instant >= `at` at which they may
    /// be handed out (== `at` when allowed now). Includes the campaign window.
    /// A group never allowed again may answer any instant past the forecast's
    /// horizon (e.g. `DateTime::<Utc>::MAX_UTC`).
    fn next_allowed(&self, group: usize, at: DateTime<Utc>) -> DateTime<Utc>;

    /// For a group allowed at `at`: the end of the allowed span containing `at`,
    /// i.e. the first instant after `at` at which it is held (`MAX_UTC` when it
    /// never is). Only asked when `next_allowed(group, at) == at`.
    fn allowed_until(&self, group: usize, at: DateTime<Utc>) -> DateTime<Utc>;
}

/// What the forecast starts from.
pub struct ForecastInput<'a, A: Availability> {
    /// Recipients waiting per group (index = group id).
    pub groups: &'a [u64],
    /// Now: the forecast starts here.
    pub start: DateTime<Utc>,
    /// Messages the campaign may hand out per campaign-local day.
    pub daily_limit: u32,
    /// Already used of today's (the day of `start`) limit.
    pub handed_today: u32,
    /// The campaign's zone: its local calendar days count the daily limit.
    pub campaign_zone: Tz,
    /// The carrier's messages per second; `None` when it has no limit.
    pub rate_per_second: Option<f64>,
    /// Messages per second when `rate_per_second` is `None`
    /// (see [`DEFAULT_UNTHROTTLED_RATE`]).
    pub unthrottled_rate: f64,
    /// When each group may be handed out.
    pub availability: &'a A,
    /// How far ahead to look (e.g. 400 days); past it the finish is unknown.
    /// The cost grows with the days simulated, so keep it to what is useful.
    pub horizon: TimeDelta,
}

/// When one group's recipients are handed out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupOutcome {
    /// Recipients the group had waiting at the start.
    pub recipients: u64,
    /// The first hand-out; `None` when none happens within the horizon.
    pub first: Option<DateTime<Utc>>,
    /// The last hand-out; `None` when the group is not done within the horizon.
    pub last: Option<DateTime<Utc>>,
}

/// The forecast's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastOutcome {
    /// When the last message is handed out; `None` when that is past the
    /// horizon (or never: a group never allowed, a zero limit or rate).
    pub finish: Option<DateTime<Utc>>,
    /// Per group (same order as the input): first and last hand-out instants.
    pub groups: Vec<GroupOutcome>,
    /// Messages handed out per campaign-local day, in order; days with none are
    /// left out. Whole messages: the running total is rounded, so they add up.
    pub days: Vec<(NaiveDate, u64)>,
}

/// One group while the simulation runs.
struct Group {
    /// Messages not handed out yet, wherever they are in the queue.
    waiting: f64,
    allowed: bool,
    /// The instant `allowed` flips; valid until then. For a held group, its
    /// next allowed instant: where its passed-over messages rejoin the queue.
    changes_at: DateTime<Utc>,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.waiting < EMPTY
    }

    /// Reads the group's state at `at` from the availability.
    fn probe(&mut self, availability: &impl Availability, id: usize, at: DateTime<Utc>) {
        let next = availability.next_allowed(id, at).max(at);
        let until = (next == at).then(|| availability.allowed_until(id, at));
        match until {
            Some(until) if until > at => {
                self.allowed = true;
                self.changes_at = until;
            }
            // Allowed for no time at all: an inconsistent answer. Ask again a
            // second later rather than stalling on the same instant.
            Some(_) => {
                self.allowed = false;
                self.changes_at = at + TimeDelta::seconds(1);
            }
            None => {
                self.allowed = false;
                self.changes_at = next;
            }
        }
    }

    /// Forgets `amount` of rounding dust; the group is done when only dust is left.
    fn drop_dust(&mut self, amount: f64, at: DateTime<Utc>) {
        self.waiting -= amount;
        if self.is_empty() {
            self.waiting = 0.0;
            self.last.get_or_insert(at);
        }
    }
}

/// The queue as the scheduler sees it (`ORDER BY not_before, id`): per
/// `not_before`, the messages of each group due since then (index = group).
/// Messages due since the same instant are interleaved by id, so a scan meets
/// each group's in proportion to what it has there.
struct Queue {
    classes: BTreeMap<DateTime<Utc>, Vec<f64>>,
    groups: usize,
}

impl Queue {
    /// Puts `amount` of group `id`'s messages back with `not_before = due`.
    fn rejoin(&mut self, due: DateTime<Utc>, id: usize, amount: f64) {
        let class = self.classes.entry(due).or_insert_with(|| vec![0.0; self.groups]);
        class[id] += amount;
    }

    /// The oldest due messages with an allowed group among them, and how many
    /// allowed ones they hold. Older due messages, all held, are passed over
    /// by the scan on the way: each rejoins at its group's next allowed instant.
    fn front(&mut self, groups: &mut [Group], now: DateTime<Utc>) -> Option<(DateTime<Utc>, f64)> {
        while let Some((due, class)) = self.classes.first_key_value().filter(|(due, _)| **due <= now) {
            let allowed: f64 = class
                .iter()
                .zip(&*groups)
                .filter(|(_, g)| g.allowed)
                .map(|(amount, _)| amount)
                .sum();
            if allowed >= EMPTY {
                return Some((*due, allowed));
            }
            let Some((_, class)) = self.classes.pop_first() else {
                break;
            };
            for (id, amount) in class.into_iter().enumerate().filter(|&(_, amount)| amount > 0.0) {
                let group = &mut groups[id];
                if group.allowed || amount < EMPTY {
                    group.drop_dust(amount, now);
                } else {
                    self.rejoin(group.changes_at, id, amount);
                }
            }
        }
        None
    }
}

/// Forecasts when each group, and the campaign, will be handed out.
///
/// All recipients are taken as due at `start`, in one interleaved queue.
/// A rate that is not a positive number (or a zero daily limit) hands nothing
/// out, so nothing finishes.
pub fn simulate<A: Availability>(input: &ForecastInput<A>) -> ForecastOutcome {
    let zone = input.campaign_zone;
    let end = input
        .start
        .checked_add_signed(input.horizon)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let rate = input.rate_per_second.unwrap_or(input.unthrottled_rate);
    let sends = rate.is_finite() && rate > 0.0;
    let limit = f64::from(input.daily_limit);

    let mut groups: Vec<Group> = input
        .groups
        .iter()
        .map(|&waiting| Group {
            waiting: waiting as f64,
            allowed: false,
            changes_at: input.start,
            first: None,
            last: (waiting == 0).then_some(input.start),
        })
        .collect();
    let mut queue = Queue {
        classes: BTreeMap::new(),
        groups: groups.len(),
    };
    queue
        .classes
        .insert(input.start, groups.iter().map(|g| g.waiting).collect());

    let mut now = input.start;
    let mut day = local_day(zone, now);
    let mut day_ends = day_end(zone, day, now);
    let mut used_today = f64::from(input.handed_today);
    let mut handed_per_day: Vec<(NaiveDate, f64)> = vec![(day, 0.0)];

    while sends && now < end && groups.iter().any(|g| !g.is_empty()) {
        let limit_reached = used_today >= limit - EMPTY;
        let mut next_change = end;
        let mut any_allowed = false;
        // While the limit is used up the groups' states do not matter; they are
        // read again once the next day starts (answers stay valid meanwhile).
        if !limit_reached {
            for (id, group) in groups.iter_mut().enumerate().filter(|(_, g)| !g.is_empty()) {
                if group.changes_at <= now {
                    group.probe(input.availability, id, now);
                }
                next_change = next_change.min(group.changes_at);
                any_allowed |= group.allowed;
            }
        }
        // The scheduler scans the queue only while something may go; with every
        // group held (the campaign window closed) the messages keep their places.
        let front = if any_allowed {
            queue.front(&mut groups, now)
        } else {
            None
        };

        if let Some((due, allowed_waiting)) = front {
            let next_event = next_change.min(day_ends);
            let until_event = (next_event - now).as_seconds_f64();
            let until_empty = allowed_waiting / rate;
            let until_limit = (limit - used_today) / rate;
            let (handed, step_end) = if until_empty <= until_event.min(until_limit) {
                (allowed_waiting, after_seconds(now, until_empty, next_event))
            } else if until_limit <= until_event {
                (limit - used_today, after_seconds(now, until_limit, next_event))
            } else {
                (rate * until_event, next_event)
            };
            let handed = handed.min(allowed_waiting);
            // The scan meets every group of the class in proportion: allowed
            // ones are handed out, held ones passed over (they rejoin later).
            let scanned = handed / allowed_waiting;
            let mut class = queue.classes.remove(&due).unwrap_or_default();
            for (id, amount) in class.iter_mut().enumerate().filter(|(_, amount)| **amount > 0.0) {
                let met = *amount * scanned;
                *amount -= met;
                let group = &mut groups[id];
                if group.is_empty() {
                    // Dust of a group already done.
                    *amount = 0.0;
                } else if group.allowed {
                    group.first.get_or_insert(now);
                    group.waiting -= met;
                    if group.is_empty() {
                        group.waiting = 0.0;
                        group.last = Some(step_end);
                        *amount = 0.0;
                    }
                } else {
                    queue.rejoin(group.changes_at, id, met);
                }
            }
            if class.iter().any(|&amount| amount > 0.0) {
                queue.classes.insert(due, class);
            }
            used_today += handed;
            if let Some((_, count)) = handed_per_day.last_mut() {
                *count += handed;
            }
            now = step_end;
        } else if limit_reached {
            now = day_ends.min(end);
        } else {
            // Nothing to hand out until a group opens: skip the days between.
            now = next_change;
        }

        // Past the horizon the day does not matter (and may be beyond the calendar).
        if now >= day_ends && now < end {
            day = local_day(zone, now);
            day_ends = day_end(zone, day, now);
            used_today = 0.0;
            handed_per_day.push((day, 0.0));
        }
    }

    let finish = groups
        .iter()
        .map(|g| g.last)
        .collect::<Option<Vec<_>>>()
        .and_then(|lasts| lasts.into_iter().max());
    ForecastOutcome {
        finish: finish.or(input.groups.is_empty().then_some(input.start)),
        groups: groups
            .iter()
            .zip(input.groups)
            .map(|(g, &recipients)| GroupOutcome {
                recipients,
                first: g.first,
                last: g.last,
            })
            .collect(),
        days: whole_messages(&handed_per_day),
    }
}

/// Per-day counts in whole messages: each day gets the growth of the rounded
/// running total, so the days add up to the rounded total.
fn whole_messages(per_day: &[(NaiveDate, f64)]) -> Vec<(NaiveDate, u64)> {
    let mut running = 0.0;
    let mut counted = 0u64;
    let mut days = Vec::new();
    for &(day, handed) in per_day {
        running += handed;
        let total = running.round() as u64;
        if total > counted {
            days.push((day, total - counted));
            counted = total;
        }
    }
    days
}

/// `seconds` after `from`, rounded up to the nanosecond and capped at `cap`
/// (an event the step must not pass).
fn after_seconds(from: DateTime<Utc>, seconds: f64, cap: DateTime<Utc>) -> DateTime<Utc> {
    let span = (cap - from).as_seconds_f64();
    if seconds >= span {
        return cap;
    }
    // Below the cap, so it fits in i64 nanoseconds (the horizon bounds the cap).
    let step = from + TimeDelta::nanoseconds((seconds * 1e9).ceil() as i64);
    step.min(cap)
}

/// The campaign-local calendar day of `at`.
fn local_day(zone: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&zone).date_naive()
}

/// The first instant of the local day after `day`: its midnight, or the first
/// valid instant after it when midnight falls in a DST gap. Always after `now`.
fn day_end(zone: Tz, day: NaiveDate, now: DateTime<Utc>) -> DateTime<Utc> {
    let midnight = day.succ_opt().unwrap_or(day).and_hms_opt(0, 0, 0).unwrap_or_default();
    let start = day_start(zone, midnight);
    // Only a zone whose clock runs backwards over a whole day could fail this.
    if start > now { start } else { now + TimeDelta::hours(1) }
}

/// The instant a local midnight stands for: the earliest in a fold, the first
/// valid instant after it in a gap.
fn day_start(zone: Tz, midnight: NaiveDateTime) -> DateTime<Utc> {
    let exists = |t: NaiveDateTime| zone.from_local_datetime(&t).earliest();
    match zone.from_local_datetime(&midnight) {
        MappedLocalTime::Single(t) | MappedLocalTime::Ambiguous(t, _) => t.to_utc(),
        MappedLocalTime::None => {
            let mut t = midnight + TimeDelta::minutes(1);
            while exists(t).is_none() && t - midnight <= MAX_GAP {
                t += TimeDelta::minutes(1);
            }
            exists(t).map_or_else(|| midnight.and_utc(), |t| t.to_utc())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveTime, Weekday};
    use chrono_tz::America::{Los_Angeles, New_York};

    /// A daily local window `[start, end)` in a zone, on some weekdays.
    #[derive(Clone, Copy)]
    struct LocalWindow {
        zone: Tz,
        start: NaiveTime,
        end: NaiveTime,
        sundays: bool,
    }

    fn window(zone: Tz, start: u32, end: u32) -> LocalWindow {
        let hour = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("an hour of the day");
        LocalWindow {
            zone,
            start: hour(start),
            end: hour(end),
            sundays: true,
        }
    }

    impl LocalWindow {
        fn span_on(&self, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
            if !self.sundays && day.weekday() == Weekday::Sun {
                return None;
            }
            let at = |time| day_start(self.zone, day.and_time(time));
            Some((at(self.start), at(self.end)))
        }

        fn spans_from(&self, at: DateTime<Utc>) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
            let today = local_day(self.zone, at);
            today
                .iter_days()
                .take(15)
                .filter_map(|day| self.span_on(day))
                .filter(move |&(_, close)| close > at)
        }

        fn next_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
            self.spans_from(at)
                .next()
                .map_or(DateTime::<Utc>::MAX_UTC, |(open, _)| open.max(at))
        }

        fn close_after(&self, at: DateTime<Utc>) -> DateTime<Utc> {
            self.spans_from(at).next().map_or(at, |(_, close)| close)
        }
    }

    /// Per group: windows that must all be open (campaign window, recipient
    /// hours); an empty list means always allowed, `None` never.
    struct Windows(Vec<Option<Vec<LocalWindow>>>);

    impl Availability for Windows {
        fn next_allowed(&self, group: usize, at: DateTime<Utc>) -> DateTime<Utc> {
            let Some(windows) = &self.0[group] else {
                return DateTime::<Utc>::MAX_UTC;
            };
            let mut t = at;
            loop {
                let next = windows.iter().map(|w| w.next_open(t)).max().unwrap_or(t);
                if next == t || next == DateTime::<Utc>::MAX_UTC {
                    return next;
                }
                t = next;
            }
        }

        fn allowed_until(&self, group: usize, at: DateTime<Utc>) -> DateTime<Utc> {
            let windows = self.0[group].as_deref().unwrap_or_default();
            windows
                .iter()
                .map(|w| w.close_after(at))
                .min()
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 instant")
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().expect("a date")
    }

    fn input<'a>(groups: &'a [u64], start: &str, availability: &'a Windows) -> ForecastInput<'a, Windows> {
        ForecastInput {
            groups,
            start: utc(start),
            daily_limit: u32::MAX,
            handed_today: 0,
            campaign_zone: New_York,
            rate_per_second: Some(10.0),
            unthrottled_rate: DEFAULT_UNTHROTTLED_RATE,
            availability,
            horizon: TimeDelta::days(400),
        }
    }

    /// Within a millisecond: the fluid model rounds steps up to the nanosecond.
    fn assert_near(actual: Option<DateTime<Utc>>, expected: &str) {
        let actual = actual.expect("an instant");
        let off = (actual - utc(expected)).abs();
        assert!(off < TimeDelta::milliseconds(1), "{actual} is not {expected}");
    }

    #[test]
    fn one_always_allowed_group_finishes_after_its_size_over_the_rate() {
        let always = Windows(vec![Some(vec![])]);
        let outcome = simulate(&input(&[1000], "2026-06-01T12:00:00Z", &always));
        assert_near(outcome.finish, "2026-06-01T12:01:40Z");
        assert_eq!(outcome.groups[0].first, Some(utc("2026-06-01T12:00:00Z")));
        assert_eq!(outcome.days, vec![(date("2026-06-01"), 1000)]);
    }

    #[test]
    fn without_a_carrier_rate_the_unthrottled_rate_applies() {
        let always = Windows(vec![Some(vec![])]);
        let mut unthrottled = input(&[4000], "2026-06-01T12:00:00Z", &always);
        unthrottled.rate_per_second = None;
        assert_near(simulate(&unthrottled).finish, "2026-06-01T12:00:02Z");
    }

    #[test]
    fn a_daily_limit_of_1000_spreads_2500_recipients_over_three_days() {
        let campaign_window = Windows(vec![Some(vec![window(New_York, 9, 18)])]);
        let mut limited = input(&[2500], "2026-06-01T12:00:00Z", &campaign_window);
        limited.daily_limit = 1000;
        let outcome = simulate(&limited);
        let days = vec![
            (date("2026-06-01"), 1000),
            (date("2026-06-02"), 1000),
            (date("2026-06-03"), 500),
        ];
        assert_eq!(outcome.days, days);
        // 09:00 EDT on the third day, plus 500 messages at 10/s.
        assert_near(outcome.finish, "2026-06-03T13:00:50Z");
    }

    #[test]
    fn what_was_handed_out_today_already_counts_against_the_limit() {
        let always = Windows(vec![Some(vec![])]);
        let mut limited = input(&[500], "2026-06-01T12:00:00Z", &always);
        limited.daily_limit = 1000;
        limited.handed_today = 800;
        let outcome = simulate(&limited);
        assert_eq!(outcome.days, vec![(date("2026-06-01"), 200), (date("2026-06-02"), 300)]);
        // Midnight in New York (EDT) starts the next day's allowance.
        assert_near(outcome.finish, "2026-06-02T04:00:30Z");
    }

    #[test]
    fn eastern_numbers_go_first_and_pacific_ones_when_their_morning_comes() {
        let campaign = window(New_York, 9, 18);
        let new_york = vec![campaign, window(New_York, 8, 21)];
        let los_angeles = vec![campaign, window(Los_Angeles, 8, 21)];
        let availability = Windows(vec![Some(los_angeles), Some(new_york)]);
        // 720 New York numbers take exactly the two hours before Los Angeles opens.
        let mut national = input(&[1000, 720], "2026-06-01T11:00:00Z", &availability);
        national.rate_per_second = Some(0.1);
        let outcome = simulate(&national);
        // 09:00 EDT for New York; 08:00 PDT (11:00 EDT) for Los Angeles.
        assert_eq!(outcome.groups[1].first, Some(utc("2026-06-01T13:00:00Z")));
        assert_near(outcome.groups[1].last, "2026-06-01T15:00:00Z");
        assert_eq!(outcome.groups[0].first, Some(utc("2026-06-01T15:00:00Z")));
        assert_near(outcome.finish, "2026-06-01T17:46:40Z");
    }

    #[test]
    fn pacific_numbers_passed_over_before_their_morning_go_after_the_rest() {
        let campaign = window(New_York, 9, 18);
        let new_york = vec![campaign, window(New_York, 8, 21)];
        let los_angeles = vec![campaign, window(Los_Angeles, 8, 21)];
        let availability = Windows(vec![Some(los_angeles), Some(new_york)]);
        let mut national = input(&[1000, 1000], "2026-06-01T11:00:00Z", &availability);
        national.rate_per_second = Some(0.1);
        let outcome = simulate(&national);
        // By 11:00 EDT the scan has handed out 720 New York numbers and passed
        // over 720 Los Angeles ones (they rejoin at 11:00). The 280 + 280 not
        // reached yet go together, interleaved, then the 720 passed over.
        assert_eq!(outcome.groups[0].first, Some(utc("2026-06-01T15:00:00Z")));
        assert_near(outcome.groups[1].last, "2026-06-01T16:33:20Z");
        assert_near(outcome.finish, "2026-06-01T18:33:20Z");
    }

    #[test]
    fn a_group_never_allowed_leaves_the_finish_unknown_but_the_rest_goes() {
        let availability = Windows(vec![Some(vec![]), None]);
        let outcome = simulate(&input(&[100, 100], "2026-06-01T12:00:00Z", &availability));
        assert_eq!(outcome.finish, None);
        assert_near(outcome.groups[0].last, "2026-06-01T12:00:10Z");
        assert_eq!((outcome.groups[1].first, outcome.groups[1].last), (None, None));
        assert_eq!(outcome.days, vec![(date("2026-06-01"), 100)]);
    }

    #[test]
    fn an_endless_horizon_still_ends_when_a_group_is_never_allowed() {
        let availability = Windows(vec![None]);
        let mut endless = input(&[100], "2026-06-01T12:00:00Z", &availability);
        endless.horizon = TimeDelta::MAX;
        endless.campaign_zone = chrono_tz::Asia::Tokyo;
        assert_eq!(simulate(&endless).finish, None);
    }

    #[test]
    fn a_sunday_ban_holds_its_group_without_using_the_daily_limit() {
        let campaign = window(New_York, 9, 18);
        let banned = LocalWindow {
            sundays: false,
            ..campaign
        };
        let availability = Windows(vec![Some(vec![campaign]), Some(vec![banned])]);
        // Sunday 2026-06-07, 09:00 EDT.
        let mut sunday = input(&[300, 300], "2026-06-07T13:00:00Z", &availability);
        sunday.daily_limit = 300;
        let outcome = simulate(&sunday);
        assert_near(outcome.groups[0].last, "2026-06-07T13:00:30Z");
        assert_eq!(outcome.groups[1].first, Some(utc("2026-06-08T13:00:00Z")));
        assert_eq!(outcome.days, vec![(date("2026-06-07"), 300), (date("2026-06-08"), 300)]);
    }

    #[test]
    fn the_window_follows_local_time_across_the_spring_and_autumn_changes() {
        let availability = Windows(vec![Some(vec![window(New_York, 9, 18)])]);
        // Friday before 2026-03-08 (clocks go forward): 100 a day, 09:00 local.
        let mut spring = input(&[300], "2026-03-06T14:00:00Z", &availability);
        spring.daily_limit = 100;
        let outcome = simulate(&spring);
        let days = vec![
            (date("2026-03-06"), 100),
            (date("2026-03-07"), 100),
            (date("2026-03-08"), 100),
        ];
        assert_eq!(outcome.days, days);
        // Sunday 09:00 is EDT (UTC-4), an hour earlier in UTC than Friday's.
        assert_near(outcome.finish, "2026-03-08T13:00:10Z");

        // Around 2026-11-01 (clocks go back): Sunday 09:00 EST is 14:00 UTC.
        let mut autumn = input(&[300], "2026-10-30T13:00:00Z", &availability);
        autumn.daily_limit = 100;
        assert_near(simulate(&autumn).finish, "2026-11-01T14:00:10Z");
    }

    #[test]
    fn the_limit_day_is_the_campaign_zones_day_across_a_dst_change() {
        // Sending around the clock: each day's allowance starts at New York midnight,
        // 04:00 UTC under EDT (also on 2026-11-01: the change is at 02:00) and
        // 05:00 UTC under EST.
        let always = Windows(vec![Some(vec![])]);
        let mut limited = input(&[250], "2026-10-31T12:00:00Z", &always);
        limited.daily_limit = 100;
        let outcome = simulate(&limited);
        assert_near(outcome.groups[0].first, "2026-10-31T12:00:00Z");
        // 2026-11-01 starts at 04:00 UTC (EDT), 2026-11-02 at 05:00 UTC (EST).
        assert_near(outcome.finish, "2026-11-02T05:00:05Z");
    }

    #[test]
    fn allowed_groups_share_the_rate_in_proportion_to_what_they_have_waiting() {
        let always = Windows(vec![Some(vec![]), Some(vec![])]);
        let outcome = simulate(&input(&[3000, 1000], "2026-06-01T12:00:00Z", &always));
        // 3:1 share, so both empty together after 4000 / 10 s.
        assert_near(outcome.groups[0].last, "2026-06-01T12:06:40Z");
        assert_near(outcome.groups[1].last, "2026-06-01T12:06:40Z");
    }

    #[test]
    fn a_group_that_closes_keeps_what_it_had_left_for_its_next_opening() {
        let hour = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("an hour");
        let utc_window = |start, end| LocalWindow {
            zone: chrono_tz::UTC,
            start: hour(start),
            end: hour(end),
            sundays: true,
        };
        // Group 0 always allowed, group 1 only 12:00–13:00 UTC, both 36,000 waiting,
        // 10/s: in the hour they share equally (18,000 each), then group 0 alone.
        let availability = Windows(vec![Some(vec![]), Some(vec![utc_window(12, 13)])]);
        let outcome = simulate(&input(&[36_000, 36_000], "2026-06-01T12:00:00Z", &availability));
        // Group 0: 18,000 left at 13:00, 30 minutes more alone.
        assert_near(outcome.groups[0].last, "2026-06-01T13:30:00Z");
        // Group 1: 18,000 left for tomorrow's hour, which it has to itself.
        assert_near(outcome.groups[1].last, "2026-06-02T12:30:00Z");
        assert_near(outcome.finish, "2026-06-02T12:30:00Z");
    }

    #[test]
    fn no_recipients_finish_at_once_and_a_zero_rate_never() {
        let always = Windows(vec![Some(vec![])]);
        assert_eq!(
            simulate(&input(&[], "2026-06-01T12:00:00Z", &always)).finish,
            Some(utc("2026-06-01T12:00:00Z"))
        );
        let mut stalled = input(&[10], "2026-06-01T12:00:00Z", &always);
        stalled.rate_per_second = Some(0.0);
        assert_eq!(simulate(&stalled).finish, None);
        stalled.rate_per_second = Some(10.0);
        stalled.daily_limit = 0;
        assert_eq!(simulate(&stalled).finish, None);
    }

    /// A national campaign: 300 groups spread over the US zones, some with a
    /// Sunday ban, behind a 09:00–18:00 New York window.
    fn national(total: u64) -> (Vec<u64>, Windows) {
        use chrono_tz::America::{Anchorage, Chicago, Denver, Phoenix};
        use chrono_tz::Pacific::Honolulu;
        let zones = [New_York, Chicago, Denver, Phoenix, Los_Angeles, Anchorage, Honolulu];
        let campaign = window(New_York, 9, 18);
        let windows = (0..300)
            .map(|g| {
                let local = LocalWindow {
                    sundays: g % 7 != 0,
                    ..window(zones[g % zones.len()], 8 + (g % 2) as u32, 20)
                };
                Some(vec![campaign, local])
            })
            .collect();
        let sizes = (0..300u64).map(|g| total / 300 + u64::from(g < total % 300)).collect();
        (sizes, Windows(windows))
    }

    #[test]
    fn a_national_campaign_hands_out_every_recipient_exactly_once() {
        let (sizes, availability) = national(1_000_000);
        let mut forecast = input(&sizes, "2026-06-01T12:00:00Z", &availability);
        forecast.daily_limit = 100_000;
        forecast.rate_per_second = Some(50.0);
        let outcome = simulate(&forecast);
        assert!(outcome.finish.is_some());
        assert_eq!(outcome.days.iter().map(|&(_, n)| n).sum::<u64>(), 1_000_000);
        assert!(outcome.days.iter().all(|&(_, n)| n <= 100_000), "{:?}", outcome.days);
    }

    /// Timing, reported in DELIVERY.md: `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn timing_of_a_million_recipients_in_300_groups() {
        let (sizes, availability) = national(1_000_000);
        for (daily_limit, rate) in [(100_000, Some(50.0)), (1_000_000, None), (2_500, Some(50.0))] {
            let mut forecast = input(&sizes, "2026-06-01T12:00:00Z", &availability);
            forecast.daily_limit = daily_limit;
            forecast.rate_per_second = rate;
            let started = std::time::Instant::now();
            let outcome = simulate(&forecast);
            let took = started.elapsed();
            // The same probes again, alone: what the test's availability costs.
            let probing = std::time::Instant::now();
            for group in 0..sizes.len() {
                let mut at = forecast.start;
                while at < forecast.start + TimeDelta::days(outcome.days.len() as i64) {
                    let next = availability.next_allowed(group, at);
                    at = availability.allowed_until(group, next);
                }
            }
            println!(
                "limit {daily_limit}, rate {rate:?}: finish {:?}, {} days, took {took:?} \
                 (walking every group's spans alone: {:?})",
                outcome.finish,
                outcome.days.len(),
                probing.elapsed()
            );
        }
    }

    /// The scheduler, message by message, once a second, as the store does it:
    /// while the campaign window is open and the day's limit has room, it scans
    /// the due messages oldest first (`ORDER BY not_before, id`), hands out
    /// those allowed (up to the rate) and sets the others' `not_before` to their
    /// next allowed instant. Returns each group's last hand-out.
    fn scheduler_run(
        forecast: &ForecastInput<Windows>,
        campaign: &LocalWindow,
        rate: usize,
    ) -> Vec<Option<DateTime<Utc>>> {
        let availability = forecast.availability;
        // Queue order interleaves the groups evenly: message `seq` goes to the
        // group furthest behind its share.
        let total: u64 = forecast.groups.iter().sum();
        let mut queue = std::collections::BTreeSet::new();
        let mut placed = vec![0u64; forecast.groups.len()];
        for seq in 0..total {
            let behind = |g: usize| (placed[g] as f64 + 0.5) / forecast.groups[g] as f64;
            let group = (0..forecast.groups.len())
                .filter(|&g| placed[g] < forecast.groups[g])
                .min_by(|&a, &b| behind(a).total_cmp(&behind(b)))
                .expect("a group with room");
            placed[group] += 1;
            queue.insert((forecast.start, seq, group));
        }
        let (mut now, end) = (forecast.start, forecast.start + forecast.horizon);
        let mut day = local_day(forecast.campaign_zone, now);
        let mut used = forecast.handed_today;
        let mut lasts = vec![None; forecast.groups.len()];
        while now < end && !queue.is_empty() {
            if local_day(forecast.campaign_zone, now) != day {
                day = local_day(forecast.campaign_zone, now);
                used = 0;
            }
            let window_open = campaign.next_open(now) == now;
            let mut next_allowed: Vec<Option<DateTime<Utc>>> = vec![None; lasts.len()];
            let mut handed = 0;
            while window_open && handed < rate && used < forecast.daily_limit {
                let Some(&(not_before, seq, group)) = queue.first().filter(|(due, _, _)| *due <= now) else {
                    break;
                };
                queue.remove(&(not_before, seq, group));
                let allowed_at = *next_allowed[group].get_or_insert_with(|| availability.next_allowed(group, now));
                if allowed_at == now {
                    lasts[group] = Some(now);
                    handed += 1;
                    used += 1;
                } else {
                    queue.insert((allowed_at, seq, group));
                }
            }
            let next_second = now + TimeDelta::seconds(1);
            now = if used >= forecast.daily_limit {
                day_end(forecast.campaign_zone, day, now)
            } else if !window_open {
                campaign.next_open(now)
            } else if handed == 0 {
                queue.first().map_or(end, |&(due, _, _)| due).max(next_second)
            } else {
                next_second
            };
        }
        lasts
    }

    #[test]
    fn the_forecast_agrees_with_a_message_by_message_scheduler_run() {
        use chrono_tz::America::{Chicago, Denver};
        use chrono_tz::Pacific::Honolulu;
        let campaign = window(New_York, 9, 18);
        let recipient_hours = |zone| Some(vec![campaign, window(zone, 8, 21)]);
        let no_sundays = LocalWindow {
            sundays: false,
            ..window(Chicago, 9, 20)
        };
        let availability = Windows(vec![
            recipient_hours(New_York),
            recipient_hours(Chicago),
            Some(vec![campaign, no_sundays]),
            recipient_hours(Denver),
            recipient_hours(Los_Angeles),
            recipient_hours(Honolulu),
        ]);
        let sizes = [9_000, 5_000, 3_000, 2_000, 7_000, 1_000];
        // Friday 07:00 EST before the spring change; Saturday 10:00 EDT before the
        // autumn one; the third day mid-window, with some of its limit used.
        let starts = [
            ("2026-03-06T12:00:00Z", 0),
            ("2026-10-31T14:00:00Z", 0),
            ("2026-06-03T16:30:00Z", 1_500),
        ];
        for ((start, handed_today), rate, daily_limit) in starts.into_iter().flat_map(|start| {
            [
                (start, 1, u32::MAX),
                (start, 1, 15_000),
                (start, 3, 4_000),
                (start, 2, 2_000),
            ]
        }) {
            let mut forecast = input(&sizes, start, &availability);
            forecast.rate_per_second = Some(f64::from(rate));
            forecast.daily_limit = daily_limit;
            forecast.handed_today = handed_today;
            let run = scheduler_run(&forecast, &campaign, rate as usize);
            let outcome = simulate(&forecast);
            // The run hands out whole messages at whole seconds, the forecast a
            // flow: a group's last message in the interleaved queue may come up
            // to one share of the queue (total / its size) before the end.
            let total: u64 = sizes.iter().sum();
            let slack = |size: u64| TimeDelta::seconds((total / size) as i64 / i64::from(rate) + 2);
            let close = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>, size: u64| {
                a.zip(b).is_some_and(|(a, b)| (a - b).abs() <= slack(size))
            };
            let lasts: Vec<_> = outcome.groups.iter().map(|g| g.last).collect();
            assert!(
                close(outcome.finish, run.iter().copied().flatten().max(), total),
                "{start}, {rate}/s, limit {daily_limit}"
            );
            assert!(
                lasts
                    .iter()
                    .zip(&run)
                    .zip(sizes)
                    .all(|((&a, &b), size)| close(a, b, size)),
                "{start}, {rate}/s, limit {daily_limit}: {lasts:?} vs {run:?}"
            );
        }
    }
}
