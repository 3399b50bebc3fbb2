//! A server type's pool of warm instances, each on a thread of its own.
//!
//! A call goes to the instance its affinity key picks; each instance runs its calls one at a
//! time, in arrival order. Ordering of one session's messages is the server's business (one
//! message of a session in flight at a time); the pool guarantees that a busy or spinning
//! instance delays only the calls queued on it, and never an I/O thread.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use wasmtime::component::Resource;
use wasmtime::{Store, Trap};

use crate::bindings::{Server, types};
use crate::component::Component;
use crate::engine::{EPOCH_TICK, Runtime, RuntimeError};
use crate::host::{CallToken, Caller, GuestError, HostServices, HostState, LogTag, SessionHandle};
use crate::timers::{TimerHandle, Timers};

/// Limits and identity of one server type's pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The server type, e.g. `echo`.
    pub server_type: String,
    /// This server's id.
    pub server_id: String,
    /// Instances in the pool (≥ 1).
    pub instances: usize,
    /// Deadline of one call.
    pub call_timeout: Duration,
    /// Memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// Largest response a handler may return, in bytes.
    pub max_response: usize,
    /// The server type's `config` table as a JSON object, given to `init`.
    pub config_json: String,
}

/// Request or notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    /// Answered.
    Request,
    /// Not answered.
    Notify,
}

/// How calls are spread over instances (see the WIT `affinity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affinity {
    /// By session.
    Session,
    /// By bound uid.
    Uid,
    /// By a session-data field.
    DataField(String),
    /// Any instance.
    None,
}

/// What a guest serves, from its `describe`.
#[derive(Debug, Clone, Default)]
pub struct Description {
    /// `service.method` → kind.
    pub handlers: HashMap<String, HandlerKind>,
    /// Remotes, as `service.method`.
    pub remotes: HashSet<String>,
    /// The guest's preferred affinity.
    pub affinity: Option<Affinity>,
}

/// One client message for a guest.
pub struct Call {
    /// `service.method`.
    pub route: String,
    /// The payload.
    pub body: Bytes,
    /// The session it came from.
    pub session: Arc<dyn SessionHandle>,
}

/// Why a call produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The handler returned an error: it goes to the client unchanged.
    #[error("guest error {}: {}", .0.code, .0.msg)]
    Guest(GuestError),
    /// The guest trapped; the instance was discarded.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline; the instance was discarded.
    #[error("guest call exceeded its {0:?} deadline")]
    Deadline(Duration),
    /// The guest hit its memory cap and trapped; the instance was discarded.
    #[error("guest ran out of memory (limit {0} bytes)")]
    OutOfMemory(usize),
    /// The response was larger than allowed.
    #[error("guest response of {size} bytes exceeds the {max}-byte limit")]
    ResponseTooLarge {
        /// Response size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// No instance could be made to run the call, or the pool is shut down.
    #[error("no instance available: {0}")]
    Unavailable(String),
}

enum Work {
    Handle { route: String, body: Bytes, session: Arc<dyn SessionHandle> },
    SessionClosed(Arc<dyn SessionHandle>),
    Remote { route: String, body: Bytes, hops: u64 },
}

type CallResult = Result<Vec<u8>, CallError>;

/// Where a call's result goes.
enum Reply {
    Async(oneshot::Sender<CallResult>),
}

