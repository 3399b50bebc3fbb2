//! The message layer: the body of a data packet.
//!
//! ```text
//! flag:1 | id: varint (request, response) | route: len:1 + bytes, or code:2 BE (request, notify, push) | payload
//! ```
//!
//! Flag bits: `0x01` route compressed, `0x0E` type, `0x10` zlib payload, `0x20` error.

use bytes::{BufMut, Bytes, BytesMut};

use crate::compression;
use crate::{ProtocolError, RouteDictionary};

const ROUTE_COMPRESSED: u8 = 0x01;
const PAYLOAD_COMPRESSED: u8 = 0x10;
const ERROR: u8 = 0x20;

/// The four message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Client → server, with an id, answered by a response.
    Request = 0,
    /// Client → server, no id, never answered.
    Notify = 1,
    /// Server → client answer to a request, same id.
    Response = 2,
    /// Server → client, unsolicited, with a route.
    Push = 3,
}

impl MessageType {
    fn has_id(self) -> bool {
        matches!(self, Self::Request | Self::Response)
    }

    fn has_route(self) -> bool {
        !matches!(self, Self::Response)
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its type.
    pub kind: MessageType,
    /// The request id (requests and responses; 0 otherwise).
    pub id: u64,
    /// The route (requests, notifies, pushes; empty for responses).
    pub route: String,
    /// The payload, inflated.
    pub data: Bytes,
    /// The error bit: the payload is an error object.
    pub error: bool,
}

impl Message {
    /// A response to request `id`.
    pub fn response(id: u64, data: impl Into<Bytes>, error: bool) -> Self {
        Self { kind: MessageType::Response, id, route: String::new(), data: data.into(), error }
    }

    /// A push on `route`.
    pub fn push(route: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self { kind: MessageType::Push, id: 0, route: route.into(), data: data.into(), error: false }
    }

    /// A request `id` on `route`.
    pub fn request(id: u64, route: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self { kind: MessageType::Request, id, route: route.into(), data: data.into(), error: false }
    }

    /// A notify on `route`.
    pub fn notify(route: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self { kind: MessageType::Notify, id: 0, route: route.into(), data: data.into(), error: false }
    }
}

/// How messages are encoded: the dictionary to compress routes with and whether payloads are
/// compressed when that makes them shorter.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions<'a> {
    /// Routes found here are sent as their 2-byte code.
    pub dictionary: &'a RouteDictionary,
    /// Deflate payloads and use the result when strictly shorter.
    pub compress: bool,
}

/// Appends the encoding of `m` to `out`.
///
/// # Errors
/// [`ProtocolError::RouteTooLong`] for an uncompressed route over 255 bytes.
pub fn encode(m: &Message, opts: EncodeOptions<'_>, out: &mut BytesMut) -> Result<(), ProtocolError> {
    let mut flag = (m.kind as u8) << 1;
    let code = if m.kind.has_route() { opts.dictionary.code(&m.route) } else { None };
    if code.is_some() {
        flag |= ROUTE_COMPRESSED;
    }
    if m.error {
        flag |= ERROR;
    }
    let compressed = if opts.compress { compression::deflate_if_shorter(&m.data) } else { None };
    if compressed.is_some() {
        flag |= PAYLOAD_COMPRESSED;
    }
    if m.kind.has_route() && code.is_none() && m.route.len() > 255 {
        return Err(ProtocolError::RouteTooLong(m.route.len()));
    }
    out.put_u8(flag);
    if m.kind.has_id() {
        put_varint(out, m.id);
    }
    if m.kind.has_route() {
        match code {
            Some(code) => out.put_u16(code),
            None => {
                out.put_u8(m.route.len() as u8);
                out.put_slice(m.route.as_bytes());
            }
        }
    }
    out.put_slice(compressed.as_deref().unwrap_or(&m.data));
    Ok(())
}

/// The encoding of `m` as a fresh buffer.
///
/// # Errors
/// As [`encode`].
pub fn to_bytes(m: &Message, opts: EncodeOptions<'_>) -> Result<Bytes, ProtocolError> {
    let mut out = BytesMut::with_capacity(8 + m.route.len() + m.data.len());
    encode(m, opts, &mut out)?;
    Ok(out.freeze())
}

