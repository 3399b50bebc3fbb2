//! Sessions: one per client connection. A session holds the bound uid, the JSON data map and
//! the handshake, and is the handle through which handlers push to and kick its client.
//!
//! The [`SessionPool`] indexes sessions by id and by uid. Binding a uid that another local
//! session holds kicks that session; the uid index is only cleared by the session it points
//! to, so a quick reconnect is never unbound by the old connection's close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use kiwano_protocol::error::codes;
use kiwano_runtime::{GuestError, SessionHandle, parse_object, parse_value};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::VecDeque;

use std::task::Waker;

use futures_util::task::AtomicWaker;

use crate::wire::Wire;

/// Why a connection closed; logged with the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection.
    ClientClosed,
    /// Reading failed.
    ReadError(String),
    /// The connection was reset or dropped without a close: an ordinary disconnect.
    Gone(String),
    /// The client did more than a connection is allowed.
    Limit(String),
    /// The client broke the protocol; the connection was closed.
    Protocol(String),
    /// No packet for more than two heartbeat intervals and a second.
    HeartbeatTimeout,
    /// No handshake ack within the handshake deadline.
    HandshakeTimeout,
    /// The handshake request was not valid JSON.
    HandshakeFailed(String),
    /// Kicked by a handler or by a new session binding the same uid.
    Kicked,
    /// The client did not read its messages: the outgoing queue filled up.
    SlowClient,
    /// A write failed or passed its deadline.
    WriteError(String),
    /// The server is shutting down.
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientClosed => f.write_str("client closed the connection"),
            Self::ReadError(e) => write!(f, "read failed: {e}"),
            Self::Gone(e) => write!(f, "connection lost: {e}"),
            Self::Limit(e) => write!(f, "limit exceeded: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::HeartbeatTimeout => f.write_str("heartbeat timeout: no packet for two heartbeat intervals and a second"),
            Self::HandshakeTimeout => f.write_str("handshake timeout: no handshake ack before the deadline"),
            Self::HandshakeFailed(e) => write!(f, "handshake failed: {e}"),
            Self::Kicked => f.write_str("kicked"),
            Self::SlowClient => f.write_str("outgoing queue full: the client does not read its messages"),
            Self::WriteError(e) => write!(f, "write failed: {e}"),
            Self::Shutdown => f.write_str("server shutting down"),
        }
    }
}

impl CloseReason {
    /// The kind of peer fault this close is, for the fault log; `None` for ordinary closes
    /// (the client left, lost its network or went silent; a kick; shutdown).
    pub fn fault(&self) -> Option<&'static str> {
        match self {
            Self::ClientClosed | Self::Gone(_) | Self::HeartbeatTimeout | Self::Kicked | Self::Shutdown => None,
            Self::ReadError(_) => Some("read failed"),
            Self::Protocol(_) => Some("protocol error"),
            Self::Limit(_) => Some("limit exceeded"),
            Self::HandshakeTimeout => Some("handshake timeout"),
            Self::HandshakeFailed(_) => Some("handshake failed"),
            Self::SlowClient => Some("slow client"),
            Self::WriteError(_) => Some("write failed"),
        }
    }
}

/// Wakes a connection's task when something is queued for it or its close is asked for, but
/// only while the task sleeps: a packet queued while the task is running (a response to the
/// message it is handling) costs no wake-up.
#[derive(Debug)]
pub(crate) struct Bell {
    waker: AtomicWaker,
    asleep: AtomicBool,
}

impl Default for Bell {
    fn default() -> Self {
        Self { waker: AtomicWaker::new(), asleep: AtomicBool::new(true) }
    }
}

impl Bell {
    fn ring(&self) {
        if self.asleep.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// The connection task is running: it looks at its queue and close request before it sleeps.
    pub(crate) fn awake(&self) {
        self.asleep.store(false, Ordering::SeqCst);
    }

    /// The connection task is about to sleep with `waker`; it must look at its queue and close
    /// request once more afterwards (anything set before this call may not have rung).
    pub(crate) fn sleep(&self, waker: &Waker) {
        self.waker.register(waker);
        self.asleep.store(true, Ordering::SeqCst);
    }
}

/// The close request of a connection, set by anyone holding the session and acted on by the
/// connection task (kick bypasses the outgoing queue).
#[derive(Debug, Default)]
pub struct CloseSignal {
    reason: Mutex<Option<CloseReason>>,
    requested: AtomicBool,
}

impl CloseSignal {
    /// The reason, if a close was asked for.
    pub fn reason(&self) -> Option<CloseReason> {
        if self.requested.load(Ordering::Acquire) { self.reason.lock().clone() } else { None }
    }

