//! The real `herald` binary (SPEC §2, §7): help, configuration errors, `migrate`,
//! `token`, and the first run of `serve` (generated secret, logged token,
//! graceful shutdown on SIGTERM, the secret kept across restarts).
//!
//! Each test runs in its own temporary directory (so no `config/default.toml` is
//! found) with every inherited `HERALD_*` variable removed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use uuid::Uuid;

use common::{Run, Sandbox, free_port, http_get};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// The claims of a JWT, without checking its signature.
fn payload(token: &str) -> Value {
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "not a JWT: {token:?}");
    let json = URL_SAFE_NO_PAD.decode(segments[1]).expect("base64url payload");
    serde_json::from_slice(&json).expect("JSON payload")
}

#[test]
fn help_describes_every_command_and_its_options() {
    let sandbox = Sandbox::new();
    let top = sandbox.run(&["--help"], &[]).ok().stdout;
    for word in ["serve", "migrate", "token", "--config"] {
        assert!(top.contains(word), "herald --help lacks {word}:\n{top}");
    }
    let cases: [(&str, &[&str]); 3] = [
        ("serve", &["--role", "all", "api", "dispatcher", "--no-migrate"]),
        ("token", &["--sub", "--ttl"]),
        ("migrate", &["migrations"]),
    ];
    for (command, words) in cases {
        let help = sandbox.run(&[command, "--help"], &[]).ok().stdout;
        for word in words {
            assert!(help.contains(word), "herald {command} --help lacks {word}:\n{help}");
        }
    }
}

#[test]
fn bad_bind_address_stops_start_up_naming_the_key() {
    let sandbox = Sandbox::new();
    for command in ["migrate", "serve"] {
        let stderr = sandbox
            .run(&[command], &[("HERALD_SERVER__BIND", "not-an-address")])
            .fails();
        assert!(
            stderr.to_lowercase().contains("server.bind"),
            "herald {command}: {stderr}"
        );
    }
}

/// The key is named as written in `config/default.toml` (or as the variable that
/// was set), and the reason is said once.
#[test]
fn config_errors_name_the_key_as_documented_and_once() {
    let sandbox = Sandbox::new();
    let stderr = sandbox
        .run(&["migrate"], &[("HERALD_SERVER__BIND", "not-an-address")])
        .fails();
    assert!(
        stderr.contains("server.bind") || stderr.contains("HERALD_SERVER__BIND"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("socket address").count(), 1, "reason repeated: {stderr}");

    std::fs::write(sandbox.path().join("bad.toml"), "[server]\nbind = \"nope\"\n").expect("write");
    let stderr = sandbox.run(&["--config", "bad.toml", "migrate"], &[]).fails();
    assert!(stderr.contains("server.bind"), "{stderr}");
    assert_eq!(stderr.matches("socket address").count(), 1, "reason repeated: {stderr}");
}

#[test]
fn short_jwt_secret_stops_start_up_naming_the_key() {
    let sandbox = Sandbox::new();
    let stderr = sandbox
        .run(&["migrate"], &[("HERALD_AUTH__JWT_SECRET", "short")])
        .fails();
    assert!(stderr.contains("auth.jwt_secret"), "{stderr}");
}

#[test]
fn split_roles_without_nats_say_what_is_missing() {
    let sandbox = Sandbox::new();
    for role in ["api", "dispatcher"] {
        let stderr = sandbox.run(&["serve", "--role", role], &[]).fails();
        assert!(stderr.contains("bus.nats_url"), "--role {role}: {stderr}");
    }
}

#[test]
fn a_bad_rule_set_stops_start_up_naming_the_rule() {
    let sandbox = Sandbox::new();
    let rules = "version = \"mine\"\n\n[[rules]]\nid = \"night-owls\"\ntitle = \"t\"\nsource = \"s\"\n\
                 effective = 2026-01-01\napplies_to = [\"*\"]\nhours = { default = \"21:00-08:00\" }\n";
    std::fs::write(sandbox.path().join("rules.toml"), rules).expect("write");
    let stderr = sandbox
        .run(&["serve"], &[("HERALD_COMPLIANCE__RULES", "rules.toml")])
        .fails();
    assert!(
        stderr.contains("compliance.rules") && stderr.contains("night-owls"),
        "{stderr}"
    );
    let stderr = sandbox
        .run(&["serve"], &[("HERALD_COMPLIANCE__RULES", "absent-rules.toml")])
        .fails();
    assert!(stderr.contains("absent-rules.toml"), "{stderr}");
}

#[test]
fn missing_config_file_is_named() {
    let sandbox = Sandbox::new();
    let stderr = sandbox.run(&["--config", "missing.toml", "migrate"], &[]).fails();
    assert!(stderr.contains("missing.toml"), "{stderr}");
    let stderr = sandbox.run(&["migrate"], &[("HERALD_CONFIG", "absent.toml")]).fails();
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[test]
fn migrate_creates_the_sqlite_database_in_a_fresh_data_dir() {
    let sandbox = Sandbox::new();
    assert!(!sandbox.data_dir().exists());
    sandbox.run(&["migrate"], &[]).ok();
    assert!(sandbox.data_dir().join("herald.db").is_file());
    // Applying again is a no-op, not an error.
    sandbox.run(&["migrate"], &[]).ok();
}

#[test]
fn token_prints_a_jwt_for_the_sub_with_the_ttl() {
    let sandbox = Sandbox::new();
    let sub = Uuid::now_v7().to_string();
    let before = now();
    let out = sandbox.run(&["token", "--sub", &sub, "--ttl", "1h"], &[]).ok().stdout;
    let token = out.trim();
    let claims = payload(token);
    assert_eq!(claims["sub"], sub.as_str(), "{claims}");
    let exp = claims["exp"].as_u64().expect("numeric exp");
    assert!(
        (before + 3600..=now() + 3600).contains(&exp),
        "exp {exp} is not about now + 1h ({before})"
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("base64url header"),
    )
    .expect("JSON header");
    assert_eq!(header["alg"], "HS256");
}

#[test]
fn token_refuses_a_sub_that_is_not_a_uuid() {
    let sandbox = Sandbox::new();
    let stderr = sandbox.run(&["token", "--sub", "not-a-uuid"], &[]).fails();
    assert!(stderr.contains("--sub"), "{stderr}");
}

#[test]
fn first_serve_needs_no_setup_and_stops_gracefully() {
    let sandbox = Sandbox::new();
    let secret_file = sandbox.data_dir().join("jwt_secret");

    let mut first = sandbox.serve(free_port());
    let token = first.wait_ready();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .expect("secret kept")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "jwt_secret mode {mode:o}");
    }
    let secret = std::fs::read_to_string(&secret_file).expect("secret kept");
    first.assert_campaigns_status(&token, 200);
    first.assert_campaigns_status("not-a-token", 401);
    // `herald token` signs with the same kept secret.
    let sub = Uuid::now_v7().to_string();
    let cli_token = sandbox.run(&["token", "--sub", &sub], &[]).ok().stdout;
    first.assert_campaigns_status(cli_token.trim(), 200);
    first.terminate();
    assert!(
        first.log().contains("generated a JWT secret"),
        "first start should say it generated the secret:\n{}",
        first.log()
    );

    let mut second = sandbox.serve(free_port());
    let second_token = second.wait_ready();
    assert_eq!(std::fs::read_to_string(&secret_file).expect("secret kept"), secret);
    second.assert_campaigns_status(&token, 200);
    assert_eq!(payload(&second_token)["sub"], payload(&token)["sub"], "same first user");
    second.terminate();
    assert!(
        !second.log().contains("generated a JWT secret"),
        "second start generated a new secret:\n{}",
        second.log()
    );
}

