//! `GET /campaigns/{id}/forecast` (issue 11, "Preview"): where a campaign's
//! remaining recipients are, which rule holds them now, and when the campaign
//! will finish under its window, daily limit, the carrier's rate and the
//! recipient rules. The simulation is the domain's; this gathers its inputs.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::campaign::{Campaign, QuietHours};
use crate::domain::compliance::{Decision, Limits, Recipient, RuleSet};
use crate::domain::contact::Attributes;
use crate::domain::forecast::{Availability, DEFAULT_UNTHROTTLED_RATE, ForecastInput, ForecastOutcome, simulate};
use crate::domain::recipient::{Location, TIMEZONE_ATTRIBUTE, locate};
use crate::domain::window::SendWindow;
use crate::store::{Store, StoreError};

/// How far ahead a forecast looks before it calls the finish unknown.
const HORIZON_DAYS: i64 = 400;

/// Recipients presumed in the same zones and region, with what the forecast says of them.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupForecast {
    pub location: Location,
    pub recipients: u64,
    /// The rule holding them now, if one does.
    pub held_now_by: Option<String>,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

/// The whole forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub at: DateTime<Utc>,
    pub recipients: u64,
    pub rule_set: String,
    pub rate_per_second: Option<f64>,
    /// Recipients held now, per rule.
    pub held_now: BTreeMap<String, u64>,
    pub groups: Vec<GroupForecast>,
    pub finish: Option<DateTime<Utc>>,
    pub days: Vec<(chrono::NaiveDate, u64)>,
}

/// When each group of recipients may be handed out: the rule set's answer
/// for its location, with no earlier hand-outs (each recipient gets one
/// message of this campaign).
struct RuleAvailability<'a> {
    rules: &'a RuleSet,
    window: SendWindow,
    recipient_rules: bool,
    locations: &'a [Location],
}

impl RuleAvailability<'_> {
    fn limits(&self) -> Limits<'_> {
        Limits {
            window: Some(&self.window),
            recipient_rules: self.recipient_rules,
            frequency_cap: None,
        }
    }

    fn recipient(&self, group: usize) -> Recipient<'_> {
        let location = &self.locations[group];
        Recipient {
            zones: &location.zones,
            region: location.region,
        }
    }

    fn decide(&self, group: usize, at: DateTime<Utc>) -> Decision {
        self.rules.decide(&self.recipient(group), &self.limits(), &[], at)
    }
}

impl Availability for RuleAvailability<'_> {
    fn next_allowed(&self, group: usize, at: DateTime<Utc>) -> DateTime<Utc> {
        match self.decide(group, at) {
            Decision::Allowed => at,
            Decision::Held { until, .. } => until,
        }
    }

    fn allowed_until(&self, group: usize, at: DateTime<Utc>) -> DateTime<Utc> {
        self.rules.allowed_until(&self.recipient(group), &self.limits(), at)
    }
}

/// Forecasts the campaign from `now`, at the carrier's `rate_per_second`.
pub async fn forecast(
    store: &dyn Store,
    rules: &RuleSet,
    campaign: &Campaign,
    rate_per_second: Option<f64>,
    now: DateTime<Utc>,
) -> Result<Forecast, StoreError> {
    let mut by_location: HashMap<Location, u64> = HashMap::new();
    for group in store.forecast_recipients(campaign.id).await? {
        let attributes: Attributes = group
            .timezone
            .into_iter()
            .map(|zone| (TIMEZONE_ATTRIBUTE.to_string(), zone))
            .collect();
        *by_location.entry(locate(&group.prefix, &attributes)).or_default() += group.recipients;
    }
    let mut located: Vec<(Location, u64)> = by_location.into_iter().collect();
    located.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.zone_names().cmp(&b.0.zone_names())));
    let (locations, counts): (Vec<Location>, Vec<u64>) = located.into_iter().unzip();
    let window = SendWindow::of(campaign);
    let availability = RuleAvailability {
        rules,
        window,
        recipient_rules: campaign.quiet_hours == QuietHours::Recipient,
        locations: &locations,
    };
    let handed_today = store.handed_on(campaign.id, window.local_day(now)).await?;
    let outcome: ForecastOutcome = simulate(&ForecastInput {
        groups: &counts,
        start: now,
        daily_limit: campaign.daily_limit.max(0) as u32,
        handed_today,
        campaign_zone: campaign.timezone.0,
        rate_per_second,
        unthrottled_rate: DEFAULT_UNTHROTTLED_RATE,
        availability: &availability,
        horizon: TimeDelta::days(HORIZON_DAYS),
    });
    let mut held_now: BTreeMap<String, u64> = BTreeMap::new();
    let groups = outcome
        .groups
        .iter()
        .enumerate()
        .map(|(i, simulated)| {
            let held_now_by = match availability.decide(i, now) {
                Decision::Allowed => None,
                Decision::Held { rule, .. } => {
                    *held_now.entry(rule.clone()).or_default() += counts[i];
                    Some(rule)
                }
            };
            GroupForecast {
                location: locations[i].clone(),
                recipients: counts[i],
                held_now_by,
                first: simulated.first,
                last: simulated.last,
            }
        })
        .collect();
    Ok(Forecast {
        at: now,
        recipients: counts.iter().sum(),
        rule_set: rules.version().to_string(),
        rate_per_second,
        held_now,
        groups,
        finish: outcome.finish,
        days: outcome.days,
    })
}
