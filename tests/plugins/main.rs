//! Shipped plugins through the real runtime: real compiled `.wasm`, real wasmtime.

mod hostile;
mod template;
