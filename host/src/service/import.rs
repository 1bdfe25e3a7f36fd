//! Adding contacts to a campaign: a validated JSON batch, or a CSV file parsed
//! as it is written to the store (SPEC §3.3–3.4). Either way the write is all
//! or nothing, and a landed import is a `contacts.imported` event.

use std::io::Read;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::ServiceError;
use crate::bus::event::{Event, build};
use crate::domain::campaign::Campaign;
use crate::domain::contact::NewContact;
use crate::domain::csv_import::{CsvContacts, CsvFileError, ImportReport, Row};
use crate::domain::phone::PhonePolicy;
use crate::store::{ContactBatch, ContactBatches, LinkOutcome, Store};

/// Contacts handed to the store per message while a file is parsed: at most
/// this many, and at most about this many bytes of them.
const IMPORT_BATCH: usize = 8_000;
const IMPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Links already validated contacts; `repeats` were dropped from the batch as
/// repeats of one another. Returns what landed and its event.
pub async fn contacts(
    store: &dyn Store,
    campaign: &Campaign,
    contacts: Vec<NewContact>,
    repeats: u64,
    now: DateTime<Utc>,
) -> Result<(LinkOutcome, Event), ServiceError> {
    let (tx, rx) = mpsc::channel(2);
    tx.send(ContactBatch::Rows(contacts)).await.expect("receiver is alive");
    tx.send(ContactBatch::End).await.expect("receiver is alive");
    let outcome = link(store, campaign, rx, now).await?;
    let event = imported(campaign, &outcome, outcome.already_linked + repeats, 0, now);
    Ok((outcome, event))
}

/// Parses `input` as CSV on a blocking thread while the store writes what it
/// parsed. Bad rows are counted and reported; a file that is not CSV, or a
/// write that fails, leaves nothing behind. If the caller goes away, parsing
/// stops at its next read.
pub async fn csv(
    store: &dyn Store,
    policy: &PhonePolicy,
    campaign: &Campaign,
    input: impl Read + Send + 'static,
    now: DateTime<Utc>,
) -> Result<(ImportReport, Event), ServiceError> {
    let (tx, rx) = mpsc::channel(2);
    let policy = policy.clone();
    let parser = tokio::task::spawn_blocking(move || parse(input, policy, tx));
    let (linked, parsed) = tokio::join!(link(store, campaign, rx, now), parser);
    let mut report = parsed.map_err(|e| ServiceError::Internal(format!("CSV parser stopped: {e}")))??;
    let outcome = linked?;
    report.imported = outcome.linked;
    report.duplicates += outcome.already_linked;
    report.total_contacts = outcome.total_contacts;
    let event = imported(campaign, &outcome, report.duplicates, report.errors, now);
    Ok((report, event))
}

async fn link(
    store: &dyn Store,
    campaign: &Campaign,
    batches: ContactBatches,
    now: DateTime<Utc>,
) -> Result<LinkOutcome, ServiceError> {
    Ok(store.link_contacts(campaign.user_id, campaign.id, batches, now).await?)
}

fn parse(input: impl Read, policy: PhonePolicy, tx: mpsc::Sender<ContactBatch>) -> Result<ImportReport, CsvFileError> {
    let _running = RunningImport::start();
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
}

fn imported(campaign: &Campaign, outcome: &LinkOutcome, duplicates: u64, errors: u64, now: DateTime<Utc>) -> Event {
    build::contacts_imported(
        campaign.user_id,
        campaign.id,
        outcome.linked,
        duplicates,
        errors,
        outcome.total_contacts,
        now,
    )
}

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

/// The upload as the CSV parser reads it: reading fails once the caller that
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
