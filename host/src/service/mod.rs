//! Application services: what a request or a result *does*, between the edges
//! (HTTP handlers, the scheduler's result loop) and storage. A service runs
//! the domain rules and the store writes of one use case and returns the
//! events of what it changed; the caller publishes them through its outbox.
//! Services know nothing of HTTP or of the bus.

pub mod compliance;
pub mod consent;
pub mod forecast;
pub mod import;
pub mod sending;
pub mod webhook;

use crate::domain::DomainError;
use crate::domain::csv_import::CsvFileError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The upload is not a CSV file Herald can read; nothing was imported.
    #[error(transparent)]
    Csv(#[from] CsvFileError),
    /// The campaign cannot be sent now (not active, or no carrier).
    #[error("{0}")]
    NotSendable(String),
    #[error("{0}")]
    Internal(String),
}