impl Reply {
    fn send(self, r: CallResult) {
        match self {
            Self::Async(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

pub(crate) struct Job {
    work: Work,
    reply: Reply,
}

/// What an instance's thread receives.
pub(crate) enum Msg {
    Job(Job),
    /// A timer set by this instance fired.
    Timer { id: u64, payload: Bytes },
    Shutdown(oneshot::Sender<()>),
}

/// Counters of a pool, for tests and metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Calls completed (successfully or not).
    pub calls: AtomicU64,
    /// Instances created after the first ones (after traps and deadlines).
    pub rebuilds: AtomicU64,
}

/// A server type's instances.
pub struct ServerPool {
    server_type: String,
    workers: Vec<mpsc::Sender<Msg>>,
    next: AtomicUsize,
    description: Description,
    stats: Arc<PoolStats>,
    timers: Arc<Timers>,
}

impl std::fmt::Debug for ServerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPool").field("server_type", &self.server_type).field("instances", &self.workers.len()).finish()
    }
}

impl ServerPool {
    /// Starts `config.instances` instances of `component`, each initialised with `init`, and
    /// reads the guest's description from the first.
    ///
    /// # Errors
    /// When an instance cannot be created, `describe` traps, or `init` fails.
    pub fn start(
        runtime: &Runtime,
        component: &Component,
        config: PoolConfig,
        services: Arc<dyn HostServices>,
    ) -> Result<Arc<Self>, RuntimeError> {
        let config = Arc::new(config);
        let stats = Arc::new(PoolStats::default());
        let timers = Arc::new(Timers::default());
        let caller = Arc::new(Caller { server_type: config.server_type.clone(), server_id: config.server_id.clone() });
        let rt = tokio::runtime::Handle::try_current().ok();
        let fail = |msg: String| RuntimeError::Instance { server_type: config.server_type.clone(), msg };
        let mut workers = Vec::new();
        let mut description = None;
        for i in 0..config.instances.max(1) {
            let (tx, rx) = mpsc::channel();
            let timer = TimerHandle { timers: timers.clone(), tx: tx.clone(), rt: rt.clone() };
            let env = InstanceEnv { services: services.clone(), caller: caller.clone(), timers: timer };
            let mut worker = Worker::new(runtime, component, config.clone(), i as u32, stats.clone(), env);
            let slot = worker.instantiate().map_err(fail)?;
            worker.slot = Some(slot);
            if description.is_none() {
                description = Some(worker.describe().map_err(fail)?);
            }
            std::thread::Builder::new()
                .name(format!("wasm-{}-{i}", config.server_type))
                .spawn(move || worker.run(rx))
                .map_err(|e| fail(format!("cannot start an instance thread: {e}")))?;
            workers.push(tx);
        }
        Ok(Arc::new(Self {
            server_type: config.server_type.clone(),
            workers,
            next: AtomicUsize::new(0),
            description: description.unwrap_or_default(),
            stats,
            timers,
        }))
    }

    /// What the guest serves.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// The number of instances.
    pub fn instances(&self) -> usize {
        self.workers.len()
    }

    /// The pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    fn pick(&self, key: Option<u64>) -> &mpsc::Sender<Msg> {
        let n = self.workers.len() as u64;
        let i = match key {
            Some(k) => (k % n) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len(),
        };
        &self.workers[i]
    }

    async fn submit(&self, key: Option<u64>, work: Work) -> CallResult {
        let (reply, rx) = oneshot::channel();
        // A send fails only after shutdown; the dropped reply then reads as Unavailable.
        let _ = self.pick(key).send(Msg::Job(Job { work, reply: Reply::Async(reply) }));
        rx.await.unwrap_or_else(|_| Err(CallError::Unavailable("server type is shut down".into())))
    }

    /// Runs `call` on the instance picked by `key` (`None`: any instance).
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call(&self, key: Option<u64>, call: Call) -> Result<Vec<u8>, CallError> {
        self.submit(key, Work::Handle { route: call.route, body: call.body, session: call.session }).await
    }

