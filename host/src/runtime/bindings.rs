//! Host-side bindings generated from `wit/charm.wit`.

wasmtime::component::bindgen!({
    world: "charm",
    path: "../wit",
    exports: { default: async },
});

pub use juju::charm::{context, leadership, services};
