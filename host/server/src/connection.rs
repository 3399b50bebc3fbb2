//! One client connection: handshake, heartbeats, reading packets into the session's FIFO,
//! writing its outgoing queue, kick and close.
//!
//! A single task owns the transport and selects between a close request (kick first: it
//! bypasses the queue), the outgoing queue (batched into one write), the heartbeat tick, the
//! handshake deadline and the next packet. Messages go to the session's dispatcher, which
//! handles them one at a time, in order; when its FIFO is full the task stops reading, so a
//! client that pipelines faster than it is served is slowed down, not dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::handshake::HandshakeData;
use kiwano_protocol::message;
use kiwano_protocol::packet::{self, Packet, PacketType};
use kiwano_protocol::{Message, MessageType};
use tokio::sync::{mpsc, oneshot};

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

/// Serves one connection to its end. `deadline` is the handshake deadline, counted from accept.
pub async fn run(shared: Arc<Shared>, frontend: Arc<str>, mut transport: Transport, remote: std::net::SocketAddr, deadline: Instant) {
    let session = shared.sessions.create(remote, shared.session.outgoing_queue, shared.wire.clone());
    let id = session.id();
    tracing::debug!(session = id, %remote, server_type = %frontend, "connected");
    let mut conn = Connection { shared: shared.clone(), frontend, session: session.clone(), phase: Phase::Start, inbound: None, done: None };
    let heartbeat = shared.heartbeat;
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut pending: Option<Message> = None;
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
                    conn.drain(&mut transport, write_timeout).await;
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
                match write_or_close(&mut transport, &batch, write_timeout, &session).await {
                    Ok(()) => {}
                    Err(None) => torn = true,
                    Err(Some(e)) => break e,
                }
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
            permit = reserve(conn.inbound.clone()), if pending.is_some() => match (permit, pending.take()) {
                (Some(permit), Some(msg)) => { permit.send(msg); }
                _ => break CloseReason::Shutdown,
            },
            read = transport.read_packet(), if pending.is_none() => match read {
                Ok(Some(p)) => {
                    last_seen = Instant::now();
                    match conn.on_packet(p, &mut transport).await {
                        Next::Continue => {}
                        Next::Dispatch(m) => pending = Some(m),
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
    // The dispatcher finishes the queued messages, runs on-session-close, then forgets the
    // session. A handshaken session that never sent a message gets one just for its close.
    if conn.inbound.is_none() && conn.done.is_none() && conn.phase == Phase::Working {
        conn.start_dispatcher();
    }
    conn.inbound = None;
    if conn.done.is_none() {
        shared.sessions.remove(id);
    }
}

/// Waits for room in the session's FIFO. The permit owns a clone of the sender, so it borrows
/// nothing the select's handlers need.
async fn reserve(tx: Option<mpsc::Sender<Message>>) -> Option<mpsc::OwnedPermit<Message>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => None,
    }
}

/// Writes like [`write`], but gives up as soon as a close is requested (`Err(None)`): a client
/// that stopped reading must not hold its connection open until the write deadline.
async fn write_or_close(
    transport: &mut Transport,
    packets: &[Bytes],
    timeout: Duration,
    session: &Session,
) -> Result<(), Option<CloseReason>> {
    tokio::select! {
        r = write(transport, packets, timeout) => r.map_err(Some),
        _ = session.signal.wait() => Err(None),
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
    frontend: Arc<str>,
    session: Arc<Session>,
    phase: Phase,
    /// The session's FIFO, once the handshake is acknowledged.
    inbound: Option<mpsc::Sender<Message>>,
    /// Fires when the dispatcher has handled everything and the session's close.
    done: Option<oneshot::Receiver<()>>,
}

impl Connection {
    async fn on_packet(&mut self, p: Packet, transport: &mut Transport) -> Next {
        match p.kind {
            PacketType::Handshake => self.on_handshake(&p.body, transport).await,
            PacketType::HandshakeAck => {
                if self.phase != Phase::Handshaken {
                    return Next::Close(CloseReason::Protocol("handshake ack without a handshake".into()));
                }
                // The dispatcher starts with the first message: an idle session costs no task.
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
        if self.inbound.is_none() {
            self.start_dispatcher();
        }
        match msg.kind {
            MessageType::Request if msg.id == 0 => {
                Next::Close(CloseReason::Protocol(format!("request with id 0 on route {:?}", msg.route)))
            }
            MessageType::Request | MessageType::Notify => Next::Dispatch(msg),
            other => Next::Close(CloseReason::Protocol(format!("client sent a {other:?} message"))),
        }
    }

    fn start_dispatcher(&mut self) {
        let (tx, mut rx) = mpsc::channel::<Message>(self.shared.session.inbound_queue);
        let (done_tx, done_rx) = oneshot::channel();
        self.inbound = Some(tx);
        self.done = Some(done_rx);
        let shared = self.shared.clone();
        let frontend = self.frontend.clone();
        let session = self.session.clone();
        self.shared.tracker.spawn(async move {
            while let Some(msg) = rx.recv().await {
                router::dispatch(&shared, &frontend, &session, msg).await;
            }
            if let Some(server) = shared.types.get(&*frontend) {
                let key = router::affinity_key(&server.affinity, &session);
                let handle: Arc<dyn kiwano_runtime::SessionHandle> = session.clone();
                if let Err(e) = server.pool.session_closed(key, handle).await {
                    tracing::warn!(session = session.id(), server_type = %frontend, "on-session-close failed: {e}");
                }
            }
            shared.sessions.remove(session.id());
            let _ = done_tx.send(());
        });
    }

    /// Shutdown: stop reading, let the dispatcher finish what is queued (its responses are
    /// still written), then return.
    async fn drain(&mut self, transport: &mut Transport, timeout: Duration) {
        self.inbound = None;
        let Some(mut done) = self.done.take() else { return };
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = self.session.out.wait() => {
                    batch.clear();
                    if self.session.out.drain(&mut batch, WRITE_BATCH) {
                        self.session.out.ready_again();
                    }
                    if !batch.is_empty() && write(transport, &batch, timeout).await.is_err() {
                        return;
                    }
                }
                _ = &mut done => break,
            }
        }
        batch.clear();
        while self.session.out.drain(&mut batch, WRITE_BATCH) {}
        if !batch.is_empty() {
            let _ = write(transport, &batch, timeout).await;
        }
    }
}
