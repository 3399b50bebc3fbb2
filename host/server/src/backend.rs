//! The session of a forwarded message, as a backend server sees it. It is rebuilt from the
//! `protos.Session` of each forwarded request; what a handler changes travels back to the
//! frontend that holds the connection, as Pitaya does: `sys.bindsession` for a bind (at once),
//! `sys.pushsession` for data (after the call, before its response), `sys.kick` for a kick, and
//! pushes through the push path of the bound uid.

use std::sync::Arc;
use std::time::Duration;

use kiwano_cluster::{Cluster, ClusterError, ServerInfo, messages};
use kiwano_protocol::error::codes;
use kiwano_protocol::{PitayaError, protos};
use kiwano_runtime::{GuestError, SessionHandle};
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::{Map, Value};

use crate::bridge::Bridge;
use kiwano_runtime::{parse_object, parse_value};

struct State {
    uid: Option<String>,
    data: Map<String, Value>,
    dirty: bool,
}

/// A forwarded session.
pub struct BackendSession {
    id: u64,
    frontend_id: String,
    state: Mutex<State>,
    cluster: Arc<Cluster>,
    bridge: Bridge,
    /// Who makes the `sys.*` calls: this server's id and type.
    me: (String, String),
    timeout: Duration,
}

impl BackendSession {
    /// The session of a Sys RPC from frontend `frontend_id`, made by server `me` (id, type).
    ///
    /// # Errors
    /// `PIT-400` when the session's data is not a JSON object (Pitaya refuses it too).
    pub fn new(
        cluster: Arc<Cluster>,
        bridge: Bridge,
        session: protos::Session,
        frontend_id: &str,
        me: (&str, &str),
        timeout: Duration,
    ) -> Result<Self, PitayaError> {
        let data = if session.data.is_empty() {
            Map::new()
        } else {
            serde_json::from_slice::<Map<String, Value>>(&session.data)
                .map_err(|e| PitayaError::new(codes::BAD_REQUEST, format!("invalid session data from {frontend_id}: {e}")))?
        };
        let id = u64::try_from(session.id)
            .map_err(|_| PitayaError::new(codes::BAD_REQUEST, format!("invalid session id {} from {frontend_id}", session.id)))?;
        Ok(Self {
            id,
            frontend_id: frontend_id.to_owned(),
            state: Mutex::new(State { uid: (!session.uid.is_empty()).then_some(session.uid), data, dirty: false }),
            cluster,
            bridge,
            me: (me.0.to_owned(), me.1.to_owned()),
            timeout,
        })
    }

    /// The frontend's server id.
    pub fn frontend_id(&self) -> &str {
        &self.frontend_id
    }

    /// The frontend as discovery knows it.
    fn frontend(&self) -> Result<ServerInfo, GuestError> {
        self.cluster
            .server(&self.frontend_id)
            .ok_or_else(|| GuestError::new(codes::INTERNAL, format!("frontend server {} not found", self.frontend_id)))
    }

    fn sys_request(&self, route: &str, data: Vec<u8>) -> bytes::Bytes {
        let meta = messages::metadata(&self.me.0, &self.me.1, self.timeout, &kiwano_protocol::CallChain::default(), None, &[]);
        messages::encode_request(&protos::Request {
            r#type: protos::RpcType::User as i32,
            session: None,
            msg: Some(protos::Msg { route: route.to_owned(), data, ..Default::default() }),
            frontend_id: String::new(),
            metadata: meta,
        })
    }

    /// A `sys.*` call to the frontend, from a guest thread.
    fn sys_call(&self, route: &str, data: Vec<u8>) -> Result<Vec<u8>, GuestError> {
        let frontend = self.frontend()?;
        let call = self.cluster.rpc.call(&frontend, self.sys_request(route, data), self.timeout);
        let result = self.bridge.wait_spawned(call, self.timeout + Duration::from_secs(1)).unwrap_or(Err(ClusterError::Timeout));
        match result {
            Ok(resp) => messages::read_response(&resp).map_err(GuestError::from),
            Err(ClusterError::Timeout) => Err(messages::timeout_error(self.timeout, route, &frontend.id, &self.me.0).into()),
            Err(e) => Err(e.into_pitaya().into()),
        }
    }

