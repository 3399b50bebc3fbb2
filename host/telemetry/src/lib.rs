//! Kiwano's exporters, wired by the binary (and by tests): the libraries record through
//! `kiwano-metrics` and know nothing of what is here.
//!
//! [`Prometheus`] is a [`Sink`] on the `prometheus` crate: counters, gauges and histograms are
//! its vectors; summaries — which the crate lacks and Pitaya's dashboards read
//! (`pitaya_handler_response_time_ns{quantile="0.99"}`) — are [`summary::SummaryVec`], a
//! collector of its own. Every series of Pitaya's names carries the constant labels `game` and
//! `serverType` (and any others configured), as Pitaya's reporter does; Kiwano's own (`kiwano_*`)
//! carry them without `serverType`, whose camel case Prometheus's conventions refuse.

pub mod receiver;
pub mod summary;
pub mod traces;

use std::collections::HashMap;
use std::sync::Arc;

use kiwano_metrics::guest::{DynamicFamily, GuestKind, Vector};
use kiwano_metrics::{Family, Kind, Series as SeriesApi, Sink, families};
use prometheus::{CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

use crate::summary::SummaryVec;

enum Series {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
    Summary(Arc<SummaryVec>),
}

/// Metrics in Prometheus text exposition format (`text/plain; version=0.0.4`).
pub struct Prometheus {
    registry: Registry,
    /// By the family's address: families are statics.
    series: HashMap<usize, Series>,
    /// The constant labels of Kiwano's own families (and guests'): without `serverType`.
    own_labels: HashMap<String, String>,
    /// The names of all constant labels.
    const_names: Vec<String>,
    /// Guests' families exported now, by name. Apart from `registry`, which never lets a name
    /// come back with other labels: a new version of a guest may change its metric.
    guests: Guests,
}

/// Guests' exported families, by name.
type Guests = Arc<parking_lot::Mutex<std::collections::BTreeMap<String, Box<dyn prometheus::core::Collector>>>>;

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").field("families", &self.series.len()).finish()
    }
}

fn key(family: &'static Family) -> usize {
    std::ptr::from_ref(family) as usize
}

impl Prometheus {
    /// Declares every family of the catalogue with `const_labels` (`game`, `serverType`, and
    /// any configured).
    ///
    /// # Errors
    /// A constant label name Prometheus refuses, or one that is also a family's label.
    pub fn new(const_labels: &HashMap<String, String>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let mut series = HashMap::new();
        // Kiwano's own families name server types in snake case (`server_type`, where it
        // matters), as Prometheus's conventions ask; `serverType` is Pitaya's, on Pitaya's names.
        let mut own_labels = const_labels.clone();
        own_labels.remove("serverType");
        for family in families::ALL {
            let labels = if family.name.starts_with("kiwano_") { &own_labels } else { const_labels };
            let opts = Opts::new(family.name, family.help).const_labels(labels.clone());
            let s = match family.kind {
                Kind::Counter => {
                    let v = CounterVec::new(opts, family.labels)?;
                    registry.register(Box::new(v.clone()))?;
                    Series::Counter(v)
                }
                Kind::Gauge => {
                    let v = GaugeVec::new(opts, family.labels)?;
                    registry.register(Box::new(v.clone()))?;
                    Series::Gauge(v)
                }
                Kind::Histogram(buckets) => {
                    let v = HistogramVec::new(HistogramOpts::from(opts).buckets(buckets.to_vec()), family.labels)?;
                    registry.register(Box::new(v.clone()))?;
                    Series::Histogram(v)
                }
                Kind::Summary => {
                    let v = Arc::new(SummaryVec::new(family, labels));
                    registry.register(Box::new(summary::Collector(v.clone())))?;
                    Series::Summary(v)
                }
            };
            series.insert(key(family), s);
        }
        let const_names = const_labels.keys().cloned().collect();
        let guests = Guests::default();
        Ok(Self { registry, series, own_labels, const_names, guests })
    }

    fn misuse(family: &Family, what: &str) {
        tracing::error!(metric = family.name, "metrics: {what} on a {:?} family, or a family missing from the catalogue", family.kind);
    }
}

/// A resolved series of the `prometheus` crate's types, or of a summary.
enum Resolved {
    Counter(prometheus::Counter),
    Gauge(prometheus::Gauge),
    Histogram(prometheus::Histogram),
    Summary(Arc<SummaryVec>, Vec<String>),
}

impl SeriesApi for Resolved {
    fn add(&self, v: f64) {
        match self {
            Self::Counter(c) => c.inc_by(v),
            Self::Gauge(g) => g.add(v),
            _ => {}
        }
    }

    fn observe(&self, v: f64) {
        match self {
            Self::Histogram(h) => h.observe(v),
            Self::Summary(s, labels) => {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                s.observe(&labels, v);
            }
            _ => {}
        }
    }

    fn set(&self, v: f64) {
        if let Self::Gauge(g) = self {
            g.set(v);
        }
    }
}