    fn request(&self, reason: CloseReason) -> bool {
        let mut r = self.reason.lock();
        if r.is_some() {
            return false;
        }
        *r = Some(reason);
        self.requested.store(true, Ordering::Release);
        true
    }
}

/// The queue of packets waiting for the connection's writer, bounded in packets and in bytes.
/// The byte count covers the packets handed to the writer until it reports them written, so
/// what a client has not taken is bounded as a whole. Allocation-free while empty and unused,
/// so an idle connection costs little.
pub(crate) struct OutQueue {
    queue: Mutex<Queued>,
    cap: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Queued {
    packets: VecDeque<Bytes>,
    /// Bytes of `packets` and of those drained and not yet written.
    bytes: usize,
}

/// Why a packet could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is full (in packets or bytes): the client does not read.
    Full,
    /// This one packet is larger than the whole byte budget.
    TooLarge,
}

impl OutQueue {
    fn new(cap: usize, max_bytes: usize) -> Self {
        Self { queue: Mutex::new(Queued::default()), cap, max_bytes }
    }

    /// Queues a packet; the free slots there were (Pitaya's channel capacity).
    fn push(&self, p: Bytes) -> Result<usize, Refused> {
        if p.len() > self.max_bytes {
            return Err(Refused::TooLarge);
        }
        let mut q = self.queue.lock();
        if q.packets.len() >= self.cap || q.bytes + p.len() > self.max_bytes {
            return Err(Refused::Full);
        }
        let free = self.cap - q.packets.len();
        q.bytes += p.len();
        q.packets.push_back(p);
        Ok(free)
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().packets.is_empty()
    }

    /// Moves queued packets into `into`, up to `max` packets and about `max_bytes` bytes (at
    /// least one packet); returns their total size, to be given back to
    /// [`OutQueue::written`] once the writer is done with them.
    pub(crate) fn drain(&self, mut into: impl FnMut(Bytes), max: usize, max_bytes: usize) -> usize {
        let mut q = self.queue.lock();
        let mut size = 0;
        for _ in 0..max {
            if size >= max_bytes {
                break;
            }
            let Some(p) = q.packets.pop_front() else { break };
            size += p.len();
            into(p);
        }
        if q.packets.is_empty() && q.packets.capacity() > 16 {
            q.packets = VecDeque::new();
        }
        size
    }

    /// The writer is done with `bytes` drained bytes.
    pub(crate) fn written(&self, bytes: usize) {
        let mut q = self.queue.lock();
        q.bytes = q.bytes.saturating_sub(bytes);
    }
}

/// Where a closed session's `on-session-close` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseStage {
    /// Not started (or the session is still open).
    Pending,
    /// Running: what it does for this uid may still land.
    Running,
    /// Over.
    Done,
}

/// How long a bind waits for the close handler of an older session of its uid that is running.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

struct State {
    /// A newer session bound this session's uid (a reconnect, a second device).
    displaced: bool,
    /// Its close handler's stage: a newer bind of its uid waits while it runs.
    close: CloseStage,
    /// Server pinned per server type for forwarded messages.
    pins: HashMap<String, String>,
    uid: Option<String>,
    data: Map<String, Value>,
    handshake: String,
}

/// What binding a uid means beyond this process's index: in a cluster, the uid's pushes and
/// kicks subscribed at this frontend, the bind announced to the other frontends of its type
/// (unique session), the binding recorded.
pub trait BindHooks: Send + Sync {
    /// `uid` was just bound to `session` here. What it returns is kept with the session and
    /// dropped at its close (the subscriptions end).
    ///
    /// # Errors
    /// The cluster refusing: the bind fails.
    fn bound(&self, session: &Session, uid: &str) -> Result<Box<dyn Send + Sync>, GuestError>;

    /// `session`, bound to `uid`, closed (it still held the uid).
    fn unbound(&self, session: &Session, uid: &str);
}

/// One client's session.
pub struct Session {
    id: u64,
    remote: SocketAddr,
    /// The frontend server type it connected to.
    frontend: Arc<str>,
    /// What binding its uid set up in the cluster, until it closes.
    subscriptions: Mutex<Option<Box<dyn Send + Sync>>>,
    state: Mutex<State>,
    /// Framed packets for the connection's writer.
    pub(crate) out: OutQueue,
    /// Close and kick requests.
    pub signal: CloseSignal,
    /// Wakes the connection task.
    pub(crate) bell: Bell,
    closed: AtomicBool,
    /// Signalled when the close handler is over.
    closed_cv: parking_lot::Condvar,
    wire: Arc<Wire>,
    pool: Arc<SessionPool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("remote", &self.remote).finish_non_exhaustive()
    }
}

