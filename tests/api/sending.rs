//! Sending campaigns end to end (SPEC §1 flow, §3.8, §4): on the embedded
//! stack (SQLite, in-process transport) and on PostgreSQL + NATS JetStream.
//! Time comes from a manual clock where a test crosses windows and days.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_tests::gateway::{FakeGateway, twilio_carrier};
use herald_tests::serde_json::{Value, json};
use herald_tests::{
    Backend, LOG_WEBHOOK_SECRET, LOG_WEBHOOK_SECRET_HEADER, ManualClock, TestServer, User, eventually,
    on_both_backends, phones, twilio_signed, window_open_now,
};

pub(crate) const SETTLE: Duration = Duration::from_secs(60);

pub(crate) fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

/// Tuesday 2026-11-24, 10:00 in New York: inside the default window.
pub(crate) const TUESDAY_10AM: &str = "2026-11-24T15:00:00Z";
/// Saturday 2026-11-28, 10:00 in New York: outside (weekend).
const SATURDAY_10AM: &str = "2026-11-28T15:00:00Z";
/// Monday 2026-11-30, 09:00 EST: when the default window next opens after Saturday.
const MONDAY_OPENS: &str = "2026-11-30T14:00:00Z";

pub(crate) async fn start_at(backend: Backend, now: &str) -> Option<(TestServer, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::new(at(now)));
    let server = TestServer::launch(backend, Some(clock.clone()), true, |_| {}).await?;
    Some((server, clock))
}

async fn task(server: &TestServer, user: &User, task: &Value) -> Value {
    let id = task["task_id"].as_str().unwrap();
    server.get(&format!("/api/v1/tasks/{id}"), user).await.expect(200).body
}

