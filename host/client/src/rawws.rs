//! A WebSocket client written byte by byte (RFC 6455), for tests and the reliability harness,
//! which send what no well-behaved library would: frame headers announcing more than follows,
//! floods of pings, no reading.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use kiwano_protocol::packet::{self, PacketType};

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: kiwano\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A frame header (FIN set, masked with a zero key, so the payload goes as it is) for a payload
/// of `len` bytes with `opcode` (`0x2` binary, `0x9` ping).
pub fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// A whole frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = frame_header(opcode, payload.len() as u64);
    f.extend_from_slice(payload);
    f
}

/// Connects and completes the upgrade.
///
/// # Errors
/// A failed connection, or an answer other than `101`.
pub async fn try_connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(UPGRADE).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("upgrade refused: {}", String::from_utf8_lossy(&head))));
    }
    Ok(s)
}

/// Reads one server frame (unmasked); its opcode and payload.
///
/// # Errors
/// A socket failure.
pub async fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let len = match h[1] & 0x7f {
        126 => u64::from(s.read_u16().await?),
        127 => s.read_u64().await?,
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
    s.read_exact(&mut payload).await?;
    Ok((h[0] & 0x0f, payload))
}

/// Connects, upgrades and completes the Pitaya handshake.
///
/// # Errors
/// Any step failing, or an answer that is not a handshake.
pub async fn try_handshaken(addr: &str) -> std::io::Result<TcpStream> {
    let mut s = try_connect(addr).await?;
    let hs = packet::to_bytes(PacketType::Handshake, br#"{"sys":{"platform":"rawws"}}"#).map_err(std::io::Error::other)?;
    s.write_all(&frame(0x2, &hs)).await?;
    let (_, reply) = read_frame(&mut s).await?;
    if reply.first() != Some(&(PacketType::Handshake as u8)) {
        return Err(std::io::Error::other("the handshake was not answered"));
    }
    let ack = packet::to_bytes(PacketType::HandshakeAck, &[]).map_err(std::io::Error::other)?;
    s.write_all(&frame(0x2, &ack)).await?;
    Ok(s)
}

/// As [`try_handshaken`], for tests.
///
/// # Panics
/// If any step fails.
pub async fn handshaken(addr: &str) -> TcpStream {
    try_handshaken(addr).await.expect("websocket connection and Pitaya handshake")
}
