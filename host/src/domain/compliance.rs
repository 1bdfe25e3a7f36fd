//! Recipient-local compliance rules (SPEC §4.1): a versioned rule set read from
//! TOML (allowed local hours per weekday, Sunday and holiday bans, rolling caps),
//! and the pure decision whether a message may go now and, if not, until when.
//! Pure: time and history are passed in.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::campaign::SendDays;
use super::settings::MAX_CAP_HOURS;
use super::window::{SendWindow, TimeOfDay, Zone};

/// The rule set Herald ships; configuration may replace it.
const SHIPPED_RULES: &str = include_str!("../../../config/compliance/us-rules.toml");

/// The `rule` of a hold caused by the campaign's own window.
pub const CAMPAIGN_WINDOW: &str = "campaign-window";

/// The `rule` of a hold caused by the user's own frequency cap.
pub const FREQUENCY_CAP: &str = "frequency-cap";

/// How far ahead `decide` looks for an instant every constraint allows.
const SEARCH_HORIZON: TimeDelta = TimeDelta::days(60);

/// Jumps `decide` makes at most; each moves to a later opening, so a real rule
/// set settles in a handful.
const MAX_JUMPS: usize = 1_000;

/// How long a message waits when no allowed instant exists within the horizon
/// (e.g. a cap of zero): it is decided again then, never dropped.
const FALLBACK_HOLD: TimeDelta = TimeDelta::hours(24);

/// A versioned set of compliance rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    version: String,
    rules: Vec<Rule>,
}

/// One rule: where it applies, from when, and what it restricts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique name, recorded as the reason a message was held (`us-fl`).
    pub id: String,
    /// One line for people.
    pub title: String,
    /// The statute or regulation it comes from.
    pub source: String,
    /// Caveats: scope, exemptions, what is not verified.
    pub note: Option<String>,
    /// First local date it applies on.
    pub effective: NaiveDate,
    /// First local date it no longer applies on.
    pub until: Option<NaiveDate>,
    /// ISO 3166-2 codes (upper case) of the regions it applies to; `*` is everyone.
    pub applies_to: Vec<String>,
    /// Allowed local hours; `None` restricts no hours.
    pub hours: Option<WeeklyHours>,
    /// No messages on US federal holidays (see [`is_federal_holiday`]).
    pub no_holidays: bool,
    /// At most so many messages per rolling window per recipient.
    pub cap: Option<Cap>,
}

/// Allowed local hours for each weekday; `None` bans the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyHours([Option<Hours>; 7]);

/// Local wall-clock hours `[start, end)` of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hours {
    /// First allowed local time.
    pub start: TimeOfDay,
    /// First local time no longer allowed.
    pub end: TimeOfDay,
}

/// At most `max` messages per recipient in any rolling `hours` hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// Messages allowed per window; the next one waits.
    pub max: u32,
    /// Length of the rolling window, in hours.
    pub hours: u32,
}

/// Why a rule set was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleSetError {
    /// Not TOML, or a field is missing, misnamed or of the wrong type (the text
    /// names the line).
    #[error("the rule set cannot be read: {0}")]
    Syntax(String),
    /// The set has no `version`.
    #[error("the rule set needs a non-blank `version`")]
    MissingVersion,
    /// Two rules share an id.
    #[error("two rules have the id {0:?}; ids must be unique")]
    DuplicateId(String),
    /// A field of one rule is invalid.
    #[error("rule {rule:?}, `{field}`: {message}")]
    Invalid {
        /// The rule's id.
        rule: String,
        /// The field at fault, e.g. `hours.sun`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Who a message goes to, as far as the rules care.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// Every time zone the recipient may be in; rules must hold in all of them.
    pub zones: &'a [Tz],
    /// ISO 3166-2 code of the recipient's presumed region (`US-FL`).
    pub region: Option<&'a str>,
}

/// The sender-side limits that join the rules.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// The campaign window, always applied when present.
    pub window: Option<&'a SendWindow>,
    /// `false` (`quiet_hours = "campaign"`) applies no rule of the set.
    pub recipient_rules: bool,
    /// The user's own cap across campaigns, reported as [`FREQUENCY_CAP`].
    pub frequency_cap: Option<Cap>,
}

/// Whether a message may be handed to the carrier now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every constraint holds now, in every zone of the recipient.
    Allowed,
    /// Not before `until`, when every constraint holds; decided again then.
    Held {
        /// The first constraint failing now: [`CAMPAIGN_WINDOW`], a rule id (for
        /// its hours, holiday ban or cap alike, e.g. `us-fl`) or [`FREQUENCY_CAP`].
        rule: String,
        /// The earliest instant every constraint allows (within 60 days; else a
        /// day later, to be decided again).
        until: DateTime<Utc>,
    },
}

