//! Sending a campaign (SPEC §3.8, §1): queueing its messages at once, and the
//! jobs that hand claimed messages to a dispatcher.

use chrono::{DateTime, Utc};

use super::ServiceError;
use crate::bus::SendJob;
use crate::bus::event::{Event, build};
use crate::domain::campaign::Campaign;
use crate::domain::ids::{ContactId, TaskId};
use crate::domain::message::{ClaimedMessage, SendRequest};
use crate::domain::variant::{Variant, variant_for};
use crate::domain::window::SendWindow;
use crate::store::Store;

/// What `POST /campaigns/{id}/send` started.
#[derive(Debug)]
pub struct Queued {
    pub task_id: TaskId,
    pub queued: u64,
    /// When the window next opens, if it is closed now.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub event: Event,
}

/// Queues a message for every eligible contact of an active campaign, through
/// its carrier or `default_carrier`; messages wait for the window if it is closed.
pub async fn queue(
    store: &dyn Store,
    campaign: &Campaign,
    default_carrier: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Queued, ServiceError> {
    let window = SendWindow::of(campaign);
    let scheduled_for = (!window.is_open(now)).then(|| window.next_open(now));
    let carrier = campaign
        .carrier
        .as_deref()
        .or(default_carrier)
        .ok_or_else(|| ServiceError::NotSendable("no carrier is configured for this campaign".into()))?;
    let b_percentage = campaign.message_template_b.as_ref().and(campaign.ab_test_percentage);
    let request = SendRequest {
        task_id: TaskId::new(),
        user_id: campaign.user_id,
        campaign_id: campaign.id,
        b_percentage,
        carrier: carrier.to_string(),
        not_before: scheduled_for.unwrap_or(now),
        scheduled_for,
        now,
    };
    let assign = |contact: ContactId| variant_for(campaign.id, contact, b_percentage);
    let queued = store
        .queue_send(&request, campaign.total_limit, &assign)
        .await?
        .ok_or_else(|| ServiceError::NotSendable("only an active campaign can be sent".into()))?;
    let event = build::send_started(
        campaign.user_id,
        campaign.id,
        request.task_id,
        queued,
        scheduled_for,
        now,
    );
    Ok(Queued {
        task_id: request.task_id,
        queued,
        scheduled_for,
        event,
    })
}

/// The jobs for messages claimed from `campaign`: everything a dispatcher
/// needs, since it cannot look anything up. Stale after `deadline`.
pub fn jobs(campaign: &Campaign, claimed: Vec<ClaimedMessage>, deadline: DateTime<Utc>) -> Vec<SendJob> {
    let window = SendWindow::of(campaign);
    claimed
        .into_iter()
        .map(|m| {
            let template = match m.variant {
                Variant::B => campaign
                    .message_template_b
                    .as_ref()
                    .unwrap_or(&campaign.message_template),
                Variant::A => &campaign.message_template,
            };
            // Attributes first: the contact's own fields win over same-named attributes.
            let mut variables: Vec<(String, String)> = m.attributes.into_iter().collect();
            variables.push(("name".into(), m.name));
            variables.push(("phone_number".into(), m.phone_number.to_string()));
            SendJob {
                message_id: m.id,
                campaign_id: m.campaign_id,
                user_id: campaign.user_id,
                hand_off: m.hand_off,
                attempts: m.attempts,
                carrier: m.carrier,
                to: m.phone_number.into(),
                from: String::new(),
                template: template.clone(),
                variables,
                window,
                deadline,
            }
        })
        .collect()
}
