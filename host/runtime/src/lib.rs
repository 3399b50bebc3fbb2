//! Kiwano's Wasm runtime.
//!
//! One wasmtime [`Engine`](wasmtime::Engine) per process ([`Runtime`]): epoch interruption for
//! call deadlines, the pooling allocator sized for Rust, Python and JavaScript components, and
//! `concurrency_support(false)` (the `kiwano:server` world is synchronous, and the CM-async task
//! set-up would otherwise cost every call). Each server type's component is prepared once
//! ([`Component::load`]) and served by a [`ServerPool`]: N warm instances, each with a thread of
//! its own for timers and queued calls; a client call runs on the I/O thread that received it
//! while its instance is free, handing that thread's other connections over if it outlives a
//! tick. A call's affinity key picks the instance. A trap, deadline or out-of-memory fails that
//! one call; the instance is dropped and rebuilt from the prepared component before its next
//! call. Deadlines are wall-clock and hold inside host calls (WASI waits, RPCs); WASI is linked
//! without sockets or files (`wasi`).
//!
//! In untrusted mode ([`PoolConfig::untrusted`]) every call gets a fresh instance and runs in a
//! transaction (`transaction`): its session-data, group, push and kick effects are applied only
//! when it returns.
//!
//! This crate knows nothing of sockets: the server hands each call a [`SessionHandle`] through
//! which the guest's `call-context` reaches the session.

pub mod bench;
mod bindings;
mod cache;
mod component;
mod engine;
mod host;
mod io;
mod pool;
mod timers;
mod transaction;
mod wasi;
mod wasi_io;

pub use component::Component;
pub use io::blocking;
pub use engine::{Runtime, RuntimeConfig, RuntimeError, RuntimeStats};
pub use pool::PoolStats;
pub use transaction::{parse_object, parse_value};
pub use host::{CallChain, CallLimits, Caller, GroupOp, GroupReply, GuestError, HostServices, RpcTarget, SessionHandle};
pub use pool::{Affinity, Call, CallError, Description, Finish, HandlerKind, PoolConfig, ServerPool};
