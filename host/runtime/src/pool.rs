//! A server type's pool of warm instances, each with a thread of its own.
//!
//! A call goes to the instance its affinity key picks; each instance runs its calls one at a
//! time, in arrival order. Ordering of one session's messages is the server's business (one
//! message of a session in flight at a time); the pool guarantees that a busy or spinning
//! instance delays only the calls queued on it, and never the other connections.
//!
//! A client call runs on the I/O thread that asked, once its instance is free: the instance
//! sits behind a fair async lock, so calls run in arrival order and a released instance goes
//! straight to the next waiting caller, without the two thread hops of handing every call to a
//! thread of the instance's own. That thread still runs timers, and every call of a pool whose
//! calls may not run inline (see [`PoolConfig::inline_calls`], calls from a current-thread
//! runtime, and RPC-invoked calls that could outlive their caller's timeout).
//!
//! A call on an I/O thread runs in slices: if it is still running after a whole epoch tick,
//! the I/O thread hands its other connections to a fresh thread (`tokio::task::block_in_place`)
//! and finishes the call as a blocking thread, so a slow or spinning guest holds up other
//! connections for one tick at most.

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
use crate::io::hand_off_io_thread;
use crate::host::{CallChain, CallToken, Caller, GuestError, HostServices, HostState, LogTag, SessionHandle};
use crate::timers::{TimerHandle, Timers};
use crate::transaction::Transaction;
use kiwano_metrics::families;

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
    /// Whether calls may run on the I/O thread that makes them (see the module documentation):
    /// the caller waits, unable to do anything else, until the call ends.
    pub inline_calls: bool,
    /// Memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// Largest response a handler may return, and largest error (code, message and metadata
    /// together), in bytes.
    pub max_response: usize,
    /// The server type's `config` table as a JSON object, given to `init`.
    pub config_json: String,
    /// Live timers one instance may hold.
    pub max_timers: usize,
    /// Log records and stdout/stderr lines one instance may emit per second.
    pub log_rate: u32,
    /// What one call may do through the host.
    pub call_limits: crate::host::CallLimits,
    /// Whether this pool serves remotes: its instances are named in the call chain of the RPCs
    /// they make, so a remote never waits on an instance that waits on it.
    pub remotes: bool,
    /// Untrusted mode: every call runs on a fresh instance, and its host effects (session data,
    /// group changes, pushes, kicks) are applied only when it returns (see `transaction`).
    pub untrusted: bool,
    /// Where calls, failures and new instances are recorded, and the guest's own metrics.
    pub metrics: kiwano_metrics::Metrics,
    /// Series the guest's own metrics may hold (over all its metrics, versions and pools).
    pub max_metric_series: usize,
    /// The version of the component this pool runs (1 at start, one more per hot reload), for
    /// the guest's metrics: a new version may change their specs.
    pub component_version: u64,
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
    /// The guest's error (code, message and metadata) was larger than allowed.
    #[error("guest error of {size} bytes exceeds the {max}-byte limit")]
    ErrorTooLarge {
        /// Error size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Every instance that could run this remote waits, up the chain of calls, for this very
    /// call: it would wait for its own caller until the timeout.
    #[error("rpc cycle: every remote instance of {0} is waiting up this call's chain")]
    Cycle(String),
    /// No instance could be made to run the call, or the pool is shut down.
    #[error("no instance available: {0}")]
    Unavailable(String),
}

enum Work {
    Handle { route: String, body: Bytes, session: Arc<dyn SessionHandle> },
    SessionClosed(Arc<dyn SessionHandle>),
    Remote { route: String, body: Bytes, chain: CallChain },
}

type CallResult = Result<Vec<u8>, CallError>;

/// What runs with a call's result on the thread that ran the call, before its instance takes
/// its next call or timer tick: a response sent from here reaches the client before anything
/// the instance does next (a timer's push, another call's push).
pub type Finish = Box<dyn FnOnce(Result<Vec<u8>, CallError>) + Send>;

/// Where a call's result goes.
enum ReplyTo {
    /// Back to the awaiting caller.
    Async(oneshot::Sender<CallResult>),
    /// Into a finisher, then a signal to the awaiting caller.
    Finish(Finish, oneshot::Sender<()>),
}

