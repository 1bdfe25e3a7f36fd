//! The plugin runtime: loads WebAssembly components built against
//! `herald:plugin` (see `sdk/wit/`, a folder per version) and calls them
//! under host-enforced limits.
//!
//! Knows neither storage nor the HTTP API: it is handed a plugin and a call,
//! and returns a result. Every call gets a fresh `Store` (and so a fresh
//! instance from the plugin's `InstancePre`) with its CPU deadline set before
//! any guest code runs; a trap or exhausted limit fails that call only.
//!
//! What a call takes from the instance pool is measured per plugin at load
//! (its [`Footprint`]); a call first reserves that much (see [`Slots`]), so a
//! full pool makes calls wait rather than fail. Compiled code is kept on disk
//! (`code_cache.rs`).

mod bindings;
pub mod builtin;
pub mod carrier;
mod code_cache;
mod host;
pub mod http;
mod registry;
pub mod template;
mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use code_cache::CodeOrigin;
pub use host::PluginIdentity;
pub use registry::Plugins;
pub use world::SUPPORTED_VERSIONS;

/// Bytes of each instance slot's memory and tables reset in place on reuse.
const KEEP_RESIDENT: usize = 1 << 20;
/// Decommits (of memory beyond that) done together, to share their TLB flush.
const DECOMMIT_BATCH: usize = 16;

/// Pool slots per concurrent call (`max_instances`): a call of a Rust plugin
/// takes 2–4 core instances, one of componentize-py 14 (38 with `--stub-wasi`).
/// Slots are address space, not memory: only what calls touch becomes resident.
const CORE_INSTANCES_PER_CALL: u32 = 16;
const MEMORIES_PER_CALL: u32 = 2;

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
    /// Plugin calls running at once across all plugins. The pool holds this many
    /// component instances, 16 core instances and 2 memories per call; a call
    /// that finds too few free waits for them.
    pub max_instances: u32,
    /// Consecutive trapping calls after which a plugin is tripped (circuit breaker).
    pub trip_after_traps: u32,
    /// How long a tripped plugin refuses calls before one is let through again.
    pub trip_cooldown_ms: u64,
    /// Where compiled plugin code is kept between starts; unset means
    /// `<data_dir>/plugin-cache`, an empty path turns the cache off.
    pub cache_dir: Option<PathBuf>,
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
            cache_dir: None,
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

/// Why a component could not be made ready to load.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Not a component, or not one this host can compile.
    #[error("not a WebAssembly component this host can compile: {0}")]
    Invalid(String),
    /// Compiled, but this runtime's limits refuse it (e.g. its memory starts
    /// above `memory_mb`).
    #[error("{0}")]
    Refused(String),
}

/// What one instance of a plugin takes from the pool (and its store may hold):
/// counted when the plugin is loaded, by instantiating it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
}

impl Footprint {
    /// Whether `self` fits in `capacity`, else which resource does not.
    fn exceeds(&self, capacity: &Footprint) -> Option<(&'static str, u32, u32)> {
        [
            ("core instances", self.core_instances, capacity.core_instances),
            ("memories", self.memories, capacity.memories),
            ("tables", self.tables, capacity.tables),
        ]
        .into_iter()
        .find(|(_, needed, available)| needed > available)
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counted = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{}, {}, {}",
            counted(self.core_instances, "core instance", "core instances"),
            counted(self.memories, "memory", "memories"),
            counted(self.tables, "table", "tables")
        )
    }
}

/// The pool's capacity as permits. A call reserves its plugin's footprint
/// before instantiating, so the pool can never run out mid-instantiation (which
/// would be a trap); a call that finds too few waits for a running one to end.
/// Tables need no permits of their own: the pool holds as many tables as core
/// instances, and a core instance defines at most one.
struct Slots {
    capacity: Footprint,
    component_instances: Semaphore,
    core_instances: Semaphore,
    memories: Semaphore,
    max_calls: u32,
}

/// A call's reservation; released when dropped, after the call's store.
pub(super) struct Reserved<'a> {
    _permits: [SemaphorePermit<'a>; 3],
    pub waited: bool,
}

impl Slots {
    fn new(max_calls: u32) -> Self {
        let capacity = Footprint {
            core_instances: max_calls * CORE_INSTANCES_PER_CALL,
            memories: max_calls * MEMORIES_PER_CALL,
            tables: max_calls * CORE_INSTANCES_PER_CALL,
        };
        Self {
            capacity,
            component_instances: Semaphore::new(max_calls as usize),
            core_instances: Semaphore::new(capacity.core_instances as usize),
            memories: Semaphore::new(capacity.memories as usize),
            max_calls,
        }
    }