    /// Tells the instance picked by `key` that `session` closed.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn session_closed(&self, key: Option<u64>, session: Arc<dyn SessionHandle>) -> Result<(), CallError> {
        self.submit(key, Work::SessionClosed(session)).await.map(drop)
    }

    /// Runs the remote `route` (`service.method`) on any instance; `hops` counts the RPCs that
    /// led to this call.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn remote(&self, route: &str, body: Bytes, hops: u64) -> Result<Vec<u8>, CallError> {
        self.submit(None, Work::Remote { route: route.to_owned(), body, hops }).await
    }

    /// Lets every instance finish the calls queued on it, calls the guests' `shutdown` and
    /// stops the threads.
    pub async fn shutdown(&self) {
        self.timers.cancel_all();
        let mut waits = Vec::new();
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.send(Msg::Shutdown(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }
}

struct Slot {
    store: Store<HostState>,
    bindings: Server,
}

/// What an instance's host functions reach.
struct InstanceEnv {
    services: Arc<dyn HostServices>,
    caller: Arc<Caller>,
    timers: TimerHandle,
}

/// One instance and the thread that owns it.
struct Worker {
    env: InstanceEnv,
    runtime: Runtime,
    component: Component,
    config: Arc<PoolConfig>,
    index: u32,
    tag: Arc<Mutex<LogTag>>,
    slot: Option<Slot>,
    stats: Arc<PoolStats>,
    deadline_ticks: u64,
}

impl Worker {
    fn new(
        runtime: &Runtime,
        component: &Component,
        config: Arc<PoolConfig>,
        index: u32,
        stats: Arc<PoolStats>,
        env: InstanceEnv,
    ) -> Self {
        let tag = LogTag { server_type: config.server_type.as_str().into(), instance: index, ..LogTag::default() };
        let deadline_ticks = ticks(config.call_timeout);
        Self {
            env,
            runtime: runtime.clone(),
            component: component.clone(),
            config,
            index,
            tag: Arc::new(Mutex::new(tag)),
            slot: None,
            stats,
            deadline_ticks,
        }
    }

    fn set_tag(&self, route: &str, session: u64) {
        let mut tag = self.tag.lock();
        tag.route.clear();
        tag.route.push_str(route);
        tag.session = session;
    }

    /// Creates a fresh instance and runs its `init`.
    fn instantiate(&self) -> Result<Slot, String> {
        self.set_tag("init", 0);
        let state = HostState::new(
            self.tag.clone(),
            self.config.memory_limit,
            self.env.services.clone(),
            self.env.caller.clone(),
            self.env.timers.clone(),
        );
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        // At the deadline: grant the time the call spent blocked in the host (RPC), else trap.
        store.epoch_deadline_callback(|mut ctx| {
            let extra = std::mem::take(&mut ctx.data_mut().deadline_extension);
            if extra > 0 {
                Ok(wasmtime::UpdateDeadline::Continue(extra))
            } else {
                Err(Trap::Interrupt.into())
            }
        });
        // Initialisation may do more than a call: give it ten call budgets.
        store.set_epoch_deadline(self.deadline_ticks.saturating_mul(10));
        let bindings = self.component.pre.instantiate(&mut store).map_err(|e| format!("instantiation failed: {e:#}"))?;
        let info = types::InitInfo {
            server_type: self.config.server_type.clone(),
            server_id: self.config.server_id.clone(),
            instance: self.index,
            config: self.config.config_json.clone(),
        };
        match bindings.kiwano_server_guest().call_init(&mut store, &info) {
            Ok(Ok(())) => Ok(Slot { store, bindings }),
            Ok(Err(e)) => Err(format!("init failed: {}: {}", e.code, e.msg)),
            Err(e) => Err(format!("init trapped: {e:#}")),
        }
    }

    fn describe(&mut self) -> Result<Description, String> {
        let Some(slot) = self.slot.as_mut() else { return Err("no instance".into()) };
        slot.store.set_epoch_deadline(self.deadline_ticks.saturating_mul(10));
        let d = slot.bindings.kiwano_server_guest().call_describe(&mut slot.store).map_err(|e| format!("describe trapped: {e:#}"))?;
        let handlers = d
            .handlers
            .into_iter()
            .map(|h| {
                let kind = match h.kind {
                    types::HandlerKind::Request => HandlerKind::Request,
                    types::HandlerKind::Notify => HandlerKind::Notify,
                };
                (h.route, kind)
            })
            .collect();
        let remotes = d.remotes.into_iter().collect();
        let affinity = d.affinity.map(|a| match a {
            types::Affinity::Session => Affinity::Session,
            types::Affinity::Uid => Affinity::Uid,
            types::Affinity::DataField(f) => Affinity::DataField(f),
            types::Affinity::None => Affinity::None,
        });
        Ok(Description { handlers, remotes, affinity })
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = next_message(&rx) {
            match msg {
                Msg::Job(job) => {
                    let result = self.execute(job.work);
                    self.stats.calls.fetch_add(1, Ordering::Relaxed);
                    job.reply.send(result);
                }
                Msg::Timer { id, payload } => {
                    if self.env.timers.fire(id) {
                        if let Err(e) = self.execute_timer(id, &payload) {
                            tracing::warn!(server_type = %self.config.server_type, instance = self.index, timer = id, "on-timer failed: {e}");
                        }
                    }
                }
                Msg::Shutdown(done) => {
                    self.set_tag("shutdown", 0);
                    if let Some(slot) = self.slot.as_mut() {
                        slot.store.set_epoch_deadline(self.deadline_ticks.saturating_mul(10));
                        if let Err(e) = slot.bindings.kiwano_server_guest().call_shutdown(&mut slot.store) {
                            tracing::warn!(server_type = %self.config.server_type, instance = self.index, "guest shutdown trapped: {e:#}");
                        }
                    }
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Makes sure an instance exists, rebuilding it after a trap.
    fn ensure(&mut self) -> Result<(), CallError> {
        if self.slot.is_none() {
            let slot = self.instantiate().map_err(|msg| {
                tracing::error!(server_type = %self.config.server_type, instance = self.index, "cannot rebuild instance: {msg}");
                CallError::Unavailable(msg)
            })?;
            self.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
            self.slot = Some(slot);
        }
        Ok(())
    }

    fn execute(&mut self, work: Work) -> CallResult {
        self.ensure()?;
        let (route, session) = match &work {
            Work::Handle { route, session, .. } => (route.as_str(), Some(session)),
            Work::SessionClosed(session) => ("on-session-close", Some(session)),
            Work::Remote { route, .. } => (route.as_str(), None),
        };
        let hops = if let Work::Remote { hops, .. } = &work { *hops } else { 0 };
        self.set_tag(route, session.map_or(0, |s| s.id()));
        let Some(slot) = self.slot.as_mut() else { return Err(CallError::Unavailable("no instance".into())) };
        let data = slot.store.data_mut();
        data.call = session.cloned();
        data.limits.hit = false;
        data.deadline_extension = 0;
        data.hops = hops;
        let token = data.table.push(CallToken).map_err(|e| CallError::Unavailable(e.to_string()))?;
        // Lower a *borrow* of the entry: passing the own handle would leak one handle per call.
        let borrow = || Resource::<CallToken>::new_borrow(token.rep());
        slot.store.set_epoch_deadline(self.deadline_ticks);
        let guest = slot.bindings.kiwano_server_guest();
        let result = match &work {
            Work::Handle { route, body, .. } => guest.call_handle(&mut slot.store, borrow(), route, body),
            Work::SessionClosed(_) => guest.call_on_session_close(&mut slot.store, borrow()).map(|()| Ok(Vec::new())),
            Work::Remote { route, body, .. } => guest.call_remote(&mut slot.store, route, body),
        };
        let data = slot.store.data_mut();
        let _ = data.table.delete(token);
        data.call = None;
        match result {
            Ok(Ok(bytes)) if bytes.len() > self.config.max_response => {
                Err(CallError::ResponseTooLarge { size: bytes.len(), max: self.config.max_response })
            }
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(CallError::Guest(e.into())),
            Err(e) => Err(self.trapped(e)),
        }
    }

    fn execute_timer(&mut self, id: u64, payload: &[u8]) -> Result<(), CallError> {
        self.ensure()?;
        self.set_tag("on-timer", 0);
        let Some(slot) = self.slot.as_mut() else { return Err(CallError::Unavailable("no instance".into())) };
        let data = slot.store.data_mut();
        data.limits.hit = false;
        data.deadline_extension = 0;
        slot.store.set_epoch_deadline(self.deadline_ticks);
        let r = slot.bindings.kiwano_server_guest().call_on_timer(&mut slot.store, id, payload);
        r.map_err(|e| self.trapped(e))
    }

    /// Classifies a trap and drops the instance: a trapped store cannot be entered again.
    fn trapped(&mut self, e: wasmtime::Error) -> CallError {
        let oom = self.slot.as_ref().is_some_and(|s| s.store.data().limits.hit);
        self.slot = None;
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            CallError::Deadline(self.config.call_timeout)
        } else if oom {
            CallError::OutOfMemory(self.config.memory_limit)
        } else {
            CallError::Trap(format!("{e:#}"))
        }
    }
}

/// Spins before parking: under load the next call arrives within microseconds, and parking
/// and waking an instance thread (futex, context switch) costs more than the call itself.
const SPINS_BEFORE_PARK: u32 = 64;

fn next_message(rx: &mpsc::Receiver<Msg>) -> Option<Msg> {
    for _ in 0..SPINS_BEFORE_PARK {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    rx.recv().ok()
}

/// Epoch ticks covering `d`, plus one for the tick in progress.
fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}
