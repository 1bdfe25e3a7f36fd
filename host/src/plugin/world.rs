//! What every plugin world shares: loading a component against the host,
//! and calling it on a fresh, limited store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker};

use super::host::{HostState, PluginIdentity};
use super::http::{PluginHttp, Reach};
use super::{CodeOrigin, Footprint, PluginError, PluginRuntime, describe_trap};

/// A generated world's glue: how to link it and instantiate it.
pub trait World: Sized + Send + Sync + 'static {
    /// The `herald:plugin` interface this world exports (`carrier`, `template`).
    const EXPORT: &'static str;
    type Pre: Clone + Send + Sync + 'static;
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;
}

/// Implements [`World`] for a `bindgen!`-generated world and its `*Pre` type.
macro_rules! impl_world {
    ($bindings:ty, $pre:ident, $export:literal) => {
        impl $crate::plugin::world::World for $bindings {
            const EXPORT: &'static str = $export;
            type Pre = $pre<$crate::plugin::host::HostState>;

            fn add_to_linker(
                linker: &mut wasmtime::component::Linker<$crate::plugin::host::HostState>,
            ) -> wasmtime::Result<()> {
                use $crate::plugin::host::HostState;
                <$bindings>::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |state| state)
            }

            fn pre(
                instance_pre: wasmtime::component::InstancePre<$crate::plugin::host::HostState>,
            ) -> wasmtime::Result<Self::Pre> {
                $pre::new(instance_pre)
            }

            async fn instantiate(
                pre: &Self::Pre,
                store: &mut wasmtime::Store<$crate::plugin::host::HostState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate_async(store).await
            }
        }
    };
}
pub(super) use impl_world;

/// A loaded plugin of world `W`, ready to be called concurrently.
pub struct Plugin<W: World> {
    runtime: PluginRuntime,
    identity: Arc<PluginIdentity>,
    http: Option<Arc<PluginHttp>>,
    pre: W::Pre,
    footprint: Footprint,
    breaker: Arc<Breaker>,
}

/// Trips a plugin after consecutive traps, so a broken plugin stops burning
/// CPU and attempts; after the cool-down one call is let through to probe it.
#[derive(Default)]
struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    consecutive_traps: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// `Some(wait)` while tripped.
    fn refuses(&self) -> Option<Duration> {
        let state = self.state.lock().expect("breaker lock");
        state
            .open_until
            .and_then(|until| until.checked_duration_since(Instant::now()))
    }

    /// Records a call's outcome; returns a transition worth reporting.
    fn record(&self, trapped: bool, limits: &super::PluginLimits) -> Option<&'static str> {
        let mut state = self.state.lock().expect("breaker lock");
        if !trapped {
            let was_tripped = state.open_until.take().is_some();
            state.consecutive_traps = 0;
            return was_tripped.then_some("recovered");
        }
        state.consecutive_traps += 1;
        if state.consecutive_traps >= limits.trip_after_traps.max(1) {
            state.open_until = Some(Instant::now() + Duration::from_millis(limits.trip_cooldown_ms));
            return Some("tripped");
        }
        None
    }
}

impl<W: World> Clone for Plugin<W> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            identity: self.identity.clone(),
            http: self.http.clone(),
            pre: self.pre.clone(),
            footprint: self.footprint,
            breaker: self.breaker.clone(),
        }
    }
}

impl<W: World> Plugin<W> {
    /// Compiles `wasm` (or maps it from the code cache), then loads it as
    /// [`Plugin::load_compiled`] does.
    pub(super) async fn load(
        runtime: &PluginRuntime,
        identity: PluginIdentity,
        http: Option<PluginHttp>,
        wasm: &[u8],
    ) -> Result<Self, PluginError> {
        let (component, origin) = runtime.compile(wasm).map_err(|e| PluginError::Load {
            plugin: identity.name.clone(),
            reason: e.to_string(),
        })?;
        let plugin = Self::load_compiled(runtime, identity, http, &component).await?;
        let cached = origin == CodeOrigin::Cached;
        tracing::info!(plugin = %plugin.name(), footprint = %plugin.footprint, cached, "plugin loaded");
        Ok(plugin)
    }

