//! Black-box tests of the HTTP API: real server, real HTTP, real databases.
//! Every test runs on the embedded stack (SQLite, in-process transport) and on
//! PostgreSQL + NATS JetStream (`on_both_backends!`); `subscriber` checks the
//! events with a third-party NATS client, so it needs the NATS stack.

mod auth;
mod campaigns;
mod compliance;
mod contacts;
mod edges;
mod import;
mod input_edges;
mod openapi;
mod operations;
mod outbox;
mod scale;
mod sending;
mod subscriber;
