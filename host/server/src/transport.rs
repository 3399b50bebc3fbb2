//! One client connection's byte transport: a TCP or TLS stream of packets, or a WebSocket
//! whose every message is one packet. Reads are cancel-safe, so the connection task can poll
//! reading, writing and timers in any order.
//!
//! Memory follows the bytes: a read buffer grows only as a packet's bytes arrive (a header
//! announcing a megabyte costs nothing until the megabyte is sent), the body limit is the
//! handshake limit until the Pitaya handshake and the body limit after, and the WebSocket
//! write buffer is capped (a client that floods pings and never reads cannot grow it).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kiwano_protocol::ProtocolError;
use kiwano_protocol::packet::{self, Packet, PacketDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::io::poll_read_buf;

use crate::frame_gate::{FrameGate, FrameLimit};

/// A byte stream: TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why reading a packet failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Bytes that break the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The client did more than a connection is allowed (a flood of WebSocket pings, a frame
    /// over the limit).
    #[error("{0}")]
    Limit(String),
    /// The socket failed or closed mid-packet.
    #[error("{0}")]
    Io(String),
    /// The connection was reset or dropped without a close: an ordinary disconnect.
    #[error("{0}")]
    Gone(String),
}

/// Ping and pong frames a WebSocket client may send per heartbeat interval.
pub const MAX_CONTROL_FRAMES: u32 = 64;

/// A connection's transport.
pub enum Transport {
    /// TCP or TLS: a packet stream.
    Stream {
        /// The socket.
        io: Box<dyn Stream>,
        /// Bytes read but not yet decoded.
        buf: BytesMut,
        /// The packet decoder (and its body limit).
        decoder: PacketDecoder,
        /// Framed packets queued for writing, in one buffer so a batch is one `send`.
        out: Vec<u8>,
        /// Where each packet queued in `out` ends: a kick can follow the packet in progress.
        ends: VecDeque<usize>,
        /// How much of `out` is already written.
        written: usize,
    },
    /// WebSocket (or WSS): one packet per binary message.
    Ws {
        /// The socket, over a gate that lets whole frames through.
        ws: Box<WebSocketStream<FrameGate>>,
        /// Largest packet body accepted now (shared with the gate as a frame limit).
        limit: Arc<FrameLimit>,
        /// Packets queued for writing, one message each.
        out: VecDeque<Bytes>,
        /// Messages handed to the socket and not yet flushed.
        unflushed: bool,
        /// Ping and pong frames received since the last heartbeat tick.
        control: u32,
    },
}

/// Keep idle connections small: a read buffer larger than this is released once empty.
const IDLE_BUF: usize = 16 << 10;

/// Largest read at once: a packet's buffer grows by at most this much per read.
const READ_CHUNK: usize = 64 << 10;

/// Room kept in the WebSocket write buffer beyond one packet, for pongs and the close frame.
const WS_WRITE_SLACK: usize = 64 << 10;

impl Transport {
    /// A packet stream over `io`, accepting bodies of at most `max_body` bytes until
    /// [`Transport::set_max_body`] changes it.
    pub fn stream(io: Box<dyn Stream>, max_body: usize) -> Self {
        Self::Stream {
            io,
            buf: BytesMut::new(),
            decoder: PacketDecoder::new(max_body),
            out: Vec::new(),
            ends: VecDeque::new(),
            written: 0,
        }
    }

    /// Completes a WebSocket upgrade on `io` (any path is accepted, no subprotocol). Packets
    /// of at most `max_body` bytes are accepted until [`Transport::set_max_body`] changes it
    /// (up to `max_body_ever`); no packet written may exceed `max_packet` bytes.
    ///
    /// # Errors
    /// A failed upgrade.
    pub async fn websocket(io: Box<dyn Stream>, max_body: usize, max_body_ever: usize, max_packet: usize) -> Result<Self, String> {
        let limit = FrameLimit::new(max_body + packet::HEADER_LEN);
        let gate = FrameGate::new(io, limit.clone());
        let ws = tokio_tungstenite::accept_async_with_config(gate, Some(ws_config(max_body_ever, max_packet)))
            .await
            .map_err(|e| format!("websocket upgrade failed: {e}"))?;
        Ok(Self::Ws { ws: Box::new(ws), limit, out: VecDeque::new(), unflushed: false, control: 0 })
    }

    /// Changes the largest packet body accepted, from the next packet on.
    pub fn set_max_body(&mut self, max_body: usize) {
        match self {
            Self::Stream { decoder, .. } => decoder.set_max_body(max_body),
            Self::Ws { limit, .. } => limit.set(max_body + packet::HEADER_LEN),
        }
    }

