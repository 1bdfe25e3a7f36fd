//! Recipient-local rules (SPEC §4.1, issue 11), through the HTTP API on both
//! stacks with a manual clock: each number goes only inside its own allowed
//! hours, across a day and across both DST changes; state caps and Sunday
//! bans hold; the audit says why; the forecast agrees with a simulated run.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use herald_tests::serde_json::{Value, json};
use herald_tests::{Backend, TestServer, User, on_both_backends};

use crate::sending::{at, start_at};

/// A window open all day, every day, in UTC: only the recipient's hours decide.
fn always_open() -> Value {
    json!({
        "timezone": "UTC",
        "send_window_start": "00:00",
        "send_window_end": "23:59",
        "send_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "daily_limit": 1000,
    })
}

/// The issue's numbers, one per area code (and one Navajo Nation exchange of 928).
const NATIONAL: [&str; 12] = [
    "+12125550100", // New York
    "+14155550101", // Los Angeles
    "+18085550102", // Honolulu
    "+19075550103", // Alaska: Anchorage and Adak (both must allow)
    "+13055550104", // Florida: 08:00-20:00
    "+14055550105", // Oklahoma (Central): 08:00-20:00
    "+14105550106", // Maryland: 08:00-20:00
    "+18605550107", // Connecticut: 09:00-20:00
    "+15125550108", // Texas (Central): Mon-Sat 09:00-21:00, Sun 12:00-21:00
    "+12085550109", // Idaho: Boise and Los Angeles
    "+19285550110", // Arizona: Phoenix (no DST)
    "+19288710111", // Navajo Nation: Denver and Phoenix
];

/// Creates an active campaign for `phones` with `extra` fields, sends it and
/// returns its id.
async fn sent_campaign(server: &TestServer, user: &User, extra: Value, phones: &[&str]) -> String {
    let mut fields = always_open();
    if let (Some(fields), Some(extra)) = (fields.as_object_mut(), extra.as_object()) {
        fields.extend(extra.clone());
    }
    let phones: Vec<String> = phones.iter().map(|p| p.to_string()).collect();
    let campaign = server.active_campaign(user, fields, &phones).await;
    server.send_campaign(user, &campaign).await;
    campaign
}

/// The campaign's messages (first 100) by phone number.
async fn messages(server: &TestServer, user: &User, campaign: &str) -> BTreeMap<String, Value> {
    let page = server
        .get(&format!("/api/v1/campaigns/{campaign}/messages?per_page=100"), user)
        .await
        .expect(200)
        .body;
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["phone_number"].as_str().unwrap().to_string(), m.clone()))
        .collect()
}

fn handed_at(message: &Value) -> Option<DateTime<Utc>> {
    message["handed_at"].as_str().map(at)
}

