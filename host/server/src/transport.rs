//! One client connection's byte transport: a TCP or TLS stream of packets, or a WebSocket
//! whose every message is one packet. Reads are cancel-safe, so the connection task can
//! select between reading, writing and timers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kiwano_protocol::packet::{self, Packet, PacketDecoder};
use kiwano_protocol::ProtocolError;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A byte stream: TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why reading a packet failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Bytes that break the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket failed or closed mid-packet.
    #[error("{0}")]
    Io(String),
}

/// A connection's transport.
pub enum Transport {
    /// TCP or TLS: a packet stream.
    Stream {
        /// The socket.
        io: Box<dyn Stream>,
        /// Bytes read but not yet decoded.
        buf: BytesMut,
        /// The packet decoder.
        decoder: PacketDecoder,
        /// Framed packets queued for writing, in one buffer so a batch is one `send`.
        out: Vec<u8>,
        /// How much of `out` is already written.
        written: usize,
    },
    /// WebSocket (or WSS): one packet per binary message.
    Ws {
        /// The socket.
        ws: Box<WebSocketStream<Box<dyn Stream>>>,
        /// Largest packet body accepted.
        max_body: usize,
        /// Packets queued for writing, one message each.
        out: VecDeque<Bytes>,
        /// Messages handed to the socket and not yet flushed.
        unflushed: bool,
    },
}

/// Keep idle connections small: a read buffer larger than this is released once empty.
const IDLE_BUF: usize = 16 << 10;

impl Transport {
    /// A packet stream over `io`.
    pub fn stream(io: Box<dyn Stream>, max_body: usize) -> Self {
        Self::Stream { io, buf: BytesMut::new(), decoder: PacketDecoder::new(max_body), out: Vec::new(), written: 0 }
    }

    /// Completes a WebSocket upgrade on `io` (any path is accepted, no subprotocol).
    ///
    /// # Errors
    /// A failed upgrade.
    pub async fn websocket(io: Box<dyn Stream>, max_body: usize) -> Result<Self, String> {
        let ws = tokio_tungstenite::accept_async_with_config(io, Some(ws_config(max_body)))
            .await
            .map_err(|e| format!("websocket upgrade failed: {e}"))?;
        Ok(Self::Ws { ws: Box::new(ws), max_body, out: VecDeque::new(), unflushed: false })
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
                    if buf.is_empty() && buf.capacity() > IDLE_BUF {
                        *buf = BytesMut::new();
                    }
                    return Poll::Ready(Ok(Some(p)));
                }
                if buf.capacity() - buf.len() < 512 {
                    buf.reserve(4096);
                }
                let n = ready!(poll_read_buf(Pin::new(&mut **io), cx, buf)).map_err(|e| ReadError::Io(e.to_string()))?;
                if n == 0 {
                    return Poll::Ready(if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(ReadError::Io(format!("connection closed inside a packet ({} bytes pending)", buf.len())))
                    });
                }
            },
            Self::Ws { ws, max_body, .. } => loop {
                let frame = match ready!(ws.poll_next_unpin(cx)) {
                    None | Some(Ok(WsMessage::Close(_))) => return Poll::Ready(Ok(None)),
                    Some(Err(e)) => return Poll::Ready(Err(ReadError::Io(e.to_string()))),
                    // Pitaya does not check the frame type: text frames carry packets too.
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Text(t))) => Bytes::from(t.as_bytes().to_vec()),
                    Some(Ok(_)) => continue,
                };
                return Poll::Ready(Ok(Some(packet::decode_frame(frame, *max_body)?)));
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
            Self::Stream { out, .. } => out.extend_from_slice(&packet),
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

    /// Whether part of a packet may be on the wire: nothing else can be written after it.
    pub fn torn(&self) -> bool {
        match self {
            Self::Stream { written, .. } => *written > 0,
            Self::Ws { unflushed, .. } => *unflushed,
        }
    }

    /// Drops the queued packets none of which is on the wire yet.
    pub fn discard_queued(&mut self) {
        match self {
            Self::Stream { out, written: 0, .. } => out.clear(),
            Self::Stream { .. } => {}
            Self::Ws { out, .. } => out.clear(),
        }
    }

    /// Writes and flushes the queued packets.
    ///
    /// # Errors
    /// A socket failure.
    pub fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        match self {
            Self::Stream { io, out, written, .. } => {
                while *written < out.len() {
                    match ready!(Pin::new(&mut **io).poll_write(cx, &out[*written..])) {
                        Ok(0) => return Poll::Ready(Err("the socket accepts no more bytes".into())),
                        Ok(n) => *written += n,
                        Err(e) => return Poll::Ready(Err(e.to_string())),
                    }
                }
                ready!(Pin::new(&mut **io).poll_flush(cx)).map_err(|e| e.to_string())?;
                out.clear();
                *written = 0;
                if out.capacity() > IDLE_BUF {
                    *out = Vec::new();
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

    /// Closes the transport politely, within `timeout`.
    pub async fn close(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            match self {
                Self::Stream { io, .. } => {
                    let _ = io.shutdown().await;
                }
                Self::Ws { ws, .. } => {
                    let _ = SinkExt::close(ws).await;
                }
            }
        })
        .await;
    }
}

/// WebSocket limits matched to the protocol: no message beyond one maximal packet, and small
/// buffers (tungstenite's defaults are a 128 KiB read buffer and 64 MiB messages): the read
/// buffer grows for a large message, but an idle connection holds 512 bytes.
pub fn ws_config(max_body: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(max_body + packet::HEADER_LEN))
        .max_frame_size(Some(max_body + packet::HEADER_LEN))
}
