//! Talking to a Herald over real HTTP: the in-process [`crate::TestServer`] and
//! the `herald serve` processes of the pipeline tests alike.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{LOG_WEBHOOK_SECRET_HEADER, eventually, hs256_token, in_an_hour};

/// A user of the API with its bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub token: String,
}

impl User {
    /// A new user with a token signed with `secret`.
    pub fn new(secret: &str) -> Self {
        let id = Uuid::now_v7();
        let token = hs256_token(secret, json!({ "sub": id.to_string(), "exp": in_an_hour() }));
        Self { id, token }
    }
}

/// A response with its body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts a problem document with this status; returns its `errors[].field`.
    #[track_caller]
    pub fn expect_problem(self, status: u16) -> Vec<String> {
        let reply = self.expect(status);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{}",
            reply.text
        );
        assert_eq!(reply.body["status"], status, "{}", reply.text);
        assert!(
            reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            reply.text
        );
        reply.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An HTTP client of one Herald at `base`.
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: String) -> Self {
        let http = http_client().build().expect("HTTP client");
        Self { base, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// An anonymous POST to `path`, to finish with headers and a body and
    /// pass to [`Client::send_request`].
    pub fn client_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path, None)
    }

    /// Sends `request`; panics when the server cannot be reached.
    pub async fn send_request(&self, request: reqwest::RequestBuilder) -> Reply {
        self.try_send(request).await.expect("request reaches the server")
    }

    /// Sends `request`; `None` when the server cannot be reached (it may be down on purpose).
    pub async fn try_send(&self, request: reqwest::RequestBuilder) -> Option<Reply> {
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Some(Reply {
            status,
            headers,
            text,
            body,
        })
    }

    pub fn request(&self, method: reqwest::Method, path: &str, user: Option<&User>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match user {
            Some(user) => request.bearer_auth(&user.token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, user: &User) -> Reply {
        self.send_request(self.request(reqwest::Method::GET, path, Some(user)))
            .await
    }

    pub async fn get_anonymous(&self, path: &str) -> Reply {
        self.send_request(self.request(reqwest::Method::GET, path, None)).await
    }

    /// GET with a raw `Authorization` header value (or none).
    pub async fn get_with_authorization(&self, path: &str, authorization: Option<&str>) -> Reply {
        let mut request = self.request(reqwest::Method::GET, path, None);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        self.send_request(request).await
    }

    /// GET with one extra header (for oversized header sections).
    pub async fn get_with_header(&self, path: &str, user: &User, name: &str, value: &str) -> Reply {
        self.send_request(self.request(reqwest::Method::GET, path, Some(user)).header(name, value))
            .await
    }

    pub async fn post(&self, path: &str, user: &User, body: Value) -> Reply {
        self.send_request(self.request(reqwest::Method::POST, path, Some(user)).json(&body))
            .await
    }

    /// POST without a token (webhooks).
    pub async fn post_anonymous(&self, path: &str, body: Value) -> Reply {
        self.send_request(self.request(reqwest::Method::POST, path, None).json(&body))
            .await
    }

    /// A signed form POST, as Twilio's webhooks send it.
    pub async fn post_form(&self, path: &str, body: String, signature: &str) -> Reply {
        let request = self
            .request(reqwest::Method::POST, path, None)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body);
        self.send_request(request).await
    }

    /// POST of JSON to a log-carrier webhook, with its shared secret when given.
    pub async fn post_webhook(&self, path: &str, body: Value, secret: Option<&str>) -> Reply {
        let mut request = self.request(reqwest::Method::POST, path, None).json(&body);
        if let Some(secret) = secret {
            request = request.header(LOG_WEBHOOK_SECRET_HEADER, secret);
        }
        self.send_request(request).await
    }

    pub async fn post_anonymous_raw(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send_request(self.request(reqwest::Method::POST, path, None).body(body))
            .await
    }

    pub async fn put(&self, path: &str, user: &User, body: Value) -> Reply {
        self.send_request(self.request(reqwest::Method::PUT, path, Some(user)).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, user: &User, body: Value) -> Reply {
        self.send_request(self.request(reqwest::Method::PATCH, path, Some(user)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str, user: &User) -> Reply {
        self.send_request(self.request(reqwest::Method::DELETE, path, Some(user)))
            .await
    }

    /// Sends raw bytes as a JSON body (for malformed and oversized bodies).
    pub async fn send_raw(&self, method: reqwest::Method, path: &str, user: &User, body: Vec<u8>) -> Reply {
        let request = self
            .request(method, path, Some(user))
            .header("content-type", "application/json")
            .body(body);
        self.send_request(request).await
    }

    /// Uploads `bytes` as the multipart field `field`.
    pub async fn upload(&self, path: &str, user: &User, field: &str, bytes: Vec<u8>) -> Reply {
        let part = reqwest::multipart::Part::bytes(bytes).file_name("contacts.csv");
        let form = reqwest::multipart::Form::new().part(field.to_string(), part);
        self.send_request(self.request(reqwest::Method::POST, path, Some(user)).multipart(form))
            .await
    }

    /// Creates a campaign with the given extra fields and returns its id.
    pub async fn create_campaign(&self, user: &User, extra: Value) -> String {
        let mut body = json!({ "name": "Campaign", "message_template": "Hi {{name}}" });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let reply = self.post("/api/v1/campaigns", user, body).await.expect(201);
        reply.body["id"].as_str().expect("id").to_string()
    }

    /// A campaign's `GET /stats` body.
    pub async fn stats(&self, user: &User, campaign: &str) -> Value {
        self.get(&format!("/api/v1/campaigns/{campaign}/stats"), user)
            .await
            .expect(200)
            .body
    }

    /// Waits until the campaign has no pending message and `sent + failed`
    /// reaches `expected`; returns the stats.
    pub async fn wait_settled(&self, user: &User, campaign: &str, expected: u64, timeout: Duration) -> Value {
        eventually(&format!("{expected} final messages in {campaign}"), timeout, || async {
            let stats = self.stats(user, campaign).await;
            let done = stats["messages_sent"].as_u64()? + stats["messages_failed"].as_u64()?;
            (done >= expected && stats["messages_pending"] == 0).then_some(stats)
        })
        .await
    }

    /// Moves a campaign through PUT status changes.
    pub async fn set_status(&self, user: &User, id: &str, status: &str) -> Reply {
        self.put(&format!("/api/v1/campaigns/{id}"), user, json!({ "status": status }))
            .await
    }

    /// Creates an active campaign with `extra` fields and `contacts`; returns its id.
    pub async fn active_campaign(&self, user: &User, extra: Value, contacts: &[String]) -> String {
        let id = self.create_campaign(user, extra).await;
        self.add_contacts(user, &id, contacts).await;
        self.set_status(user, &id, "active").await.expect(200);
        id
    }

    /// Adds contacts named `Ada <n>` living in Paris, in requests of 5,000.
    pub async fn add_contacts(&self, user: &User, campaign: &str, phones: &[String]) {
        for chunk in phones.chunks(5_000) {
            let contacts: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, p)| json!({ "phone_number": p, "name": format!("Ada {i}"), "attributes": { "city": "Paris" } }))
                .collect();
            let path = format!("/api/v1/campaigns/{campaign}/contacts");
            self.post(&path, user, json!({ "contacts": contacts }))
                .await
                .expect(201);
        }
    }

    /// `POST /send`, expecting 202; returns the answer.
    pub async fn send_campaign(&self, user: &User, campaign: &str) -> Value {
        self.post(&format!("/api/v1/campaigns/{campaign}/send"), user, json!({}))
            .await
            .expect(202)
            .body
    }

    /// Starts reading the user's Server-Sent Events; events arrive in the log.
    pub async fn listen(&self, user: &User) -> EventLog {
        let log = EventLog::default();
        let response = self
            .request(reqwest::Method::GET, "/api/v1/events", Some(user))
            .send()
            .await
            .expect("event stream opens");
        assert_eq!(response.status().as_u16(), 200);
        let events = log.events.clone();
        tokio::spawn(async move {
            let mut response = response;
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let data: String = frame
                        .lines()
                        .filter_map(|line| line.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect::<Vec<_>>()
                        .join("\n");
                    if let Ok(event) = serde_json::from_str::<Value>(&data) {
                        events.lock().unwrap().push(event);
                    }
                }
            }
        });
        log
    }
}

/// `n` distinct New York numbers, `+1212555<offset…>` (at most 10,000).
pub fn phones(n: usize, offset: usize) -> Vec<String> {
    (offset..offset + n).map(|i| format!("+1212555{i:04}")).collect()
}

/// CloudEvents received over SSE.
#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl EventLog {
    pub fn all(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Events of CloudEvents `type` (e.g. `herald.message.sent`).
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.all().into_iter().filter(|e| e["type"] == kind).collect()
    }
}

/// An HTTP client builder for tests. The workspace builds reqwest without a
/// default TLS provider (Herald installs ring for plugin HTTP), so install it here too.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
