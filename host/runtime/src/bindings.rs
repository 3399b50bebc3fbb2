//! Host bindings of the `kiwano:server` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "kiwano:server/server",
    imports: {
        // An RPC that outlives its caller's deadline ends the call as a deadline does.
        "kiwano:server/rpc.call": trappable,
        "kiwano:server/rpc.call-to": trappable,
    },
    with: {
        // The per-call context is a host resource: the guest only ever borrows it.
        "kiwano:server/context.call-context": crate::host::CallToken,
    },
});

pub use kiwano::server::{context, groups, log, metrics, rpc, timers, types, users};
