//! `wasi:io` for guest calls that may run on an I/O thread.
//!
//! wasmtime-wasi's synchronous bindings run the blocking stream and poll functions (a guest's
//! `println!` is `blocking-write-and-flush` on stdout, then a resource drop) through
//! `Handle::block_on`, which panics on a thread of the tokio runtime. These definitions replace
//! them: the same implementations, entered through [`crate::blocking`], which leaves the
//! runtime first (`block_in_place`) when the call runs on one of its threads, and costs nothing
//! on an instance's own thread. The non-blocking functions are passed through unchanged.

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};

use crate::host::HostState;
use crate::io::blocking;

/// The instance's resource table, seen by the replacing definitions.
pub(crate) struct Io<'a>(&'a mut ResourceTable);

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = Io<'a>;
}

/// Replaces `wasi:io/streams` and `wasi:io/poll` in `linker` (after wasmtime-wasi added them).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<HostState, HasIo>(linker, |s| Io(&mut s.table))?;
    streams::add_to_linker::<HostState, HasIo>(linker, |s| Io(&mut s.table))?;
    linker.allow_shadowing(false);
    Ok(())
}

type Table = ResourceTable;

impl streams::Host for Io<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        <Table as streams::Host>::convert_stream_error(self.0, err)
    }
}

impl streams::HostOutputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        blocking(|| <Table as streams::HostOutputStream>::drop(self.0, stream))
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        <Table as streams::HostOutputStream>::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        <Table as streams::HostOutputStream>::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_write_and_flush(self.0, stream, bytes))
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_write_zeroes_and_flush(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        <Table as streams::HostOutputStream>::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        <Table as streams::HostOutputStream>::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        <Table as streams::HostOutputStream>::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_flush(self.0, stream))
    }

    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        <Table as streams::HostOutputStream>::splice(self.0, dst, src, len)
    }

    fn blocking_splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        blocking(|| <Table as streams::HostOutputStream>::blocking_splice(self.0, dst, src, len))
    }
}

impl streams::HostInputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        blocking(|| <Table as streams::HostInputStream>::drop(self.0, stream))
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        <Table as streams::HostInputStream>::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        blocking(|| <Table as streams::HostInputStream>::blocking_read(self.0, stream, len))
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        <Table as streams::HostInputStream>::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        blocking(|| <Table as streams::HostInputStream>::blocking_skip(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        <Table as streams::HostInputStream>::subscribe(self.0, stream)
    }
}

impl poll::Host for Io<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        blocking(|| <Table as poll::Host>::poll(self.0, pollables))
    }
}

impl poll::HostPollable for Io<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        blocking(|| <Table as poll::HostPollable>::ready(self.0, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        blocking(|| <Table as poll::HostPollable>::block(self.0, pollable))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        <Table as poll::HostPollable>::drop(self.0, pollable)
    }
}
