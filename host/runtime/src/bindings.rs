//! Host bindings of the `kiwano:server` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "kiwano:server/server",
    with: {
        // The per-call context is a host resource: the guest only ever borrows it.
        "kiwano:server/context.call-context": crate::host::CallToken,
    },
});

pub use kiwano::server::{context, groups, log, rpc, timers, types, users};