on_both_backends! {
    async fn a_thousand_contacts_are_sent_and_counted(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, TUESDAY_10AM).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, json!({ "daily_limit": 1000 }), &phones(1000, 0)).await;

        let accepted = server.send_campaign(&user, &campaign).await;
        assert_eq!(accepted["message"], "Campaign sending initiated");
        assert_eq!(accepted["queued"], 1000);
        assert_eq!(accepted["scheduled_for"], Value::Null);

        let stats = server.wait_settled(&user, &campaign, 1000, SETTLE).await;
        assert_eq!(stats["total_contacts"], 1000);
        assert_eq!(stats["messages_sent"], 1000);
        assert_eq!(stats["messages_failed"], 0);
        assert_eq!(stats["success_rate"], 1.0);
        let report = task(&server, &user, &accepted).await;
        assert_eq!(report["status"], "completed");
        assert_eq!((report["queued"].as_u64(), report["sent"].as_u64(), report["pending"].as_u64()), (Some(1000), Some(1000), Some(0)));

        // Safe to call twice: nobody left without a message.
        let again = server.send_campaign(&user, &campaign).await;
        assert_eq!(again["queued"], 0);

        eventually("1000 message.sent events", SETTLE, || async {
            (events.of_type("herald.message.sent").len() >= 1000).then_some(())
        }).await;
        let sent = events.of_type("herald.message.sent");
        let first = &sent[0];
        assert_eq!(first["specversion"], "1.0");
        assert_eq!(first["data"]["campaign_id"], campaign.as_str());
        assert!(first["data"]["carrier_message_id"].as_str().unwrap().starts_with("log-"));
        // The second send's event comes after all of those: wait for the stream to reach it.
        eventually("two send.started events", SETTLE, || async {
            (events.of_type("herald.send.started").len() == 2).then_some(())
        })
        .await;
    }

    async fn a_closed_window_queues_for_the_next_business_day(backend: Backend) {
        let Some((server, clock)) = start_at(backend, SATURDAY_10AM).await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, json!({}), &phones(3, 0)).await;

        let accepted = server.send_campaign(&user, &campaign).await;
        assert_eq!(accepted["message"], "Campaign queued for next business day");
        assert_eq!(at(accepted["scheduled_for"].as_str().unwrap()), at(MONDAY_OPENS));
        assert_eq!(task(&server, &user, &accepted).await["status"], "scheduled");
        let waiting = server.stats_after_tick(&user, &campaign).await;
        assert_eq!((waiting["messages_sent"].as_u64(), waiting["messages_pending"].as_u64()), (Some(0), Some(3)));

        clock.set(at(MONDAY_OPENS));
        server.wait_settled(&user, &campaign, 3, SETTLE).await;
        assert_eq!(task(&server, &user, &accepted).await["status"], "completed");
    }

    async fn the_next_window_is_found_across_a_dst_change(backend: Backend) {
        // Friday 2026-03-06 19:00 EST; the clocks spring forward on Sunday the 8th.
        let Some((server, clock)) = start_at(backend, "2026-03-07T00:00:00Z").await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, json!({}), &phones(2, 0)).await;
        let accepted = server.send_campaign(&user, &campaign).await;
        // Monday 09:00 is EDT (UTC-4) now: 13:00Z, not 14:00Z.
        let opens = at("2026-03-09T13:00:00Z");
        assert_eq!(at(accepted["scheduled_for"].as_str().unwrap()), opens);

        clock.set(opens - chrono::Duration::minutes(1));
        let early = server.stats_after_tick(&user, &campaign).await;
        assert_eq!(early["messages_sent"], 0, "08:59 EDT is still closed");
        clock.set(opens);
        server.wait_settled(&user, &campaign, 2, SETTLE).await;
    }

    async fn the_daily_limit_spreads_a_campaign_over_days(backend: Backend) {
        let Some((server, clock)) = start_at(backend, "2026-11-23T15:00:00Z").await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, json!({ "daily_limit": 5 }), &phones(12, 0)).await;
        let accepted = server.send_campaign(&user, &campaign).await;
        assert_eq!(accepted["queued"], 12);

        for (day, opens, sent) in [("Monday", None, 5), ("Tuesday", Some("2026-11-24T14:00:00Z"), 10), ("Wednesday", Some("2026-11-25T14:00:00Z"), 12)] {
            if let Some(opens) = opens {
                clock.set(at(opens));
            }
            eventually(&format!("{sent} sent by {day}"), SETTLE, || async {
                (server.stats(&user, &campaign).await["messages_sent"] == sent).then_some(())
            }).await;
            let later = server.stats_after_tick(&user, &campaign).await;
            assert_eq!(later["messages_sent"], sent, "no more than the daily limit on {day}");
        }
        assert_eq!(task(&server, &user, &accepted).await["status"], "completed");
    }

    async fn reaching_the_total_limit_completes_the_campaign(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, TUESDAY_10AM).await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, json!({ "total_limit": 3 }), &phones(5, 0)).await;
        assert_eq!(server.send_campaign(&user, &campaign).await["queued"], 3);
        server.wait_settled(&user, &campaign, 3, SETTLE).await;
        eventually("status completed", SETTLE, || async {
            let body = server.get(&format!("/api/v1/campaigns/{campaign}"), &user).await.body;
            (body["status"] == "completed").then_some(())
        }).await;
        server.post(&format!("/api/v1/campaigns/{campaign}/send"), &user, json!({})).await.expect_problem(400);
        assert_eq!(server.stats(&user, &campaign).await["messages_sent"], 3);
    }

    async fn ab_variants_split_by_percentage_and_stay_put(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, TUESDAY_10AM).await else { return };
        let user = server.new_user();
        let extra = json!({ "message_template_b": "B {{name}}", "ab_test_percentage": 30, "daily_limit": 1000 });
        let campaign = server.active_campaign(&user, extra, &phones(900, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let stats = server.wait_settled(&user, &campaign, 900, SETTLE).await;
        let b = stats["variants"]["b"]["messages_sent"].as_u64().unwrap();
        let a = stats["variants"]["a"]["messages_sent"].as_u64().unwrap();
        assert_eq!(a + b, 900);
        assert!((225..=315).contains(&b), "30% ± 5 points of 900 got B: {b}");

        // New contacts get their own variant; the first ones are not sent again.
        server.add_contacts(&user, &campaign, &phones(100, 5000)).await;
        assert_eq!(server.send_campaign(&user, &campaign).await["queued"], 100);
        let after = server.wait_settled(&user, &campaign, 1000, SETTLE).await;
        let b_after = after["variants"]["b"]["messages_sent"].as_u64().unwrap();
        assert!(b_after >= b && b_after - b <= 100);
    }

    async fn an_opt_out_before_dispatch_cancels_the_message(backend: Backend) {
        let Some((server, clock)) = start_at(backend, SATURDAY_10AM).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, json!({}), &phones(3, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let contacts = server.get(&format!("/api/v1/campaigns/{campaign}/contacts"), &user).await.body;
        let first = contacts["contacts"][0]["id"].as_str().unwrap().to_string();
        server.patch(&format!("/api/v1/contacts/{first}"), &user, json!({ "opted_out": true })).await.expect(200);
        let cancelled = server.stats(&user, &campaign).await;
        assert_eq!((cancelled["messages_failed"].as_u64(), cancelled["messages_pending"].as_u64()), (Some(1), Some(2)));

        clock.set(at(MONDAY_OPENS));
        let stats = server.wait_settled(&user, &campaign, 3, SETTLE).await;
        assert_eq!((stats["messages_sent"].as_u64(), stats["messages_failed"].as_u64()), (Some(2), Some(1)));
        eventually("the cancellation and opt-out events", SETTLE, || async {
            let failed = events.of_type("herald.message.failed");
            let opted = events.of_type("herald.contact.opted_out");
            (failed.len() == 1 && failed[0]["data"]["error"] == "opted_out" && opted.len() == 1).then_some(())
        }).await;
    }

    async fn pause_holds_messages_and_resume_sends_them(backend: Backend) {
        let Some((server, clock)) = start_at(backend, SATURDAY_10AM).await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, json!({}), &phones(3, 0)).await;
        server.send_campaign(&user, &campaign).await;
        server.set_status(&user, &campaign, "paused").await.expect(200);
        clock.set(at(MONDAY_OPENS));
        let held = server.stats_after_tick(&user, &campaign).await;
        assert_eq!((held["messages_sent"].as_u64(), held["messages_pending"].as_u64()), (Some(0), Some(3)));
        server.set_status(&user, &campaign, "active").await.expect(200);
        server.wait_settled(&user, &campaign, 3, SETTLE).await;
    }

    async fn retryable_failures_are_retried_until_the_carrier_accepts(backend: Backend) {
        // Fails twice with 503, then accepts.
        let gateway = FakeGateway::start_scripted(Arc::new(|call| if call < 3 { (503, None) } else { (200, None) }), Duration::ZERO).await;
        let carrier = gateway.carrier("gateway");
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![carrier];
            config.dispatch.retry_base_ms = 10;
            config.dispatch.retry_max_ms = 50;
        }).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(5, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let stats = server.wait_settled(&user, &campaign, 5, SETTLE).await;
        assert_eq!((stats["messages_sent"].as_u64(), stats["messages_failed"].as_u64()), (Some(5), Some(0)));
        let calls = gateway.calls();
        assert_eq!(calls.len(), 5);
        assert!(calls.values().all(|&n| n == 3), "each message tried three times: {calls:?}");
        eventually("5 message.sent events", SETTLE, || async {
            let sent = events.of_type("herald.message.sent");
            (sent.len() == 5).then_some(sent)
        }).await.iter().for_each(|e| assert_eq!(e["data"]["attempts"], 3));
    }

    async fn attempts_run_out_on_a_carrier_that_keeps_failing(backend: Backend) {
        let gateway = FakeGateway::start_scripted(Arc::new(|_| (503, None)), Duration::ZERO).await;
        let carrier = gateway.carrier("gateway");
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![carrier];
            config.dispatch.retry_base_ms = 10;
            config.dispatch.retry_max_ms = 50;
            config.dispatch.max_attempts = 3;
        }).await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, window_open_now(), &phones(2, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let stats = server.wait_settled(&user, &campaign, 2, SETTLE).await;
        assert_eq!(stats["messages_failed"], 2);
        assert!(gateway.calls().values().all(|&n| n == 3), "{:?}", gateway.calls());
    }

    async fn a_campaign_failing_too_often_is_paused(backend: Backend) {
        // A gateway refusing every message permanently.
        let gateway = FakeGateway::start_scripted(Arc::new(|_| (400, None)), Duration::from_millis(20)).await;
        let carrier = herald::config::CarrierConfig { max_concurrency: 1, ..gateway.carrier("gateway") };
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![carrier];
            config.dispatch.pause_window = 10;
            config.dispatch.max_in_flight = 2;
        }).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(60, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let changed = eventually("an auto-pause event", SETTLE, || async {
            events.of_type("herald.campaign.status_changed").into_iter().find(|e| e["data"]["status"] == "paused")
        }).await;
        assert!(changed["data"]["reason"].as_str().unwrap().contains("auto-paused"), "{changed}");
        let body = server.get(&format!("/api/v1/campaigns/{campaign}"), &user).await.body;
        assert_eq!(body["status"], "paused");
        let stats = server.stats_after_tick(&user, &campaign).await;
        assert!(stats["messages_pending"].as_u64().unwrap() > 30, "most of the audience was spared: {stats}");
    }

    async fn a_rate_limited_carrier_slows_down_without_spending_attempts(backend: Backend) {
        // Every message is first refused with 429 and Retry-After: 1.
        let gateway = FakeGateway::start_scripted(Arc::new(|call| if call == 1 { (429, Some(1)) } else { (200, None) }), Duration::ZERO).await;
        let carrier = gateway.carrier("gateway");
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![carrier];
            config.dispatch.max_attempts = 1;
        }).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(3, 0)).await;
        let started = std::time::Instant::now();
        server.send_campaign(&user, &campaign).await;
        let stats = server.wait_settled(&user, &campaign, 3, SETTLE).await;
        // With one attempt allowed, a rate limit that spent attempts would fail them.
        assert_eq!(stats["messages_sent"], 3, "{stats}");
        assert!(started.elapsed() >= Duration::from_secs(1), "the carrier's Retry-After was honoured");
        eventually("3 message.sent events", SETTLE, || async {
            let sent = events.of_type("herald.message.sent");
            (sent.len() == 3).then_some(sent)
        }).await.iter().for_each(|e| assert_eq!(e["data"]["attempts"], 1));
    }

    async fn a_carrier_that_keeps_trapping_is_tripped_and_an_event_says_so(backend: Backend) {
        let broken = herald::config::CarrierConfig {
            max_concurrency: 1,
            ..herald_tests::plugin_carrier("broken", herald_tests::fixtures::HOSTILE_CARRIER)
        };
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![broken];
            config.plugins.trip_after_traps = 2;
            config.dispatch.retry_base_ms = 10;
            config.dispatch.retry_max_ms = 50;
            config.dispatch.max_attempts = 10;
        }).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(3, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let tripped = eventually("carrier.tripped", SETTLE, || async {
            events.of_type("herald.carrier.tripped").into_iter().next()
        }).await;
        assert_eq!(tripped["data"]["carrier"], "broken");
        // Its messages wait for the breaker instead of failing.
        let stats = server.stats(&user, &campaign).await;
        assert_eq!((stats["messages_failed"].as_u64(), stats["messages_pending"].as_u64()), (Some(0), Some(3)), "{stats}");
    }

    async fn inbound_stop_opts_out_and_start_opts_back_in(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, TUESDAY_10AM).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let phone = phones(1, 0).remove(0);
        let campaign = server.active_campaign(&user, json!({}), std::slice::from_ref(&phone)).await;
        server.send_campaign(&user, &campaign).await;
        server.wait_settled(&user, &campaign, 1, SETTLE).await;
        let contact = server.get(&format!("/api/v1/campaigns/{campaign}/contacts"), &user).await.body["contacts"][0]["id"]
            .as_str().unwrap().to_string();
        let opted_out = || async { server.get(&format!("/api/v1/contacts/{contact}"), &user).await.body["opted_out"].clone() };

        let inbound = |body: &str| json!({ "from": phone, "to": "+12125550999", "body": body });
        let secret = Some(LOG_WEBHOOK_SECRET);
        server.post_webhook("/webhooks/log/inbound", inbound("  Stop "), secret).await.expect(204);
        assert_eq!(opted_out().await, true);
        server.post_webhook("/api/v1/webhooks/log/inbound", inbound("START"), secret).await.expect(204);
        assert_eq!(opted_out().await, false);
        server.post_webhook("/webhooks/log/inbound", inbound("HELP"), secret).await.expect(204);
        assert_eq!(opted_out().await, false);
        eventually("consent and inbound events", SETTLE, || async {
            (events.of_type("herald.contact.opted_out").len() == 1
                && events.of_type("herald.contact.opted_in").len() == 1
                && events.of_type("herald.inbound.received").len() == 1)
                .then_some(())
        }).await;

        server.post_webhook("/webhooks/nope/inbound", inbound("STOP"), secret).await.expect_problem(404);
        let garbage = server.client_post("/webhooks/log/inbound").header(LOG_WEBHOOK_SECRET_HEADER, LOG_WEBHOOK_SECRET).body("not json");
        server.send_request(garbage).await.expect_problem(400);
    }

    async fn a_simulated_receipt_marks_a_message_delivered(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, TUESDAY_10AM).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, json!({}), &phones(2, 0)).await;
        server.send_campaign(&user, &campaign).await;
        server.wait_settled(&user, &campaign, 2, SETTLE).await;
        let sent = eventually("message.sent events", SETTLE, || async {
            let sent = events.of_type("herald.message.sent");
            (sent.len() == 2).then_some(sent)
        }).await;
        let receipts: Vec<Value> = sent.iter().map(|e| json!({ "carrier_message_id": e["data"]["carrier_message_id"], "status": "delivered" })).collect();
        server.post_webhook("/webhooks/log/status", Value::Array(receipts), Some(LOG_WEBHOOK_SECRET)).await.expect(204);
        let stats = server.stats(&user, &campaign).await;
        assert_eq!((stats["messages_sent"].as_u64(), stats["messages_delivered"].as_u64()), (Some(2), Some(2)));
        assert_eq!(stats["delivery_rate"], 1.0);
    }

    async fn only_an_active_campaign_of_your_own_can_be_sent(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, TUESDAY_10AM).await else { return };
        let (owner, other) = (server.new_user(), server.new_user());
        let draft = server.create_campaign(&owner, json!({})).await;
        let path = format!("/api/v1/campaigns/{draft}/send");
        server.post(&path, &owner, json!({})).await.expect_problem(400);
        let active = server.active_campaign(&owner, json!({}), &phones(1, 0)).await;
        let path = format!("/api/v1/campaigns/{active}/send");
        server.post(&path, &other, json!({})).await.expect_problem(404);
        server.post("/api/v1/campaigns/not-a-uuid/send", &owner, json!({})).await.expect_problem(400);
        let accepted = server.send_campaign(&owner, &active).await;
        let task_path = format!("/api/v1/tasks/{}", accepted["task_id"].as_str().unwrap());
        server.get(&task_path, &other).await.expect_problem(404);
        server.get("/api/v1/tasks/not-a-uuid", &owner).await.expect_problem(400);
        server.get(&format!("/api/v1/tasks/{}", uuid::Uuid::now_v7()), &owner).await.expect_problem(404);
    }

    async fn events_stream_only_to_their_owner(backend: Backend) {
        let Some((server, _clock)) = start_at(backend, TUESDAY_10AM).await else { return };
        let (owner, other) = (server.new_user(), server.new_user());
        let theirs = server.listen(&other).await;
        let mine = server.listen(&owner).await;
        server.create_campaign(&owner, json!({})).await;
        eventually("campaign.created for its owner", SETTLE, || async {
            (mine.of_type("herald.campaign.created").len() == 1).then_some(())
        }).await;
        assert!(theirs.all().is_empty(), "{:?}", theirs.all());
        server.get_with_authorization("/api/v1/events", None).await.expect_problem(401);
    }
}

