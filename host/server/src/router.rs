//! Routing of client messages to server types, and the error table clients see.
//!
//! | condition | client sees |
//! | --- | --- |
//! | route not 2–3 non-blank parts | `PIT-400` |
//! | request to a notify handler | `PIT-400 tried to request a notify route: <route>` |
//! | notify to a request handler | handled, result discarded, nothing sent |
//! | unknown handler on a known server type | `PIT-404 pitaya/handler: <route> not found` |
//! | unknown server type | `PIT-500 no servers available of this type: <route>` |
//! | guest trap, deadline, out-of-memory, oversized response | `PIT-500 internal error handling <route>` (cause logged) |
//! | guest error with a code | that code, message and metadata |
//! | guest error with an empty code | `PIT-000` |

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kiwano_protocol::error::codes;
use kiwano_protocol::{Message, MessageType, PitayaError};
use kiwano_runtime::{Affinity, Call, CallError, HandlerKind};

use kiwano_protocol::protos;

use kiwano_cluster::{ClusterError, ServerInfo, messages};
use kiwano_metrics::{Metrics, families};

use crate::connection::Dispatch;
use crate::session::Session;
use crate::state::{ServerType, Shared};
use crate::wire::Wire;

/// The router of one frontend server type: what its connections hand their messages to.
pub struct Router {
    /// The process's state.
    pub shared: Arc<Shared>,
    /// The frontend server type.
    pub frontend: Arc<str>,
}

impl Dispatch for Router {
    fn message(&self, session: &Arc<Session>, msg: Message, arrived: Instant) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        // Pitaya's frontend span: one per client message of a sampled trace, named by its route.
        let span = if !crate::trace::sample_root() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
            target: crate::trace::TARGET,
            "message",
            otel.name = %msg.route,
            otel.kind = "server",
            span.kind = "server",
            local.id = %self.shared.types.get(&*self.frontend).map(|t| t.id.as_str()).unwrap_or_default(),
            msg.type = if msg.kind == MessageType::Request { "request" } else { "notify" },
            user.id = session.uid().unwrap_or_default(),
            request.id = msg.id,
            )
        };
        let (shared, frontend, session) = (self.shared.clone(), self.frontend.clone(), session.clone());
        Box::pin(tracing::Instrument::instrument(async move { dispatch(&shared, &frontend, &session, msg, arrived).await }, span))
    }

    fn closed(&self, session: &Arc<Session>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let (shared, frontend, session) = (self.shared.clone(), self.frontend.clone(), session.clone());
        Box::pin(async move {
            let Some(server) = shared.types.get(&*frontend) else { return };
            let version = server.current();
            let key = affinity_key(&version.affinity, &session);
            let handle: Arc<dyn kiwano_runtime::SessionHandle> = session.clone();
            if let Err(e) = version.pool.session_closed(key, handle).await {
                tracing::warn!(session = session.id(), uid = session.uid(), server_type = %frontend, "on-session-close failed: {e}");
            }
        })
    }
}

/// A route split into server type and `service.method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The server type.
    pub server_type: &'a str,
    /// `service.method`.
    pub handler: &'a str,
}

/// Splits `route` (`type.service.method`, or `service.method` on `frontend`).
///
/// # Errors
/// `PIT-400` for any other shape.
pub fn parse_route<'a>(route: &'a str, frontend: &'a str) -> Result<Route<'a>, PitayaError> {
    // Runs for every message: no allocation.
    let parts = route.split('.').count();
    if !(2..=3).contains(&parts) {
        return Err(PitayaError::new(codes::BAD_REQUEST, format!("invalid route: {route}")));
    }
    if route.split('.').any(|p| p.trim().is_empty()) {
        return Err(PitayaError::new(codes::BAD_REQUEST, format!("route field can not be empty: {route}")));
    }
    match route.split_once('.') {
        Some((server_type, handler)) if parts == 3 => Ok(Route { server_type, handler }),
        _ => Ok(Route { server_type: frontend, handler: route }),
    }
}

impl Route<'_> {
    /// `type.service.method`.
    fn full(&self) -> String {
        format!("{}.{}", self.server_type, self.handler)
    }
}

