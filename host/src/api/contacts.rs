//! Contact endpoints: add (JSON), import (CSV), list, get, patch.

use std::fs::File;
use std::io::Read;

use salvo::prelude::*;

use super::json::Json;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::campaigns::load;
use super::dto::{
    AddContacts, AddContactsResult, ContactBody, ContactList, ContactPatch, ImportResult, ImportUpload, PageQuery,
};
use super::extract::{self, app, user};
use super::problem::ApiError;
use super::problem::responses::*;
use super::retry_on_conflict;
use crate::bus::event::build;
use crate::domain::campaign;
use crate::domain::contact::{self, ConsentSource, ContactInput, NewContact};
use crate::domain::csv_import::{CsvContacts, CsvFileError, ImportReport, Row};
use crate::store::{ContactBatch, ContactBatches};

/// Contacts handed to the store per message while a file is parsed: at most
/// this many, and at most about this many bytes of them.
const IMPORT_BATCH: usize = 8_000;
const IMPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Contacts parsed from a file and not yet handed to the store.
#[derive(Default)]
struct Batch {
    contacts: Vec<NewContact>,
    bytes: usize,
}

impl Batch {
    /// Adds a contact; true when the batch is full and should be sent.
    fn push(&mut self, contact: NewContact) -> bool {
        self.bytes += contact.phone_number.len()
            + contact.name.len()
            + contact.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        self.contacts.push(contact);
        self.contacts.len() >= IMPORT_BATCH || self.bytes >= IMPORT_BATCH_BYTES
    }
}

/// The upload as the CSV parser reads it: reading fails once the request that
/// wants the rows is gone, so an abandoned import stops parsing at its next read
/// (every 64 KiB) instead of running to the end of the file. Each stop counts in
/// `herald_csv_imports_abandoned_total`.
struct WhileWanted<R> {
    inner: R,
    receiver: mpsc::Sender<ContactBatch>,
}

impl<R: Read> Read for WhileWanted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.receiver.is_closed() {
            metrics::counter!("herald_csv_imports_abandoned_total").increment(1);
            return Err(std::io::Error::other("the request was abandoned"));
        }
        self.inner.read(buf)
    }
}

/// Counts CSV parsers running (`herald_csv_imports_running`), so an operator (and
/// a test) can see that an abandoned import stopped.
struct RunningImport;

impl RunningImport {
    fn start() -> Self {
        metrics::gauge!("herald_csv_imports_running").increment(1.0);
        Self
    }
}

impl Drop for RunningImport {
    fn drop(&mut self) {
        metrics::gauge!("herald_csv_imports_running").decrement(1.0);
    }
}

/// Add contacts to a campaign (all-or-nothing validation).
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/contacts", tag = "contacts",
    operation_id = "add_contacts", impl_for = add, request_body = AddContacts,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 201, description = "How many contacts were linked", body = AddContactsResult),
        BadRequest, Unauthorized, NotFound, TooLarge, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn add(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app(depot);
    let campaign = load(app, user(depot), extract::path_id(req, "id")?).await?;
    campaign::check_accepts_contacts(&campaign)?;
    let body: AddContacts = extract::json(req, app.config.server.max_body_bytes).await?;
    let inputs: Vec<ContactInput> = body.contacts.into_iter().map(Into::into).collect();
    let batch = contact::validate_batch(inputs, &app.phone_policy)?;
    let (tx, rx) = mpsc::channel(2);
    tx.send(ContactBatch::Rows(batch.contacts))
        .await
        .expect("receiver is alive");
    tx.send(ContactBatch::End).await.expect("receiver is alive");
    let outcome = link(app, &campaign, rx).await?;
    announce_import(app, &campaign, &outcome, outcome.already_linked + batch.repeats, 0).await;
    res.status_code(StatusCode::CREATED);
    res.render(Json(AddContactsResult {
        added: outcome.linked,
        duplicates: outcome.already_linked + batch.repeats,
        total_contacts: outcome.total_contacts,
    }));
    Ok(())
}

async fn link(
    app: &super::App,
    campaign: &crate::domain::campaign::Campaign,
    batches: ContactBatches,
) -> Result<crate::store::LinkOutcome, ApiError> {
    let now = app.clock.now();
    Ok(app
        .store
        .link_contacts(campaign.user_id, campaign.id, batches, now)
        .await?)
}

/// Publishes `contacts.imported` for a landed JSON or CSV import.
async fn announce_import(
    app: &super::App,
    campaign: &crate::domain::campaign::Campaign,
    outcome: &crate::store::LinkOutcome,
    duplicates: u64,
    errors: u64,
) {
    let event = build::contacts_imported(
        campaign.user_id,
        campaign.id,
        outcome.linked,
        duplicates,
        errors,
        outcome.total_contacts,
        app.clock.now(),
    );
    app.publish(vec![event]).await;
}

