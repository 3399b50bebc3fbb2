//! Pitaya's RPC envelopes: building and reading `protos.Request`, `protos.Response` and the
//! propagated context (`Request.metadata`, a JSON object).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::error::codes;
use kiwano_protocol::{PitayaError, protos};
use kiwano_protocol::CallChain;
use prost::Message as _;

/// Metadata key of the hop count: how many RPCs led to this one.
pub const HOPS: &str = "kiwano.hops";
/// Metadata key of the remote instances up the chain that wait for this call
/// (`server-id#r<index>`, comma-separated; absent when none).
pub const WAITING: &str = "kiwano.waiting";
/// Calls that reached this many hops are refused: a cycle of RPCs stops here.
pub const MAX_HOPS: u64 = 8;

/// A Go `time.Duration` string, as Pitaya writes `reqTimeout` (`5s`, `500ms`, `1m30s`).
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    // The usual timeouts, without formatting a float.
    if nanos.is_multiple_of(1_000_000_000) && d.as_secs() < 60 {
        return format!("{}s", d.as_secs());
    }
    if nanos.is_multiple_of(1_000_000) && nanos < 1_000_000_000 {
        return format!("{}ms", d.as_millis());
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

/// A request id unique in this process's run: a random prefix and a counter, 24 hex digits.
fn write_request_id(out: &mut Vec<u8>) {
    use std::io::Write as _;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    });
    let _ = write!(out, "{prefix:016x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed) as u32);
}

/// The key of the trace context in the metadata (Pitaya v3's `otel-span`): an object of W3C
/// Trace Context fields (`traceparent`, `tracestate`), as OpenTelemetry's map carrier holds them.
pub const OTEL_SPAN: &str = "otel-span";

/// The propagated context of a call made by server `peer_id` of type `peer_type`, as the JSON
/// object `Request.metadata` carries, with the trace context `span` (empty: none) under
/// [`OTEL_SPAN`]. Written directly, keys in order: it is built for every forwarded message.
pub fn metadata(peer_id: &str, peer_type: &str, timeout: Duration, chain: &CallChain, route: Option<&str>, span: &[(String, String)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(192);
    let string = |out: &mut Vec<u8>, s: &str| {
        // Serializing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    };
    let _ = write!(out, "{{\"{HOPS}\":{},", chain.hops);
    if !chain.waiting.is_empty() {
        let _ = write!(out, "\"{WAITING}\":");
        string(&mut out, &chain.waiting);
        out.push(b',');
    }
    out.extend_from_slice(b"\"peer.id\":");
    string(&mut out, peer_id);
    out.extend_from_slice(b",\"peer.service\":");
    string(&mut out, peer_type);
    if let Some(r) = route {
        out.extend_from_slice(b",\"req-route\":");
        string(&mut out, r);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let _ = write!(out, ",\"req-start-time\":{now}");
    }
    if !span.is_empty() {
        let _ = write!(out, ",\"{OTEL_SPAN}\":{{");
        for (i, (k, v)) in span.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(&mut out, k);
            out.push(b':');
            string(&mut out, v);
        }
        out.push(b'}');
    }
    let _ = write!(out, ",\"reqTimeout\":\"{}\",\"request.id\":\"", go_duration(timeout));
    write_request_id(&mut out);
    out.extend_from_slice(b"\"}");
    out
}

/// Pitaya's error for an RPC past its timeout (`PIT-408 rpc client: request timeout`), with
/// the metadata it carries: the timeout as a Go duration, the route, the server, the caller.
pub fn timeout_error(timeout: Duration, route: &str, server: &str, peer: &str) -> PitayaError {
    let mut e = PitayaError::new(codes::TIMEOUT, "rpc client: request timeout");
    e.metadata.insert("timeout".into(), go_duration(timeout));
    e.metadata.insert("route".into(), route.to_owned());
    e.metadata.insert("server".into(), server.to_owned());
    e.metadata.insert("peer.id".into(), peer.to_owned());
    e
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

/// What a server reads from a received request's metadata.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The RPCs that led to this one, and the remote instances waiting up the chain.
    pub chain: CallChain,
    /// How long the caller waits (`reqTimeout`, a Go duration), if it said so in a form that
    /// reads.
    pub timeout: Option<Duration>,
    /// The caller's trace context ([`OTEL_SPAN`]): its string fields.
    pub span: Vec<(String, String)>,
}

impl<'de> serde::Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Metadata;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-empty JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let (mut meta, mut entries) = (Metadata::default(), 0);
                while let Some(key) = map.next_key::<Key>()? {
                    entries += 1;
                    match key {
                        Key::Hops => meta.chain.hops = map.next_value::<Option<u64>>()?.unwrap_or(0),
                        Key::Waiting => meta.chain.waiting = map.next_value::<Option<String>>()?.unwrap_or_default(),
                        // Pitaya writes a string; anything else is ignored, not trusted.
                        Key::Timeout => match map.next_value::<serde_json::Value>()? {
                            serde_json::Value::String(s) => meta.timeout = parse_go_duration(&s),
                            _ => meta.timeout = None,
                        },
                        // Only string fields are a trace context; the rest is ignored.
                        Key::Span => {
                            if let serde_json::Value::Object(o) = map.next_value::<serde_json::Value>()? {
                                meta.span = o.into_iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned()))).collect();
                            }
                        }
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                if entries == 0 {
                    return Err(serde::de::Error::custom("empty metadata"));
                }
                Ok(meta)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A metadata key, read without allocating: [`HOPS`], [`WAITING`], `reqTimeout` or another.
