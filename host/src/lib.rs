//! Herald: a self-hostable SMS campaign platform.
//!
//! Layout by responsibility (see `docs/architecture.md`): [`domain`] (rules, no
//! I/O), [`service`] (use cases over the store), [`store`] (sqlx, SQLite and
//! PostgreSQL behind capability traits), [`bus`], [`scheduler`], [`dispatch`],
//! [`plugin`] (the Wasm runtime), [`auth`], [`api`] (salvo HTTP edge), [`config`]
//! and [`cli`].

pub mod api;
pub mod auth;
pub mod backoff;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod outbox;
pub mod plugin;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
