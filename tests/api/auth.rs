//! Authentication (SPEC §2): every refused token looks the same from outside
//! (401, `WWW-Authenticate: Bearer`, one problem body); valid tokens provision
//! their user; the algorithm and key come from configuration only.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::config::Config;
use herald_tests::serde_json::{Value, json};
use herald_tests::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

const CAMPAIGNS: &str = "/api/v1/campaigns";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// Claims of a valid token for a fresh user.
fn claims() -> Value {
    json!({ "sub": Uuid::now_v7().to_string(), "exp": in_an_hour() })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A token with `alg: none` and an empty signature, built by hand (no library
/// will sign one).
fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

fn token_with(algorithm: Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// Asserts `GET /api/v1/campaigns` with this `Authorization` is refused the one
/// uniform way, and returns the whole response body for comparison.
async fn refused(server: &TestServer, label: &str, authorization: Option<&str>) -> Value {
    let reply = server.get_with_authorization(CAMPAIGNS, authorization).await;
    assert_eq!(reply.status, 401, "{label}: expected 401, got body {}", reply.text);
    let challenge = reply.header("www-authenticate").unwrap_or_default().to_string();
    assert!(
        challenge.starts_with("Bearer"),
        "{label}: WWW-Authenticate is {challenge:?}"
    );
    let body = reply.body.clone();
    reply.expect_problem(401);
    body
}

/// Asserts the request is refused and its body equals `expected` (nothing about
/// the reason leaks).
async fn refused_like(server: &TestServer, expected: &Value, label: &str, authorization: Option<&str>) {
    let body = refused(server, label, authorization).await;
    assert_eq!(&body, expected, "{label}: the refusal reveals something different");
}

async fn accepted(server: &TestServer, label: &str, token: &str) {
    let reply = server.get_with_authorization(CAMPAIGNS, Some(&bearer(token))).await;
    assert_eq!(reply.status, 200, "{label}: expected 200, got body {}", reply.text);
}

on_both_backends! {
    async fn every_refusal_is_401_with_the_same_problem(server) {
        let valid = server.new_user().token;
        let expected = refused(&server, "no Authorization header", None).await;
        let user = Uuid::now_v7().to_string();
        let other_secret = "another-secret-another-secret-another-secret";
        let cases: Vec<(&str, String)> = vec![
            ("Basic scheme", "Basic dXNlcjpwYXNzd29yZA==".into()),
            ("valid token under another scheme", format!("Token {valid}")),
            ("token without a scheme", valid.clone()),
            ("Bearer with no token", "Bearer".into()),
            ("garbage token", bearer("garbage")),
            ("two segments", bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0")),
            ("valid token cut short", bearer(valid.rsplit_once('.').expect("three segments").0)),
            ("tampered signature", bearer(&format!("{valid}x"))),
            (
                "expired beyond the leeway",
                bearer(&hs256_token(SECRET, json!({ "sub": user, "exp": now() - 120 }))),
            ),
            ("wrong secret", bearer(&hs256_token(other_secret, claims()))),
            ("alg none", bearer(&unsigned_token(&claims()))),
            ("HS512 with the right secret", bearer(&token_with(Algorithm::HS512, SECRET.as_bytes(), &claims()))),
            ("missing sub", bearer(&hs256_token(SECRET, json!({ "exp": in_an_hour() })))),
            ("non-UUID sub", bearer(&hs256_token(SECRET, json!({ "sub": "alice", "exp": in_an_hour() })))),
            ("missing exp", bearer(&hs256_token(SECRET, json!({ "sub": user })))),
            (
                "not valid before a time beyond the leeway",
                bearer(&hs256_token(SECRET, json!({ "sub": user, "exp": in_an_hour(), "nbf": now() + 120 }))),
            ),
        ];
        for (label, authorization) in &cases {
            refused_like(&server, &expected, label, Some(authorization)).await;
        }
    }

    async fn valid_token_is_accepted_and_provisions_its_user(server) {
        let user = server.new_user();
        let list = server.get(CAMPAIGNS, &user).await.expect(200);
        assert_eq!(list.body["total"], 0, "{}", list.text);
        // A brand-new `sub`, never seen before, can create straight away.
        let id = server.create_campaign(&user, json!({})).await;
        let list = server.get(CAMPAIGNS, &user).await.expect(200);
        assert_eq!(list.body["campaigns"][0]["id"], id.as_str(), "{}", list.text);
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let reply = server.get_with_authorization(CAMPAIGNS, Some(&format!("bearer {}", user.token))).await;
        reply.expect(200);
    }

    async fn nbf_within_the_leeway_or_past_is_accepted(server) {
        for (label, nbf) in [("nbf in the past", now() - 60), ("nbf 10 s ahead, inside the 30 s leeway", now() + 10)] {
            let token = hs256_token(SECRET, json!({ "sub": Uuid::now_v7().to_string(), "exp": in_an_hour(), "nbf": nbf }));
            accepted(&server, label, &token).await;
        }
    }

    async fn public_endpoints_need_no_token(server) {
        server.get_anonymous("/api/v1/openapi.json").await.expect(200);
        server.get_anonymous("/healthz").await.expect(200);
    }
}

/// Starts a server with extra configuration; `None` when PostgreSQL is unavailable.
async fn start(backend: Backend, configure: impl FnOnce(&mut Config)) -> Option<TestServer> {
    TestServer::start_if_available(backend, configure).await
}

on_both_backends! {
    /// With an identity provider's RSA key configured, only its RS256 tokens pass.
    async fn rs256_public_key(backend: Backend) {
        let Some(server) = start(backend, |c| {
            // An identity provider's key alone, as production configures it: no HS256 secret.
            c.auth.jwt_secret = None;
            c.auth.jwt_public_key = Some(fixture("rsa_public.pem"));
        })
        .await
        else {
            return;
        };
        let id = Uuid::now_v7();
        let user = User {
            id,
            token: signed_token(
                Algorithm::RS256,
                "rsa_private.pem",
                json!({ "sub": id, "exp": in_an_hour() }),
            ),
        };
        accepted(&server, "RS256 from the IdP", &user.token).await;
        server.create_campaign(&user, json!({})).await;

        let expected = refused(&server, "no token", None).await;
        let public_pem = std::fs::read_to_string(fixture("rsa_public.pem")).expect("fixture");
        let cases = [
            (
                "HS256 keyed with the public key (alg confusion)",
                hs256_token(&public_pem, claims()),
            ),
            ("HS256 with the configured secret", hs256_token(SECRET, claims())),
            ("alg none", unsigned_token(&claims())),
            (
                "ES256 from another key",
                signed_token(Algorithm::ES256, "ec_private.pem", claims()),
            ),
        ];
        for (label, token) in &cases {
            refused_like(&server, &expected, label, Some(&bearer(token))).await;
        }
    }

    /// A P-256 key means ES256 tokens.
    async fn es256_public_key(backend: Backend) {
        let Some(server) = start(backend, |c| {
            c.auth.jwt_secret = None;
            c.auth.jwt_public_key = Some(fixture("ec_public.pem"));
        })
        .await
        else {
            return;
        };
        accepted(
            &server,
            "ES256 from the IdP",
            &signed_token(Algorithm::ES256, "ec_private.pem", claims()),
        )
        .await;

        let expected = refused(&server, "no token", None).await;
        let public_pem = std::fs::read_to_string(fixture("ec_public.pem")).expect("fixture");
        let cases = [
            (
                "HS256 keyed with the public key (alg confusion)",
                hs256_token(&public_pem, claims()),
            ),
            ("HS256 with the configured secret", hs256_token(SECRET, claims())),
            (
                "RS256 from another key",
                signed_token(Algorithm::RS256, "rsa_private.pem", claims()),
            ),
            ("alg none", unsigned_token(&claims())),
        ];
        for (label, token) in &cases {
            refused_like(&server, &expected, label, Some(&bearer(token))).await;
        }
    }

    /// With `auth.issuer` and `auth.audience` set, both claims are required and checked.
    async fn issuer_and_audience(backend: Backend) {
        let Some(server) = start(backend, |c| {
            c.auth.issuer = Some("https://id.example".into());
            c.auth.audience = Some("herald".into());
        })
        .await
        else {
            return;
        };
        let with = |extra: Value| {
            let mut claims = claims();
            if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
                claims.extend(extra.clone());
            }
            hs256_token(SECRET, claims)
        };
        accepted(
            &server,
            "right iss and aud",
            &with(json!({ "iss": "https://id.example", "aud": "herald" })),
        )
        .await;

        let expected = refused(&server, "no token", None).await;
        let cases = [
            (
                "wrong iss",
                with(json!({ "iss": "https://evil.example", "aud": "herald" })),
            ),
            ("missing iss", with(json!({ "aud": "herald" }))),
            (
                "wrong aud",
                with(json!({ "iss": "https://id.example", "aud": "someone-else" })),
            ),
            ("missing aud", with(json!({ "iss": "https://id.example" }))),
            ("neither", with(json!({}))),
        ];
        for (label, token) in &cases {
            refused_like(&server, &expected, label, Some(&bearer(token))).await;
        }
    }

    /// RFC 7519 §4.1.3: `aud` may be a list; the token is for Herald when the list
    /// names it.
    async fn audience_list(backend: Backend) {
        let Some(server) = start(backend, |c| c.auth.audience = Some("herald".into())).await else {
            return;
        };
        let sub = Uuid::now_v7();
        let token = hs256_token(
            SECRET,
            json!({ "sub": sub, "exp": in_an_hour(), "aud": ["billing", "herald"] }),
        );
        accepted(&server, "aud list naming herald", &token).await;
        let token = hs256_token(
            SECRET,
            json!({ "sub": sub, "exp": in_an_hour(), "aud": ["billing", "crm"] }),
        );
        let expected = refused(&server, "no token", None).await;
        refused_like(&server, &expected, "aud list without herald", Some(&bearer(&token))).await;
    }
}
