//! Host functions as plain calls. In a component they call the host; in a native `cargo test`
//! they reach the in-memory [`testing`](crate::testing) host of the current thread.

use std::time::Duration;

use crate::Error;

/// Everything the host offers beyond the call's session.
pub(crate) trait Host {
    fn push(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, Error>;
    fn kick(&self, uids: &[String]) -> Result<Vec<String>, Error>;
    fn group_create(&self, name: &str, ttl_ms: Option<u64>) -> Result<(), Error>;
    fn group_delete(&self, name: &str) -> Result<(), Error>;
    fn group_add(&self, name: &str, uid: &str) -> Result<(), Error>;
    fn group_remove(&self, name: &str, uid: &str) -> Result<(), Error>;
    fn group_remove_all(&self, name: &str) -> Result<(), Error>;
    fn group_contains(&self, name: &str, uid: &str) -> Result<bool, Error>;
    fn group_members(&self, name: &str) -> Result<Vec<String>, Error>;
    fn group_count(&self, name: &str) -> Result<u32, Error>;
    fn group_renew(&self, name: &str) -> Result<(), Error>;
    fn group_broadcast(&self, name: &str, route: &str, body: &[u8]) -> Result<(), Error>;
    fn rpc(&self, server_id: Option<&str>, route: &str, body: &[u8], timeout_ms: Option<u32>) -> Result<Vec<u8>, Error>;
    fn timer_start(&self, ms: u64, repeat: bool, payload: &[u8]) -> u64;
    fn timer_cancel(&self, id: u64) -> bool;
    fn log(&self, level: crate::Level, message: &str, fields: &[(String, String)]);
    fn metric_declare(&self, spec: &crate::bindings::kiwano::server::metrics::MetricSpec) -> Result<u32, Error>;
    fn metric_record(&self, op: metrics::Op, id: u32, labels: &[String], value: f64) -> Result<(), Error>;
}

#[cfg(target_arch = "wasm32")]
struct Wasm;

#[cfg(target_arch = "wasm32")]
impl Host for Wasm {
    fn push(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, Error> {
        crate::bindings::kiwano::server::users::push(route, body, uids)
    }
    fn kick(&self, uids: &[String]) -> Result<Vec<String>, Error> {
        crate::bindings::kiwano::server::users::kick(uids)
    }
    fn group_create(&self, name: &str, ttl_ms: Option<u64>) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::create(name, ttl_ms)
    }
    fn group_delete(&self, name: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::delete(name)
    }
    fn group_add(&self, name: &str, uid: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::add(name, uid)
    }
    fn group_remove(&self, name: &str, uid: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::remove(name, uid)
    }
    fn group_remove_all(&self, name: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::remove_all(name)
    }
    fn group_contains(&self, name: &str, uid: &str) -> Result<bool, Error> {
        crate::bindings::kiwano::server::groups::contains(name, uid)
    }
    fn group_members(&self, name: &str) -> Result<Vec<String>, Error> {
        crate::bindings::kiwano::server::groups::members(name)
    }
    fn group_count(&self, name: &str) -> Result<u32, Error> {
        crate::bindings::kiwano::server::groups::count(name)
    }
    fn group_renew(&self, name: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::renew(name)
    }
    fn group_broadcast(&self, name: &str, route: &str, body: &[u8]) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::broadcast(name, route, body)
    }
    fn rpc(&self, server_id: Option<&str>, route: &str, body: &[u8], timeout_ms: Option<u32>) -> Result<Vec<u8>, Error> {
        match server_id {
            Some(id) => crate::bindings::kiwano::server::rpc::call_to(id, route, body, timeout_ms),
            None => crate::bindings::kiwano::server::rpc::call(route, body, timeout_ms),
        }
    }
    fn timer_start(&self, ms: u64, repeat: bool, payload: &[u8]) -> u64 {
        if repeat {
            crate::bindings::kiwano::server::timers::every(ms, payload)
        } else {
            crate::bindings::kiwano::server::timers::after(ms, payload)
        }
    }
    fn timer_cancel(&self, id: u64) -> bool {
        crate::bindings::kiwano::server::timers::cancel(id)
    }
    fn log(&self, level: crate::Level, message: &str, fields: &[(String, String)]) {
        crate::bindings::kiwano::server::log::log(level, message, fields)
    }
    fn metric_declare(&self, spec: &crate::bindings::kiwano::server::metrics::MetricSpec) -> Result<u32, Error> {
        crate::bindings::kiwano::server::metrics::declare(spec)
    }
    fn metric_record(&self, op: metrics::Op, id: u32, labels: &[String], value: f64) -> Result<(), Error> {
        use crate::bindings::kiwano::server::metrics as m;
        match op {
            metrics::Op::Add => m::add(id, labels, value),
            metrics::Op::Set => m::set(id, labels, value),
            metrics::Op::Observe => m::observe(id, labels, value),
        }
    }
}

