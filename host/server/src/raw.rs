//! The raw ceiling server, for benchmarks: the smallest server that speaks the same packets as
//! Kiwano — handshake, heartbeats, and every request echoed back as its response — with no
//! routing, sessions or Wasm. It uses Kiwano's transport (codec, TCP_NODELAY, WebSocket limits)
//! and batches its writes the same way, so Kiwano's figures can be read as a ratio of what this
//! machine does with this protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::handshake::HandshakeResponse;
use kiwano_protocol::packet::{self, PacketType};
use kiwano_protocol::{MessageType, RouteDictionary, Serializer, message};
use tokio::net::TcpListener;

use crate::transport::Transport;
use crate::wire::Wire;

struct Raw {
    wire: Wire,
    handshake: HandshakeResponse,
    heartbeat: Duration,
}

/// Serves the raw protocol on the given TCP and WebSocket listeners, forever.
pub async fn serve(tcp: Option<TcpListener>, ws: Option<TcpListener>, heartbeat: Duration, compress: bool) {
    let raw = Arc::new(Raw {
        wire: Wire {
            dictionary: RouteDictionary::default(),
            compress,
            // Kiwano's default `protocol.compression_min_size`.
            compress_min: crate::config::ProtocolConfig::default().compression_min_size,
            serializer: Serializer::Json,
            max_body: 1 << 20,
        },
        handshake: HandshakeResponse::new(&RouteDictionary::default(), heartbeat, Serializer::Json, compress),
        heartbeat,
    });
    let mut tasks = Vec::new();
    for (listener, websocket) in [(tcp, false), (ws, true)] {
        if let Some(l) = listener {
            tasks.push(tokio::spawn(accept(l, websocket, raw.clone())));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn accept(listener: TcpListener, websocket: bool, raw: Arc<Raw>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let raw = raw.clone();
        tokio::spawn(async move {
            let io: Box<dyn crate::transport::Stream> = Box::new(stream);
            let transport = if websocket {
                match Transport::websocket(io, raw.wire.max_body, raw.wire.max_body, raw.wire.max_body + 1024).await {
                    Ok(t) => t,
                    Err(_) => return,
                }
            } else {
                Transport::stream(io, raw.wire.max_body)
            };
            connection(transport, &raw).await;
        });
    }
}

/// The answer to one packet, if any.
fn answer(raw: &Raw, p: &packet::Packet) -> Result<Option<Bytes>, ()> {
    match p.kind {
        PacketType::Handshake => Ok(packet::to_bytes(PacketType::Handshake, raw.handshake.ok()).ok()),
        PacketType::HandshakeAck | PacketType::Heartbeat => Ok(None),
        PacketType::Data => {
            let m = message::decode(&p.body, &raw.wire.dictionary, raw.wire.max_body).map_err(drop)?;
            if m.kind != MessageType::Request {
                return Ok(None);
            }
            raw.wire.response(m.id, m.data).map(Some).map_err(drop)
        }
        PacketType::Kick => Err(()),
    }
}

async fn connection(mut transport: Transport, raw: &Raw) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + raw.heartbeat, raw.heartbeat);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let hb = packet::to_bytes(PacketType::Heartbeat, &[]).unwrap_or_default();
                if transport.write(&[hb]).await.is_err() {
                    return;
                }
            }
            read = transport.read_packet() => {
                let Ok(Some(first)) = read else { return };
                batch.clear();
                let mut next = Some(first);
                // Answer every packet already received, then write once.
                while let Some(p) = next.take() {
                    match answer(raw, &p) {
                        Ok(Some(b)) => batch.push(b),
                        Ok(None) => {}
                        Err(()) => return,
                    }
                    if batch.len() < 64 {
                        match transport.next_buffered() {
                            Ok(p) => next = p,
                            Err(_) => return,
                        }
                    }
                }
                if !batch.is_empty() && transport.write(&batch).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Binds the raw server's listeners.
///
/// # Errors
/// An address that cannot be bound.
pub async fn bind(tcp: Option<SocketAddr>, ws: Option<SocketAddr>) -> std::io::Result<(Option<TcpListener>, Option<TcpListener>)> {
    let t = match tcp {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let w = match ws {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    Ok((t, w))
}
