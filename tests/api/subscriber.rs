//! Events on NATS as an outside subscriber sees them (SPEC §6, docs/events.md):
//! `tests/subscriber/subscribe.py`, on the published nats-py client, listens
//! while a campaign is created, filled, activated and sent, and its output is
//! checked against the documented subjects, CloudEvents envelope and `data`.
//! PostgreSQL + NATS stack only. The Python comes from `TEST_PYTHON`
//! (default `python3`) and needs nats-py; without it the test is skipped with a
//! notice, or fails under `CI=true`.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_tests::serde_json::{Value, json};
use herald_tests::{Backend, TestServer, User, python_with, window_open_now};
use tokio::sync::mpsc;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(60);
const CONTACTS: usize = 3;
/// campaign.created, contacts.imported, campaign.updated, campaign.status_changed,
/// send.started, then one message.sent per contact.
const EXPECTED_EVENTS: usize = 5 + CONTACTS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_nats_subscriber_receives_the_documented_events() {
    let Some(python) = python_with("nats", "tests/subscriber/requirements.txt") else {
        return;
    };
    let Some(server) = TestServer::launch(Backend::Postgres, None, true, |_| {}).await else {
        return;
    };
    let Some(nats_url) = server.config.bus.nats_url.clone() else {
        eprintln!("note: skipping the NATS subscriber test: no NATS server (TEST_NATS_URL)");
        return;
    };
    let bus = &server.config.bus;
    let prefix = bus.subject_prefix.clone();
    let stream = format!("{}_EVENTS", bus.stream_prefix);
    let user = server.new_user();

    // Two outside subscribers: a core NATS subscription, and a JetStream ordered
    // consumer on the events stream (which proves the stream's name too).
    let mut core = Subscriber::start(&python, &nats_url, &prefix, &user, None);
    let mut replay = Subscriber::start(&python, &nats_url, &prefix, &user, Some(&stream));
    core.wait_ready().await;
    replay.wait_ready().await;

    // Someone else's events must not reach this user's subscription.
    let stranger = server.new_user();
    server.create_campaign(&stranger, json!({})).await;

    let mut extra = window_open_now();
    extra["name"] = json!("Subscriber test");
    let campaign = server.create_campaign(&user, extra).await;
    let contacts: Vec<Value> = (0..CONTACTS)
        .map(|i| json!({ "phone_number": format!("+1212555{i:04}"), "name": format!("Ada {i}") }))
        .collect();
    server
        .post(
            &format!("/api/v1/campaigns/{campaign}/contacts"),
            &user,
            json!({ "contacts": contacts }),
        )
        .await
        .expect(201);
    server.set_status(&user, &campaign, "active").await.expect(200);
    let accepted = server
        .post(&format!("/api/v1/campaigns/{campaign}/send"), &user, json!({}))
        .await
        .expect(202)
        .body;
    assert_eq!(accepted["queued"], CONTACTS);
    server.wait_settled(&user, &campaign, CONTACTS as u64, SETTLE).await;
    let listed = server
        .get(&format!("/api/v1/campaigns/{campaign}/contacts"), &user)
        .await
        .expect(200)
        .body;
    let contact_ids: HashSet<String> = listed["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["id"].as_str().expect("contact id").to_string())
        .collect();

    let expected = Expected {
        prefix: &prefix,
        user: &user,
        campaign: &campaign,
        task: accepted["task_id"].as_str().expect("task id"),
        contacts: &contact_ids,
    };
    for (subscriber, stream) in [(&mut core, None), (&mut replay, Some(stream.as_str()))] {
        let received = subscriber.collect().await;
        expected.check(&received, stream);
    }
}

/// What the run should have produced.
struct Expected<'a> {
    prefix: &'a str,
    user: &'a User,
    campaign: &'a str,
    task: &'a str,
    contacts: &'a HashSet<String>,
}