fn hash_key(v: impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The affinity key of a call from `session`.
pub fn affinity_key(affinity: &Affinity, session: &Session) -> Option<u64> {
    match affinity {
        Affinity::Session => Some(session.id()),
        Affinity::Uid => Some(session.uid().map_or(session.id(), hash_key)),
        Affinity::DataField(f) => Some(session.value(f).map_or(session.id(), |v| hash_key(v.to_string()))),
        Affinity::None => None,
    }
}

/// The route label of a message whose route names no handler: client-controlled strings are
/// not labels (each would be a series of its own).
const UNKNOWN_ROUTE: &str = "unknown";

/// A request's response-time series: its route label (the route as the client sent it, as
/// Pitaya labels it) and when the message was read.
struct Stamp {
    metrics: Metrics,
    route: String,
    arrived: Instant,
}

impl Stamp {
    /// Records the answer (`pitaya_handler_response_time_ns`, type `handler`).
    fn record(&self, result: &Result<Bytes, PitayaError>) {
        if !self.metrics.enabled() {
            return;
        }
        let ns = self.arrived.elapsed().as_nanos() as f64;
        let (status, code) = match result {
            Ok(_) => ("ok", ""),
            Err(e) => ("failed", code_label(&e.code)),
        };
        self.metrics.observe(&families::RESPONSE_TIME, &[&self.route, status, "handler", code], ns);
    }
}

/// An error code as a label: a guest chooses its codes, so one that does not look like a code
/// (`ABC-123`: up to 16 letters, digits and dashes) is `other`.
pub(crate) fn code_label(code: &str) -> &str {
    if !code.is_empty() && code.len() <= 16 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') { code } else { "other" }
}

/// Handles one client message to completion: for a request, the response (or error) is queued
/// for the client; a notify is answered with nothing. A local call's response is queued on the
/// thread that ran it, before its instance does anything else (a timer's push comes after it).
/// `arrived`: when the message was read (the response time counts from then; the time until
/// now, spent behind the session's earlier messages, is its handler delay).
pub async fn dispatch(shared: &Shared, frontend: &str, session: &Arc<Session>, msg: Message, arrived: Instant) {
    let request = msg.kind == MessageType::Request;
    let prepared = prepare(shared, frontend, session, &msg);
    let metrics = &shared.metrics;
    let stamp = |route: &str| Stamp { metrics: metrics.clone(), route: route.to_owned(), arrived };
    if metrics.enabled() {
        let (route, kind) = match &prepared {
            Ok(Prepared::Local(..)) => (msg.route.as_str(), "local"),
            Ok(Prepared::Forward(_)) => (msg.route.as_str(), "remote"),
            Err(_) => (UNKNOWN_ROUTE, "local"),
        };
        metrics.observe(&families::HANDLER_DELAY, &[route, kind], arrived.elapsed().as_nanos() as f64);
    }
    let local = match prepared {
        Ok(Prepared::Local(server, pool, call)) => (server, pool, call),
        Ok(Prepared::Forward(route)) => {
            let full = route.full();
            let result = forward(shared, frontend, session, &msg, &route).await;
            // A route of a server type that has no such handler is the client's string too.
            let label = if result.as_ref().is_err_and(|e| e.code == codes::NOT_FOUND || e.code == codes::BAD_REQUEST) { UNKNOWN_ROUTE } else { msg.route.as_str() };
            return answer(shared, session, &msg, &full, result, &stamp(label));
        }
        Err(e) => return answer(shared, session, &msg, &msg.route, Err(e), &stamp(UNKNOWN_ROUTE)),
    };
    let (server, pool, (key, call)) = local;
    // The full route (`type.service.method`) is only needed for an error: made then.
    let (session2, wire, id, handler) = (session.clone(), shared.net.wire.clone(), msg.id, call.route.clone());
    let finish: kiwano_runtime::Finish = if request {
        let stamp = stamp(&msg.route);
        Box::new(move |r| {
            let result = outcome(&server, &handler, &session2, r);
            stamp.record(&result);
            match result {
                Ok(body) => respond(&wire, &session2, id, &handler, Ok(body)),
                Err(e) => respond(&wire, &session2, id, &format!("{}.{handler}", server.name), Err(e)),
            }
        })
    } else {
        let faults = shared.net.faults.clone();
        Box::new(move |r| {
            if let Err(e) = outcome(&server, &handler, &session2, r) {
                let (sid, uid) = (session2.id(), session2.uid());
                let full = format!("{}.{handler}", server.name);
                faults.report_error("notify failed", || format!("session {sid} (uid {uid:?}): notify {full} failed: {e}"));
            }
        })
    };
    pool.call_then(key, call, finish).await;
}

/// What a message turned out to need.
enum Prepared<'a> {
    /// A call to a server type of this process: the pool of the version serving it, its
    /// affinity key and the call.
    Local(Arc<ServerType>, Arc<kiwano_runtime::ServerPool>, (Option<u64>, Call)),
    /// A route of another server type.
    Forward(Route<'a>),
}

/// Parses the route and checks the handler, without calling anything.
fn prepare<'a>(shared: &Shared, frontend: &'a str, session: &Arc<Session>, msg: &'a Message) -> Result<Prepared<'a>, PitayaError> {
    let route = parse_route(&msg.route, frontend)?;
    if route.server_type != frontend {
        return Ok(Prepared::Forward(route));
    }
    let Some(server) = shared.types.get(route.server_type) else {
        return Err(PitayaError::new(codes::INTERNAL, format!("no servers available of this type: {}", msg.route)));
    };
    let version = server.current();
    let Some(kind) = version.pool.description().handlers.get(route.handler) else {
        return Err(PitayaError::new(codes::NOT_FOUND, format!("pitaya/handler: {} not found", route.full())));
    };
    if msg.kind == MessageType::Request && *kind == HandlerKind::Notify {
        return Err(PitayaError::new(codes::BAD_REQUEST, format!("tried to request a notify route: {}", route.full())));
    }
    let key = affinity_key(&version.affinity, session);
    let handle: Arc<dyn kiwano_runtime::SessionHandle> = session.clone();
    let call = Call { route: route.handler.to_owned(), body: msg.data.clone(), session: handle };
    Ok(Prepared::Local(server.clone(), version.pool.clone(), (key, call)))
}

/// A guest call's result (of `handler` on `server`) as the client is to see it: the guest's
/// own errors unchanged, the rest `PIT-500` with the cause logged.
fn outcome(server: &ServerType, handler: &str, session: &Session, r: Result<Vec<u8>, CallError>) -> Result<Bytes, PitayaError> {
    match r {
        Ok(body) => Ok(Bytes::from(body)),
        Err(CallError::Guest(e)) => Err(e.into()),
        Err(e) => {
            let full = format!("{}.{handler}", server.name);
            tracing::warn!(server_type = %server.name, route = %full, session = session.id(), uid = session.uid(), "guest call failed: {e}");
            Err(internal(&full))
        }
    }
}

/// Answers a message: a request gets its response (or error); a failed notify is logged, as
/// the client never hears of it (Pitaya logs it as an error too; a client can make its notifies
/// fail at will, so repeats are counted).
fn answer(shared: &Shared, session: &Session, msg: &Message, route: &str, result: Result<Bytes, PitayaError>, stamp: &Stamp) {
    if msg.kind == MessageType::Request {
        stamp.record(&result);
        respond(&shared.net.wire, session, msg.id, route, result);
    } else if let Err(e) = result {
        let (id, uid) = (session.id(), session.uid());
        shared.net.faults.report_error("notify failed", || format!("session {id} (uid {uid:?}): notify {} failed: {e}", msg.route));
    }
}

/// Queues the response to request `id`.
fn respond(wire: &Wire, session: &Session, id: u64, route: &str, result: Result<Bytes, PitayaError>) {
    let packet = match result {
        Ok(body) => wire.response(id, body).unwrap_or_else(|e| {
            tracing::warn!(session = session.id(), uid = session.uid(), route, "cannot encode response: {e}");
            wire.error(id, &internal(route))
        }),
        Err(e) => wire.error(id, &e),
    };
    // A closed session or a full queue is already handled by `send`; a response larger than
    // the session's whole outgoing budget is answered with an error instead.
    if let Err(e) = session.send(packet) {
        if e.code == codes::BAD_REQUEST {
            tracing::warn!(session = session.id(), uid = session.uid(), route, "cannot send the response: {}", e.msg);
            let _ = session.send(wire.error(id, &internal(route)));
        }
    }
}

fn internal(route: &str) -> PitayaError {
    PitayaError::new(codes::INTERNAL, format!("internal error handling {route}"))
}

/// Picks the server of a type for a key: rendezvous hashing, so a key keeps its server while
/// the set of servers does not change, and moves only if its server leaves.
fn pick<'a>(servers: &'a [ServerInfo], key: u64) -> Option<&'a ServerInfo> {
    servers.iter().max_by_key(|s| hash_key((key, s.id.as_str())))
}

