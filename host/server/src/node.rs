//! A server of this process as the cluster reaches it: it answers `protos.Request`s — forwarded
//! client messages (Sys RPCs), the `sys.*` session calls backends make to frontends, and calls
//! to its remotes (User RPCs) — and delivers pushes and kicks to the sessions it holds.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::error::codes;
use kiwano_protocol::{PitayaError, protos};
use kiwano_runtime::{Affinity, Call, CallError, HandlerKind, SessionHandle};
use prost::Message as _;

use kiwano_cluster::{BoxFuture, RpcHandler, messages};

use crate::backend::BackendSession;
use crate::state::{ServerType, Shared};

/// The RPC handler of one local server.
pub struct Node {
    /// The process's state (weak: the cluster holds handlers, the process holds the cluster).
    pub shared: Weak<Shared>,
    /// The server type this node serves.
    pub server: Arc<ServerType>,
}

impl RpcHandler for Node {
    fn request(&self, request: Bytes, timeout: Duration) -> BoxFuture<'static, Option<Bytes>> {
        let shared = self.shared.upgrade();
        let server = self.server.clone();
        Box::pin(async move {
            // Pitaya drops what it cannot read (#503): no answer, the caller times out.
            let mut req = match protos::Request::decode(&request[..]) {
                Ok(r) if r.msg.is_some() => r,
                Ok(_) => {
                    tracing::warn!(server = %server.id, bytes = request.len(), "rpc request without a message: dropped");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(server = %server.id, bytes = request.len(), "undecodable rpc request dropped: {e}");
                    return None;
                }
            };
            Some(match shared {
                Some(shared) => handle(&shared, &server, &mut req, timeout).await.unwrap_or_else(|e| messages::err(&e)),
                None => messages::err(&PitayaError::new(codes::INTERNAL, "server is shutting down")),
            })
        })
    }

    fn push(&self, push: protos::Push) {
        let Some(shared) = self.shared.upgrade() else { return };
        match shared.net.sessions.by_uid(&push.uid) {
            Some(s) => match s.wire().push(&push.route, Bytes::from(push.data)) {
                Ok(p) => {
                    let _ = s.send(p);
                }
                Err(e) => tracing::warn!(uid = %push.uid, route = %push.route, "cannot push: {e}"),
            },
            None => tracing::debug!(uid = %push.uid, "push for a uid without a session here"),
        }
    }

    fn kick(&self, kick: protos::KickMsg) {
        let Some(shared) = self.shared.upgrade() else { return };
        if let Some(s) = shared.net.sessions.by_uid(&kick.user_id) {
            let _ = SessionHandle::kick(&*s);
        }
    }

    /// Another frontend of this type bound the uid: the session holding it here goes, even if
    /// its kick cannot be written (the connection closes all the same; Pitaya #452).
    fn bound(&self, bind: protos::BindMsg) {
        let Some(shared) = self.shared.upgrade() else { return };
        if bind.fid == self.server.id || !shared.unique_session {
            return;
        }
        if let Some(s) = shared.net.sessions.by_uid(&bind.uid).filter(|s| s.frontend() == self.server.name) {
            tracing::info!(uid = %bind.uid, session = s.id(), frontend = %bind.fid, "uid bound on another frontend of this type: kicking the session here");
            let _ = SessionHandle::kick(&*s);
        }
    }
}

/// `service.method` of a route to this server type (`type.service.method`).
fn own_route<'a>(route: &'a str, server_type: &str) -> &'a str {
    route.strip_prefix(server_type).and_then(|r| r.strip_prefix('.')).unwrap_or(route)
}

fn internal(route: &str) -> PitayaError {
    PitayaError::new(codes::INTERNAL, format!("internal error handling {route}"))
}

fn from_call(route: &str, server: &ServerType, e: CallError) -> PitayaError {
    match e {
        CallError::Guest(g) => g.into(),
        // Like the hop limit: the caller learns why, at once.
        cycle @ CallError::Cycle(_) => PitayaError::new(codes::INTERNAL, format!("{cycle} (at {route})")),
        other => {
            tracing::warn!(server_type = %server.name, route, "guest call failed: {other}");
            internal(route)
        }
    }
}

fn hash(v: impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// `timeout`: how long the caller waits, unless the request's metadata says.
async fn handle(shared: &Arc<Shared>, server: &Arc<ServerType>, req: &mut protos::Request, timeout: Duration) -> Result<Bytes, PitayaError> {
    let meta = messages::read_metadata(req)?;
    let timeout = meta.timeout.unwrap_or(timeout);
    let msg = req.msg.take().ok_or_else(|| PitayaError::new(codes::BAD_REQUEST, "rpc request without a message"))?;
    if meta.chain.hops >= messages::MAX_HOPS {
        return Err(PitayaError::new(codes::INTERNAL, format!("rpc hop limit ({}) reached at {}", messages::MAX_HOPS, msg.route)));
    }
    // Pitaya's server-side RPC span, a child of the caller's (`otel-span`).
    let span = if crate::trace::sample_child(&meta.span) {
        tracing::info_span!(target: crate::trace::TARGET, "rpc", otel.name = %msg.route, otel.kind = "server", span.kind = "server", local.id = %server.id)
    } else {
        tracing::Span::none()
    };
    crate::trace::adopt(&span, &meta.span);
    let handled = async {
        if req.r#type == protos::RpcType::Sys as i32 {
            forwarded(shared, server, std::mem::take(req), msg, timeout).await
        } else {
            user(shared, server, msg, &meta.chain, timeout).await
        }
    };
    tracing::Instrument::instrument(handled, span).await
}

