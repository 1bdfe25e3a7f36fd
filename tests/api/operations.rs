//! Operations endpoints, the OpenAPI document and its offline UI.

use herald_tests::serde_json::json;
use herald_tests::*;

on_both_backends! {
    async fn health_and_readiness(server) {
        let health = server.get_anonymous("/healthz").await.expect(200);
        assert_eq!(health.body["status"], "ok");
        let ready = server.get_anonymous("/readyz").await.expect(200);
        assert_eq!(ready.body["status"], "ready");
        assert!(health.header("x-request-id").is_some_and(|id| !id.is_empty()));
    }

    async fn a_clients_request_id_is_echoed_and_others_are_made(server) {
        let user = server.new_user();
        let kept = server.get_with_header("/api/v1/campaigns", &user, "x-request-id", "client-id-7").await;
        assert_eq!(kept.expect(200).header("x-request-id"), Some("client-id-7"));
        let too_long = "x".repeat(129);
        let made = server.get_with_header("/api/v1/nothing-here", &user, "x-request-id", &too_long).await;
        let id = made.header("x-request-id").unwrap_or_default().to_string();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "a new id, not the client's: {id}");
        made.expect_problem(404);
    }

    async fn metrics_count_requests_by_route(server) {
        let user = server.new_user();
        server.create_campaign(&user, json!({})).await;
        server.get("/api/v1/campaigns", &user).await.expect(200);
        let reply = server.get_anonymous("/metrics").await.expect(200);
        assert!(reply.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
        let text = reply.text;
        assert!(
            text.lines().any(|l| l.starts_with("herald_http_requests_total")
                && l.contains("route=\"/api/v1/campaigns\"")
                && l.contains("status=\"201\"")),
            "{text}"
        );
        assert!(text.contains("herald_http_request_duration_seconds_bucket"), "{text}");
    }

    async fn unknown_routes_are_problem_documents(server) {
        let user = server.new_user();
        server.get("/api/v1/nothing-here", &user).await.expect_problem(404);
        server.get_anonymous("/nope").await.expect_problem(404);
        let reply = server.put("/api/v1/campaigns", &user, json!({})).await;
        assert_eq!(reply.body["type"], "https://herald.dev/problems/method-not-allowed", "{}", reply.text);
        reply.expect_problem(405);
    }

    async fn every_api_route_needs_a_token(server) {
        let id = uuid::Uuid::now_v7();
        let routes = [
            ("GET", "/api/v1/campaigns".to_string()),
            ("POST", "/api/v1/campaigns".to_string()),
            ("GET", format!("/api/v1/campaigns/{id}")),
            ("PUT", format!("/api/v1/campaigns/{id}")),
            ("DELETE", format!("/api/v1/campaigns/{id}")),
            ("GET", format!("/api/v1/campaigns/{id}/stats")),
            ("GET", format!("/api/v1/campaigns/{id}/contacts")),
            ("POST", format!("/api/v1/campaigns/{id}/contacts")),
            ("POST", format!("/api/v1/campaigns/{id}/contacts/import")),
            ("GET", format!("/api/v1/contacts/{id}")),
            ("PATCH", format!("/api/v1/contacts/{id}")),
            ("POST", format!("/api/v1/campaigns/{id}/send")),
            ("GET", format!("/api/v1/tasks/{id}")),
            ("GET", "/api/v1/events".to_string()),
        ];
        let client = http_client().build().unwrap();
        for (method, path) in routes {
            let response = client
                .request(method.parse().unwrap(), server.url(&path))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{method} {path}");
            assert!(response.headers().get("www-authenticate").is_some(), "{method} {path}");
        }
    }

    async fn openapi_document_describes_every_endpoint(server) {
        let doc = server.get_anonymous("/api/v1/openapi.json").await.expect(200).body;
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let expected = [
            ("/api/v1/campaigns", &["get", "post"][..]),
            ("/api/v1/campaigns/{id}", &["get", "put", "delete"]),
            ("/api/v1/campaigns/{id}/stats", &["get"]),
            ("/api/v1/campaigns/{id}/contacts", &["get", "post"]),
            ("/api/v1/campaigns/{id}/contacts/import", &["post"]),
            ("/api/v1/contacts/{id}", &["get", "patch"]),
            ("/api/v1/campaigns/{id}/send", &["post"]),
            ("/api/v1/tasks/{id}", &["get"]),
            ("/api/v1/campaigns/{id}/messages", &["get"]),
            ("/api/v1/campaigns/{id}/forecast", &["get"]),
            ("/api/v1/messages/{id}", &["get"]),
            ("/api/v1/consent", &["get"]),
            ("/api/v1/settings", &["get", "put"]),
            ("/api/v1/events", &["get"]),
            ("/webhooks/{carrier}/status", &["post"]),
            ("/webhooks/{carrier}/inbound", &["post"]),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/metrics", &["get"]),
        ];
        for (path, methods) in expected {
            for method in methods {
                let op = &paths[path][method];
                assert!(op.is_object(), "{method} {path} missing");
                if path.starts_with("/api/") {
                    assert_eq!(op["security"], json!([{ "bearer": [] }]), "{method} {path}");
                    assert!(op["responses"]["401"].is_object(), "{method} {path} documents 401");
                }
            }
        }
        assert_eq!(paths.len(), expected.len(), "no undocumented extras: {:?}", paths.keys());
        let schemes = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!((schemes["scheme"].as_str(), schemes["bearerFormat"].as_str()), (Some("bearer"), Some("JWT")));
        let problem = &doc["components"]["schemas"]["Problem"]["properties"];
        for field in ["type", "title", "status", "detail", "errors"] {
            assert!(problem[field].is_object(), "Problem.{field}");
        }
        let import = &paths["/api/v1/campaigns/{id}/contacts/import"]["post"]["requestBody"]["content"];
        assert!(import["multipart/form-data"].is_object());
    }

    async fn docs_page_works_offline(server) {
        let client = http_client().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let redirect = client.get(server.url("/docs")).send().await.unwrap();
        assert_eq!(redirect.status(), 302);
        assert_eq!(redirect.headers()["location"], "/docs/");
        let page = server.get_anonymous("/docs/").await.expect(200);
        assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
        assert!(!page.text.contains("https://"), "the page loads nothing from the internet");
        let init = server.get_anonymous("/docs/swagger-initializer.js").await.expect(200).text;
        assert!(init.contains("/api/v1/openapi.json"), "{init}");
        for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"] {
            let reply = server.get_anonymous(&format!("/docs/{asset}")).await.expect(200);
            assert!(reply.text.len() > 1000, "{asset} is served from the binary");
        }
    }
}