/// Forwards a client message to a server of another type (a Sys RPC) and returns its answer.
/// A server with no responders never got it: the message goes to another server of the type,
/// and the silent one is left out of routing for a while (`Cluster::mark_silent`).
async fn forward(shared: &Shared, frontend: &str, session: &Arc<Session>, msg: &Message, route: &Route<'_>) -> Result<Bytes, PitayaError> {
    let full = route.full();
    let frontend_id = shared.types.get(frontend).map(|t| t.id.clone()).unwrap_or_default();
    let timeout = shared.request_timeout;
    let kind = if msg.kind == MessageType::Notify { protos::MsgType::MsgNotify } else { protos::MsgType::MsgRequest };
    // Pitaya's client span of the RPC, in a sampled trace; its context travels in the metadata.
    let span = crate::trace::rpc_client(&frontend_id, route.server_type);
    let carrier = crate::trace::inject(&span);
    let request = protos::Request {
        r#type: protos::RpcType::Sys as i32,
        session: Some(session.to_proto()),
        msg: Some(protos::Msg { id: msg.id, route: full.clone(), data: msg.data.to_vec(), reply: String::new(), r#type: kind as i32 }),
        frontend_id: frontend_id.clone(),
        metadata: messages::metadata(&frontend_id, frontend, timeout, &kiwano_protocol::CallChain::default(), Some(&full), &carrier),
    };
    let request = messages::encode_request(&request);
    loop {
        let servers = shared.cluster.servers_of(route.server_type);
        let pinned = session.pinned(route.server_type).and_then(|id| servers.iter().find(|s| s.id == id));
        let target = pinned.or_else(|| pick(&servers, hash_key((frontend_id.as_str(), session.id()))));
        let Some(target) = target else {
            return Err(PitayaError::new(codes::INTERNAL, format!("no servers available of this type: {}", msg.route)));
        };
        span.record("peer.id", target.id.as_str());
        match tracing::Instrument::instrument(shared.cluster.rpc.call(target, request.clone(), timeout), span.clone()).await {
            Ok(resp) => return messages::read_response(&resp).map(Bytes::from),
            Err(ClusterError::NoResponders(id)) => shared.cluster.mark_silent(&id),
            Err(ClusterError::Timeout) => return Err(messages::timeout_error(timeout, &full, &target.id, &frontend_id)),
            Err(e) => {
                tracing::warn!(session = session.id(), uid = session.uid(), route = %full, server = %target.id, "forward failed: {e}");
                return Err(PitayaError::new(codes::INTERNAL, format!("no servers available of this type: {}", msg.route)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("a.b", "fe").unwrap(), Route { server_type: "fe", handler: "a.b" });
        assert_eq!(parse_route("t.a.b", "fe").unwrap(), Route { server_type: "t", handler: "a.b" });
        let e = parse_route("a", "fe").unwrap_err();
        assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-400", "invalid route: a"));
        assert_eq!(parse_route("a.b.c.d", "fe").unwrap_err().msg, "invalid route: a.b.c.d");
        assert_eq!(parse_route("a. .c", "fe").unwrap_err().msg, "route field can not be empty: a. .c");
        assert_eq!(parse_route("", "fe").unwrap_err().msg, "invalid route: ");
    }
}