/// A client message forwarded by a frontend.
async fn forwarded(
    shared: &Arc<Shared>,
    server: &Arc<ServerType>,
    mut req: protos::Request,
    msg: protos::Msg,
    timeout: Duration,
) -> Result<Bytes, PitayaError> {
    let route = msg.route.as_str();
    let handler = own_route(route, &server.name);
    let notify = msg.r#type == protos::MsgType::MsgNotify as i32;
    let version = server.current();
    let pool = version.pool.clone();
    let Some(kind) = pool.description().handlers.get(handler) else {
        return Err(PitayaError::new(codes::NOT_FOUND, format!("pitaya/handler: {route} not found")));
    };
    if !notify && *kind == HandlerKind::Notify {
        return Err(PitayaError::new(codes::BAD_REQUEST, format!("tried to request a notify route: {route}")));
    }
    let session = req.session.take().unwrap_or_default();
    // Session ids are per frontend: the forwarded session is (frontend id, session id).
    let session_key = hash((req.frontend_id.as_str(), session.id));
    let backend = Arc::new(BackendSession::new(
        shared.cluster.clone(),
        shared.bridge.clone(),
        session,
        &req.frontend_id,
        (&server.id, &server.name),
        shared.request_timeout,
    )?);
    let key = match &version.affinity {
        Affinity::Session => Some(session_key),
        Affinity::Uid => Some(backend.uid().map_or(session_key, hash)),
        Affinity::DataField(f) => Some(backend.get(f).map_or(session_key, hash)),
        Affinity::None => None,
    };
    let handle: Arc<dyn SessionHandle> = backend.clone();
    let call = Call { route: handler.to_owned(), body: Bytes::from(msg.data), session: handle };
    drop(version);
    let result = pool.call_within(key, call, timeout).await;
    // Data changed by the handler reaches the frontend before the response does.
    backend.flush().await;
    if notify {
        if let Err(e) = result {
            tracing::debug!(route, "forwarded notify failed: {e}");
        }
        return Ok(messages::ok(&b"ack"[..]));
    }
    result.map(messages::ok).map_err(|e| from_call(route, server, e))
}

fn ack() -> Bytes {
    messages::ok(protos::Response { data: b"ack".to_vec(), error: None }.encode_to_vec())
}

/// A call to this server: `sys.*` session calls, or a remote.
async fn user(
    shared: &Arc<Shared>,
    server: &Arc<ServerType>,
    msg: protos::Msg,
    chain: &kiwano_protocol::CallChain,
    timeout: Duration,
) -> Result<Bytes, PitayaError> {
    let bad = |what: &str, e: prost::DecodeError| PitayaError::new(codes::BAD_REQUEST, format!("{what}: {e}"));
    match msg.route.as_str() {
        "sys.bindsession" => {
            let s = protos::Session::decode(&msg.data[..]).map_err(|e| bad("sys.bindsession", e))?;
            let id = u64::try_from(s.id).map_err(|_| PitayaError::new(codes::BAD_REQUEST, "sys.bindsession: invalid session id"))?;
            // Binding waits for the cluster (subscriptions, the unique-session broadcast): on
            // the blocking pool, which waits without holding up an I/O thread.
            let sessions = shared.net.sessions.clone();
            tokio::task::spawn_blocking(move || sessions.bind(id, &s.uid))
                .await
                .map_err(|e| PitayaError::new(codes::INTERNAL, format!("sys.bindsession: {e}")))?
                .map_err(PitayaError::from)?;
            Ok(ack())
        }
        "sys.pushsession" => {
            let s = protos::Session::decode(&msg.data[..]).map_err(|e| bad("sys.pushsession", e))?;
            let session = shared
                .net
                .sessions
                .get(u64::try_from(s.id).unwrap_or(u64::MAX))
                .ok_or_else(|| PitayaError::new(codes::UNKNOWN, "session not found"))?;
            let data = String::from_utf8_lossy(&s.data);
            SessionHandle::set_data(&*session, &data).map_err(|e| PitayaError::new(e.code, e.msg))?;
            Ok(ack())
        }
        "sys.kick" => {
            let k = protos::KickMsg::decode(&msg.data[..]).map_err(|e| bad("sys.kick", e))?;
            let session = shared.net.sessions.by_uid(&k.user_id).ok_or_else(|| PitayaError::new(codes::UNKNOWN, "session not found"))?;
            let _ = SessionHandle::kick(&*session);
            Ok(messages::ok(protos::KickAnswer { kicked: true }.encode_to_vec()))
        }
        route => {
            let remote = own_route(route, &server.name);
            let pool = server.current().remotes.clone().filter(|p| p.description().remotes.contains(remote));
            let Some(pool) = pool else {
                let mut e = PitayaError::new(codes::NOT_FOUND, "route not found");
                e.metadata.insert("route".into(), remote.to_owned());
                return Err(e);
            };
            pool.remote(remote, Bytes::from(msg.data), chain, timeout).await.map(messages::ok).map_err(|e| from_call(route, server, e))
        }
    }
}
