//! Pitaya's client wire protocol, without I/O.
//!
//! This crate turns bytes into packets and messages and back, exactly as Pitaya (and its pomelo
//! lineage) puts them on the wire. It is shared by the server and by every client Kiwano ships
//! (tests, the load generator), and never touches a socket:
//!
//! - [`packet`]: the framing layer, `type:1 | length:3 (BE) | body`;
//! - [`message`]: the body of a data packet: flag, varint id, route, payload;
//! - [`dictionary`]: the route dictionary that compresses routes to 2-byte codes;
//! - [`compression`]: zlib payloads, inflated under a size cap;
//! - [`handshake`]: the JSON handshake request and response;
//! - [`error`]: Pitaya's error object and codes, encoded for either serializer;
//! - [`protos`]: the protobuf messages of Pitaya's `protos` package.
//!
//! The reference is `PITAYA-PROTOCOL.md` §1; the golden vectors of §1.6 are this crate's tests.

pub mod chain;
pub mod compression;
pub mod dictionary;
pub mod error;
pub mod handshake;
pub mod message;
pub mod packet;
pub mod protos;

pub use chain::CallChain;
pub use dictionary::RouteDictionary;
pub use error::{PitayaError, Serializer};
pub use message::{Message, MessageType};
pub use packet::{Packet, PacketDecoder, PacketType};

/// Why bytes could not be decoded. Every variant closes the offending connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The packet header names a type outside 1..=5.
    #[error("wrong packet type {0:#04x}")]
    WrongPacketType(u8),
    /// The packet header announces a body larger than allowed.
    #[error("packet body of {size} bytes exceeds the {max}-byte limit")]
    BodyTooLarge {
        /// Announced body size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A WebSocket message held fewer bytes than its packet header announced.
    #[error("websocket message holds {got} body bytes, the packet header announced {want}")]
    FrameTooShort {
        /// Body bytes present.
        got: usize,
        /// Body bytes announced.
        want: usize,
    },
    /// A WebSocket message held more bytes than its packet header announced (e.g. two packets).
    #[error("websocket message holds {got} body bytes, the packet header announced {want}")]
    FrameTooLong {
        /// Body bytes present.
        got: usize,
        /// Body bytes announced.
        want: usize,
    },
    /// A message is shorter than its fields require.
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// The message type bits name no known type.
    #[error("wrong message type {0}")]
    WrongMessageType(u8),
    /// A compressed route code is not in the dictionary.
    #[error("route code {0} not found in dictionary")]
    RouteCodeNotFound(u16),
    /// A route longer than the 1-byte length can express.
    #[error("route of {0} bytes is longer than 255 bytes")]
    RouteTooLong(usize),
    /// A compressed payload that does not inflate.
    #[error("payload does not inflate: {0}")]
    BadCompression(String),
    /// A compressed payload that inflates beyond the maximum body size.
    #[error("payload inflates beyond the {max}-byte limit")]
    InflatedTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// A body longer than the 3-byte length can express.
    #[error("packet body of {0} bytes exceeds the 16777215-byte wire limit")]
    BodyTooLargeToEncode(usize),
}

/// The largest body the 3-byte length field can express.
pub const MAX_WIRE_BODY: usize = (1 << 24) - 1;
