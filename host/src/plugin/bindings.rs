//! Host-side bindings of `herald:plugin@0.1.0`. A later WIT version gets a
//! module of its own beside this one, frozen; older worlds are adapted to the
//! newest in the plugin wrappers, so the rest of the host sees one API.

pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "template-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}
