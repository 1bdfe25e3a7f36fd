//! Carrier plugins: `send` and `handle-webhook`.

use tracing::Instrument;
use wasmtime::component::Component;

use super::bindings::v0_1_0::carrier_world::{CarrierPlugin as Bindings, CarrierPluginPre};
use super::host::PluginIdentity;
use super::http::PluginHttp;
use super::world::{Guard, Plugin, impl_world};
use super::{Footprint, PluginError, PluginRuntime};

pub use super::bindings::v0_1_0::carrier_world::exports::herald::plugin::carrier::{
    Accepted, DeliveryStatus, DeliveryUpdate, InboundMessage, Message, SendError, WebhookError, WebhookEvent,
    WebhookKind, WebhookRequest,
};
pub use super::bindings::v0_1_0::types::{Encoding, Header};
pub use super::http::Reach;

impl_world!(Bindings, CarrierPluginPre, "carrier");

/// A loaded carrier plugin with its outbound-HTTP policy.
#[derive(Clone)]
pub struct CarrierPlugin(Plugin<Bindings>);

impl CarrierPlugin {
    pub async fn load(
        runtime: &PluginRuntime,
        identity: PluginIdentity,
        http: PluginHttp,
        wasm: &[u8],
    ) -> Result<Self, PluginError> {
        Plugin::load(runtime, identity, Some(http), wasm).await.map(Self)
    }

    /// Loads a component already compiled by `runtime`.
    pub async fn load_compiled(
        runtime: &PluginRuntime,
        identity: PluginIdentity,
        http: PluginHttp,
        component: &Component,
    ) -> Result<Self, PluginError> {
        Plugin::load_compiled(runtime, identity, Some(http), component)
            .await
            .map(Self)
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// What one call takes from the instance pool.
    pub fn footprint(&self) -> Footprint {
        self.0.footprint()
    }

    /// Sends `message`; everything the call logs (the plugin's own lines, its
    /// stdout/stderr, a trap) carries the message id. The [`Reach`] tells
    /// whether the carrier may have received the message whatever the result.
    pub async fn send(&self, message: &Message) -> (Result<Result<Accepted, SendError>, PluginError>, Reach) {
        let span = tracing::info_span!("carrier_send", message_id = %message.id);
        self.0
            .call_traced(Guard::Breaker, async |plugin, store| {
                plugin.herald_plugin_carrier().call_send(store, message).await
            })
            .instrument(span)
            .await
    }

    pub async fn handle_webhook(
        &self,
        kind: WebhookKind,
        request: &WebhookRequest,
    ) -> Result<Result<Vec<WebhookEvent>, WebhookError>, PluginError> {
        self.0
            .call_traced(Guard::None, async |plugin, store| {
                plugin
                    .herald_plugin_carrier()
                    .call_handle_webhook(store, kind, request)
                    .await
            })
            .await
            .0
    }
}
