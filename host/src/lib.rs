//! Herald: a self-hostable SMS campaign platform.
//!
//! Layout by responsibility: [`domain`] (rules, no I/O), [`store`] (sqlx, SQLite and
//! PostgreSQL behind one trait), [`auth`] (JWT), [`api`] (salvo HTTP edge),
//! [`config`] and [`cli`].

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
pub mod store;
pub mod telemetry;
