//! What a plugin instance may touch: Herald's host interface, and WASI with an
//! empty context (no files, environment or sockets; stdout and stderr captured
//! into the log).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1_0::carrier_world::herald::plugin::http;
use super::bindings::v0_1_0::{host, types};
use super::http::{PluginHttp, Reach};
use super::{Footprint, PluginLimits};

/// Captured guest output per call; more is dropped.
const OUTPUT_CAPACITY: usize = 64 * 1024;

/// A loaded plugin's name and settings, shared by all its instances.
#[derive(Debug, Clone)]
pub struct PluginIdentity {
    pub name: String,
    /// The plugin's own settings, readable through `config-get`.
    pub settings: BTreeMap<String, String>,
}

/// The data of one call's `Store`.
pub struct HostState {
    identity: Arc<PluginIdentity>,
    http: Option<Arc<PluginHttp>>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// When the call started, and how long of it was spent waiting in host
    /// HTTP: the CPU deadline counts guest execution only.
    started: Instant,
    host_wait: Duration,
    /// How far this call's HTTP requests got (the furthest of all of them).
    reach: Reach,
}

impl HostState {
    /// A call's state; its store may hold `footprint` and no more.
    pub fn new(
        identity: Arc<PluginIdentity>,
        http: Option<Arc<PluginHttp>>,
        limits: &PluginLimits,
        footprint: &Footprint,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        Self {
            identity,
            http,
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes())
                .instances(footprint.core_instances as usize)
                .tables(footprint.tables as usize)
                .memories(footprint.memories as usize)
                .trap_on_grow_failure(true)
                .build(),
            stdout,
            stderr,
            started: Instant::now(),
            host_wait: Duration::ZERO,
            reach: Reach::NotSent,
        }
    }

    /// Time of this call spent outside host waits (guest code, instantiation).
    pub fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.host_wait)
    }

    /// How far the call's HTTP requests got: whether a carrier may have seen it.
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// Logs what the guest wrote to stdout and stderr during the call.
    pub fn flush_output(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(plugin = %self.identity.name, stream, "{line}");
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    async fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        let plugin = self.identity.name.as_str();
        match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    async fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.identity.settings.get(&key).cloned())
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(chrono::Utc::now().timestamp_millis().max(0) as u64)
    }
}

impl http::Host for HostState {
    async fn fetch(&mut self, request: http::Request) -> wasmtime::Result<Result<http::Response, http::Error>> {
        let Some(client) = self.http.clone() else {
            return Ok(Err(http::Error::Denied("this plugin has no HTTP access".into())));
        };
        let url = request.url.clone();
        let waiting = Instant::now();
        let (result, reach) = client.fetch(request).await;
        self.host_wait += waiting.elapsed();
        self.reach = self.reach.max(reach);
        if let Err(e) = &result {
            tracing::debug!(plugin = %self.identity.name, %url, error = ?e, "http-fetch refused or failed");
        }
        Ok(result)
    }
}