impl RuleSet {
    /// The rule set shipped with Herald (`config/compliance/us-rules.toml`), parsed once.
    pub fn shipped() -> &'static RuleSet {
        static SHIPPED: OnceLock<RuleSet> = OnceLock::new();
        SHIPPED.get_or_init(|| RuleSet::from_toml(SHIPPED_RULES).expect("the shipped rule set is valid (tested)"))
    }

    /// Reads and validates a rule set; the error names the rule and field at fault.
    pub fn from_toml(text: &str) -> Result<RuleSet, RuleSetError> {
        let raw: RawRuleSet =
            toml::from_str(text).map_err(|e| RuleSetError::Syntax(e.to_string().trim_end().to_string()))?;
        if raw.version.trim().is_empty() {
            return Err(RuleSetError::MissingVersion);
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(raw.rules.len());
        for raw_rule in raw.rules {
            let rule = raw_rule.validate()?;
            if !seen.insert(rule.id.clone()) {
                return Err(RuleSetError::DuplicateId(rule.id));
            }
            rules.push(rule);
        }
        Ok(RuleSet {
            version: raw.version,
            rules,
        })
    }

    /// The set's version (`us-2026.11`), recorded with each decision.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The rules, in the order they are checked.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether a message to `recipient` may go at `now`, and if not, the first
    /// failing constraint (window, then hours rules, then caps) and the earliest
    /// instant at which all of them hold in all the recipient's zones.
    ///
    /// `history`: instants this recipient was handed to a carrier (any campaign of
    /// the user), any order; only those inside a cap's window matter.
    ///
    /// A recipient with no known zone is judged in the campaign window's zone (or
    /// UTC without a window). Rules in force on `now`'s local date in any of the
    /// zones apply; one coming into force later is seen when decided again.
    pub fn decide(
        &self,
        recipient: &Recipient,
        limits: &Limits,
        history: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Decision {
        let constraints = self.constraints(recipient, limits, now);
        let Some(first) = constraints.iter().find(|c| c.blocked_until(now, history).is_some()) else {
            return Decision::Allowed;
        };
        let until = earliest_allowed(&constraints, history, now).unwrap_or(now + FALLBACK_HOLD);
        Decision::Held {
            rule: first.id().to_string(),
            until,
        }
    }

    /// For a recipient allowed at `at` with no history: when that stops, the
    /// first instant a window or a rule's hours close (`MAX_UTC` when none
    /// does). What a forecast needs to know how long a group may go on.
    pub fn allowed_until(&self, recipient: &Recipient, limits: &Limits, at: DateTime<Utc>) -> DateTime<Utc> {
        self.constraints(recipient, limits, at)
            .iter()
            .filter_map(|constraint| constraint.closes_after(at))
            .min()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The longest cap window that can apply to `recipient` (rules of its region
    /// whatever their dates, and the user's cap), so the caller knows how much
    /// history to load; `None` when no cap applies.
    pub fn history_needed(&self, recipient: &Recipient, limits: &Limits) -> Option<TimeDelta> {
        let rule_caps = self
            .rules
            .iter()
            .filter(|rule| limits.recipient_rules && rule.covers(recipient.region))
            .filter_map(|rule| rule.cap);
        rule_caps.chain(limits.frequency_cap).map(|cap| cap.window()).max()
    }

    fn constraints<'a>(
        &'a self,
        recipient: &Recipient,
        limits: &Limits<'a>,
        now: DateTime<Utc>,
    ) -> Vec<Constraint<'a>> {
        let zones = judged_zones(recipient, limits);
        let mut constraints: Vec<Constraint> = limits.window.map(Constraint::Window).into_iter().collect();
        let in_force: Vec<&Rule> = match limits.recipient_rules {
            true => self
                .rules
                .iter()
                .filter(|rule| rule.covers(recipient.region))
                .filter(|rule| {
                    zones
                        .iter()
                        .any(|&zone| rule.in_force_on(now.with_timezone(&zone).date_naive()))
                })
                .collect(),
            false => Vec::new(),
        };
        for rule in &in_force {
            if rule.hours.is_some() || rule.no_holidays {
                constraints.extend(zones.iter().map(|&zone| Constraint::Hours { rule, zone }));
            }
        }
        for rule in &in_force {
            if let Some(cap) = rule.cap {
                constraints.push(Constraint::Cap { id: &rule.id, cap });
            }
        }
        if let Some(cap) = limits.frequency_cap {
            constraints.push(Constraint::Cap { id: FREQUENCY_CAP, cap });
        }
        constraints
    }
}

impl Rule {
    /// Whether the rule is meant for a recipient in `region`.
    fn covers(&self, region: Option<&str>) -> bool {
        self.applies_to
            .iter()
            .any(|code| code == "*" || region.is_some_and(|region| code.eq_ignore_ascii_case(region)))
    }

    fn in_force_on(&self, day: NaiveDate) -> bool {
        self.effective <= day && self.until.is_none_or(|until| day < until)
    }
}

impl WeeklyHours {
    /// The hours allowed on `day`; `None` when the day is banned.
    pub fn on(&self, day: Weekday) -> Option<Hours> {
        self.0[day.num_days_from_monday() as usize]
    }

    /// The hours as send windows in `zone`, one per distinct hours, so the
    /// window's DST handling (gap: first valid instant after; fold: first
    /// occurrence) applies unchanged.
    fn windows_in(&self, zone: Tz) -> Vec<SendWindow> {
        let mut days_by_hours: Vec<(Hours, i32)> = Vec::new();
        for (index, hours) in self.0.iter().enumerate() {
            let Some(hours) = hours else { continue };
            match days_by_hours.iter_mut().find(|(h, _)| h == hours) {
                Some((_, bits)) => *bits |= 1 << index,
                None => days_by_hours.push((*hours, 1 << index)),
            }
        }
        days_by_hours
            .into_iter()
            .filter_map(|(hours, bits)| {
                Some(SendWindow {
                    timezone: Zone(zone),
                    start: hours.start,
                    end: hours.end,
                    days: SendDays::from_bits(bits)?,
                })
            })
            .collect()
    }
}

impl Cap {
    /// The rolling window the cap counts over.
    pub fn window(&self) -> TimeDelta {
        TimeDelta::hours(i64::from(self.hours))
    }

    /// `None` when fewer than `max` of `history` fall in `(at - window, at]`,
    /// else the instant enough of them have dropped out.
    fn blocked_until(&self, at: DateTime<Utc>, history: &[DateTime<Utc>]) -> Option<DateTime<Utc>> {
        let window = self.window();
        let mut recent: Vec<DateTime<Utc>> = history
            .iter()
            .copied()
            .filter(|&h| at - window < h && h <= at)
            .collect();
        let max = self.max as usize;
        if recent.len() < max {
            return None;
        }
        recent.sort_unstable();
        // The oldest `len - max + 1` must leave the window; a cap of zero never
        // frees up, so it only pushes the search on.
        let must_leave = recent.len() - max;
        Some(recent.get(must_leave).map_or(at + window, |&oldest| oldest + window))
    }
}

/// Whether `day` is a US federal holiday (5 U.S.C. § 6103) on its actual date,
/// not the weekday it is observed on. State calendars differ (e.g. Utah's Pioneer
/// Day); Juneteenth counts from 2021.
pub fn is_federal_holiday(day: NaiveDate) -> bool {
    use Weekday::{Mon, Thu};
    let nth = |month, weekday, n| NaiveDate::from_weekday_of_month_opt(day.year(), month, weekday, n);
    let last_monday_of_may = nth(5, Mon, 5).or_else(|| nth(5, Mon, 4));
    let fixed = [(1, 1), (7, 4), (11, 11), (12, 25)];
    let floating = [
        nth(1, Mon, 3), // Martin Luther King Jr.'s Birthday
        nth(2, Mon, 3), // Washington's Birthday
        last_monday_of_may,
        nth(9, Mon, 1),  // Labor Day
        nth(10, Mon, 2), // Columbus Day
        nth(11, Thu, 4), // Thanksgiving
    ];
    let juneteenth = day.year() >= 2021 && (day.month(), day.day()) == (6, 19);
    juneteenth || fixed.contains(&(day.month(), day.day())) || floating.contains(&Some(day))
}

/// One thing that can hold a message.
enum Constraint<'a> {
    Window(&'a SendWindow),
    Hours { rule: &'a Rule, zone: Tz },
    Cap { id: &'a str, cap: Cap },
}

impl Constraint<'_> {
    fn id(&self) -> &str {
        match self {
            Constraint::Window(_) => CAMPAIGN_WINDOW,
            Constraint::Hours { rule, .. } => &rule.id,
            Constraint::Cap { id, .. } => id,
        }
    }

    /// When the allowed span containing `at` ends for this constraint; `None`
    /// when it never does (a cap: it closes only with hand-outs) or is closed now.
    fn closes_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Constraint::Window(window) => window.closes_after(at),
            Constraint::Hours { rule, zone } => {
                let close = rule
                    .hours?
                    .windows_in(*zone)
                    .iter()
                    .filter_map(|w| w.closes_after(at))
                    .max()?;
                // A banned holiday starts at a local midnight: the hours close first.
                Some(close)
            }
            Constraint::Cap { .. } => None,
        }
    }

    /// `None` when this constraint allows `at`; else a later instant no allowed
    /// instant precedes (the next opening, or a lower bound of it).
    fn blocked_until(&self, at: DateTime<Utc>, history: &[DateTime<Utc>]) -> Option<DateTime<Utc>> {
        match self {
            Constraint::Window(window) => Some(window.next_open(at)).filter(|&open| open != at),
            Constraint::Hours { rule, zone } => {
                if rule.no_holidays && is_federal_holiday(at.with_timezone(zone).date_naive()) {
                    return Some(next_local_midnight(*zone, at));
                }
                let windows = rule.hours?.windows_in(*zone);
                match windows.iter().any(|w| w.is_open(at)) {
                    true => None,
                    false => windows.iter().map(|w| w.next_open(at)).min(),
                }
            }
            Constraint::Cap { cap, .. } => cap.blocked_until(at, history),
        }
    }
}

