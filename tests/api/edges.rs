//! Where the outside world touches Herald (issue "Edges", SPEC §3.8, §5, §9):
//! slow and silent carriers, receipts in any order, carriers that report an
//! opt-out or their own misconfiguration, and anonymous webhook input. Every
//! carrier here is a fake on loopback; everything else is real.

use std::sync::Arc;
use std::time::Duration;

use herald::config::CarrierConfig;
use herald_tests::gateway::{FakeGateway, message_id_of, twilio_carrier, twilio_sid};
use herald_tests::serde_json::json;
use herald_tests::{
    LOG_WEBHOOK_SECRET, LOG_WEBHOOK_SECRET_HEADER, ManualClock, TestServer, eventually, fast_retries, on_both_backends,
    phones, plugin_carrier, twilio_signed, window_open_now,
};

use crate::sending::{SETTLE, TUESDAY_10AM, at};

const TOKEN: &str = "twilio-auth-token";

/// A Twilio carrier named `name` against `gateway`.
fn twilio_named(gateway: &FakeGateway, name: &str, default: bool) -> CarrierConfig {
    CarrierConfig {
        name: name.into(),
        default,
        ..twilio_carrier(gateway, TOKEN)
    }
}

/// Posts a status callback as Twilio would: to Herald's webhook for `carrier`,
/// with the query of the callback URL Herald gave it (naming the message when
/// `message_id` is set), signed with the auth token.
async fn twilio_callback(server: &TestServer, carrier: &str, message_id: Option<&str>, sid: &str, status: &str) -> u16 {
    let mut path = format!("/webhooks/{carrier}/status");
    if let Some(id) = message_id {
        path.push_str(&format!("?herald_message_id={id}"));
    }
    let params = [("MessageSid", sid), ("MessageStatus", status)];
    let (body, signature) = twilio_signed(&server.url(&path), &params, TOKEN);
    server.post_form(&path, body, &signature).await.status
}

/// The Herald message ids the gateway has been asked to send, in arrival order.
fn requested_ids(gateway: &FakeGateway) -> Vec<String> {
    gateway
        .bodies()
        .iter()
        .filter_map(|b| b["StatusCallback"].as_str().and_then(message_id_of))
        .collect()
}

#[track_caller]
fn assert_one_request_each(gateway: &FakeGateway, messages: usize) {
    let calls = gateway.calls();
    assert_eq!(calls.len(), messages, "{calls:?}");
    assert!(
        calls.values().all(|&n| n == 1),
        "exactly one request per message: {calls:?}"
    );
}

