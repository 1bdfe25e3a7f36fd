//! Consent changes and what follows from them (SPEC §4): an opted-out contact's
//! queued messages are cancelled, and every change is an event.

use chrono::{DateTime, Utc};

use crate::bus::event::{Event, build};
use crate::domain::contact::{ConsentSource, Contact};
use crate::domain::ids::ContactId;
use crate::domain::message::MessageRecord;
use crate::store::{ConsentTarget, Store, StoreError};

/// Opts the target's contacts out (or back in), recording `source` and
/// `detail`; returns the events of the contacts that changed and of the
/// messages cancelled with them.
pub async fn set(
    store: &dyn Store,
    target: ConsentTarget<'_>,
    opted_out: bool,
    source: ConsentSource,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let (contacts, cancelled) = store.set_consent(target, opted_out, source, detail, now).await?;
    Ok(events(&contacts, source, &cancelled, now))
}

/// After a contact was opted out by an edit (its consent event is already
/// written with the edit): cancels its queued messages, returning their events.
pub async fn cancel_queued(
    store: &dyn Store,
    contact: ContactId,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let cancelled = store.cancel_queued_for(contact, now).await?;
    Ok(cancelled.iter().filter_map(|m| build::message(m, now)).collect())
}

/// The events of a consent change: the contacts that changed, then the
/// messages cancelled with them.
pub fn events(
    contacts: &[Contact],
    source: ConsentSource,
    cancelled: &[MessageRecord],
    now: DateTime<Utc>,
) -> Vec<Event> {
    let consent = contacts.iter().map(|c| build::consent(c, source.as_str(), now));
    let messages = cancelled.iter().filter_map(|m| build::message(m, now));
    consent.chain(messages).collect()
}
