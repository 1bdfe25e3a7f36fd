//! Logging through Herald: lines land in Herald's log, tagged with the plugin
//! and the message being handled.
//!
//! ```no_run
//! herald_sdk::log::info(format!("sending to {}", "+15550100"));
//! herald_sdk::log::warn("carrier answered slowly");
//! ```
//!
//! Under `cargo test` the lines are captured by the mock host (see
//! [`testing::logs`](crate::testing::logs)) and echoed to stderr.

pub use crate::types::Level;

/// Writes `message` to Herald's log at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    crate::sys::log(level, message.as_ref());
}

/// Writes `message` at [`Level::Trace`].
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Writes `message` at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes `message` at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes `message` at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes `message` at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
