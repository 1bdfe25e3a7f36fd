//! Template plugins: `validate` and `render`.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::bindings::v0_1::template_world::{TemplatePlugin as Bindings, TemplatePluginPre};
use super::host::{HostState, PluginIdentity};
use super::world::{Plugin, World};
use super::{PluginError, PluginRuntime};

pub use super::bindings::v0_1::template_world::exports::herald::plugin::template::{Rendered, TemplateError};
pub use super::bindings::v0_1::types::Encoding;

impl World for Bindings {
    const EXPORT: &'static str = "template";
    type Pre = TemplatePluginPre<HostState>;

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        Bindings::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        TemplatePluginPre::new(instance_pre)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate_async(store).await
    }
}

/// A loaded template plugin.
#[derive(Clone)]
pub struct TemplatePlugin(Plugin<Bindings>);

impl TemplatePlugin {
    pub fn load(runtime: &PluginRuntime, identity: PluginIdentity, wasm: &[u8]) -> Result<Self, PluginError> {
        Plugin::load(runtime, identity, None, wasm).map(Self)
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
