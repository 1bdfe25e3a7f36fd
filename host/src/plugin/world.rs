//! What every plugin world shares: loading a component against the host,
//! and calling it on a fresh, limited store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker};

use super::host::{HostState, PluginIdentity};
use super::http::{PluginHttp, Reach};
use super::{PluginError, PluginRuntime, describe_trap};

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
            breaker: self.breaker.clone(),
        }
    }
}

impl<W: World> Plugin<W> {
    /// Compiles `wasm` and links it against the host (WASI with an empty context,
    /// Herald's interfaces); refuses components this host cannot serve.
    pub(super) fn load(
        runtime: &PluginRuntime,
        identity: PluginIdentity,
        http: Option<PluginHttp>,
        wasm: &[u8],
    ) -> Result<Self, PluginError> {
        let load_error = |e: wasmtime::Error| PluginError::Load {
            plugin: identity.name.clone(),
            reason: format!("{e:#}"),
        };
        let component = Component::new(runtime.engine(), wasm).map_err(load_error)?;
        check_version::<W>(runtime, &component).map_err(|reason| PluginError::Load {
            plugin: identity.name.clone(),
            reason,
        })?;
        let mut linker = Linker::<HostState>::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(load_error)?;
        W::add_to_linker(&mut linker).map_err(load_error)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(load_error)?;
        let pre = W::pre(instance_pre).map_err(load_error)?;
        Ok(Self {
            runtime: runtime.clone(),
            identity: Arc::new(identity),
            http: http.map(Arc::new),
            pre,
            breaker: Arc::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.identity.name
    }

    fn store(&self) -> Result<Store<HostState>, PluginError> {
        let limits = self.runtime.limits();
        let state = HostState::new(self.identity.clone(), self.http.clone(), limits);
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
        let plugin = self.identity.name.clone();
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