pub(crate) fn with<R>(f: impl FnOnce(&dyn Host) -> R) -> R {
    #[cfg(target_arch = "wasm32")]
    {
        f(&Wasm)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_mock(|m| f(m))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Players by uid, wherever their session is.
pub mod users {
    use super::with;
    use crate::Error;

    /// Pushes raw bytes on `route` to the sessions bound to `uids`; returns the uids not
    /// reached (none in untrusted mode, where the push waits for the call to return).
    ///
    /// # Errors
    /// An invalid route.
    pub fn push_raw(route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, Error> {
        with(|h| h.push(route, body, uids))
    }

    /// Pushes a value as JSON; returns the uids not reached.
    ///
    /// # Errors
    /// An invalid route, a value that does not serialize.
    pub fn push<T: serde::Serialize + ?Sized>(route: &str, value: &T, uids: &[String]) -> Result<Vec<String>, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        push_raw(route, &body, uids)
    }

    /// Kicks the sessions bound to `uids`; returns the uids that had none.
    ///
    /// # Errors
    /// Refused by the host.
    pub fn kick(uids: &[String]) -> Result<Vec<String>, Error> {
        with(|h| h.kick(uids))
    }
}

/// Named groups of uids held by the host. Errors carry Pitaya's messages (`group not found`, …).
pub mod groups {
    use std::time::Duration;

    use super::{ms, with};
    use crate::Error;

    /// Creates a group, optionally deleted once `ttl` passes without a renewal.
    ///
    /// # Errors
    /// `group already exists`.
    pub fn create(name: &str, ttl: Option<Duration>) -> Result<(), Error> {
        with(|h| h.group_create(name, ttl.map(ms)))
    }
    /// Deletes a group.
    ///
    /// # Errors
    /// `group not found`.
    pub fn delete(name: &str) -> Result<(), Error> {
        with(|h| h.group_delete(name))
    }
    /// Adds a member.
    ///
    /// # Errors
    /// `group not found`, `member already exists in group`, `empty uid`.
    pub fn add(name: &str, uid: &str) -> Result<(), Error> {
        with(|h| h.group_add(name, uid))
    }
    /// Removes a member.
    ///
    /// # Errors
    /// `group not found`, `member not found in the group`.
    pub fn remove(name: &str, uid: &str) -> Result<(), Error> {
        with(|h| h.group_remove(name, uid))
    }
    /// Removes all members.
    ///
    /// # Errors
    /// `group not found`.
    pub fn remove_all(name: &str) -> Result<(), Error> {
        with(|h| h.group_remove_all(name))
    }
    /// Whether a uid is a member.
    ///
    /// # Errors
    /// `group not found`.
    pub fn contains(name: &str, uid: &str) -> Result<bool, Error> {
        with(|h| h.group_contains(name, uid))
    }
    /// The members, in the order they were added.
    ///
    /// # Errors
    /// `group not found`.
    pub fn members(name: &str) -> Result<Vec<String>, Error> {
        with(|h| h.group_members(name))
    }
    /// The number of members.
    ///
    /// # Errors
    /// `group not found`.
    pub fn count(name: &str) -> Result<u32, Error> {
        with(|h| h.group_count(name))
    }
    /// Restarts the group's TTL.
    ///
    /// # Errors
    /// `group not found`, `memory group TTL not found`.
    pub fn renew(name: &str) -> Result<(), Error> {
        with(|h| h.group_renew(name))
    }
    /// Pushes raw bytes on `route` to every member.
    ///
    /// # Errors
    /// `group not found`.
    pub fn broadcast(name: &str, route: &str, body: &[u8]) -> Result<(), Error> {
        with(|h| h.group_broadcast(name, route, body))
    }
    /// Pushes a value as JSON to every member.
    ///
    /// # Errors
    /// `group not found`.
    pub fn broadcast_json<T: serde::Serialize + ?Sized>(name: &str, route: &str, value: &T) -> Result<(), Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        broadcast(name, route, &body)
    }
}

/// Calls to remotes of other servers (`server-type.service.method`).
pub mod rpc {
    use std::time::Duration;

    use super::with;
    use crate::Error;

    fn timeout_ms(t: Option<Duration>) -> Option<u32> {
        t.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }

    /// Calls `route` on a server of its type with raw bytes; `timeout` defaults to 5 s.
    ///
    /// # Errors
    /// `PIT-500 no servers available of this type`, `PIT-404`, `PIT-408` on timeout, or the
    /// remote's error.
    pub fn call_raw(route: &str, body: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        with(|h| h.rpc(None, route, body, timeout_ms(timeout)))
    }

    /// Calls `route` on the server `server_id` (which may be this one) with raw bytes.
    ///
    /// # Errors
    /// As [`call_raw`].
    pub fn call_to_raw(server_id: &str, route: &str, body: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        with(|h| h.rpc(Some(server_id), route, body, timeout_ms(timeout)))
    }

    /// Calls a JSON remote on a server of its type.
    ///
    /// # Errors
    /// As [`call_raw`], and an answer that does not decode.
    pub fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(route: &str, req: &Req) -> Result<Resp, Error> {
        let body = serde_json::to_vec(req).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        Ok(serde_json::from_slice(&call_raw(route, &body, None)?)?)
    }

    /// Calls a JSON remote on the server `server_id`.
    ///
    /// # Errors
    /// As [`call_raw`], and an answer that does not decode.
    pub fn call_to<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(server_id: &str, route: &str, req: &Req) -> Result<Resp, Error> {
        let body = serde_json::to_vec(req).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        Ok(serde_json::from_slice(&call_to_raw(server_id, route, &body, None)?)?)
    }
}

/// Timers delivered to this instance's `on_timer` hook.
pub mod timers {
    use std::time::Duration;

    use super::{ms, with};
    use crate::Error;

    /// The longest delay or period the host sets a timer for: a year.
    pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

    fn started(id: u64) -> Result<u64, Error> {
        if id == 0 {
            Err(Error::new("PIT-500", "timer not set: this instance holds its maximum of live timers"))
        } else {
            Ok(id)
        }
    }

    /// The delay in milliseconds, if the host would set a timer for it.
    fn delay_ms(delay: Duration) -> Result<u64, Error> {
        if delay > MAX_DELAY {
            return Err(Error::new("PIT-400", format!("timer not set: {delay:?} is longer than a year")));
        }
        Ok(ms(delay))
    }

    /// Fires once after `delay`; returns the timer id.
    ///
    /// # Errors
    /// `PIT-500` when the instance already holds its maximum of live timers
    /// (`servers.<type>.max_timers`); `PIT-400` for a delay over [`MAX_DELAY`].
    pub fn after(delay: Duration, payload: &[u8]) -> Result<u64, Error> {
        let ms = delay_ms(delay)?;
        started(with(|h| h.timer_start(ms, false, payload)))
    }

    /// Fires every `period` until cancelled; returns the timer id. A tick that comes while the
    /// previous one still waits for the instance is dropped.
    ///
    /// # Errors
    /// As [`after`].
    pub fn every(period: Duration, payload: &[u8]) -> Result<u64, Error> {
        let ms = delay_ms(period)?;
        started(with(|h| h.timer_start(ms, true, payload)))
    }

    /// Cancels a timer: it never fires afterwards. False if unknown or done.
    pub fn cancel(id: u64) -> bool {
        with(|h| h.timer_cancel(id))
    }
}

/// The host's log, tagged with server type, route and session.
pub mod log {
    use super::with;
    use crate::Level;

    /// A record with structured fields.
    pub fn log(level: Level, message: &str, fields: &[(String, String)]) {
        with(|h| h.log(level, message, fields));
    }
    /// A trace record.
    pub fn trace(message: &str) {
        log(Level::Trace, message, &[]);
    }
    /// A debug record.
    pub fn debug(message: &str) {
        log(Level::Debug, message, &[]);
    }
    /// An info record.
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }
    /// A warning.
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }
    /// An error record.
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }
}

