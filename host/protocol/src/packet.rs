//! The packet layer: `type:1 | length:3 (big-endian, body bytes) | body`.
//!
//! Over TCP and TLS packets form a byte stream: [`PacketDecoder`] reassembles them across reads
//! and splits several out of one read. Over WebSocket every message carries exactly one packet:
//! [`decode_frame`] checks that.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{MAX_WIRE_BODY, ProtocolError};

/// Bytes in a packet header.
pub const HEADER_LEN: usize = 4;

/// The five packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Handshake request (client) or response (server); JSON body.
    Handshake = 1,
    /// The client's acknowledgement of the handshake response; empty.
    HandshakeAck = 2,
    /// Keep-alive, both ways; empty.
    Heartbeat = 3,
    /// A message (request, notify, response, push).
    Data = 4,
    /// The server closes the connection; empty.
    Kick = 5,
}

impl PacketType {
    /// The packet type for a header byte.
    ///
    /// # Errors
    /// [`ProtocolError::WrongPacketType`] outside 1..=5.
    pub fn from_u8(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            1 => Self::Handshake,
            2 => Self::HandshakeAck,
            3 => Self::Heartbeat,
            4 => Self::Data,
            5 => Self::Kick,
            other => return Err(ProtocolError::WrongPacketType(other)),
        })
    }
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Its type.
    pub kind: PacketType,
    /// Its body (possibly empty).
    pub body: Bytes,
}

/// Appends one packet to `out`.
///
/// # Errors
/// [`ProtocolError::BodyTooLargeToEncode`] for a body over 16 777 215 bytes.
pub fn encode(kind: PacketType, body: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
    if body.len() > MAX_WIRE_BODY {
        return Err(ProtocolError::BodyTooLargeToEncode(body.len()));
    }
    out.reserve(HEADER_LEN + body.len());
    out.put_u8(kind as u8);
    put_len(out, body.len());
    out.put_slice(body);
    Ok(())
}

/// One packet as a fresh buffer.
///
/// # Errors
/// As [`encode`].
pub fn to_bytes(kind: PacketType, body: &[u8]) -> Result<Bytes, ProtocolError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    encode(kind, body, &mut out)?;
    Ok(out.freeze())
}

/// Writes the header of a packet whose body the caller appends itself.
pub fn put_header(out: &mut BytesMut, kind: PacketType, body_len: usize) {
    out.put_u8(kind as u8);
    put_len(out, body_len);
}

fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u8((len >> 16) as u8);
    out.put_u8((len >> 8) as u8);
    out.put_u8(len as u8);
}

/// Parses a header: the packet type and the body length, checked against `max_body`.
///
/// # Errors
/// A wrong type or a body over `max_body`.
pub fn parse_header(h: [u8; HEADER_LEN], max_body: usize) -> Result<(PacketType, usize), ProtocolError> {
    let kind = PacketType::from_u8(h[0])?;
    let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
    if size > max_body {
        return Err(ProtocolError::BodyTooLarge { size, max: max_body });
    }
    Ok((kind, size))
}

/// Reassembles packets from a byte stream (TCP, TLS).
///
/// The decoder never reserves room for a body the header announces: the caller grows its buffer
/// as bytes arrive (see [`PacketDecoder::missing`]), so a peer that announces a large body and
/// sends little costs only what it sent.
#[derive(Debug, Clone)]
pub struct PacketDecoder {
    /// Largest body accepted; checked from the header before the body arrives.
    max_body: usize,
}

impl PacketDecoder {
    /// A decoder that rejects bodies over `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Self { max_body: max_body.min(MAX_WIRE_BODY) }
    }

    /// Changes the largest body accepted from the next header on (a server accepts a small
    /// handshake first, then messages up to its body limit).
    pub fn set_max_body(&mut self, max_body: usize) {
        self.max_body = max_body.min(MAX_WIRE_BODY);
    }

    /// The largest body accepted.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// How many more bytes `buf` needs before the next packet is whole: the rest of the header,
    /// or of the body the header announces (never more than the limit allows). 0 when a whole
    /// packet is already there or the header is invalid (the next [`PacketDecoder::decode`]
    /// returns it, or the error).
    pub fn missing(&self, buf: &[u8]) -> usize {
        if buf.len() < HEADER_LEN {
            return HEADER_LEN - buf.len();
        }
        match parse_header([buf[0], buf[1], buf[2], buf[3]], self.max_body) {
            Ok((_, size)) => (HEADER_LEN + size).saturating_sub(buf.len()),
            Err(_) => 0,
        }
    }

    /// Takes the next whole packet off the front of `buf`, or `None` if more bytes are needed.
    ///
    /// # Errors
    /// A wrong packet type or an oversized body, detected from the header alone.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, ProtocolError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let (kind, size) = parse_header([buf[0], buf[1], buf[2], buf[3]], self.max_body)?;
        if buf.len() < HEADER_LEN + size {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(size).freeze();
        Ok(Some(Packet { kind, body }))
    }
}