/// The zones the rules are judged in: the recipient's, else the campaign's.
fn judged_zones(recipient: &Recipient, limits: &Limits) -> Vec<Tz> {
    match (recipient.zones, limits.window) {
        ([], Some(window)) => vec![window.timezone.0],
        ([], None) => vec![Tz::UTC],
        (zones, _) => zones.to_vec(),
    }
}

/// The start of the local day after `at`'s in `zone` (DST-safe: a midnight in a
/// gap is the first valid instant after it).
fn next_local_midnight(zone: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
    let whole_day = SendWindow {
        timezone: Zone(zone),
        start: TimeOfDay::hm(0, 0),
        end: TimeOfDay::hm(23, 59),
        days: SendDays::from_bits(0x7f).expect("every weekday"),
    };
    whole_day.next_day_open(at)
}

/// The earliest instant at or after `now` that every constraint allows: jump to
/// each blocking constraint's next opening until a full pass blocks nothing.
/// `None` when there is none within [`SEARCH_HORIZON`].
fn earliest_allowed(
    constraints: &[Constraint],
    history: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut at = now;
    for _ in 0..MAX_JUMPS {
        let mut moved = false;
        for constraint in constraints {
            if let Some(next) = constraint.blocked_until(at, history) {
                at = next.max(at + TimeDelta::seconds(1));
                moved = true;
            }
        }
        if at - now > SEARCH_HORIZON {
            return None;
        }
        if !moved {
            return Some(at);
        }
    }
    None
}

// --- the TOML form -----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleSet {
    version: String,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    title: String,
    source: String,
    note: Option<String>,
    effective: toml::value::Datetime,
    until: Option<toml::value::Datetime>,
    applies_to: Vec<String>,
    hours: Option<BTreeMap<String, String>>,
    #[serde(default)]
    no_holidays: bool,
    cap: Option<Cap>,
}