on_both_backends! {
    async fn a_slow_carrier_gets_exactly_one_request_per_message(backend: Backend) {
        // Slower than the 1 s CPU deadline, faster than the 10 s HTTP timeout.
        let slow = FakeGateway::start_scripted(Arc::new(|_| (201, None)), Duration::from_millis(1_500)).await;
        let slower = FakeGateway::start_scripted(Arc::new(|_| (201, None)), Duration::from_secs(5)).await;
        let carriers = vec![twilio_named(&slow, "slow", true), twilio_named(&slower, "slower", false)];
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = carriers;
            fast_retries(config);
        }).await else { return };
        let user = server.new_user();
        let first = server.active_campaign(&user, window_open_now(), &phones(3, 0)).await;
        let mut on_slower = window_open_now();
        on_slower["carrier"] = json!("slower");
        let second = server.active_campaign(&user, on_slower, &phones(3, 100)).await;
        server.send_campaign(&user, &first).await;
        server.send_campaign(&user, &second).await;
        for campaign in [&first, &second] {
            let stats = server.wait_settled(&user, campaign, 3, SETTLE).await;
            assert_eq!(stats["messages_sent"], 3, "{stats}");
        }
        assert_one_request_each(&slow, 3);
        assert_one_request_each(&slower, 3);
    }

    async fn an_unanswered_send_is_held_and_reconciled_never_sent_again(backend: Backend) {
        // Twilio takes the message but answers after Herald's HTTP timeout.
        let silent = FakeGateway::start_scripted(Arc::new(|_| (201, None)), Duration::from_secs(3)).await;
        let twilio = twilio_carrier(&silent, TOKEN);
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![twilio];
            config.plugins.http_timeout_ms = 500;
            fast_retries(config);
            config.dispatch.lease_secs = 8;
            config.dispatch.unknown_outcome_secs = 4;
        }).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(2, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let ids = eventually("both requests at the carrier", SETTLE, || async {
            let ids = requested_ids(&silent);
            (ids.len() == 2).then_some(ids)
        }).await;
        // Twilio's callback for the first can come before Herald gives up on
        // the answer: it names the message, so it reconciles it either way.
        let status = twilio_callback(&server, "twilio", Some(&ids[0]), &twilio_sid(&ids[0]), "delivered").await;
        assert_eq!(status, 204);
        let stats = eventually("the reconciled message delivered", SETTLE, || async {
            let stats = server.stats(&user, &campaign).await;
            (stats["messages_delivered"] == 1).then_some(stats)
        }).await;
        assert_eq!(stats["messages_failed"], 0, "{stats}");
        // Nobody reconciles the second: it fails as unknown_outcome, unsent again.
        let failed = eventually("message.failed for the unreconciled one", SETTLE, || async {
            events.of_type("herald.message.failed").into_iter().next()
        }).await;
        assert_eq!(failed["data"]["message_id"], ids[1].as_str());
        assert_eq!(failed["data"]["error"], "unknown_outcome");
        let stats = server.stats(&user, &campaign).await;
        assert_eq!((stats["messages_sent"].as_u64(), stats["messages_failed"].as_u64()), (Some(1), Some(1)), "{stats}");
        assert_one_request_each(&silent, 2);
    }

    async fn an_idempotent_carrier_is_retried_after_an_unanswered_send(backend: Backend) {
        // A gateway deduplicating on the message id, answering too late every time.
        let late = FakeGateway::start_scripted(Arc::new(|_| (201, None)), Duration::from_secs(2)).await;
        let carrier = CarrierConfig { idempotent: true, ..late.carrier("gateway") };
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![carrier];
            config.plugins.http_timeout_ms = 300;
            fast_retries(config);
            config.dispatch.max_attempts = 2;
        }).await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, window_open_now(), &phones(1, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let stats = server.wait_settled(&user, &campaign, 1, SETTLE).await;
        // Both attempts time out at the late gateway: retried (the carrier
        // deduplicates), then failed by the attempt limit, never held.
        assert_eq!(stats["messages_failed"], 1, "{stats}");
        assert_eq!(late.total_calls(), 2, "{:?}", late.calls());
    }

    async fn a_receipt_before_its_send_result_is_applied_when_the_result_lands(backend: Backend) {
        let gateway = FakeGateway::start_scripted(Arc::new(|_| (201, None)), Duration::from_millis(1_500)).await;
        let twilio = twilio_carrier(&gateway, TOKEN);
        let Some(server) = TestServer::launch(backend, None, true, |config| config.carriers = vec![twilio]).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(1, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let id = eventually("the request at the carrier", SETTLE, || async { requested_ids(&gateway).pop() }).await;
        // The carrier delivers and calls back while its API answer is still on the way.
        assert_eq!(twilio_callback(&server, "twilio", None, &twilio_sid(&id), "delivered").await, 204);
        let stats = eventually("delivered once the result landed", SETTLE, || async {
            let stats = server.stats(&user, &campaign).await;
            (stats["messages_delivered"] == 1).then_some(stats)
        }).await;
        assert_eq!((stats["messages_sent"].as_u64(), stats["messages_pending"].as_u64()), (Some(1), Some(0)), "{stats}");
        // Receipts are idempotent in any order: again, or a late "sent", change nothing.
        assert_eq!(twilio_callback(&server, "twilio", None, &twilio_sid(&id), "delivered").await, 204);
        assert_eq!(twilio_callback(&server, "twilio", None, &twilio_sid(&id), "sent").await, 204);
        assert_eq!(twilio_callback(&server, "twilio", None, &twilio_sid(&id), "failed").await, 204);
        let after = server.stats_after_tick(&user, &campaign).await;
        assert_eq!(after["messages_delivered"], 1, "{after}");
        eventually("message.sent then message.delivered", SETTLE, || async {
            (events.of_type("herald.message.sent").len() == 1 && events.of_type("herald.message.delivered").len() == 1).then_some(())
        }).await;
    }

    async fn a_carrier_opt_out_opts_the_contact_out(backend: Backend) {
        let gateway = FakeGateway::start_refusing(400, json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400
        })).await;
        let twilio = twilio_carrier(&gateway, TOKEN);
        let Some(server) = TestServer::launch(backend, None, true, |config| config.carriers = vec![twilio]).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(1, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let stats = server.wait_settled(&user, &campaign, 1, SETTLE).await;
        assert_eq!(stats["messages_failed"], 1, "{stats}");
        // The opt-out is written in the same transaction as the failure: once
        // the message is failed, the contact is opted out.
        let contact = &server.get(&format!("/api/v1/campaigns/{campaign}/contacts"), &user).await.body["contacts"][0];
        assert_eq!(contact["opted_out"], true, "the next campaign will not text them: {contact}");
        let opted_out = eventually("contact.opted_out", SETTLE, || async {
            events.of_type("herald.contact.opted_out").into_iter().next()
        }).await;
        assert_eq!(opted_out["data"]["source"], "carrier");
        let failed = eventually("message.failed", SETTLE, || async {
            events.of_type("herald.message.failed").into_iter().next()
        }).await;
        assert_eq!(failed["data"]["error"], "opted_out");
        assert_eq!(gateway.total_calls(), 1);
    }

    async fn a_misconfigured_carrier_is_paused_and_fails_nothing(backend: Backend) {
        let gateway = FakeGateway::start_refusing(401, json!({
            "code": 20003, "message": "Authenticate", "status": 401
        })).await;
        let twilio = CarrierConfig { max_concurrency: 1, ..twilio_carrier(&gateway, TOKEN) };
        let Some(server) = TestServer::launch(backend, None, true, |config| config.carriers = vec![twilio]).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        let campaign = server.active_campaign(&user, window_open_now(), &phones(5, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let tripped = eventually("carrier.tripped", SETTLE, || async {
            events.of_type("herald.carrier.tripped").into_iter().next()
        }).await;
        assert_eq!(tripped["data"]["carrier"], "twilio");
        assert!(tripped["data"]["detail"].as_str().unwrap().contains("20003"), "{tripped}");
        let stats = server.stats_after_tick(&user, &campaign).await;
        assert_eq!((stats["messages_failed"].as_u64(), stats["messages_pending"].as_u64()), (Some(0), Some(5)), "{stats}");
        assert_eq!(gateway.total_calls(), 1, "the queue is not failed message by message: {:?}", gateway.calls());
    }

    async fn a_postponed_hand_off_gives_its_daily_slot_back(backend: Backend) {
        // Each message's first call finds the account misconfigured, the next succeeds.
        let gateway = FakeGateway::launch(
            Arc::new(|call| if call == 1 { (401, None) } else { (201, None) }),
            Duration::ZERO,
            Some(json!({ "code": 20003, "message": "Authenticate" })),
        ).await;
        let twilio = twilio_carrier(&gateway, TOKEN);
        let clock = Arc::new(ManualClock::new(at(TUESDAY_10AM)));
        let Some(server) = TestServer::launch(backend, Some(clock.clone()), true, |config| {
            config.carriers = vec![twilio];
            config.plugins.trip_cooldown_ms = 100;
        }).await else { return };
        let user = server.new_user();
        let campaign = server.active_campaign(&user, json!({ "daily_limit": 2 }), &phones(2, 0)).await;
        server.send_campaign(&user, &campaign).await;
        // Both are handed out together (the day's limit of 2); the first call
        // finds the carrier misconfigured and both come back postponed.
        eventually("the first call refused", SETTLE, || async { (gateway.total_calls() >= 1).then_some(()) }).await;
        // The same day, once the pause is over, both go: the postponed
        // hand-offs did not use up the day's limit.
        let stats = eventually("both sent the same day", SETTLE, || async {
            clock.advance(chrono::Duration::seconds(1));
            let stats = server.stats(&user, &campaign).await;
            (stats["messages_sent"] == 2).then_some(stats)
        }).await;
        assert_eq!(stats["messages_failed"], 0, "{stats}");
    }

    async fn anonymous_log_webhooks_change_nothing(server) {
        let user = server.new_user();
        let phone = phones(1, 0).remove(0);
        let campaign = server.active_campaign(&user, window_open_now(), std::slice::from_ref(&phone)).await;
        let stop = json!({ "from": phone, "to": "x", "body": "stop" });
        server.post_webhook("/webhooks/log/inbound", stop.clone(), None).await.expect_problem(401);
        server.post_webhook("/webhooks/log/inbound", stop.clone(), Some("a guess")).await.expect_problem(401);
        server.post_webhook("/api/v1/webhooks/log/status", json!({ "carrier_message_id": "log-x", "status": "failed" }), None)
            .await
            .expect_problem(401);
        let contact = &server.get(&format!("/api/v1/campaigns/{campaign}/contacts"), &user).await.body["contacts"][0];
        assert_eq!(contact["opted_out"], false, "{contact}");

        // Without a configured secret, the log carrier has no webhooks at all.
        let backend = server.backend;
        drop(server);
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers.iter_mut().for_each(|c| { c.settings.remove("webhook_secret"); });
        }).await else { return };
        server.post_webhook("/webhooks/log/inbound", stop.clone(), Some(LOG_WEBHOOK_SECRET)).await.expect_problem(404);
        server.post_webhook("/webhooks/log/status", json!([]), None).await.expect_problem(404);
    }

    async fn inbound_stop_finds_the_contact_whatever_the_formatting(server) {
        let user = server.new_user();
        let campaign = server.active_campaign(&user, window_open_now(), &["+12025550177".to_string()]).await;
        server.send_campaign(&user, &campaign).await;
        server.wait_settled(&user, &campaign, 1, SETTLE).await;
        // Text no database can store is refused or ignored, the same on both.
        let secret = Some(LOG_WEBHOOK_SECRET);
        let nul = json!({ "from": "+1202555\u{0}177", "to": "x\u{0}", "body": "hi\u{0}" });
        server.post_webhook("/webhooks/log/inbound", nul, secret).await.expect(204);
        let nul = json!({ "carrier_message_id": "log-\u{0}", "status": "delivered" });
        server.post_webhook("/webhooks/log/status", nul, secret).await.expect_problem(400);
        let stop = json!({ "from": "+1 (202) 555-0177", "to": "x", "body": "STOP" });
        server.post_webhook("/webhooks/log/inbound", stop, secret).await.expect(204);
        let contact = &server.get(&format!("/api/v1/campaigns/{campaign}/contacts"), &user).await.body["contacts"][0];
        assert_eq!(contact["opted_out"], true, "{contact}");
    }

    async fn a_webhook_flood_neither_trips_the_carrier_nor_stops_sending(backend: Backend) {
        let trap = plugin_carrier("trap", herald_tests::fixtures::WEBHOOK_TRAP);
        let Some(server) = TestServer::launch(backend, None, true, |config| {
            config.carriers = vec![trap];
            config.plugins.trip_after_traps = 2;
        }).await else { return };
        let user = server.new_user();
        let events = server.listen(&user).await;
        // Every one of these traps the plugin: the caller gets 400, sending is untouched.
        let flood = (0..20).map(|_| server.post_webhook("/webhooks/trap/status", json!(vec![0; 1000]), None));
        for reply in futures::future::join_all(flood).await {
            reply.expect_problem(400);
        }
        let campaign = server.active_campaign(&user, window_open_now(), &phones(10, 0)).await;
        server.send_campaign(&user, &campaign).await;
        let stats = server.wait_settled(&user, &campaign, 10, SETTLE).await;
        assert_eq!(stats["messages_sent"], 10, "{stats}");
        assert!(events.of_type("herald.carrier.tripped").is_empty(), "{:?}", events.all());
    }

    async fn an_oversized_webhook_is_refused_as_it_streams(server) {
        // 8 MiB in chunks of unknown total length: counted as they come.
        let chunks = futures::stream::iter((0..128).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
        let request = server
            .client_post("/webhooks/log/status")
            .header(LOG_WEBHOOK_SECRET_HEADER, LOG_WEBHOOK_SECRET)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks));
        server.send_request(request).await.expect_problem(413);
        let declared = server
            .client_post("/webhooks/log/status")
            .header(LOG_WEBHOOK_SECRET_HEADER, LOG_WEBHOOK_SECRET)
            .body(vec![b' '; 2 * 1024 * 1024]);
        server.send_request(declared).await.expect_problem(413);
    }
}
