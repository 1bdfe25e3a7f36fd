//! CSV import: `POST /api/v1/campaigns/{id}/contacts/import` (SPEC §3.7), checked
//! through the response report and through the campaign's contact list.

use herald_tests::serde_json::{Value, json};
use herald_tests::*;

const INVALID_12345: &str = "invalid phone number \"12345\"";

/// CSV bytes: `lines` joined by `\n`, with a final newline.
fn csv(lines: &[&str]) -> Vec<u8> {
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

/// A `phone_number,name` file with one row per `(phone, name)`.
fn phone_name_csv(rows: impl IntoIterator<Item = (String, String)>) -> Vec<u8> {
    let mut text = String::from("phone_number,name\n");
    for (phone, name) in rows {
        text.push_str(&format!("{phone},{name}\n"));
    }
    text.into_bytes()
}

fn import_path(campaign: &str) -> String {
    format!("/api/v1/campaigns/{campaign}/contacts/import")
}

async fn import(server: &TestServer, user: &User, campaign: &str, bytes: Vec<u8>) -> Reply {
    server.upload(&import_path(campaign), user, "file", bytes).await
}

/// The exact import response body.
fn report(imported: u64, duplicates: u64, errors: u64, total_contacts: u64, error_details: &[String]) -> Value {
    json!({
        "imported": imported,
        "duplicates": duplicates,
        "errors": errors,
        "total_contacts": total_contacts,
        "error_details": error_details,
    })
}

/// `line N: reason`, as error details are written.
fn at_line(line: u64, reason: &str) -> String {
    format!("line {line}: {reason}")
}

/// Asserts `201` with exactly `expected` as the body.
#[track_caller]
fn assert_report(reply: Reply, expected: Value) {
    let reply = reply.expect(201);
    assert_eq!(reply.body, expected, "import report");
}

/// One page (of 100) of the campaign's contact list.
async fn contact_page(server: &TestServer, user: &User, campaign: &str, page: u32) -> Value {
    let path = format!("/api/v1/campaigns/{campaign}/contacts?page={page}&per_page=100");
    server.get(&path, user).await.expect(200).body
}

/// The first 100 contacts of the campaign as `{phone_number, name, attributes}`, in list order.
async fn contacts(server: &TestServer, user: &User, campaign: &str) -> Vec<Value> {
    let body = contact_page(server, user, campaign, 1).await;
    body["contacts"]
        .as_array()
        .expect("contacts array")
        .iter()
        .map(|c| {
            contact(
                c["phone_number"].as_str().expect("phone"),
                c["name"].as_str().expect("name"),
                c["attributes"].clone(),
            )
        })
        .collect()
}

fn contact(phone_number: &str, name: &str, attributes: Value) -> Value {
    json!({ "phone_number": phone_number, "name": name, "attributes": attributes })
}

/// Phone numbers on one page of the campaign's contact list, in list order.
async fn phones_on_page(server: &TestServer, user: &User, campaign: &str, page: u32) -> Vec<String> {
    let body = contact_page(server, user, campaign, page).await;
    body["contacts"]
        .as_array()
        .expect("contacts array")
        .iter()
        .map(|c| c["phone_number"].as_str().expect("phone").to_string())
        .collect()
}

async fn phones(server: &TestServer, user: &User, campaign: &str) -> Vec<String> {
    phones_on_page(server, user, campaign, 1).await
}

/// How many contacts the campaign's contact list says it has.
async fn total(server: &TestServer, user: &User, campaign: &str) -> u64 {
    contact_page(server, user, campaign, 1).await["total"]
        .as_u64()
        .expect("total")
}

/// Adds contacts through the JSON endpoint.
async fn add_json(server: &TestServer, user: &User, campaign: &str, contacts: Value) {
    let path = format!("/api/v1/campaigns/{campaign}/contacts");
    server
        .post(&path, user, json!({ "contacts": contacts }))
        .await
        .expect(201);
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A valid NANP number `+1555` followed by `n` as 7 digits.
fn generated_phone(n: u64) -> String {
    format!("+1555{n:07}")
}

on_both_backends! {
    async fn bom_and_crlf_line_endings(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = b"\xEF\xBB\xBFphone_number,name,city\r\n\
                     5551230001,Ada,Paris\r\n\
                     5551230002,Grace,\r\n\
                     \r\n\
                     5551230003,\"Linus\r\nTorvalds\",Helsinki\r\n"
            .to_vec();
        assert_report(import(&server, &user, &campaign, file).await, report(3, 0, 0, 3, &[]));
        assert_eq!(
            contacts(&server, &user, &campaign).await,
            [
                contact("+15551230001", "Ada", json!({ "city": "Paris" })),
                contact("+15551230002", "Grace", json!({})),
                contact("+15551230003", "Linus\r\nTorvalds", json!({ "city": "Helsinki" })),
            ],
            "the BOM is not part of the first column's name, no value keeps a line ending \
             and a quoted value keeps its own"
        );
    }

    async fn header_columns_in_any_order_and_case_with_phone_alias(server) {
        let user = server.new_user();
        let headers = [
            "phone_number,name",
            "NAME,Phone_Number",
            "Name,PHONE",
            "phone,nAmE",
            "City,pHoNe,Name",
        ];
        for (i, header) in headers.into_iter().enumerate() {
            let campaign = server.create_campaign(&user, json!({})).await;
            let row = header
                .split(',')
                .map(|column| match column.to_ascii_lowercase().as_str() {
                    "phone" | "phone_number" => format!("555123000{i}"),
                    "name" => format!("Person {i}"),
                    _ => "Oslo".to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            let reply = import(&server, &user, &campaign, csv(&[header, &row])).await;
            assert_report(reply, report(1, 0, 0, 1, &[]));
            let attributes = if header.starts_with("City") {
                json!({ "City": "Oslo" })
            } else {
                json!({})
            };
            let expected = contact(&format!("+1555123000{i}"), &format!("Person {i}"), attributes);
            assert_eq!(contacts(&server, &user, &campaign).await, [expected], "header {header:?}");
        }
    }

    async fn quoted_fields_with_commas_and_newlines_keep_file_line_numbers(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = csv(&[
            "phone_number,name,note",                                // line 1
            r#"5551230001,"Lovelace, Ada","first line"#,             // line 2
            r#"second line""#,                                       // line 3
            "12345,Bob,x",                                           // line 4
            r#""555-123-0002","Hopper, ""Amazing"" Grace","a,b""#,   // line 5
            r#"5551230003,Carol,"one"#,                              // line 6
            "",                                                      // line 7
            r#"three""#,                                             // line 8
            "12345,Dave,y",                                          // line 9
        ]);
        let details = [at_line(4, INVALID_12345), at_line(9, INVALID_12345)];
        assert_report(import(&server, &user, &campaign, file).await, report(3, 0, 2, 3, &details));
        assert_eq!(
            contacts(&server, &user, &campaign).await,
            [
                contact("+15551230001", "Lovelace, Ada", json!({ "note": "first line\nsecond line" })),
                contact("+15551230002", r#"Hopper, "Amazing" Grace"#, json!({ "note": "a,b" })),
                contact("+15551230003", "Carol", json!({ "note": "one\n\nthree" })),
            ]
        );
    }

    async fn extra_columns_become_attributes_and_empty_cells_are_not_stored(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = csv(&[
            "first_name,phone,city,name,plan",
            "Ada,5551230001,Paris,Ada Lovelace,gold",
            ",5551230002,,Grace Hopper,",
            "Linus,5551230003,,Linus T,silver",
        ]);
        assert_report(import(&server, &user, &campaign, file).await, report(3, 0, 0, 3, &[]));
        assert_eq!(
            contacts(&server, &user, &campaign).await,
            [
                contact(
                    "+15551230001",
                    "Ada Lovelace",
                    json!({ "first_name": "Ada", "city": "Paris", "plan": "gold" }),
                ),
                contact("+15551230002", "Grace Hopper", json!({})),
                contact("+15551230003", "Linus T", json!({ "first_name": "Linus", "plan": "silver" })),
            ]
        );
    }

    async fn ragged_rows_are_reported_and_skipped(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = csv(&[
            "phone_number,name,city",
            "5551230001,Ada,Paris",
            "5551230002,Too Few",
            "5551230003,Too Many,Rome,extra",
            "5551230004",
            "5551230005,Grace,",
        ]);
        let details = [
            at_line(3, "expected 3 fields, found 2"),
            at_line(4, "expected 3 fields, found 4"),
            at_line(5, "expected 3 fields, found 1"),
        ];
        assert_report(import(&server, &user, &campaign, file).await, report(2, 0, 3, 2, &details));
        assert_eq!(phones(&server, &user, &campaign).await, ["+15551230001", "+15551230005"]);
    }

    async fn invalid_utf8_in_a_row_is_a_row_error(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = b"phone_number,name,city\n\
                     5551230001,Ada,Paris\n\
                     5551230002,Bo\xff\xfeb,Rome\n\
                     5551230003,Cy,Li\xc3\n\
                     5551230004,Dee,Oslo\n"
            .to_vec();
        let details = [at_line(3, "not valid UTF-8"), at_line(4, "not valid UTF-8")];
        assert_report(import(&server, &user, &campaign, file).await, report(2, 0, 2, 2, &details));
        assert_eq!(phones(&server, &user, &campaign).await, ["+15551230001", "+15551230004"]);
    }

    async fn national_formats_are_normalized_to_e164(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let inputs = [
            "(555) 123-0001",
            "555.123.0002",
            "1-555-123-0003",
            "+1 555 123 0004",
            "5551230005",
            "15551230006",
            "+15551230007",
            "\" +1 (555) 123-0008 \"",
        ];
        let file = phone_name_csv(inputs.map(|phone| (phone.to_string(), "N".to_string())));
        assert_report(import(&server, &user, &campaign, file).await, report(8, 0, 0, 8, &[]));
        let expected: Vec<String> = (1..=8).map(|n| format!("+155512300{n:02}")).collect();
        assert_eq!(phones(&server, &user, &campaign).await, expected);
    }

    async fn invalid_numbers_and_bad_names_are_row_errors(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let long_name = "x".repeat(101);
        let file = csv(&[
            "phone_number,name",
            "12345,Ann",
            "5551230001,   ",
            "5551230002,",
            "555-CALL-NOW,Bo",
            "+447911123456,Uk",
            "25551230003,Eleven",
            &format!("5551230004,{long_name}"),
            "5551230005,Ok",
        ]);
        let details = [
            at_line(2, INVALID_12345),
            at_line(3, "name must not be blank"),
            at_line(4, "name must not be blank"),
            at_line(5, "invalid phone number \"555-CALL-NOW\""),
            at_line(6, "invalid phone number \"+447911123456\""),
            at_line(7, "invalid phone number \"25551230003\""),
            at_line(8, "name must be at most 100 characters (got 101)"),
        ];
        assert_report(import(&server, &user, &campaign, file).await, report(1, 0, 7, 1, &details));
        let expected = [contact("+15551230005", "Ok", json!({}))];
        assert_eq!(contacts(&server, &user, &campaign).await, expected);
    }

    async fn repeats_inside_the_file_are_duplicates_and_the_first_wins(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = csv(&[
            "phone_number,name,tag",
            "5551230001,First,a",
            "5551230002,Other,b",
            "+1 (555) 123-0001,Second,c",
            "15551230001,Third,d",
            "5551230002,Again,e",
        ]);
        assert_report(import(&server, &user, &campaign, file).await, report(2, 3, 0, 2, &[]));
        assert_eq!(
            contacts(&server, &user, &campaign).await,
            [
                contact("+15551230001", "First", json!({ "tag": "a" })),
                contact("+15551230002", "Other", json!({ "tag": "b" })),
            ]
        );
    }

    async fn importing_the_same_file_twice_counts_duplicates(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = csv(&["phone_number,name", "5551230001,A", "5551230002,B", "5551230003,C"]);
        let first = import(&server, &user, &campaign, file.clone()).await;
        assert_report(first, report(3, 0, 0, 3, &[]));
        let before = contacts(&server, &user, &campaign).await;
        assert_report(import(&server, &user, &campaign, file).await, report(0, 3, 0, 3, &[]));
        assert_eq!(contacts(&server, &user, &campaign).await, before);
        assert_eq!(total(&server, &user, &campaign).await, 3);
    }

    async fn an_existing_contact_of_the_user_is_linked_not_duplicated(server) {
        let user = server.new_user();
        let original = contact("+15551230001", "Original", json!({}));
        let other_campaign = server.create_campaign(&user, json!({})).await;
        add_json(&server, &user, &other_campaign, json!([original])).await;
        let listed = contact_page(&server, &user, &other_campaign, 1).await;
        let original_id = &listed["contacts"][0]["id"];
        // Another user's contact with a phone of the file is neither linked nor in the way.
        let stranger = server.new_user();
        let strangers = contact("+15551230002", "Stranger", json!({}));
        let strangers_campaign = server.create_campaign(&stranger, json!({})).await;
        add_json(&server, &stranger, &strangers_campaign, json!([strangers])).await;

        let campaign = server.create_campaign(&user, json!({})).await;
        let file = csv(&["phone,name", "(555) 123-0001,Renamed", "5551230002,Mine"]);
        assert_report(import(&server, &user, &campaign, file).await, report(2, 0, 0, 2, &[]));
        let page = contact_page(&server, &user, &campaign, 1).await;
        assert_eq!(&page["contacts"][0]["id"], original_id, "the same contact, linked");
        let mine = contact("+15551230002", "Mine", json!({}));
        assert_eq!(contacts(&server, &user, &campaign).await, [original.clone(), mine]);
        assert_eq!(contacts(&server, &user, &other_campaign).await, [original]);
        assert_eq!(contacts(&server, &stranger, &strangers_campaign).await, [strangers]);
    }

    async fn only_the_first_hundred_errors_are_detailed(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let bad = (0..150).map(|_| ("12345".to_string(), "Bad".to_string()));
        let good = (1..=2).map(|n| (generated_phone(n), format!("Good {n}")));
        let file = phone_name_csv(bad.chain(good));
        let details: Vec<String> = (2..102).map(|line| at_line(line, INVALID_12345)).collect();
        assert_report(import(&server, &user, &campaign, file).await, report(2, 0, 150, 2, &details));
        let expected = [generated_phone(1), generated_phone(2)];
        assert_eq!(phones(&server, &user, &campaign).await, expected);
    }

    async fn unusable_uploads_are_refused_and_nothing_is_imported(server) {
        let user = server.new_user();
        let rows = ["5551230001,Ada", "5551230002,Grace"];
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(noise(4096));
        let files: [(&str, Vec<u8>); 4] = [
            ("no name column", csv(&["phone_number,city", rows[0], rows[1]])),
            ("no phone column", csv(&["name,city", "Ada,Paris"])),
            ("empty file", Vec::new()),
            ("PNG image", png),
        ];
        for (what, bytes) in files {
            let campaign = server.create_campaign(&user, json!({})).await;
            let reply = import(&server, &user, &campaign, bytes).await;
            assert_eq!(reply.status, 400, "{what}: {}", reply.text);
            reply.expect_problem(400);
            assert_eq!(total(&server, &user, &campaign).await, 0, "{what}");
        }

        let campaign = server.create_campaign(&user, json!({})).await;
        let path = import_path(&campaign);
        let file = csv(&["phone_number,name", rows[0], rows[1]]);
        server.upload(&path, &user, "other", file).await.expect_problem(400);
        let as_json = json!({ "file": "phone_number,name\n5551230001,Ada\n" });
        server.post(&path, &user, as_json).await.expect_problem(400);
        assert_eq!(total(&server, &user, &campaign).await, 0, "no file field / not multipart");
    }

    async fn a_header_only_file_imports_nothing(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let files = [
            csv(&["phone_number,name"]),
            b"\xEF\xBB\xBFname,phone\r\n".to_vec(),
            b"phone,name".to_vec(),
        ];
        for file in files {
            assert_report(import(&server, &user, &campaign, file).await, report(0, 0, 0, 0, &[]));
        }
        assert_eq!(total(&server, &user, &campaign).await, 0);
    }

    async fn another_users_or_a_missing_campaign_is_404(server) {
        let owner = server.new_user();
        let campaign = server.create_campaign(&owner, json!({})).await;
        let intruder = server.new_user();
        let file = csv(&["phone_number,name", "5551230001,Ada"]);
        import(&server, &intruder, &campaign, file.clone()).await.expect_problem(404);
        let missing = uuid::Uuid::now_v7().to_string();
        import(&server, &owner, &missing, file).await.expect_problem(404);
        assert_eq!(total(&server, &owner, &campaign).await, 0);
    }

    async fn a_campaign_id_that_is_not_a_uuid_is_400(server) {
        let user = server.new_user();
        let file = csv(&["phone_number,name", "5551230001,Ada"]);
        import(&server, &user, "not-a-uuid", file).await.expect_problem(400);
    }

    async fn sql_in_names_and_attributes_is_stored_verbatim(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let name = "Robert'); DROP TABLE contacts;--";
        let note = "1' OR '1'='1\"; DELETE FROM campaign_contacts; --";
        let key = "x'); DROP TABLE campaigns;--";
        let file = csv(&[
            &format!("phone_number,name,\"{key}\""),
            &format!("5551230001,\"{name}\",\"{}\"", note.replace('"', "\"\"")),
            &format!("5551230002,\"{name}\",plain"),
        ]);
        assert_report(import(&server, &user, &campaign, file).await, report(2, 0, 0, 2, &[]));
        assert_eq!(
            contacts(&server, &user, &campaign).await,
            [
                contact("+15551230001", name, json!({ key: note })),
                contact("+15551230002", name, json!({ key: "plain" })),
            ]
        );
        // The tables are all still there.
        let again = server.create_campaign(&user, json!({})).await;
        let file = csv(&["phone_number,name", "5551230003,After"]);
        assert_report(import(&server, &user, &again, file).await, report(1, 0, 0, 1, &[]));
    }

    async fn twenty_thousand_rows_in_one_request(server) {
        const ROWS: u64 = 20_000;
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        // The last row repeats the first across the 8,000-row chunks.
        let rows = (0..ROWS).chain([0]).map(|n| (generated_phone(n), format!("Contact {n}")));
        let reply = import(&server, &user, &campaign, phone_name_csv(rows)).await;
        assert_report(reply, report(ROWS, 1, 0, ROWS, &[]));
        assert_eq!(total(&server, &user, &campaign).await, ROWS);
        for page in [1, 40, 41, 200] {
            let first = u64::from(page - 1) * 100;
            let expected: Vec<String> = (first..first + 100).map(generated_phone).collect();
            let got = phones_on_page(&server, &user, &campaign, page).await;
            assert_eq!(got, expected, "page {page}, in file order");
        }
    }
}

/// A server accepting uploads of at most 1 KiB, `None` when the backend is unavailable.
async fn limited_server(backend: Backend) -> Option<TestServer> {
    TestServer::start_if_available(backend, |c| c.contacts.max_import_bytes = 1024).await
}

on_both_backends! {
    async fn uploads_over_the_limit_are_413(backend: Backend) {
        let Some(server) = limited_server(backend).await else {
            return;
        };
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        for rows in [400, 8_000] {
            let file = phone_name_csv((0..rows).map(|n| (generated_phone(n), format!("Contact {n}"))));
            assert!(file.len() > 1024, "{} bytes", file.len());
            import(&server, &user, &campaign, file).await.expect_problem(413);
            assert_eq!(total(&server, &user, &campaign).await, 0, "{rows} rows");
        }
        let small = csv(&["phone_number,name", "5551230001,Ada"]);
        assert_report(import(&server, &user, &campaign, small).await, report(1, 0, 0, 1, &[]));
    }

    /// Error lines of a CRLF file are the file's lines, as they are for LF.
    async fn crlf_files_report_file_line_numbers(backend: Backend) {
        let Some(server) = TestServer::start_if_available(backend, |_| {}).await else {
            return;
        };
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = b"\xEF\xBB\xBFphone_number,name,note\r\n\
                     12345,Ann,x\r\n\
                     5551230001,Ada,\"two\r\nlines\"\r\n\
                     12345,Bob,y\r\n"
            .to_vec();
        let details = [at_line(2, INVALID_12345), at_line(5, INVALID_12345)];
        let reply = import(&server, &user, &campaign, file).await;
        assert_report(reply, report(1, 0, 2, 1, &details));
    }
}

on_both_backends! {
    async fn nul_in_a_field_is_a_row_error_naming_it_and_in_a_header_refuses_the_file(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let file = b"phone_number,name,city\n\
                     5551230001,Ada,Paris\n\
                     5551230002,Gr\0ace,Paris\n\
                     555123\x000003,Alan,Paris\n\
                     5551230004,Edsger,Par\0is\n"
            .to_vec();
        let details = [
            at_line(3, "name must not contain a NUL character"),
            at_line(4, "phone number must not contain a NUL character"),
            at_line(5, "attribute \"city\" must not contain a NUL character"),
        ];
        assert_report(import(&server, &user, &campaign, file).await, report(1, 0, 3, 1, &details));
        assert_eq!(phones(&server, &user, &campaign).await, ["+15551230001"]);

        let other = server.create_campaign(&user, json!({})).await;
        let file = csv(&["phone_number,name,ci\0ty", "5551230001,Ada,Paris"]);
        import(&server, &user, &other, file).await.expect_problem(400);
        assert_eq!(total(&server, &user, &other).await, 0);
    }

    async fn a_field_of_millions_of_newlines_is_one_row_error_answered_quickly(server) {
        // SPEC §9: "a field of a million newlines". The row is skipped as it streams
        // past, never buffered; the rows around it import with their own line numbers.
        const NEWLINES: usize = 20_000_000;
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let mut file = b"phone_number,name,note\n5551230001,Ada,x\n5551230002,Grace,\"".to_vec();
        file.resize(file.len() + NEWLINES, b'\n');
        file.extend_from_slice(b"\"\n12345,Alan,x\n5551230003,Edsger,x\n");
        let started = std::time::Instant::now();
        let reply = import(&server, &user, &campaign, file).await;
        let elapsed = started.elapsed();
        let details = [
            at_line(3, "the row is longer than 262144 bytes"),
            at_line(3 + NEWLINES as u64 + 1, INVALID_12345),
        ];
        assert_report(reply, report(2, 0, 2, 2, &details));
        assert!(elapsed < std::time::Duration::from_secs(20), "took {elapsed:?}");
    }

    async fn a_header_of_300_000_columns_is_400_at_once(server) {
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let named: String = (0..300_000).map(|i| format!(",c{i}")).collect();
        let empty = ",".repeat(300_000);
        for (what, extra) in [("named columns", named), ("empty columns", empty)] {
            let file = format!("phone_number,name{extra}\n5551230001,Ada{extra}\n").into_bytes();
            let started = std::time::Instant::now();
            let reply = import(&server, &user, &campaign, file).await;
            let elapsed = started.elapsed();
            assert_eq!(reply.status, 400, "{what}: {}", reply.text);
            reply.expect_problem(400);
            assert!(elapsed < std::time::Duration::from_secs(2), "{what}: took {elapsed:?}");
        }
        assert_eq!(total(&server, &user, &campaign).await, 0);
    }
}

/// The value of a counter or gauge in `/metrics` (0 before it is first recorded).
async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server.get_anonymous("/metrics").await.expect(200).text;
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

on_both_backends! {
    async fn an_import_the_client_abandons_stops_parsing(server) {
        use tokio::io::AsyncWriteExt;
        const ABANDONED: &str = "herald_csv_imports_abandoned_total";
        let user = server.new_user();
        let campaign = server.create_campaign(&user, json!({})).await;
        let before = metric(&server, ABANDONED).await;
        // 60 MB in one quoted field: seconds of parsing after the upload is in.
        let mut file = b"phone_number,name\n5551230001,\"".to_vec();
        file.resize(60_000_000, b'\n');
        file.extend_from_slice(b"\"\n");
        let boundary = "herald-test-boundary";
        let mut body = format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"c.csv\"\r\n\
             content-type: text/csv\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let address = server.base.trim_start_matches("http://");
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
             content-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\n\r\n",
            import_path(&campaign),
            user.token,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
        stream.write_all(head.as_bytes()).await.expect("head sent");
        stream.write_all(&body).await.expect("body sent");
        // Once the parser runs, walk away without reading the answer.
        eventually("the import to start parsing", std::time::Duration::from_secs(30), || async {
            (metric(&server, "herald_csv_imports_running").await >= 1.0).then_some(())
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(stream);
        eventually("the parser to notice and stop", std::time::Duration::from_secs(30), || async {
            (metric(&server, ABANDONED).await > before).then_some(())
        })
        .await;
        assert_eq!(total(&server, &user, &campaign).await, 0, "nothing was imported");
    }
}
