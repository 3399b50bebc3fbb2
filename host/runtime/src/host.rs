//! What the guest can reach: the store's data, the `call-context` resource, the log and WASI
//! stdout/stderr, all tagged with the server type, route and session of the call in progress.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{context, groups, log, metrics, rpc, timers, types, users};
use crate::timers::TimerHandle;

/// An error as a guest and a client see it: a Pitaya code, a message, metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestError {
    /// e.g. `PIT-400`; empty means `PIT-000`.
    pub code: String,
    /// Message.
    pub msg: String,
    /// Extra pairs.
    pub metadata: Vec<(String, String)>,
}

impl GuestError {
    /// An error without metadata.
    pub fn new(code: impl Into<String>, msg: impl Into<String>) -> Self {
        Self { code: code.into(), msg: msg.into(), metadata: Vec::new() }
    }
}

/// The one conversion between the errors guests see and the errors clients and peers see: an
/// empty code becomes Pitaya's `PIT-000`, metadata keeps its pairs (sorted, as Pitaya's map).
impl From<GuestError> for kiwano_protocol::PitayaError {
    fn from(e: GuestError) -> Self {
        let code = if e.code.is_empty() { kiwano_protocol::error::codes::UNKNOWN.to_owned() } else { e.code };
        Self { code, msg: e.msg, metadata: e.metadata.into_iter().collect() }
    }
}

impl From<kiwano_protocol::PitayaError> for GuestError {
    fn from(e: kiwano_protocol::PitayaError) -> Self {
        Self { code: e.code, msg: e.msg, metadata: e.metadata.into_iter().collect() }
    }
}

impl From<GuestError> for types::Error {
    fn from(e: GuestError) -> Self {
        Self { code: e.code, msg: e.msg, metadata: e.metadata }
    }
}

impl From<types::Error> for GuestError {
    fn from(e: types::Error) -> Self {
        Self { code: e.code, msg: e.msg, metadata: e.metadata }
    }
}

/// The session a call is made for, as the server exposes it to guests. Implemented by the
/// server's session type; every method is quick and never blocks on I/O.
pub trait SessionHandle: Send + Sync {
    /// The session id.
    fn id(&self) -> u64;
    /// The bound uid.
    fn uid(&self) -> Option<String>;
    /// Binds a uid.
    ///
    /// # Errors
    /// An empty uid, an already bound session.
    fn bind(&self, uid: &str) -> Result<(), GuestError>;
    /// Whether a newer session has bound this session's uid since (see the WIT `displaced`).
    fn displaced(&self) -> bool;
    /// The guest's `on-session-close` for this session starts (on the thread that runs it).
    fn close_started(&self) {}
    /// The guest's `on-session-close` for this session is over, whatever its outcome.
    fn close_finished(&self) {}
    /// One data value as JSON text.
    fn get(&self, key: &str) -> Option<String>;
    /// Sets one data value from JSON text.
    ///
    /// # Errors
    /// Invalid JSON.
    fn set(&self, key: &str, value: &str) -> Result<(), GuestError>;
    /// The whole data map as a JSON object.
    fn data(&self) -> String;
    /// Replaces the whole data map from a JSON object.
    ///
    /// # Errors
    /// Anything but a JSON object.
    fn set_data(&self, data: &str) -> Result<(), GuestError>;
    /// Pushes a message to this session.
    ///
    /// # Errors
    /// A closed session.
    fn push(&self, route: &str, body: &[u8]) -> Result<(), GuestError>;
    /// Kicks this session.
    ///
    /// # Errors
    /// A closed session.
    fn kick(&self) -> Result<(), GuestError>;
    /// The handshake as a JSON object.
    fn handshake(&self) -> String;
    /// The client's address.
    fn remote_address(&self) -> String;
    /// Pins forwarded messages for `server_type` to server `server_id`.
    ///
    /// # Errors
    /// Not a frontend session.
    fn pin(&self, server_type: &str, server_id: &str) -> Result<(), GuestError>;
}

/// Where a guest's RPC goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcTarget {
    /// Any server of the type named by the route.
    Type,
    /// The server with this id.
    Server(String),
}

/// Who makes an RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The calling server type.
    pub server_type: String,
    /// This server's id.
    pub server_id: String,
}

