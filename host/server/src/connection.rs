//! One client connection: handshake, heartbeats, reading packets into the session's FIFO,
//! writing its outgoing queue, kick and close.
//!
//! A single task owns the transport and drives everything by hand-written polling, in this
//! order: the close request (kick first: it bypasses the queue), the message in progress, the
//! outgoing queue (batched into one write), the handshake deadline, the next packet, then the
//! heartbeat tick (after the read, so that a packet waiting in the socket counts). The
//! session's messages are handled one at a time, in order, by futures this task polls itself
//! (the guest call runs inline when its instance is free, or on its instance's thread), so a
//! response is written by the same task that read its request, usually in the same wake-up.
//! When the session's FIFO is full (in messages or bytes) the task stops reading, so a client
//! that pipelines faster than it is served is slowed down, not dropped; while a write is
//! blocked, messages keep being handled, so a client that stops reading fills its outgoing
//! queue and is disconnected. A kick follows whole packets; every close lingers to read what
//! the client still sends, so that it is never a reset.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::handshake::HandshakeData;
use kiwano_protocol::message;
use kiwano_protocol::packet::{self, Packet, PacketType};
use kiwano_protocol::{Message, MessageType};

use kiwano_metrics::families;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use crate::admission::Ticket;
use crate::faults::FaultLog;
use crate::session::{CloseReason, Session, SessionPool};
use crate::transport::{ReadError, Transport};
use crate::wire::Wire;
use kiwano_protocol::handshake::HandshakeResponse;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SessionConfig;

/// What every connection of the process shares: how it speaks, its limits, the sessions, and
/// the shutdown signal. A connection knows nothing of what handles its messages: that is the
/// [`Dispatch`] it is given.
#[derive(Debug)]
pub struct Net {
    /// How messages are written.
    pub wire: Arc<Wire>,
    /// The handshake responses, built once.
    pub handshake: HandshakeResponse,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Accept → handshake ack deadline.
    pub handshake_timeout: Duration,
    /// Largest handshake request.
    pub max_handshake: usize,
    /// Queue sizes and write deadline.
    pub session: SessionConfig,
    /// All sessions.
    pub sessions: Arc<SessionPool>,
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
    /// Connection tasks and what they leave running, awaited at shutdown.
    pub tracker: TaskTracker,
    /// Peer faults, summarised.
    pub faults: Arc<FaultLog>,
    /// What the process records: connected clients, sessions per frontend.
    pub metrics: kiwano_metrics::Metrics,
    /// The free slots of a session's inbound queue as a message goes in
    /// (`pitaya_channel_channel_capacity{channel="handler_chlocalprocess"}`).
    pub inbound_capacity: kiwano_metrics::SeriesHandle,
}

