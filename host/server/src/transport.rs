//! One client connection's byte transport: a TCP or TLS stream of packets, or a WebSocket
//! whose every message is one packet. Reads are cancel-safe, so the connection task can
//! select between reading, writing and timers.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kiwano_protocol::packet::{self, Packet, PacketDecoder};
use kiwano_protocol::ProtocolError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        /// Scratch space to batch writes.
        scratch: Vec<u8>,
    },
    /// WebSocket (or WSS): one packet per binary message.
    Ws {
        /// The socket.
        ws: Box<WebSocketStream<Box<dyn Stream>>>,
        /// Largest packet body accepted.
        max_body: usize,
    },
}

/// Keep idle connections small: a read buffer larger than this is released once empty.
const IDLE_BUF: usize = 16 << 10;

impl Transport {
    /// A packet stream over `io`.
    pub fn stream(io: Box<dyn Stream>, max_body: usize) -> Self {
        Self::Stream { io, buf: BytesMut::new(), decoder: PacketDecoder::new(max_body), scratch: Vec::new() }
    }

    /// Completes a WebSocket upgrade on `io` (any path is accepted, no subprotocol).
    ///
    /// # Errors
    /// A failed upgrade.
    pub async fn websocket(io: Box<dyn Stream>, max_body: usize) -> Result<Self, String> {
        let ws = tokio_tungstenite::accept_async_with_config(io, Some(ws_config(max_body)))
            .await
            .map_err(|e| format!("websocket upgrade failed: {e}"))?;
        Ok(Self::Ws { ws: Box::new(ws), max_body })
    }

    /// Reads the next packet; `None` at a clean close. Cancel-safe.
    ///
    /// # Errors
    /// A protocol violation or a socket failure.
    pub async fn read_packet(&mut self) -> Result<Option<Packet>, ReadError> {
        match self {
            Self::Stream { io, buf, decoder, .. } => loop {
                if let Some(p) = decoder.decode(buf)? {
                    if buf.is_empty() && buf.capacity() > IDLE_BUF {
                        *buf = BytesMut::new();
                    }
                    return Ok(Some(p));
                }
                if buf.capacity() - buf.len() < 512 {
                    buf.reserve(4096);
                }
                let n = io.read_buf(buf).await.map_err(|e| ReadError::Io(e.to_string()))?;
                if n == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(ReadError::Io(format!("connection closed inside a packet ({} bytes pending)", buf.len())))
                    };
                }
            },
            Self::Ws { ws, max_body } => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                    Some(Err(e)) => return Err(ReadError::Io(e.to_string())),
                    // Pitaya does not check the frame type: text frames carry packets too.
                    Some(Ok(WsMessage::Binary(b))) => return Ok(Some(packet::decode_frame(b, *max_body)?)),
                    Some(Ok(WsMessage::Text(t))) => {
                        return Ok(Some(packet::decode_frame(Bytes::from(t.as_bytes().to_vec()), *max_body)?));
                    }
                    Some(Ok(_)) => {}
                }
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

    /// Writes packets (each already framed) and flushes.
    ///
    /// # Errors
    /// A socket failure.
    pub async fn write(&mut self, packets: &[Bytes]) -> Result<(), String> {
        match self {
            Self::Stream { io, scratch, .. } => {
                if let [one] = packets {
                    io.write_all(one).await.map_err(|e| e.to_string())?;
                } else {
                    scratch.clear();
                    for p in packets {
                        scratch.extend_from_slice(p);
                    }
                    io.write_all(scratch).await.map_err(|e| e.to_string())?;
                    if scratch.capacity() > IDLE_BUF {
                        *scratch = Vec::new();
                    }
                }
                io.flush().await.map_err(|e| e.to_string())
            }
            Self::Ws { ws, .. } => {
                for p in packets {
                    ws.feed(WsMessage::Binary(p.clone())).await.map_err(|e| e.to_string())?;
                }
                ws.flush().await.map_err(|e| e.to_string())
            }
        }
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