impl Expected<'_> {
    /// Checks one subscriber's lines: subjects, envelopes, `data`, and the events
    /// of this flow.
    fn check(&self, received: &[Value], stream: Option<&str>) {
        let shown = || received.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
        assert_eq!(received.len(), EXPECTED_EVENTS, "events received:\n{}", shown());
        for line in received {
            assert_eq!(line["stream"].as_str(), stream, "{line}");
            check_envelope(self.prefix, self.user, line);
        }
        let events: Vec<&Value> = received.iter().map(|line| &line["event"]).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();

        // The API's events arrive in the order of the requests.
        let api: Vec<&str> = kinds.iter().copied().filter(|k| *k != "herald.message.sent").collect();
        assert_eq!(
            api,
            [
                "herald.campaign.created",
                "herald.contacts.imported",
                "herald.campaign.updated",
                "herald.campaign.status_changed",
                "herald.send.started",
            ],
            "events received:\n{}",
            shown()
        );
        let of = |kind: &'static str| events.iter().copied().filter(move |e| e["type"] == kind);

        for event in of("herald.campaign.created")
            .chain(of("herald.campaign.updated"))
            .chain(of("herald.campaign.status_changed"))
        {
            assert_eq!(event["subject"], self.campaign, "{event}");
            assert_eq!(event["data"]["campaign_id"], self.campaign, "{event}");
            assert_eq!(event["data"]["name"], "Subscriber test", "{event}");
            assert_eq!(event["data"]["reason"], Value::Null, "{event}");
        }
        let created = of("herald.campaign.created").next().expect("campaign.created");
        assert_eq!(created["data"]["status"], "draft");
        let changed = of("herald.campaign.status_changed").next().expect("status_changed");
        assert_eq!(changed["data"]["status"], "active");

        let imported = &of("herald.contacts.imported").next().expect("contacts.imported")["data"];
        assert_eq!(
            (&imported["campaign_id"], &imported["added"], &imported["duplicates"]),
            (&json!(self.campaign), &json!(CONTACTS), &json!(0)),
        );
        assert_eq!(
            (&imported["errors"], &imported["total_contacts"]),
            (&json!(0), &json!(CONTACTS))
        );

        let started = of("herald.send.started").next().expect("send.started");
        assert_eq!(started["subject"], self.campaign);
        assert_eq!(started["data"]["campaign_id"], self.campaign);
        assert_eq!(started["data"]["task_id"], self.task);
        assert_eq!(started["data"]["queued"], CONTACTS);
        assert_eq!(started["data"]["scheduled_for"], Value::Null);

        let mut messages = BTreeSet::new();
        let mut contacts = HashSet::new();
        for sent in of("herald.message.sent") {
            let data = &sent["data"];
            assert_eq!(sent["subject"], data["message_id"], "{sent}");
            assert_eq!(data["campaign_id"], self.campaign, "{sent}");
            assert_eq!(
                (&data["variant"], &data["carrier"]),
                (&json!("a"), &json!("log")),
                "{sent}"
            );
            assert!(
                data["carrier_message_id"].as_str().is_some_and(|id| !id.is_empty()),
                "{sent}"
            );
            assert_eq!((&data["segments"], &data["attempts"]), (&json!(1), &json!(1)), "{sent}");
            assert_eq!(data["error"], Value::Null, "{sent}");
            messages.insert(data["message_id"].as_str().unwrap_or_default().to_string());
            contacts.insert(data["contact_id"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(messages.len(), CONTACTS, "one message.sent per message");
        assert_eq!(&contacts, self.contacts, "one message.sent per contact");
    }
}

/// The documented envelope and subject of one received line
/// (`{"subject", "msg_id", "stream", "event"}`).
#[track_caller]
fn check_envelope(prefix: &str, user: &User, line: &Value) {
    let event = &line["event"];
    let kind = event["type"].as_str().unwrap_or_else(|| panic!("no type: {line}"));
    let (entity, action) = kind
        .strip_prefix("herald.")
        .and_then(|rest| rest.split_once('.'))
        .unwrap_or_else(|| panic!("type is not herald.<entity>.<action>: {line}"));
    assert_eq!(
        line["subject"],
        format!("{prefix}.events.{}.{entity}.{action}", user.id),
        "{line}"
    );
    assert_eq!(event["specversion"], "1.0", "{line}");
    let id = event["id"].as_str().unwrap_or_else(|| panic!("no id: {line}"));
    assert!(Uuid::parse_str(id).is_ok(), "id is a UUID: {line}");
    assert_eq!(line["msg_id"], id, "Nats-Msg-Id is the event id: {line}");
    assert_eq!(event["source"], "/herald", "{line}");
    let time = event["time"].as_str().unwrap_or_default();
    assert!(DateTime::parse_from_rfc3339(time).is_ok(), "time is RFC 3339: {line}");
    assert!(event["subject"].as_str().is_some_and(|s| !s.is_empty()), "{line}");
    assert_eq!(event["datacontenttype"], "application/json", "{line}");
    assert_eq!(
        event["dataschema"],
        format!("https://herald.invalid/schemas/v1/{entity}.{action}"),
        "{line}"
    );
    let data = event["data"]
        .as_object()
        .unwrap_or_else(|| panic!("data is an object: {line}"));
    let fields = documented_fields(kind);
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    let documented: BTreeSet<&str> = fields.iter().map(|(name, _)| *name).collect();
    assert_eq!(keys, documented, "data fields of {kind} (docs/events.md): {line}");
    for (name, field) in fields {
        assert!(field.accepts(&data[*name]), "{kind}: `{name}` is not {field:?}: {line}");
    }
}

/// JSON types of `data` fields, as docs/events.md lists them.
#[derive(Debug, Clone, Copy)]
enum Field {
    Uuid,
    Text,
    OptionalText,
    Count,
    OptionalCount,
    OptionalTime,
    Status,
}

impl Field {
    fn accepts(self, value: &Value) -> bool {
        let optional = |check: fn(&Value) -> bool| value.is_null() || check(value);
        match self {
            Self::Uuid => value.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok()),
            Self::Text => value.is_string(),
            Self::OptionalText => optional(Value::is_string),
            Self::Count => value.is_u64(),
            Self::OptionalCount => optional(Value::is_u64),
            Self::OptionalTime => optional(|v| v.as_str().is_some_and(|s| s.parse::<DateTime<Utc>>().is_ok())),
            Self::Status => matches!(value.as_str(), Some("draft" | "active" | "paused" | "completed")),
        }
    }
}

/// The `data` fields of each event type (docs/events.md, schema v1).
fn documented_fields(kind: &str) -> &'static [(&'static str, Field)] {
    use Field::*;
    match kind {
        "herald.campaign.created"
        | "herald.campaign.updated"
        | "herald.campaign.deleted"
        | "herald.campaign.status_changed" => &[
            ("campaign_id", Uuid),
            ("name", Text),
            ("status", Status),
            ("reason", OptionalText),
        ],
        "herald.contacts.imported" => &[
            ("campaign_id", Uuid),
            ("added", Count),
            ("duplicates", Count),
            ("errors", Count),
            ("total_contacts", Count),
        ],
        "herald.send.started" => &[
            ("campaign_id", Uuid),
            ("task_id", Uuid),
            ("queued", Count),
            ("scheduled_for", OptionalTime),
        ],
        "herald.message.sent" | "herald.message.delivered" | "herald.message.failed" => &[
            ("message_id", Uuid),
            ("campaign_id", Uuid),
            ("contact_id", Uuid),
            ("variant", Text),
            ("carrier", Text),
            ("carrier_message_id", OptionalText),
            ("segments", OptionalCount),
            ("attempts", Count),
            ("error", OptionalText),
        ],
        "herald.contact.opted_out" | "herald.contact.opted_in" => {
            &[("contact_id", Uuid), ("phone_number", Text), ("source", Text)]
        }
        "herald.inbound.received" => &[("carrier", Text), ("from", Text), ("to", Text), ("body", Text)],
        "herald.carrier.tripped" | "herald.carrier.recovered" => &[("carrier", Text), ("detail", Text)],
        other => panic!("undocumented event type {other}"),
    }
}