    /// Links `component` against the host (WASI with an empty context,
    /// Herald's interfaces), refusing components this host cannot serve, and
    /// instantiates it once to measure its [`Footprint`]: a component the
    /// pool or the limits cannot hold is refused here, naming why, rather than
    /// failing every call later.
    pub(super) async fn load_compiled(
        runtime: &PluginRuntime,
        identity: PluginIdentity,
        http: Option<PluginHttp>,
        component: &Component,
    ) -> Result<Self, PluginError> {
        let name = identity.name.clone();
        let refuse = |reason: String| PluginError::Load {
            plugin: name.clone(),
            reason,
        };
        check_version::<W>(runtime, component).map_err(refuse)?;
        let mut linker = Linker::<HostState>::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| refuse(format!("{e:#}")))?;
        W::add_to_linker(&mut linker).map_err(|e| refuse(format!("{e:#}")))?;
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|e| refuse(format!("{e:#}")))?;
        let pre = W::pre(instance_pre).map_err(|e| refuse(format!("{e:#}")))?;
        let mut plugin = Self {
            runtime: runtime.clone(),
            identity: Arc::new(identity),
            http: http.map(Arc::new),
            pre,
            footprint: runtime.pool_capacity(),
            breaker: Arc::default(),
        };
        plugin.footprint = plugin.measure_footprint().await.map_err(refuse)?;
        Ok(plugin)
    }

    /// Instantiates the plugin alone on the engine and counts what it took.
    async fn measure_footprint(&self) -> Result<Footprint, String> {
        let slots = self.runtime.slots();
        let _alone = slots.exclusive().await;
        let live = self
            .runtime
            .engine()
            .pooling_allocator_metrics()
            .expect("the runtime's engine uses the pooling allocator");
        let count = || Footprint {
            core_instances: live.core_instances() as u32,
            memories: live.memories() as u32,
            tables: live.tables() as u32,
        };
        let before = count();
        let mut store = self.store().map_err(|e| e.to_string())?;
        let instantiated = W::instantiate(&self.pre, &mut store).await;
        store.data().flush_output();
        let after = count();
        drop(store);
        instantiated.map_err(|e| format!("instantiating it failed: {}", describe_trap(&e)))?;
        let footprint = Footprint {
            core_instances: after.core_instances - before.core_instances,
            memories: after.memories - before.memories,
            tables: after.tables - before.tables,
        };
        let capacity = self.runtime.pool_capacity();
        if let Some((what, needed, available)) = footprint.exceeds(&capacity) {
            return Err(format!(
                "an instance needs {needed} {what}, more than the pool holds ({available}; raise plugins.max_instances)"
            ));
        }
        Ok(footprint)
    }

    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// What one instance of this plugin takes from the pool.
    pub fn footprint(&self) -> Footprint {
        self.footprint
    }

    fn store(&self) -> Result<Store<HostState>, PluginError> {
        let limits = self.runtime.limits();
        let state = HostState::new(self.identity.clone(), self.http.clone(), limits, &self.footprint);
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(limits.deadline_ticks());
        // The deadline counts guest execution only: time the plugin waited on
        // host HTTP is given back, so a carrier answering in 5 s is no trap.
        let budget = Duration::from_millis(limits.call_timeout_ms);
        store.epoch_deadline_callback(move |ctx| {
            let left = budget.saturating_sub(ctx.data().guest_time());
            if left.is_zero() {
                return Err(wasmtime::Error::msg(format!(
                    "the call used up its CPU deadline ({} ms of guest execution)",
                    budget.as_millis()
                )));
            }
            Ok(wasmtime::UpdateDeadline::Continue(super::ticks(left)))
        });
        if let Some(fuel) = limits.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| PluginError::Runtime(format!("{e:#}")))?;
        }
        Ok(store)
    }

    /// Runs `call` on a fresh instance; a trap or limit fails this call only and
    /// the instance is dropped with its store. Counts toward the breaker.
    pub(super) async fn call<T>(
        &self,
        call: impl AsyncFnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        self.call_traced(Guard::Breaker, call).await.0
    }

    /// [`Plugin::call`], also saying how far the call's HTTP requests got.
    /// With [`Guard::None`] the call neither waits on nor feeds the breaker:
    /// anonymous input (webhooks) must not be able to stop sending.
    pub(super) async fn call_traced<T>(
        &self,
        guard: Guard,
        call: impl AsyncFnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> (Result<T, PluginError>, Reach) {
        if guard == Guard::Breaker
            && let Some(retry_in) = self.breaker.refuses()
        {
            let tripped = PluginError::Tripped {
                plugin: self.identity.name.clone(),
                retry_in,
            };
            return (Err(tripped), Reach::NotSent);
        }
        let started = Instant::now();
        let plugin = self.identity.name.clone();
        let reserved = self.runtime.slots().reserve(&self.footprint).await;
        if reserved.waited {
            metrics::counter!("herald_plugin_pool_waits_total", "plugin" => plugin.clone()).increment(1);
        }
        let mut store = match self.store() {
            Ok(store) => store,
            Err(e) => return (Err(e), Reach::NotSent),
        };
        let result = match W::instantiate(&self.pre, &mut store).await {
            Ok(instance) => call(&instance, &mut store).await,
            Err(e) => Err(e),
        };
        store.data().flush_output();
        let reach = store.data().reach();
        // The instance goes back to the pool before its slots are released.
        drop(store);
        drop(reserved);
        if guard == Guard::Breaker
            && let Some(transition) = self.breaker.record(result.is_err(), self.runtime.limits())
        {
            tracing::warn!(plugin = %plugin, "plugin {transition}");
            metrics::counter!("herald_plugin_breaker_total", "plugin" => plugin.clone(), "transition" => transition)
                .increment(1);
        }
        metrics::histogram!("herald_plugin_call_duration_seconds", "plugin" => plugin.clone())
            .record(started.elapsed().as_secs_f64());
        let result = result.map_err(|e| {
            let described = describe_trap(&e);
            tracing::warn!(plugin = %plugin, "plugin trap: {described}");
            metrics::counter!("herald_plugin_traps_total", "plugin" => plugin).increment(1);
            PluginError::Trap(described)
        });
        (result, reach)
    }
}

/// Whether a call is subject to the plugin's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Guard {
    Breaker,
    None,
}

/// WIT versions of `herald:plugin` this host serves.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0"];

/// Refuses a component that exports the world's interface at a version this
/// host does not serve, naming both, before linking reports something vaguer.
fn check_version<W: World>(runtime: &PluginRuntime, component: &Component) -> Result<(), String> {
    let prefix = format!("herald:plugin/{}@", W::EXPORT);
    let exported: Vec<String> = component
        .component_type()
        .exports(runtime.engine())
        .filter_map(|(name, _)| name.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let supported = SUPPORTED_VERSIONS.join(", ");
    match exported.first() {
        None => Err(format!(
            "it does not export herald:plugin/{} (is it a {} plugin built against herald:plugin@{supported}?)",
            W::EXPORT,
            W::EXPORT
        )),
        Some(version) if !SUPPORTED_VERSIONS.contains(&version.as_str()) => Err(format!(
            "it is built for herald:plugin@{version}; this host supports herald:plugin@{supported}"
        )),
        Some(_) => Ok(()),
    }
}
