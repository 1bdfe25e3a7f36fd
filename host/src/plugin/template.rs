//! Template plugins: `validate` and `render`.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::v0_1::{TemplatePlugin as Bindings, TemplatePluginPre};
use super::host::{HostState, PluginIdentity};
use super::{PluginError, PluginRuntime, describe_trap};

pub use super::bindings::v0_1::exports::herald::plugin::template::{Rendered, TemplateError};
pub use super::bindings::v0_1::herald::plugin::types::Encoding;

/// A loaded template plugin, ready to be called concurrently.
#[derive(Clone)]
pub struct TemplatePlugin {
    runtime: PluginRuntime,
    identity: Arc<PluginIdentity>,
    pre: TemplatePluginPre<HostState>,
}

impl TemplatePlugin {
    /// Compiles (or deserializes) `wasm` and links it against the host.
    pub fn load(runtime: &PluginRuntime, identity: PluginIdentity, wasm: &[u8]) -> Result<Self, PluginError> {
        let load_error = |reason: String| PluginError::Load {
            plugin: identity.name.clone(),
            reason,
        };
        let component = Component::new(runtime.engine(), wasm).map_err(|e| load_error(format!("{e:#}")))?;
        let mut linker = Linker::<HostState>::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| load_error(format!("{e:#}")))?;
        Bindings::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| load_error(format!("{e:#}")))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| load_error(format!("{e:#}")))?;
        let pre = TemplatePluginPre::new(instance_pre).map_err(|e| load_error(format!("{e:#}")))?;
        Ok(Self {
            runtime: runtime.clone(),
            identity: Arc::new(identity),
            pre,
        })
    }

    fn store(&self) -> Result<Store<HostState>, PluginError> {
        let limits = self.runtime.limits();
        let mut store = Store::new(self.runtime.engine(), HostState::new(self.identity.clone(), limits));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(limits.deadline_ticks());
        store.epoch_deadline_trap();
        if let Some(fuel) = limits.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| PluginError::Runtime(format!("{e:#}")))?;
        }
        Ok(store)
    }

    /// Runs `call` on a fresh instance; a trap fails this call only.
    async fn call<T>(
        &self,
        call: impl AsyncFnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let mut store = self.store()?;
        let result = match self.pre.instantiate_async(&mut store).await {
            Ok(instance) => call(&instance, &mut store).await,
            Err(e) => Err(e),
        };
        store.data().flush_output();
        result.map_err(|e| {
            let described = describe_trap(&e);
            tracing::warn!(plugin = %self.identity.name, "plugin trap: {described}");
            metrics::counter!("herald_plugin_traps_total", "plugin" => self.identity.name.clone()).increment(1);
            PluginError::Trap(described)
        })
    }

    pub async fn validate(&self, template: &str) -> Result<Result<(), TemplateError>, PluginError> {
        self.call(async |plugin, store| plugin.herald_plugin_template().call_validate(store, template).await)
            .await
    }

    pub async fn render(
        &self,
        template: &str,
        variables: &[(String, String)],
    ) -> Result<Result<Rendered, TemplateError>, PluginError> {
        self.call(async |plugin, store| {
            plugin
                .herald_plugin_template()
                .call_render(store, template, variables)
                .await
        })
        .await
    }
}
