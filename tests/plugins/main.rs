//! Shipped plugins through the real runtime: real compiled `.wasm`, real wasmtime.

mod carriers;
mod hostile;
mod pool;
mod template;
