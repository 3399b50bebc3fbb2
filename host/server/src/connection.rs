//! One client connection: handshake, heartbeats, reading packets into the session's FIFO,
//! writing its outgoing queue, kick and close.
//!
//! A single task owns the transport and selects between a close request (kick first: it
//! bypasses the queue), the outgoing queue (batched into one write), the message in progress,
//! the heartbeat tick, the handshake deadline and the next packet. The session's messages are
//! handled one at a time, in order, by futures this task polls itself (the guest call runs on
//! its instance's thread); when the session's FIFO is full the task stops reading, so a client
//! that pipelines faster than it is served is slowed down, not dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::handshake::HandshakeData;
use kiwano_protocol::message;
use kiwano_protocol::packet::{self, Packet, PacketType};
use kiwano_protocol::{Message, MessageType};

use tokio::time::{Instant, MissedTickBehavior};

use crate::app::Shared;
use crate::router;
use crate::session::{CloseReason, Session};
use crate::transport::{ReadError, Transport};

/// Largest number of queued packets written in one batch.
const WRITE_BATCH: usize = 64;

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

type Dispatch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The handling of one message, as a future the connection task polls itself: its response is
/// queued for the writer of this same task, without a hop through another task.
fn dispatch(shared: &Arc<Shared>, frontend: &Arc<str>, session: &Arc<Session>, msg: Message) -> Dispatch {
    let (shared, frontend, session) = (shared.clone(), frontend.clone(), session.clone());
    Box::pin(async move { router::dispatch(&shared, &frontend, &session, msg).await })
}

/// Polls the message in progress, if any.
async fn in_flight(current: &mut Option<Dispatch>) {
    match current {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Serves one connection to its end. `deadline` is the handshake deadline, counted from accept.
pub async fn run(shared: Arc<Shared>, frontend: Arc<str>, mut transport: Transport, remote: std::net::SocketAddr, deadline: Instant) {
    let session = shared.sessions.create(remote, shared.session.outgoing_queue, shared.wire.clone());
    let id = session.id();
    tracing::debug!(session = id, %remote, server_type = %frontend, "connected");
    let mut conn = Connection { shared: shared.clone(), session: session.clone(), phase: Phase::Start };
    let heartbeat = shared.heartbeat;
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    // The session's FIFO: the message being handled, and those waiting behind it. When the
    // queue is full the task stops reading, which slows the client down.
    let mut current: Option<Dispatch> = None;
    let mut queue: VecDeque<Message> = VecDeque::new();
    let room = shared.session.inbound_queue;
    let mut batch: Vec<Bytes> = Vec::new();
    // A write cut short by a close request leaves a partial packet on the wire: nothing more
    // can be written after it.
    let mut torn = false;
    let write_timeout = shared.session.write_timeout;
    let shutdown = shared.shutdown.clone();

    let reason = loop {
        tokio::select! {
            biased;
            reason = session.signal.wait() => {
                if reason == CloseReason::Kicked && !torn {
                    // Kick bypasses the queue; the connection closes even if this write fails.
                    let kick = packet::to_bytes(PacketType::Kick, &[]).unwrap_or_default();
                    let _ = tokio::time::timeout(write_timeout, transport.write(&[kick])).await;
                }
                if reason == CloseReason::Shutdown {
                    drain(&shared, &frontend, &session, &mut transport, &mut current, &mut queue, write_timeout).await;
                }
                break reason;
            }
            () = shutdown.cancelled() => session.signal.close(CloseReason::Shutdown),
            () = session.out.wait() => {
                batch.clear();
                if session.out.drain(&mut batch, WRITE_BATCH) {
                    // More than a batch is queued: come back for the rest.
                    session.out.ready_again();
                }
                if batch.is_empty() {
                    continue;
                }
                let fifo = Fifo { shared: &shared, frontend: &frontend, session: &session, current: &mut current, queue: &mut queue };
                match write_while_dispatching(&mut transport, &batch, write_timeout, fifo).await {
                    Ok(()) => {}
                    Err(None) => torn = true,
                    Err(Some(e)) => break e,
                }
            }
            () = in_flight(&mut current) => {
                current = queue.pop_front().map(|m| dispatch(&shared, &frontend, &session, m));
            }
            _ = tick.tick() => {
                if last_seen.elapsed() > heartbeat * 2 {
                    break CloseReason::HeartbeatTimeout;
                }
                let hb = packet::to_bytes(PacketType::Heartbeat, &[]).unwrap_or_default();
                if let Err(e) = write(&mut transport, &[hb], write_timeout).await {
                    break e;
                }
            }
            () = tokio::time::sleep_until(deadline), if conn.phase != Phase::Working => {
                break CloseReason::HandshakeTimeout;
            }
            read = transport.read_packet(), if queue.len() < room => match read {
                Ok(Some(p)) => {
                    last_seen = Instant::now();
                    match conn.on_packet(p, &mut transport).await {
                        Next::Continue => {}
                        Next::Dispatch(m) if current.is_none() => current = Some(dispatch(&shared, &frontend, &session, m)),
                        Next::Dispatch(m) => queue.push_back(m),
                        Next::Close(reason) => break reason,
                    }
                }
                Ok(None) => break CloseReason::ClientClosed,
                Err(ReadError::Protocol(e)) => break CloseReason::Protocol(e.to_string()),
                Err(ReadError::Io(e)) => break CloseReason::ReadError(e),
            },
        }
    };
    match &reason {
        CloseReason::ClientClosed | CloseReason::Shutdown => tracing::debug!(session = id, %remote, "closed: {reason}"),
        CloseReason::Kicked => tracing::info!(session = id, %remote, "closed: {reason}"),
        _ => tracing::warn!(session = id, %remote, "closed: {reason}"),
    }
    session.signal.close(reason);
    session.mark_closed();
    transport.close(Duration::from_millis(200)).await;
    drop(transport);
    // The messages already received are still handled, in order; then the guest hears of the
    // close (on-session-close runs after the session's last message); then the session is
    // forgotten.
    let handshaken = conn.phase == Phase::Working;
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        if let Some(f) = current {
            f.await;
        }
        for m in queue {
            router::dispatch(&shared, &frontend, &session, m).await;
        }
        if handshaken {
            if let Some(server) = shared.types.get(&*frontend) {
                let key = router::affinity_key(&server.affinity, &session);
                let handle: Arc<dyn kiwano_runtime::SessionHandle> = session.clone();
                if let Err(e) = server.pool.session_closed(key, handle).await {
                    tracing::warn!(session = session.id(), server_type = %frontend, "on-session-close failed: {e}");
                }
            }
        }
        shared.sessions.remove(session.id());
    });
}

