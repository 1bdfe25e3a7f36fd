//! Helpers for the tests that run the real `herald` binary (`cli.rs`,
//! `examples.rs`): a sandbox directory with a clean environment, finished
//! runs, a running `herald serve` and a minimal HTTP client.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A scratch directory to run `herald` in; its data directory is `data/` inside.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// `herald` with a clean environment: no inherited `HERALD_*` or `RUST_LOG`,
    /// no colours, `HERALD_DATA_DIR` pointing into the sandbox.
    pub fn herald(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command.args(args).current_dir(self.path()).stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(name);
            }
        }
        command
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("HERALD_DATA_DIR", self.data_dir());
        command
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.herald(args);
        command.envs(env.iter().copied());
        Run::from(command.output().expect("herald runs"))
    }

    /// Starts `herald serve` on `port`; the returned guard kills it if the test fails.
    pub fn serve(&self, port: u16) -> Server {
        self.serve_with(port, &[])
    }

    /// Starts `herald serve <args>` on `port` (e.g. `--config <file>`).
    pub fn serve_with(&self, port: u16, args: &[&str]) -> Server {
        let mut command = self.herald(&[&["serve"], args].concat());
        command
            .env("HERALD_SERVER__BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("herald serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            port,
            lines,
            seen: Vec::new(),
        }
    }
}

/// The outcome of a finished `herald` command.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.success,
            "herald failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn fails(self) -> String {
        assert!(
            !self.success,
            "herald should have failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stderr
    }
}

/// A running `herald serve`, killed on drop unless it already exited.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// Waits (until `deadline`) for a stderr line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?} in time; log:\n{}", self.log())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("herald exited before logging {needle:?}; log:\n{}", self.log())
                }
            }
        }
    }

    /// The ready-to-use token logged at start, once the server answers HTTP.
    pub fn wait_ready(&mut self) -> String {
        self.wait_ready_within(Duration::from_secs(15))
    }

    /// [`Server::wait_ready`] with a longer start-up allowance (plugins to compile).
    pub fn wait_ready_within(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let line = self.wait_for_line("ready-to-use bearer token", deadline);
        let token = line
            .split_whitespace()
            .find(|word| word.starts_with("eyJ") && word.matches('.').count() == 2)
            .unwrap_or_else(|| panic!("no JWT in {line:?}"))
            .to_string();
        while http_get(self.port, "/healthz", None).map(|(status, _)| status) != Ok(200) {
            assert!(
                Instant::now() < deadline,
                "herald never answered /healthz; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        token
    }

    /// Sends SIGTERM and asserts a clean exit within 10 s.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            assert!(Instant::now() < deadline, "herald did not stop within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        assert!(
            exit.success(),
            "herald exited with {exit} after SIGTERM; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        self.seen.join("\n")
    }

    #[track_caller]
    pub fn assert_campaigns_status(&self, token: &str, expected: u16) {
        let (status, response) = http_get(self.port, "/api/v1/campaigns", Some(token)).expect("request");
        assert_eq!(status, expected, "GET /api/v1/campaigns: {response}");
    }
}

/// A minimal blocking HTTP/1.1 GET: the status code and the raw response.
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    Ok((status, response))
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}