/// A guest's family: a vector of the `prometheus` crate's, and where it is exported.
struct Dynamic {
    name: String,
    vec: DynamicVec,
    guests: Guests,
}

enum DynamicVec {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

impl Dynamic {
    fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        match &self.vec {
            DynamicVec::Counter(c) => Box::new(c.clone()),
            DynamicVec::Gauge(g) => Box::new(g.clone()),
            DynamicVec::Histogram(h) => Box::new(h.clone()),
        }
    }
}

impl Vector for Dynamic {
    fn register(&self) -> Result<(), String> {
        let mut guests = self.guests.lock();
        if guests.contains_key(&self.name) {
            return Err(format!("another family named {} is exported", self.name));
        }
        guests.insert(self.name.clone(), self.collector());
        Ok(())
    }

    fn unregister(&self) {
        self.guests.lock().remove(&self.name);
    }

    fn series(&self, labels: &[&str]) -> Option<Arc<dyn SeriesApi>> {
        let resolved = match &self.vec {
            DynamicVec::Counter(c) => c.get_metric_with_label_values(labels).map(Resolved::Counter),
            DynamicVec::Gauge(g) => g.get_metric_with_label_values(labels).map(Resolved::Gauge),
            DynamicVec::Histogram(h) => h.get_metric_with_label_values(labels).map(Resolved::Histogram),
        };
        match resolved {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!("metrics: a guest's series: {e}");
                None
            }
        }
    }
}

impl Sink for Prometheus {
    fn series(&self, family: &'static Family, labels: &[&str]) -> Option<Arc<dyn SeriesApi>> {
        let resolved = match self.series.get(&key(family))? {
            Series::Counter(c) => c.get_metric_with_label_values(labels).map(Resolved::Counter),
            Series::Gauge(g) => g.get_metric_with_label_values(labels).map(Resolved::Gauge),
            Series::Histogram(h) => h.get_metric_with_label_values(labels).map(Resolved::Histogram),
            Series::Summary(s) => Ok(Resolved::Summary(s.clone(), labels.iter().map(|l| (*l).to_owned()).collect())),
        };
        match resolved {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!(metric = family.name, "metrics: {e}");
                None
            }
        }
    }

    fn add(&self, family: &'static Family, labels: &[&str], v: f64) {
        let r = match self.series.get(&key(family)) {
            Some(Series::Counter(c)) => c.get_metric_with_label_values(labels).map(|c| c.inc_by(v)),
            Some(Series::Gauge(g)) => g.get_metric_with_label_values(labels).map(|g| g.add(v)),
            _ => return Self::misuse(family, "add"),
        };
        if let Err(e) = r {
            tracing::error!(metric = family.name, "metrics: {e}");
        }
    }

    fn set(&self, family: &'static Family, labels: &[&str], v: f64) {
        match self.series.get(&key(family)) {
            Some(Series::Gauge(g)) => {
                if let Err(e) = g.get_metric_with_label_values(labels).map(|g| g.set(v)) {
                    tracing::error!(metric = family.name, "metrics: {e}");
                }
            }
            _ => Self::misuse(family, "set"),
        }
    }

    fn observe(&self, family: &'static Family, labels: &[&str], v: f64) {
        match self.series.get(&key(family)) {
            Some(Series::Histogram(h)) => {
                if let Err(e) = h.get_metric_with_label_values(labels).map(|h| h.observe(v)) {
                    tracing::error!(metric = family.name, "metrics: {e}");
                }
            }
            Some(Series::Summary(s)) => s.observe(labels, v),
            _ => Self::misuse(family, "observe"),
        }
    }

    fn vector(&self, family: &DynamicFamily) -> Result<Arc<dyn Vector>, String> {
        let opts = Opts::new(&family.name, &family.help).const_labels(self.own_labels.clone());
        let labels: Vec<&str> = family.labels.iter().map(String::as_str).collect();
        let vec = match family.kind {
            GuestKind::Counter => CounterVec::new(opts, &labels).map(DynamicVec::Counter),
            GuestKind::Gauge => GaugeVec::new(opts, &labels).map(DynamicVec::Gauge),
            GuestKind::Histogram => HistogramVec::new(HistogramOpts::from(opts).buckets(family.buckets.clone()), &labels).map(DynamicVec::Histogram),
        }
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(Dynamic { name: family.name.clone(), vec, guests: self.guests.clone() }))
    }

    fn const_labels(&self) -> Vec<String> {
        self.const_names.clone()
    }

    fn render(&self) -> (&'static str, String) {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        let mut all = self.registry.gather();
        all.extend(self.guests.lock().values().flat_map(|c| c.collect()).filter(|f| !f.get_metric().is_empty()));
        all.sort_by(|a, b| a.name().cmp(b.name()));
        if let Err(e) = encoder.encode(&all, &mut out) {
            tracing::error!("metrics: cannot encode: {e}");
        }
        ("text/plain; version=0.0.4; charset=utf-8", String::from_utf8_lossy(&out).into_owned())
    }
}