/// SPEC §9: a second `herald serve` on the same SQLite file is refused, naming
/// the lock file; the lock goes with its process, even after kill -9.
#[test]
fn a_second_serve_on_the_same_sqlite_file_is_refused_until_the_first_is_gone() {
    let sandbox = Sandbox::new();
    let mut first = sandbox.serve(free_port());
    let token = first.wait_ready();

    let mut second = sandbox.herald(&["serve"]);
    second.env("HERALD_SERVER__BIND", format!("127.0.0.1:{}", free_port()));
    let refused = Run::from(second.output().expect("herald runs")).fails();
    let lock = sandbox.data_dir().join("herald.db.lock");
    assert!(
        refused.contains("another Herald process") && refused.contains(&lock.display().to_string()),
        "the refusal should name the lock file and why:\n{refused}"
    );
    first.assert_campaigns_status(&token, 200);
    let migrate = sandbox.run(&["migrate"], &[]).fails();
    assert!(migrate.contains("another Herald process"), "{migrate}");

    // SIGKILL: no clean-up runs, yet the OS releases the lock with the process.
    drop(first);
    let mut third = sandbox.serve(free_port());
    let token = third.wait_ready();
    third.assert_campaigns_status(&token, 200);
    third.terminate();
}

/// A secret file left empty (a crash between creating and writing it, a bad
/// edit) must not become an empty HMAC key that anyone can sign with.
#[test]
fn an_empty_kept_secret_is_never_used_as_a_key() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.data_dir()).expect("data dir");
    std::fs::write(sandbox.data_dir().join("jwt_secret"), "").expect("empty secret");
    let sub = Uuid::now_v7();
    let token = sandbox.run(&["token", "--sub", &sub.to_string()], &[]);
    assert!(
        !token.success,
        "herald token signed with an empty key: {}",
        token.stdout
    );

    let mut server = sandbox.serve(free_port());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match server
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) if line.contains("ready-to-use bearer token") => break,
            Ok(line) => server.seen.push(line),
            Err(RecvTimeoutError::Disconnected) => {
                let exit = server.child.wait().expect("wait");
                assert!(!exit.success(), "herald serve exited 0");
                return;
            }
            Err(RecvTimeoutError::Timeout) => panic!("herald serve neither started nor failed; log:\n{}", server.log()),
        }
    }
    // It started anyway: it must not have kept the empty key.
    while http_get(server.port, "/healthz", None).map(|(status, _)| status) != Ok(200) {
        assert!(Instant::now() < deadline, "herald never answered /healthz");
        std::thread::sleep(Duration::from_millis(50));
    }
    let claims = serde_json::json!({ "sub": sub, "exp": now() + 3600 });
    let key = jsonwebtoken::EncodingKey::from_secret(b"");
    let forged = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign");
    server.assert_campaigns_status(&forged, 401);
}

