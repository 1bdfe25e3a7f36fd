//! Host-side bindings of `herald:plugin@0.1.0`. A later WIT version gets a
//! module of its own beside this one, frozen; older worlds are adapted to the
//! newest in the plugin wrappers, so the rest of the host sees one API.

pub mod v0_1 {
    pub mod template_world {
        wasmtime::component::bindgen!({
            path: "../sdk/wit",
            world: "template-plugin",
            imports: { default: async | trappable },
            exports: { default: async },
        });
    }

    pub mod carrier_world {
        wasmtime::component::bindgen!({
            path: "../sdk/wit",
            world: "carrier-plugin",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "herald:plugin/types": super::template_world::herald::plugin::types,
                "herald:plugin/host": super::template_world::herald::plugin::host,
            },
        });
    }

    pub use template_world::herald::plugin::{host, types};
}
