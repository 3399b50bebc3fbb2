//! The handshake: the client's JSON request and the server's JSON response.
//!
//! Request: `{"sys":{"platform","libVersion","clientBuildNumber","clientVersion"},"user":{..}}`,
//! every field optional, unknown fields ignored. Response:
//! `{"code":200,"sys":{"dict":{..},"heartbeat":30,"serializer":"json"}}` (keys sorted as Go
//! marshals maps), zlib-compressed only when that makes it shorter. A bad request gets the same
//! object with code 400 and the connection is closed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{RouteDictionary, Serializer, compression};

/// The `sys` part of a handshake request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeClientData {
    /// e.g. `android`.
    #[serde(default)]
    pub platform: String,
    /// The client library version.
    #[serde(default, rename = "libVersion")]
    pub lib_version: String,
    /// The client build number.
    #[serde(default, rename = "clientBuildNumber")]
    pub build_number: String,
    /// The client version.
    #[serde(default, rename = "clientVersion")]
    pub version: String,
}

/// A handshake request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeData {
    /// Client facts.
    #[serde(default)]
    pub sys: HandshakeClientData,
    /// Free-form user data.
    #[serde(default)]
    pub user: Map<String, Value>,
}

/// Why a handshake request was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid handshake: {0}")]
pub struct HandshakeError(#[from] serde_json::Error);

impl HandshakeData {
    /// Parses a handshake request body.
    ///
    /// # Errors
    /// Anything but a JSON object with string `sys` fields and an object `user`.
    pub fn parse(body: &[u8]) -> Result<Self, HandshakeError> {
        serde_json::from_slice(body).map_err(HandshakeError)
    }

    /// The handshake as a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Builds handshake responses; made once per server, as Pitaya does.
#[derive(Debug, Clone)]
pub struct HandshakeResponse {
    ok: bytes::Bytes,
    failed: bytes::Bytes,
}

impl HandshakeResponse {
    /// Prepares both response bodies (code 200 and 400). `heartbeat` is sent in whole seconds
    /// (at least 1); `compress` deflates a body when that makes it shorter.
    pub fn new(dict: &RouteDictionary, heartbeat: Duration, serializer: Serializer, compress: bool) -> Self {
        let dict: Map<String, Value> = dict.iter().map(|(r, c)| (r.to_owned(), Value::from(c))).collect();
        let secs = heartbeat.as_secs().max(1);
        let body = |code: u16| {
            let v = json!({"code": code, "sys": {"dict": dict, "heartbeat": secs, "serializer": serializer.name()}});
            let plain = v.to_string().into_bytes();
            let out = if compress { compression::deflate_if_shorter(&plain).unwrap_or(plain) } else { plain };
            bytes::Bytes::from(out)
        };
        Self { ok: body(200), failed: body(400) }
    }

    /// The body of a successful response.
    pub fn ok(&self) -> &bytes::Bytes {
        &self.ok
    }

    /// The body of a failed response.
    pub fn failed(&self) -> &bytes::Bytes {
        &self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_response_is_plain_because_compression_is_longer() {
        let r = HandshakeResponse::new(&RouteDictionary::default(), Duration::from_secs(30), Serializer::Json, true);
        assert_eq!(&r.ok()[..], br#"{"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#);
        assert_eq!(r.ok().len(), 65);
        assert_eq!(&r.failed()[..], br#"{"code":400,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#);
    }

    #[test]
    fn a_large_dictionary_is_compressed() {
        let d = RouteDictionary::new((0..5u16).map(|i| (format!("connector.handler.route{i}"), i))).unwrap();
        let r = HandshakeResponse::new(&d, Duration::from_millis(1500), Serializer::Protobuf, true);
        assert!(compression::looks_compressed(r.ok()));
        let plain = compression::inflate(r.ok(), 1 << 20).unwrap();
        let v: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["sys"]["heartbeat"], json!(1));
        assert_eq!(v["sys"]["serializer"], json!("protobuf"));
        assert_eq!(v["sys"]["dict"]["connector.handler.route3"], json!(3));
    }

    #[test]
    fn parses_requests() {
        let h = HandshakeData::parse(br#"{"sys":{"platform":"mac","libVersion":"0.3.5","x":1},"user":{"age":3}}"#).unwrap();
        assert_eq!(h.sys.platform, "mac");
        assert_eq!(h.user["age"], json!(3));
        assert!(HandshakeData::parse(b"").is_err());
        assert!(HandshakeData::parse(b"{").is_err());
        assert!(HandshakeData::parse(br#"{"sys":{"platform":1}}"#).is_err());
        assert!(HandshakeData::parse(b"{}").is_ok());
    }
}
