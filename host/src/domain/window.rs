//! Send windows (SPEC §4) in the campaign's time zone: DST gaps and folds,
//! local days for the daily limit. Pure: time is passed in.

use chrono::{
    DateTime, Datelike, MappedLocalTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::campaign::{Campaign, SendDays};

/// Local days `next_open` looks at: today plus two weeks, so every listed
/// weekday is seen twice even if one occurrence is swallowed by a DST gap.
const SEARCH_DAYS: usize = 15;

/// Longest run of local time a zone has skipped (Pacific/Apia dropped all of
/// 2011-12-30), with slack.
const MAX_GAP: TimeDelta = TimeDelta::hours(26);

/// A window bound: a wall-clock time written `HH:MM` (24-hour clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(pub NaiveTime);

impl TimeOfDay {
    pub fn hm(hour: u32, minute: u32) -> Self {
        Self(NaiveTime::from_hms_opt(hour, minute, 0).expect("a valid time of day"))
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let well_formed = value.len() == 5 && value.as_bytes()[2] == b':';
        well_formed
            .then(|| NaiveTime::parse_from_str(value, "%H:%M").ok())
            .flatten()
            .map(Self)
            .ok_or_else(|| format!("must be a time written HH:MM (got {value:?})"))
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.format("%H:%M").fmt(f)
    }
}

/// An IANA time zone, written by its name (`America/New_York`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Zone(pub Tz);

impl std::str::FromStr for Zone {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        name.parse::<Tz>()
            .map(Self)
            .map_err(|_| format!("{name:?} is not an IANA time zone such as \"America/New_York\""))
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

/// Serde's string forms of [`TimeOfDay`] and [`Zone`]: their `Display` and `FromStr`.
macro_rules! string_form {
    ($($value:ty),+) => {$(
        impl TryFrom<String> for $value {
            type Error = String;

            fn try_from(value: String) -> Result<Self, String> {
                value.parse()
            }
        }

        impl From<$value> for String {
            fn from(value: $value) -> Self {
                value.to_string()
            }
        }
    )+};
}

string_form!(TimeOfDay, Zone);

/// When a campaign may hand messages to the carrier: listed weekdays, local
/// time in `[start, end)` in `timezone`. Travels in every send job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendWindow {
    pub timezone: Zone,
    pub start: TimeOfDay,
    pub end: TimeOfDay,
    pub days: SendDays,
}

impl SendWindow {
    pub fn of(campaign: &Campaign) -> Self {
        Self {
            timezone: campaign.timezone,
            start: campaign.send_window_start,
            end: campaign.send_window_end,
            days: campaign.send_days,
        }
    }

    /// Whether a message may be handed to the carrier at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        // Compared as instants, not wall-clock times, so this agrees with
        // `next_open` in gaps and folds (the second pass of a folded hour after
        // a first-occurrence end is closed).
        self.window_on(self.local_day(at))
            .is_some_and(|(open, close)| open <= at && at < close)
    }

    /// `at` itself when the window is open then, else the next instant it opens.
    /// A start that falls in a DST gap opens at the first valid instant after it;
    /// a start that occurs twice (DST fold) opens at the first occurrence.
    pub fn next_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        self.local_day(at)
            .iter_days()
            .take(SEARCH_DAYS)
            .filter_map(|day| self.window_on(day))
            .find(|&(_, close)| at < close)
            .map_or_else(|| self.never_opens(at), |(open, _)| open.max(at))
    }

    /// When the window open at `at` closes; `None` when it is closed at `at`.
    pub fn closes_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.window_on(self.local_day(at))
            .filter(|&(open, close)| open <= at && at < close)
            .map(|(_, close)| close)
    }

    /// The first opening on a later local day than `at`'s (for a campaign that
    /// has used up today's daily limit).
    pub fn next_day_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        self.local_day(at)
            .iter_days()
            .skip(1)
            .take(SEARCH_DAYS)
            .find_map(|day| self.window_on(day))
            .map_or_else(|| self.never_opens(at), |(open, _)| open)
    }

    /// The local calendar day of `at` in the campaign's zone.
    pub fn local_day(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.timezone.0).date_naive()
    }

    /// The `[open, close)` instants of the window on local day `day`; `None`
    /// when the day is not listed or the window is empty (e.g. it lies wholly
    /// inside a DST gap).
    fn window_on(&self, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.contains(day.weekday()) {
            return None;
        }
        let open = resolve(self.timezone.0, day.and_time(self.start.0));
        let close = resolve(self.timezone.0, day.and_time(self.end.0));
        (open < close).then_some((open, close))
    }

    /// Only reachable with an invalid window (start >= end, which campaign
    /// validation rejects): defer rather than panic in the dispatcher.
    fn never_opens(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at + TimeDelta::days(SEARCH_DAYS as i64)
    }
}