/// Runs the national campaign from `start` for a day in 15-minute steps and
/// checks each number went at the first instant its rules allow (so never
/// before; and each gets one message, so never after).
async fn national_day(backend: Backend, start: &str, expected: [&str; 12]) {
    let Some((server, clock)) = start_at(backend, start).await else {
        return;
    };
    let user = server.new_user();
    let campaign = sent_campaign(&server, &user, json!({}), &NATIONAL).await;
    let mut now = at(start);
    for _ in 0..=96 {
        clock.set(now);
        server.tick().await;
        now += Duration::minutes(15);
    }
    let sent = messages(&server, &user, &campaign).await;
    let mismatches: Vec<String> = NATIONAL
        .iter()
        .zip(expected)
        .filter_map(|(phone, expected)| {
            let went = handed_at(&sent[*phone]);
            (went != Some(at(expected))).then(|| format!("{phone}: went {went:?}, expected {expected}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    let stats = server.stats(&user, &campaign).await;
    assert_eq!(
        (stats["messages_sent"].as_u64(), stats["messages_held"].as_u64()),
        (Some(12), Some(0))
    );
}

on_both_backends! {
    async fn every_number_goes_inside_its_own_hours_through_a_day(backend: Backend) {
        // Tuesday 2026-11-24 06:00 UTC: 01:00 in New York, 20:00 (Monday) in Honolulu.
        national_day(backend, "2026-11-24T06:00:00Z", [
            "2026-11-24T13:00:00Z", // 08:00 EST
            "2026-11-24T16:00:00Z", // 08:00 PST
            "2026-11-24T06:00:00Z", // 20:00 HST Monday: still inside 08:00-21:00
            "2026-11-24T18:00:00Z", // 08:00 in Adak (HST), an hour after Anchorage
            "2026-11-24T13:00:00Z",
            "2026-11-24T14:00:00Z", // 08:00 CST
            "2026-11-24T13:00:00Z",
            "2026-11-24T14:00:00Z", // 09:00 EST
            "2026-11-24T15:00:00Z", // 09:00 CST
            "2026-11-24T16:00:00Z", // 08:00 PST, the later of Boise and Los Angeles
            "2026-11-24T15:00:00Z", // 08:00 MST
            "2026-11-24T15:00:00Z", // 08:00 MST in Denver and Phoenix alike in November
        ]).await;
    }

    async fn the_march_dst_change_moves_every_opening_by_an_hour(backend: Backend) {
        // Sunday 2026-03-08: clocks spring forward at 02:00 local.
        national_day(backend, "2026-03-08T06:00:00Z", [
            "2026-03-08T12:00:00Z", // 08:00 EDT
            "2026-03-08T15:00:00Z", // 08:00 PDT
            "2026-03-08T06:00:00Z", // 20:00 HST Saturday (Hawaii keeps standard time)
            "2026-03-08T17:00:00Z", // 08:00 HDT in Adak
            "2026-03-08T12:00:00Z",
            "2026-03-08T13:00:00Z", // 08:00 CDT
            "2026-03-08T12:00:00Z",
            "2026-03-08T13:00:00Z", // 09:00 EDT
            "2026-03-08T17:00:00Z", // Sunday: 12:00 CDT in Texas
            "2026-03-08T15:00:00Z", // 08:00 PDT
            "2026-03-08T15:00:00Z", // 08:00 MST: Phoenix keeps standard time
            "2026-03-08T15:00:00Z", // Denver opens at 14:00 (MDT), Phoenix at 15:00: both must allow
        ]).await;
    }

    async fn the_november_dst_change_moves_them_back(backend: Backend) {
        // Sunday 2026-11-01: clocks fall back at 02:00 local.
        national_day(backend, "2026-11-01T06:00:00Z", [
            "2026-11-01T13:00:00Z", // 08:00 EST
            "2026-11-01T16:00:00Z", // 08:00 PST
            "2026-11-01T06:00:00Z", // 20:00 HST Saturday
            "2026-11-01T18:00:00Z", // 08:00 HST in Adak
            "2026-11-01T13:00:00Z",
            "2026-11-01T14:00:00Z",
            "2026-11-01T13:00:00Z",
            "2026-11-01T14:00:00Z",
            "2026-11-01T18:00:00Z", // Sunday: 12:00 CST in Texas
            "2026-11-01T16:00:00Z",
            "2026-11-01T15:00:00Z",
            "2026-11-01T15:00:00Z",
        ]).await;
    }

    async fn a_florida_number_gets_three_texts_a_day_and_the_fourth_waits(backend: Backend) {
        // Tuesday 10:00 in Miami.
        let Some((server, clock)) = start_at(backend, "2026-11-24T15:00:00Z").await else { return };
        let user = server.new_user();
        let miami = "+13055550199";
        let mut campaigns = Vec::new();
        for _ in 0..4 {
            campaigns.push(sent_campaign(&server, &user, json!({}), &[miami]).await);
        }
        server.tick().await;
        let went: Vec<bool> = futures_went(&server, &user, &campaigns, miami).await;
        assert_eq!(went.iter().filter(|w| **w).count(), 3, "three of four campaigns reach the number: {went:?}");
        let waiting = &campaigns[went.iter().position(|w| !w).unwrap()];
        let stats = server.stats(&user, waiting).await;
        assert_eq!(stats["messages_held"], 1);
        assert_eq!(stats["held_by_rule"], json!({ "us-fl": 1 }));
        let held = &messages(&server, &user, waiting).await[miami];
        assert_eq!(held["hold_reason"], "us-fl");
        let detail = server.get(&format!("/api/v1/messages/{}", held["id"].as_str().unwrap()), &user).await.expect(200).body;
        assert_eq!(detail["region"], "US-FL");
        assert_eq!(detail["zones"], json!(["America/New_York"]));
        assert_eq!(detail["holds"][0]["rule"], "us-fl");
        // The oldest of the three leaves the rolling 24 hours then.
        assert_eq!(at(detail["holds"][0]["until"].as_str().unwrap()), at("2026-11-25T15:00:00Z"));

        clock.set(at("2026-11-25T14:45:00Z"));
        server.tick().await;
        assert_eq!(server.stats(&user, waiting).await["messages_held"], 1, "still inside the 24 hours");
        clock.set(at("2026-11-25T15:00:00Z"));
        server.tick().await;
        let stats = server.stats(&user, waiting).await;
        assert_eq!((stats["messages_sent"].as_u64(), stats["messages_held"].as_u64()), (Some(1), Some(0)));
        let detail = server.get(&format!("/api/v1/messages/{}", held["id"].as_str().unwrap()), &user).await.expect(200).body;
        assert_eq!(at(detail["handed_at"].as_str().unwrap()), at("2026-11-25T15:00:00Z"));
        assert!(detail["rule_set"].as_str().is_some_and(|v| !v.is_empty()));
    }

    async fn a_held_message_neither_blocks_others_nor_uses_the_daily_limit(backend: Backend) {
        // Tuesday 08:00 in New York, 05:00 in Los Angeles; one message a day.
        let Some((server, clock)) = start_at(backend, "2026-11-24T13:00:00Z").await else { return };
        let user = server.new_user();
        let (pacific, eastern) = ("+14155550150", "+12125550151");
        let campaign = sent_campaign(&server, &user, json!({ "daily_limit": 1 }), &[pacific, eastern]).await;
        server.tick().await;
        let now = messages(&server, &user, &campaign).await;
        assert_eq!(now[eastern]["status"], "sent", "the Pacific number, first in line, was held, not in the way");
        assert_eq!(now[pacific]["hold_reason"], "us-federal");
        // 08:00 in Los Angeles: allowed, but today's one message is gone.
        clock.set(at("2026-11-24T16:00:00Z"));
        server.tick().await;
        assert_eq!(messages(&server, &user, &campaign).await[pacific]["status"], "queued");
        clock.set(at("2026-11-25T16:00:00Z"));
        server.tick().await;
        assert_eq!(server.stats(&user, &campaign).await["messages_sent"], 2);
    }

    async fn a_sunday_ban_holds_until_monday(backend: Backend) {
        // Sunday 2026-11-29 09:00 in Salt Lake City.
        let Some((server, clock)) = start_at(backend, "2026-11-29T16:00:00Z").await else { return };
        let user = server.new_user();
        let utah = "+18015550123";
        let campaign = server.active_campaign(&user, always_open(), &[utah.to_string()]).await;
        let sent = server.send_campaign(&user, &campaign).await;
        server.tick().await;
        let held = &messages(&server, &user, &campaign).await[utah];
        assert_eq!(held["status"], "queued");
        assert_eq!(held["hold_reason"], "us-ut");
        // Monday 08:00 MST.
        assert_eq!(at(held["not_before"].as_str().unwrap()), at("2026-11-30T15:00:00Z"));
        let stats = server.get(&format!("/api/v1/campaigns/{campaign}/stats"), &user).await.expect(200).body;
        assert_eq!(stats["held_by_rule"], json!({ "us-ut": 1 }));
        let task = server.get(&format!("/api/v1/tasks/{}", sent["task_id"].as_str().unwrap()), &user).await.expect(200).body;
        assert_eq!((task["held"].as_u64(), task["pending"].as_u64()), (Some(1), Some(1)));
        assert_eq!(task["held_by_rule"], json!({ "us-ut": 1 }));
        clock.set(at("2026-11-30T15:00:00Z"));
        server.tick().await;
        assert_eq!(server.stats(&user, &campaign).await["messages_sent"], 1);
    }

    async fn an_operators_rule_set_replaces_the_shipped_one(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, r#"version = "late-risers-1"

[[rules]]
id = "late-risers"
title = "Nothing before 11:00"
source = "the operator's own policy"
effective = 2026-01-01
applies_to = ["*"]
hours = { default = "11:00-21:00" }
"#).unwrap();
        // Tuesday 10:00 in New York: the federal rule allows it, this set does not.
        let clock = std::sync::Arc::new(herald_tests::ManualClock::new(at("2026-11-24T15:00:00Z")));
        let Some(server) = TestServer::launch(backend, Some(clock.clone()), true, |config| {
            config.compliance.rules = Some(rules.clone());
        }).await else { return };
        let user = server.new_user();
        let campaign = sent_campaign(&server, &user, json!({}), &["+12125550160"]).await;
        server.tick().await;
        let held = &messages(&server, &user, &campaign).await["+12125550160"];
        assert_eq!(held["hold_reason"], "late-risers");
        assert_eq!(at(held["not_before"].as_str().unwrap()), at("2026-11-24T16:00:00Z"));
        clock.set(at("2026-11-24T16:00:00Z"));
        server.tick().await;
        let id = held["id"].as_str().unwrap();
        let detail = server.get(&format!("/api/v1/messages/{id}"), &user).await.expect(200).body;
        assert_eq!((detail["status"].as_str(), detail["rule_set"].as_str()), (Some("sent"), Some("late-risers-1")));
    }

    async fn a_timezone_attribute_overrides_the_area_code(backend: Backend) {
        // Tuesday 08:00 in New York, 05:00 in Los Angeles.
        let Some((server, clock)) = start_at(backend, "2026-11-24T13:00:00Z").await else { return };
        let user = server.new_user();
        let campaign = server.create_campaign(&user, always_open()).await;
        server
            .post(&format!("/api/v1/campaigns/{campaign}/contacts"), &user, json!({ "contacts": [
                { "phone_number": "+12125550100", "name": "Stays", "attributes": {} },
                { "phone_number": "+12125550101", "name": "Moved", "attributes": { "timezone": "America/Los_Angeles" } },
            ]}))
            .await
            .expect(201);
        server.set_status(&user, &campaign, "active").await.expect(200);
        server.send_campaign(&user, &campaign).await;
        server.tick().await;
        let now = messages(&server, &user, &campaign).await;
        assert_eq!(now["+12125550100"]["status"], "sent");
        assert_eq!(now["+12125550101"]["hold_reason"], "us-federal");
        let detail = server
            .get(&format!("/api/v1/messages/{}", now["+12125550101"]["id"].as_str().unwrap()), &user)
            .await
            .expect(200)
            .body;
        assert_eq!(detail["zones"], json!(["America/Los_Angeles"]));
        assert_eq!(at(detail["holds"][0]["until"].as_str().unwrap()), at("2026-11-24T16:00:00Z"));
        clock.set(at("2026-11-24T16:00:00Z"));
        server.tick().await;
        assert_eq!(messages(&server, &user, &campaign).await["+12125550101"]["status"], "sent");
    }

    async fn quiet_hours_campaign_keeps_the_original_behaviour(backend: Backend) {
        // Tuesday 09:00 in New York: the default window opens; 06:00 in Los Angeles.
        let Some((server, _clock)) = start_at(backend, "2026-11-24T14:00:00Z").await else { return };
        let user = server.new_user();
        let pacific = "+14155550142";
        let senders_clock = json!({ "quiet_hours": "campaign" });
        let original = server.active_campaign(&user, senders_clock, &[pacific.to_string()]).await;
        let recipients_clock = server.active_campaign(&user, json!({}), &[pacific.to_string()]).await;
        assert_eq!(
            server.get(&format!("/api/v1/campaigns/{recipients_clock}"), &user).await.expect(200).body["quiet_hours"],
            "recipient"
        );
        for campaign in [&original, &recipients_clock] {
            server.send_campaign(&user, campaign).await;
        }
        server.tick().await;
        assert_eq!(server.stats(&user, &original).await["messages_sent"], 1);
        let held = server.stats(&user, &recipients_clock).await;
        assert_eq!((held["messages_sent"].as_u64(), held["messages_held"].as_u64()), (Some(0), Some(1)));
        let reply = server.put(&format!("/api/v1/campaigns/{original}"), &user, json!({ "quiet_hours": "never" })).await;
        assert_eq!(reply.expect_problem(422), vec!["quiet_hours"]);
    }

    async fn the_forecast_finish_matches_a_simulated_run(backend: Backend) {
        // Tuesday 09:00 in New York; 100 a day, the default window (09:00-18:00 ET, weekdays).
        let start = "2026-11-24T14:00:00Z";
        let Some((server, clock)) = start_at(backend, start).await else { return };
        let user = server.new_user();
        let mut phones = Vec::new();
        for (area, n) in [("212", 100), ("415", 100), ("808", 100)] {
            phones.extend((0..n).map(|i| format!("+1{area}555{i:04}")));
        }
        let campaign = server.active_campaign(&user, json!({ "daily_limit": 100 }), &phones).await;
        let forecast = server.get(&format!("/api/v1/campaigns/{campaign}/forecast"), &user).await.expect(200).body;
        assert_eq!(forecast["recipients"], 300);
        assert_eq!(forecast["held_now"], json!({ "us-federal": 200 }), "Pacific and Hawaii are asleep: {forecast:#}");
        let finish = at(forecast["finish"].as_str().expect("a finish within the horizon"));

        server.send_campaign(&user, &campaign).await;
        let mut now = at(start);
        let mut last = None;
        for _ in 0..(24 * 5) {
            clock.set(now);
            server.tick().await;
            let stats = server.stats(&user, &campaign).await;
            if stats["messages_sent"] == 300 {
                last = Some(now);
                break;
            }
            now += Duration::hours(1);
        }
        let finished = last.expect("the campaign finishes within five days");
        let window = Duration::hours(9);
        assert!(
            (finished - finish).abs() <= window,
            "forecast {finish}, simulated run {finished}: more than one window apart"
        );
    }

    async fn the_audit_lists_messages_and_exports_consent(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, "2026-11-24T15:00:00Z").await else { return };
        let user = server.new_user();
        let campaign = sent_campaign(&server, &user, json!({}), &["+12125550100", "+14155550101"]).await;
        server.tick().await;
        let held = server
            .get(&format!("/api/v1/campaigns/{campaign}/messages?status=held"), &user)
            .await
            .expect(200)
            .body;
        assert_eq!(held["total"], 1);
        assert_eq!(held["messages"][0]["phone_number"], "+14155550101");
        let sent = server.get(&format!("/api/v1/campaigns/{campaign}/messages?status=sent"), &user).await.expect(200).body;
        assert_eq!(sent["messages"][0]["phone_number"], "+12125550100");
        let bad = server.get(&format!("/api/v1/campaigns/{campaign}/messages?status=lost"), &user).await;
        assert_eq!(bad.expect_problem(422), vec!["status"]);
        let other = server.new_user();
        let id = held["messages"][0]["id"].as_str().unwrap();
        server.get(&format!("/api/v1/messages/{id}"), &other).await.expect(404);

        let contact = server.get(&format!("/api/v1/campaigns/{campaign}/contacts"), &user).await.expect(200).body["contacts"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        server.patch(&format!("/api/v1/contacts/{contact}"), &user, json!({ "opted_out": true })).await.expect(200);
        server.patch(&format!("/api/v1/contacts/{contact}"), &user, json!({ "opted_out": false })).await.expect(200);
        let export = ndjson(&server, &format!("/api/v1/consent?contact_id={contact}"), &user).await;
        let lines: Vec<Value> = export.lines().map(|l| herald_tests::serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.iter().map(|l| l["change"].as_str().unwrap()).collect::<Vec<_>>(), ["opted_out", "opted_in"]);
        assert_eq!(lines[0]["source"], "api");
        assert_eq!(ndjson(&server, "/api/v1/consent?from=2030-01-01T00:00:00Z", &user).await, "");
        assert!(ndjson(&server, "/api/v1/consent", &other).await.is_empty(), "another user's consent is not theirs");
        let bad = server.get("/api/v1/consent?from=yesterday", &user).await;
        assert_eq!(bad.expect_problem(422), vec!["from"]);
    }

    async fn a_frequency_cap_holds_or_skips(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, "2026-11-24T15:00:00Z").await else { return };
        let user = server.new_user();
        server.put("/api/v1/settings", &user, json!({ "frequency_cap": { "max": 1, "hours": 24 } })).await.expect(200);
        assert_eq!(
            server.get("/api/v1/settings", &user).await.expect(200).body,
            json!({ "frequency_cap": { "max": 1, "hours": 24, "over": "hold" } })
        );
        let phone = "+12125550177";
        let first = sent_campaign(&server, &user, json!({}), &[phone]).await;
        let second = sent_campaign(&server, &user, json!({}), &[phone]).await;
        server.tick().await;
        assert_eq!(server.stats(&user, &first).await["messages_sent"], 1);
        assert_eq!(server.stats(&user, &second).await["held_by_rule"], json!({ "frequency-cap": 1 }));

        server.put("/api/v1/settings", &user, json!({ "frequency_cap": { "max": 1, "hours": 24, "over": "skip" } })).await.expect(200);
        let third = sent_campaign(&server, &user, json!({}), &[phone]).await;
        server.tick().await;
        let skipped = &messages(&server, &user, &third).await[phone];
        assert_eq!((skipped["status"].as_str(), skipped["error"].as_str()), (Some("failed"), Some("frequency_cap")));

        let bad = server.put("/api/v1/settings", &user, json!({ "frequency_cap": { "max": 0, "hours": 9999 } })).await;
        assert_eq!(bad.expect_problem(422), vec!["frequency_cap.max", "frequency_cap.hours"]);
        let huge = server.put("/api/v1/settings", &user, json!({ "frequency_cap": { "max": 3_000_000_000u64, "hours": 24 } })).await;
        assert_eq!(huge.expect_problem(422), vec!["frequency_cap.max"]);
        let unknown = server.put("/api/v1/settings", &user, json!({ "frequency_cap": { "max": 1, "hours": 1, "per": "day" } })).await;
        unknown.expect_problem(422);
    }
}

/// An NDJSON export's text.
async fn ndjson(server: &TestServer, path: &str, user: &User) -> String {
    let reply = server.get(path, user).await.expect(200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    reply.text
}

/// Whether each campaign's message to `phone` was handed out.
async fn futures_went(server: &TestServer, user: &User, campaigns: &[String], phone: &str) -> Vec<bool> {
    let mut went = Vec::new();
    for campaign in campaigns {
        went.push(handed_at(&messages(server, user, campaign).await[phone]).is_some());
    }
    went
}
