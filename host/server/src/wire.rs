//! Encoding of what the server sends: responses, error responses and pushes, framed as data
//! packets with the server's dictionary, compression and serializer.

use bytes::{Bytes, BytesMut};
use kiwano_protocol::message::{self, EncodeOptions};
use kiwano_protocol::packet::{self, HEADER_LEN, PacketType};
use kiwano_protocol::{Message, PitayaError, ProtocolError, RouteDictionary, Serializer};

/// How this server writes messages.
#[derive(Debug)]
pub struct Wire {
    /// Routes sent as codes.
    pub dictionary: RouteDictionary,
    /// Compress payloads when shorter.
    pub compress: bool,
    /// Payloads shorter than this are never compressed (deflating them costs more than it saves).
    pub compress_min: usize,
    /// Encoding of error objects.
    pub serializer: Serializer,
    /// Largest body accepted from clients (and inflated payload).
    pub max_body: usize,
}

impl Wire {
    /// A data packet carrying `m`.
    ///
    /// # Errors
    /// A route over 255 bytes, or a body over the wire limit.
    pub fn packet(&self, m: &Message) -> Result<Bytes, ProtocolError> {
        let mut out = BytesMut::with_capacity(HEADER_LEN + 8 + m.route.len() + m.data.len());
        out.resize(HEADER_LEN, 0);
        let compress = self.compress && m.data.len() >= self.compress_min;
        message::encode(m, EncodeOptions { dictionary: &self.dictionary, compress }, &mut out)?;
        let body_len = out.len() - HEADER_LEN;
        if body_len > kiwano_protocol::MAX_WIRE_BODY {
            return Err(ProtocolError::BodyTooLargeToEncode(body_len));
        }
        let mut header = BytesMut::with_capacity(HEADER_LEN);
        packet::put_header(&mut header, PacketType::Data, body_len);
        out[..HEADER_LEN].copy_from_slice(&header);
        Ok(out.freeze())
    }

    /// A response to request `id`.
    ///
    /// # Errors
    /// A body over the wire limit.
    pub fn response(&self, id: u64, body: Bytes) -> Result<Bytes, ProtocolError> {
        self.packet(&Message::response(id, body, false))
    }

    /// An error response to request `id`.
    ///
    /// An error too large for a packet (a guest's errors are capped below this by the runtime;
    /// one forwarded from another server may not be) is answered with `PIT-500` instead: a
    /// request is always answered.
    pub fn error(&self, id: u64, err: &PitayaError) -> Bytes {
        let body = Bytes::from(err.encode(self.serializer));
        self.packet(&Message::response(id, body, true)).unwrap_or_else(|e| {
            tracing::warn!(code = %err.code, "error response not sent as it is: {e}");
            let small = PitayaError::new(kiwano_protocol::error::codes::INTERNAL, "internal error: the error response was too large");
            let body = Bytes::from(small.encode(self.serializer));
            // A fixed error of a few dozen bytes: within any packet limit.
            self.packet(&Message::response(id, body, true)).unwrap_or_else(|_| Bytes::from_static(&[]))
        })
    }

    /// A push on `route`.
    ///
    /// # Errors
    /// A route over 255 bytes, or a body over the wire limit.
    pub fn push(&self, route: &str, body: Bytes) -> Result<Bytes, ProtocolError> {
        self.packet(&Message::push(route, body))
    }
}
