//! Sending a campaign (SPEC §3.8, §1): queueing its messages (the first
//! batch in the call, the rest in the background), and the jobs that hand
//! claimed messages to a dispatcher.

use chrono::{DateTime, Utc};

use super::ServiceError;
use crate::bus::SendJob;
use crate::bus::event::{Event, build};
use crate::domain::campaign::Campaign;
use crate::domain::ids::TaskId;
use crate::domain::message::{ClaimedMessage, SendRequest};
use crate::domain::variant::Variant;
use crate::domain::window::SendWindow;
use crate::store::{Store, StoreError};

/// Contacts the send call looks at itself before it answers: a small
/// campaign is queued when the call returns, a big one goes on in the
/// background (and the call still answers in milliseconds).
pub const FIRST_BATCH: u32 = 1_000;
/// Contacts looked at per background batch: one short transaction each, so
/// other writers (SQLite's single writer included) never wait long.
pub const QUEUE_BATCH: u32 = 5_000;

/// What `POST /campaigns/{id}/send` started.
#[derive(Debug)]
pub struct Queued {
    pub task_id: TaskId,
    /// Messages queued when the call answers.
    pub queued: u64,
    /// More contacts are left to queue, in the background.
    pub queuing: bool,
    /// When the window next opens, if it is closed now.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub event: Event,
}

/// Starts a send task for an active campaign, through its carrier or
/// `default_carrier` (messages wait for the window if it is closed now), and
/// queues its first contacts; the rest are queued by [`queue_rest`].
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
    let request = SendRequest {
        task_id: TaskId::new(),
        user_id: campaign.user_id,
        campaign_id: campaign.id,
        b_percentage: campaign.message_template_b.as_ref().and(campaign.ab_test_percentage),
        carrier: carrier.to_string(),
        not_before: scheduled_for.unwrap_or(now),
        scheduled_for,
        now,
    };
    let first = store
        .start_send(&request, FIRST_BATCH)
        .await?
        .ok_or_else(|| ServiceError::NotSendable("only an active campaign can be sent".into()))?;
    let event = build::send_started(
        campaign.user_id,
        campaign.id,
        request.task_id,
        first.queued,
        scheduled_for,
        now,
    );
    Ok(Queued {
        task_id: request.task_id,
        queued: first.queued,
        queuing: !first.done,
        scheduled_for,
        event,
    })
}

/// Queues what is left of a `queuing` task, batch by batch, calling
/// `queued_some` after each batch that created messages (so they can be
/// handed out while the rest is queued). Returns the messages created.
pub async fn queue_rest(
    store: &dyn Store,
    task_id: TaskId,
    now: impl Fn() -> DateTime<Utc>,
    queued_some: impl Fn(),
) -> Result<u64, StoreError> {
    let mut queued = 0;
    while let Some(step) = store.queue_batch(task_id, QUEUE_BATCH, now()).await? {
        queued += step.queued;
        if step.queued > 0 {
            queued_some();
        }
        if step.done {
            break;
        }
    }
    Ok(queued)
}

/// The jobs for messages claimed from `campaign`: everything a dispatcher
/// needs, since it cannot look anything up. Stale after `deadline`; each
/// sendable until its recipient's hours end (`recipient_until`).
pub fn jobs(
    campaign: &Campaign,
    claimed: Vec<ClaimedMessage>,
    deadline: DateTime<Utc>,
    recipient_until: impl Fn(&ClaimedMessage) -> Option<DateTime<Utc>>,
) -> Vec<SendJob> {
    let window = SendWindow::of(campaign);
    claimed
        .into_iter()
        .map(|m| {
            let recipient_until = recipient_until(&m);
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
                recipient_until,
                deadline,
            }
        })
        .collect()
}
