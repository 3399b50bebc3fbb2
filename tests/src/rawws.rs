//! A WebSocket client written byte by byte (RFC 6455), for tests that send what no well-behaved
//! library would: frame headers announcing more than follows, floods of pings, no reading.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use kiwano_protocol::packet::{self, PacketType};

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
/// # Panics
/// If the server does not answer `101`.
pub async fn connect(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: kiwano\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("upgrade sent");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("upgrade answered");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// Reads one server frame (unmasked); its opcode and payload.
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
pub async fn handshaken(addr: &str) -> TcpStream {
    let mut s = connect(addr).await;
    let hs = packet::to_bytes(PacketType::Handshake, br#"{"sys":{"platform":"rawws"}}"#).expect("packet");
    s.write_all(&frame(0x2, &hs)).await.expect("handshake sent");
    let (_, reply) = read_frame(&mut s).await.expect("handshake answered");
    assert_eq!(reply.first(), Some(&(PacketType::Handshake as u8)));
    let ack = packet::to_bytes(PacketType::HandshakeAck, &[]).expect("packet");
    s.write_all(&frame(0x2, &ack)).await.expect("ack sent");
    s
}