/// Decodes a WebSocket message, which must hold exactly one packet.
///
/// # Errors
/// Fewer than 4 bytes, a wrong type, an oversized body, or a length that does not match the
/// message.
pub fn decode_frame(frame: Bytes, max_body: usize) -> Result<Packet, ProtocolError> {
    if frame.len() < HEADER_LEN {
        return Err(ProtocolError::FrameTooShort { got: frame.len(), want: HEADER_LEN });
    }
    let (kind, size) = parse_header([frame[0], frame[1], frame[2], frame[3]], max_body.min(MAX_WIRE_BODY))?;
    let got = frame.len() - HEADER_LEN;
    if got < size {
        return Err(ProtocolError::FrameTooShort { got, want: size });
    }
    if got > size {
        return Err(ProtocolError::FrameTooLong { got, want: size });
    }
    Ok(Packet { kind, body: frame.slice(HEADER_LEN..) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_heartbeat_and_kick() {
        assert_eq!(&to_bytes(PacketType::Heartbeat, &[]).unwrap()[..], &[3, 0, 0, 0]);
        assert_eq!(&to_bytes(PacketType::Kick, &[]).unwrap()[..], &[5, 0, 0, 0]);
        assert_eq!(&to_bytes(PacketType::Data, &[0xAB; 0x010203]).unwrap()[..4], &[4, 1, 2, 3]);
    }

    #[test]
    fn reassembles_across_reads_and_splits_several_per_read() {
        let dec = PacketDecoder::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[4, 0, 0, 3, b'a']);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[b'b', b'c', 3, 0, 0, 0, 2, 0]);
        let p = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((p.kind, &p.body[..]), (PacketType::Data, &b"abc"[..]));
        let p = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((p.kind, p.body.len()), (PacketType::Heartbeat, 0));
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().kind, PacketType::HandshakeAck);
    }

    #[test]
    fn never_reserves_what_was_not_received() {
        let dec = PacketDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&[4u8, 0x10, 0, 0, 1, 2][..]);
        let before = buf.capacity();
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.capacity(), before, "no room reserved for the announced 1 MiB body");
        assert_eq!(dec.missing(&buf), (1 << 20) - 2);
        assert_eq!(dec.missing(&[4, 0]), 2);
        assert_eq!(dec.missing(&[9, 0, 0, 0]), 0, "an invalid header is left for decode to report");
    }

    #[test]
    fn the_limit_can_change_between_packets() {
        let mut dec = PacketDecoder::new(16);
        let mut buf = BytesMut::from(&[1u8, 0, 0, 17][..]);
        assert_eq!(dec.decode(&mut buf), Err(ProtocolError::BodyTooLarge { size: 17, max: 16 }));
        dec.set_max_body(1024);
        assert_eq!(dec.max_body(), 1024);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn rejects_wrong_type_and_oversized_body_from_the_header() {
        let dec = PacketDecoder::new(100);
        let mut buf = BytesMut::from(&[6u8, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(ProtocolError::WrongPacketType(6)));
        let mut buf = BytesMut::from(&[4u8, 0, 0, 101][..]);
        assert_eq!(dec.decode(&mut buf), Err(ProtocolError::BodyTooLarge { size: 101, max: 100 }));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(ProtocolError::WrongPacketType(0)));
    }

    #[test]
    fn websocket_frames_hold_exactly_one_packet() {
        let ok = decode_frame(Bytes::from_static(&[4, 0, 0, 1, 9]), 10).unwrap();
        assert_eq!(&ok.body[..], &[9]);
        assert_eq!(
            decode_frame(Bytes::from_static(&[4, 0, 0, 2, 9]), 10),
            Err(ProtocolError::FrameTooShort { got: 1, want: 2 })
        );
        assert_eq!(
            decode_frame(Bytes::from_static(&[3, 0, 0, 0, 3, 0, 0, 0]), 10),
            Err(ProtocolError::FrameTooLong { got: 4, want: 0 })
        );
        assert!(decode_frame(Bytes::from_static(&[3, 0]), 10).is_err());
    }
}
