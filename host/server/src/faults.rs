//! The log of peer faults: malformed packets, limits passed, clients too slow to read, refused
//! connections. A fuzzer or a flood produces them by the thousand, so each kind is logged in
//! full once per interval and the rest are counted into one summary line per interval.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How often the counts of repeated faults are logged.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Kind {
    /// Logged in full in this interval.
    shown: bool,
    /// Faults of this kind not logged one by one in this interval.
    more: u64,
}

/// Peer faults, by kind.
#[derive(Debug, Default)]
pub struct FaultLog {
    kinds: Mutex<BTreeMap<&'static str, Kind>>,
}

impl FaultLog {
    /// Records a fault of `kind`; the first of its kind in an interval is logged at WARN with
    /// `detail`, the others at DEBUG, and counted into the interval's summary.
    pub fn report(&self, kind: &'static str, detail: impl FnOnce() -> String) {
        self.record(kind, false, detail);
    }

    /// As [`FaultLog::report`], the first of the interval logged at ERROR: for failures that
    /// nobody else hears of (a notify's handler failed; the client gets no answer).
    pub fn report_error(&self, kind: &'static str, detail: impl FnOnce() -> String) {
        self.record(kind, true, detail);
    }

    fn record(&self, kind: &'static str, error: bool, detail: impl FnOnce() -> String) {
        let first = {
            let mut kinds = self.kinds.lock();
            let k = kinds.entry(kind).or_default();
            if k.shown {
                k.more += 1;
                false
            } else {
                k.shown = true;
                true
            }
        };
        if first && error {
            tracing::error!(kind, "{}", detail());
        } else if first {
            tracing::warn!(kind, "{}", detail());
        } else if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(kind, "{}", detail());
        }
    }

    /// Logs the counts of the interval that ends and starts a new one.
    pub fn flush(&self) {
        let counts: Vec<(&str, u64)> = {
            let mut kinds = self.kinds.lock();
            let counts = kinds.iter().filter(|(_, k)| k.more > 0).map(|(name, k)| (*name, k.more)).collect();
            kinds.clear();
            counts
        };
        if !counts.is_empty() {
            let list: Vec<String> = counts.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            tracing::warn!("and in the last {}s, not logged one by one: {}", SUMMARY_INTERVAL.as_secs(), list.join(", "));
        }
    }

    /// Flushes every [`SUMMARY_INTERVAL`] until `shutdown`.
    pub async fn run(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval_at(Instant::now() + SUMMARY_INTERVAL, SUMMARY_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.flush();
                    return;
                }
                _ = tick.tick() => self.flush(),
            }
        }
    }
}
