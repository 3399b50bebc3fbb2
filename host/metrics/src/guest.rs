//! Guests' own metrics (the WIT `metrics` interface, `kiwano:server@0.1.2`).
//!
//! A guest declares a metric by a [`GuestSpec`]; it is exported as `kiwano_guest_<name>` (a
//! counter's name ends in `_total`) with the label `server_type` before the guest's own. What a
//! guest may declare and record is checked here, whatever the exporter (and with metrics
//! disabled, so that a guest behaves the same either way), and bounded: at most
//! [`MAX_METRICS`] metrics and a configured number of series per server type, and label values of
//! at most [`MAX_LABEL_VALUE`] bytes — a mod cannot grow the registry without bound.
//!
//! A name is one metric for the whole process: server types declaring the same name must declare
//! the same spec. A new version of a server type's component (hot reloaded) may change the spec
//! of a metric that only its type declares: the new family replaces the old one when that
//! version serves ([`GuestMetrics::commit`]), and is dropped if the version is refused
//! ([`GuestMetrics::discard`]) — a Prometheus registry holds one family per name.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{Series, SeriesHandle, Sink};

/// Metrics one server type may declare.
pub const MAX_METRICS: usize = 128;
/// Label names one metric may have (beside `server_type`).
pub const MAX_LABELS: usize = 8;
/// Longest name, of a metric or a label, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest help text, in bytes.
pub const MAX_HELP: usize = 256;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 128;
/// Most buckets of a histogram.
pub const MAX_BUCKETS: usize = 32;
/// A histogram's buckets when its spec gives none (Prometheus's defaults, in seconds).
pub const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The prefix of every exported guest metric.
pub const PREFIX: &str = "kiwano_guest_";
/// Label names a guest may not use: the host's own and those of the exposition format.
const RESERVED: &[&str] = &["server_type", "game", "le", "quantile"];

/// The type of a guest metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

impl GuestKind {
    fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A metric as a guest declares it (the WIT `metric-spec`).
#[derive(Debug, Clone, PartialEq)]
pub struct GuestSpec {
    /// `[a-z][a-z0-9_]*`, at most [`MAX_NAME`] bytes.
    pub name: String,
    /// 1 to [`MAX_HELP`] bytes.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: GuestKind,
    /// Label names.
    pub labels: Vec<String>,
    /// A histogram's bucket upper bounds; empty: [`DEFAULT_BUCKETS`].
    pub buckets: Vec<f64>,
}

/// A family declared at run time, as an exporter registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicFamily {
    /// The exported name, e.g. `kiwano_guest_kills_total`.
    pub name: String,
    /// The `# HELP` text.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: GuestKind,
    /// Label names, `server_type` first.
    pub labels: Vec<String>,
    /// A histogram's bucket upper bounds (empty for the others).
    pub buckets: Vec<f64>,
}

/// The series of a [`DynamicFamily`], made by an exporter; exported once registered.
pub trait Vector: Send + Sync {
    /// The series of `labels` (one value per label name, `server_type` first); `None` when the
    /// exporter refuses them (its reason logged).
    fn series(&self, labels: &[&str]) -> Option<Arc<dyn Series>>;
    /// Exports the family (with what was recorded into it so far).
    ///
    /// # Errors
    /// The exporter refuses it (another family of its name is registered).
    fn register(&self) -> Result<(), String>;
    /// Stops exporting the family.
    fn unregister(&self);
}

/// Why a guest's declaration or recording was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMetricError {
    /// A limit of the server type was reached (Pitaya's `PIT-500`), rather than a mistake of
    /// the guest (`PIT-400`).
    pub limit: bool,
    /// What is wrong, naming the metric.
    pub msg: String,
}

impl std::fmt::Display for GuestMetricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for GuestMetricError {}

fn bad(msg: String) -> GuestMetricError {
    GuestMetricError { limit: false, msg }
}

/// One declared metric, shared by the server types declaring it.
struct Declared {
    /// The name as declared first.
    name: String,
    family: DynamicFamily,
    /// `None` with metrics disabled.
    vector: Option<Arc<dyn Vector>>,
}

