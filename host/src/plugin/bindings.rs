//! Host-side bindings of every released version of `herald:plugin`, one
//! module per folder of `sdk/wit/` (`v0.1.0/` → [`v0_1_0`]). Released folders
//! are frozen: a new version is a new folder and one [`bind!`] line below.
//! The plugin wrappers (`carrier.rs`, `template.rs`) adapt older worlds to the
//! newest, so the rest of the host sees one API.

/// Binds the WIT package in the folder `$path` as module `$version`: both
/// worlds, sharing one copy of its `types` and `host` interfaces.
macro_rules! bind {
    ($version:ident, $path:tt) => {
        pub mod $version {
            pub mod template_world {
                wasmtime::component::bindgen!({
                    path: $path,
                    world: "template-plugin",
                    imports: { default: async | trappable },
                    exports: { default: async },
                });
            }

            pub mod carrier_world {
                wasmtime::component::bindgen!({
                    path: $path,
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
    };
}

bind!(v0_1_0, "../sdk/wit/v0.1.0");