/// A call's destination. Dropped unused (its instance stopped, its thread gone), it answers
/// `Unavailable`, so that a finisher always runs once.
struct Reply(Option<ReplyTo>);

impl Reply {
    fn send(mut self, r: CallResult) {
        match self.0.take() {
            Some(ReplyTo::Async(tx)) => {
                let _ = tx.send(r);
            }
            Some(ReplyTo::Finish(f, done)) => {
                f(r);
                let _ = done.send(());
            }
            None => {}
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(to) = self.0.take() {
            Self(Some(to)).send(Err(CallError::Unavailable("server type is shut down".into())));
        }
    }
}

pub(crate) struct Job {
    work: Work,
    reply: Reply,
    /// The span of whoever asked (a message, an RPC): the guest call's parent on this thread.
    parent: tracing::Span,
}

/// What an instance's thread receives.
pub(crate) enum Msg {
    Job(Job),
    /// A timer set by this instance fired.
    Timer { id: u64, payload: Bytes },
    Shutdown(oneshot::Sender<()>),
}

/// Counters of a pool (or of one of its instances: each keeps its own, updated by whoever
/// holds the instance, so that no cache line is shared between I/O threads), for tests and
/// metrics.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PoolStats {
    /// Calls completed (successfully or not).
    pub calls: AtomicU64,
    /// Instances created after the first ones (after traps and deadlines).
    pub rebuilds: AtomicU64,
    /// Instances replaced between calls because their memory passed three quarters of
    /// `memory_limit` (a garbage-collected guest's heap grows until its collector runs out).
    pub recycled: AtomicU64,
    /// Instances created for one call each (untrusted mode), not counting rebuilds after traps.
    pub fresh: AtomicU64,
    /// Calls run on an I/O thread rather than on the instance's own thread.
    pub inline: AtomicU64,
    /// Calls running now (0 or 1 for one instance).
    pub busy: AtomicU64,
    /// Ticks of repeating timers dropped because the previous tick still waited for its
    /// instance (a handler slower than its period).
    pub timer_ticks_dropped: AtomicU64,
}

/// One instance and its thread's queue.
struct Instance {
    tx: mpsc::Sender<Msg>,
    /// The instance, for whoever runs a call on it: a fair lock, so calls run in arrival order
    /// and a released instance goes straight to the next waiting caller.
    worker: Arc<tokio::sync::Mutex<Worker>>,
}

