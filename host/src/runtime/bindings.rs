//! Host-side bindings generated from `wit/charm.wit`: the contract as Rust types, for the
//! runtime (the hooks a charm exports) and the capabilities (the functions it imports).
//! Kept in the runtime's module: its async import trampolines are compiled beside the
//! runtime's code (at the crate root, `leader-get` measured about 8% slower per call).

wasmtime::component::bindgen!({
    world: "charm",
    path: "wit",
    exports: { default: async },
    // The calls that reach the store are awaited, so a slow store holds only this hook;
    // `is-leader` answers from the tracker and stays a plain call.
    imports: {
        "juju:charm/leadership.leader-get": async,
        "juju:charm/leadership.leader-get-all": async,
        "juju:charm/leadership.leader-set": async,
        "juju:charm/leadership.unit-set": async,
        "juju:charm/leadership.unit-get": async,
        "juju:charm/leadership.unit-get-all": async,
        "juju:charm/leadership.units": async,
    },
});

pub use juju::charm::{context, leadership, services};
