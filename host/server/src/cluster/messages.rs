//! Pitaya's RPC envelopes: building and reading `protos.Request`, `protos.Response` and the
//! propagated context (`Request.metadata`, a JSON object).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::error::codes;
use kiwano_protocol::{PitayaError, protos};
use prost::Message as _;
use serde_json::{Map, Value};

/// Metadata key of the hop count: how many RPCs led to this one.
pub const HOPS: &str = "kiwano.hops";
/// Calls that reached this many hops are refused: a cycle of RPCs stops here.
pub const MAX_HOPS: u64 = 8;

/// A Go `time.Duration` string, as Pitaya writes `reqTimeout` (`5s`, `500ms`, `1m30s`).
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim(nanos as f64 / 1e3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim(nanos as f64 / 1e6));
    }
    let total = d.as_secs_f64();
    let (h, rest) = ((total / 3600.0).floor(), total % 3600.0);
    let (m, s) = ((rest / 60.0).floor(), rest % 60.0);
    match (h as u64, m as u64) {
        (0, 0) => format!("{}s", trim(s)),
        (0, m) => format!("{m}m{}s", trim(s)),
        (h, m) => format!("{h}h{m}m{}s", trim(s)),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Parses a Go duration string (`1m0s`, `1.5s`, `250ms`, `100us`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    });
    format!("{prefix:016x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The propagated context of a call made by server `peer_id` of type `peer_type`.
pub fn metadata(peer_id: &str, peer_type: &str, timeout: Duration, hops: u64, route: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("peer.id".into(), peer_id.into());
    m.insert("peer.service".into(), peer_type.into());
    m.insert("request.id".into(), request_id().into());
    m.insert("reqTimeout".into(), go_duration(timeout).into());
    m.insert(HOPS.into(), hops.into());
    if let Some(r) = route {
        m.insert("req-route".into(), r.into());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        m.insert("req-start-time".into(), now.into());
    }
    m
}

/// Encodes a request.
pub fn encode_request(r: &protos::Request) -> Bytes {
    Bytes::from(r.encode_to_vec())
}

/// A successful response.
pub fn ok(data: impl Into<Vec<u8>>) -> Bytes {
    Bytes::from(protos::Response { data: data.into(), error: None }.encode_to_vec())
}

/// A failed response.
pub fn err(e: &PitayaError) -> Bytes {
    Bytes::from(protos::Response { data: Vec::new(), error: Some(e.to_proto()) }.encode_to_vec())
}

/// Reads a response: its data, or its error (an empty code reads as `PIT-000`).
///
/// # Errors
/// The response's error, or `PIT-500` for bytes that are not a response.
pub fn read_response(bytes: &[u8]) -> Result<Vec<u8>, PitayaError> {
    let r = protos::Response::decode(bytes)
        .map_err(|e| PitayaError::new(codes::INTERNAL, format!("undecodable rpc response: {e}")))?;
    match r.error {
        None => Ok(r.data),
        Some(e) => Err(PitayaError {
            code: if e.code.is_empty() { codes::UNKNOWN.into() } else { e.code },
            msg: e.msg,
            metadata: e.metadata.into_iter().collect(),
        }),
    }
}

/// The metadata of a received request; Pitaya refuses requests without it.
///
/// # Errors
/// `PIT-500 no context found` for missing or non-object metadata.
pub fn read_metadata(r: &protos::Request) -> Result<Map<String, Value>, PitayaError> {
    match serde_json::from_slice::<Value>(&r.metadata) {
        Ok(Value::Object(m)) if !m.is_empty() => Ok(m),
        _ => Err(PitayaError::new(codes::INTERNAL, "no context found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (d, s) in [
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(3725), "1h2m5s"),
            (Duration::from_micros(250), "250µs"),
        ] {
            assert_eq!(go_duration(d), s);
            assert_eq!(parse_go_duration(s), Some(d), "{s}");
        }
        assert_eq!(parse_go_duration("100us"), Some(Duration::from_micros(100)));
        assert_eq!(parse_go_duration("soon"), None);
    }
}
