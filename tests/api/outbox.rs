//! The events outbox (SPEC §9: every event at least once, also when the bus was
//! down when it happened). Each test runs a nats-server of its own (`nats-server`
//! on the `PATH`, JetStream storage in a temporary directory), stops it, changes
//! things through the API, and starts it again on the same port and storage:
//! every event must then be on the events stream, once by id.

use std::collections::HashMap;
use std::time::Duration;

use herald_tests::serde_json::{Value, json};
use herald_tests::services::NatsServer;
use herald_tests::*;
use sqlx::Connection;
use uuid::Uuid;

/// How often each event id is on the server's events stream.
async fn stream_ids(url: &str, stream: &str) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    let read = async {
        let client = async_nats::connect(url).await.ok()?;
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = jetstream.get_stream(stream).await.ok()?;
        let state = stream.info().await.ok()?.state.clone();
        for sequence in state.first_sequence..=state.last_sequence {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let event: Value = serde_json::from_slice(&message.payload).ok()?;
            *ids.entry(event["id"].as_str()?.to_string()).or_insert(0) += 1;
        }
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    ids
}

/// Waits until every id of `expected` is on the stream, and asserts each is there once.
async fn assert_on_stream_once(url: &str, stream: &str, expected: &[String]) {
    let found = eventually("every event on the stream", Duration::from_secs(30), || async {
        let ids = stream_ids(url, stream).await;
        expected.iter().all(|id| ids.contains_key(id)).then_some(ids)
    })
    .await;
    for id in expected {
        assert_eq!(found[id], 1, "event {id} is on the stream more than once");
    }
}

/// Creates, renames and deletes campaigns while NATS is down.
async fn change_things(server: &TestServer, user: &User) -> usize {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            server
                .create_campaign(user, json!({ "name": format!("During {n}") }))
                .await,
        );
    }
    let path = format!("/api/v1/campaigns/{}", ids[0]);
    server.put(&path, user, json!({ "name": "Renamed" })).await.expect(200);
    server
        .delete(&format!("/api/v1/campaigns/{}", ids[1]), user)
        .await
        .expect(204);
    ids.len() + 2
}

async fn outage_then_recovery(backend: Backend) {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let bus_url = url.clone();
    let Some(server) = TestServer::launch(backend, None, true, |c| c.bus.nats_url = Some(bus_url)).await else {
        return;
    };
    let stream = format!("{}_EVENTS", server.config.bus.stream_prefix);
    let user = server.new_user();
    let events = server.listen(&user).await;
    server.create_campaign(&user, json!({ "name": "Before" })).await;

    nats.kill();
    let made = 1 + change_things(&server, &user).await;
    // Local listeners see them at once, bus or not.
    let seen = eventually("every event on SSE", Duration::from_secs(10), || async {
        let all = events.all();
        (all.len() >= made).then_some(all)
    })
    .await;
    let expected: Vec<String> = seen.iter().map(|e| e["id"].as_str().expect("id").to_string()).collect();

    nats.restart().await;
    assert_on_stream_once(&url, &stream, &expected).await;
}

/// Embedded storage with NATS: the outbox is the SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_made_while_nats_is_down_arrive_when_it_is_back_sqlite() {
    outage_then_recovery(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_made_while_nats_is_down_arrive_when_it_is_back_postgres() {
    outage_then_recovery(Backend::Postgres).await;
}

/// Events left in the outbox by an api process that stopped during the outage
/// are published by the next one, from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_process_drains_the_outbox() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let bus_url = url.clone();
    let Some(first) = TestServer::launch(Backend::Postgres, None, true, |c| c.bus.nats_url = Some(bus_url)).await
    else {
        return;
    };
    let user = first.new_user();
    nats.kill();
    let made = change_things(&first, &user).await;
    let database_url = first.database_url.clone();
    let pending = || async {
        let mut conn = sqlx::PgConnection::connect(&database_url)
            .await
            .expect("PostgreSQL connects");
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM event_outbox ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .expect("outbox read");
        let _ = conn.close().await;
        ids.into_iter().map(|id| id.to_string()).collect::<Vec<_>>()
    };
    let waiting = pending().await;
    assert_eq!(waiting.len(), made, "every event waits in the outbox");
    let bus = first.config.bus.clone();
    // The first server is gone before the bus comes back.
    first.stop().await;

    nats.restart().await;
    let stream = format!("{}_EVENTS", bus.stream_prefix);
    let url_for_config = database_url.clone();
    let _second = TestServer::launch(Backend::Postgres, None, true, move |c| {
        c.database.url = Some(url_for_config);
        c.bus = bus;
    })
    .await
    .expect("PostgreSQL is still there");
    assert_on_stream_once(&url, &stream, &waiting).await;
    eventually("an empty outbox", Duration::from_secs(10), || async {
        pending().await.is_empty().then_some(())
    })
    .await;
}