    fn session_proto(&self, with_data: bool) -> protos::Session {
        let st = self.state.lock();
        protos::Session {
            id: i64::try_from(self.id).unwrap_or(i64::MAX),
            uid: st.uid.clone().unwrap_or_default(),
            // Serializing a JSON map cannot fail.
            data: if with_data { serde_json::to_vec(&st.data).unwrap_or_default() } else { Vec::new() },
        }
    }

    /// Sends changed data back to the frontend (`sys.pushsession`), before the response.
    pub async fn flush(&self) {
        if !std::mem::take(&mut self.state.lock().dirty) {
            return;
        }
        let frontend = match self.frontend() {
            Ok(f) => f,
            Err(e) => return tracing::warn!(session = self.id, "sys.pushsession not sent: {}", e.msg),
        };
        let req = self.sys_request("sys.pushsession", self.session_proto(true).encode_to_vec());
        match self.cluster.rpc.call(&frontend, req, self.timeout).await {
            Ok(resp) => {
                if let Err(e) = messages::read_response(&resp) {
                    tracing::warn!(session = self.id, frontend = %self.frontend_id, "sys.pushsession refused: {e}");
                }
            }
            Err(e) => tracing::warn!(session = self.id, frontend = %self.frontend_id, "sys.pushsession failed: {e}"),
        }
    }

    fn bound_uid(&self) -> Result<String, GuestError> {
        self.state.lock().uid.clone().ok_or_else(|| GuestError::new(codes::BAD_REQUEST, "session is not bound to an uid"))
    }
}

impl SessionHandle for BackendSession {
    fn id(&self) -> u64 {
        self.id
    }

    fn uid(&self) -> Option<String> {
        self.state.lock().uid.clone()
    }

    fn bind(&self, uid: &str) -> Result<(), GuestError> {
        if uid.is_empty() {
            return Err(GuestError::new(codes::BAD_REQUEST, "illegal uid: the uid is empty"));
        }
        if let Some(bound) = self.uid() {
            return Err(GuestError::new(codes::BAD_REQUEST, format!("session is already bound to an uid ({bound:?})")));
        }
        let arg = protos::Session { id: i64::try_from(self.id).unwrap_or(i64::MAX), uid: uid.to_owned(), data: Vec::new() };
        self.sys_call("sys.bindsession", arg.encode_to_vec())?;
        self.state.lock().uid = Some(uid.to_owned());
        Ok(())
    }

    /// A backend never sees a session close; only its frontend can tell.
    fn displaced(&self) -> bool {
        false
    }

    fn get(&self, key: &str) -> Option<String> {
        self.state.lock().data.get(key).map(Value::to_string)
    }

    fn set(&self, key: &str, value: &str) -> Result<(), GuestError> {
        let v = parse_value(key, value)?;
        let mut st = self.state.lock();
        st.data.insert(key.to_owned(), v);
        st.dirty = true;
        Ok(())
    }

    fn data(&self) -> String {
        // Serializing a JSON map cannot fail.
        serde_json::to_string(&self.state.lock().data).unwrap_or_default()
    }

    fn set_data(&self, data: &str) -> Result<(), GuestError> {
        let map = parse_object(data)?;
        let mut st = self.state.lock();
        st.data = map;
        st.dirty = true;
        Ok(())
    }

    fn push(&self, route: &str, body: &[u8]) -> Result<(), GuestError> {
        let uid = self.bound_uid()?;
        let frontend = self.frontend()?;
        let push = protos::Push { route: route.to_owned(), uid, data: body.to_vec() };
        let rpc = self.cluster.rpc.clone();
        match self.bridge.wait(async move { rpc.push(&frontend.server_type, push).await }, self.timeout) {
            Some(r) => r.map_err(|e| e.into_pitaya().into()),
            None => Err(GuestError::new(codes::TIMEOUT, format!("push: the cluster did not answer within {:?}", self.timeout))),
        }
    }

    fn kick(&self) -> Result<(), GuestError> {
        let uid = self.bound_uid()?;
        self.sys_call("sys.kick", protos::KickMsg { user_id: uid }.encode_to_vec()).map(drop)
    }

    fn handshake(&self) -> String {
        "{}".into()
    }

    fn remote_address(&self) -> String {
        String::new()
    }

    fn pin(&self, _server_type: &str, _server_id: &str) -> Result<(), GuestError> {
        Err(GuestError::new(codes::BAD_REQUEST, "only the frontend holding the session can pin it"))
    }
}
