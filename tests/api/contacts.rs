//! Contacts through JSON: add, list, get, patch; and the all-or-nothing write.

use herald::config::DatabaseConfig;
use herald::domain::contact::NewContact;
use herald::domain::phone::PhonePolicy;
use herald::store::ContactBatch;
use herald_tests::serde_json::{Value, json};
use herald_tests::*;

fn contacts_path(campaign: &str) -> String {
    format!("/api/v1/campaigns/{campaign}/contacts")
}

fn contact(phone: &str, name: &str) -> Value {
    json!({ "phone_number": phone, "name": name })
}

async fn phones(server: &TestServer, user: &User, campaign: &str) -> Vec<String> {
    let body = server
        .get(&format!("{}?per_page=100", contacts_path(campaign)), user)
        .await
        .expect(200)
        .body;
    body["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phone_number"].as_str().unwrap().to_string())
        .collect()
}

on_both_backends! {
    async fn add_counts_added_and_duplicates(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let reply = server
            .post(&contacts_path(&campaign), &user, json!({ "contacts": [
                contact("+15551230001", "Ada"),
                { "phone_number": "(555) 123-0002", "name": "Bob", "attributes": { "city": "Paris", "first_name": "Bob" } },
                contact("555.123.0001", "Ada again"),
            ] }))
            .await
            .expect(201);
        assert_eq!(reply.body, json!({ "added": 2, "duplicates": 1, "total_contacts": 2 }));

        let reply = server
            .post(&contacts_path(&campaign), &user, json!({ "contacts": [contact("+15551230002", "Bob"), contact("+15551230003", "Cy")] }))
            .await
            .expect(201);
        assert_eq!(reply.body, json!({ "added": 1, "duplicates": 1, "total_contacts": 3 }));
        assert_eq!(phones(&server, &user, &campaign).await, ["+15551230001", "+15551230002", "+15551230003"]);

        let listed = server.get(&contacts_path(&campaign), &user).await.body;
        let bob = &listed["contacts"][1];
        assert_eq!(bob["name"], "Bob");
        assert_eq!(bob["attributes"], json!({ "city": "Paris", "first_name": "Bob" }));
        assert_eq!(bob["opted_out"], false);
        let fetched = server.get(&format!("/api/v1/contacts/{}", bob["id"].as_str().unwrap()), &user).await.expect(200);
        assert_eq!(&fetched.body, bob);
    }

    async fn existing_contact_is_linked_without_renaming(server) {
        let user = server.new_user();
        let first = server.create_campaign(&user, json!({})).await;
        let second = server.create_campaign(&user, json!({})).await;
        server.post(&contacts_path(&first), &user, json!({ "contacts": [contact("+15551230001", "Original")] })).await.expect(201);
        let reply = server
            .post(&contacts_path(&second), &user, json!({ "contacts": [contact("+15551230001", "Renamed?")] }))
            .await
            .expect(201);
        assert_eq!(reply.body["added"], 1);
        let a = server.get(&contacts_path(&first), &user).await.body["contacts"][0].clone();
        let b = server.get(&contacts_path(&second), &user).await.body["contacts"][0].clone();
        assert_eq!(a["id"], b["id"], "one contact, two campaigns");
        assert_eq!(b["name"], "Original");

        let other_user = server.new_user();
        let theirs = server.create_campaign(&other_user, json!({})).await;
        server.post(&contacts_path(&theirs), &other_user, json!({ "contacts": [contact("+15551230001", "Theirs")] })).await.expect(201);
        let c = server.get(&contacts_path(&theirs), &other_user).await.body["contacts"][0].clone();
        assert_ne!(c["id"], a["id"], "contacts are per user");
        assert_eq!(c["name"], "Theirs");
    }

    async fn any_invalid_item_rejects_the_whole_request(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let fields = server
            .post(&contacts_path(&campaign), &user, json!({ "contacts": [
                contact("+15551230001", "Fine"),
                contact("12345", "Bad phone"),
                contact("+15551230003", ""),
                contact("+447911123456", "Not NANP"),
            ] }))
            .await
            .expect_problem(422);
        assert_eq!(fields, ["contacts[1].phone_number", "contacts[2].name", "contacts[3].phone_number"]);
        assert!(phones(&server, &user, &campaign).await.is_empty(), "nothing written");

        let shape = server
            .post(&contacts_path(&campaign), &user, json!({ "contacts": [{ "phone_number": "+15551230001" }] }))
            .await
            .expect_problem(422);
        assert_eq!(shape, ["contacts[0].name"]);
        server.post(&contacts_path(&campaign), &user, json!({ "contacts": [] })).await.expect_problem(422);
        server.post(&contacts_path(&campaign), &user, json!({})).await.expect_problem(422);
        let too_many: Vec<Value> = (0..10_001).map(|i| contact(&format!("+1555{i:07}"), "x")).collect();
        let fields = server.post(&contacts_path(&campaign), &user, json!({ "contacts": too_many })).await.expect_problem(422);
        assert_eq!(fields, ["contacts"]);
        assert!(phones(&server, &user, &campaign).await.is_empty());
    }

    async fn ten_thousand_contacts_in_one_request(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let batch: Vec<Value> = (0..10_000).map(|i| contact(&format!("+1555{i:07}"), &format!("n{i}"))).collect();
        let reply = server.post(&contacts_path(&campaign), &user, json!({ "contacts": batch })).await.expect(201);
        assert_eq!(reply.body, json!({ "added": 10_000, "duplicates": 0, "total_contacts": 10_000 }));
        let last = server.get(&format!("{}?per_page=100&page=100", contacts_path(&campaign)), &user).await.body;
        assert_eq!(last["contacts"][99]["phone_number"], "+15550009999");
        assert_eq!(last["total_pages"], 100);
    }

    async fn list_pagination_edges(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let batch: Vec<Value> = (0..15).map(|i| contact(&format!("+1555000{i:04}"), "x")).collect();
        server.post(&contacts_path(&campaign), &user, json!({ "contacts": batch })).await.expect(201);
        let page2 = server.get(&format!("{}?page=2", contacts_path(&campaign)), &user).await.expect(200).body;
        assert_eq!(page2["contacts"].as_array().unwrap().len(), 5);
        assert_eq!((page2["total"].as_u64(), page2["total_pages"].as_u64()), (Some(15), Some(2)));
        let past = server.get(&format!("{}?page=9", contacts_path(&campaign)), &user).await.expect(200).body;
        assert_eq!(past["contacts"], json!([]));
        assert_eq!(past["total"], 15);
        for query in ["page=0", "per_page=101", "per_page=x"] {
            server.get(&format!("{}?{query}", contacts_path(&campaign)), &user).await.expect_problem(422);
        }
    }

    async fn patch_changes_name_attributes_and_consent(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        server.post(&contacts_path(&campaign), &user, json!({ "contacts": [contact("+15551230001", "Ada")] })).await.expect(201);
        let id = server.get(&contacts_path(&campaign), &user).await.body["contacts"][0]["id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/contacts/{id}");

        let patched = server
            .patch(&path, &user, json!({ "name": "Ada L.", "attributes": { "city": "London" }, "opted_out": true }))
            .await
            .expect(200)
            .body;
        assert_eq!((patched["name"].as_str(), patched["opted_out"].as_bool()), (Some("Ada L."), Some(true)));
        assert_eq!(patched["attributes"], json!({ "city": "London" }));
        assert_eq!(server.get(&path, &user).await.body, patched);

        server.patch(&path, &user, json!({ "opted_out": false })).await.expect(200);
        server.patch(&path, &user, json!({ "opted_out": false })).await.expect(200);
        assert_eq!(consent_trail(&server, &id).await, [("api".to_string(), true), ("api".to_string(), false)],
            "each change of consent is recorded once, with its source");

        for bad in [json!({ "name": "" }), json!({ "opted_out": "yes" }), json!({ "phone_number": "+15551230002" })] {
            server.patch(&path, &user, bad).await.expect_problem(422);
        }
        server.send_raw(reqwest::Method::PATCH, &path, &user, b"{oops".to_vec()).await.expect_problem(400);
        assert_eq!(server.get(&path, &user).await.body["name"], "Ada L.");
    }

    async fn concurrent_imports_sharing_phones_both_succeed(server) {
        // Same phones in opposite orders, at the same time: a classic lock-order deadlock.
        let user = server.new_user();
        let first = server.create_campaign(&user, json!({})).await;
        let second = server.create_campaign(&user, json!({})).await;
        let rows: Vec<String> = (0..20_000).map(|i| format!("+1555{i:07},n{i}")).collect();
        let file = |rows: &[String]| format!("phone_number,name\n{}\n", rows.join("\n")).into_bytes();
        let reversed: Vec<String> = rows.iter().rev().cloned().collect();
        let (path_a, path_b) = (format!("{}/import", contacts_path(&first)), format!("{}/import", contacts_path(&second)));
        let (a, b) = tokio::join!(
            server.upload(&path_a, &user, "file", file(&rows)),
            server.upload(&path_b, &user, "file", file(&reversed)),
        );
        assert_eq!(a.expect(201).body["total_contacts"], 20_000);
        assert_eq!(b.expect(201).body["total_contacts"], 20_000);
        let one = server.get(&format!("{}?per_page=1", contacts_path(&first)), &user).await.body;
        let other = server.get(&format!("{}?per_page=1&page=20000", contacts_path(&second)), &user).await.body;
        assert_eq!(one["contacts"][0]["id"], other["contacts"][0]["id"], "one contact per phone, shared");
    }

    async fn aborted_bulk_write_leaves_nothing(server) {
        // The import path streams batches into one transaction; a failure after
        // some batches were written must roll all of them back.
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let store = herald::store::connect(&server.database_url, &DatabaseConfig::default()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let batch = |from: u32| -> Vec<NewContact> {
            (from..from + 5_000)
                .map(|i| NewContact {
                    phone_number: PhonePolicy::default().normalize(&format!("+1555{i:07}")).unwrap(),
                    name: "x".into(),
                    attributes: Default::default(),
                })
                .collect()
        };
        tx.send(ContactBatch::Rows(batch(0))).await.unwrap();
        tx.send(ContactBatch::Rows(batch(5_000))).await.unwrap();
        tx.send(ContactBatch::Abort("the upload broke off".to_string())).await.unwrap();
        drop(tx);
        let campaign_id = campaign.parse().unwrap();
        let result = store.link_contacts(user.id.into(), campaign_id, rx, chrono::Utc::now()).await;
        assert!(matches!(result, Err(herald::store::StoreError::Aborted(_))), "{result:?}");
        assert!(phones(&server, &user, &campaign).await.is_empty());

        // A producer that dies (a panic drops its sender) without saying `End` is no success either.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(ContactBatch::Rows(batch(0))).await.unwrap();
        drop(tx);
        let result = store.link_contacts(user.id.into(), campaign_id, rx, chrono::Utc::now()).await;
        assert!(matches!(result, Err(herald::store::StoreError::Aborted(_))), "{result:?}");
        assert!(phones(&server, &user, &campaign).await.is_empty());
        let other = server.create_campaign(&user, json!({})).await;
        let reply = server.post(&contacts_path(&other), &user, json!({ "contacts": [contact("+15550000001", "Fresh")] })).await;
        assert_eq!(reply.expect(201).body["added"], 1);
        let fresh = server.get(&contacts_path(&other), &user).await.body["contacts"][0].clone();
        assert_eq!(fresh["name"], "Fresh", "no contact row survived the rollback");
        store.close().await;
    }
}

/// The consent audit trail of a contact, oldest first, read from the database.
async fn consent_trail(server: &TestServer, contact: &str) -> Vec<(String, bool)> {
    let id: uuid::Uuid = contact.parse().unwrap();
    let sql = "SELECT source, opted_out FROM consent_events WHERE contact_id = $1 ORDER BY created_at, id";
    match server.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&server.database_url).await.unwrap();
            let rows = sqlx::query_as(sql).bind(id).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&server.database_url).await.unwrap();
            let rows = sqlx::query_as(sql).bind(id).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }
}
