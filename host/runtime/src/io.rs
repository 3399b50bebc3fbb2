//! Running guest code on the I/O runtime's threads without holding them up.

use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Whether this thread belongs to a multi-thread tokio runtime: only there can a call that
/// blocks hand the thread's other work to another thread.
pub(crate) fn on_multi_thread_runtime() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// How long a hand-off waits for another thread to take over the I/O work.
const HANDOFF_WAIT: Duration = Duration::from_millis(1);

/// Called from a guest call running on an I/O thread that has outlived its first slice: gives
/// the thread's run queue and I/O driver to a fresh thread, which takes them while this one
/// waits. The rest of the call then runs here as a blocking thread.
pub(crate) fn hand_off_io_thread() {
    if on_multi_thread_runtime() {
        tokio::task::block_in_place(|| std::thread::sleep(HANDOFF_WAIT));
    }
}

/// Runs `f`, which blocks (a guest waiting for an RPC reply), without holding up the other
/// work of the I/O thread it may run on.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    if on_multi_thread_runtime() { tokio::task::block_in_place(f) } else { f() }
}