impl RawRule {
    fn validate(self) -> Result<Rule, RuleSetError> {
        let id = self.id.trim().to_string();
        let invalid = |field: &str, message: String| RuleSetError::Invalid {
            rule: id.clone(),
            field: field.to_string(),
            message,
        };
        if id.is_empty() || id == CAMPAIGN_WINDOW || id == FREQUENCY_CAP {
            return Err(invalid(
                "id",
                format!("must be a non-blank name other than {CAMPAIGN_WINDOW:?} and {FREQUENCY_CAP:?}"),
            ));
        }
        for (field, text) in [("title", &self.title), ("source", &self.source)] {
            if text.trim().is_empty() {
                return Err(invalid(field, "must not be blank".into()));
            }
        }
        let effective = date(&self.effective).map_err(|m| invalid("effective", m))?;
        let until = self
            .until
            .as_ref()
            .map(date)
            .transpose()
            .map_err(|m| invalid("until", m))?;
        if until.is_some_and(|until| until <= effective) {
            return Err(invalid("until", "must be later than `effective`".into()));
        }
        if self.applies_to.is_empty() {
            return Err(invalid(
                "applies_to",
                "must list \"*\" or at least one region such as \"US-FL\"".into(),
            ));
        }
        let applies_to = self
            .applies_to
            .iter()
            .map(|code| region_code(code))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| invalid("applies_to", m))?;
        let hours = self
            .hours
            .as_ref()
            .map(weekly_hours)
            .transpose()
            .map_err(|(field, m)| invalid(&field, m))?;
        if let Some(cap) = self.cap
            && (cap.max == 0 || cap.hours == 0)
        {
            return Err(invalid("cap", "`max` and `hours` must be at least 1".into()));
        }
        if let Some(cap) = self.cap
            && cap.hours > MAX_CAP_HOURS
        {
            // Hand-outs are kept that long and no longer.
            return Err(invalid(
                "cap",
                format!("`hours` must be at most {MAX_CAP_HOURS} (30 days)"),
            ));
        }
        if hours.is_none() && !self.no_holidays && self.cap.is_none() {
            return Err(invalid(
                "hours",
                "the rule restricts nothing: give `hours`, `no_holidays` or `cap`".into(),
            ));
        }
        Ok(Rule {
            id,
            title: self.title,
            source: self.source,
            note: self.note,
            effective,
            until,
            applies_to,
            hours,
            no_holidays: self.no_holidays,
            cap: self.cap,
        })
    }
}

/// A TOML local date (`2026-01-01`), without time or offset.
fn date(value: &toml::value::Datetime) -> Result<NaiveDate, String> {
    let (Some(day), None, None) = (value.date, value.time, value.offset) else {
        return Err(format!("must be a date written YYYY-MM-DD (got {value})"));
    };
    NaiveDate::from_ymd_opt(i32::from(day.year), u32::from(day.month), u32::from(day.day))
        .ok_or_else(|| format!("{value} is not a calendar date"))
}