    /// Reserves one call of `footprint`, in a fixed order so two waiting
    /// calls can never hold what the other needs.
    async fn reserve(&self, footprint: &Footprint) -> Reserved<'_> {
        let free = self.component_instances.available_permits() > 0
            && self.core_instances.available_permits() >= footprint.core_instances as usize
            && self.memories.available_permits() >= footprint.memories as usize;
        let closed = "the pool's semaphores are never closed";
        let component = self.component_instances.acquire().await.expect(closed);
        let core = self
            .core_instances
            .acquire_many(footprint.core_instances)
            .await
            .expect(closed);
        let memories = self.memories.acquire_many(footprint.memories).await.expect(closed);
        Reserved {
            _permits: [component, core, memories],
            waited: !free,
        }
    }

    /// Waits until no call runs and keeps others out while held: a plugin's
    /// footprint is measured as the change in the engine's live counts.
    async fn exclusive(&self) -> SemaphorePermit<'_> {
        self.component_instances
            .acquire_many(self.max_calls)
            .await
            .expect("the pool's semaphores are never closed")
    }
}

/// The shared engine: compiled code cache, pooling allocator, epoch ticker.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    /// The engine's configuration, for compiling apart (see [`compile_apart`]).
    config: Config,
    limits: PluginLimits,
    slots: Slots,
    code_cache: Option<code_cache::CodeCache>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginRuntime {
    /// An engine with `limits`, keeping compiled code in `code_cache` when given.
    pub fn new(limits: PluginLimits, code_cache: Option<&Path>) -> Result<Self, PluginError> {
        let max_calls = limits.max_instances.max(1);
        let slots = Slots::new(max_calls);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(max_calls)
            .total_stacks(max_calls)
            .total_core_instances(slots.capacity.core_instances)
            .total_memories(slots.capacity.memories)
            .total_tables(slots.capacity.tables)
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
        let code_cache = code_cache
            .map(|dir| {
                code_cache::CodeCache::open(dir).map_err(|e| {
                    PluginError::Runtime(format!("cannot open the plugin code cache {}: {e}", dir.display()))
                })
            })
            .transpose()?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone());
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                limits,
                slots,
                code_cache,
                stop_ticker,
            }),
        })
    }

    /// Compiles `wasm` (see [`compile_apart`]), or maps its compiled code from the cache.
    pub fn compile(&self, wasm: &[u8]) -> Result<(Component, CodeOrigin), CompileError> {
        let compile =
            |wasm: &[u8]| compile_apart(&self.inner.config, wasm).map_err(|e| CompileError::Invalid(format!("{e:#}")));
        match &self.inner.code_cache {
            Some(cache) => cache.component(&self.inner.engine, wasm, compile),
            None => Ok((
                code_cache::deserialize(&self.inner.engine, &compile(wasm)?)?,
                CodeOrigin::Compiled,
            )),
        }
    }

    /// Core instances, memories and tables the pool holds for all calls together.
    pub fn pool_capacity(&self) -> Footprint {
        self.inner.slots.capacity
    }

    /// How many calls of a plugin with `footprint` the pool runs at once.
    pub fn calls_at_once(&self, footprint: &Footprint) -> u32 {
        let capacity = self.pool_capacity();
        (capacity.core_instances / footprint.core_instances.max(1))
            .min(capacity.memories / footprint.memories.max(1))
            .min(self.inner.slots.max_calls)
    }

    fn slots(&self) -> &Slots {
        &self.inner.slots
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.inner.limits
    }
}

/// Compiles `wasm` to loadable code with an engine of the runtime's
/// configuration made for it, in parallel on threads made for it, and drops
/// them all when done. The runtime's own engine would keep cranelift's
/// per-compilation buffers, and rayon's global pool threads what their allocator
/// heaps freed, for the life of the process: ≈ 160 MB after compiling a
/// JavaScript and a Python component.
fn compile_apart(config: &Config, wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let engine = Engine::new(config)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (exited, exits) = std::sync::mpsc::channel();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("herald-compile-{i}"))
        .exit_handler(move |_| {
            let _ = exited.send(());
        })
        .build()
        .map_err(wasmtime::Error::msg)?;
    let code = pool.install(|| engine.precompile_component(wasm));
    // Dropping the pool ends its threads; wait for them, so what they held is
    // free before the caller hands freed memory back to the system.
    drop(pool);
    drop(engine);
    for _ in 0..threads {
        if exits.recv_timeout(Duration::from_secs(5)).is_err() {
            break;
        }
    }
    code
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
