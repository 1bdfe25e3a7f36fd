//! What a verified carrier webhook event does: a delivery receipt moves its
//! message on (in any order relative to the send result), an inbound STOP or
//! START changes consent, any other inbound text is an event for its owners.

use chrono::{DateTime, Utc};

use super::{ServiceError, consent};
use crate::bus::event::{Event, build};
use crate::domain::contact::ConsentSource;
use crate::domain::ids::MessageId;
use crate::domain::keyword::{Keyword, classify_inbound};
use crate::domain::message::{MessageStatus, Receipt, ReceiptOutcome};
use crate::domain::phone::PhonePolicy;
use crate::domain::{DomainError, NUL_MESSAGE, check_text};
use crate::plugin::carrier::{DeliveryStatus, DeliveryUpdate, InboundMessage, WebhookEvent};
use crate::store::{ConsentTarget, Store};

/// Applies one event from `carrier`; `message_id` is Herald's message id when
/// the callback URL named it. Returns the events to publish.
pub async fn apply(
    store: &dyn Store,
    phone_policy: &PhonePolicy,
    carrier: &str,
    event: WebhookEvent,
    message_id: Option<MessageId>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, ServiceError> {
    match event {
        WebhookEvent::Delivery(update) => receipt(store, carrier, update, message_id, now).await,
        WebhookEvent::Inbound(message) => inbound(store, phone_policy, carrier, message, now).await,
    }
}

async fn receipt(
    store: &dyn Store,
    carrier: &str,
    update: DeliveryUpdate,
    message_id: Option<MessageId>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, ServiceError> {
    // Text the database cannot store (PostgreSQL refuses NUL) is not a
    // carrier id Herald ever recorded.
    if check_text(&update.carrier_message_id).is_err() {
        return Err(DomainError::Forbidden(format!("carrier_message_id {NUL_MESSAGE}")).into());
    }
    let receipt = Receipt {
        carrier: carrier.to_string(),
        carrier_message_id: update.carrier_message_id,
        status: match update.status {
            DeliveryStatus::Delivered => MessageStatus::Delivered,
            DeliveryStatus::Failed => MessageStatus::Failed,
            DeliveryStatus::Sent => MessageStatus::Sent,
        },
        error: update.error.map(|e| e.replace('\0', "")),
        message_id,
        at: now,
    };
    match store.apply_receipt(&receipt).await? {
        ReceiptOutcome::Applied(message) => Ok(build::message(&message, now).into_iter().collect()),
        ReceiptOutcome::Kept => {
            tracing::debug!(carrier, id = %receipt.carrier_message_id, "receipt before its send result; kept");
            Ok(Vec::new())
        }
        ReceiptOutcome::Ignored => Ok(Vec::new()),
    }
}

async fn inbound(
    store: &dyn Store,
    phone_policy: &PhonePolicy,
    carrier: &str,
    message: InboundMessage,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, ServiceError> {
    // Numbered like contacts, so "+1 (202) 555-0177" finds "+12025550177";
    // a sender no contact can have (not a number, NUL…) changes nothing.
    let Ok(from) = phone_policy.normalize(&message.from) else {
        tracing::debug!(carrier, "inbound message from a number no contact can have; ignored");
        return Ok(Vec::new());
    };
    let opted_out = match classify_inbound(&message.body) {
        Keyword::OptOut => true,
        Keyword::OptIn => false,
        Keyword::Other => {
            let owners = store.owners_messaged(carrier, &from).await?;
            return Ok(owners
                .into_iter()
                .map(|owner| build::inbound(owner, carrier, &from, &message.to, &message.body, now))
                .collect());
        }
    };
    let detail = format!("{} via {carrier}", message.body.trim().to_uppercase());
    let target = ConsentTarget::Phone {
        carrier,
        phone_number: &from,
    };
    Ok(consent::set(store, target, opted_out, ConsentSource::Keyword, &detail, now).await?)
}
