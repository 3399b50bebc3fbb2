//! Trace spans, through `tracing` (the binary exports them over OpenTelemetry when the `OTEL_*`
//! variables ask for it, and turns their target off otherwise, so that they cost nothing).
//!
//! Pitaya v3's spans (`PITAYA-PROTOCOL.md` §9.3): one per client message on the frontend (named
//! by its route), `NATS RPC Call` per outgoing RPC, one per RPC on the server that handles it
//! (named by its route), and Kiwano's `guest call` below them. The context crosses processes as
//! W3C Trace Context fields under `otel-span` in the RPC metadata, where Go Pitaya puts it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of the host's trace spans (`kiwano_telemetry::traces::TARGET`).
pub const TARGET: &str = "kiwano_trace";

/// The share of new traces sampled, as `f64` bits (0: none).
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0);

/// Sets the share of new traces (a client message, an RPC without a caller's context) that are
/// sampled, `0.0..=1.0` (the binary reads `OTEL_TRACES_SAMPLER`). Spans are made only for
/// sampled traces: an unsampled message costs one random number, not a tree of spans.
pub fn set_root_ratio(ratio: f64) {
    ROOT_RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

/// Whether a new trace is sampled.
pub fn sample_root() -> bool {
    let ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed));
    ratio > 0.0 && (ratio >= 1.0 || rand::random::<f64>() < ratio)
}

/// Whether a caller's `otel-span` fields ask for spans: a W3C `traceparent` with its sampled
/// flag (`00-<trace>-<span>-01`), or none at all (a new trace, sampled by [`sample_root`]).
pub fn sample_child(fields: &[(String, String)]) -> bool {
    match fields.iter().find(|(k, _)| k == "traceparent") {
        Some((_, tp)) => tp.rsplit('-').next().and_then(|f| u8::from_str_radix(f, 16).ok()).is_some_and(|f| f & 1 == 1),
        None => sample_root(),
    }
}

/// Whether the current span is a sampled one whose children should be made.
pub fn in_trace() -> bool {
    !tracing::Span::current().is_disabled()
}

/// Pitaya's client span of an RPC from server `local_id` to a server of type `peer_type`
/// (`NATS RPC Call`), below the current span of a sampled trace; none otherwise. Its `peer.id`
/// is recorded once the server is picked.
pub fn rpc_client(local_id: &str, peer_type: &str) -> tracing::Span {
    if !in_trace() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "NATS RPC Call",
        otel.kind = "client",
        span.kind = "client",
        local.id = %local_id,
        peer.serverType = %peer_type,
        peer.id = tracing::field::Empty,
    )
}

/// `span`'s context as the fields of `otel-span` (none when traces are off).
pub fn inject(span: &tracing::Span) -> Vec<(String, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let cx = span.context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    let mut fields: Vec<(String, String)> = carrier.into_iter().collect();
    fields.sort();
    fields
}

/// Makes `span` a child of the context a caller sent in `otel-span` (`fields`), if any.
pub fn adopt(span: &tracing::Span, fields: &[(String, String)]) {
    if span.is_disabled() || fields.is_empty() {
        return;
    }
    let carrier: HashMap<String, String> = fields.iter().cloned().collect();
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    // A context without a valid parent leaves the span a root.
    let _ = span.set_parent(cx);
}
