//! Campaigns: field rules, defaults, status moves and what may change when.

use std::str::FromStr;

use chrono::{DateTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

use super::ids::{CampaignId, UserId};
use super::window::{TimeOfDay, Zone};
use super::{DomainError, Errors, check_name, template};

pub const DEFAULT_DAILY_LIMIT: i32 = 125;
pub const DEFAULT_MAX_DAILY_LIMIT: i64 = 1000;
pub const DEFAULT_AB_PERCENTAGE: i32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum CampaignStatus {
    Draft,
    Active,
    Paused,
    Completed,
}

impl CampaignStatus {
    pub const ALL: [CampaignStatus; 4] = [Self::Draft, Self::Active, Self::Paused, Self::Completed];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The status moves a user may make; `completed` is final.
    pub fn can_move_to(self, to: CampaignStatus) -> bool {
        use CampaignStatus::*;
        matches!(
            (self, to),
            (Draft, Active) | (Active, Paused) | (Paused, Active) | (Active, Completed) | (Paused, Completed)
        )
    }
}

impl FromStr for CampaignStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("must be one of draft, active, paused, completed (got {s:?})"))
    }
}

/// Whose clock decides when a message may go (SPEC §3.1, §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, strum::Display, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum QuietHours {
    /// The campaign's window and the recipient's allowed hours and rules.
    #[default]
    Recipient,
    /// The campaign's window only (the original contract).
    Campaign,
}

impl QuietHours {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn parse(value: &str) -> Result<Self, String> {
        value
            .parse()
            .map_err(|_| format!("must be \"recipient\" or \"campaign\" (got {value:?})"))
    }
}

/// The weekdays a campaign may send on; written as a list of `mon`…`sun`,
/// stored as bits (bit 0 is Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct SendDays(u8);

impl TryFrom<Vec<String>> for SendDays {
    type Error = String;

    fn try_from(days: Vec<String>) -> Result<Self, String> {
        Self::parse(&days)
    }
}

impl From<SendDays> for Vec<String> {
    fn from(days: SendDays) -> Self {
        days.names().into_iter().map(str::to_string).collect()
    }
}

impl TryFrom<i32> for SendDays {
    type Error = String;

    fn try_from(bits: i32) -> Result<Self, String> {
        Self::from_bits(bits).ok_or_else(|| format!("{bits} is not a set of weekdays"))
    }
}

impl SendDays {
    const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    pub fn weekdays() -> Self {
        Self(0b001_1111)
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    /// Compact form for storage: bit 0 is Monday.
    pub fn bits(self) -> i32 {
        i32::from(self.0)
    }

    pub fn from_bits(bits: i32) -> Option<Self> {
        (1..=0x7f).contains(&bits).then_some(Self(bits as u8))
    }

    pub fn names(self) -> Vec<&'static str> {
        (0..7)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| Self::NAMES[i])
            .collect()
    }

    pub fn parse(days: &[String]) -> Result<Self, String> {
        if days.is_empty() {
            return Err("must list at least one day".into());
        }
        let mut bits = 0u8;
        for day in days {
            let index = Self::NAMES
                .iter()
                .position(|name| name.eq_ignore_ascii_case(day))
                .ok_or_else(|| format!("{day:?} is not one of mon, tue, wed, thu, fri, sat, sun"))?;
            bits |= 1 << index;
        }
        Ok(Self(bits))
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Campaign {
    pub id: CampaignId,
    pub user_id: UserId,
    pub name: String,
    pub message_template: String,
    pub message_template_b: Option<String>,
    pub ab_test_percentage: Option<i32>,
    pub daily_limit: i32,
    pub total_limit: Option<i32>,
    pub status: CampaignStatus,
    pub timezone: Zone,
    pub send_window_start: TimeOfDay,
    pub send_window_end: TimeOfDay,
    #[sqlx(try_from = "i32")]
    pub send_days: SendDays,
    pub carrier: Option<String>,
    pub quiet_hours: QuietHours,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Moved on by every write; a write lands only on the version it read.
    pub version: i64,
}

/// The writable fields of a campaign as a client sent them; `None` means absent.
/// Nullable fields are `Some(None)` when the client sent `null`.
#[derive(Debug, Clone, Default)]
pub struct CampaignChanges {
    pub name: Option<String>,
    pub message_template: Option<String>,
    pub message_template_b: Option<Option<String>>,
    pub ab_test_percentage: Option<Option<i64>>,
    pub daily_limit: Option<i64>,
    pub total_limit: Option<Option<i64>>,
    pub status: Option<CampaignStatus>,
    pub timezone: Option<String>,
    pub send_window_start: Option<String>,
    pub send_window_end: Option<String>,
    pub send_days: Option<Vec<String>>,
    pub carrier: Option<Option<String>>,
    pub quiet_hours: Option<String>,
}

impl CampaignChanges {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.message_template.is_none()
            && self.message_template_b.is_none()
            && self.ab_test_percentage.is_none()
            && self.daily_limit.is_none()
            && self.total_limit.is_none()
            && self.status.is_none()
            && self.timezone.is_none()
            && self.send_window_start.is_none()
            && self.send_window_end.is_none()
            && self.send_days.is_none()
            && self.carrier.is_none()
            && self.quiet_hours.is_none()
    }
}