impl Session {
    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The frontend server type the client connected to.
    pub fn frontend(&self) -> &str {
        &self.frontend
    }

    /// The bound uid.
    pub fn uid(&self) -> Option<String> {
        self.state.lock().uid.clone()
    }

    /// Stores the client's handshake.
    pub fn set_handshake(&self, json: String) {
        self.state.lock().handshake = json;
    }

    /// A session-data value, as JSON.
    pub fn value(&self, key: &str) -> Option<Value> {
        self.state.lock().data.get(key).cloned()
    }

    /// Queues a framed packet for the client. A full queue (`session.outgoing_queue` packets or
    /// `session.outgoing_queue_bytes` bytes not yet written) disconnects the client.
    ///
    /// # Errors
    /// `PIT-499` when the session is closed or its queue is full; `PIT-400` for one packet
    /// larger than the whole byte budget (the session stays).
    pub fn send(&self, packet: Bytes) -> Result<(), GuestError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(GuestError::new(codes::CLIENT_CLOSED, "session is closed"));
        }
        let size = packet.len();
        match self.out.push(packet) {
            Ok(free) => {
                self.bell.ring();
                self.pool.outgoing_capacity.observe(free as f64);
                Ok(())
            }
            Err(Refused::Full) => {
                self.pool.dropped_full.add(1.0);
                self.close(CloseReason::SlowClient);
                Err(GuestError::new(codes::CLIENT_CLOSED, "session is closed: its outgoing queue is full"))
            }
            Err(Refused::TooLarge) => {
                self.pool.dropped_too_large.add(1.0);
                Err(GuestError::new(
                    codes::BAD_REQUEST,
                    format!("a packet of {size} bytes exceeds the session's outgoing budget of {} bytes", self.out.max_bytes),
                ))
            }
        }
    }

    /// Whether a newer session has bound this session's uid since it bound it (a reconnect or
    /// a second device): its close must not undo what the newer one did.
    pub fn displaced(&self) -> bool {
        self.state.lock().displaced
    }

    /// Marks the session closed and clears its uid from the index (if it still points here),
    /// ending its cluster subscriptions.
    pub(crate) fn mark_closed(self: &Arc<Self>) {
        self.closed.store(true, Ordering::Release);
        if let Some(uid) = self.uid() {
            if self.pool.unbind(&uid, self) {
                if let Some(hooks) = self.pool.hooks.get() {
                    hooks.unbound(self, &uid);
                }
            }
        }
        drop(self.subscriptions.lock().take());
    }

    /// The server of `server_type` this session's forwarded messages go to, if pinned.
    pub fn pinned(&self, server_type: &str) -> Option<String> {
        self.state.lock().pins.get(server_type).cloned()
    }

    /// Pins this session's messages for `server_type` to server `id`.
    pub fn pin(&self, server_type: &str, id: &str) {
        self.state.lock().pins.insert(server_type.to_owned(), id.to_owned());
    }

    /// The session as a forwarded request carries it.
    pub fn to_proto(&self) -> kiwano_protocol::protos::Session {
        let st = self.state.lock();
        kiwano_protocol::protos::Session {
            id: i64::try_from(self.id).unwrap_or(0),
            uid: st.uid.clone().unwrap_or_default(),
            // Serializing a JSON map cannot fail.
            data: serde_json::to_vec(&st.data).unwrap_or_default(),
        }
    }

    /// How this session's messages are encoded.
    pub fn wire(&self) -> &Wire {
        &self.wire
    }

    /// Asks the connection to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if self.signal.request(reason) {
            self.bell.ring();
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl SessionHandle for Session {
    fn id(&self) -> u64 {
        self.id
    }

    fn uid(&self) -> Option<String> {
        Session::uid(self)
    }

    fn bind(&self, uid: &str) -> Result<(), GuestError> {
        self.pool.bind(self.id, uid)
    }

    fn displaced(&self) -> bool {
        Session::displaced(self)
    }

    fn close_started(&self) {
        self.state.lock().close = CloseStage::Running;
    }

    fn close_finished(&self) {
        self.state.lock().close = CloseStage::Done;
        self.closed_cv.notify_all();
    }

    fn get(&self, key: &str) -> Option<String> {
        self.state.lock().data.get(key).map(Value::to_string)
    }

    fn set(&self, key: &str, value: &str) -> Result<(), GuestError> {
        let v = parse_value(key, value)?;
        self.state.lock().data.insert(key.to_owned(), v);
        Ok(())
    }

    fn data(&self) -> String {
        Value::Object(self.state.lock().data.clone()).to_string()
    }

    fn set_data(&self, data: &str) -> Result<(), GuestError> {
        self.state.lock().data = parse_object(data)?;
        Ok(())
    }

    fn push(&self, route: &str, body: &[u8]) -> Result<(), GuestError> {
        let packet = self
            .wire
            .push(route, Bytes::copy_from_slice(body))
            .map_err(|e| GuestError::new(codes::BAD_REQUEST, format!("cannot push on {route:?}: {e}")))?;
        self.send(packet)
    }

    fn kick(&self) -> Result<(), GuestError> {
        if self.is_closed() {
            return Err(GuestError::new(codes::CLIENT_CLOSED, "session is closed"));
        }
        self.close(CloseReason::Kicked);
        Ok(())
    }

    fn handshake(&self) -> String {
        self.state.lock().handshake.clone()
    }

    fn remote_address(&self) -> String {
        self.remote.to_string()
    }

    fn pin(&self, server_type: &str, server_id: &str) -> Result<(), GuestError> {
        Session::pin(self, server_type, server_id);
        Ok(())
    }
}

