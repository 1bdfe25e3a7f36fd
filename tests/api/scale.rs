//! Scale (SPEC §3.6, §3.8, §8): deep pages are exact, a big send answers
//! before its queueing ends and finishes in the background, a delete answers
//! at once and purges in the background, and the counters every read uses
//! equal a recount of the messages throughout.

use std::time::Duration;

use herald_tests::serde_json::{Value, json};
use herald_tests::services::query_rows;
use herald_tests::{Backend, TestServer, User, eventually, on_both_backends};

use crate::sending::{TUESDAY_10AM, at};

fn csv(phones: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut text = String::from("phone_number,name\n");
    for phone in phones {
        text.push_str(&format!("{phone},n{phone}\n"));
    }
    text.into_bytes()
}

fn phone(i: usize) -> String {
    format!("+1555{i:07}")
}

async fn import(server: &TestServer, user: &User, campaign: &str, phones: impl IntoIterator<Item = String>) -> Value {
    let path = format!("/api/v1/campaigns/{campaign}/contacts/import");
    server.upload(&path, user, "file", csv(phones)).await.expect(201).body
}

async fn page(server: &TestServer, user: &User, campaign: &str, page: u64, per_page: u64) -> Value {
    let path = format!("/api/v1/campaigns/{campaign}/contacts?page={page}&per_page={per_page}");
    server.get(&path, user).await.expect(200).body
}

fn page_phones(page: &Value) -> Vec<String> {
    page["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phone_number"].as_str().unwrap().to_string())
        .collect()
}

/// A server whose operator allows big daily limits, its log carrier
/// unthrottled (its default is a real carrier's 100 segments/s).
async fn start(backend: Backend) -> Option<TestServer> {
    let clock = std::sync::Arc::new(herald_tests::ManualClock::new(at(TUESDAY_10AM)));
    TestServer::launch(backend, Some(clock), true, |config| {
        config.campaigns.max_daily_limit = 1_000_000;
        for carrier in &mut config.carriers {
            carrier.max_per_second = 100_000;
        }
    })
    .await
}

