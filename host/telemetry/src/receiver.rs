//! A small OTLP/gRPC trace receiver, for the tests and the benchmarks: it keeps every span
//! exported to it (or only counts them).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// One received span.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its name.
    pub name: String,
    /// The service that exported it (`service.name`).
    pub service: String,
    /// Trace id, hex.
    pub trace: String,
    /// Span id, hex.
    pub id: String,
    /// The parent's span id, hex; empty for a root.
    pub parent: String,
    /// OTLP span kind (1 internal, 2 server, 3 client).
    pub kind: i32,
    /// String and integer attributes.
    pub attributes: Vec<(String, String)>,
    /// The names of its events, and each event's `message` attribute if it has one.
    pub events: Vec<String>,
}

impl Span {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[derive(Clone, Default)]
struct Collect {
    kept: Arc<Mutex<Vec<Span>>>,
    count: Arc<std::sync::atomic::AtomicU64>,
    keep: bool,
}

#[tonic::async_trait]
impl TraceService for Collect {
    async fn export(&self, req: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = req.into_inner();
        let n: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        if !self.keep {
            return Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }));
        }
        let mut spans = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        name: s.name,
                        service: service.clone(),
                        trace: hex(&s.trace_id),
                        id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        kind: s.kind,
                        attributes: s.attributes.iter().map(|a| (a.key.clone(), text(a.value.as_ref().and_then(|v| v.value.as_ref())))).collect(),
                        events: s
                            .events
                            .iter()
                            .map(|e| {
                                let message = e.attributes.iter().find(|a| a.key == "message").map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())));
                                message.unwrap_or_else(|| e.name.clone())
                            })
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A receiver listening on a free loopback port.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Collect,
}

impl Receiver {
    /// Starts it (until the runtime it is on ends), keeping the spans.
    ///
    /// # Panics
    /// No loopback port to listen on (tests only).
    pub async fn start() -> Self {
        Self::start_keeping(true).await.expect("the OTLP receiver listens")
    }

    /// Starts it on a free loopback port, keeping the spans or only counting them.
    ///
    /// # Errors
    /// No loopback port to listen on.
    pub async fn start_keeping(keep: bool) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Collect { keep, ..Collect::default() };
        let svc = TraceServiceServer::new(spans.clone());
        let incoming = futures_util::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await {
                tracing::error!("the OTLP receiver stopped: {e}");
            }
        });
        Ok(Self { addr, spans })
    }

    /// How many spans were received.
    pub fn count(&self) -> u64 {
        self.spans.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}
