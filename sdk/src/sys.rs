//! The host backend: Herald's imports on `wasm32`, the mock host elsewhere.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::{config_get, fetch, log, now};

#[cfg(target_arch = "wasm32")]
pub(crate) use crate::bindings::host::{config_get, fetch, log, now};
