//! Guest code is synchronous; the cluster is async. A guest's RPC, group operation or push
//! waits here for the cluster's future: on its instance's thread, or on an I/O thread that
//! hands its other work to another thread first ([`kiwano_runtime::blocking`]).

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;

/// Runs the cluster's futures for callers that block.
#[derive(Debug, Clone)]
pub struct Bridge {
    runtime: Handle,
}

impl Bridge {
    /// A bridge onto `runtime`, the process's I/O runtime.
    pub fn new(runtime: Handle) -> Self {
        Self { runtime }
    }

    /// Runs `fut` to its end and returns its output, or `None` after `limit`. A future that
    /// is ready at once (in-memory groups, a publish that only queues) costs no task and no
    /// thread hop; one that waits runs on the runtime while the caller blocks.
    ///
    /// Never call it from a current-thread runtime's own thread: the runtime could not run
    /// the future while its only thread waits (the calls that bind from async code run on
    /// the blocking pool instead).
    pub fn wait<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static, limit: Duration) -> Option<T> {
        let mut fut = Box::pin(fut);
        {
            // Timers and sockets need the runtime's context even for one poll.
            let _entered = self.runtime.enter();
            if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) {
                return Some(out);
            }
        }
        self.wait_spawned(fut, limit)
    }

    /// Like [`Bridge::wait`], always on the runtime: for futures that may run guest code
    /// (an RPC to a server of this process), which must not nest on the caller's stack.
    pub fn wait_spawned<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static, limit: Duration) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        kiwano_runtime::blocking(|| rx.recv_timeout(limit).ok())
    }

    /// Runs `fut` on the runtime without waiting for it.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(fut);
    }
}
