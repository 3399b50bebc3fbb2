#![cfg_attr(target_arch = "wasm32", allow(dead_code))]
//! An in-memory host, so a guest's logic runs in a plain `cargo test` (native target).
//!
//! Each test thread has its own host: groups, uid bindings, recorded timers, log records and
//! metrics ([`metric`], [`histogram`]), and an RPC responder. [`MockSession`] stands for a client's session; bind it with
//! `ctx.bind(..)` (or [`bind_user`]) and pushes to its uid are recorded on it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::bindings::kiwano::server::metrics::{MetricKind, MetricSpec};
use crate::host::Host;
use crate::host::metrics::Op;
use crate::{Error, Level};

#[derive(Default)]
struct SessionState {
    uid: Option<String>,
    data: serde_json::Map<String, serde_json::Value>,
    pushes: Vec<(String, Vec<u8>)>,
    kicked: bool,
    displaced: bool,
    pins: Vec<(String, String)>,
}

/// A session for unit tests: holds uid, data, and the pushes and kick it received.
#[derive(Clone)]
pub struct MockSession {
    id: u64,
    handshake: String,
    remote: String,
    state: Rc<RefCell<SessionState>>,
}

impl MockSession {
    /// A session with id `id`, an empty handshake and address `127.0.0.1:5000`.
    pub fn new(id: u64) -> Self {
        Self { id, handshake: "{}".into(), remote: "127.0.0.1:5000".into(), state: Rc::default() }
    }