/// The guest's own metrics, exported by the host with its own at `/metrics` as
/// `kiwano_guest_<name>` (a counter's name ends in `_total`), with the labels `server_type` and
/// `game` added (WIT `metrics`, `kiwano:server@0.1.2`).
///
/// Define a metric once, as a `static`; it declares itself on first use:
///
/// ```
/// use kiwano_guest::metrics::{Counter, Histogram};
///
/// static KILLS: Counter = Counter::new("kills", "Kills, by weapon", &["weapon"]);
/// static ROUND: Histogram = Histogram::new("round_seconds", "Length of a round", &[], &[30.0, 60.0, 120.0, 300.0]);
///
/// KILLS.inc(&["axe"]).unwrap();
/// ROUND.observe(&[], 42.0).unwrap();
/// # use kiwano_guest::testing;
/// assert_eq!(testing::metric("kills", &["axe"]), Some(1.0));
/// assert_eq!(testing::histogram("round_seconds", &[]), Some((1, 42.0)));
/// ```
///
/// The host checks what a metric is and what is recorded, and bounds it: at most 128 metrics and
/// `servers.<type>.max_metric_series` series (distinct label values, 1000 by default) per server
/// type, label values of at most 128 bytes. Its errors come back unchanged: `PIT-400` for a
/// mistake (a bad name, a wrong number of label values, a counter going down, a metric another
/// server type declares with other labels), `PIT-500` past a limit. A new version of the
/// component (hot reload) may change a metric: declared on first use, the new spec replaces the
/// old in `/metrics` at once. Recordings are not held back in untrusted mode.
pub mod metrics {
    use super::with;
    use crate::Error;
    use crate::bindings::kiwano::server::metrics::{MetricKind, MetricSpec};

