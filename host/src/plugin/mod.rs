//! The plugin runtime: loads WebAssembly components built against
//! `herald:plugin` (see `sdk/wit/`, a folder per version) and calls them
//! under host-enforced limits.
//!
//! Knows neither storage nor the HTTP API: it is handed a plugin and a call,
//! and returns a result. Every call gets a fresh `Store` (and so a fresh
//! instance from the plugin's `InstancePre`) with its CPU deadline set before
//! any guest code runs; a trap or exhausted limit fails that call only.

mod bindings;
pub mod builtin;
pub mod carrier;
mod host;
pub mod http;
mod registry;
pub mod template;
mod world;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use host::PluginIdentity;
pub use registry::Plugins;
pub use world::SUPPORTED_VERSIONS;

/// Bytes of each instance slot's memory and tables reset in place on reuse.
const KEEP_RESIDENT: usize = 1 << 20;
/// Decommits (of memory beyond that) done together, to share their TLB flush.
const DECOMMIT_BATCH: usize = 16;

/// How often the epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every plugin call, from `[plugins]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Guest execution time per call, in milliseconds (epoch interruption).
    pub call_timeout_ms: u64,
    /// Linear memory per instance, in MiB.
    pub memory_mb: u64,
    /// Time a single `http-fetch` may take, in milliseconds.
    pub http_timeout_ms: u64,
    /// Largest HTTP response body handed to a plugin, in bytes.
    pub max_response_bytes: u64,
    /// Optional fuel per call (deterministic instruction budget); unset = off.
    pub fuel: Option<u64>,
    /// Instances alive at once across all plugins (pooling allocator slots).
    pub max_instances: u32,
    /// Consecutive trapping calls after which a plugin is tripped (circuit breaker).
    pub trip_after_traps: u32,
    /// How long a tripped plugin refuses calls before one is let through again.
    pub trip_cooldown_ms: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout_ms: 1_000,
            memory_mb: 32,
            http_timeout_ms: 10_000,
            max_response_bytes: 1024 * 1024,
            fuel: None,
            max_instances: 256,
            trip_after_traps: 5,
            trip_cooldown_ms: 30_000,
        }
    }
}

impl PluginLimits {
    fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) * 1024 * 1024
    }

    fn deadline_ticks(&self) -> u64 {
        ticks(Duration::from_millis(self.call_timeout_ms))
    }
}

/// Epoch ticks covering `time`, at least one.
fn ticks(time: Duration) -> u64 {
    (time.as_millis() as u64).div_ceil(EPOCH_TICK.as_millis() as u64).max(1)
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The component cannot be used by this host (wrong world, unsupported
    /// version, not a component, missing imports).
    #[error("plugin {plugin} cannot be loaded: {reason}")]
    Load { plugin: String, reason: String },
    /// The call trapped, ran out of time or memory, or panicked. Retryable.
    #[error("plugin trap: {0}")]
    Trap(String),
    /// The plugin trapped too often in a row; calls wait for its cool-down.
    #[error("plugin {plugin} is tripped after repeated traps; retry in {retry_in:?}")]
    Tripped { plugin: String, retry_in: Duration },
    #[error("plugin runtime: {0}")]
    Runtime(String),
}

/// The shared engine: compiled code cache, pooling allocator, epoch ticker.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    limits: PluginLimits,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginRuntime {
    pub fn new(limits: PluginLimits) -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances * 4)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 4)
            .max_memory_size(limits.memory_bytes())
            // Reset the little memory a call touches with memset (only resident
            // pages, found by PAGEMAP_SCAN where the kernel has it) instead of
            // madvise: a fresh instance per call otherwise pays a syscall, a TLB
            // shootdown across cores and page faults every time.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(DECOMMIT_BATCH);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(limits.fuel.is_some())
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Runtime(format!("{e:#}")))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone());
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                limits,
                stop_ticker,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.inner.limits
    }
}

/// Advances the engine's epoch every tick; guest code past its deadline traps.
/// A plain thread, so a busy async runtime cannot delay deadlines.
fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("herald-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawn the epoch ticker thread");
}

/// Describes a trap for logs and errors, with the guest backtrace when there is one.
fn describe_trap(error: &wasmtime::Error) -> String {
    let mut text = format!("{error:#}");
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        text.push_str(&format!("\nguest backtrace:\n{backtrace}"));
    }
    text
}