    /// Sets the handshake JSON the session reports.
    #[must_use]
    pub fn with_handshake(mut self, handshake: serde_json::Value) -> Self {
        self.handshake = handshake.to_string();
        self
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The bound uid.
    pub fn uid(&self) -> Option<String> {
        self.state.borrow().uid.clone()
    }

    /// Messages pushed to this session, as `(route, body)`.
    pub fn pushes(&self) -> Vec<(String, Vec<u8>)> {
        self.state.borrow().pushes.clone()
    }

    /// Whether the session was kicked.
    pub fn kicked(&self) -> bool {
        self.state.borrow().kicked
    }

    /// Whether a newer session bound this session's uid since (see
    /// [`Context::displaced`](crate::Context::displaced)).
    pub fn displaced(&self) -> bool {
        self.state.borrow().displaced
    }

    pub(crate) fn bind(&self, uid: &str) -> Result<(), Error> {
        if uid.is_empty() {
            return Err(Error::new("PIT-400", "illegal uid: the uid is empty"));
        }
        if let Some(bound) = self.uid() {
            return Err(Error::new("PIT-400", format!("session is already bound to an uid ({bound:?})")));
        }
        self.state.borrow_mut().uid = Some(uid.to_owned());
        bind_user(uid, self);
        Ok(())
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.state.borrow().data.get(key).map(ToString::to_string)
    }

    pub(crate) fn set(&self, key: &str, json: &str) -> Result<(), Error> {
        let v = serde_json::from_str(json)?;
        self.state.borrow_mut().data.insert(key.to_owned(), v);
        Ok(())
    }

    pub(crate) fn data(&self) -> String {
        serde_json::Value::Object(self.state.borrow().data.clone()).to_string()
    }

    pub(crate) fn set_data(&self, json: &str) -> Result<(), Error> {
        match serde_json::from_str(json)? {
            serde_json::Value::Object(m) => {
                self.state.borrow_mut().data = m;
                Ok(())
            }
            _ => Err(Error::new("PIT-400", "session data must be a JSON object")),
        }
    }

    pub(crate) fn push(&self, route: &str, body: &[u8]) -> Result<(), Error> {
        self.state.borrow_mut().pushes.push((route.to_owned(), body.to_vec()));
        Ok(())
    }

    pub(crate) fn kick(&self) -> Result<(), Error> {
        self.state.borrow_mut().kicked = true;
        Ok(())
    }

    pub(crate) fn handshake(&self) -> String {
        self.handshake.clone()
    }

    pub(crate) fn remote_address(&self) -> String {
        self.remote.clone()
    }

    pub(crate) fn pin(&self, server_type: &str, server_id: &str) -> Result<(), Error> {
        self.state.borrow_mut().pins.push((server_type.to_owned(), server_id.to_owned()));
        Ok(())
    }

    /// The pins set on this session, as `(server type, server id)`.
    pub fn pins(&self) -> Vec<(String, String)> {
        self.state.borrow().pins.clone()
    }
}

type RpcFn = Box<dyn Fn(Option<&str>, &str, &[u8]) -> Result<Vec<u8>, Error>>;

/// A timer a guest set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockTimer {
    /// Its id.
    pub id: u64,
    /// Delay or period, in ms.
    pub ms: u64,
    /// `every` rather than `after`.
    pub repeat: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Mock {
    users: HashMap<String, MockSession>,
    groups: BTreeMap<String, (Vec<String>, bool)>,
    rpc: Option<RpcFn>,
    timers: Vec<MockTimer>,
    next_timer: u64,
    logs: Vec<(Level, String)>,
    /// Declared metrics by id, with their series.
    metrics: Vec<(MetricSpec, MockSeries)>,
}

/// A mock metric's series: label values → (observations, value or sum).
type MockSeries = BTreeMap<Vec<String>, (u64, f64)>;

thread_local! {
    static MOCK: RefCell<Mock> = RefCell::default();
}

/// Runs `f` on this thread's mock host.
pub(crate) fn with_mock<R>(f: impl FnOnce(&dyn Host) -> R) -> R {
    f(&MockHost)
}

struct MockHost;

fn state<R>(f: impl FnOnce(&mut Mock) -> R) -> R {
    MOCK.with(|m| f(&mut m.borrow_mut()))
}

fn group<R>(name: &str, f: impl FnOnce(&mut (Vec<String>, bool)) -> Result<R, Error>) -> Result<R, Error> {
    state(|m| f(m.groups.get_mut(name).ok_or_else(|| Error::new("PIT-404", "group not found"))?))
}

/// Clears this thread's mock host.
pub fn reset() {
    state(|m| *m = Mock::default());
}

/// Routes pushes and kicks for `uid` to `session`. A session that held the uid before is
/// displaced, as on the host when a player reconnects.
pub fn bind_user(uid: &str, session: &MockSession) {
    let previous = state(|m| m.users.insert(uid.to_owned(), session.clone()));
    if let Some(old) = previous.filter(|old| !Rc::ptr_eq(&old.state, &session.state)) {
        old.state.borrow_mut().displaced = true;
    }
}

/// Answers RPCs with `f(server_id, route, body)`; without one, RPCs fail with `PIT-500 no
/// servers available of this type`.
pub fn on_rpc(f: impl Fn(Option<&str>, &str, &[u8]) -> Result<Vec<u8>, Error> + 'static) {
    state(|m| m.rpc = Some(Box::new(f)));
}

/// The live timers set so far.
pub fn timers() -> Vec<MockTimer> {
    state(|m| m.timers.clone())
}

/// The members of a group, if it exists.
pub fn group_members(name: &str) -> Option<Vec<String>> {
    state(|m| m.groups.get(name).map(|g| g.0.clone()))
}

/// The log records written so far.
pub fn logs() -> Vec<(Level, String)> {
    state(|m| m.logs.clone())
}

impl Host for MockHost {
    fn push(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, Error> {
        let targets: Vec<(String, Option<MockSession>)> =
            state(|m| uids.iter().map(|u| (u.clone(), m.users.get(u).cloned())).collect());
        let mut missed = Vec::new();
        for (uid, s) in targets {
            match s {
                Some(s) => s.push(route, body)?,
                None => missed.push(uid),
            }
        }
        Ok(missed)
    }

    fn kick(&self, uids: &[String]) -> Result<Vec<String>, Error> {
        let targets: Vec<(String, Option<MockSession>)> =
            state(|m| uids.iter().map(|u| (u.clone(), m.users.get(u).cloned())).collect());
        Ok(targets
            .into_iter()
            .filter_map(|(uid, s)| match s {
                Some(s) => s.kick().err().map(|_| uid),
                None => Some(uid),
            })
            .collect())
    }

    fn group_create(&self, name: &str, ttl_ms: Option<u64>) -> Result<(), Error> {
        state(|m| {
            if m.groups.contains_key(name) {
                return Err(Error::new("PIT-400", "group already exists"));
            }
            m.groups.insert(name.to_owned(), (Vec::new(), ttl_ms.is_some()));
            Ok(())
        })
    }

    fn group_delete(&self, name: &str) -> Result<(), Error> {
        state(|m| m.groups.remove(name).map(drop).ok_or_else(|| Error::new("PIT-404", "group not found")))
    }

    fn group_add(&self, name: &str, uid: &str) -> Result<(), Error> {
        if uid.is_empty() {
            return Err(Error::new("PIT-400", "empty uid"));
        }
        group(name, |g| {
            if g.0.iter().any(|u| u == uid) {
                return Err(Error::new("PIT-400", "member already exists in group"));
            }
            g.0.push(uid.to_owned());
            Ok(())
        })
    }

    fn group_remove(&self, name: &str, uid: &str) -> Result<(), Error> {
        group(name, |g| match g.0.iter().position(|u| u == uid) {
            Some(i) => {
                g.0.remove(i);
                Ok(())
            }
            None => Err(Error::new("PIT-404", "member not found in the group")),
        })
    }

    fn group_remove_all(&self, name: &str) -> Result<(), Error> {
        group(name, |g| {
            g.0.clear();
            Ok(())
        })
    }

    fn group_contains(&self, name: &str, uid: &str) -> Result<bool, Error> {
        group(name, |g| Ok(g.0.iter().any(|u| u == uid)))
    }

    fn group_members(&self, name: &str) -> Result<Vec<String>, Error> {
        group(name, |g| Ok(g.0.clone()))
    }

    fn group_count(&self, name: &str) -> Result<u32, Error> {
        group(name, |g| Ok(u32::try_from(g.0.len()).unwrap_or(u32::MAX)))
    }

    fn group_renew(&self, name: &str) -> Result<(), Error> {
        group(name, |g| if g.1 { Ok(()) } else { Err(Error::new("PIT-404", "memory group TTL not found")) })
    }

    fn group_broadcast(&self, name: &str, route: &str, body: &[u8]) -> Result<(), Error> {
        let members = self.group_members(name)?;
        self.push(route, body, &members).map(drop)
    }

    fn rpc(&self, server_id: Option<&str>, route: &str, body: &[u8], _timeout_ms: Option<u32>) -> Result<Vec<u8>, Error> {
        let rpc = state(|m| m.rpc.take());
        let out = match &rpc {
            Some(f) => f(server_id, route, body),
            None => {
                let t = route.split('.').next().unwrap_or_default();
                Err(Error::new("PIT-500", format!("no servers available of this type: {t}")))
            }
        };
        state(|m| m.rpc = rpc);
        out
    }

    fn timer_start(&self, ms: u64, repeat: bool, payload: &[u8]) -> u64 {
        state(|m| {
            m.next_timer += 1;
            let id = m.next_timer;
            m.timers.push(MockTimer { id, ms, repeat, payload: payload.to_vec() });
            id
        })
    }

    fn timer_cancel(&self, id: u64) -> bool {
        state(|m| {
            let before = m.timers.len();
            m.timers.retain(|t| t.id != id);
            m.timers.len() != before
        })
    }

    fn log(&self, level: Level, message: &str, _fields: &[(String, String)]) {
        state(|m| m.logs.push((level, message.to_owned())));
    }

    fn metric_declare(&self, spec: &MetricSpec) -> Result<u32, Error> {
        let name = &spec.name;
        let valid = |s: &str| s.len() <= 64 && s.starts_with(|c: char| c.is_ascii_lowercase()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid(name) {
            return Err(Error::bad_request(format!("metric name {name:?} must match [a-z][a-z0-9_]* and be at most 64 bytes")));
        }
        if let Some(l) = spec.labels.iter().find(|l| !valid(l)) {
            return Err(Error::bad_request(format!("metric {name:?}: label name {l:?} must match [a-z][a-z0-9_]* and be at most 64 bytes")));
        }
        state(|m| {
            if let Some(i) = m.metrics.iter().position(|(s, _)| s.name == *name) {
                let same = m.metrics[i].0.kind == spec.kind && m.metrics[i].0.labels == spec.labels;
                return if same { Ok(i as u32) } else { Err(Error::bad_request(format!("metric {name:?} is already declared with other labels, kind, help or buckets"))) };
            }
            m.metrics.push((spec.clone(), BTreeMap::new()));
            Ok(m.metrics.len() as u32 - 1)
        })
    }

    fn metric_record(&self, op: Op, id: u32, labels: &[String], value: f64) -> Result<(), Error> {
        state(|m| {
            let Some((spec, series)) = m.metrics.get_mut(id as usize) else { return Err(Error::bad_request(format!("no metric with id {id}"))) };
            let name = &spec.name;
            let (kind, how) = match spec.kind {
                MetricKind::Counter => ("counter", "add"),
                MetricKind::Gauge => ("gauge", "add or set"),
                MetricKind::Histogram => ("histogram", "observe"),
            };
            let fits = matches!((spec.kind, op), (MetricKind::Counter, Op::Add) | (MetricKind::Gauge, Op::Add | Op::Set) | (MetricKind::Histogram, Op::Observe));
            if !fits {
                return Err(Error::bad_request(format!("metric {name:?} is a {kind}: record it with {how}")));
            }
            if labels.len() != spec.labels.len() {
                return Err(Error::bad_request(format!("metric {name:?} has labels [{}]: {} values given", spec.labels.join(", "), labels.len())));
            }
            if !value.is_finite() {
                return Err(Error::bad_request(format!("metric {name:?}: the value must be finite")));
            }
            if spec.kind == MetricKind::Counter && value < 0.0 {
                return Err(Error::bad_request(format!("metric {name:?}: a counter only goes up (add {value})")));
            }
            let v = series.entry(labels.to_vec()).or_default();
            match op {
                Op::Add => v.1 += value,
                Op::Set => v.1 = value,
                Op::Observe => *v = (v.0 + 1, v.1 + value),
            }
            Ok(())
        })
    }
}

fn metric_series(name: &str, labels: &[&str]) -> Option<(MetricKind, (u64, f64))> {
    let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
    state(|m| m.metrics.iter().find(|(s, _)| s.name == name).and_then(|(s, series)| series.get(&labels).map(|v| (s.kind, *v))))
}

/// The value of a counter or gauge series (`name` as declared, one value per label name), if
/// it was recorded.
pub fn metric(name: &str, labels: &[&str]) -> Option<f64> {
    metric_series(name, labels).filter(|(k, _)| *k != MetricKind::Histogram).map(|(_, v)| v.1)
}

/// The count and sum of a histogram series, if it was observed.
pub fn histogram(name: &str, labels: &[&str]) -> Option<(u64, f64)> {
    metric_series(name, labels).filter(|(k, _)| *k == MetricKind::Histogram).map(|(_, v)| v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::metrics::{Counter, Gauge, Histogram};

    static HITS: Counter = Counter::new("hits", "Hits by color", &["color"]);
    static LEVEL: Gauge = Gauge::new("level", "Level", &[]);
    static SIZE: Histogram = Histogram::new("size", "Sizes", &["kind"], &[1.0, 10.0]);

    #[test]
    fn metrics_record_into_the_in_memory_host_with_the_hosts_checks() {
        super::reset();
        HITS.add(&["red"], 2.0).unwrap();
        HITS.inc(&["red"]).unwrap();
        LEVEL.set(&[], 7.5).unwrap();
        LEVEL.dec(&[]).unwrap();
        SIZE.observe(&["small"], 5.0).unwrap();
        SIZE.observe(&["small"], 2.0).unwrap();
        assert_eq!(super::metric("hits", &["red"]), Some(3.0));
        assert_eq!(super::metric("hits", &["blue"]), None);
        assert_eq!(super::metric("level", &[]), Some(6.5));
        assert_eq!(super::histogram("size", &["small"]), Some((2, 7.0)));
        let e = HITS.add(&["red"], -1.0).unwrap_err();
        assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-400", r#"metric "hits": a counter only goes up (add -1)"#));
        let e = HITS.inc(&["red", "x"]).unwrap_err();
        assert_eq!(e.msg, r#"metric "hits" has labels [color]: 2 values given"#);
        static BAD: Counter = Counter::new("Bad", "b", &[]);
        assert_eq!(BAD.declare().unwrap_err().msg, r#"metric name "Bad" must match [a-z][a-z0-9_]* and be at most 64 bytes"#);
    }
}