/// `tests/subscriber/subscribe.py` running as a child process; killed when dropped.
struct Subscriber {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    what: String,
}

impl Subscriber {
    fn start(python: &str, nats_url: &str, prefix: &str, user: &User, stream: Option<&str>) -> Self {
        let mut command = Command::new(python);
        command
            .arg(script())
            .arg(nats_url)
            .args(["--user", &user.id.to_string(), "--subject-prefix", prefix])
            .args(["--count", &EXPECTED_EVENTS.to_string()])
            .args(["--timeout", &SETTLE.as_secs().to_string()]);
        if let Some(stream) = stream {
            command.args(["--stream", stream]);
        }
        let what = format!("subscribe.py ({})", stream.unwrap_or("core subscription"));
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts with {python}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, what }
    }

    async fn next_line(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.lines.recv()).await.ok().flatten()
    }

    /// Waits for `READY`: the subscription is in place.
    async fn wait_ready(&mut self) {
        match self.next_line(Duration::from_secs(20)).await {
            Some(line) if line == "READY" => {}
            other => panic!("{} did not get ready: {other:?} (see its stderr above)", self.what),
        }
    }

    /// Every message line until the script exits (after the expected count or its timeout).
    async fn collect(&mut self) -> Vec<Value> {
        let mut received = Vec::new();
        while let Some(line) = self.next_line(SETTLE + Duration::from_secs(10)).await {
            let parsed: Value = herald_tests::serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{} printed a line that is not JSON ({e}): {line}", self.what));
            received.push(parsed);
        }
        received
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("subscriber/subscribe.py")
}