/// What the host offers guests beyond their own session: users, groups and RPC. Implemented
/// by the server; every method may be called from an instance thread and may block (RPC does,
/// until its reply or timeout), but never on a client socket.
pub trait HostServices: Send + Sync {
    /// Pushes to the sessions bound to `uids`; returns the uids not reached.
    ///
    /// # Errors
    /// An invalid route.
    fn push_to_users(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, GuestError>;
    /// Kicks the sessions bound to `uids`; returns the uids without a session.
    ///
    /// # Errors
    /// Never in-process; a cluster may fail to publish.
    fn kick_users(&self, uids: &[String]) -> Result<Vec<String>, GuestError>;
    /// One group operation.
    ///
    /// # Errors
    /// Pitaya's group errors.
    fn group(&self, op: GroupOp<'_>) -> Result<GroupReply, GuestError>;
    /// A blocking RPC.
    ///
    /// # Errors
    /// No such server or remote, a timeout (`PIT-408`), the remote's own error.
    fn rpc(
        &self,
        caller: &Caller,
        chain: &CallChain,
        target: RpcTarget,
        route: &str,
        body: &[u8],
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, GuestError>;
}

pub use kiwano_protocol::CallChain;

/// A group operation (see the WIT `groups` interface).
#[derive(Debug, Clone, Copy)]
pub enum GroupOp<'a> {
    /// Create, with an optional TTL in ms.
    Create(&'a str, Option<u64>),
    /// Delete.
    Delete(&'a str),
    /// Add a uid.
    Add(&'a str, &'a str),
    /// Remove a uid.
    Remove(&'a str, &'a str),
    /// Remove all members.
    RemoveAll(&'a str),
    /// Is the uid a member?
    Contains(&'a str, &'a str),
    /// Members.
    Members(&'a str),
    /// Member count.
    Count(&'a str),
    /// Renew the TTL.
    Renew(&'a str),
    /// Push to all members: group, route, body.
    Broadcast(&'a str, &'a str, &'a [u8]),
}

/// The answer to a [`GroupOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupReply {
    /// Done.
    Done,
    /// A yes/no answer.
    Bool(bool),
    /// Members.
    Members(Vec<String>),
    /// A count.
    Count(u32),
}

/// The resource behind a `call-context` handle: it only marks the handle valid for the call in
/// progress; the session itself is in [`HostState::call`].
#[derive(Debug)]
pub struct CallToken;

/// What is logged with every guest record and every line the guest writes to stdout/stderr,
/// and the instance's budget of such lines.
#[derive(Debug, Clone)]
pub(crate) struct LogTag {
    pub server_type: Arc<str>,
    pub instance: u32,
    pub route: String,
    pub session: u64,
    /// The session of the call in progress, whose uid is read when a line is written.
    pub who: Who,
    pub budget: OutputBudget,
}

/// The session of a call, for its log lines' `uid`; none for calls without one.
#[derive(Clone, Default)]
pub(crate) struct Who(pub Option<Arc<dyn SessionHandle>>);

impl std::fmt::Debug for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Who").field(&self.0.as_ref().map(|s| s.id())).finish()
    }
}

impl Who {
    /// The uid bound to the session now, if any.
    pub(crate) fn uid(&self) -> Option<String> {
        self.0.as_ref().and_then(|s| s.uid())
    }
}

impl LogTag {
    pub(crate) fn new(server_type: &str, instance: u32, lines_per_second: u32, limits: &CallLimits) -> Self {
        Self {
            server_type: server_type.into(),
            instance,
            route: String::new(),
            session: 0,
            who: Who::default(),
            budget: OutputBudget::new(lines_per_second, (limits.log_lines, limits.log_bytes)),
        }
    }
}

/// How many log records and output lines an instance may emit: a token bucket of
/// `lines_per_second`, holding up to one second's worth. What does not fit is counted and
/// reported in one line, at most once a second (the reports must not become the flood).
#[derive(Debug, Clone)]
pub(crate) struct OutputBudget {
    /// Lines and bytes one call may emit (`CallLimits::log_lines`, `log_bytes`), and what the
    /// call in progress emitted.
    call_max: (u32, u64),
    call_used: (u32, u64),
    rate: f64,
    tokens: f64,
    refilled: std::time::Instant,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// When the drops were last reported.
    reported: Option<std::time::Instant>,
}

/// The shortest time between two reports of dropped output.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl OutputBudget {
    fn new(lines_per_second: u32, call_max: (u32, u64)) -> Self {
        let rate = f64::from(lines_per_second.max(1));
        Self { call_max, call_used: (0, 0), rate, tokens: rate, refilled: std::time::Instant::now(), dropped_lines: 0, dropped_bytes: 0, reported: None }
    }

    /// A new call starts: its own lines and bytes count from zero.
    pub(crate) fn new_call(&mut self) {
        self.call_used = (0, 0);
    }

    /// Whether a line of `bytes` may be emitted now.
    fn admit(&mut self, bytes: usize) -> bool {
        let (lines, total) = (self.call_used.0 + 1, self.call_used.1 + bytes as u64);
        if lines > self.call_max.0 || total > self.call_max.1 {
            self.dropped_lines += 1;
            self.dropped_bytes += bytes as u64;
            return false;
        }
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // Only what is written counts against the call's own limits.
            self.call_used = (lines, total);
            true
        } else {
            self.dropped_lines += 1;
            self.dropped_bytes += bytes as u64;
            false
        }
    }
}

/// The data of one instance's store.
pub(crate) struct HostState {
    /// WASI with an empty context: no files, sockets, environment or arguments.
    pub wasi: WasiCtx,
    /// Resources handed to the guest (the per-call `call-context`).
    pub table: ResourceTable,
    /// The instance's memory cap.
    pub limits: MemoryCap,
    /// The session of the call in progress.
    pub call: Option<Arc<dyn SessionHandle>>,
    /// Log tag, shared with the stdout/stderr streams.
    pub tag: Arc<Mutex<LogTag>>,
    /// Users, groups, RPC.
    pub services: Arc<dyn HostServices>,
    /// Who this instance is, for RPC.
    pub caller: Arc<Caller>,
    /// Timers of this instance.
    pub timers: TimerHandle,
    /// The chain of the call in progress: RPCs it makes carry one hop more, and this instance
    /// among the waiting ones if it serves remotes.
    pub chain: CallChain,
    /// This instance as a chain entry (`server-id#r<index>`), if it serves remotes.
    pub me: Option<Arc<str>>,
    /// When the call in progress must end (wall clock): host calls that wait (a sleep, an RPC)
    /// end by then too.
    pub deadline: Option<std::time::Instant>,
    /// The slicing of a call running on an I/O thread.
    pub inline: crate::pool::Inline,
    /// What one call may do through the host, and what the call in progress did.
    pub budget: CallBudget,
    /// The timers the call in progress set, when it runs in a transaction (untrusted mode):
    /// they are cancelled if it fails.
    pub timers_set: Option<Vec<u64>>,
    /// The server type's own metrics (the WIT `metrics` interface).
    pub metrics: kiwano_metrics::GuestMetrics,
}

/// What one guest call may do through the host (per server type: `servers.<type>.max_*_per_call`).
/// Past a limit the host function fails with `PIT-500` naming the limit (a timer is not set:
/// `0`; a log line is dropped and counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLimits {
    /// Pushes and kicks: one per session reached by `push`/`kick` of the call context, one per
    /// uid given to `users.push`/`users.kick` (a group broadcast is a group operation).
    pub pushes: u32,
    /// RPCs (`rpc.call`, `rpc.call-to`).
    pub rpcs: u32,
    /// Group operations, broadcasts included.
    pub group_ops: u32,
    /// Timers set (`after`, `every`).
    pub timers: u32,
    /// Log records and stdout/stderr lines.
    pub log_lines: u32,
    /// Bytes of those.
    pub log_bytes: u64,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self { pushes: 10_000, rpcs: 100, group_ops: 1000, timers: 100, log_lines: 1000, log_bytes: 1 << 20 }
    }
}

/// The per-call counters against [`CallLimits`].
#[derive(Debug, Clone, Default)]
pub struct CallBudget {
    /// The limits.
    pub limits: CallLimits,
    /// The server type (for messages).
    pub server_type: Arc<str>,
    used: [u64; 4],
}

/// What a call spends.
#[derive(Debug, Clone, Copy)]
enum Spend {
    Pushes,
    Rpcs,
    GroupOps,
    Timers,
}

impl CallBudget {
    /// A call starts.
    pub(crate) fn reset(&mut self) {
        self.used = [0; 4];
    }

    /// Spends `n` of `what`; the error names the limit and its config key when the call would
    /// pass it (nothing is spent then).
    fn spend(&mut self, what: Spend, n: u64) -> Result<(), types::Error> {
        let (max, name, key) = match what {
            Spend::Pushes => (self.limits.pushes, "pushes and kicks", "max_pushes_per_call"),
            Spend::Rpcs => (self.limits.rpcs, "RPCs", "max_rpcs_per_call"),
            Spend::GroupOps => (self.limits.group_ops, "group operations", "max_group_ops_per_call"),
            Spend::Timers => (self.limits.timers, "timers", "max_timers_per_call"),
        };
        let used = &mut self.used[what as usize];
        if *used + n > u64::from(max) {
            return Err(types::Error {
                code: "PIT-500".into(),
                msg: format!("call limit reached: at most {max} {name} in one call (servers.{}.{key})", self.server_type),
                metadata: Vec::new(),
            });
        }
        *used += n;
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    pub(crate) fn new(
        tag: Arc<Mutex<LogTag>>,
        memory_limit: usize,
        services: Arc<dyn HostServices>,
        caller: Arc<Caller>,
        timers: TimerHandle,
        limits: CallLimits,
        metrics: kiwano_metrics::GuestMetrics,
    ) -> Self {
        let server_type = tag.lock().server_type.clone();
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput { tag: tag.clone(), stream: "stdout", line: Vec::new() })
            .stderr(GuestOutput { tag: tag.clone(), stream: "stderr", line: Vec::new() })
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits: MemoryCap::new(memory_limit),
            call: None,
            tag,
            services,
            caller,
            timers,
            inline: crate::pool::Inline::default(),
            chain: CallChain::default(),
            me: None,
            deadline: None,
            budget: CallBudget { limits, server_type, used: [0; 4] },
            timers_set: None,
            metrics,
        }
    }

    fn session(&self, res: &Resource<CallToken>) -> wasmtime::Result<&Arc<dyn SessionHandle>> {
        self.table.get(res)?;
        self.call.as_ref().ok_or_else(|| wasmtime::Error::msg("call-context used outside of its call"))
    }
}

/// A memory cap per instance that remembers whether it was hit, so a trap that follows can be
/// reported as out-of-memory.
pub(crate) struct MemoryCap {
    limits: StoreLimits,
    max: usize,
    pub hit: bool,
    /// The largest size any memory of the instance has grown to, in bytes.
    pub grown: usize,
}

impl MemoryCap {
    fn new(max: usize) -> Self {
        let limits = wasmtime::StoreLimitsBuilder::new().memory_size(max).instances(64).tables(64).memories(16).build();
        Self { limits, max, hit: false, grown: 0 }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.grown = self.grown.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Logs a guest's record with its tag, within the instance's budget; the first record after
/// some were dropped says how many.
fn emit(tag: &mut LogTag, level: types::Level, msg: &str) {
    if !tag.budget.admit(msg.len()) {
        return;
    }
    report_dropped(tag);
    let (t, i, r, s, u) = (&*tag.server_type, tag.instance, tag.route.as_str(), tag.session, tag.who.uid());
    match level {
        types::Level::Trace => tracing::trace!(target: "guest", server_type = t, instance = i, route = r, session = s, uid = u, "{msg}"),
        types::Level::Debug => tracing::debug!(target: "guest", server_type = t, instance = i, route = r, session = s, uid = u, "{msg}"),
        types::Level::Info => tracing::info!(target: "guest", server_type = t, instance = i, route = r, session = s, uid = u, "{msg}"),
        types::Level::Warn => tracing::warn!(target: "guest", server_type = t, instance = i, route = r, session = s, uid = u, "{msg}"),
        types::Level::Error => tracing::error!(target: "guest", server_type = t, instance = i, route = r, session = s, uid = u, "{msg}"),
    }
}

/// Logs how many of the instance's lines were dropped since the last report, if any and if the
/// last report is a second old.
pub(crate) fn report_dropped(tag: &mut LogTag) {
    let now = std::time::Instant::now();
    if tag.budget.dropped_lines == 0 || tag.budget.reported.is_some_and(|r| now.duration_since(r) < REPORT_EVERY) {
        return;
    }
    tag.budget.reported = Some(now);
    let (lines, bytes) = (std::mem::take(&mut tag.budget.dropped_lines), std::mem::take(&mut tag.budget.dropped_bytes));
    if lines > 0 {
        let (t, i, r, s, u, rate) = (&*tag.server_type, tag.instance, tag.route.as_str(), tag.session, tag.who.uid(), tag.budget.rate);
        tracing::warn!(
            target: "guest", server_type = t, instance = i, route = r, session = s, uid = u,
            "guest output over its limit of {rate} lines/s: {lines} lines ({bytes} bytes) dropped (or over the {} lines or {} bytes one call may write)",
            tag.budget.call_max.0, tag.budget.call_max.1
        );
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: types::Level, message: String, fields: Vec<(String, String)>) {
        if fields.is_empty() {
            emit(&mut self.tag.lock(), level, &message);
        } else {
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            emit(&mut self.tag.lock(), level, &format!("{message} {{{}}}", fields.join(", ")));
        }
    }
}

impl users::Host for HostState {
    fn push(&mut self, route: String, body: Vec<u8>, uids: Vec<String>) -> Result<Vec<String>, types::Error> {
        self.budget.spend(Spend::Pushes, uids.len() as u64)?;
        self.services.push_to_users(&route, &body, &uids).map_err(Into::into)
    }

    fn kick(&mut self, uids: Vec<String>) -> Result<Vec<String>, types::Error> {
        self.budget.spend(Spend::Pushes, uids.len() as u64)?;
        self.services.kick_users(&uids).map_err(Into::into)
    }
}

impl HostState {
    fn group(&mut self, op: GroupOp<'_>) -> Result<GroupReply, types::Error> {
        self.budget.spend(Spend::GroupOps, 1)?;
        self.services.group(op).map_err(Into::into)
    }

    fn group_done(&mut self, op: GroupOp<'_>) -> Result<(), types::Error> {
        self.group(op).map(drop)
    }
}

impl groups::Host for HostState {
    fn create(&mut self, name: String, ttl_ms: Option<u64>) -> Result<(), types::Error> {
        self.group_done(GroupOp::Create(&name, ttl_ms))
    }

    fn delete(&mut self, name: String) -> Result<(), types::Error> {
        self.group_done(GroupOp::Delete(&name))
    }

    fn add(&mut self, name: String, uid: String) -> Result<(), types::Error> {
        self.group_done(GroupOp::Add(&name, &uid))
    }

    fn remove(&mut self, name: String, uid: String) -> Result<(), types::Error> {
        self.group_done(GroupOp::Remove(&name, &uid))
    }

    fn remove_all(&mut self, name: String) -> Result<(), types::Error> {
        self.group_done(GroupOp::RemoveAll(&name))
    }

    fn contains(&mut self, name: String, uid: String) -> Result<bool, types::Error> {
        match self.group(GroupOp::Contains(&name, &uid))? {
            GroupReply::Bool(b) => Ok(b),
            _ => Ok(false),
        }
    }

    fn members(&mut self, name: String) -> Result<Vec<String>, types::Error> {
        match self.group(GroupOp::Members(&name))? {
            GroupReply::Members(m) => Ok(m),
            _ => Ok(Vec::new()),
        }
    }

    fn count(&mut self, name: String) -> Result<u32, types::Error> {
        match self.group(GroupOp::Count(&name))? {
            GroupReply::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    fn renew(&mut self, name: String) -> Result<(), types::Error> {
        self.group_done(GroupOp::Renew(&name))
    }

    fn broadcast(&mut self, name: String, route: String, body: Vec<u8>) -> Result<(), types::Error> {
        self.group_done(GroupOp::Broadcast(&name, &route, &body))
    }
}

/// RPC timeout when the guest gives none (Pitaya's `requesttimeout`).
const DEFAULT_RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl HostState {
    /// An RPC, waiting at most until the call's own deadline: if that comes first, the call
    /// ends as a call past its deadline does (a trap), not with the RPC's timeout.
    fn rpc(
        &mut self,
        target: RpcTarget,
        route: &str,
        body: &[u8],
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<Vec<u8>, types::Error>> {
        if let Err(e) = self.budget.spend(Spend::Rpcs, 1) {
            return Ok(Err(e));
        }
        let asked = timeout_ms.map_or(DEFAULT_RPC_TIMEOUT, |ms| std::time::Duration::from_millis(u64::from(ms)));
        let left = self.deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let (timeout, cut) = match left {
            Some(left) if left < asked => (left, true),
            _ => (asked, false),
        };
        let mut chain = CallChain { hops: self.chain.hops + 1, waiting: self.chain.waiting.clone() };
        if let Some(me) = &self.me {
            if !chain.waiting.is_empty() {
                chain.waiting.push(',');
            }
            chain.waiting.push_str(me);
        }
        let result = self.services.rpc(&self.caller, &chain, target, route, body, timeout);
        if cut && result.as_ref().is_err_and(|e| e.code == "PIT-408") {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        Ok(result.map_err(Into::into))
    }
}

impl rpc::Host for HostState {
    fn call(&mut self, route: String, body: Vec<u8>, timeout_ms: Option<u32>) -> wasmtime::Result<Result<Vec<u8>, types::Error>> {
        self.rpc(RpcTarget::Type, &route, &body, timeout_ms)
    }

    fn call_to(
        &mut self,
        server_id: String,
        route: String,
        body: Vec<u8>,
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<Vec<u8>, types::Error>> {
        self.rpc(RpcTarget::Server(server_id), &route, &body, timeout_ms)
    }
}

/// The longest delay or period of a timer, in milliseconds (a year): a longer one is not set.
pub const MAX_TIMER_MS: u64 = 365 * 24 * 3600 * 1000;

impl HostState {
    fn timer(&mut self, ms: u64, repeat: bool, payload: Vec<u8>) -> u64 {
        if ms > MAX_TIMER_MS {
            emit(&mut self.tag.lock(), types::Level::Warn, &format!("timer not set: {ms} ms is over the longest timer, {MAX_TIMER_MS} ms (a year)"));
            return 0;
        }
        if let Err(e) = self.budget.spend(Spend::Timers, 1) {
            emit(&mut self.tag.lock(), types::Level::Warn, &format!("timer not set: {}", e.msg));
            return 0;
        }
        let id = self.timers.start(std::time::Duration::from_millis(ms), repeat, payload);
        if let (Some(set), true) = (&mut self.timers_set, id != 0) {
            set.push(id);
        }
        if id == 0 {
            let max = self.timers.max;
            emit(&mut self.tag.lock(), types::Level::Warn, &format!("timer not set: this instance holds its maximum of {max} live timers"));
        }
        id
    }
}

impl timers::Host for HostState {
    fn after(&mut self, delay_ms: u64, payload: Vec<u8>) -> u64 {
        self.timer(delay_ms, false, payload)
    }

    fn every(&mut self, period_ms: u64, payload: Vec<u8>) -> u64 {
        self.timer(period_ms.max(1), true, payload)
    }

    fn cancel(&mut self, id: u64) -> bool {
        self.timers.cancel(id)
    }
}

/// A refused declaration or recording as a guest sees it: `PIT-500` for a limit, `PIT-400` for
/// a mistake.
fn metric_error(e: kiwano_metrics::guest::GuestMetricError) -> types::Error {
    let code = if e.limit { "PIT-500" } else { "PIT-400" };
    types::Error { code: code.into(), msg: e.msg, metadata: Vec::new() }
}

impl metrics::Host for HostState {
    fn declare(&mut self, spec: metrics::MetricSpec) -> Result<u32, types::Error> {
        let kind = match spec.kind {
            metrics::MetricKind::Counter => kiwano_metrics::guest::GuestKind::Counter,
            metrics::MetricKind::Gauge => kiwano_metrics::guest::GuestKind::Gauge,
            metrics::MetricKind::Histogram => kiwano_metrics::guest::GuestKind::Histogram,
        };
        let spec = kiwano_metrics::guest::GuestSpec { name: spec.name, help: spec.help, kind, labels: spec.labels, buckets: spec.buckets };
        self.metrics.declare(&spec).map_err(metric_error)
    }

    fn add(&mut self, metric: u32, labels: Vec<String>, value: f64) -> Result<(), types::Error> {
        self.metrics.add(metric, &labels, value).map_err(metric_error)
    }

    fn set(&mut self, metric: u32, labels: Vec<String>, value: f64) -> Result<(), types::Error> {
        self.metrics.set(metric, &labels, value).map_err(metric_error)
    }

    fn observe(&mut self, metric: u32, labels: Vec<String>, value: f64) -> Result<(), types::Error> {
        self.metrics.observe(metric, &labels, value).map_err(metric_error)
    }
}

impl types::Host for HostState {}

impl context::Host for HostState {}

impl context::HostCallContext for HostState {
    fn session_id(&mut self, ctx: Resource<CallToken>) -> u64 {
        self.session(&ctx).map(|s| s.id()).unwrap_or(0)
    }

    fn uid(&mut self, ctx: Resource<CallToken>) -> Option<String> {
        self.session(&ctx).ok().and_then(|s| s.uid())
    }

    fn bind(&mut self, ctx: Resource<CallToken>, uid: String) -> Result<(), types::Error> {
        self.with(&ctx, |s| s.bind(&uid))
    }

    fn displaced(&mut self, ctx: Resource<CallToken>) -> bool {
        self.session(&ctx).is_ok_and(|s| s.displaced())
    }

    fn get(&mut self, ctx: Resource<CallToken>, key: String) -> Option<String> {
        self.session(&ctx).ok().and_then(|s| s.get(&key))
    }

    fn set(&mut self, ctx: Resource<CallToken>, key: String, value: String) -> Result<(), types::Error> {
        self.with(&ctx, |s| s.set(&key, &value))
    }

    fn data(&mut self, ctx: Resource<CallToken>) -> String {
        self.session(&ctx).map(|s| s.data()).unwrap_or_else(|_| "{}".to_owned())
    }

    fn set_data(&mut self, ctx: Resource<CallToken>, data: String) -> Result<(), types::Error> {
        self.with(&ctx, |s| s.set_data(&data))
    }

    fn push(&mut self, ctx: Resource<CallToken>, route: String, body: Vec<u8>) -> Result<(), types::Error> {
        self.budget.spend(Spend::Pushes, 1)?;
        self.with(&ctx, |s| s.push(&route, &body))
    }

    fn kick(&mut self, ctx: Resource<CallToken>) -> Result<(), types::Error> {
        self.budget.spend(Spend::Pushes, 1)?;
        self.with(&ctx, |s| s.kick())
    }

    fn handshake(&mut self, ctx: Resource<CallToken>) -> String {
        self.session(&ctx).map(|s| s.handshake()).unwrap_or_else(|_| "{}".to_owned())
    }

    fn remote_address(&mut self, ctx: Resource<CallToken>) -> String {
        self.session(&ctx).map(|s| s.remote_address()).unwrap_or_default()
    }

    fn pin(&mut self, ctx: Resource<CallToken>, server_type: String, server_id: String) -> Result<(), types::Error> {
        self.with(&ctx, |s| s.pin(&server_type, &server_id))
    }

    fn drop(&mut self, ctx: Resource<CallToken>) -> wasmtime::Result<()> {
        // The host deletes the entry itself after the call; a guest drop of a borrow never
        // reaches here, an own handle cannot exist.
        let _ = self.table.delete(ctx);
        Ok(())
    }
}

impl HostState {
    fn with(
        &self,
        ctx: &Resource<CallToken>,
        f: impl FnOnce(&Arc<dyn SessionHandle>) -> Result<(), GuestError>,
    ) -> Result<(), types::Error> {
        match self.session(ctx) {
            Ok(s) => f(s).map_err(Into::into),
            Err(_) => Err(GuestError::new("PIT-500", "call-context used outside of its call").into()),
        }
    }
}

/// A guest's stdout or stderr: complete lines go to the host log with the call's tag.
struct GuestOutput {
    tag: Arc<Mutex<LogTag>>,
    stream: &'static str,
    line: Vec<u8>,
}

impl GuestOutput {
    /// Largest partial line kept before it is logged anyway.
    const MAX_LINE: usize = 8 << 10;

    fn take(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            self.line.extend_from_slice(chunk);
            if self.line.ends_with(b"\n") || self.line.len() >= Self::MAX_LINE {
                self.flush_line();
            }
        }
    }

    fn flush_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let level = if self.stream == "stderr" { types::Level::Warn } else { types::Level::Info };
        emit(&mut self.tag.lock(), level, &format!("[{}] {text}", self.stream));
        self.line.clear();
    }

    fn fresh(&self) -> Self {
        Self { tag: self.tag.clone(), stream: self.stream, line: Vec::new() }
    }
}

impl Drop for GuestOutput {
    fn drop(&mut self) {
        self.flush_line();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.fresh())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.fresh())
    }
}