/// Appends `v` as a protobuf varint.
pub fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn read_varint(data: &[u8], offset: &mut usize) -> Result<u64, ProtocolError> {
    let mut v: u64 = 0;
    for (i, &b) in data[*offset..].iter().enumerate() {
        if i == 10 || (i == 9 && b > 1) {
            return Err(ProtocolError::InvalidMessage("message id varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7F) << (7 * i);
        if b < 0x80 {
            *offset += i + 1;
            return Ok(v);
        }
    }
    Err(ProtocolError::InvalidMessage("message id varint is not terminated"))
}

/// Decodes a message; a compressed payload is inflated to at most `max_body` bytes.
///
/// # Errors
/// A message shorter than its fields, an unknown type, a route code missing from `dictionary`,
/// or a payload that does not inflate within `max_body`.
pub fn decode(data: &Bytes, dictionary: &RouteDictionary, max_body: usize) -> Result<Message, ProtocolError> {
    if data.len() < 2 {
        return Err(ProtocolError::InvalidMessage("shorter than 2 bytes"));
    }
    let flag = data[0];
    let kind = match (flag >> 1) & 0x07 {
        0 => MessageType::Request,
        1 => MessageType::Notify,
        2 => MessageType::Response,
        3 => MessageType::Push,
        other => return Err(ProtocolError::WrongMessageType(other)),
    };
    let mut offset = 1;
    let id = if kind.has_id() { read_varint(data, &mut offset)? } else { 0 };
    let mut route = String::new();
    if kind.has_route() {
        if flag & ROUTE_COMPRESSED != 0 {
            let Some(code_bytes) = data.get(offset..offset + 2) else {
                return Err(ProtocolError::InvalidMessage("route code is cut short"));
            };
            let code = u16::from_be_bytes([code_bytes[0], code_bytes[1]]);
            route = dictionary.route(code).ok_or(ProtocolError::RouteCodeNotFound(code))?.to_owned();
            offset += 2;
        } else {
            let Some(&len) = data.get(offset) else {
                return Err(ProtocolError::InvalidMessage("route length is missing"));
            };
            offset += 1;
            let Some(bytes) = data.get(offset..offset + usize::from(len)) else {
                return Err(ProtocolError::InvalidMessage("route is cut short"));
            };
            route = std::str::from_utf8(bytes)
                .map_err(|_| ProtocolError::InvalidMessage("route is not UTF-8"))?
                .to_owned();
            offset += usize::from(len);
        }
    }
    let mut payload = data.slice(offset..);
    if flag & PAYLOAD_COMPRESSED != 0 {
        payload = compression::inflate(&payload, max_body)?.into();
    }
    Ok(Message { kind, id, route, data: payload, error: flag & ERROR != 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict() -> RouteDictionary {
        RouteDictionary::new([("a", 1u16)]).unwrap()
    }

    fn enc(m: &Message, d: &RouteDictionary) -> Vec<u8> {
        to_bytes(m, EncodeOptions { dictionary: d, compress: false }).unwrap().to_vec()
    }

    /// The golden vectors of PITAYA-PROTOCOL.md §1.6 (Pitaya's `pkg/conn/message/fixtures`).
    #[test]
    fn golden_vectors() {
        let none = RouteDictionary::default();
        let cases: [(Message, &RouteDictionary, &[u8]); 10] = [
            (Message::request(0, "a", Bytes::new()), &none, &[0x00, 0x00, 0x01, 0x61]),
            (Message::request(0, "a", Bytes::new()), &dict(), &[0x01, 0x00, 0x00, 0x01]),
            (Message::notify("a", Bytes::new()), &none, &[0x02, 0x01, 0x61]),
            (Message::notify("a", Bytes::new()), &dict(), &[0x03, 0x00, 0x01]),
            (Message::push("a", Bytes::new()), &none, &[0x06, 0x01, 0x61]),
            (Message::push("a", Bytes::new()), &dict(), &[0x07, 0x00, 0x01]),
            (Message::response(0, Bytes::new(), false), &none, &[0x04, 0x00]),
            (Message::response(0, vec![1u8], false), &none, &[0x04, 0x00, 0x01]),
            (Message::response(129, Bytes::new(), false), &none, &[0x04, 0x81, 0x01]),
            (Message::response(0, vec![1u8], true), &none, &[0x24, 0x00, 0x01]),
        ];
        for (m, d, bytes) in cases {
            assert_eq!(enc(&m, d), bytes, "encoding {m:?}");
            let back = decode(&Bytes::copy_from_slice(bytes), d, 1 << 20).unwrap();
            assert_eq!(back, m, "decoding {bytes:02x?}");
        }
    }

    #[test]
    fn error_and_compressed_payload() {
        let none = RouteDictionary::default();
        let m = Message::response(0, b"bla".repeat(13), true);
        let bytes = to_bytes(&m, EncodeOptions { dictionary: &none, compress: true }).unwrap();
        assert_eq!(&bytes[..4], &[0x34, 0x00, 0x78, 0x9c]);
        assert_eq!(decode(&bytes, &none, 1 << 20).unwrap(), m);
        // Not shorter: sent plain.
        let m = Message::response(7, &b"{}"[..], false);
        let bytes = to_bytes(&m, EncodeOptions { dictionary: &none, compress: true }).unwrap();
        assert_eq!(&bytes[..], &[0x04, 0x07, b'{', b'}']);
    }

    #[test]
    fn rejects_bad_messages() {
        let none = RouteDictionary::default();
        let bad: [&[u8]; 6] = [&[0x00], &[0x08, 0x00], &[0x00, 0x80], &[0x01, 0x01, 0x00, 0x09], &[0x00, 0x01, 0x05, b'a'], &[0x02]];
        for b in bad {
            assert!(decode(&Bytes::copy_from_slice(b), &none, 100).is_err(), "{b:02x?}");
        }
        assert_eq!(
            decode(&Bytes::from_static(&[0x01, 0x01, 0x00, 0x09]), &none, 100),
            Err(ProtocolError::RouteCodeNotFound(9))
        );
        let long = Message::push("r".repeat(256), Bytes::new());
        assert_eq!(
            to_bytes(&long, EncodeOptions { dictionary: &none, compress: false }),
            Err(ProtocolError::RouteTooLong(256))
        );
    }

    #[test]
    fn large_ids() {
        let none = RouteDictionary::default();
        for id in [1u64, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let m = Message::request(id, "x.y", &b"{}"[..]);
            let b = to_bytes(&m, EncodeOptions { dictionary: &none, compress: false }).unwrap();
            assert_eq!(decode(&b, &none, 100).unwrap().id, id);
        }
    }
}
