//! Guest timers: set by an instance, delivered to that same instance as `on-timer`, in order
//! with its other calls. A cancelled timer never fires, even if its tick was already queued.
//!
//! Bounded: an instance holds at most `max_timers` live timers (`after`/`every` return 0 past
//! it), and a repeating timer has at most one tick waiting for its instance: ticks that come
//! while the previous one is still queued or running are dropped (coalesced), so a handler that
//! outlasts its period neither fills the instance's queue nor shuts out its other calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::pool::Msg;

struct Entry {
    abort: Option<tokio::task::AbortHandle>,
    repeat: bool,
    /// A tick of this timer is queued and not yet delivered.
    pending: Arc<AtomicBool>,
    /// The live timers of the instance that set it.
    count: Arc<AtomicUsize>,
}

impl Entry {
    fn end(self) {
        if let Some(a) = self.abort {
            a.abort();
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The live timers of one pool.
#[derive(Default)]
pub(crate) struct Timers {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
    /// Ticks of repeating timers dropped because the previous one still waited.
    pub dropped: AtomicU64,
}

impl Timers {
    /// Stops every timer.
    pub(crate) fn cancel_all(&self) {
        for (_, e) in self.live.lock().drain() {
            e.end();
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
    /// This instance's live timers.
    pub count: Arc<AtomicUsize>,
    /// The most it may hold.
    pub max: usize,
}

impl TimerHandle {
    /// Starts a timer; 0 when the instance already holds its maximum of live timers, or there
    /// is no runtime to run it on.
    pub(crate) fn start(&self, d: Duration, repeat: bool, payload: Vec<u8>) -> u64 {
        let Some(rt) = &self.rt else {
            tracing::warn!("timer requested outside of a tokio runtime: ignored");
            return 0;
        };
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return 0;
        }
        let id = self.timers.next.fetch_add(1, Ordering::Relaxed) + 1;
        let pending = Arc::new(AtomicBool::new(false));
        // Registered before the task exists, so even an immediate tick finds it live.
        let entry = Entry { abort: None, repeat, pending: pending.clone(), count: self.count.clone() };
        self.timers.live.lock().insert(id, entry);
        let tx = self.tx.clone();
        let timers = self.timers.clone();
        let payload = Bytes::from(payload);
        let task = rt.spawn(async move {
            if repeat {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // The previous tick is still waiting for the instance: this one is dropped.
                    if pending.swap(true, Ordering::AcqRel) {
                        timers.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if tx.send(Msg::Timer { id, payload: payload.clone() }).is_err() {
                        return;
                    }
                }
            } else {
                tokio::time::sleep(d).await;
                pending.store(true, Ordering::Release);
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
        let removed = self.timers.live.lock().remove(&id);
        removed.map(Entry::end).is_some()
    }

    /// Whether a queued tick of `id` is to be delivered; a one-shot is forgotten by it, a
    /// repeating timer may queue its next tick.
    pub(crate) fn fire(&self, id: u64) -> bool {
        let mut live = self.timers.live.lock();
        match live.get(&id).map(|e| e.repeat) {
            Some(true) => {
                if let Some(e) = live.get(&id) {
                    e.pending.store(false, Ordering::Release);
                }
                true
            }
            Some(false) => {
                if let Some(e) = live.remove(&id) {
                    e.end();
                }
                true
            }
            None => false,
        }
    }
}