    /// Starts a new heartbeat interval for the count of WebSocket control frames.
    pub fn tick(&mut self) {
        if let Self::Ws { control, .. } = self {
            *control = 0;
        }
    }

    /// Reads the next packet; `None` at a clean close. Cancel-safe.
    ///
    /// # Errors
    /// A protocol violation or a socket failure.
    pub async fn read_packet(&mut self) -> Result<Option<Packet>, ReadError> {
        std::future::poll_fn(|cx| self.poll_read_packet(cx)).await
    }

    /// Polls for the next packet; `None` at a clean close.
    ///
    /// # Errors
    /// A protocol violation or a socket failure.
    pub fn poll_read_packet(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Packet>, ReadError>> {
        match self {
            Self::Stream { io, buf, decoder, .. } => loop {
                if let Some(p) = decoder.decode(buf)? {
                    // Nothing held between packets (the packet's body keeps its own bytes).
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    return Poll::Ready(Ok(Some(p)));
                }
                let n = if buf.is_empty() {
                    // Waiting for the next packet costs no buffer: its first bytes are read onto
                    // the stack, so an idle connection holds nothing here.
                    let mut first = [0u8; 512];
                    let mut read = tokio::io::ReadBuf::new(&mut first);
                    ready!(Pin::new(&mut **io).poll_read(cx, &mut read)).map_err(io_error)?;
                    buf.extend_from_slice(read.filled());
                    read.filled().len()
                } else {
                    // Room for what the packet still lacks, growing with the bytes that arrived
                    // (at most doubling per read), never with what the header announces.
                    let want = decoder.missing(buf).min(buf.len().clamp(512, READ_CHUNK)).max(512);
                    if buf.capacity() - buf.len() < want {
                        buf.reserve(want);
                    }
                    ready!(poll_read_buf(Pin::new(&mut **io), cx, buf)).map_err(io_error)?
                };
                if n == 0 {
                    return Poll::Ready(if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(ReadError::Gone(format!("connection closed inside a packet ({} bytes pending)", buf.len())))
                    });
                }
            },
            Self::Ws { ws, limit, control, .. } => loop {
                let frame = match ready!(ws.poll_next_unpin(cx)) {
                    None | Some(Ok(WsMessage::Close(_))) => return Poll::Ready(Ok(None)),
                    Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                    // Pitaya does not check the frame type: text frames carry packets too.
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Text(t))) => Bytes::from(t),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {
                        *control += 1;
                        if *control > MAX_CONTROL_FRAMES {
                            return Poll::Ready(Err(ReadError::Limit(format!(
                                "more than {MAX_CONTROL_FRAMES} websocket ping/pong frames in one heartbeat interval"
                            ))));
                        }
                        continue;
                    }
                    Some(Ok(WsMessage::Frame(_))) => continue,
                };
                let max_body = limit.get().saturating_sub(packet::HEADER_LEN);
                return Poll::Ready(Ok(Some(packet::decode_frame(frame, max_body)?)));
            },
        }
    }

    /// The next packet already received, without waiting for the socket: lets a server answer
    /// every packet of one read with a single write.
    ///
    /// # Errors
    /// As [`Transport::read_packet`].
    pub fn next_buffered(&mut self) -> Result<Option<Packet>, ReadError> {
        match self {
            Self::Stream { buf, decoder, .. } => Ok(decoder.decode(buf)?),
            Self::Ws { .. } => {
                use futures_util::FutureExt;
                self.read_packet().now_or_never().unwrap_or(Ok(None))
            }
        }
    }

    /// Queues a framed packet; [`Transport::poll_write_queued`] writes it.
    pub fn queue(&mut self, packet: Bytes) {
        match self {
            Self::Stream { out, ends, .. } => {
                out.extend_from_slice(&packet);
                ends.push_back(out.len());
            }
            Self::Ws { out, .. } => out.push_back(packet),
        }
    }

    /// Whether queued packets are not written and flushed yet.
    pub fn has_queued(&self) -> bool {
        match self {
            Self::Stream { out, .. } => !out.is_empty(),
            Self::Ws { out, unflushed, .. } => !out.is_empty() || *unflushed,
        }
    }

    /// Drops every queued packet none of whose bytes is on the wire, keeps the one in progress
    /// (a client can only read whole packets), and queues `last` after it: how a kick goes out.
    pub fn replace_queued(&mut self, last: Bytes) {
        match self {
            Self::Stream { out, ends, written, .. } => {
                // The packet whose bytes are partly written, if any, ends at the first end past
                // `written` whose start is before it.
                let mut start = 0;
                let mut keep = *written;
                for &end in ends.iter() {
                    if end > *written {
                        if start < *written {
                            keep = end;
                        }
                        break;
                    }
                    start = end;
                }
                out.truncate(keep);
                ends.retain(|&e| e <= keep);
            }
            // Whatever tungstenite holds is whole frames; what is still queued here is not
            // started.
            Self::Ws { out, .. } => out.clear(),
        }
        self.queue(last);
    }

    /// Writes and flushes the queued packets.
    ///
    /// # Errors
    /// A socket failure.
    pub fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        match self {
            Self::Stream { io, out, ends, written, .. } => {
                while *written < out.len() {
                    match ready!(Pin::new(&mut **io).poll_write(cx, &out[*written..])) {
                        Ok(0) => return Poll::Ready(Err("the socket accepts no more bytes".into())),
                        Ok(n) => *written += n,
                        Err(e) => return Poll::Ready(Err(e.to_string())),
                    }
                }
                ready!(Pin::new(&mut **io).poll_flush(cx)).map_err(|e| e.to_string())?;
                out.clear();
                ends.clear();
                *written = 0;
                if out.capacity() > IDLE_BUF {
                    *out = Vec::new();
                    *ends = VecDeque::new();
                }
                Poll::Ready(Ok(()))
            }
            Self::Ws { ws, out, unflushed, .. } => {
                while !out.is_empty() {
                    ready!(ws.poll_ready_unpin(cx)).map_err(|e| e.to_string())?;
                    if let Some(p) = out.pop_front() {
                        ws.start_send_unpin(WsMessage::Binary(p)).map_err(|e| e.to_string())?;
                        *unflushed = true;
                    }
                }
                if *unflushed {
                    ready!(ws.poll_flush_unpin(cx)).map_err(|e| e.to_string())?;
                    *unflushed = false;
                }
                if out.capacity() > 16 {
                    *out = VecDeque::new();
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Writes packets (each already framed) after anything queued, and flushes.
    ///
    /// # Errors
    /// A socket failure.
    pub async fn write(&mut self, packets: &[Bytes]) -> Result<(), String> {
        for p in packets {
            self.queue(p.clone());
        }
        std::future::poll_fn(|cx| self.poll_write_queued(cx)).await
    }

    /// Closes the transport without a reset, within `linger`: a TCP stream is shut down for
    /// writing (FIN) and a WebSocket sends its close frame, then whatever the client still
    /// sends is read and dropped until it closes too (closing a socket with unread bytes would
    /// send a reset, which clients report as a network failure).
    pub async fn close(&mut self, linger: Duration) {
        let _ = tokio::time::timeout(linger, async {
            match self {
                Self::Stream { io, .. } => {
                    if io.shutdown().await.is_err() {
                        return;
                    }
                    // On the heap, and only now: a buffer in this future would sit in every
                    // connection's task for its whole life.
                    let mut scrap = vec![0u8; 1024];
                    while matches!(io.read(&mut scrap).await, Ok(n) if n > 0) {}
                }
                Self::Ws { ws, .. } => {
                    if SinkExt::close(ws).await.is_err() {
                        return;
                    }
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
        })
        .await;
    }
}

fn io_error(e: std::io::Error) -> ReadError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => ReadError::Gone(e.to_string()),
        std::io::ErrorKind::InvalidData => ReadError::Limit(e.to_string()),
        _ => ReadError::Io(e.to_string()),
    }
}

fn ws_error(e: WsError) -> ReadError {
    use tokio_tungstenite::tungstenite::error::ProtocolError as WsProtocol;
    match e {
        WsError::Io(e) => io_error(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => ReadError::Gone("connection closed".into()),
        WsError::Protocol(WsProtocol::ResetWithoutClosingHandshake) => {
            ReadError::Gone("connection closed without a websocket close frame".into())
        }
        WsError::Capacity(c) => ReadError::Limit(c.to_string()),
        other => ReadError::Io(other.to_string()),
    }
}

/// WebSocket limits matched to the protocol: no frame or message beyond one maximal packet,
/// small buffers (tungstenite's defaults are a 128 KiB read buffer and 64 MiB messages), and a
/// write buffer of one packet plus room for control frames: a client that sends pings and
/// never reads cannot make the server queue pongs without bound.
pub fn ws_config(max_body: usize, max_packet: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(max_packet + 14 + WS_WRITE_SLACK)
        .max_message_size(Some(max_body + packet::HEADER_LEN))
        .max_frame_size(Some(max_body + packet::HEADER_LEN))
}
