//! Black-box tests of the HTTP API: real server, real HTTP, real databases.
//! Every test runs on SQLite and on PostgreSQL (`on_both_backends!`).

mod auth;
mod campaigns;
mod contacts;
mod import;
mod operations;
mod sending;