#[test]
fn plugin_inspect_describes_a_component_and_whether_it_loads() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&["plugin", "inspect", "builtin:default"], &[]);
    assert!(run.success, "{}", run.stderr);
    for expected in [
        "world:    template-plugin",
        "herald:plugin@0.1.0",
        "exports:  herald:plugin/template@0.1.0",
        "code:     compiled",
        "instance: ",
        "loadable: yes",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
    // The compiled code was kept in the data directory: the next run maps it.
    let again = sandbox.run(&["plugin", "inspect", "builtin:default"], &[]);
    assert!(
        again.stdout.contains("code:     mapped from the code cache"),
        "{}",
        again.stdout
    );
    assert!(again.stdout.contains("loadable: yes"), "{}", again.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sandbox.data_dir()).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "the data directory the cache created is owner-only"
        );
    }
    // A component a limit refuses is reported, with the limit, not loaded.
    let huge = herald_tests::fixtures::HOSTILE_HUGE_MEMORY;
    let refused = sandbox.run(&["plugin", "inspect", huge], &[]);
    assert!(refused.success, "{}", refused.stderr);
    let verdict = refused
        .stdout
        .lines()
        .find(|l| l.starts_with("loadable:"))
        .unwrap_or_default();
    assert!(
        verdict.starts_with("loadable: no") && verdict.contains("memory"),
        "{}",
        refused.stdout
    );
    let junk = sandbox.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let run = sandbox.run(&["plugin", "inspect", junk.to_str().unwrap()], &[]);
    assert!(!run.success);
    assert!(run.stderr.contains("not a WebAssembly component"), "{}", run.stderr);
}

#[test]
fn plugin_send_delivers_one_message_through_a_configured_carrier() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(
        &["plugin", "send", "log", "--to", "(555) 123-0001", "--body", "Hi Ada"],
        &[],
    );
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout.contains("+15551230001"),
        "normalized recipient: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("accepted: carrier message id \"log-"),
        "{}",
        run.stdout
    );
    let unknown = sandbox.run(&["plugin", "send", "nope", "--to", "5551230001", "--body", "x"], &[]);
    assert!(!unknown.success);
    assert!(unknown.stderr.contains("no carrier \"nope\""), "{}", unknown.stderr);
}

/// Resident memory of a process, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Streams `bytes` of spaces to the log carrier's status webhook with no declared
/// length, as fast as the server takes them; returns the answer and what was written.
fn post_chunked(port: u16, bytes: u64) -> (String, u64) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = stream.try_clone().expect("clone");
    reader.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let answer = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    write!(
        stream,
        "POST /webhooks/log/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         X-Herald-Webhook-Secret: s3cret-for-the-test\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent: u64 = 0;
    while sent < bytes {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&frame).is_err() {
            break;
        }
        sent += chunk.len() as u64;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    (answer.join().expect("reader"), sent)
}

#[test]
fn a_chunked_webhook_body_is_refused_at_its_limit_not_buffered() {
    let sandbox = Sandbox::new();
    let config = sandbox.path().join("herald.toml");
    std::fs::write(
        &config,
        "[[carriers]]\nname = \"log\"\nplugin = \"builtin:log\"\ndefault = true\n\
         [carriers.settings]\nwebhook_secret = \"s3cret-for-the-test\"\n",
    )
    .expect("config written");
    let port = free_port();
    let mut command = sandbox.herald(&["serve", "--config", config.to_str().unwrap()]);
    command
        .env("HERALD_SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("herald serve starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/healthz", None).map(|(status, _)| status) != Ok(200) {
        assert!(Instant::now() < deadline, "herald never answered /healthz");
        std::thread::sleep(Duration::from_millis(50));
    }
    // One oversized request first: what any first request allocates is not
    // what the big one costs.
    let (warm_up, _) = post_chunked(port, 4 * 1024 * 1024);
    assert!(warm_up.starts_with("HTTP/1.1 413"), "{warm_up:?}");
    let before = rss_kib(child.id());
    let (response, sent) = post_chunked(port, 512 * 1024 * 1024);
    let after = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("chunked webhook: {sent} bytes offered, RSS {before} KiB → {after} KiB");
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "413 at the limit, after {sent} bytes: {response:?}"
    );
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
