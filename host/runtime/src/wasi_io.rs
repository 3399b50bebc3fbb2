//! `wasi:io` for guest calls: safe on an I/O thread, and bounded by the call's deadline.
//!
//! wasmtime-wasi's synchronous bindings run the blocking stream and poll functions (a guest's
//! `println!` is `blocking-write-and-flush` on stdout, then a resource drop; a sleep is a
//! `pollable.block`) through `Handle::block_on`, which panics on a thread of the tokio runtime.
//! These definitions enter the same implementations through [`crate::blocking`], which leaves
//! the runtime first (`block_in_place`) when the call runs on one of its threads and costs
//! nothing on an instance's own thread. A guest waiting in `poll` or `block` is woken at its
//! call's deadline with the trap a deadline gives: a 20 s sleep under a 2 s deadline fails the
//! call after 2 s, and the instance's other calls do not wait for it. The non-blocking functions
//! are passed through unchanged.

use std::future::Future;
use std::time::Instant;

use wasmtime::Trap;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;

use crate::host::HostState;
use crate::io::blocking;

/// The instance's resource table and the deadline of the call in progress, seen by the
/// definitions below.
pub(crate) struct Io<'a> {
    table: &'a mut ResourceTable,
    deadline: Option<Instant>,
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = Io<'a>;
}

/// Links `wasi:io/streams` and `wasi:io/poll`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    poll::add_to_linker::<HostState, HasIo>(linker, |s| Io { table: &mut s.table, deadline: s.deadline })?;
    streams::add_to_linker::<HostState, HasIo>(linker, |s| Io { table: &mut s.table, deadline: s.deadline })?;
    Ok(())
}

/// Runs `wait` to its end or to `deadline`, which traps as a call deadline does.
fn until<T>(deadline: Option<Instant>, wait: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    blocking(|| {
        in_tokio(async move {
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), wait).await.unwrap_or_else(|_| Err(Trap::Interrupt.into())),
                None => wait.await,
            }
        })
    })
}

type Table = ResourceTable;

impl streams::Host for Io<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        <Table as streams::Host>::convert_stream_error(self.table, err)
    }
}

impl streams::HostOutputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        blocking(|| <Table as streams::HostOutputStream>::drop(self.table, stream))
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        <Table as streams::HostOutputStream>::check_write(self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        <Table as streams::HostOutputStream>::write(self.table, stream, bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_write_and_flush(self.table, stream, bytes))
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_write_zeroes_and_flush(self.table, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        <Table as streams::HostOutputStream>::subscribe(self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        <Table as streams::HostOutputStream>::write_zeroes(self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        <Table as streams::HostOutputStream>::flush(self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_flush(self.table, stream))
    }

    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        <Table as streams::HostOutputStream>::splice(self.table, dst, src, len)
    }

    fn blocking_splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_splice(self.table, dst, src, len))
    }
}

impl streams::HostInputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        blocking(|| <Table as streams::HostInputStream>::drop(self.table, stream))
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        <Table as streams::HostInputStream>::read(self.table, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        blocking(|| <Table as streams::HostInputStream>::blocking_read(self.table, stream, len))
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        <Table as streams::HostInputStream>::skip(self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        blocking(|| <Table as streams::HostInputStream>::blocking_skip(self.table, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        <Table as streams::HostInputStream>::subscribe(self.table, stream)
    }
}

impl poll::Host for Io<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        until(self.deadline, <Table as async_poll::Host>::poll(self.table, pollables))
    }
}

impl poll::HostPollable for Io<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        blocking(|| <Table as poll::HostPollable>::ready(self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        until(self.deadline, <Table as async_poll::HostPollable>::block(self.table, pollable))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        <Table as poll::HostPollable>::drop(self.table, pollable)
    }
}
