//! Guest timers: set by an instance, delivered to that same instance as `on-timer`, in order
//! with its other calls. A cancelled timer never fires, even if its tick was already queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::pool::Msg;

struct Entry {
    abort: Option<tokio::task::AbortHandle>,
    repeat: bool,
}

/// The live timers of one pool.
#[derive(Default)]
pub(crate) struct Timers {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
}

impl Timers {
    /// Stops every timer.
    pub(crate) fn cancel_all(&self) {
        for (_, e) in self.live.lock().drain() {
            if let Some(a) = e.abort {
                a.abort();
            }
        }
    }
}

/// What an instance uses to set timers that come back to it.
#[derive(Clone)]
pub(crate) struct TimerHandle {
    pub timers: Arc<Timers>,
    /// The instance's own queue.
    pub tx: mpsc::Sender<Msg>,
    /// The runtime that sleeps for the timers.
    pub rt: Option<tokio::runtime::Handle>,
}

impl TimerHandle {
    /// Starts a timer; 0 when there is no runtime to run it on.
    pub(crate) fn start(&self, d: Duration, repeat: bool, payload: Vec<u8>) -> u64 {
        let Some(rt) = &self.rt else {
            tracing::warn!("timer requested outside of a tokio runtime: ignored");
            return 0;
        };
        let id = self.timers.next.fetch_add(1, Ordering::Relaxed) + 1;
        // Registered before the task exists, so even an immediate tick finds it live.
        self.timers.live.lock().insert(id, Entry { abort: None, repeat });
        let tx = self.tx.clone();
        let payload = Bytes::from(payload);
        let task = rt.spawn(async move {
            if repeat {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if tx.send(Msg::Timer { id, payload: payload.clone() }).is_err() {
                        return;
                    }
                }
            } else {
                tokio::time::sleep(d).await;
                let _ = tx.send(Msg::Timer { id, payload });
            }
        });
        if let Some(e) = self.timers.live.lock().get_mut(&id) {
            e.abort = Some(task.abort_handle());
        } else {
            // Cancelled meanwhile.
            task.abort();
        }
        id
    }

    /// Cancels a timer; false if unknown or done.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        match self.timers.live.lock().remove(&id) {
            Some(e) => {
                if let Some(a) = e.abort {
                    a.abort();
                }
                true
            }
            None => false,
        }
    }

    /// Whether a queued tick of `id` is to be delivered; a one-shot is forgotten by it.
    pub(crate) fn fire(&self, id: u64) -> bool {
        let mut live = self.timers.live.lock();
        match live.get(&id).map(|e| e.repeat) {
            Some(true) => true,
            Some(false) => {
                live.remove(&id);
                true
            }
            None => false,
        }
    }
}