/// Import contacts from a CSV file; bad rows are skipped and reported.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/contacts/import", tag = "contacts",
    operation_id = "import_contacts", impl_for = import,
    request_body(content = ImportUpload, content_type = "multipart/form-data"),
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 201, description = "What was imported, with the rows skipped", body = ImportResult),
        BadRequest, Unauthorized, NotFound, TooLarge, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn import(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app(depot);
    let campaign = load(app, user(depot), extract::path_id(req, "id")?).await?;
    campaign::check_accepts_contacts(&campaign)?;
    let limit = app.config.contacts.max_import_bytes;
    let file = match req.try_file("file").await {
        Ok(Some(file)) => file.clone(),
        Ok(None) => return Err(ApiError::BadRequest("the upload has no `file` field".into())),
        Err(salvo::http::ParseError::PayloadTooLarge) => return Err(ApiError::TooLarge(limit)),
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "expected multipart/form-data with a `file` field: {e}"
            )));
        }
    };
    if file.size() > limit {
        return Err(ApiError::TooLarge(limit));
    }
    let (tx, rx) = mpsc::channel(2);
    let policy = app.phone_policy.clone();
    // The parser owns `file`, which keeps the temporary upload alive until it is done.
    // It runs only as long as this request: if the client goes away, the request
    // future (and with it the receiver) is dropped, and the parser's next read fails.
    let parser = tokio::task::spawn_blocking(move || -> Result<ImportReport, CsvFileError> {
        let _running = RunningImport::start();
        let input = File::open(file.path()).map_err(|e| CsvFileError::Read(e.to_string()))?;
        let input = WhileWanted {
            inner: input,
            receiver: tx.clone(),
        };
        let mut rows = CsvContacts::new(input, policy)?;
        let mut report = ImportReport::default();
        let mut batch = Batch::default();
        let send = |batch: Batch| tx.blocking_send(ContactBatch::Rows(batch.contacts)).is_ok();
        loop {
            match rows.next_row() {
                Ok(Some(Row::Contact(c))) => {
                    if batch.push(c) && !send(std::mem::take(&mut batch)) {
                        break;
                    }
                }
                Ok(Some(Row::Repeat)) => report.duplicates += 1,
                Ok(Some(Row::Invalid(detail))) => report.record_error(detail),
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.blocking_send(ContactBatch::Abort(e.to_string()));
                    return Err(e);
                }
            }
        }
        if !batch.contacts.is_empty() {
            send(batch);
        }
        let _ = tx.blocking_send(ContactBatch::End);
        Ok(report)
    });
    let (linked, parsed) = tokio::join!(link(app, &campaign, rx), parser);
    let mut report = parsed.map_err(|e| ApiError::Internal(format!("CSV parser stopped: {e}")))??;
    let outcome = linked?;
    report.imported = outcome.linked;
    report.duplicates += outcome.already_linked;
    report.total_contacts = outcome.total_contacts;
    announce_import(app, &campaign, &outcome, report.duplicates, report.errors).await;
    res.status_code(StatusCode::CREATED);
    res.render(Json(ImportResult::from(report)));
    Ok(())
}

/// Contacts of a campaign, in the order they were added.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/contacts", tag = "contacts",
    operation_id = "list_contacts", impl_for = list,
    params(("id" = Uuid, Path, description = "Campaign id"), PageQuery),
    responses(
        (status = 200, description = "One page of the campaign's contacts", body = ContactList),
        BadRequest, Unauthorized, NotFound, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn list(req: &mut Request, depot: &mut Depot) -> Result<Json<ContactList>, ApiError> {
    let app = app(depot);
    let campaign = load(app, user(depot), extract::path_id(req, "id")?).await?;
    let page = extract::page(req)?;
    let found = app.store.campaign_contacts(campaign.id, page).await?;
    Ok(Json(ContactList::new(found, page)))
}

async fn load_contact(app: &super::App, user_id: Uuid, id: Uuid) -> Result<contact::Contact, ApiError> {
    app.store
        .contact(user_id, id)
        .await?
        .ok_or(ApiError::NotFound("contact"))
}

/// Get one contact.
#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "contacts",
    operation_id = "get_contact", impl_for = show,
    params(("id" = Uuid, Path, description = "Contact id")),
    responses(
        (status = 200, description = "The contact", body = ContactBody),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn show(req: &mut Request, depot: &mut Depot) -> Result<Json<ContactBody>, ApiError> {
    let id = extract::path_id(req, "id")?;
    Ok(Json(load_contact(app(depot), user(depot), id).await?.into()))
}

/// Change a contact's name, attributes or opt-out.
#[utoipa::path(patch, path = "/api/v1/contacts/{id}", tag = "contacts",
    operation_id = "update_contact", impl_for = patch, request_body = ContactPatch,
    params(("id" = Uuid, Path, description = "Contact id")),
    responses(
        (status = 200, description = "The contact as changed", body = ContactBody),
        BadRequest, Unauthorized, NotFound, TooLarge, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn patch(req: &mut Request, depot: &mut Depot) -> Result<Json<ContactBody>, ApiError> {
    let app = app(depot);
    let (user_id, id) = (user(depot), extract::path_id(req, "id")?);
    let body: ContactPatch = extract::json(req, app.config.server.max_body_bytes).await?;
    let changes: contact::ContactChanges = body.into();
    let (updated, events) = retry_on_conflict(|| async {
        let current = load_contact(app, user_id, id).await?;
        let now = app.clock.now();
        let (updated, consent_changed) = contact::update(&current, changes.clone(), now)?;
        let consent = consent_changed.then_some(ConsentSource::Api);
        let events: Vec<_> = consent
            .map(|source| build::consent(&updated, source.as_str(), now))
            .into_iter()
            .collect();
        let written = app
            .store
            .replace_contact(&updated, current.version, consent, app.outbox.durable(&events))
            .await?;
        Ok(written.then_some((updated, events)))
    })
    .await?;
    let opted_out_now = updated.opted_out && !events.is_empty();
    app.outbox.committed(events).await;
    if opted_out_now {
        // Messages not yet handed out are cancelled (SPEC §4).
        let now = app.clock.now();
        let cancelled = app.store.cancel_queued_for(updated.id, now).await?;
        app.publish(cancelled.iter().filter_map(|m| build::message(m, now)).collect())
            .await;
    }
    Ok(Json(updated.into()))
}
