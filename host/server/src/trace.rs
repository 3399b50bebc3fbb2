//! Trace spans, through `tracing` (the binary exports them over OpenTelemetry when the `OTEL_*`
//! variables ask for it, and turns their target off otherwise, so that they cost nothing).
//!
//! Pitaya v3's spans (`PITAYA-PROTOCOL.md` §9.3): one per client message on the frontend (named
//! by its route), `NATS RPC Call` per outgoing RPC, one per RPC on the server that handles it
//! (named by its route), and Kiwano's `guest call` below them. The context crosses processes as
//! W3C Trace Context fields under `otel-span` in the RPC metadata, where Go Pitaya puts it.

use std::collections::HashMap;

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of the host's trace spans (`kiwano_telemetry::traces::TARGET`).
pub const TARGET: &str = "kiwano_trace";

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
