//! `GET /campaigns/{id}/forecast`: a preview of when a campaign will finish.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use salvo::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::campaigns::load;
use super::extract::{self, app, user};
use super::json::Json;
use super::problem::ApiError;
use super::problem::responses::*;
use crate::service;
use crate::service::forecast::{Forecast, GroupForecast};

/// Recipients presumed in the same zones and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastGroupBody {
    /// IANA zones (several when the number's prefix spans zones: a rule must hold in all).
    pub zones: Vec<String>,
    /// State or province presumed from the area code (ISO 3166-2), if any.
    pub region: Option<String>,
    pub recipients: u64,
    /// The rule holding them now (`campaign-window`, `us-federal`, `us-fl` …), or null.
    pub held_now_by: Option<String>,
    /// When the first and the last of them are expected to be handed out.
    pub first_send: Option<DateTime<Utc>>,
    pub last_send: Option<DateTime<Utc>>,
}

impl From<GroupForecast> for ForecastGroupBody {
    fn from(g: GroupForecast) -> Self {
        Self {
            zones: g.location.zones.iter().map(|z| z.name().to_string()).collect(),
            region: g.location.region.map(str::to_string),
            recipients: g.recipients,
            held_now_by: g.held_now_by,
            first_send: g.first,
            last_send: g.last,
        }
    }
}

/// Messages expected on one campaign-local day.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastDay {
    pub date: NaiveDate,
    pub messages: u64,
}

/// A campaign's forecast.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastBody {
    /// The instant the forecast starts from.
    pub at: DateTime<Utc>,
    /// Recipients still to be handed out (linked, not opted out, no message
    /// handed out yet).
    pub recipients: u64,
    /// The rule set version applied.
    pub rule_set: String,
    /// The carrier's `max_per_second` the simulation sends at (null: unthrottled).
    pub rate_per_second: Option<f64>,
    /// Recipients held now, per rule.
    pub held_now: BTreeMap<String, u64>,
    /// Per zone and state, largest first.
    pub groups: Vec<ForecastGroupBody>,
    /// When the last message is expected to be handed out; null when not
    /// within 400 days (or never: a group no rule ever allows).
    pub finish: Option<DateTime<Utc>>,
    /// Messages expected per campaign-local day.
    pub days: Vec<ForecastDay>,
}

impl From<Forecast> for ForecastBody {
    fn from(f: Forecast) -> Self {
        Self {
            at: f.at,
            recipients: f.recipients,
            rule_set: f.rule_set,
            rate_per_second: f.rate_per_second,
            held_now: f.held_now,
            groups: f.groups.into_iter().map(Into::into).collect(),
            finish: f.finish,
            days: f
                .days
                .into_iter()
                .map(|(date, messages)| ForecastDay { date, messages })
                .collect(),
        }
    }
}

/// Forecast when the campaign will finish, before (or while) sending it.
///
/// A pure simulation from its window, daily limit, its carrier's
/// `max_per_second` and the recipient rules (SPEC §4.1); it sends nothing.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/forecast", tag = "forecast",
    operation_id = "forecast_campaign", impl_for = forecast,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Where its recipients are and when it will finish", body = ForecastBody),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn forecast(req: &mut Request, depot: &mut Depot) -> Result<Json<ForecastBody>, ApiError> {
    let app = app(depot);
    let campaign = load(app, user(depot), extract::path_id(req, "id")?).await?;
    let carrier = campaign.carrier.as_deref().or(app.config.default_carrier());
    let rate = app
        .config
        .carriers
        .iter()
        .find(|c| Some(c.name.as_str()) == carrier)
        .map(|c| f64::from(c.max_per_second));
    let preview =
        service::forecast::forecast(&*app.store, app.scheduler.rules(), &campaign, rate, app.clock.now()).await?;
    Ok(Json(preview.into()))
}