/// What validation needs to know about the installation.
pub struct CampaignRules<'a> {
    /// Names of the configured carriers.
    pub carriers: &'a [String],
    /// The operator's bound on `daily_limit` (`campaigns.max_daily_limit`).
    pub max_daily_limit: i64,
}

/// Builds a new `draft` campaign from a create request.
pub fn create(
    id: CampaignId,
    user_id: UserId,
    changes: CampaignChanges,
    rules: &CampaignRules<'_>,
    now: DateTime<Utc>,
) -> Result<Campaign, DomainError> {
    let mut errors = Errors::default();
    if changes.name.is_none() {
        errors.push("name", "is required");
    }
    if changes.message_template.is_none() {
        errors.push("message_template", "is required");
    }
    if changes.status.is_some_and(|s| s != CampaignStatus::Draft) {
        errors.push("status", "a new campaign is always draft; activate it with PUT");
    }
    let blank = Campaign {
        id,
        user_id,
        name: String::new(),
        message_template: String::new(),
        message_template_b: None,
        ab_test_percentage: None,
        daily_limit: DEFAULT_DAILY_LIMIT,
        total_limit: None,
        status: CampaignStatus::Draft,
        timezone: Zone(chrono_tz::America::New_York),
        send_window_start: TimeOfDay::hm(9, 0),
        send_window_end: TimeOfDay::hm(18, 0),
        send_days: SendDays::weekdays(),
        carrier: None,
        quiet_hours: QuietHours::default(),
        created_at: now,
        updated_at: now,
        version: 0,
    };
    let changes = CampaignChanges {
        status: None,
        ..changes
    };
    apply_fields(&blank, changes, rules, errors)
}

/// Applies a partial update, enforcing the status moves and the rules of an
/// active or completed campaign.
pub fn update(
    current: &Campaign,
    changes: CampaignChanges,
    rules: &CampaignRules<'_>,
    now: DateTime<Utc>,
) -> Result<Campaign, DomainError> {
    if changes.is_empty() {
        return Ok(current.clone());
    }
    if current.status == CampaignStatus::Completed {
        return Err(DomainError::Forbidden("a completed campaign accepts no changes".into()));
    }
    let target = changes.status;
    let mut updated = apply_fields(
        current,
        CampaignChanges {
            status: None,
            ..changes
        },
        rules,
        Errors::default(),
    )?;
    if let Some(to) = target
        && to != current.status
    {
        if !current.status.can_move_to(to) {
            return Err(DomainError::Forbidden(format!(
                "a campaign cannot move from {} to {}",
                current.status, to
            )));
        }
        updated.status = to;
    }
    let template_changed = updated.message_template != current.message_template
        || updated.message_template_b != current.message_template_b
        || updated.ab_test_percentage != current.ab_test_percentage;
    if template_changed && current.status == CampaignStatus::Active {
        return Err(DomainError::Forbidden(
            "the message templates and A/B split of an active campaign cannot change; pause it first".into(),
        ));
    }
    updated.updated_at = now;
    Ok(updated)
}