/// The family exported under a name, and the server types that declared it.
struct Exported {
    declared: Arc<Declared>,
    owners: std::collections::BTreeSet<String>,
}

/// The process's guest metrics, by exported name.
#[derive(Default)]
pub(crate) struct Registry {
    families: Mutex<HashMap<String, Exported>>,
    scopes: Mutex<HashMap<String, Arc<Scope>>>,
}

/// One server type's guest metrics, as one version of its component declares and records
/// them, with the type's limits. Cheap to clone.
#[derive(Clone)]
pub struct GuestMetrics {
    scope: Arc<Scope>,
    /// The component version (1 at start, one more per hot reload).
    version: u64,
}

impl std::fmt::Debug for GuestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMetrics")
            .field("server_type", &self.scope.server_type)
            .field("version", &self.version)
            .field("max_series", &self.scope.max_series)
            .finish()
    }
}

struct Scope {
    server_type: String,
    max_series: usize,
    registry: Arc<Registry>,
    sink: Option<Arc<dyn Sink>>,
    /// The exporter's constant labels, which a guest's metric may not use.
    reserved: Vec<String>,
    state: Mutex<ScopeState>,
}

#[derive(Default)]
struct ScopeState {
    /// By id.
    metrics: Vec<Arc<Declared>>,
    /// (Version, exported name) → id.
    ids: HashMap<(u64, String), u32>,
    /// The version serving (0 before the first commit).
    serving: u64,
    /// Changed families declared by a version not serving yet, exported when it does.
    staged: Vec<(u64, Arc<Declared>)>,
    /// By id, then label values.
    series: Vec<HashMap<Vec<String>, SeriesHandle>>,
    /// Series over all metrics.
    count: usize,
    /// Whether the operator was told that the series limit was reached.
    told: bool,
}

impl Registry {
    /// The scope of `server_type`, made on first use with `max_series`, as version 1 sees it.
    pub(crate) fn scope(self: &Arc<Self>, sink: Option<Arc<dyn Sink>>, server_type: &str, max_series: usize) -> GuestMetrics {
        let scope = self
            .scopes
            .lock()
            .entry(server_type.to_owned())
            .or_insert_with(|| {
                Arc::new(Scope {
                    server_type: server_type.to_owned(),
                    max_series,
                    registry: self.clone(),
                    reserved: sink.as_ref().map(|s| s.const_labels()).unwrap_or_default(),
                    sink,
                    state: Mutex::new(ScopeState::default()),
                })
            })
            .clone();
        GuestMetrics { scope, version: 1 }
    }
}