/// All sessions of this process, by id and by uid.
#[derive(Default)]
pub struct SessionPool {
    next_id: AtomicU64,
    by_id: Mutex<HashMap<u64, Arc<Session>>>,
    by_uid: Mutex<HashMap<String, Arc<Session>>>,
    /// Closed sessions whose close handlers have not run yet, by the uid they held.
    closing: Mutex<HashMap<String, Vec<Arc<Session>>>>,
    /// What binding means in the cluster (set once, at start).
    hooks: std::sync::OnceLock<Arc<dyn BindHooks>>,
    /// The free slots of a session's outgoing queue as a packet goes in
    /// (`pitaya_channel_channel_capacity{channel="agent_chsend"}`).
    outgoing_capacity: kiwano_metrics::SeriesHandle,
    /// Packets a session's outgoing queue refused: full (the client is disconnected), or one
    /// packet over its whole byte budget (`kiwano_outgoing_dropped_total`).
    dropped_full: kiwano_metrics::SeriesHandle,
    dropped_too_large: kiwano_metrics::SeriesHandle,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool").field("sessions", &self.by_id.lock().len()).finish()
    }
}

impl SessionPool {
    /// Creates a session for a new connection (its outgoing queue bounded to `outgoing`
    /// packets and `outgoing_bytes` bytes); ids start at 1.
    pub fn create(
        self: &Arc<Self>,
        remote: SocketAddr,
        frontend: Arc<str>,
        outgoing: usize,
        outgoing_bytes: usize,
        wire: Arc<Wire>,
    ) -> Arc<Session> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut data = Map::new();
        // Pitaya: IPv6 when the remote address has more than one ':'.
        let ipversion = if remote.is_ipv6() { "ipv6" } else { "ipv4" };
        data.insert("ipversion".into(), Value::from(ipversion));
        let session = Arc::new(Session {
            id,
            remote,
            frontend,
            subscriptions: Mutex::new(None),
            state: Mutex::new(State {
                displaced: false,
                close: CloseStage::Pending,
                pins: HashMap::new(),
                uid: None,
                data,
                handshake: "{}".into(),
            }),
            closed_cv: parking_lot::Condvar::new(),
            out: OutQueue::new(outgoing, outgoing_bytes),
            signal: CloseSignal::default(),
            bell: Bell::default(),
            closed: AtomicBool::new(false),
            wire,
            pool: self.clone(),
        });
        self.by_id.lock().insert(id, session.clone());
        session
    }

    /// Forgets a session (after its close was handled).
    pub fn remove(&self, id: u64) {
        let Some(session) = self.by_id.lock().remove(&id) else { return };
        if let Some(uid) = session.uid() {
            let mut closing = self.closing.lock();
            if let Some(list) = closing.get_mut(&uid) {
                list.retain(|s| !Arc::ptr_eq(s, &session));
                if list.is_empty() {
                    closing.remove(&uid);
                }
            }
        }
    }

    /// A session by id.
    pub fn get(&self, id: u64) -> Option<Arc<Session>> {
        self.by_id.lock().get(&id).cloned()
    }

    /// The session bound to `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<Session>> {
        self.by_uid.lock().get(uid).cloned()
    }

    /// All sessions.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_id.lock().values().cloned().collect()
    }

    /// The number of sessions.
    pub fn count(&self) -> usize {
        self.by_id.lock().len()
    }

    /// Binds `uid` to session `id`, kicking another local session bound to it.
    ///
    /// # Errors
    /// `PIT-400` for an empty uid or an already bound session, `PIT-499` for a closed one.
    pub fn bind(&self, id: u64, uid: &str) -> Result<(), GuestError> {
        if uid.is_empty() {
            return Err(GuestError::new(codes::BAD_REQUEST, "illegal uid: the uid is empty"));
        }
        let Some(session) = self.get(id) else {
            return Err(GuestError::new(codes::CLIENT_CLOSED, "session is closed"));
        };
        if session.is_closed() {
            return Err(GuestError::new(codes::CLIENT_CLOSED, "session is closed"));
        }
        {
            let mut st = session.state.lock();
            if let Some(bound) = &st.uid {
                return Err(GuestError::new(
                    codes::BAD_REQUEST,
                    format!("session is already bound to an uid ({bound:?})"),
                ));
            }
            st.uid = Some(uid.to_owned());
        }
        // The cluster's part (subscriptions, the unique-session broadcast, binding storage):
        // a refusal fails the bind and leaves the session unbound.
        if let Some(hooks) = self.hooks.get() {
            match hooks.bound(&session, uid) {
                Ok(subscriptions) => *session.subscriptions.lock() = Some(subscriptions),
                Err(e) => {
                    session.state.lock().uid = None;
                    return Err(e);
                }
            }
        }
        // Sessions of this uid still closing are displaced too, though they already left the
        // index: a close handler not started yet will see it; one already running may still
        // undo what this session is about to do (a leave landing after the join), so the bind
        // waits for it to end.
        let mut running = Vec::new();
        let previous = {
            let mut by_uid = self.by_uid.lock();
            if let Some(closing) = self.closing.lock().get(uid) {
                for s in closing {
                    let mut st = s.state.lock();
                    st.displaced = true;
                    if st.close == CloseStage::Running {
                        running.push(s.clone());
                    }
                }
            }
            by_uid.insert(uid.to_owned(), session.clone())
        };
        for s in running {
            kiwano_runtime::blocking(|| {
                let mut st = s.state.lock();
                let deadline = std::time::Instant::now() + CLOSE_WAIT;
                while st.close == CloseStage::Running {
                    if s.closed_cv.wait_until(&mut st, deadline).timed_out() {
                        tracing::warn!(uid, session = s.id, "bind went on while an older session's close handler still ran");
                        break;
                    }
                }
            });
        }
        if let Some(old) = previous.filter(|old| !Arc::ptr_eq(old, &session)) {
            old.state.lock().displaced = true;
            tracing::info!(uid, old = old.id, new = id, "uid bound by a new session: kicking the old one");
            // The kick packet is written ahead of the queue; the connection closes whether or
            // not that write succeeds.
            old.close(CloseReason::Kicked);
        }
        Ok(())
    }

    /// A closed session leaves the uid index (if it still holds the uid) and waits among the
    /// closing sessions of its uid until [`SessionPool::remove`]; whether it held the uid.
    fn unbind(&self, uid: &str, session: &Arc<Session>) -> bool {
        let mut by_uid = self.by_uid.lock();
        if by_uid.get(uid).is_some_and(|s| Arc::ptr_eq(s, session)) {
            by_uid.remove(uid);
            self.closing.lock().entry(uid.to_owned()).or_default().push(session.clone());
            true
        } else {
            false
        }
    }

    /// An empty pool whose sessions' queues are recorded into `metrics`.
    pub fn with_metrics(metrics: &kiwano_metrics::Metrics) -> Self {
        let outgoing_capacity = metrics.series(&kiwano_metrics::families::CHANNEL_CAPACITY, &["agent_chsend"]);
        let dropped = |reason| metrics.series(&kiwano_metrics::families::OUTGOING_DROPPED, &[reason]);
        Self { outgoing_capacity, dropped_full: dropped("full"), dropped_too_large: dropped("too_large"), ..Self::default() }
    }

    /// Sets what binding means in the cluster; once, before any session binds.
    pub fn set_hooks(&self, hooks: Arc<dyn BindHooks>) {
        let _ = self.hooks.set(hooks);
    }
}