/// Shutdown: stop reading, handle what is queued (its responses are still written), return.
async fn drain(
    shared: &Arc<Shared>,
    frontend: &Arc<str>,
    session: &Arc<Session>,
    transport: &mut Transport,
    current: &mut Option<Dispatch>,
    queue: &mut VecDeque<Message>,
    timeout: Duration,
) {
    let mut batch = Vec::new();
    while current.is_some() {
        tokio::select! {
            biased;
            () = session.out.wait() => {
                batch.clear();
                if session.out.drain(&mut batch, WRITE_BATCH) {
                    session.out.ready_again();
                }
                if !batch.is_empty() && write(transport, &batch, timeout).await.is_err() {
                    return;
                }
            }
            () = in_flight(current) => {
                *current = queue.pop_front().map(|m| dispatch(shared, frontend, session, m));
            }
        }
    }
    batch.clear();
    while session.out.drain(&mut batch, WRITE_BATCH) {}
    if !batch.is_empty() {
        let _ = write(transport, &batch, timeout).await;
    }
}

/// The session's FIFO, borrowed while the connection task is busy writing.
struct Fifo<'a> {
    shared: &'a Arc<Shared>,
    frontend: &'a Arc<str>,
    session: &'a Arc<Session>,
    current: &'a mut Option<Dispatch>,
    queue: &'a mut VecDeque<Message>,
}

/// Writes like [`write`] while the session's messages keep being handled (so a client that
/// stops reading fills its outgoing queue and is disconnected), and gives up as soon as a close
/// is requested (`Err(None)`): such a client must not hold its connection open until the write
/// deadline.
async fn write_while_dispatching(
    transport: &mut Transport,
    packets: &[Bytes],
    timeout: Duration,
    fifo: Fifo<'_>,
) -> Result<(), Option<CloseReason>> {
    let write = write(transport, packets, timeout);
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return r.map_err(Some),
            _ = fifo.session.signal.wait() => return Err(None),
            () = in_flight(fifo.current) => {
                *fifo.current = fifo.queue.pop_front().map(|m| dispatch(fifo.shared, fifo.frontend, fifo.session, m));
            }
        }
    }
}

async fn write(transport: &mut Transport, packets: &[Bytes], timeout: Duration) -> Result<(), CloseReason> {
    match tokio::time::timeout(timeout, transport.write(packets)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CloseReason::WriteError(e)),
        Err(_) => Err(CloseReason::WriteError(format!("write did not complete within {timeout:?}"))),
    }
}

struct Connection {
    shared: Arc<Shared>,
    session: Arc<Session>,
    phase: Phase,
}

impl Connection {
    async fn on_packet(&mut self, p: Packet, transport: &mut Transport) -> Next {
        match p.kind {
            PacketType::Handshake => self.on_handshake(&p.body, transport).await,
            PacketType::HandshakeAck => {
                if self.phase != Phase::Handshaken {
                    return Next::Close(CloseReason::Protocol("handshake ack without a handshake".into()));
                }
                self.phase = Phase::Working;
                Next::Continue
            }
            PacketType::Heartbeat => Next::Continue,
            PacketType::Data => self.on_data(&p.body),
            PacketType::Kick => Next::Close(CloseReason::Protocol("client sent a kick packet".into())),
        }
    }

    async fn on_handshake(&mut self, body: &[u8], transport: &mut Transport) -> Next {
        if self.phase != Phase::Start {
            return Next::Close(CloseReason::Protocol("second handshake".into()));
        }
        // The response is written directly, ahead of anything queued.
        let timeout = self.shared.session.write_timeout;
        match HandshakeData::parse(body) {
            Ok(h) => {
                self.session.set_handshake(h.to_json());
                let resp = packet::to_bytes(PacketType::Handshake, self.shared.handshake.ok()).unwrap_or_default();
                if let Err(e) = write(transport, &[resp], timeout).await {
                    return Next::Close(e);
                }
                self.phase = Phase::Handshaken;
                Next::Continue
            }
            Err(e) => {
                let resp = packet::to_bytes(PacketType::Handshake, self.shared.handshake.failed()).unwrap_or_default();
                let _ = write(transport, &[resp], timeout).await;
                Next::Close(CloseReason::HandshakeFailed(e.to_string()))
            }
        }
    }

    fn on_data(&mut self, body: &Bytes) -> Next {
        if self.phase != Phase::Working {
            return Next::Close(CloseReason::Protocol("data packet before the handshake completed".into()));
        }
        let msg = match message::decode(body, &self.shared.wire.dictionary, self.shared.wire.max_body) {
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
