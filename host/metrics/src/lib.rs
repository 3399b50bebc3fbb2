//! Kiwano's metrics facade.
//!
//! Libraries of the host (server, runtime, cluster) record through a [`Metrics`] handle and name
//! what they record by a [`Family`] of the catalogue in [`families`]; they know nothing of the
//! exporter. The binary (or a test) makes the handle from a [`Sink`] — Prometheus text
//! exposition, in `kiwano-telemetry` — and the HTTP listener serves what [`Metrics::render`]
//! returns at `/metrics`. [`Metrics::disabled`] records nothing.
//!
//! The catalogue has Pitaya's names, types and labels (Pitaya v3 `metrics/prometheus_reporter.go`,
//! `PITAYA-PROTOCOL.md` §9.1) so that a Pitaya dashboard works unchanged, and Kiwano's own under
//! `kiwano_`. Every family also carries the exporter's constant labels (`game`, `serverType`).
//! Guests' own metrics are declared at run time, checked and bounded by [`guest`].

pub mod guest;

use std::sync::Arc;

pub use guest::GuestMetrics;

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is set.
    Gauge,
    /// Observations summarized as count, sum and the quantiles 0.7, 0.95 and 0.99 of a sliding
    /// window (Pitaya's summaries).
    Summary,
    /// Observations counted into these upper bounds (and `+Inf`).
    Histogram(&'static [f64]),
}

/// A metric family: its name, help text, type and label names.
#[derive(Debug, PartialEq)]
pub struct Family {
    /// The full name, e.g. `pitaya_handler_response_time_ns`.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The type.
    pub kind: Kind,
    /// The names of its labels, in the order values are given.
    pub labels: &'static [&'static str],
}

/// One series (a family and its label values), resolved once by [`Metrics::series`] for a hot
/// path that records into it again and again.
pub trait Series: Send + Sync {
    /// Adds `v` (a counter or gauge).
    fn add(&self, v: f64);
    /// Observes `v` (a summary or histogram).
    fn observe(&self, v: f64);
    /// Sets `v` (a gauge).
    fn set(&self, v: f64);
}

/// A [`Series`], or nothing when metrics are disabled. Cheap to clone.
#[derive(Clone, Default)]
pub struct SeriesHandle(pub(crate) Option<Arc<dyn Series>>);

impl std::fmt::Debug for SeriesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesHandle").field("enabled", &self.0.is_some()).finish()
    }
}

impl SeriesHandle {
    /// Adds `v` (a counter or gauge).
    pub fn add(&self, v: f64) {
        if let Some(s) = &self.0 {
            s.add(v);
        }
    }

    /// Observes `v` (a summary or histogram).
    pub fn observe(&self, v: f64) {
        if let Some(s) = &self.0 {
            s.observe(v);
        }
    }

    /// Sets `v` (a gauge).
    pub fn set(&self, v: f64) {
        if let Some(s) = &self.0 {
            s.set(v);
        }
    }
}