on_both_backends! {
    /// Pages are ranges of each link's position: any page holds exactly the
    /// rows of that place in the order contacts were added, also after a
    /// second import whose repeats take no place.
    async fn deep_pages_return_the_right_rows(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let first = import(&server, &user, &campaign, (0..2_500).map(phone)).await;
        assert_eq!(first["total_contacts"], 2_500);
        // Half repeats (of the first file and within this one), half new.
        let second: Vec<String> = (2_000..3_000).chain(2_900..3_100).map(phone).collect();
        let again = import(&server, &user, &campaign, second).await;
        assert_eq!((again["imported"].as_u64(), again["total_contacts"].as_u64()), (Some(600), Some(3_100)));

        for (number, per_page) in [(1, 100), (13, 100), (25, 100), (31, 100), (62, 50), (7, 7)] {
            let got = page(&server, &user, &campaign, number, per_page).await;
            let from = ((number - 1) * per_page) as usize;
            let expected: Vec<String> = (from..(from + per_page as usize).min(3_100)).map(phone).collect();
            assert_eq!(page_phones(&got), expected, "page {number} of {per_page}");
            assert_eq!(got["total"], 3_100);
            assert_eq!(got["total_pages"], 3_100_u64.div_ceil(per_page));
        }
        let past = page(&server, &user, &campaign, 32, 100).await;
        assert_eq!((past["contacts"].clone(), past["total"].clone()), (json!([]), json!(3_100)));
    }

    /// 20,000 contacts: the send answers with the first batch queued, the
    /// task reports `queuing` until the background has queued every one, and
    /// the campaign completes with one message per contact.
    async fn a_big_send_answers_before_queueing_ends_then_completes(backend: Backend) {
        let Some(server) = start(backend).await else { return };
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({ "daily_limit": 20_000 })).await;
        import(&server, &user, &campaign, (0..20_000).map(phone)).await;
        // A few opted out: never queued.
        let opted_out: Vec<String> = page_phones(&page(&server, &user, &campaign, 100, 100).await)[..3].to_vec();
        for contact in page(&server, &user, &campaign, 100, 100).await["contacts"].as_array().unwrap()[..3].iter() {
            let path = format!("/api/v1/contacts/{}", contact["id"].as_str().unwrap());
            server.patch(&path, &user, json!({ "opted_out": true })).await.expect(200);
        }
        server.set_status(&user, &campaign, "active").await.expect(200);

        let accepted = server.send_campaign(&user, &campaign).await;
        let queued_at_answer = accepted["queued"].as_u64().unwrap();
        assert!(queued_at_answer < 19_997, "the call answered with every message queued: {accepted}");
        let task_path = format!("/api/v1/tasks/{}", accepted["task_id"].as_str().unwrap());
        let first_look = server.get(&task_path, &user).await.expect(200).body;
        assert!(first_look["queued"].as_u64().unwrap() >= queued_at_answer);

        let mut seen = vec![first_look["status"].as_str().unwrap().to_string()];
        let done = eventually("the task completed", Duration::from_secs(240), || async {
            let report = server.get(&task_path, &user).await.expect(200).body;
            let status = report["status"].as_str().unwrap().to_string();
            (status == "completed").then_some(report)
        })
        .await;
        seen.push("completed".into());
        assert_eq!(
            (done["queued"].as_u64(), done["sent"].as_u64(), done["pending"].as_u64()),
            (Some(19_997), Some(19_997), Some(0)),
            "{done}"
        );
        let stats = server.stats(&user, &campaign).await;
        assert_eq!((stats["total_contacts"].as_u64(), stats["messages_sent"].as_u64()), (Some(20_000), Some(19_997)));
        // Exactly one message per eligible contact, none for the opted-out.
        let (messages, contacts): (i64, i64) =
            query_rows(&server.database_url, "SELECT COUNT(*), COUNT(DISTINCT contact_id) FROM messages").await.remove(0);
        assert_eq!((messages, contacts), (19_997, 19_997));
        let phones: Vec<(String,)> = query_rows(&server.database_url, "SELECT phone_number FROM messages").await;
        assert!(phones.iter().all(|(p,)| !opted_out.contains(p)));
        assert!(seen.iter().all(|s| ["queuing", "running", "completed"].contains(&s.as_str())), "{seen:?}");
        server.assert_counters_match().await;
    }

    /// DELETE answers at once; the campaign is gone for every read, and its
    /// messages and links are purged in the background; contacts stay.
    async fn a_delete_answers_at_once_and_purges_in_the_background(backend: Backend) {
        let Some(server) = start(backend).await else { return };
        let user = server.new_user();
        // Saturday window: everything stays queued.
        let campaign = server
            .create_campaign(&user, json!({ "daily_limit": 5_000, "send_days": ["sun"] }))
            .await;
        let kept = server.create_campaign(&user, json!({ "send_days": ["sun"] })).await;
        import(&server, &user, &campaign, (0..5_000).map(phone)).await;
        import(&server, &user, &kept, (0..10).map(phone)).await;
        for id in [&campaign, &kept] {
            server.set_status(&user, id, "active").await.expect(200);
            server.send_campaign(&user, id).await;
        }
        server.tick().await;
        assert_eq!(server.stats(&user, &campaign).await["messages_pending"], 5_000);
        server.set_status(&user, &campaign, "paused").await.expect(200);
        let contact_id = page(&server, &user, &campaign, 1, 1).await["contacts"][0]["id"].clone();

        server.delete(&format!("/api/v1/campaigns/{campaign}"), &user).await.expect(204);
        server.get(&format!("/api/v1/campaigns/{campaign}"), &user).await.expect_problem(404);
        server.get(&format!("/api/v1/campaigns/{campaign}/stats"), &user).await.expect_problem(404);
        server.delete(&format!("/api/v1/campaigns/{campaign}"), &user).await.expect_problem(404);
        let list = server.get("/api/v1/campaigns", &user).await.expect(200).body;
        assert_eq!((list["total"].as_u64(), list["campaigns"][0]["id"].as_str()), (Some(1), Some(kept.as_str())));

        server.tick().await;
        let left: Vec<(i64, i64, i64, i64)> = query_rows(
            &server.database_url,
            "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM campaign_contacts), \
             (SELECT COUNT(*) FROM campaigns), (SELECT COUNT(*) FROM contacts)",
        )
        .await;
        assert_eq!(left, vec![(10, 10, 1, 5_000)], "only the other campaign's rows are left, and every contact");
        server.get(&format!("/api/v1/contacts/{}", contact_id.as_str().unwrap()), &user).await.expect(200);
        assert_eq!(server.stats(&user, &kept).await["messages_pending"], 10);
        server.assert_counters_match().await;
    }
}
