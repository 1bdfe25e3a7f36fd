//! Template plugins: `validate` and `render`.

use wasmtime::component::Component;

use super::bindings::v0_1_0::template_world::{TemplatePlugin as Bindings, TemplatePluginPre};
use super::host::PluginIdentity;
use super::world::{Plugin, impl_world};
use super::{Footprint, PluginError, PluginRuntime};

pub use super::bindings::v0_1_0::template_world::exports::herald::plugin::template::{Rendered, TemplateError};
pub use super::bindings::v0_1_0::types::Encoding;

impl_world!(Bindings, TemplatePluginPre, "template");

/// A loaded template plugin.
#[derive(Clone)]
pub struct TemplatePlugin(Plugin<Bindings>);

impl TemplatePlugin {
    pub async fn load(runtime: &PluginRuntime, identity: PluginIdentity, wasm: &[u8]) -> Result<Self, PluginError> {
        Plugin::load(runtime, identity, None, wasm).await.map(Self)
    }

    /// Loads a component already compiled by `runtime`.
    pub async fn load_compiled(
        runtime: &PluginRuntime,
        identity: PluginIdentity,
        component: &Component,
    ) -> Result<Self, PluginError> {
        Plugin::load_compiled(runtime, identity, None, component)
            .await
            .map(Self)
    }

    /// What one call takes from the instance pool.
    pub fn footprint(&self) -> Footprint {
        self.0.footprint()
    }

    pub async fn validate(&self, template: &str) -> Result<Result<(), TemplateError>, PluginError> {
        self.0
            .call(async |plugin, store| plugin.herald_plugin_template().call_validate(store, template).await)
            .await
    }

    pub async fn render(
        &self,
        template: &str,
        variables: &[(String, String)],
    ) -> Result<Result<Rendered, TemplateError>, PluginError> {
        self.0
            .call(async |plugin, store| {
                plugin
                    .herald_plugin_template()
                    .call_render(store, template, variables)
                    .await
            })
            .await
    }
}