/// Validates every given field against `base`, reporting all problems at once.
fn apply_fields(
    base: &Campaign,
    changes: CampaignChanges,
    rules: &CampaignRules<'_>,
    mut errors: Errors,
) -> Result<Campaign, DomainError> {
    let mut c = base.clone();
    if let Some(name) = changes.name {
        errors.check("name", check_name(&name));
        c.name = name;
    }
    if let Some(body) = changes.message_template {
        errors.check("message_template", template::check(&body));
        c.message_template = body;
    }
    if let Some(body_b) = changes.message_template_b {
        if let Some(body) = &body_b {
            errors.check("message_template_b", template::check(body));
        }
        c.message_template_b = body_b;
    }
    if let Some(limit) = changes.daily_limit {
        c.daily_limit = errors
            .check("daily_limit", in_range(limit, 1, rules.max_daily_limit))
            .unwrap_or(c.daily_limit);
    }
    if let Some(limit) = changes.total_limit {
        c.total_limit = match limit {
            None => None,
            Some(n) => errors.check("total_limit", in_range(n, 1, i64::from(i32::MAX))),
        };
    }
    if let Some(zone) = changes.timezone {
        c.timezone = errors.check("timezone", zone.parse()).unwrap_or(c.timezone);
    }
    if let Some(start) = changes.send_window_start {
        c.send_window_start = errors
            .check("send_window_start", start.parse())
            .unwrap_or(c.send_window_start);
    }
    if let Some(end) = changes.send_window_end {
        c.send_window_end = errors
            .check("send_window_end", end.parse())
            .unwrap_or(c.send_window_end);
    }
    if c.send_window_start >= c.send_window_end {
        errors.push("send_window_end", "must be later than send_window_start");
    }
    if let Some(days) = changes.send_days {
        c.send_days = errors.check("send_days", SendDays::parse(&days)).unwrap_or(c.send_days);
    }
    if let Some(carrier) = changes.carrier {
        if let Some(name) = &carrier
            && !rules.carriers.iter().any(|known| known == name)
        {
            errors.push(
                "carrier",
                format!(
                    "{name:?} is not a configured carrier (known: {})",
                    rules.carriers.join(", ")
                ),
            );
        }
        c.carrier = carrier;
    }
    if let Some(quiet) = changes.quiet_hours {
        c.quiet_hours = errors
            .check("quiet_hours", QuietHours::parse(&quiet))
            .unwrap_or(c.quiet_hours);
    }
    match changes.ab_test_percentage {
        Some(Some(_)) if c.message_template_b.is_none() => {
            errors.push("ab_test_percentage", "needs message_template_b");
        }
        Some(Some(p)) => c.ab_test_percentage = errors.check("ab_test_percentage", in_range(p, 0, 100)),
        Some(None) | None => {
            if c.message_template_b.is_none() {
                c.ab_test_percentage = None;
            } else if c.ab_test_percentage.is_none() {
                c.ab_test_percentage = Some(DEFAULT_AB_PERCENTAGE);
            }
        }
    }
    errors.into_result().map(|()| c)
}

fn in_range(value: i64, min: i64, max: i64) -> Result<i32, String> {
    if (min..=max).contains(&value) {
        Ok(value as i32)
    } else {
        Err(format!("must be between {min} and {max} (got {value})"))
    }
}

