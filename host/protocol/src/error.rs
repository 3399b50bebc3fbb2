//! Pitaya's error object and codes, and the serializers that encode it.
//!
//! A failed request is answered with a response whose error bit is set and whose payload is
//! `protos.Error{code, msg, metadata}` encoded with the server's serializer: JSON
//! (`{"code":"PIT-404","msg":"..","metadata":{..}}`, empty fields omitted, as Go marshals it) or
//! protobuf.

use std::collections::BTreeMap;

use prost::Message as _;

use crate::protos;

/// Pitaya's framework error codes.
pub mod codes {
    /// Any error without a code of its own.
    pub const UNKNOWN: &str = "PIT-000";
    /// A malformed request.
    pub const BAD_REQUEST: &str = "PIT-400";
    /// No such handler or remote.
    pub const NOT_FOUND: &str = "PIT-404";
    /// An RPC that timed out.
    pub const TIMEOUT: &str = "PIT-408";
    /// A write to a broken connection.
    pub const CLOSED_REQUEST: &str = "PIT-498";
    /// A send on a closed session.
    pub const CLIENT_CLOSED: &str = "PIT-499";
    /// An internal failure.
    pub const INTERNAL: &str = "PIT-500";
}

/// The errors of Pitaya's group service (`groups/memory_group_service.go`,
/// `groups/etcd_group_service.go`), with its codes and messages: every group store of Kiwano
/// (memory, etcd, and the view an untrusted call has of them) answers with these.
pub mod group_errors {
    use super::{PitayaError, codes};

    /// `PIT-404 group not found`.
    pub fn not_found() -> PitayaError {
        PitayaError::new(codes::NOT_FOUND, "group not found")
    }

    /// `PIT-400 group already exists`.
    pub fn already_exists() -> PitayaError {
        PitayaError::new(codes::BAD_REQUEST, "group already exists")
    }

    /// `PIT-400 member already exists in group`.
    pub fn member_exists() -> PitayaError {
        PitayaError::new(codes::BAD_REQUEST, "member already exists in group")
    }

    /// `PIT-404 member not found in the group`.
    pub fn member_not_found() -> PitayaError {
        PitayaError::new(codes::NOT_FOUND, "member not found in the group")
    }

    /// `PIT-400 empty uid` for an empty uid, else nothing.
    ///
    /// # Errors
    /// An empty `uid`.
    pub fn check_uid(uid: &str) -> Result<(), PitayaError> {
        if uid.is_empty() { Err(PitayaError::new(codes::BAD_REQUEST, "empty uid")) } else { Ok(()) }
    }
}

/// The serializer of a server: how client payloads and error objects are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Serializer {
    /// JSON (Pitaya's default, `pitaya.serializertype = 1`).
    #[default]
    Json,
    /// Protobuf (`pitaya.serializertype = 2`).
    Protobuf,
}

impl Serializer {
    /// The name sent in the handshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Protobuf => "protobuf",
        }
    }
}

/// An error as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PitayaError {
    /// e.g. `PIT-404`.
    pub code: String,
    /// A human-readable message.
    pub msg: String,
    /// Extra pairs, sorted.
    pub metadata: BTreeMap<String, String>,
}

impl PitayaError {
    /// An error with no metadata.
    pub fn new(code: impl Into<String>, msg: impl Into<String>) -> Self {
        Self { code: code.into(), msg: msg.into(), metadata: BTreeMap::new() }
    }

    /// Encodes the error with `serializer`.
    pub fn encode(&self, serializer: Serializer) -> Vec<u8> {
        match serializer {
            Serializer::Json => self.to_json(),
            Serializer::Protobuf => self.to_proto().encode_to_vec(),
        }
    }

    /// Decodes an error object encoded with `serializer`.
    ///
    /// # Errors
    /// When the bytes are not such an object.
    pub fn decode(bytes: &[u8], serializer: Serializer) -> Result<Self, String> {
        match serializer {
            Serializer::Json => {
                #[derive(serde::Deserialize)]
                struct E {
                    #[serde(default)]
                    code: String,
                    #[serde(default)]
                    msg: String,
                    #[serde(default)]
                    metadata: BTreeMap<String, String>,
                }
                let e: E = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
                Ok(Self { code: e.code, msg: e.msg, metadata: e.metadata })
            }
            Serializer::Protobuf => {
                let e = protos::Error::decode(bytes).map_err(|e| e.to_string())?;
                Ok(Self { code: e.code, msg: e.msg, metadata: e.metadata.into_iter().collect() })
            }
        }
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> protos::Error {
        protos::Error {
            code: self.code.clone(),
            msg: self.msg.clone(),
            metadata: self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// The JSON form, byte-for-byte as Go's `json.Marshal` writes `protos.Error`: fields in
    /// order, empty ones omitted, map keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(32 + self.msg.len());
        out.push('{');
        let mut first = true;
        let mut field = |out: &mut String, name: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            go_json_string(out, name);
            out.push(':');
        };
        if !self.code.is_empty() {
            field(&mut out, "code");
            go_json_string(&mut out, &self.code);
        }
        if !self.msg.is_empty() {
            field(&mut out, "msg");
            go_json_string(&mut out, &self.msg);
        }
        if !self.metadata.is_empty() {
            field(&mut out, "metadata");
            out.push('{');
            for (i, (k, v)) in self.metadata.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(&mut out, k);
                out.push(':');
                go_json_string(&mut out, v);
            }
            out.push('}');
        }
        out.push('}');
        out.into_bytes()
    }
}

impl std::fmt::Display for PitayaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

impl std::error::Error for PitayaError {}

/// Writes `s` as a JSON string the way Go's encoder does (HTML-safe escaping).
fn go_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_as_go_writes_it() {
        let mut e = PitayaError::new("PIT-404", "pitaya/handler: a.b.c not found");
        assert_eq!(e.to_json(), br#"{"code":"PIT-404","msg":"pitaya/handler: a.b.c not found"}"#);
        e.metadata.insert("z".into(), "1".into());
        e.metadata.insert("a".into(), "<&>".into());
        assert_eq!(
            e.to_json(),
            br#"{"code":"PIT-404","msg":"pitaya/handler: a.b.c not found","metadata":{"a":"\u003c\u0026\u003e","z":"1"}}"#
        );
        assert_eq!(PitayaError::default().to_json(), b"{}");
        assert_eq!(PitayaError::decode(&e.to_json(), Serializer::Json).unwrap(), e);
    }

    #[test]
    fn protobuf_round_trip() {
        let mut e = PitayaError::new("PIT-500", "x");
        e.metadata.insert("k".into(), "v".into());
        let b = e.encode(Serializer::Protobuf);
        assert_eq!(&b[..11], &[0x0A, 7, b'P', b'I', b'T', b'-', b'5', b'0', b'0', 0x12, 1]);
        assert_eq!(PitayaError::decode(&b, Serializer::Protobuf).unwrap(), e);
    }
}