/// Whether `s` is `[a-z][a-z0-9_]*` of at most [`MAX_NAME`] bytes.
fn is_name(s: &str) -> bool {
    s.len() <= MAX_NAME
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a spec and gives its exported family (`reserved`: the exporter's constant labels).
fn family(spec: &GuestSpec, reserved: &[String]) -> Result<DynamicFamily, GuestMetricError> {
    let name = &spec.name;
    if !is_name(name) {
        return Err(bad(format!("metric name {name:?} must match [a-z][a-z0-9_]* and be at most {MAX_NAME} bytes")));
    }
    if ["_bucket", "_count", "_sum"].iter().any(|s| name.ends_with(s)) {
        return Err(bad(format!("metric name {name:?} must not end in _bucket, _count or _sum")));
    }
    if spec.kind != GuestKind::Counter && name.ends_with("_total") {
        return Err(bad(format!("metric name {name:?}: only a counter's name may end in _total")));
    }
    if spec.help.is_empty() {
        return Err(bad(format!("metric {name:?}: help must not be empty")));
    }
    if spec.help.len() > MAX_HELP {
        return Err(bad(format!("metric {name:?}: help of {} bytes is over {MAX_HELP}", spec.help.len())));
    }
    if spec.labels.len() > MAX_LABELS {
        return Err(bad(format!("metric {name:?}: at most {MAX_LABELS} labels")));
    }
    for (i, label) in spec.labels.iter().enumerate() {
        if !is_name(label) {
            return Err(bad(format!("metric {name:?}: label name {label:?} must match [a-z][a-z0-9_]* and be at most {MAX_NAME} bytes")));
        }
        if RESERVED.contains(&label.as_str()) || reserved.contains(label) {
            return Err(bad(format!("metric {name:?}: label name {label:?} is reserved")));
        }
        if spec.labels[..i].contains(label) {
            return Err(bad(format!("metric {name:?}: label name {label:?} appears twice")));
        }
    }
    let buckets = match spec.kind {
        GuestKind::Histogram if spec.buckets.is_empty() => DEFAULT_BUCKETS.to_vec(),
        GuestKind::Histogram => {
            let increasing = spec.buckets.windows(2).all(|w| w[0] < w[1]);
            if spec.buckets.len() > MAX_BUCKETS || !increasing || spec.buckets.iter().any(|b| !b.is_finite()) {
                return Err(bad(format!("metric {name:?}: buckets must be finite and increasing, at most {MAX_BUCKETS}")));
            }
            spec.buckets.clone()
        }
        _ if !spec.buckets.is_empty() => return Err(bad(format!("metric {name:?}: only a histogram has buckets"))),
        _ => Vec::new(),
    };
    let exported = match spec.kind {
        GuestKind::Counter if !name.ends_with("_total") => format!("{PREFIX}{name}_total"),
        _ => format!("{PREFIX}{name}"),
    };
    if crate::families::ALL.iter().any(|f| f.name == exported) {
        return Err(bad(format!("metric name {name:?}: {exported} is one of the host's own metrics")));
    }
    let mut labels = Vec::with_capacity(spec.labels.len() + 1);
    labels.push("server_type".to_owned());
    labels.extend(spec.labels.iter().cloned());
    Ok(DynamicFamily { name: exported, help: spec.help.clone(), kind: spec.kind, labels, buckets })
}

/// What recording a value does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Set,
    Observe,
}

impl GuestMetrics {
    /// A scope that exports nothing (tests and benchmarks of the runtime): everything is checked
    /// as with an exporter.
    pub fn detached(server_type: &str, max_series: usize) -> Self {
        Arc::new(Registry::default()).scope(None, server_type, max_series)
    }

    /// The same server type's metrics as version `version` of its component declares them.
    #[must_use]
    pub fn version(&self, version: u64) -> Self {
        Self { scope: self.scope.clone(), version }
    }

    /// Declares a metric; returns its id, the same for every declaration of the same spec by
    /// this server type.
    ///
    /// # Errors
    /// A spec breaking the rules of the WIT `metric-spec`; one differing from the spec another
    /// server type declared under its name, or from this version's own or a newer version's;
    /// or (`limit`) this version's [`MAX_METRICS`]-th metric.
    pub fn declare(&self, spec: &GuestSpec) -> Result<u32, GuestMetricError> {
        let scope = &*self.scope;
        let version = self.version;
        let family = family(spec, &scope.reserved)?;
        let mut state = scope.state.lock();
        let state = &mut *state;
        if let Some(&id) = state.ids.get(&(version, family.name.clone())) {
            return if state.metrics[id as usize].family == family { Ok(id) } else { Err(changed(&spec.name, &scope.server_type)) };
        }
        if state.ids.keys().filter(|(v, _)| *v == version).count() >= MAX_METRICS {
            return Err(GuestMetricError {
                limit: true,
                msg: format!("metric limit reached: server type {} declares at most {MAX_METRICS} metrics", scope.server_type),
            });
        }
        let mut families = scope.registry.families.lock();
        let declared = match families.get_mut(&family.name) {
            Some(e) if e.declared.family == family => {
                e.owners.insert(scope.server_type.clone());
                e.declared.clone()
            }
            Some(e) => {
                if let Some(other) = e.owners.iter().find(|o| **o != scope.server_type) {
                    return Err(changed(&spec.name, other));
                }
                if version < state.serving {
                    return Err(bad(format!("metric {:?} was changed by a newer version of server type {}", spec.name, scope.server_type)));
                }
                let d = self.declared(spec, family.clone())?;
                if version > state.serving && state.serving != 0 {
                    // Exported when this version serves (`commit`), dropped if it is refused.
                    state.staged.push((version, d.clone()));
                } else {
                    swap(scope, state, e, d.clone())?;
                }
                d
            }
            None => {
                let d = self.declared(spec, family.clone())?;
                export(&d)?;
                let owners = std::iter::once(scope.server_type.clone()).collect();
                families.insert(family.name.clone(), Exported { declared: d.clone(), owners });
                d
            }
        };
        drop(families);
        let id = match state.metrics.iter().position(|d| Arc::ptr_eq(d, &declared)) {
            Some(i) => u32::try_from(i).unwrap_or(u32::MAX),
            None => {
                state.metrics.push(declared);
                state.series.push(HashMap::new());
                u32::try_from(state.metrics.len() - 1).unwrap_or(u32::MAX)
            }
        };
        state.ids.insert((version, family.name), id);
        Ok(id)
    }

    /// A metric of `spec` with the exporter's vector for `family`, not exported yet.
    fn declared(&self, spec: &GuestSpec, family: DynamicFamily) -> Result<Arc<Declared>, GuestMetricError> {
        let vector = match &self.scope.sink {
            Some(sink) => Some(sink.vector(&family).map_err(|e| unexported(&spec.name, &e))?),
            None => None,
        };
        Ok(Arc::new(Declared { name: spec.name.clone(), family, vector }))
    }

    /// This version serves now: the families it changed replace the old ones in the export
    /// (their series no longer count against the limit), and older versions' declarations of
    /// a changed metric are refused from now on.
    pub fn commit(&self) {
        let scope = &*self.scope;
        let mut state = scope.state.lock();
        let state = &mut *state;
        state.serving = state.serving.max(self.version);
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut state.staged).into_iter().partition(|(v, _)| *v == self.version);
        state.staged = rest.into_iter().filter(|(v, _)| *v > self.version).collect();
        let mut families = scope.registry.families.lock();
        for (_, d) in mine {
            if let Some(e) = families.get_mut(&d.family.name)
                && let Err(e) = swap(scope, state, e, d)
            {
                tracing::error!(server_type = %scope.server_type, "{e}");
            }
        }
    }

    /// This version was refused: the families it changed are dropped, never exported.
    pub fn discard(&self) {
        let mut state = self.scope.state.lock();
        state.staged.retain(|(v, _)| *v != self.version);
        state.ids.retain(|(v, _), _| *v != self.version);
    }

    /// Adds `v` to a counter (`v` ≥ 0) or a gauge series.
    ///
    /// # Errors
    /// See [`GuestMetrics::record`].
    pub fn add(&self, id: u32, labels: &[String], v: f64) -> Result<(), GuestMetricError> {
        self.record(Op::Add, id, labels, v)
    }

    /// Sets a gauge series.
    ///
    /// # Errors
    /// See [`GuestMetrics::record`].
    pub fn set(&self, id: u32, labels: &[String], v: f64) -> Result<(), GuestMetricError> {
        self.record(Op::Set, id, labels, v)
    }

    /// Observes `v` into a histogram series.
    ///
    /// # Errors
    /// See [`GuestMetrics::record`].
    pub fn observe(&self, id: u32, labels: &[String], v: f64) -> Result<(), GuestMetricError> {
        self.record(Op::Observe, id, labels, v)
    }

    /// Records `v` into the series of `labels` of metric `id`.
    ///
    /// Errors: an unknown id, an operation its kind lacks, a wrong number of label values, a
    /// value over [`MAX_LABEL_VALUE`] bytes, a value not finite, a counter going down, and
    /// (`limit`) a new series past the server type's limit.
    fn record(&self, op: Op, id: u32, labels: &[String], v: f64) -> Result<(), GuestMetricError> {
        let scope = &*self.scope;
        let mut state = scope.state.lock();
        let state = &mut *state;
        let Some(metric) = state.metrics.get(id as usize) else { return Err(bad(format!("no metric with id {id}"))) };
        let name = &metric.name;
        let family = &metric.family;
        let fits = matches!(
            (family.kind, op),
            (GuestKind::Counter, Op::Add) | (GuestKind::Gauge, Op::Add | Op::Set) | (GuestKind::Histogram, Op::Observe)
        );
        if !fits {
            let how = match family.kind {
                GuestKind::Counter => "add",
                GuestKind::Gauge => "add or set",
                GuestKind::Histogram => "observe",
            };
            return Err(bad(format!("metric {name:?} is a {}: record it with {how}", family.kind.name())));
        }
        let own = &family.labels[1..];
        if labels.len() != own.len() {
            return Err(bad(format!("metric {name:?} has labels [{}]: {} values given", own.join(", "), labels.len())));
        }
        if let Some(long) = labels.iter().find(|l| l.len() > MAX_LABEL_VALUE) {
            return Err(bad(format!("metric {name:?}: a label value of {} bytes is over {MAX_LABEL_VALUE}", long.len())));
        }
        if !v.is_finite() {
            return Err(bad(format!("metric {name:?}: the value must be finite")));
        }
        if family.kind == GuestKind::Counter && v < 0.0 {
            return Err(bad(format!("metric {name:?}: a counter only goes up (add {v})")));
        }
        let series = &mut state.series[id as usize];
        let handle = match series.get(labels) {
            Some(h) => h,
            None => {
                if state.count >= scope.max_series {
                    let msg = format!(
                        "metric series limit reached: server type {0} records at most {1} series (servers.{0}.max_metric_series)",
                        scope.server_type, scope.max_series
                    );
                    if !std::mem::replace(&mut state.told, true) {
                        tracing::warn!(server_type = %scope.server_type, "{msg}; further new series are refused");
                    }
                    return Err(GuestMetricError { limit: true, msg });
                }
                let handle = metric.vector.as_ref().map_or_else(SeriesHandle::default, |vector| {
                    let mut values: Vec<&str> = Vec::with_capacity(labels.len() + 1);
                    values.push(&scope.server_type);
                    values.extend(labels.iter().map(String::as_str));
                    SeriesHandle(vector.series(&values))
                });
                state.count += 1;
                series.entry(labels.to_vec()).or_insert(handle)
            }
        };
        match op {
            Op::Add => handle.add(v),
            Op::Set => handle.set(v),
            Op::Observe => handle.observe(v),
        }
        Ok(())
    }
}