enum Key {
    Hops,
    Waiting,
    Timeout,
    Span,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    HOPS => Key::Hops,
                    WAITING => Key::Waiting,
                    "reqTimeout" => Key::Timeout,
                    OTEL_SPAN => Key::Span,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The metadata of a received request (without building it: only what is used is kept);
/// Pitaya refuses requests without it.
///
/// # Errors
/// `PIT-500 no context found` for missing, empty or non-object metadata.
pub fn read_metadata(r: &protos::Request) -> Result<Metadata, PitayaError> {
    serde_json::from_slice(&r.metadata).map_err(|_| PitayaError::new(codes::INTERNAL, "no context found"))
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

    #[test]
    fn metadata_is_the_json_object_pitaya_reads() {
        let chain = CallChain { hops: 3, waiting: String::new() };
        let span = [("traceparent".to_owned(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())];
        let bytes = metadata("fe-1", "conn\"ector", Duration::from_millis(1500), &chain, Some("room.room.join"), &span);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["peer.id"], "fe-1");
        assert_eq!(v["peer.service"], "conn\"ector");
        assert_eq!(v["reqTimeout"], "1.5s");
        assert_eq!(v["req-route"], "room.room.join");
        assert_eq!(v[HOPS], 3);
        assert!(v["req-start-time"].as_u64().unwrap() > 0);
        assert_eq!(v["request.id"].as_str().unwrap().len(), 24);
        assert_eq!(v[OTEL_SPAN]["traceparent"], span[0].1);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8);
        let read = |m: &[u8]| read_metadata(&protos::Request { metadata: m.to_vec(), ..Default::default() });
        assert_eq!(read(&bytes).unwrap().span, span);
        let plain: serde_json::Value = serde_json::from_slice(&metadata("b-1", "room", Duration::from_secs(5), &CallChain::default(), None, &[])).unwrap();
        assert_eq!(plain.as_object().unwrap().len(), 5);
        let waiting = CallChain { hops: 2, waiting: "room-1#r0,room-1#r1".into() };
        let bytes = metadata("b-1", "room", Duration::from_secs(5), &waiting, None, &[]);
        assert_eq!(read(&bytes).unwrap(), Metadata { chain: waiting, timeout: Some(Duration::from_secs(5)), span: Vec::new() });

        let chain = CallChain { hops: 3, waiting: String::new() };
        assert_eq!(read(&metadata("fe-1", "c", Duration::from_secs(1), &chain, None, &[])).unwrap(), Metadata { chain, timeout: Some(Duration::from_secs(1)), span: Vec::new() });
        assert_eq!(read(br#"{"peer.id":"x"}"#).unwrap(), Metadata::default());
        // Go's own spelling of a minute and a half; a number or a word is no timeout at all.
        assert_eq!(read(br#"{"reqTimeout":"1m30s"}"#).unwrap().timeout, Some(Duration::from_secs(90)));
        assert_eq!(read(br#"{"reqTimeout":5}"#).unwrap().timeout, None);
        assert_eq!(read(br#"{"reqTimeout":"soon"}"#).unwrap().timeout, None);
        for bad in [&b"{}"[..], b"[1]", b"", b"null", b"{\"kiwano.hops\":\"x\"}"] {
            assert_eq!(read(bad).unwrap_err().msg, "no context found", "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
