//! Traces over OTLP (gRPC, as Go Pitaya v3's `otlptracegrpc` exports them), configured by the
//! standard `OTEL_*` variables: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`);
//! `OTEL_TRACES_SAMPLER`/`_ARG` choose the sampler, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` the resource, `OTEL_BSP_*` the batching;
//! `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`, if set, must be `grpc` ([`protocol`]). The context crosses
//! processes as W3C Trace Context under `otel-span` in the RPC metadata (the server library's
//! `trace` module), the propagator installed here.
//!
//! The host's spans have the target [`TARGET`]; the binary turns that target off when traces
//! are, so that they cost nothing then.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The `tracing` target of the host's trace spans.
pub const TARGET: &str = "kiwano_trace";

/// A running trace pipeline; [`Traces::shutdown`] sends what is still batched.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

/// Whether the environment asks for traces.
pub fn wanted() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The `tracing` layer exporting the host's spans, and the pipeline behind it; `service` names
/// the service when `OTEL_SERVICE_NAME` does not.
///
/// # Errors
/// The exporter cannot be built (an endpoint that is not a URL).
pub fn layer<S>(service: &str) -> Result<(tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, Traces), String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    protocol()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build().map_err(|e| format!("OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    // The host decides which new traces are sampled ([`root_ratio`]) and makes spans only for
    // those: the SDK keeps whatever it is given, and follows a caller's decision.
    let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(opentelemetry_sdk::trace::Sampler::AlwaysOn));
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).with_sampler(sampler).build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let tracer = provider.tracer("pitaya");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), Traces { provider }))
}

/// Checks the OTLP protocol asked for: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, must be `grpc` when set (the exporter speaks OTLP over gRPC
/// only, as Go Pitaya v3's does): another is refused rather than sent gRPC to an HTTP collector.
///
/// # Errors
/// A protocol other than `grpc`, naming the variable.
pub fn protocol() -> Result<(), String> {
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Ok(p) = std::env::var(var) {
            return match p.trim() {
                "grpc" => Ok(()),
                other => Err(format!("{var}: {other:?}: Kiwano exports OTLP over grpc only (as Go Pitaya v3 does); point it at a collector's gRPC port (4317)")),
            };
        }
    }
    Ok(())
}

/// The share of new traces to sample, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`
/// (default `parentbased_always_on`: all); the spans of a trace a caller started follow the
/// caller's decision.
///
/// # Errors
/// A sampler this host does not know, or a ratio that is not a number in `0..=1`.
pub fn root_ratio() -> Result<f64, String> {
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_else(|_| "parentbased_always_on".into());
    let arg = || -> Result<f64, String> {
        let raw = std::env::var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|_| "1".into());
        match raw.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!("OTEL_TRACES_SAMPLER_ARG: {raw:?} is not a ratio between 0 and 1")),
        }
    };
    match sampler.trim() {
        "always_on" | "parentbased_always_on" => Ok(1.0),
        "always_off" | "parentbased_always_off" => Ok(0.0),
        "traceidratio" | "parentbased_traceidratio" => arg(),
        other => Err(format!(
            "OTEL_TRACES_SAMPLER: {other:?} is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
        )),
    }
}

impl Traces {
    /// Exports what is batched, then stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("traces: {e}");
        }
    }
}