/// The instant a local wall-clock time in `tz` stands for: the earliest one in
/// a fold, the first valid instant after the gap when it does not exist.
fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        MappedLocalTime::Single(t) => t.to_utc(),
        MappedLocalTime::Ambiguous(earliest, _) => earliest.to_utc(),
        MappedLocalTime::None => after_gap(tz, local),
    }
}

/// The first instant whose local time is after `local`, which lies in a gap.
fn after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let exists = |t: NaiveDateTime| tz.from_local_datetime(&t).earliest();
    let minute = TimeDelta::minutes(1);
    let second = TimeDelta::seconds(1);
    let mut t = local + minute;
    while exists(t).is_none() {
        if t - local > MAX_GAP {
            // No real zone does this; read the time with the offset in force
            // at that UTC reading instead of looping forever.
            let offset = tz.offset_from_utc_datetime(&local).fix().local_minus_utc();
            return local.and_utc() - TimeDelta::seconds(i64::from(offset));
        }
        t += minute;
    }
    // Gaps end on whole minutes in modern rules but not always in old ones
    // (Africa/Monrovia 1972 skipped 44:30), so step back to the exact second.
    while t - second > local && exists(t - second).is_some() {
        t -= second;
    }
    exists(t).map(|t| t.to_utc()).expect("checked above")
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono_tz::{America::New_York, Australia::Sydney, Europe::London};

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339 instant")
    }

    fn window(timezone: Tz, start: &str, end: &str, days: &[&str]) -> SendWindow {
        let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
        SendWindow {
            timezone: Zone(timezone),
            start: start.parse().expect("HH:MM"),
            end: end.parse().expect("HH:MM"),
            days: SendDays::parse(&days).expect("valid days"),
        }
    }

    /// Mon–Fri 09:00–18:00 New York, the default campaign window (shared
    /// with the compliance rules' tests).
    pub(crate) fn office_hours() -> SendWindow {
        SendWindow {
            timezone: Zone(New_York),
            start: TimeOfDay::hm(9, 0),
            end: TimeOfDay::hm(18, 0),
            days: SendDays::weekdays(),
        }
    }

    // --- windows -------------------------------------------------------------

    #[test]
    fn start_is_inclusive_and_end_exclusive() {
        let w = office_hours();
        // Wednesday 2026-01-14, EST (UTC-5).
        assert!(!w.is_open(utc("2026-01-14T13:59:59Z")));
        assert!(w.is_open(utc("2026-01-14T14:00:00Z")));
        assert!(w.is_open(utc("2026-01-14T22:59:59Z")));
        assert!(!w.is_open(utc("2026-01-14T23:00:00Z")));
    }

    #[test]
    fn next_open_is_now_when_open() {
        let w = office_hours();
        for at in ["2026-01-14T14:00:00Z", "2026-01-14T18:30:00Z", "2026-01-14T22:59:59Z"] {
            assert_eq!(w.next_open(utc(at)), utc(at));
        }
    }

    #[test]
    fn next_open_later_the_same_day() {
        let w = office_hours();
        assert_eq!(w.next_open(utc("2026-01-14T12:00:00Z")), utc("2026-01-14T14:00:00Z"));
    }

    #[test]
    fn weekends_are_closed_and_skipped() {
        let w = office_hours();
        // Saturday noon local.
        assert!(!w.is_open(utc("2026-01-17T17:00:00Z")));
        // Friday 18:00 EST closes; Monday 09:00 EST opens.
        assert_eq!(w.next_open(utc("2026-01-16T23:00:00Z")), utc("2026-01-19T14:00:00Z"));
        assert_eq!(w.next_open(utc("2026-01-17T17:00:00Z")), utc("2026-01-19T14:00:00Z"));
    }

    #[test]
    fn local_day_not_utc_day_decides_the_weekday() {
        let w = office_hours();
        // Friday 20:00 EST is already Saturday in UTC, and Sunday 22:00 EST is
        // Monday in UTC: neither is open, and the next opening is Monday local.
        assert!(!w.is_open(utc("2026-01-17T01:00:00Z")));
        assert!(!w.is_open(utc("2026-01-19T03:00:00Z")));
        assert_eq!(w.next_open(utc("2026-01-19T03:00:00Z")), utc("2026-01-19T14:00:00Z"));
        assert_eq!(
            w.local_day(utc("2026-01-19T03:00:00Z")),
            NaiveDate::from_ymd_opt(2026, 1, 18).unwrap()
        );
    }

    #[test]
    fn single_listed_day_already_past_waits_a_week() {
        let w = window(New_York, "09:00", "10:00", &["wed"]);
        // Wednesday 2026-01-14 11:00 EST.
        assert_eq!(w.next_open(utc("2026-01-14T16:00:00Z")), utc("2026-01-21T14:00:00Z"));
    }

    #[test]
    fn next_open_across_spring_forward() {
        let w = office_hours();
        // Friday 2026-03-06 19:00 EST → Monday 2026-03-09 09:00 EDT (UTC-4).
        assert_eq!(w.next_open(utc("2026-03-07T00:00:00Z")), utc("2026-03-09T13:00:00Z"));
        assert!(!w.is_open(utc("2026-03-09T12:59:59Z")));
        assert!(w.is_open(utc("2026-03-09T13:00:00Z")));
    }

    #[test]
    fn start_in_spring_forward_gap_opens_after_the_gap() {
        // 2026-03-08 02:00–03:00 does not exist in New York.
        let w = window(New_York, "02:30", "05:00", &["sun"]);
        let midnight = utc("2026-03-08T05:00:00Z");
        assert_eq!(w.next_open(midnight), utc("2026-03-08T07:00:00Z"));
        assert!(!w.is_open(utc("2026-03-08T06:59:59Z")));
        assert!(w.is_open(utc("2026-03-08T07:00:00Z")));
        // Closes at 05:00 EDT.
        assert!(w.is_open(utc("2026-03-08T08:59:59Z")));
        assert!(!w.is_open(utc("2026-03-08T09:00:00Z")));
    }

    #[test]
    fn end_in_spring_forward_gap_closes_when_the_gap_ends() {
        let w = window(New_York, "01:00", "02:30", &["sun"]);
        // 01:59:59 EST is open; the next instant is 03:00 EDT, closed.
        assert!(w.is_open(utc("2026-03-08T06:59:59Z")));
        assert!(!w.is_open(utc("2026-03-08T07:00:00Z")));
    }

    #[test]
    fn window_wholly_inside_a_gap_is_skipped() {
        let w = window(New_York, "02:00", "02:45", &["sun"]);
        let midnight = utc("2026-03-08T05:00:00Z");
        assert!(!w.is_open(utc("2026-03-08T07:00:00Z")));
        // Next Sunday, 02:00 EDT.
        assert_eq!(w.next_open(midnight), utc("2026-03-15T06:00:00Z"));
    }

    #[test]
    fn start_in_fall_back_fold_opens_at_first_occurrence() {
        // 2026-11-01 01:00–02:00 happens twice in New York (EDT, then EST).
        let w = window(New_York, "01:30", "05:00", &["sun"]);
        assert_eq!(w.next_open(utc("2026-11-01T04:00:00Z")), utc("2026-11-01T05:30:00Z"));
        assert!(!w.is_open(utc("2026-11-01T05:29:59Z")));
        assert!(w.is_open(utc("2026-11-01T05:30:00Z")));
        // The second pass of 01:00–01:30 (EST) is after the opening: open.
        assert!(w.is_open(utc("2026-11-01T06:15:00Z")));
    }

    #[test]
    fn end_in_fall_back_fold_closes_at_first_occurrence() {
        let w = window(New_York, "00:30", "01:30", &["sun"]);
        assert!(w.is_open(utc("2026-11-01T05:29:59Z")));
        assert!(!w.is_open(utc("2026-11-01T05:30:00Z")));
        // 01:15 EST, local time inside [00:30, 01:30) but after the close.
        assert!(!w.is_open(utc("2026-11-01T06:15:00Z")));
        assert_eq!(w.next_open(utc("2026-11-01T06:15:00Z")), utc("2026-11-08T05:30:00Z"));
    }

    #[test]
    fn london_spring_forward_gap() {
        // 2026-03-29 01:00 GMT jumps to 02:00 BST.
        let w = window(London, "01:30", "03:00", &["sun"]);
        assert_eq!(w.next_open(utc("2026-03-29T00:00:00Z")), utc("2026-03-29T01:00:00Z"));
        assert!(w.is_open(utc("2026-03-29T01:59:59Z")));
        assert!(!w.is_open(utc("2026-03-29T02:00:00Z")));
    }

    #[test]
    fn sydney_weekend_across_dst_end_and_utc_date_line() {
        let w = window(Sydney, "09:00", "17:00", &["mon", "tue", "wed", "thu", "fri"]);
        // Friday 2026-04-03 17:00 AEDT (UTC+11); DST ends Sunday 2026-04-05;
        // Monday 09:00 AEST (UTC+10) is still Sunday in UTC.
        assert!(!w.is_open(utc("2026-04-03T06:00:00Z")));
        assert_eq!(w.next_open(utc("2026-04-03T06:00:00Z")), utc("2026-04-05T23:00:00Z"));
        assert!(w.is_open(utc("2026-04-05T23:00:00Z")));
    }

    #[test]
    fn gap_ending_off_the_minute_resolves_to_the_second() {
        // 1972-01-07 Monrovia moved from UTC-0:44:30 to UTC, skipping
        // 00:00:00–00:44:30 local.
        let w = window(chrono_tz::Africa::Monrovia, "00:30", "02:00", &["fri"]);
        assert_eq!(w.next_open(utc("1972-01-06T12:00:00Z")), utc("1972-01-07T00:44:30Z"));
    }

    #[test]
    fn a_skipped_calendar_day_is_skipped() {
        // Pacific/Apia jumped from UTC-10 to UTC+14 over Friday 2011-12-30,
        // which never happened there; its window is empty, not moved.
        let w = window(chrono_tz::Pacific::Apia, "09:00", "17:00", &["fri", "sat"]);
        let thursday_evening = utc("2011-12-30T05:00:00Z");
        assert!(!w.is_open(utc("2011-12-30T10:00:00Z")));
        // Saturday 2011-12-31 09:00 UTC+14.
        assert_eq!(w.next_open(thursday_evening), utc("2011-12-30T19:00:00Z"));
        assert_eq!(w.next_day_open(thursday_evening), utc("2011-12-30T19:00:00Z"));
    }

    #[test]
    fn next_day_open_skips_the_rest_of_today() {
        let w = office_hours();
        // Monday 10:00 EST, window open → Tuesday 09:00.
        assert_eq!(
            w.next_day_open(utc("2026-01-19T15:00:00Z")),
            utc("2026-01-20T14:00:00Z")
        );
        // Friday 08:00 EST, before today's opening → still Monday.
        assert_eq!(
            w.next_day_open(utc("2026-01-16T13:00:00Z")),
            utc("2026-01-19T14:00:00Z")
        );
        // Monday 22:00 EST is Tuesday in UTC; the local day is Monday → Tuesday.
        assert_eq!(
            w.next_day_open(utc("2026-01-20T03:00:00Z")),
            utc("2026-01-20T14:00:00Z")
        );
        // Across spring forward: Friday → Monday 09:00 EDT.
        assert_eq!(
            w.next_day_open(utc("2026-03-06T15:00:00Z")),
            utc("2026-03-09T13:00:00Z")
        );
    }

    #[test]
    fn empty_window_defers_instead_of_panicking() {
        let w = window(New_York, "10:00", "10:00", &["mon"]);
        let at = utc("2026-01-19T15:00:00Z");
        assert!(!w.is_open(at));
        assert!(w.next_open(at) > at);
        assert!(w.next_day_open(at) > at);
    }
}
