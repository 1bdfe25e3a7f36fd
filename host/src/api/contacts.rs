//! Contact endpoints: add (JSON), import (CSV), list, get, patch.

use std::fs::File;

use salvo::prelude::*;

use super::json::Json;

use crate::domain::ids::{ContactId, UserId};

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
use crate::domain::contact::{self, ConsentSource, ContactInput};
use crate::domain::csv_import::CsvFileError;
use crate::service;

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
    let (outcome, event) =
        service::import::contacts(&*app.store, &campaign, batch.contacts, batch.repeats, app.clock.now()).await?;
    app.publish(vec![event]).await;
    res.status_code(StatusCode::CREATED);
    res.render(Json(AddContactsResult {
        added: outcome.linked,
        duplicates: outcome.already_linked + batch.repeats,
        total_contacts: outcome.total_contacts,
    }));
    Ok(())
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
    // The open file keeps the temporary upload readable until the parser is done.
    let input = File::open(file.path()).map_err(|e| CsvFileError::Read(e.to_string()))?;
    let (report, event) =
        service::import::csv(&*app.store, &app.phone_policy, &campaign, input, app.clock.now()).await?;
    app.publish(vec![event]).await;
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

async fn load_contact(app: &super::App, user_id: UserId, id: ContactId) -> Result<contact::Contact, ApiError> {
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
        let cancelled = service::consent::cancel_queued(&*app.store, updated.id, app.clock.now()).await?;
        app.publish(cancelled).await;
    }
    Ok(Json(updated.into()))
}
