//! The WASI a guest is linked with: only what a game server's logic needs, nothing that reaches
//! the machine.
//!
//! | interface | what the guest gets |
//! | --- | --- |
//! | `wasi:clocks/wall-clock`, `monotonic-clock` | the host's clocks; a sleep (`subscribe-*` + `poll`) ends at the call's deadline |
//! | `wasi:random/random`, `insecure`, `insecure-seed` | the host's random numbers |
//! | `wasi:cli/stdout`, `stderr` | lines go to the host's log, tagged, rate-limited per instance |
//! | `wasi:cli/stdin` | an empty stream |
//! | `wasi:cli/environment` | no variables, no arguments, no working directory |
//! | `wasi:cli/exit` | traps the call (the instance is rebuilt) |
//! | `wasi:cli/terminal-*` | no terminal |
//! | `wasi:io/poll`, `streams`, `error` | the streams and pollables above; blocking ones bounded by the call's deadline |
//! | `wasi:filesystem/preopens` | no directories |
//! | `wasi:filesystem/types`, `wasi:sockets/*` | not linked: a component may import them, and any call traps |
//! | anything else (`wasi:http`…) | not linked: a component importing it does not load |
//!
//! None of these runs wasmtime-wasi code that needs a tokio context outside of the deadline-bound
//! `poll` and the blocking stream functions (`wasi_io`), which enter one safely from an I/O
//! thread or an instance's own thread.

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{HasData, Linker, ResourceTable, ResourceType};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
use wasmtime_wasi::random::WasiRandom;

use crate::host::HostState;

/// Interfaces a component may import but whose functions trap: the filesystem beyond the
/// (empty) list of preopened directories, and sockets.
const DENIED: &[&str] = &["wasi:filesystem/types", "wasi:sockets/"];

struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links the WASI interfaces guests get (see the module documentation).
pub(crate) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    io::error::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;
    crate::wasi_io::add_to_linker(l)
}

/// A resource of a denied interface: never created.
struct Denied;

/// The host type of a `wasi:io` resource, by its name there.
fn io_resource(name: &str) -> Option<ResourceType> {
    Some(match name {
        "input-stream" => ResourceType::host::<wasmtime_wasi::p2::DynInputStream>(),
        "output-stream" => ResourceType::host::<wasmtime_wasi::p2::DynOutputStream>(),
        "pollable" => ResourceType::host::<wasmtime_wasi::p2::DynPollable>(),
        "error" => ResourceType::host::<wasmtime_wasi::p2::IoError>(),
        _ => return None,
    })
}

/// Defines the functions of the denied interfaces that `component` imports as traps, so that
/// it loads, and fails only the call that uses them. Their own resources are never created; the
/// `wasi:io` resources they use (streams, pollables, errors) keep their real types.
pub(crate) fn deny_unlinked(
    l: &mut Linker<HostState>,
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> wasmtime::Result<()> {
    let ty = component.component_type();
    // The component's view of the wasi:io resources, and the host types they stand for.
    let mut io = Vec::new();
    for (name, import) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else { continue };
        if !name.starts_with("wasi:io/") {
            continue;
        }
        for (export, item) in instance.exports(engine) {
            if let (ComponentItem::Resource(seen), Some(host)) = (item.ty, io_resource(export)) {
                io.push((seen, host));
            }
        }
    }
    for (name, import) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else { continue };
        if !DENIED.iter().any(|d| name.starts_with(d)) {
            continue;
        }
        let mut stubs = l.instance(name)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{export}");
                    stubs.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(format!("{what} is not available to guests (no filesystem, no sockets)")))
                    })?;
                }
                ComponentItem::Resource(seen) => {
                    let host = if name.starts_with("wasi:filesystem/types") && export == "descriptor" {
                        // The type `wasi:filesystem/preopens` (linked, always empty) returns.
                        ResourceType::host::<wasmtime_wasi::filesystem::Descriptor>()
                    } else {
                        io.iter().find(|(r, _)| *r == seen).map_or_else(ResourceType::host::<Denied>, |(_, h)| *h)
                    };
                    stubs.resource(export, host, |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}