/// Where observations go: an exporter.
pub trait Sink: Send + Sync {
    /// The series of `family` with `labels`, to record into directly; `None` when the labels
    /// do not fit the family (the reason is the exporter's to log).
    fn series(&self, family: &'static Family, labels: &[&str]) -> Option<Arc<dyn Series>>;
    /// Adds `v` to a counter or gauge series.
    fn add(&self, family: &'static Family, labels: &[&str], v: f64);
    /// Sets a gauge series.
    fn set(&self, family: &'static Family, labels: &[&str], v: f64);
    /// Observes `v` into a summary or histogram series.
    fn observe(&self, family: &'static Family, labels: &[&str], v: f64);
    /// Everything recorded, in the exporter's format, with its content type.
    fn render(&self) -> (&'static str, String);
    /// The vector of a family declared at run time (a guest's metric, already checked by
    /// [`guest`]), exported once [`guest::Vector::register`]ed.
    ///
    /// # Errors
    /// The exporter refuses the family; the message says why.
    fn vector(&self, family: &guest::DynamicFamily) -> Result<Arc<dyn guest::Vector>, String>;
    /// The names of the constant labels every series carries (`game`, …), which a guest's
    /// metric may not use.
    fn const_labels(&self) -> Vec<String>;
}

/// The handle libraries record through. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    sink: Option<Arc<dyn Sink>>,
    /// Guests' metrics, by server type and name.
    guests: Arc<guest::Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("enabled", &self.sink.is_some()).finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::disabled()
    }
}

impl Metrics {
    /// A handle recording into `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        Self { sink: Some(sink), guests: Arc::default() }
    }

    /// A handle that records nothing (and renders nothing).
    pub fn disabled() -> Self {
        Self { sink: None, guests: Arc::default() }
    }

    /// The guest metrics of `server_type`, shared by all its instances and versions: made on
    /// first use with a limit of `max_series` series (a later call gets the same, whatever its
    /// `max_series`).
    pub fn guest(&self, server_type: &str, max_series: usize) -> GuestMetrics {
        self.guests.scope(self.sink.clone(), server_type, max_series)
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Adds `v` to a counter or gauge series (`labels`: one value per label name of `family`).
    pub fn add(&self, family: &'static Family, labels: &[&str], v: f64) {
        if let Some(s) = &self.sink {
            s.add(family, labels, v);
        }
    }

    /// The series of `family` with `labels`, resolved once (see [`Series`]).
    pub fn series(&self, family: &'static Family, labels: &[&str]) -> SeriesHandle {
        SeriesHandle(self.sink.as_ref().and_then(|s| s.series(family, labels)))
    }

    /// Adds one to a counter series.
    pub fn inc(&self, family: &'static Family, labels: &[&str]) {
        self.add(family, labels, 1.0);
    }

    /// Sets a gauge series.
    pub fn set(&self, family: &'static Family, labels: &[&str], v: f64) {
        if let Some(s) = &self.sink {
            s.set(family, labels, v);
        }
    }

    /// Observes `v` into a summary or histogram series.
    pub fn observe(&self, family: &'static Family, labels: &[&str], v: f64) {
        if let Some(s) = &self.sink {
            s.observe(family, labels, v);
        }
    }

    /// Everything recorded, with its content type; `None` when disabled.
    pub fn render(&self) -> Option<(&'static str, String)> {
        self.sink.as_ref().map(|s| s.render())
    }
}

/// The catalogue: every family the host records.
pub mod families {
    use super::{Family, Kind};

    /// Free slots of a queue (Pitaya's channel-capacity buckets).
    pub const CAPACITY: &[f64] = &[0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];

    /// Seconds buckets for guest calls: 10 µs to 10 s.
    pub const CALL_SECONDS: &[f64] = &[0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

    /// Time from a client message's arrival to its answer (or an outgoing RPC's completion), in
    /// ns; `status` `ok`/`failed`, `type` `handler` (client messages) or `rpc` (outgoing RPCs),
    /// `code` the Pitaya error code or empty. Route as the client sent it.
    pub static RESPONSE_TIME: Family = Family {
        name: "pitaya_handler_response_time_ns",
        help: "Time to answer a message or complete an RPC, in nanoseconds",
        kind: Kind::Summary,
        labels: &["route", "status", "type", "code"],
    };
    /// Time a message waited before its handler started, in ns; `type` `local` or `remote`.
    pub static HANDLER_DELAY: Family = Family {
        name: "pitaya_handler_handler_delay_ns",
        help: "Time a message waited before its handler started, in nanoseconds",
        kind: Kind::Summary,
        labels: &["route", "type"],
    };
    /// Clients connected to this process's frontends.
    pub static CONNECTED_CLIENTS: Family =
        Family { name: "pitaya_acceptor_connected_clients", help: "Clients connected", kind: Kind::Gauge, labels: &[] };
    /// Messages refused because a client sent faster than it may.
    pub static EXCEEDED_RATE_LIMITING: Family = Family {
        name: "pitaya_acceptor_exceeded_rate_limiting",
        help: "Messages dropped because a client exceeded its rate limit",
        kind: Kind::Counter,
        labels: &[],
    };
    /// Servers discovered, per server type.
    pub static COUNT_SERVERS: Family =
        Family { name: "pitaya_service_discovery_count_servers", help: "Servers in discovery, per type", kind: Kind::Gauge, labels: &["type"] };
    /// RPC messages the NATS client dropped (a slow consumer).
    pub static RPC_DROPPED: Family =
        Family { name: "pitaya_rpc_server_dropped_messages", help: "RPC messages dropped by the NATS client", kind: Kind::Gauge, labels: &[] };
    /// Instances running a call, per pool (`handler_dispatch`, `rpc_server_remote`).
    pub static WORKERS_BUSY: Family =
        Family { name: "pitaya_worker_pool_busy_workers", help: "Guest instances running a call", kind: Kind::Gauge, labels: &["pool"] };
    /// Instances, per pool.
    pub static WORKERS_TOTAL: Family =
        Family { name: "pitaya_worker_pool_total_workers", help: "Guest instances", kind: Kind::Gauge, labels: &["pool"] };

    /// Free slots of a queue when a message is put in it: `agent_chsend` (a session's outgoing
    /// queue), `handler_chlocalprocess` (a session's inbound queue, behind its message in
    /// progress).
    pub static CHANNEL_CAPACITY: Family = Family {
        name: "pitaya_channel_channel_capacity",
        help: "Free slots of a queue when a message is put in it",
        kind: Kind::Histogram(CAPACITY),
        labels: &["channel"],
    };
    /// Duration of guest calls, in seconds, per server type and `service.method` (or
    /// `on-timer`, `on-session-close`).
    pub static GUEST_CALL: Family = Family {
        name: "kiwano_guest_call_duration_seconds",
        help: "Duration of guest calls",
        kind: Kind::Histogram(CALL_SECONDS),
        labels: &["server_type", "route"],
    };
    /// Guest calls that failed without an error of their own: `trap`, `deadline`,
    /// `out_of_memory`, `too_large`, `unavailable`.
    pub static GUEST_FAILURES: Family =
        Family { name: "kiwano_guest_failures_total", help: "Guest calls that trapped, timed out, ran out of memory or answered too much", kind: Kind::Counter, labels: &["server_type", "reason"] };
    /// Instances created after the first ones: `rebuild` after a failed call, `recycled` near the
    /// memory limit, `fresh` for one call (untrusted mode).
    pub static INSTANCES_CREATED: Family =
        Family { name: "kiwano_instances_created_total", help: "Guest instances created after start", kind: Kind::Counter, labels: &["server_type", "why"] };
    /// Components loaded, `hit` from the compiled cache or `miss` (compiled).
    pub static COMPILED_CACHE: Family =
        Family { name: "kiwano_compiled_cache_total", help: "Components loaded from the compiled cache (hit) or compiled (miss)", kind: Kind::Counter, labels: &["result"] };
    /// Hot reloads, `ok` or `refused`.
    pub static RELOADS: Family = Family { name: "kiwano_hot_reloads_total", help: "Hot reloads of a server type's component", kind: Kind::Counter, labels: &["server_type", "result"] };
    /// The version of each server type's component serving now (1 at start).
    pub static VERSION: Family = Family { name: "kiwano_component_version", help: "Version of the component serving, per server type", kind: Kind::Gauge, labels: &["server_type"] };
    /// 1 while connected to NATS, else 0 (absent without NATS).
    pub static NATS_CONNECTED: Family = Family { name: "kiwano_nats_connected", help: "1 while connected to NATS", kind: Kind::Gauge, labels: &[] };
    /// Packets a session's outgoing queue refused: `full` (the client does not read; it is
    /// disconnected) or `too_large` (one packet over the queue's whole byte budget).
    pub static OUTGOING_DROPPED: Family = Family {
        name: "kiwano_outgoing_dropped_total",
        help: "Packets refused by a session's outgoing queue",
        kind: Kind::Counter,
        labels: &["reason"],
    };
    /// 1 while connected to etcd, else 0 (absent without etcd).
    pub static ETCD_CONNECTED: Family = Family { name: "kiwano_etcd_connected", help: "1 while connected to etcd", kind: Kind::Gauge, labels: &[] };
    /// Sessions, per frontend server type.
    pub static SESSIONS: Family = Family { name: "kiwano_sessions", help: "Sessions, per frontend server type", kind: Kind::Gauge, labels: &["frontend"] };

    /// Every family, for exporters that declare them up front.
    pub static ALL: &[&Family] = &[
        &RESPONSE_TIME,
        &HANDLER_DELAY,
        &CONNECTED_CLIENTS,
        &EXCEEDED_RATE_LIMITING,
        &COUNT_SERVERS,
        &RPC_DROPPED,
        &WORKERS_BUSY,
        &WORKERS_TOTAL,
        &CHANNEL_CAPACITY,
        &GUEST_CALL,
        &GUEST_FAILURES,
        &INSTANCES_CREATED,
        &COMPILED_CACHE,
        &RELOADS,
        &VERSION,
        &NATS_CONNECTED,
        &ETCD_CONNECTED,
        &OUTGOING_DROPPED,
        &SESSIONS,
    ];
}