fn changed(name: &str, owner: &str) -> GuestMetricError {
    bad(format!(
        "metric {name:?} is already declared with other labels, kind, help or buckets (by server type {owner}); a changed metric needs a new name, or a new version of the one server type declaring it"
    ))
}

fn unexported(name: &str, why: &str) -> GuestMetricError {
    bad(format!("metric {name:?}: cannot be exported: {why}"))
}

/// Exports a metric's family (nothing without an exporter).
fn export(d: &Declared) -> Result<(), GuestMetricError> {
    match &d.vector {
        Some(v) => v.register().map_err(|e| unexported(&d.name, &e)),
        None => Ok(()),
    }
}

/// Exports `new` in place of the family `e` holds; the old one's series no longer count.
fn swap(scope: &Scope, state: &mut ScopeState, e: &mut Exported, new: Arc<Declared>) -> Result<(), GuestMetricError> {
    if let Some(old) = &e.declared.vector {
        old.unregister();
    }
    export(&new)?;
    if let Some(i) = state.metrics.iter().position(|d| Arc::ptr_eq(d, &e.declared)) {
        state.count -= state.series[i].len();
        state.series[i].clear();
    }
    tracing::info!(server_type = %scope.server_type, metric = %new.family.name, "a new version changed a guest metric: the new family is exported");
    e.declared = new;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: GuestKind, labels: &[&str]) -> GuestSpec {
        GuestSpec { name: name.into(), help: "help".into(), kind, labels: labels.iter().map(|l| (*l).to_owned()).collect(), buckets: Vec::new() }
    }

    fn refused(r: Result<u32, GuestMetricError>) -> String {
        let e = r.expect_err("refused");
        assert!(!e.limit, "{e}");
        e.msg
    }

    fn values(v: &[&str]) -> Vec<String> {
        v.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn specs_are_checked_with_messages_naming_the_metric() {
        let m = GuestMetrics::detached("room", 10);
        let c = GuestKind::Counter;
        assert_eq!(refused(m.declare(&spec("Kills", c, &[]))), r#"metric name "Kills" must match [a-z][a-z0-9_]* and be at most 64 bytes"#);
        assert!(refused(m.declare(&spec(&"k".repeat(65), c, &[]))).ends_with(r#"kkk" must match [a-z][a-z0-9_]* and be at most 64 bytes"#));
        assert_eq!(refused(m.declare(&spec("", c, &[]))), r#"metric name "" must match [a-z][a-z0-9_]* and be at most 64 bytes"#);
        assert_eq!(refused(m.declare(&spec("hits_sum", c, &[]))), r#"metric name "hits_sum" must not end in _bucket, _count or _sum"#);
        assert_eq!(refused(m.declare(&spec("level_total", GuestKind::Gauge, &[]))), r#"metric name "level_total": only a counter's name may end in _total"#);
        assert_eq!(
            refused(m.declare(&spec("call_duration_seconds", GuestKind::Histogram, &["route"]))),
            r#"metric name "call_duration_seconds": kiwano_guest_call_duration_seconds is one of the host's own metrics"#
        );
        assert_eq!(refused(m.declare(&GuestSpec { help: String::new(), ..spec("a", c, &[]) })), r#"metric "a": help must not be empty"#);
        assert_eq!(refused(m.declare(&GuestSpec { help: "h".repeat(257), ..spec("a", c, &[]) })), r#"metric "a": help of 257 bytes is over 256"#);
        assert_eq!(refused(m.declare(&spec("a", c, &["a", "b", "c", "d", "e", "f", "g", "h", "i"]))), r#"metric "a": at most 8 labels"#);
        assert_eq!(refused(m.declare(&spec("a", c, &["Weapon"]))), r#"metric "a": label name "Weapon" must match [a-z][a-z0-9_]* and be at most 64 bytes"#);
        assert_eq!(refused(m.declare(&spec("a", c, &["server_type"]))), r#"metric "a": label name "server_type" is reserved"#);
        assert_eq!(refused(m.declare(&spec("a", c, &["le"]))), r#"metric "a": label name "le" is reserved"#);
        assert_eq!(refused(m.declare(&spec("a", c, &["x", "x"]))), r#"metric "a": label name "x" appears twice"#);
        assert_eq!(refused(m.declare(&GuestSpec { buckets: vec![1.0], ..spec("a", c, &[]) })), r#"metric "a": only a histogram has buckets"#);
        for buckets in [vec![2.0, 1.0], vec![1.0, f64::INFINITY], vec![1.0, 1.0], (0..33).map(f64::from).collect()] {
            let s = GuestSpec { buckets, ..spec("a", GuestKind::Histogram, &[]) };
            assert_eq!(refused(m.declare(&s)), r#"metric "a": buckets must be finite and increasing, at most 32"#);
        }
        // Nothing refused took an id.
        assert_eq!(m.declare(&spec("kills", c, &["weapon"])), Ok(0));
    }

    #[test]
    fn a_name_is_one_metric_for_every_instance_version_and_server_type() {
        let metrics = crate::Metrics::disabled();
        let room = metrics.guest("room", 10);
        let kills = spec("kills", GuestKind::Counter, &["weapon"]);
        assert_eq!(room.declare(&kills), Ok(0));
        assert_eq!(metrics.guest("room", 99).declare(&kills), Ok(0), "the same scope, the same id");
        assert_eq!(room.declare(&spec("kills_total", GuestKind::Counter, &["weapon"])), Ok(0), "the exported name is the same");
        assert_eq!(room.declare(&spec("level", GuestKind::Gauge, &[])), Ok(1));
        let lobby = metrics.guest("lobby", 10);
        assert_eq!(lobby.declare(&spec("level", GuestKind::Gauge, &[])), Ok(0), "ids are per server type");
        assert_eq!(lobby.declare(&kills), Ok(1));
        let changed = |by: &str| {
            format!(
                r#"metric "kills" is already declared with other labels, kind, help or buckets (by server type {by}); a changed metric needs a new name, or a new version of the one server type declaring it"#
            )
        };
        assert_eq!(refused(lobby.declare(&spec("kills", GuestKind::Counter, &["weapon", "map"]))), changed("lobby"), "its own declaration");
        assert_eq!(refused(room.declare(&GuestSpec { help: "other".into(), ..kills.clone() })), changed("room"), "not within a version");
        let fresh = metrics.guest("shop", 10);
        assert_eq!(fresh.declare(&spec("kills", GuestKind::Gauge, &["weapon"])), Ok(0), "a gauge kiwano_guest_kills is another name");
        assert_eq!(refused(fresh.declare(&spec("kills", GuestKind::Counter, &["map"]))), changed("lobby"));
        assert_eq!(refused(room.version(2).declare(&spec("kills", GuestKind::Counter, &["map"]))), changed("lobby"), "two types declare it");
    }

    /// An exporter that tells which families it exports.
    #[derive(Default)]
    struct Exports(Arc<Mutex<Vec<String>>>);

    struct Fam(String, Arc<Mutex<Vec<String>>>);

    impl Vector for Fam {
        fn series(&self, _: &[&str]) -> Option<Arc<dyn Series>> {
            None
        }
        fn register(&self) -> Result<(), String> {
            self.1.lock().push(self.0.clone());
            Ok(())
        }
        fn unregister(&self) {
            self.1.lock().retain(|f| *f != self.0);
        }
    }

    impl Sink for Exports {
        fn series(&self, _: &'static crate::Family, _: &[&str]) -> Option<Arc<dyn Series>> {
            None
        }
        fn add(&self, _: &'static crate::Family, _: &[&str], _: f64) {}
        fn set(&self, _: &'static crate::Family, _: &[&str], _: f64) {}
        fn observe(&self, _: &'static crate::Family, _: &[&str], _: f64) {}
        fn render(&self) -> (&'static str, String) {
            ("text/plain", self.0.lock().join("\n"))
        }
        fn vector(&self, f: &DynamicFamily) -> Result<Arc<dyn Vector>, String> {
            Ok(Arc::new(Fam(format!("{}{:?}", f.name, f.labels), self.0.clone())))
        }
        fn const_labels(&self) -> Vec<String> {
            vec!["region".into()]
        }
    }

    #[test]
    fn a_new_version_changes_a_metric_when_it_serves() {
        let exports = Arc::new(Exports::default());
        let metrics = crate::Metrics::new(exports.clone());
        let exported = || metrics.render().map(|r| r.1).unwrap_or_default();
        let v1 = metrics.guest("room", 10);
        v1.commit();
        assert_eq!(refused(v1.declare(&spec("a", GuestKind::Gauge, &["region"]))), r#"metric "a": label name "region" is reserved"#);
        assert_eq!(v1.declare(&spec("kills", GuestKind::Counter, &["weapon"])), Ok(0));
        assert_eq!(exported(), r#"kiwano_guest_kills_total["server_type", "weapon"]"#);
        let changed = spec("kills", GuestKind::Counter, &["weapon", "map"]);
        // A version being loaded: its family waits, and the serving one stays exported.
        let v2 = v1.version(2);
        assert_eq!(v2.declare(&changed), Ok(1));
        assert_eq!(v2.declare(&changed), Ok(1), "every instance of it");
        assert_eq!(exported(), r#"kiwano_guest_kills_total["server_type", "weapon"]"#);
        assert_eq!(v1.add(0, &values(&["axe"]), 1.0), Ok(()));
        // Refused: dropped.
        v2.discard();
        assert_eq!(exported(), r#"kiwano_guest_kills_total["server_type", "weapon"]"#, "nothing left to swap in");
        // Another version, which serves: its family replaces the old one.
        let v3 = v1.version(3);
        assert_eq!(v3.declare(&changed), Ok(2));
        v3.commit();
        assert_eq!(exported(), r#"kiwano_guest_kills_total["server_type", "weapon", "map"]"#);
        assert_eq!(v3.add(2, &values(&["axe", "dust"]), 1.0), Ok(()));
        // The old version's instances still record (into nothing) until they stop; a name it
        // never declared that a newer version changed is refused to it.
        assert_eq!(v1.add(0, &values(&["axe"]), 1.0), Ok(()));
        assert_eq!(
            refused(v1.version(2).declare(&spec("kills", GuestKind::Counter, &["weapon"]))),
            r#"metric "kills" was changed by a newer version of server type room"#
        );
        // A serving version that declares a change late (a Rust guest declares on first use)
        // swaps it in at once.
        let v4 = v1.version(4);
        v4.commit();
        assert_eq!(v4.declare(&spec("kills", GuestKind::Counter, &["map"])), Ok(3));
        assert_eq!(exported(), r#"kiwano_guest_kills_total["server_type", "map"]"#);
    }

    #[test]
    fn recordings_are_checked_and_series_are_capped_per_server_type() {
        let m = GuestMetrics::detached("room", 3);
        let kills = m.declare(&spec("kills", GuestKind::Counter, &["weapon"])).unwrap();
        let level = m.declare(&spec("level", GuestKind::Gauge, &[])).unwrap();
        let size = m.declare(&spec("size", GuestKind::Histogram, &["kind"])).unwrap();
        let msg = |r: Result<(), GuestMetricError>| r.expect_err("refused").msg;
        assert_eq!(msg(m.add(9, &[], 1.0)), "no metric with id 9");
        assert_eq!(msg(m.set(kills, &values(&["axe"]), 1.0)), r#"metric "kills" is a counter: record it with add"#);
        assert_eq!(msg(m.observe(level, &[], 1.0)), r#"metric "level" is a gauge: record it with add or set"#);
        assert_eq!(msg(m.add(size, &values(&["a"]), 1.0)), r#"metric "size" is a histogram: record it with observe"#);
        assert_eq!(msg(m.add(kills, &values(&["axe", "x"]), 1.0)), r#"metric "kills" has labels [weapon]: 2 values given"#);
        assert_eq!(msg(m.add(kills, &values(&[&"x".repeat(129)]), 1.0)), r#"metric "kills": a label value of 129 bytes is over 128"#);
        assert_eq!(msg(m.add(kills, &values(&["axe"]), f64::NAN)), r#"metric "kills": the value must be finite"#);
        assert_eq!(msg(m.add(kills, &values(&["axe"]), -1.0)), r#"metric "kills": a counter only goes up (add -1)"#);
        assert_eq!(m.add(kills, &values(&["axe"]), 2.0), Ok(()));
        assert_eq!(m.add(kills, &values(&["axe"]), 1.0), Ok(()), "a known series");
        assert_eq!(m.set(level, &[], -4.5), Ok(()));
        assert_eq!(m.observe(size, &values(&["small"]), 5.0), Ok(()));
        let over = m.add(kills, &values(&["bow"]), 1.0).expect_err("a fourth series");
        assert!(over.limit);
        assert_eq!(over.msg, "metric series limit reached: server type room records at most 3 series (servers.room.max_metric_series)");
        assert_eq!(m.add(kills, &values(&["axe"]), 1.0), Ok(()), "known series still record");
    }

    #[test]
    fn a_server_type_declares_at_most_max_metrics() {
        let m = GuestMetrics::detached("room", 10);
        for i in 0..MAX_METRICS {
            assert_eq!(m.declare(&spec(&format!("m{i}"), GuestKind::Gauge, &[])), Ok(i as u32));
        }
        let e = m.declare(&spec("one_more", GuestKind::Gauge, &[])).expect_err("over");
        assert!(e.limit);
        assert_eq!(e.msg, "metric limit reached: server type room declares at most 128 metrics");
        assert_eq!(m.declare(&spec("m7", GuestKind::Gauge, &[])), Ok(7), "a known one is still found");
    }
}