impl Instance {
    /// Runs `work` on the calling thread once the instance is free (see the module
    /// documentation).
    async fn run_inline(&self, work: Work) -> CallResult {
        let mut worker = self.worker.lock().await;
        if worker.stopped {
            return Err(CallError::Unavailable("server type is shut down".into()));
        }
        let result = worker.execute(work, true, &tracing::Span::current());
        worker.stats.calls.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// A server type's instances.
pub struct ServerPool {
    server_type: String,
    server_id: String,
    workers: Vec<Instance>,
    next: AtomicUsize,
    description: Description,
    call_timeout: Duration,
    inline_calls: bool,
    /// Per instance.
    stats: Vec<Arc<PoolStats>>,
    timers: Arc<Timers>,
    /// Whether the pool was started on a multi-thread runtime: its calls come from that
    /// runtime's threads, which can run them inline.
    multi_thread: bool,
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
        let mut stats = Vec::new();
        let timers = Arc::new(Timers::default());
        let caller = Arc::new(Caller { server_type: config.server_type.clone(), server_id: config.server_id.clone() });
        let guest_metrics = config.metrics.guest(&config.server_type, config.max_metric_series).version(config.component_version);
        let rt = tokio::runtime::Handle::try_current().ok();
        let fail = |msg: String| RuntimeError::Instance { server_type: config.server_type.clone(), msg };
        let mut workers = Vec::new();
        let mut description = None;
        for i in 0..config.instances.max(1) {
            let (tx, rx) = mpsc::channel();
            let timer = TimerHandle {
                timers: timers.clone(),
                tx: tx.clone(),
                rt: rt.clone(),
                count: Arc::default(),
                max: config.max_timers,
            };
            let env = InstanceEnv { services: services.clone(), caller: caller.clone(), timers: timer, metrics: guest_metrics.clone() };
            let instance_stats = Arc::new(PoolStats::default());
            stats.push(instance_stats.clone());
            let mut worker = Worker::new(runtime, component, config.clone(), i as u32, instance_stats, env);
            let slot = worker.instantiate().map_err(fail)?;
            worker.slot = Some(slot);
            if description.is_none() {
                description = Some(worker.describe().map_err(fail)?);
            }
            let worker = Arc::new(tokio::sync::Mutex::new(worker));
            let w = worker.clone();
            std::thread::Builder::new()
                .name(format!("wasm-{}-{i}", config.server_type))
                .spawn(move || Worker::run(&w, &rx))
                .map_err(|e| fail(format!("cannot start an instance thread: {e}")))?;
            workers.push(Instance { tx, worker });
        }
        Ok(Arc::new(Self {
            server_type: config.server_type.clone(),
            server_id: config.server_id.clone(),
            workers,
            next: AtomicUsize::new(0),
            description: description.unwrap_or_default(),
            call_timeout: config.call_timeout,
            inline_calls: config.inline_calls,
            stats,
            timers,
            multi_thread: rt.as_ref().is_some_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread),
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

    /// The number of instances running a call now.
    pub fn busy(&self) -> usize {
        self.stats.iter().map(|s| s.busy.load(Ordering::Relaxed) as usize).sum()
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        let sum = PoolStats::default();
        for s in &self.stats {
            sum.calls.fetch_add(s.calls.load(Ordering::Relaxed), Ordering::Relaxed);
            sum.rebuilds.fetch_add(s.rebuilds.load(Ordering::Relaxed), Ordering::Relaxed);
            sum.inline.fetch_add(s.inline.load(Ordering::Relaxed), Ordering::Relaxed);
            sum.recycled.fetch_add(s.recycled.load(Ordering::Relaxed), Ordering::Relaxed);
            sum.fresh.fetch_add(s.fresh.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        sum.timer_ticks_dropped.store(self.timers.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        sum
    }

    fn pick(&self, key: Option<u64>) -> &Instance {
        let n = self.workers.len() as u64;
        let i = match key {
            Some(k) => (k % n) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len(),
        };
        &self.workers[i]
    }

    /// Whether a call that its caller gives up after `timeout` may run on the caller's thread:
    /// only if it ends (or traps) by then, since such a call cannot be given up.
    fn inline_within(&self, timeout: Duration) -> bool {
        self.inline() && self.call_timeout <= timeout
    }

    /// Whether calls may run on the caller's thread (see the module documentation).
    fn inline(&self) -> bool {
        self.inline_calls && self.multi_thread
    }

    /// Queues `work` for the instance, runs the queue at once if `inline` allows it, the
    /// instance is free and this is an I/O thread, and waits for the result.
    async fn submit_to(instance: &Instance, work: Work, inline: bool) -> CallResult {
        if inline {
            return instance.run_inline(work).await;
        }
        let (reply, rx) = oneshot::channel();
        // A send fails only after shutdown; the dropped reply then reads as Unavailable.
        let _ = instance.tx.send(Msg::Job(Job { work, reply: Reply(Some(ReplyTo::Async(reply))), parent: tracing::Span::current() }));
        rx.await.unwrap_or_else(|_| Err(CallError::Unavailable("server type is shut down".into())))
    }

    /// Runs `call` on the instance picked by `key` (`None`: any instance) and hands its result
    /// to `finish` on the thread that ran it, before the instance moves on (see [`Finish`]);
    /// returns once `finish` has run. `finish` runs exactly once, with `Unavailable` if the
    /// server type is shut down.
    pub async fn call_then(&self, key: Option<u64>, call: Call, finish: Finish) {
        let instance = self.pick(key);
        let work = Work::Handle { route: call.route, body: call.body, session: call.session };
        if self.inline() {
            let mut worker = instance.worker.lock().await;
            let result = if worker.stopped {
                Err(CallError::Unavailable("server type is shut down".into()))
            } else {
                let r = worker.execute(work, true, &tracing::Span::current());
                worker.stats.calls.fetch_add(1, Ordering::Relaxed);
                r
            };
            // Still holding the instance.
            finish(result);
            worker.prepare();
            return;
        }
        let (done, rx) = oneshot::channel();
        let _ = instance.tx.send(Msg::Job(Job { work, reply: Reply(Some(ReplyTo::Finish(finish, done))), parent: tracing::Span::current() }));
        let _ = rx.await;
    }

    /// Runs `call` on the instance picked by `key` (`None`: any instance).
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call(&self, key: Option<u64>, call: Call) -> Result<Vec<u8>, CallError> {
        self.call_inner(key, call, self.inline()).await
    }

    /// Like [`ServerPool::call`], for a caller that gives up after `timeout` (an RPC).
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call_within(&self, key: Option<u64>, call: Call, timeout: Duration) -> Result<Vec<u8>, CallError> {
        self.call_inner(key, call, self.inline_within(timeout)).await
    }

    async fn call_inner(&self, key: Option<u64>, call: Call, inline: bool) -> Result<Vec<u8>, CallError> {
        let work = Work::Handle { route: call.route, body: call.body, session: call.session };
        Self::submit_to(self.pick(key), work, inline).await
    }

    /// Tells the instance picked by `key` that `session` closed.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn session_closed(&self, key: Option<u64>, session: Arc<dyn SessionHandle>) -> Result<(), CallError> {
        Self::submit_to(self.pick(key), Work::SessionClosed(session), self.inline()).await.map(drop)
    }

    /// Runs the remote `route` (`service.method`) on an instance that does not wait up `chain`
    /// (the call that led here); its caller gives up after `timeout`.
    ///
    /// # Errors
    /// [`CallError::Cycle`] at once when every instance waits up the chain; see [`CallError`].
    pub async fn remote(&self, route: &str, body: Bytes, chain: &CallChain, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let n = self.workers.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..n).map(|k| (first + k) % n).find(|&i| !chain.holds(&self.chain_entry(i)));
        let Some(i) = free else {
            return Err(CallError::Cycle(self.server_id.clone()));
        };
        let work = Work::Remote { route: route.to_owned(), body, chain: chain.clone() };
        Self::submit_to(&self.workers[i], work, self.inline_within(timeout)).await
    }

    /// Instance `i` of this pool as an entry of a call chain.
    fn chain_entry(&self, i: usize) -> String {
        format!("{}#r{i}", self.server_id)
    }

    /// Lets every instance finish the calls queued on it, calls the guests' `shutdown` and
    /// stops the threads.
    pub async fn shutdown(&self) {
        self.timers.cancel_all();
        let mut waits = Vec::new();
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.tx.send(Msg::Shutdown(tx)).is_ok() {
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
    metrics: kiwano_metrics::GuestMetrics,
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
    /// The guest's `shutdown` ran: no more calls.
    stopped: bool,
    /// Untrusted mode: the instance was dropped after a call that ended well, so the next one
    /// built is a fresh instance, not a rebuild.
    fresh_next: bool,
    /// The guest-call duration series of each route called here, resolved once (routes are
    /// the guest's own, checked against its `describe` before a call).
    call_series: HashMap<String, kiwano_metrics::SeriesHandle>,
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
        let tag = LogTag::new(&config.server_type, index, config.log_rate, &config.call_limits);
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
            stopped: false,
            fresh_next: false,
            call_series: HashMap::new(),
        }
    }

    fn set_tag(&self, route: &str, session: Option<&Arc<dyn SessionHandle>>) {
        let mut tag = self.tag.lock();
        tag.route.clear();
        tag.route.push_str(route);
        tag.session = session.map_or(0, |s| s.id());
        tag.who = crate::host::Who(session.cloned());
        tag.budget.new_call();
    }

    /// Creates a fresh instance and runs its `init`.
    fn instantiate(&self) -> Result<Slot, String> {
        self.set_tag("init", None);
        let mut state = HostState::new(
            self.tag.clone(),
            self.config.memory_limit,
            self.env.services.clone(),
            self.env.caller.clone(),
            self.env.timers.clone(),
            self.config.call_limits.clone(),
            self.env.metrics.clone(),
        );
        if self.config.remotes {
            state.me = Some(format!("{}#r{}", self.config.server_id, self.index).into());
        }
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            // A call running on an I/O thread past its first tick: let that thread's other
            // connections move to another thread, then go on.
            if data.inline.handoffs > 0 {
                data.inline.handoffs -= 1;
                hand_off_io_thread();
                if data.inline.ticks_left > 1 {
                    data.inline.ticks_left -= 1;
                    return Ok(wasmtime::UpdateDeadline::Continue(1));
                }
            }
            let rest = std::mem::take(&mut data.inline.ticks_left);
            if rest > 0 {
                return Ok(wasmtime::UpdateDeadline::Continue(rest));
            }
            // The deadline is wall-clock: time spent waiting in the host (a sleep, an RPC)
            // counts too, and those waits end at the same deadline.
            Err(Trap::Interrupt.into())
        });
        // Initialisation may do more than a call: give it ten call budgets.
        store.set_epoch_deadline(self.deadline_ticks.saturating_mul(10));
        store.data_mut().deadline = Some(std::time::Instant::now() + self.config.call_timeout * 10);
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

    /// The instance's thread: timers, and calls that may not run inline. It stops after the
    /// guest's `shutdown`; what is sent afterwards is dropped, its reply read as Unavailable.
    fn run(worker: &tokio::sync::Mutex<Self>, rx: &mpsc::Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            // One message per hold: the lock is fair, so calls waiting for it on I/O threads
            // take their turn between two timer ticks (or two queued calls).
            let mut this = worker.blocking_lock();
            this.handle(msg);
            if this.stopped {
                return;
            }
        }
    }

    /// Runs one message, on the instance's thread.
    fn handle(&mut self, msg: Msg) {
        if self.stopped {
            // Dropping the message drops its reply: the caller reads Unavailable.
            if let Msg::Shutdown(done) = msg {
                let _ = done.send(());
            }
            return;
        }
        match msg {
            Msg::Job(job) => {
                let result = self.execute(job.work, false, &job.parent);
                self.stats.calls.fetch_add(1, Ordering::Relaxed);
                job.reply.send(result);
                self.prepare();
            }
            Msg::Timer { id, payload } => {
                if self.env.timers.fire(id) {
                    if let Err(e) = self.execute_timer(id, &payload) {
                        tracing::warn!(server_type = %self.config.server_type, instance = self.index, timer = id, "on-timer failed: {e}");
                    }
                    self.prepare();
                }
            }
            Msg::Shutdown(done) => {
                self.set_tag("shutdown", None);
                if let Some(slot) = self.slot.as_mut() {
                    slot.store.set_epoch_deadline(self.deadline_ticks.saturating_mul(10));
                    if let Err(e) = slot.bindings.kiwano_server_guest().call_shutdown(&mut slot.store) {
                        tracing::warn!(server_type = %self.config.server_type, instance = self.index, "guest shutdown trapped: {e:#}");
                    }
                }
                self.stopped = true;
                let _ = done.send(());
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
            let (counter, why) = if std::mem::take(&mut self.fresh_next) { (&self.stats.fresh, "fresh") } else { (&self.stats.rebuilds, "rebuild") };
            counter.fetch_add(1, Ordering::Relaxed);
            self.config.metrics.inc(&families::INSTANCES_CREATED, &[&self.config.server_type, why]);
            self.slot = Some(slot);
        }
        Ok(())
    }

    /// Builds the next call's instance, if the last call left none (a trap, a recycled
    /// instance, untrusted mode), now that the last call's answer went out rather than when the
    /// next call comes (a failure is logged, and tried again then).
    fn prepare(&mut self) {
        if self.slot.is_none() && !self.stopped {
            let _ = self.ensure();
        }
    }

    /// Untrusted mode, after a call: one that returned (`ok`: an answer or an error of its own)
    /// commits its host effects, any other end discards them and cancels the timers it set.
    /// Its instance is dropped either way: the next call gets a fresh one.
    fn settle(&mut self, tx: Transaction, timers_set: Option<Vec<u64>>, session: Option<&Arc<dyn SessionHandle>>, ok: bool, route: &str) {
        if ok {
            tx.commit(session, &*self.env.services, &self.config.server_type, route);
        } else {
            drop(tx);
            for id in timers_set.into_iter().flatten() {
                self.env.timers.cancel(id);
            }
        }
        if self.slot.take().is_some() {
            self.fresh_next = true;
        }
    }

    /// Runs one call; `inline` when on an I/O thread (see the module documentation).
    fn execute(&mut self, work: Work, inline: bool, parent: &tracing::Span) -> CallResult {
        self.ensure()?;
        let (route, session) = match &work {
            Work::Handle { route, session, .. } => (route.as_str(), Some(session)),
            Work::SessionClosed(session) => ("on-session-close", Some(session)),
            Work::Remote { route, .. } => (route.as_str(), None),
        };
        let chain = if let Work::Remote { chain, .. } = &work { chain.clone() } else { CallChain::default() };
        self.set_tag(route, session);
        let tx = self.config.untrusted.then(|| Transaction::begin(session, &self.env.services));
        let Some(slot) = self.slot.as_mut() else { return Err(CallError::Unavailable("no instance".into())) };
        let data = slot.store.data_mut();
        match &tx {
            Some(tx) => {
                data.call = tx.session();
                data.services = tx.services();
                data.timers_set = Some(Vec::new());
            }
            None => data.call = session.cloned(),
        }
        data.limits.hit = false;
        data.budget.reset();
        data.chain = chain;
        data.deadline = Some(std::time::Instant::now() + self.config.call_timeout);
        data.inline = if inline { Inline::slices(self.deadline_ticks) } else { Inline::default() };
        if inline {
            self.stats.inline.fetch_add(1, Ordering::Relaxed);
        }
        let token = data.table.push(CallToken).map_err(|e| CallError::Unavailable(e.to_string()))?;
        // Lower a *borrow* of the entry: passing the own handle would leak one handle per call.
        let borrow = || Resource::<CallToken>::new_borrow(token.rep());
        slot.store.set_epoch_deadline(if inline { FIRST_SLICE } else { self.deadline_ticks });
        let guest = slot.bindings.kiwano_server_guest();
        // Below the span of the message or RPC that led here, on whatever thread it runs.
        let _span = if parent.is_disabled() {
            tracing::Span::none()
        } else {
            tracing::info_span!(target: "kiwano_trace", parent: parent, "guest call", otel.kind = "internal", server_type = %self.config.server_type, route = %route)
        }
        .entered();
        let started = std::time::Instant::now();
        self.stats.busy.fetch_add(1, Ordering::Relaxed);
        let result = guarded(|| match &work {
            Work::Handle { route, body, .. } => guest.call_handle(&mut slot.store, borrow(), route, body),
            Work::SessionClosed(session) => {
                session.close_started();
                let r = guest.call_on_session_close(&mut slot.store, borrow()).map(|()| Ok(Vec::new()));
                session.close_finished();
                r
            }
            Work::Remote { route, body, .. } => guest.call_remote(&mut slot.store, route, body),
        });
        self.stats.busy.fetch_sub(1, Ordering::Relaxed);
        let took = started.elapsed();
        let data = slot.store.data_mut();
        let _ = data.table.delete(token);
        data.call = None;
        data.deadline = None;
        let timers_set = data.timers_set.take();
        if tx.is_some() {
            data.services = self.env.services.clone();
        }
        // An instance whose memory passed three quarters of its cap is replaced before its next
        // call rather than let fail one: a garbage-collected guest (SpiderMonkey, CPython)
        // grows its heap until its collector cannot get more, then crashes a call.
        if tx.is_none() && result.as_ref().is_ok() && data.limits.grown > self.config.memory_limit / 4 * 3 {
            tracing::debug!(server_type = %self.config.server_type, instance = self.index, grown = data.limits.grown, "instance memory past 3/4 of its limit: replaced before its next call");
            self.stats.recycled.fetch_add(1, Ordering::Relaxed);
            self.config.metrics.inc(&families::INSTANCES_CREATED, &[&self.config.server_type, "recycled"]);
            self.slot = None;
        }
        {
            let mut tag = self.tag.lock();
            crate::host::report_dropped(&mut tag);
            // The session is not held past its call.
            tag.who = crate::host::Who::default();
        }
        let max = self.config.max_response;
        let outcome = match result {
            Ok(Ok(bytes)) if bytes.len() > max => Err(CallError::ResponseTooLarge { size: bytes.len(), max }),
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                let size = e.code.len() + e.msg.len() + e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                if size > max { Err(CallError::ErrorTooLarge { size, max }) } else { Err(CallError::Guest(e.into())) }
            }
            Err(e) => Err(self.trapped(e)),
        };
        self.record(route, took, &outcome);
        if let Some(tx) = tx {
            let ok = matches!(outcome, Ok(_) | Err(CallError::Guest(_)));
            self.settle(tx, timers_set, session, ok, route);
        }
        outcome
    }

    /// Records a call's duration and, for a failure that is not the guest's own error, why
    /// (`kiwano_guest_call_duration_seconds`, `kiwano_guest_failures_total`).
    fn record<T>(&mut self, route: &str, took: Duration, outcome: &Result<T, CallError>) {
        let m = &self.config.metrics;
        if !m.enabled() {
            return;
        }
        let st = self.config.server_type.as_str();
        if !self.call_series.contains_key(route) {
            self.call_series.insert(route.to_owned(), m.series(&families::GUEST_CALL, &[st, route]));
        }
        if let Some(series) = self.call_series.get(route) {
            series.observe(took.as_secs_f64());
        }
        let reason = match outcome {
            Ok(_) | Err(CallError::Guest(_)) => return,
            Err(CallError::Trap(_)) => "trap",
            Err(CallError::Deadline(_)) => "deadline",
            Err(CallError::OutOfMemory(_)) => "out_of_memory",
            Err(CallError::ResponseTooLarge { .. } | CallError::ErrorTooLarge { .. }) => "too_large",
            Err(CallError::Cycle(_)) => "cycle",
            Err(CallError::Unavailable(_)) => "unavailable",
        };
        m.inc(&families::GUEST_FAILURES, &[st, reason]);
    }

    fn execute_timer(&mut self, id: u64, payload: &[u8]) -> Result<(), CallError> {
        self.ensure()?;
        self.set_tag("on-timer", None);
        let tx = self.config.untrusted.then(|| Transaction::begin(None, &self.env.services));
        let Some(slot) = self.slot.as_mut() else { return Err(CallError::Unavailable("no instance".into())) };
        let data = slot.store.data_mut();
        if let Some(tx) = &tx {
            data.services = tx.services();
            data.timers_set = Some(Vec::new());
        }
        data.limits.hit = false;
        data.budget.reset();
        data.chain = CallChain::default();
        data.deadline = Some(std::time::Instant::now() + self.config.call_timeout);
        data.inline = Inline::default();
        slot.store.set_epoch_deadline(self.deadline_ticks);
        let started = std::time::Instant::now();
        let r = guarded(|| slot.bindings.kiwano_server_guest().call_on_timer(&mut slot.store, id, payload));
        let took = started.elapsed();
        let data = slot.store.data_mut();
        data.deadline = None;
        let timers_set = data.timers_set.take();
        if tx.is_some() {
            data.services = self.env.services.clone();
        }
        crate::host::report_dropped(&mut self.tag.lock());
        let outcome = r.map_err(|e| self.trapped(e));
        self.record("on-timer", took, &outcome);
        if let Some(tx) = tx {
            self.settle(tx, timers_set, None, outcome.is_ok(), "on-timer");
        }
        outcome
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

/// The first slice of an inline call, in epoch ticks: the deadline falls on the second tick
/// boundary from the start, so the call has run for at least one whole tick when it is reached.
const FIRST_SLICE: u64 = 2;

/// Runs a guest call; a panic in a host function (wasmtime resumes it in the caller) fails the
/// call as a trap does, and the instance is discarded, instead of taking down the thread.
fn guarded<R>(call: impl FnOnce() -> wasmtime::Result<R>) -> wasmtime::Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(wasmtime::Error::msg(format!("a host function panicked: {msg}")))
    })
}

/// How often an inline call that outlives its first tick tries to hand its I/O thread's work
/// over (a try fails only if no thread picked the work up while it waited).
const HANDOFF_TRIES: u32 = 3;

/// The slicing of a call running on an I/O thread.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Inline {
    /// Hand-offs still to try.
    pub handoffs: u32,
    /// Ticks of the call's deadline after the current slice.
    pub ticks_left: u64,
}

impl Inline {
    /// A call with `deadline` ticks, run as a first slice and the rest.
    fn slices(deadline: u64) -> Self {
        Self { handoffs: HANDOFF_TRIES, ticks_left: deadline.saturating_sub(FIRST_SLICE) }
    }
}

/// Epoch ticks covering `d`, plus one for the tick in progress.
fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}