on_both_backends! {
    async fn a_twilio_status_callback_marks_the_message_delivered(backend: Backend) {
        const TOKEN: &str = "twilio-auth-token";
        let gateway = FakeGateway::start().await;
        let twilio = twilio_carrier(&gateway, TOKEN);
        let Some(server) = TestServer::launch(backend, None, true, |config| config.carriers = vec![twilio]).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(1, 0)).await;
        server.send_campaign(&user, &campaign).await;
        server.wait_settled(&user, &campaign, 1, SETTLE).await;
        let sid = eventually("message.sent", SETTLE, || async {
            events.of_type("herald.message.sent").first().map(|e| e["data"]["carrier_message_id"].as_str().unwrap().to_string())
        }).await;
        assert!(sid.starts_with("SM"), "{sid}");

        let url = server.url("/webhooks/twilio/status");
        let params = [("MessageSid", sid.as_str()), ("MessageStatus", "delivered")];
        let (body, signature) = twilio_signed(&url, &params, "not-the-token");
        let forged = server.post_form("/webhooks/twilio/status", body, &signature).await;
        forged.expect_problem(401);
        assert_eq!(server.stats(&user, &campaign).await["messages_delivered"], 0, "a forged receipt changes nothing");

        let (body, signature) = twilio_signed(&url, &params, TOKEN);
        server.post_form("/webhooks/twilio/status", body, &signature).await.expect(204);
        let stats = server.stats(&user, &campaign).await;
        assert_eq!((stats["messages_sent"].as_u64(), stats["messages_delivered"].as_u64()), (Some(1), Some(1)));
        eventually("message.delivered", SETTLE, || async {
            (events.of_type("herald.message.delivered").len() == 1).then_some(())
        }).await;
    }
}