/// What handles a connection's messages: the router of its frontend server type.
pub trait Dispatch: Send + Sync {
    /// Handles one message of `session`, read at `arrived`, to completion (a request's response
    /// queued).
    fn message(&self, session: &Arc<Session>, msg: Message, arrived: std::time::Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// The session closed, after its last message was handled (a handshaken session only):
    /// the guest hears of it.
    fn closed(&self, session: &Arc<Session>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The close that a failed read leads to.
fn read_failed(e: ReadError) -> CloseReason {
    match e {
        ReadError::Protocol(e) => CloseReason::Protocol(e.to_string()),
        ReadError::Limit(e) => CloseReason::Limit(e),
        ReadError::Gone(e) => CloseReason::Gone(e),
        ReadError::Io(e) => CloseReason::ReadError(e),
    }
}

/// How long a client may send nothing before it is closed: two heartbeat intervals, as Pitaya,
/// plus a second. Pitaya compares whole Unix seconds, which tolerates up to a second more than
/// two intervals; without that margin a pomelo-style client, whose first heartbeat comes one
/// interval after the server's first (two intervals after accept), is closed a few
/// milliseconds before it arrives.
pub fn liveness_limit(heartbeat: Duration) -> Duration {
    heartbeat * 2 + Duration::from_secs(1)
}

/// Largest number of queued packets moved into one write.
const WRITE_BATCH: usize = 64;

/// Rounds of work one wake-up may do before yielding to other connections.
const ROUNDS_PER_WAKE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected, no handshake yet.
    Start,
    /// Handshake answered, waiting for the ack.
    Handshaken,
    /// Ack received: messages flow.
    Working,
}

/// What one packet asks the connection to do.
enum Next {
    Continue,
    Dispatch(Message),
    Close(CloseReason),
}

/// The handling of one message, as a future the connection task polls itself: its response is
/// queued for the writer of this same task, without a hop through another task.
type Handling = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Largest number of bytes moved from the session's queue into one write (at least one packet).
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// How long a closing connection waits for its client to close too, reading and dropping what
/// it still sends, so that the socket closes without a reset.
const LINGER: Duration = Duration::from_secs(1);

/// Serves one connection to its end. `deadline` is the handshake deadline, counted from accept;
/// `ticket` holds the connection's place among the frontend's connections.
pub async fn run(
    net: Arc<Net>,
    dispatch: Arc<dyn Dispatch>,
    frontend: Arc<str>,
    transport: Transport,
    remote: std::net::SocketAddr,
    deadline: Instant,
    ticket: Ticket,
) {
    let limits = &net.session;
    let session = net.sessions.create(remote, frontend.clone(), limits.outgoing_queue, limits.outgoing_queue_bytes, net.wire.clone());
    net.metrics.add(&families::CONNECTED_CLIENTS, &[], 1.0);
    net.metrics.add(&families::SESSIONS, &[&frontend], 1.0);
    // A connection accepted while shutdown began: its session may have missed the close.
    if net.shutdown.is_cancelled() {
        session.close(CloseReason::Shutdown);
    }
    let id = session.id();
    tracing::debug!(session = id, %remote, server_type = %frontend, "connected");
    let heartbeat = net.heartbeat;
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn = Connection {
        net: net.clone(),
        dispatch: dispatch.clone(),
        session: session.clone(),
        transport,
        phase: Phase::Start,
        current: None,
        queue: VecDeque::new(),
        queued_bytes: 0,
        in_flight: 0,
        tick,
        last_seen: Instant::now(),
        handshake_deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
        write_deadline: None,
        draining: false,
        ticket,
    };
    let reason = std::future::poll_fn(|cx| conn.poll(cx)).await;
    let write_timeout = net.session.write_timeout;
    match &reason {
        // A kick follows whole packets: what is not started is dropped, the packet in progress
        // is finished, then the kick goes out (all within the write deadline), then the close.
        CloseReason::Kicked => {
            conn.transport.replace_queued(packet::to_bytes(PacketType::Kick, &[]).unwrap_or_default());
            let _ = tokio::time::timeout(write_timeout, conn.transport.write(&[])).await;
        }
        // The handshake's error response is queued: send it before closing.
        CloseReason::HandshakeFailed(_) => {
            let _ = tokio::time::timeout(write_timeout, conn.transport.write(&[])).await;
        }
        _ => {}
    }
    let uid = session.uid();
    match reason.fault() {
        Some(kind) => net.faults.report(kind, || format!("session {id} (uid {uid:?}, {remote}) closed: {reason}")),
        None if reason == CloseReason::Kicked => tracing::info!(session = id, uid, %remote, "closed: {reason}"),
        None => tracing::debug!(session = id, uid, %remote, "closed: {reason}"),
    }
    session.close(reason);
    session.mark_closed();
    let Connection { mut transport, current, queue, phase, ticket, .. } = conn;
    // The messages already received are still handled, in order; then the guest hears of the
    // close (on-session-close runs after the session's last message); then the session is
    // forgotten. This goes on while the socket lingers below.
    let handshaken = phase == Phase::Working;
    let closing = net.clone();
    net.tracker.spawn(async move {
        if let Some(f) = current {
            f.await;
        }
        for (m, arrived) in queue {
            dispatch.message(&session, m, arrived).await;
        }
        if handshaken {
            dispatch.closed(&session).await;
        }
        closing.sessions.remove(session.id());
        closing.metrics.add(&families::CONNECTED_CLIENTS, &[], -1.0);
        closing.metrics.add(&families::SESSIONS, &[session.frontend()], -1.0);
    });
    transport.close(LINGER).await;
    drop(transport);
    drop(ticket);
}

/// The bytes a queued message holds.
fn size_of(m: &Message) -> usize {
    m.data.len() + m.route.len()
}

struct Connection {
    net: Arc<Net>,
    dispatch: Arc<dyn Dispatch>,
    session: Arc<Session>,
    transport: Transport,
    phase: Phase,
    /// The session's FIFO: the message being handled, and those waiting behind it.
    current: Option<Handling>,
    /// Each with when it was read.
    queue: VecDeque<(Message, std::time::Instant)>,
    /// Bytes of the messages in `queue` (payloads after inflation): reading stops past
    /// `session.inbound_queue_bytes`.
    queued_bytes: usize,
    /// Bytes moved from the session's queue into the transport and not yet written.
    in_flight: usize,
    tick: Interval,
    last_seen: Instant,
    /// Until the handshake ack.
    handshake_deadline: Option<Pin<Box<Sleep>>>,
    /// Armed while a write waits for the socket.
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// Shutting down: no more reading; what is queued is handled and written.
    draining: bool,
    /// This connection's place among the frontend's connections.
    ticket: Ticket,
}

impl Connection {
    /// Does every piece of work that is ready; returns the reason to close, or sleeps until
    /// the socket, a timer, the message in progress or the session's bell wakes it.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        self.session.bell.awake();
        let mut rounds = 0;
        loop {
            let mut progress = false;
            if let Some(reason) = self.session.signal.reason() {
                if reason != CloseReason::Shutdown {
                    return Poll::Ready(reason);
                }
                self.draining = true;
            }
            if let Some(f) = self.current.as_mut() {
                if f.as_mut().poll(cx).is_ready() {
                    self.current = self.queue.pop_front().map(|(m, arrived)| {
                        self.queued_bytes -= size_of(&m);
                        self.dispatch.message(&self.session, m, arrived)
                    });
                    progress = true;
                }
            }
            if !self.transport.has_queued() {
                let transport = &mut self.transport;
                let moved = self.session.out.drain(|p| transport.queue(p), WRITE_BATCH, WRITE_BATCH_BYTES);
                self.in_flight += moved;
                progress |= moved > 0;
            }
            if self.transport.has_queued() {
                match self.transport.poll_write_queued(cx) {
                    Poll::Ready(Ok(())) => {
                        self.write_deadline = None;
                        self.session.out.written(std::mem::take(&mut self.in_flight));
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::WriteError(e)),
                    Poll::Pending => {
                        let timeout = self.net.session.write_timeout;
                        let deadline = self.write_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                        if deadline.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(CloseReason::WriteError(format!("write did not complete within {timeout:?}")));
                        }
                    }
                }
            }
            if self.draining {
                if self.current.is_none() && !self.transport.has_queued() && self.session.out.is_empty() {
                    return Poll::Ready(CloseReason::Shutdown);
                }
            } else {
                if let Some(deadline) = self.handshake_deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(CloseReason::HandshakeTimeout);
                    }
                }
                let limits = &self.net.session;
                let reading = self.queue.len() < limits.inbound_queue && self.queued_bytes < limits.inbound_queue_bytes;
                if reading {
                    match self.transport.poll_read_packet(cx) {
                        Poll::Ready(Ok(Some(p))) => {
                            self.last_seen = Instant::now();
                            progress = true;
                            match self.on_packet(p) {
                                Next::Continue => {}
                                Next::Dispatch(m) if self.current.is_none() => {
                                    self.current = Some(self.dispatch.message(&self.session, m, std::time::Instant::now()));
                                }
                                Next::Dispatch(m) => {
                                    self.queued_bytes += size_of(&m);
                                    let free = self.net.session.inbound_queue.saturating_sub(self.queue.len());
                                    self.net.inbound_capacity.observe(free as f64);
                                    self.queue.push_back((m, std::time::Instant::now()));
                                }
                                Next::Close(reason) => return Poll::Ready(reason),
                            }
                        }
                        Poll::Ready(Ok(None)) => return Poll::Ready(CloseReason::ClientClosed),
                        Poll::Ready(Err(e)) => return Poll::Ready(read_failed(e)),
                        Poll::Pending => {}
                    }
                }
                // After the read: a packet that waited in the socket while this task was busy
                // counts. While reading is paused (the session's queue is full) the client is
                // not silent, it is not being listened to.
                if self.tick.poll_tick(cx).is_ready() {
                    if !reading {
                        self.last_seen = Instant::now();
                    }
                    if self.last_seen.elapsed() > liveness_limit(self.net.heartbeat) {
                        return Poll::Ready(CloseReason::HeartbeatTimeout);
                    }
                    self.transport.tick();
                    self.transport.queue(packet::to_bytes(PacketType::Heartbeat, &[]).unwrap_or_default());
                    progress = true;
                }
            }
            if !progress {
                // Going to sleep: anything queued or asked for from now on rings the bell; what
                // came just before is seen by one more round.
                self.session.bell.sleep(cx.waker());
                let wanted = self.session.signal.reason().is_some_and(|r| r != CloseReason::Shutdown || !self.draining)
                    || (!self.transport.has_queued() && !self.session.out.is_empty());
                if !wanted {
                    return Poll::Pending;
                }
                self.session.bell.awake();
            }
            rounds += 1;
            if rounds == ROUNDS_PER_WAKE {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    fn on_packet(&mut self, p: Packet) -> Next {
        match p.kind {
            PacketType::Handshake => self.on_handshake(&p.body),
            PacketType::HandshakeAck => {
                if self.phase != Phase::Handshaken {
                    return Next::Close(CloseReason::Protocol("handshake ack without a handshake".into()));
                }
                self.phase = Phase::Working;
                self.handshake_deadline = None;
                self.ticket.handshaken();
                Next::Continue
            }
            PacketType::Heartbeat => Next::Continue,
            PacketType::Data => self.on_data(&p.body),
            PacketType::Kick => Next::Close(CloseReason::Protocol("client sent a kick packet".into())),
        }
    }

    fn on_handshake(&mut self, body: &[u8]) -> Next {
        if self.phase != Phase::Start {
            return Next::Close(CloseReason::Protocol("second handshake".into()));
        }
        // Nothing but heartbeats can be queued before it: the response goes out first.
        match HandshakeData::parse(body) {
            Ok(h) => {
                self.session.set_handshake(h.to_json());
                self.transport.queue(packet::to_bytes(PacketType::Handshake, self.net.handshake.ok()).unwrap_or_default());
                // The handshake limit held until now; messages may be as large as the body limit.
                self.transport.set_max_body(self.net.wire.max_body);
                self.phase = Phase::Handshaken;
                Next::Continue
            }
            Err(e) => {
                self.transport.queue(packet::to_bytes(PacketType::Handshake, self.net.handshake.failed()).unwrap_or_default());
                Next::Close(CloseReason::HandshakeFailed(e.to_string()))
            }
        }
    }

    fn on_data(&mut self, body: &Bytes) -> Next {
        if self.phase != Phase::Working {
            return Next::Close(CloseReason::Protocol("data packet before the handshake completed".into()));
        }
        let msg = match message::decode(body, &self.net.wire.dictionary, self.net.wire.max_body) {
            Ok(m) => m,
            Err(e) => return Next::Close(CloseReason::Protocol(e.to_string())),
        };
        match msg.kind {
            MessageType::Request if msg.id == 0 => {
                Next::Close(CloseReason::Protocol(format!("request with id 0 on route {:?}", msg.route)))
            }
            MessageType::Request | MessageType::Notify => Next::Dispatch(msg),
            other => Next::Close(CloseReason::Protocol(format!("client sent a {other:?} message"))),
        }
    }
}