/// `*` or an ISO 3166-2 subdivision code (`US-FL`), upper-cased.
fn region_code(code: &str) -> Result<String, String> {
    let well_formed = code == "*"
        || code.split_once('-').is_some_and(|(country, subdivision)| {
            country.len() == 2
                && country.bytes().all(|b| b.is_ascii_alphabetic())
                && (1..=3).contains(&subdivision.len())
                && subdivision.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    match well_formed {
        true => Ok(code.to_ascii_uppercase()),
        false => Err(format!(
            "{code:?} is neither \"*\" nor an ISO 3166-2 code such as \"US-FL\""
        )),
    }
}

/// `default` plus per-day overrides, each `"HH:MM-HH:MM"` or `"closed"`.
fn weekly_hours(table: &BTreeMap<String, String>) -> Result<WeeklyHours, (String, String)> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let field = |key: &str| format!("hours.{key}");
    let default = table.get("default").ok_or_else(|| {
        (
            field("default"),
            "is required (\"HH:MM-HH:MM\" or \"closed\"); days may then override it".to_string(),
        )
    })?;
    let default = day_hours(default).map_err(|m| (field("default"), m))?;
    let mut week = [default; 7];
    for (key, value) in table.iter().filter(|(key, _)| *key != "default") {
        let index = DAYS.iter().position(|day| day == key).ok_or_else(|| {
            (
                field(key),
                format!("{key:?} is not \"default\" or a weekday (mon, tue, wed, thu, fri, sat, sun)"),
            )
        })?;
        week[index] = day_hours(value).map_err(|m| (field(key), m))?;
    }
    if week.iter().all(Option::is_none) {
        return Err((field("default"), "every day is closed".into()));
    }
    Ok(WeeklyHours(week))
}

fn day_hours(text: &str) -> Result<Option<Hours>, String> {
    if text == "closed" {
        return Ok(None);
    }
    let malformed = || format!("must be \"HH:MM-HH:MM\" or \"closed\" (got {text:?})");
    let (start, end) = text.split_once('-').ok_or_else(malformed)?;
    let start: TimeOfDay = start.parse().map_err(|_| malformed())?;
    let end: TimeOfDay = end.parse().map_err(|_| malformed())?;
    if start >= end {
        return Err(format!(
            "start must be before end (got {text:?}); hours cannot run past midnight"
        ));
    }
    Ok(Some(Hours { start, end }))
}

#[cfg(test)]
mod tests {
    use chrono_tz::America::{Chicago, Denver, Los_Angeles, New_York, Phoenix};
    use chrono_tz::Pacific::Honolulu;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339 instant")
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("YYYY-MM-DD")
    }

    use crate::domain::window::tests::office_hours;

    /// Recipient rules on, no campaign window, no user cap.
    fn rules_only() -> Limits<'static> {
        Limits {
            window: None,
            recipient_rules: true,
            frequency_cap: None,
        }
    }

    fn decide(zones: &[Tz], region: &str, limits: &Limits, history: &[&str], now: &str) -> Decision {
        let recipient = Recipient {
            zones,
            region: Some(region),
        };
        let history: Vec<DateTime<Utc>> = history.iter().map(|h| utc(h)).collect();
        RuleSet::shipped().decide(&recipient, limits, &history, utc(now))
    }

    fn held(rule: &str, until: &str) -> Decision {
        Decision::Held {
            rule: rule.into(),
            until: utc(until),
        }
    }

    // --- recipient hours ---------------------------------------------------------

    #[test]
    fn new_york_number_waits_for_eight_local() {
        // Wednesday 2026-01-14, EST (UTC-5).
        let limits = rules_only();
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-01-14T12:59:00Z"),
            held("us-federal", "2026-01-14T13:00:00Z")
        );
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-01-14T13:00:00Z"),
            Decision::Allowed
        );
        // 20:59 allowed, 21:00 held until 08:00 the next morning.
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-01-15T01:59:00Z"),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-01-15T02:00:00Z"),
            held("us-federal", "2026-01-15T13:00:00Z")
        );
    }

    #[test]
    fn los_angeles_number_waits_at_nine_eastern_until_eight_pacific() {
        let window = office_hours();
        let limits = Limits {
            window: Some(&window),
            ..rules_only()
        };
        // 09:00 EST is 06:00 PST.
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-01-14T14:00:00Z"),
            held("us-federal", "2026-01-14T16:00:00Z")
        );
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-01-14T16:00:00Z"),
            Decision::Allowed
        );
    }

    #[test]
    fn honolulu_number_waits_until_eight_hawaii_time() {
        let window = office_hours();
        let limits = Limits {
            window: Some(&window),
            ..rules_only()
        };
        // 09:00 EST is 04:00 HST (UTC-10); 08:00 HST is 13:00 EST, inside the window.
        assert_eq!(
            decide(&[Honolulu], "US-HI", &limits, &[], "2026-01-14T14:00:00Z"),
            held("us-federal", "2026-01-14T18:00:00Z")
        );
        assert_eq!(
            decide(&[Honolulu], "US-HI", &limits, &[], "2026-01-14T18:00:00Z"),
            Decision::Allowed
        );
    }

    #[test]
    fn multi_zone_recipient_gets_the_intersection() {
        // July: Denver is MDT (UTC-6), Phoenix stays MST (UTC-7). 08:00–21:00 in
        // both is 15:00Z (Phoenix opens) to 03:00Z (Denver closes).
        let zones = [Denver, Phoenix];
        let limits = rules_only();
        assert_eq!(
            decide(&zones, "US-AZ", &limits, &[], "2026-07-15T14:30:00Z"),
            held("us-federal", "2026-07-15T15:00:00Z")
        );
        assert_eq!(
            decide(&zones, "US-AZ", &limits, &[], "2026-07-15T15:00:00Z"),
            Decision::Allowed
        );
        assert_eq!(
            decide(&zones, "US-AZ", &limits, &[], "2026-07-16T02:59:00Z"),
            Decision::Allowed
        );
        assert_eq!(
            decide(&zones, "US-AZ", &limits, &[], "2026-07-16T03:00:00Z"),
            held("us-federal", "2026-07-16T15:00:00Z")
        );
    }

    #[test]
    fn unknown_region_gets_only_the_federal_rule() {
        // 20:30 EST: too late for Florida, fine federally.
        let recipient = Recipient {
            zones: &[New_York],
            region: None,
        };
        let decision = RuleSet::shipped().decide(&recipient, &rules_only(), &[], utc("2026-01-15T01:30:00Z"));
        assert_eq!(decision, Decision::Allowed);
    }

    #[test]
    fn no_known_zone_is_judged_in_the_campaign_zone() {
        let window = SendWindow {
            timezone: Zone(Los_Angeles),
            start: TimeOfDay::hm(6, 0),
            end: TimeOfDay::hm(22, 0),
            days: SendDays::weekdays(),
        };
        let limits = Limits {
            window: Some(&window),
            ..rules_only()
        };
        // 07:00 PST: the window is open, the federal 08:00 (Pacific) is not.
        assert_eq!(
            decide(&[], "US-CA", &limits, &[], "2026-01-14T15:00:00Z"),
            held("us-federal", "2026-01-14T16:00:00Z")
        );
    }

    // --- state rules ---------------------------------------------------------------

    #[test]
    fn florida_closes_at_twenty_local() {
        // 20:00 EST: federal hours allow it, Florida's do not.
        assert_eq!(
            decide(&[New_York], "US-FL", &rules_only(), &[], "2026-01-15T01:00:00Z"),
            held("us-fl", "2026-01-15T13:00:00Z")
        );
    }

    #[test]
    fn florida_fourth_message_in_a_day_waits_for_the_oldest_to_drop_out() {
        let limits = rules_only();
        let three = ["2026-01-14T14:30:00Z", "2026-01-13T16:00:00Z", "2026-01-14T14:00:00Z"];
        let now = "2026-01-14T15:00:00Z";
        assert_eq!(
            decide(&[New_York], "US-FL", &limits, &three, now),
            held("us-fl", "2026-01-14T16:00:00Z")
        );
        // Exactly 24 h after the oldest, it no longer counts.
        assert_eq!(
            decide(&[New_York], "US-FL", &limits, &three, "2026-01-14T16:00:00Z"),
            Decision::Allowed
        );
        // Two in the window (older history ignored) leave room for a third.
        let two = ["2026-01-12T15:00:00Z", "2026-01-14T14:00:00Z", "2026-01-14T14:30:00Z"];
        assert_eq!(decide(&[New_York], "US-FL", &limits, &two, now), Decision::Allowed);
    }

    #[test]
    fn florida_cap_freeing_up_at_night_waits_for_the_morning() {
        // The oldest of three drops out at 20:30 EST, after Florida's hours.
        let three = ["2026-01-14T01:30:00Z", "2026-01-14T14:00:00Z", "2026-01-14T14:30:00Z"];
        assert_eq!(
            decide(&[New_York], "US-FL", &rules_only(), &three, "2026-01-14T15:00:00Z"),
            held("us-fl", "2026-01-15T13:00:00Z")
        );
    }

    #[test]
    fn texas_sunday_waits_for_noon() {
        // Sunday 2026-01-18 10:00 CST (UTC-6).
        let limits = rules_only();
        assert_eq!(
            decide(&[Chicago], "US-TX", &limits, &[], "2026-01-18T16:00:00Z"),
            held("us-tx", "2026-01-18T18:00:00Z")
        );
        assert_eq!(
            decide(&[Chicago], "US-TX", &limits, &[], "2026-01-18T18:00:00Z"),
            Decision::Allowed
        );
        // Saturday 08:30: federal hours allow it, Texas waits for 09:00.
        assert_eq!(
            decide(&[Chicago], "US-TX", &limits, &[], "2026-01-17T14:30:00Z"),
            held("us-tx", "2026-01-17T15:00:00Z")
        );
    }

    #[test]
    fn connecticut_waits_for_nine() {
        assert_eq!(
            decide(&[New_York], "US-CT", &rules_only(), &[], "2026-01-14T13:30:00Z"),
            held("us-ct", "2026-01-14T14:00:00Z")
        );
    }

    #[test]
    fn sunday_bans_hold_until_monday_morning() {
        let limits = rules_only();
        // Sunday 2026-02-01 noon MST → Monday 08:00 MST (UTC-7).
        assert_eq!(
            decide(&[Denver], "US-UT", &limits, &[], "2026-02-01T19:00:00Z"),
            held("us-ut", "2026-02-02T15:00:00Z")
        );
        // Alabama, Sunday noon CST → Monday 08:00 CST.
        assert_eq!(
            decide(&[Chicago], "US-AL", &limits, &[], "2026-02-01T18:00:00Z"),
            held("us-al", "2026-02-02T14:00:00Z")
        );
        // Rhode Island opens at 09:00 on Monday.
        assert_eq!(
            decide(&[New_York], "US-RI", &limits, &[], "2026-02-01T17:00:00Z"),
            held("us-ri", "2026-02-02T14:00:00Z")
        );
    }

    #[test]
    fn sunday_then_holiday_monday_holds_until_tuesday() {
        // Sunday 2026-01-18, then Martin Luther King Jr. Day: Utah waits for Tuesday.
        assert_eq!(
            decide(&[Denver], "US-UT", &rules_only(), &[], "2026-01-18T19:00:00Z"),
            held("us-ut", "2026-01-20T15:00:00Z")
        );
    }

    #[test]
    fn thanksgiving_is_banned_in_holiday_ban_states_only() {
        // Thursday 2026-11-26 10:00 CST.
        let limits = rules_only();
        assert_eq!(
            decide(&[Chicago], "US-LA", &limits, &[], "2026-11-26T16:00:00Z"),
            held("us-la", "2026-11-27T14:00:00Z")
        );
        assert_eq!(
            decide(&[Chicago], "US-TX", &limits, &[], "2026-11-26T16:00:00Z"),
            Decision::Allowed
        );
    }

    #[test]
    fn federal_holidays_of_2026_on_their_actual_dates() {
        let holidays = [
            "2026-01-01",
            "2026-01-19",
            "2026-02-16",
            "2026-05-25",
            "2026-06-19",
            "2026-07-04",
            "2026-09-07",
            "2026-10-12",
            "2026-11-11",
            "2026-11-26",
            "2026-12-25",
        ];
        for holiday in holidays {
            assert!(is_federal_holiday(day(holiday)), "{holiday}");
        }
        // Independence Day falls on a Saturday; the observed Friday is not banned.
        for ordinary in ["2026-07-03", "2026-05-18", "2026-11-27", "2020-06-19"] {
            assert!(!is_federal_holiday(day(ordinary)), "{ordinary}");
        }
        // Memorial Day when May has five Mondays (2027-05-31) and four (2026).
        assert!(is_federal_holiday(day("2027-05-31")));
        assert!(!is_federal_holiday(day("2027-05-24")));
    }

    // --- DST -------------------------------------------------------------------------

    #[test]
    fn eight_local_opens_at_the_right_instant_across_spring_forward() {
        let limits = rules_only();
        // Saturday 2026-03-07: EST (UTC-5), PST (UTC-8).
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-03-07T12:30:00Z"),
            held("us-federal", "2026-03-07T13:00:00Z")
        );
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-03-07T15:30:00Z"),
            held("us-federal", "2026-03-07T16:00:00Z")
        );
        // Sunday 2026-03-08 after the change: EDT (UTC-4), PDT (UTC-7).
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-03-08T06:00:00Z"),
            held("us-federal", "2026-03-08T12:00:00Z")
        );
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-03-08T12:00:00Z"),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-03-08T06:00:00Z"),
            held("us-federal", "2026-03-08T15:00:00Z")
        );
    }

    #[test]
    fn eight_local_opens_at_the_right_instant_across_fall_back() {
        let limits = rules_only();
        // Saturday 2026-10-31: EDT (UTC-4), PDT (UTC-7).
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-10-31T11:30:00Z"),
            held("us-federal", "2026-10-31T12:00:00Z")
        );
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-10-31T14:30:00Z"),
            held("us-federal", "2026-10-31T15:00:00Z")
        );
        // Sunday 2026-11-01 after the change: EST (UTC-5), PST (UTC-8).
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-11-01T12:30:00Z"),
            held("us-federal", "2026-11-01T13:00:00Z")
        );
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-11-01T09:00:00Z"),
            held("us-federal", "2026-11-01T16:00:00Z")
        );
        // 21:00 EST closes at 02:00Z, an hour later in UTC than the night before.
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-11-02T01:59:00Z"),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-11-02T02:00:00Z"),
            held("us-federal", "2026-11-02T13:00:00Z")
        );
    }

    // --- campaign window and caps ----------------------------------------------------

    #[test]
    fn campaign_window_and_recipient_hours_intersect() {
        let window = office_hours();
        let limits = Limits {
            window: Some(&window),
            ..rules_only()
        };
        // Wednesday 17:59 EST is 14:59 PST: both open.
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-01-14T22:59:00Z"),
            Decision::Allowed
        );
        // 18:00 EST closes the window; Thursday it opens at 09:00 EST, but Los
        // Angeles waits until 08:00 PST.
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-01-14T23:00:00Z"),
            held("campaign-window", "2026-01-15T16:00:00Z")
        );
        // Friday evening → Monday 08:00 PST.
        assert_eq!(
            decide(&[Los_Angeles], "US-CA", &limits, &[], "2026-01-16T23:30:00Z"),
            held("campaign-window", "2026-01-19T16:00:00Z")
        );
    }

    #[test]
    fn campaign_quiet_hours_reproduce_the_window_alone() {
        let window = office_hours();
        let limits = Limits {
            window: Some(&window),
            recipient_rules: false,
            frequency_cap: None,
        };
        // A Florida number in a Pacific zone with a full Florida cap, over a
        // whole week: only the window counts.
        let history = ["2026-01-14T13:00:00Z", "2026-01-14T13:10:00Z", "2026-01-14T13:20:00Z"];
        let start = utc("2026-01-12T00:00:00Z");
        for quarter_hours in 0..(7 * 24 * 4) {
            let now = start + TimeDelta::minutes(15 * quarter_hours);
            let expected = match window.is_open(now) {
                true => Decision::Allowed,
                false => Decision::Held {
                    rule: CAMPAIGN_WINDOW.into(),
                    until: window.next_open(now),
                },
            };
            let recipient = Recipient {
                zones: &[Los_Angeles],
                region: Some("US-FL"),
            };
            let history: Vec<_> = history.iter().map(|h| utc(h)).collect();
            assert_eq!(
                RuleSet::shipped().decide(&recipient, &limits, &history, now),
                expected,
                "{now}"
            );
        }
    }

    #[test]
    fn user_frequency_cap_holds_across_campaigns() {
        let limits = Limits {
            frequency_cap: Some(Cap { max: 2, hours: 24 * 7 }),
            ..rules_only()
        };
        let two_this_week = ["2026-01-10T15:00:00Z", "2026-01-13T15:00:00Z"];
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &two_this_week, "2026-01-14T15:00:00Z"),
            held("frequency-cap", "2026-01-17T15:00:00Z")
        );
        assert_eq!(
            decide(
                &[New_York],
                "US-NY",
                &limits,
                &two_this_week[1..],
                "2026-01-14T15:00:00Z"
            ),
            Decision::Allowed
        );
    }

    #[test]
    fn hours_are_reported_before_caps() {
        // Florida at 21:30 EST with a full cap: the hours rule is the reason.
        let limits = Limits {
            frequency_cap: Some(Cap { max: 1, hours: 24 }),
            ..rules_only()
        };
        let one = ["2026-01-14T15:00:00Z"];
        assert_eq!(
            decide(&[New_York], "US-FL", &limits, &one, "2026-01-15T02:30:00Z"),
            held("us-federal", "2026-01-15T15:00:00Z")
        );
    }

    #[test]
    fn a_cap_that_never_frees_up_holds_a_day_and_decides_again() {
        let limits = Limits {
            frequency_cap: Some(Cap { max: 0, hours: 24 }),
            ..rules_only()
        };
        assert_eq!(
            decide(&[New_York], "US-NY", &limits, &[], "2026-01-14T15:00:00Z"),
            held("frequency-cap", "2026-01-15T15:00:00Z")
        );
    }

    #[test]
    fn history_needed_is_the_longest_applicable_cap() {
        let set = RuleSet::shipped();
        let florida = Recipient {
            zones: &[New_York],
            region: Some("US-FL"),
        };
        let new_york = Recipient {
            zones: &[New_York],
            region: Some("US-NY"),
        };
        assert_eq!(set.history_needed(&florida, &rules_only()), Some(TimeDelta::hours(24)));
        assert_eq!(set.history_needed(&new_york, &rules_only()), None);
        let weekly = Limits {
            frequency_cap: Some(Cap { max: 5, hours: 24 * 7 }),
            ..rules_only()
        };
        assert_eq!(set.history_needed(&florida, &weekly), Some(TimeDelta::days(7)));
        let campaign_only = Limits {
            recipient_rules: false,
            ..rules_only()
        };
        assert_eq!(set.history_needed(&florida, &campaign_only), None);
    }

    #[test]
    fn until_is_the_first_allowed_instant_for_the_issue_area_codes_across_dst() {
        use chrono::Timelike;
        use chrono_tz::America::Anchorage;
        // 212, 415, 808, 907, 305, 405, 410, 860, 512, 208 and 928.
        let recipients: [(&[Tz], &str); 11] = [
            (&[New_York], "US-NY"),
            (&[Los_Angeles], "US-CA"),
            (&[Honolulu], "US-HI"),
            (&[Anchorage], "US-AK"),
            (&[New_York], "US-FL"),
            (&[Chicago], "US-OK"),
            (&[New_York], "US-MD"),
            (&[New_York], "US-CT"),
            (&[Chicago], "US-TX"),
            (&[Denver, Los_Angeles], "US-ID"),
            (&[Phoenix, Denver], "US-AZ"),
        ];
        let window = office_hours();
        let limits = Limits {
            window: Some(&window),
            ..rules_only()
        };
        let set = RuleSet::shipped();
        let scan_step = TimeDelta::minutes(30);
        for week_start in ["2026-03-05T00:00:00Z", "2026-10-29T00:00:00Z"] {
            let mut now = utc(week_start);
            while now < utc(week_start) + TimeDelta::days(7) {
                for (zones, region) in recipients {
                    let recipient = Recipient {
                        zones,
                        region: Some(region),
                    };
                    let decide = |at| set.decide(&recipient, &limits, &[], at);
                    let Decision::Held { until, .. } = decide(now) else {
                        // An independent check: inside the window and 08:00–21:00 everywhere.
                        assert!(window.is_open(now), "{region} at {now}");
                        for zone in zones {
                            let local = now.with_timezone(zone).time();
                            assert!((8..21).contains(&local.hour()), "{region} at {local} in {zone}");
                        }
                        continue;
                    };
                    assert_eq!(decide(until), Decision::Allowed, "{region} from {now} to {until}");
                    assert_ne!(
                        decide(until - TimeDelta::seconds(1)),
                        Decision::Allowed,
                        "{region} {until}"
                    );
                    let mut at = now + scan_step;
                    while at < until {
                        assert_ne!(decide(at), Decision::Allowed, "{region} open at {at} before {until}");
                        at += scan_step;
                    }
                }
                now += TimeDelta::minutes(97);
            }
        }
    }

    // --- rule sets -------------------------------------------------------------------

    const MINIMAL: &str = r#"
        version = "test-1"
        [[rules]]
        id = "x-late"
        title = "Late starters"
        source = "Test Act § 1"
        effective = 2027-01-01
        until = 2028-01-01
        applies_to = ["us-ny"]
        hours = { default = "10:00-20:00" }
    "#;

    #[test]
    fn a_rule_applies_only_from_its_effective_date_until_its_end() {
        let set = RuleSet::from_toml(MINIMAL).expect("valid");
        assert_eq!(set.version(), "test-1");
        let recipient = Recipient {
            zones: &[New_York],
            region: Some("US-NY"),
        };
        // 09:00 EST on days before, inside and after the rule's life.
        let at_nine = |date: &str| set.decide(&recipient, &rules_only(), &[], utc(&format!("{date}T14:00:00Z")));
        assert_eq!(at_nine("2026-12-31"), Decision::Allowed);
        assert_eq!(at_nine("2027-01-04"), held("x-late", "2027-01-04T15:00:00Z"));
        assert_eq!(at_nine("2028-01-03"), Decision::Allowed);
    }

    fn refusal(text: &str) -> RuleSetError {
        RuleSet::from_toml(text).expect_err("an invalid rule set")
    }

    fn with(field_line: &str, replacing: &str) -> String {
        MINIMAL.replace(replacing, field_line)
    }

    fn invalid(field: &str) -> impl Fn(&RuleSetError) -> bool {
        move |error| matches!(error, RuleSetError::Invalid { rule, field: f, .. } if rule == "x-late" && f == field)
    }

    #[test]
    fn invalid_rule_sets_are_refused_with_the_rule_and_field_named() {
        let hours = r#"hours = { default = "10:00-20:00" }"#;
        let unknown_day = refusal(&with(
            r#"hours = { default = "10:00-20:00", sunday = "closed" }"#,
            hours,
        ));
        assert!(invalid("hours.sunday")(&unknown_day), "{unknown_day:?}");
        assert!(
            unknown_day.to_string().contains("not \"default\" or a weekday"),
            "{unknown_day}"
        );

        let backwards = refusal(&with(r#"hours = { default = "20:00-10:00" }"#, hours));
        assert!(invalid("hours.default")(&backwards), "{backwards:?}");
        assert!(backwards.to_string().contains("start must be before end"));

        let malformed = refusal(&with(r#"hours = { default = "8am-8pm" }"#, hours));
        assert!(invalid("hours.default")(&malformed), "{malformed:?}");

        let all_closed = refusal(&with(r#"hours = { default = "closed" }"#, hours));
        assert!(invalid("hours.default")(&all_closed), "{all_closed:?}");

        let no_default = refusal(&with(r#"hours = { sun = "closed" }"#, hours));
        assert!(invalid("hours.default")(&no_default), "{no_default:?}");

        let bad_date = refusal(&with("effective = 2027-02-30", "effective = 2027-01-01"));
        assert!(matches!(bad_date, RuleSetError::Syntax(_)), "{bad_date:?}");
        let with_time = refusal(&with("effective = 2027-01-01T10:00:00", "effective = 2027-01-01"));
        assert!(invalid("effective")(&with_time), "{with_time:?}");
        let ends_first = refusal(&with("until = 2026-01-01", "until = 2028-01-01"));
        assert!(invalid("until")(&ends_first), "{ends_first:?}");

        let nowhere = refusal(&with("applies_to = []", r#"applies_to = ["us-ny"]"#));
        assert!(invalid("applies_to")(&nowhere), "{nowhere:?}");
        let not_a_region = refusal(&with(r#"applies_to = ["Florida"]"#, r#"applies_to = ["us-ny"]"#));
        assert!(invalid("applies_to")(&not_a_region), "{not_a_region:?}");

        let zero_cap = refusal(&with("cap = { max = 0, hours = 24 }", hours));
        assert!(invalid("cap")(&zero_cap), "{zero_cap:?}");
        let no_source = refusal(&with(r#"source = " ""#, r#"source = "Test Act § 1""#));
        assert!(invalid("source")(&no_source), "{no_source:?}");
    }

    #[test]
    fn set_level_mistakes_are_refused() {
        let twice = format!("{MINIMAL}{}", MINIMAL.replace(r#"version = "test-1""#, ""));
        assert_eq!(refusal(&twice), RuleSetError::DuplicateId("x-late".into()));
        let unversioned = MINIMAL.replace(r#"version = "test-1""#, r#"version = """#);
        assert_eq!(refusal(&unversioned), RuleSetError::MissingVersion);
        let misspelt = refusal(&MINIMAL.replace("no_holidays", "x").replace("applies_to", "applies"));
        assert!(misspelt.to_string().contains("applies"), "{misspelt}");
        assert!(matches!(refusal("version = "), RuleSetError::Syntax(_)));
        let reserved = refusal(&MINIMAL.replace("x-late", "frequency-cap"));
        assert!(
            matches!(reserved, RuleSetError::Invalid { ref field, .. } if field == "id"),
            "{reserved:?}"
        );
    }

    #[test]
    fn shipped_set_parses_and_every_rule_cites_a_source() {
        let set = RuleSet::shipped();
        assert_eq!(set.version(), "us-2026.11");
        let ids: Vec<&str> = set.rules().iter().map(|rule| rule.id.as_str()).collect();
        for id in [
            "us-federal",
            "us-fl",
            "us-ok",
            "us-md",
            "us-ct",
            "us-tx",
            "us-al",
            "us-la",
            "us-ms",
            "us-ri",
            "us-ut",
        ] {
            assert!(ids.contains(&id), "{id} missing");
        }
        for rule in set.rules() {
            assert!(!rule.source.trim().is_empty(), "{}", rule.id);
            assert!(!rule.title.trim().is_empty(), "{}", rule.id);
        }
        let three_a_day = Some(Cap { max: 3, hours: 24 });
        for id in ["us-fl", "us-ok", "us-md"] {
            let rule = set.rules().iter().find(|rule| rule.id == id).expect("listed");
            assert_eq!(rule.cap, three_a_day, "{id}");
        }
        let texas = set
            .rules()
            .iter()
            .find(|rule| rule.id == "us-tx")
            .and_then(|rule| rule.hours);
        let sunday = texas.and_then(|hours| hours.on(Weekday::Sun));
        assert_eq!(sunday.map(|h| h.start), Some(TimeOfDay::hm(12, 0)));
    }
}