    /// What a recording does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Op {
        Add,
        Set,
        Observe,
    }

    /// A metric's definition and, in a component, its id once declared.
    #[derive(Debug)]
    struct Metric {
        kind: MetricKind,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        /// The id the host gave this instance. Native tests declare every time: each test
        /// thread has its own in-memory host.
        #[cfg(target_arch = "wasm32")]
        id: std::sync::OnceLock<u32>,
    }

    impl Metric {
        const fn new(kind: MetricKind, name: &'static str, help: &'static str, labels: &'static [&'static str], buckets: &'static [f64]) -> Self {
            Self {
                kind,
                name,
                help,
                labels,
                buckets,
                #[cfg(target_arch = "wasm32")]
                id: std::sync::OnceLock::new(),
            }
        }

        fn declare(&self) -> Result<u32, Error> {
            #[cfg(target_arch = "wasm32")]
            if let Some(id) = self.id.get() {
                return Ok(*id);
            }
            let spec = MetricSpec {
                name: self.name.to_owned(),
                help: self.help.to_owned(),
                kind: self.kind,
                labels: self.labels.iter().map(|l| (*l).to_owned()).collect(),
                buckets: self.buckets.to_vec(),
            };
            let id = with(|h| h.metric_declare(&spec))?;
            #[cfg(target_arch = "wasm32")]
            let _ = self.id.set(id);
            Ok(id)
        }

        fn record(&self, op: Op, labels: &[&str], value: f64) -> Result<(), Error> {
            let id = self.declare()?;
            let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
            with(|h| h.metric_record(op, id, &labels, value))
        }
    }

    /// A value that only goes up, e.g. kills or matches played.
    #[derive(Debug)]
    pub struct Counter(Metric);

    impl Counter {
        /// A counter named `name` (`[a-z][a-z0-9_]*`), with its help text and label names.
        pub const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
            Self(Metric::new(MetricKind::Counter, name, help, labels, &[]))
        }

        /// Declares the counter now (it declares itself on first use otherwise), e.g. in an
        /// `on_init` hook so that a mistake fails the instance's start.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn declare(&self) -> Result<(), Error> {
            self.0.declare().map(drop)
        }

        /// Adds 1 to the series of `labels` (one value per label name).
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn inc(&self, labels: &[&str]) -> Result<(), Error> {
            self.add(labels, 1.0)
        }

        /// Adds `value` (≥ 0) to the series of `labels`.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn add(&self, labels: &[&str], value: f64) -> Result<(), Error> {
            self.0.record(Op::Add, labels, value)
        }
    }

    /// A value that goes up and down, e.g. players in a room.
    #[derive(Debug)]
    pub struct Gauge(Metric);

    impl Gauge {
        /// A gauge named `name`, with its help text and label names.
        pub const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
            Self(Metric::new(MetricKind::Gauge, name, help, labels, &[]))
        }

        /// Declares the gauge now.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn declare(&self) -> Result<(), Error> {
            self.0.declare().map(drop)
        }

        /// Sets the series of `labels` to `value`.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn set(&self, labels: &[&str], value: f64) -> Result<(), Error> {
            self.0.record(Op::Set, labels, value)
        }

        /// Adds `value` (may be negative) to the series of `labels`.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn add(&self, labels: &[&str], value: f64) -> Result<(), Error> {
            self.0.record(Op::Add, labels, value)
        }

        /// Adds 1.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn inc(&self, labels: &[&str]) -> Result<(), Error> {
            self.add(labels, 1.0)
        }

        /// Subtracts 1.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn dec(&self, labels: &[&str]) -> Result<(), Error> {
            self.add(labels, -1.0)
        }
    }

    /// Observations counted into buckets, with their count and sum, e.g. a round's length.
    #[derive(Debug)]
    pub struct Histogram(Metric);

    impl Histogram {
        /// A histogram named `name`, with its help text, label names and bucket upper bounds
        /// (increasing; empty: Prometheus's defaults, 0.005 to 10).
        pub const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str], buckets: &'static [f64]) -> Self {
            Self(Metric::new(MetricKind::Histogram, name, help, labels, buckets))
        }

        /// Declares the histogram now.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn declare(&self) -> Result<(), Error> {
            self.0.declare().map(drop)
        }

        /// Observes `value` into the series of `labels`.
        ///
        /// # Errors
        /// The host's, unchanged.
        pub fn observe(&self, labels: &[&str], value: f64) -> Result<(), Error> {
            self.0.record(Op::Observe, labels, value)
        }
    }
}
