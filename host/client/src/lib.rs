//! A client of Pitaya's wire protocol over TCP, TLS, WebSocket or WSS.
//!
//! Used by Kiwano's tests and tools. It speaks the same bytes as libpitaya and Pitaya's Go
//! client, and also lets a test send raw bytes and read raw packets, to check what the server
//! does with bad input.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiwano_client::ClientError> {
//! use kiwano_client::{Client, Transport};
//! let mut c = Client::connect("127.0.0.1:3250", Transport::Tcp, None).await?;
//! c.handshake(&serde_json::json!({"sys": {"platform": "rust"}})).await?;
//! let reply = c.request("echo.echo", br#"{"hi":1}"#).await?;
//! assert_eq!(&reply.data[..], br#"{"hi":1}"#);
//! # Ok(()) }
//! ```

pub mod rawws;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kiwano_protocol::message::{self, EncodeOptions};
use kiwano_protocol::packet::{self, Packet, PacketDecoder, PacketType};
use kiwano_protocol::{Message, MessageType, RouteDictionary, compression};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The transport to connect with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

/// TLS settings of a client: the roots it trusts and the name it expects.
#[derive(Clone)]
pub struct TlsClient {
    /// rustls configuration (roots, ALPN…).
    pub config: Arc<rustls::ClientConfig>,
    /// The server name to verify, e.g. `localhost`.
    pub server_name: String,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the given DER roots.
    ///
    /// # Errors
    /// A root that rustls refuses.
    pub fn with_roots(roots: &[rustls_pki_types::CertificateDer<'static>], server_name: &str) -> Result<Self, ClientError> {
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add(r.clone()).map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Self { config: Arc::new(config), server_name: server_name.to_owned() })
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket failure.
    #[error("i/o: {0}")]
    Io(String),
    /// TLS setup.
    #[error("tls: {0}")]
    Tls(String),
    /// The server broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The connection was reset (TCP RST) rather than closed: what libpitaya reports as a
    /// network failure.
    #[error("connection reset")]
    Reset,
    /// The server kicked the client.
    #[error("kicked by the server")]
    Kicked,
    /// The handshake was refused.
    #[error("handshake refused with code {0}")]
    HandshakeRefused(i64),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Conn {
    Stream { io: Box<dyn Io>, buf: BytesMut, decoder: PacketDecoder },
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

/// A Pitaya protocol client.
pub struct Client {
    conn: Conn,
    dictionary: RouteDictionary,
    next_id: u64,
    /// Pushes (and other messages) received while waiting for a response.
    queued: VecDeque<Message>,
    /// Heartbeats received so far.
    pub heartbeats: u64,
    /// Compress request payloads when shorter.
    pub compress: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

/// The server's handshake response.
#[derive(Debug, Clone)]
pub struct HandshakeReply {
    /// The JSON object, inflated if it came compressed.
    pub json: serde_json::Value,
    /// Whether it came zlib-compressed.
    pub compressed: bool,
}

fn io_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Io(e.to_string())
}

impl Client {
    /// Connects (TCP, TLS handshake, WebSocket upgrade), without the Pitaya handshake.
    ///
    /// # Errors
    /// Connection, TLS or upgrade failure.
    pub async fn connect(addr: &str, transport: Transport, tls: Option<&TlsClient>) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr).await.map_err(io_err)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match transport {
            Transport::Tls | Transport::Wss => {
                let tls = tls.ok_or_else(|| ClientError::Tls("TLS transport without TLS settings".into()))?;
                let name = ServerName::try_from(tls.server_name.clone()).map_err(|e| ClientError::Tls(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                Box::new(stream)
            }
            Transport::Tcp | Transport::Ws => Box::new(tcp),
        };
        let conn = match transport {
            Transport::Tcp | Transport::Tls => {
                Conn::Stream { io, buf: BytesMut::new(), decoder: PacketDecoder::new(kiwano_protocol::MAX_WIRE_BODY) }
            }
            Transport::Ws | Transport::Wss => {
                let scheme = if transport == Transport::Wss { "wss" } else { "ws" };
                let host = tls.map_or("localhost", |t| t.server_name.as_str());
                let url = format!("{scheme}://{host}/");
                let (ws, _) = tokio_tungstenite::client_async(url, io).await.map_err(io_err)?;
                Conn::Ws(Box::new(ws))
            }
        };
        Ok(Self { conn, dictionary: RouteDictionary::default(), next_id: 1, queued: VecDeque::new(), heartbeats: 0, compress: false })
    }

    /// Sends `bytes` as they are: on a stream as written; on a WebSocket as one binary message.
    ///
    /// # Errors
    /// A socket failure.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match &mut self.conn {
            Conn::Stream { io, .. } => {
                io.write_all(bytes).await.map_err(io_err)?;
                io.flush().await.map_err(io_err)
            }
            Conn::Ws(ws) => ws.send(WsMessage::Binary(Bytes::copy_from_slice(bytes))).await.map_err(io_err),
        }
    }

    /// Sends one packet.
    ///
    /// # Errors
    /// A socket failure.
    pub async fn send_packet(&mut self, kind: PacketType, body: &[u8]) -> Result<(), ClientError> {
        let p = packet::to_bytes(kind, body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_raw(&p).await
    }

    /// Reads the next packet of any type; `None` when the server closed the connection.
    ///
    /// # Errors
    /// A socket failure or bytes that are not packets.
    pub async fn recv_packet(&mut self) -> Result<Option<Packet>, ClientError> {
        match &mut self.conn {
            Conn::Stream { io, buf, decoder } => loop {
                if let Some(p) = decoder.decode(buf).map_err(|e| ClientError::Protocol(e.to_string()))? {
                    return Ok(Some(p));
                }
                buf.reserve(decoder.missing(buf).clamp(4096, 1 << 20));
                match io.read_buf(buf).await {
                    Ok(0) if buf.is_empty() => return Ok(None),
                    // A server must not stop in the middle of a packet (a kick, for one, follows
                    // whole packets).
                    Ok(0) => return Err(ClientError::Protocol(format!("connection closed inside a packet ({} bytes of it read)", buf.len()))),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(ClientError::Reset),
                    Err(e) => return Err(io_err(e)),
                }
            },
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                    Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
                    | Some(Err(tokio_tungstenite::tungstenite::Error::AlreadyClosed)) => return Ok(None),
                    Some(Err(tokio_tungstenite::tungstenite::Error::Protocol(_))) => return Ok(None),
                    Some(Err(tokio_tungstenite::tungstenite::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        return Err(ClientError::Reset);
                    }
                    Some(Err(e)) => return Err(io_err(e)),
                    Some(Ok(WsMessage::Binary(b))) => {
                        return packet::decode_frame(b, kiwano_protocol::MAX_WIRE_BODY)
                            .map(Some)
                            .map_err(|e| ClientError::Protocol(e.to_string()));
                    }
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// Sends the handshake request, reads the response and, if it is code 200, sends the ack
    /// and adopts the server's route dictionary.
    ///
    /// # Errors
    /// A refused handshake, or a response that is not a handshake.
    pub async fn handshake(&mut self, request: &serde_json::Value) -> Result<HandshakeReply, ClientError> {
        self.send_packet(PacketType::Handshake, request.to_string().as_bytes()).await?;
        let reply = self.read_handshake().await?;
        let code = reply.json["code"].as_i64().unwrap_or(0);
        if code != 200 {
            return Err(ClientError::HandshakeRefused(code));
        }
        if let Some(dict) = reply.json["sys"]["dict"].as_object() {
            let entries = dict.iter().filter_map(|(k, v)| Some((k.clone(), u16::try_from(v.as_u64()?).ok()?)));
            self.dictionary = RouteDictionary::new(entries).map_err(|e| ClientError::Protocol(e.to_string()))?;
        }
        self.send_packet(PacketType::HandshakeAck, &[]).await?;
        Ok(reply)
    }

    /// Reads a handshake response packet (after a handshake request was sent by hand).
    ///
    /// # Errors
    /// Anything but a handshake packet with a JSON body.
    pub async fn read_handshake(&mut self) -> Result<HandshakeReply, ClientError> {
        loop {
            let Some(p) = self.recv_packet().await? else { return Err(ClientError::Closed) };
            match p.kind {
                PacketType::Heartbeat => self.heartbeats += 1,
                PacketType::Handshake => {
                    let compressed = compression::looks_compressed(&p.body);
                    let body = if compressed {
                        compression::inflate(&p.body, kiwano_protocol::MAX_WIRE_BODY)
                            .map_err(|e| ClientError::Protocol(e.to_string()))?
                    } else {
                        p.body.to_vec()
                    };
                    let json = serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
                    return Ok(HandshakeReply { json, compressed });
                }
                other => return Err(ClientError::Protocol(format!("expected a handshake, got {other:?}"))),
            }
        }
    }

    /// Sends a request and returns its id, without waiting (pipelining).
    ///
    /// # Errors
    /// A socket failure.
    pub async fn send_request(&mut self, route: &str, body: &[u8]) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let m = Message::request(id, route, Bytes::copy_from_slice(body));
        self.send_message(&m).await?;
        Ok(id)
    }

    /// Sends a notify.
    ///
    /// # Errors
    /// A socket failure.
    pub async fn notify(&mut self, route: &str, body: &[u8]) -> Result<(), ClientError> {
        self.send_message(&Message::notify(route, Bytes::copy_from_slice(body))).await
    }

    /// Encodes and sends any message.
    ///
    /// # Errors
    /// A route over 255 bytes, a socket failure.
    pub async fn send_message(&mut self, m: &Message) -> Result<(), ClientError> {
        let opts = EncodeOptions { dictionary: &self.dictionary, compress: self.compress };
        let body = message::to_bytes(m, opts).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_packet(PacketType::Data, &body).await
    }

    /// Sends a request and waits for its response; pushes that arrive meanwhile are kept for
    /// [`Client::next_message`].
    ///
    /// # Errors
    /// A closed connection, a kick, a socket failure.
    pub async fn request(&mut self, route: &str, body: &[u8]) -> Result<Message, ClientError> {
        let id = self.send_request(route, body).await?;
        self.response(id).await
    }

    /// Waits for the response to request `id`.
    ///
    /// # Errors
    /// A closed connection, a kick, a socket failure.
    pub async fn response(&mut self, id: u64) -> Result<Message, ClientError> {
        if let Some(i) = self.queued.iter().position(|m| m.kind == MessageType::Response && m.id == id) {
            return Ok(self.queued.remove(i).unwrap_or_else(|| Message::response(id, Bytes::new(), false)));
        }
        loop {
            let m = self.read_message().await?;
            if m.kind == MessageType::Response && m.id == id {
                return Ok(m);
            }
            self.queued.push_back(m);
        }
    }

    /// Takes the messages received while waiting for responses and not read yet (pushes, mostly).
    pub fn take_queued(&mut self) -> Vec<Message> {
        self.queued.drain(..).collect()
    }

    /// The next message (queued first, then from the socket), skipping heartbeats.
    ///
    /// # Errors
    /// A closed connection, a kick, a socket failure.
    pub async fn next_message(&mut self) -> Result<Message, ClientError> {
        if let Some(m) = self.queued.pop_front() {
            return Ok(m);
        }
        self.read_message().await
    }

    async fn read_message(&mut self) -> Result<Message, ClientError> {
        loop {
            let Some(p) = self.recv_packet().await? else { return Err(ClientError::Closed) };
            match p.kind {
                PacketType::Heartbeat => self.heartbeats += 1,
                PacketType::Kick => return Err(ClientError::Kicked),
                PacketType::Data => {
                    return message::decode(&p.body, &self.dictionary, kiwano_protocol::MAX_WIRE_BODY)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
                other => return Err(ClientError::Protocol(format!("unexpected {other:?} packet"))),
            }
        }
    }

    /// Sends a heartbeat.
    ///
    /// # Errors
    /// A socket failure.
    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.send_packet(PacketType::Heartbeat, &[]).await
    }
}