/// A completed campaign is final: it takes no new contacts either.
pub fn check_accepts_contacts(campaign: &Campaign) -> Result<(), DomainError> {
    if campaign.status == CampaignStatus::Completed {
        return Err(DomainError::Forbidden(
            "a completed campaign accepts no new contacts".into(),
        ));
    }
    Ok(())
}

/// Only an active campaign can be sent (SPEC §3.8).
pub fn check_sendable(campaign: &Campaign) -> Result<(), DomainError> {
    if campaign.status != CampaignStatus::Active {
        return Err(DomainError::Forbidden(format!(
            "only an active campaign can be sent; this one is {}",
            campaign.status
        )));
    }
    Ok(())
}

/// Deleting an active campaign would orphan messages in flight.
pub fn check_deletable(campaign: &Campaign) -> Result<(), DomainError> {
    if campaign.status == CampaignStatus::Active {
        return Err(DomainError::Forbidden(
            "an active campaign cannot be deleted; pause or complete it first".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CampaignRules<'static> {
        static CARRIERS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| vec!["log".to_string()]);
        CampaignRules {
            carriers: &CARRIERS,
            max_daily_limit: DEFAULT_MAX_DAILY_LIMIT,
        }
    }

    fn minimal() -> CampaignChanges {
        CampaignChanges {
            name: Some("Spring sale".into()),
            message_template: Some("Hi {{name}}".into()),
            ..Default::default()
        }
    }

    fn created() -> Campaign {
        create(
            CampaignId::default(),
            UserId::default(),
            minimal(),
            &rules(),
            Utc::now(),
        )
        .unwrap()
    }

    fn fields(err: DomainError) -> Vec<String> {
        match err {
            DomainError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn create_applies_documented_defaults() {
        let c = created();
        assert_eq!(c.status, CampaignStatus::Draft);
        assert_eq!(c.daily_limit, 125);
        assert_eq!(c.timezone, Zone(chrono_tz::America::New_York));
        assert_eq!(c.send_window_start.to_string(), "09:00");
        assert_eq!(TimeOfDay::to_string(&c.send_window_end), "18:00");
        assert_eq!(c.send_days.names(), ["mon", "tue", "wed", "thu", "fri"]);
        assert_eq!(c.ab_test_percentage, None);
    }

    /// `daily_limit` is bounded by the operator's setting, not a constant.
    #[test]
    fn daily_limit_is_bounded_by_the_operators_maximum() {
        let with = |max_daily_limit, daily_limit| {
            let rules = CampaignRules {
                max_daily_limit,
                ..rules()
            };
            let changes = CampaignChanges {
                name: Some("Big".into()),
                message_template: Some("Hi".into()),
                daily_limit: Some(daily_limit),
                ..Default::default()
            };
            create(CampaignId::default(), UserId::default(), changes, &rules, Utc::now())
        };
        assert!(with(DEFAULT_MAX_DAILY_LIMIT, 1001).is_err());
        assert_eq!(with(1_000_000, 1_000_000).unwrap().daily_limit, 1_000_000);
        assert_eq!(fields(with(1_000_000, 1_000_001).unwrap_err()), vec!["daily_limit"]);
    }

    #[test]
    fn create_reports_every_bad_field_at_once() {
        let err = create(
            CampaignId::default(),
            UserId::default(),
            CampaignChanges {
                name: Some("  ".into()),
                daily_limit: Some(1001),
                timezone: Some("Mars/Olympus".into()),
                send_window_start: Some("9:00".into()),
                send_days: Some(vec![]),
                carrier: Some(Some("nope".into())),
                ..Default::default()
            },
            &rules(),
            Utc::now(),
        )
        .unwrap_err();
        let f = fields(err);
        for expected in [
            "name",
            "message_template",
            "daily_limit",
            "timezone",
            "send_window_start",
            "send_days",
            "carrier",
        ] {
            assert!(f.iter().any(|x| x == expected), "missing {expected} in {f:?}");
        }
    }

    #[test]
    fn window_must_open_before_it_closes() {
        let changes = CampaignChanges {
            send_window_start: Some("18:00".into()),
            send_window_end: Some("09:00".into()),
            ..minimal()
        };
        let err = create(CampaignId::default(), UserId::default(), changes, &rules(), Utc::now()).unwrap_err();
        assert_eq!(fields(err), ["send_window_end"]);
    }

    #[test]
    fn ab_percentage_defaults_to_50_and_needs_variant_b() {
        let with_b = CampaignChanges {
            message_template_b: Some(Some("Hey {{name}}".into())),
            ..minimal()
        };
        let c = create(CampaignId::default(), UserId::default(), with_b, &rules(), Utc::now()).unwrap();
        assert_eq!(c.ab_test_percentage, Some(50));

        let without_b = CampaignChanges {
            ab_test_percentage: Some(Some(30)),
            ..minimal()
        };
        let err = create(
            CampaignId::default(),
            UserId::default(),
            without_b,
            &rules(),
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(fields(err), ["ab_test_percentage"]);

        let cleared = update(
            &c,
            CampaignChanges {
                message_template_b: Some(None),
                ..Default::default()
            },
            &rules(),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(cleared.ab_test_percentage, None);
    }

    #[test]
    fn status_moves_follow_the_lifecycle() {
        use CampaignStatus::*;
        let allowed = [
            (Draft, Active),
            (Active, Paused),
            (Paused, Active),
            (Active, Completed),
            (Paused, Completed),
        ];
        for from in CampaignStatus::ALL {
            for to in CampaignStatus::ALL {
                assert_eq!(from.can_move_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    fn set_status(c: &Campaign, status: &str) -> Result<Campaign, DomainError> {
        let changes = CampaignChanges {
            status: Some(status.parse().map_err(|e| DomainError::field("status", e))?),
            ..Default::default()
        };
        update(c, changes, &rules(), Utc::now())
    }

    #[test]
    fn illegal_moves_and_completed_campaigns_are_forbidden() {
        let draft = created();
        assert!(matches!(set_status(&draft, "paused"), Err(DomainError::Forbidden(_))));
        assert!(matches!(set_status(&draft, "bogus"), Err(DomainError::Invalid(_))));
        let done = set_status(&set_status(&draft, "active").unwrap(), "completed").unwrap();
        assert!(matches!(set_status(&done, "active"), Err(DomainError::Forbidden(_))));
        let rename = CampaignChanges {
            name: Some("x".into()),
            ..Default::default()
        };
        assert!(matches!(
            update(&done, rename, &rules(), Utc::now()),
            Err(DomainError::Forbidden(_))
        ));
        assert_eq!(
            set_status(&draft, "draft").unwrap().status,
            CampaignStatus::Draft,
            "same status is a no-op"
        );
    }

    #[test]
    fn active_campaign_keeps_its_templates_but_not_its_limits() {
        let active = set_status(&created(), "active").unwrap();
        let edit = CampaignChanges {
            message_template: Some("New {{name}}".into()),
            ..Default::default()
        };
        assert!(matches!(
            update(&active, edit.clone(), &rules(), Utc::now()),
            Err(DomainError::Forbidden(_))
        ));
        let same = CampaignChanges {
            message_template: Some(active.message_template.clone()),
            daily_limit: Some(10),
            ..Default::default()
        };
        assert_eq!(update(&active, same, &rules(), Utc::now()).unwrap().daily_limit, 10);
        let pause_and_edit = CampaignChanges {
            status: Some(CampaignStatus::Paused),
            ..edit
        };
        assert!(
            matches!(
                update(&active, pause_and_edit, &rules(), Utc::now()),
                Err(DomainError::Forbidden(_))
            ),
            "pause first, then edit"
        );
        assert!(check_deletable(&active).is_err());
    }
}
