//! The session of a forwarded message, as a backend server sees it. It is rebuilt from the
//! `protos.Session` of each forwarded request; what a handler changes travels back to the
//! frontend that holds the connection, as Pitaya does: `sys.bindsession` for a bind (at once),
//! `sys.pushsession` for data (after the call, before its response), `sys.kick` for a kick, and
//! pushes through the push path of the bound uid.

use std::sync::Arc;
use std::time::Duration;

use kiwano_protocol::error::codes;
use kiwano_protocol::protos;
use kiwano_runtime::{GuestError, SessionHandle};
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::{Map, Value};

use crate::cluster::{Cluster, messages};
use crate::session::{parse_object, parse_value};

struct State {
    uid: Option<String>,
    /// The session data as it came, parsed on first use: most handlers never read it.
    raw: Vec<u8>,
    parsed: Option<Map<String, Value>>,
    dirty: bool,
}

impl State {
    fn data(&mut self) -> &mut Map<String, Value> {
        let raw = &self.raw;
        self.parsed.get_or_insert_with(|| match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        })
    }
}

/// A forwarded session.
pub struct BackendSession {
    id: u64,
    frontend_id: String,
    /// The frontend's server type, looked up on first use (for pushes).
    frontend_type: std::sync::OnceLock<String>,
    state: Mutex<State>,
    cluster: Arc<Cluster>,
    /// Who makes the `sys.*` calls.
    server_id: String,
    server_type: String,
    timeout: Duration,
}

impl BackendSession {
    /// The session of a Sys RPC from frontend `frontend_id`.
    pub fn new(cluster: Arc<Cluster>, session: protos::Session, frontend_id: &str, me: (&str, &str), timeout: Duration) -> Self {
        Self {
            id: u64::try_from(session.id).unwrap_or(0),
            frontend_id: frontend_id.to_owned(),
            frontend_type: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                uid: (!session.uid.is_empty()).then_some(session.uid),
                raw: session.data,
                parsed: None,
                dirty: false,
            }),
            cluster,
            server_id: me.0.to_owned(),
            server_type: me.1.to_owned(),
            timeout,
        }
    }

    /// The frontend's server id.
    pub fn frontend_id(&self) -> &str {
        &self.frontend_id
    }

    fn sys_request(&self, route: &str, data: Vec<u8>) -> bytes::Bytes {
        let meta = messages::metadata(&self.server_id, &self.server_type, self.timeout, &kiwano_runtime::CallChain::default(), None);
        messages::encode_request(&protos::Request {
            r#type: protos::RpcType::User as i32,
            session: None,
            msg: Some(protos::Msg { route: route.to_owned(), data, ..Default::default() }),
            frontend_id: String::new(),
            metadata: meta,
        })
    }

    fn sys_call(&self, route: &str, data: Vec<u8>) -> Result<Vec<u8>, GuestError> {
        let req = self.sys_request(route, data);
        let resp = self
            .cluster
            .call_blocking(&self.frontend_id, req, self.timeout)
            .map_err(|e| GuestError::new(codes::TIMEOUT, e.to_string()))?;
        messages::read_response(&resp).map_err(|e| GuestError { code: e.code, msg: e.msg, metadata: e.metadata.into_iter().collect() })
    }

    fn session_proto(&self, with_data: bool) -> protos::Session {
        let mut st = self.state.lock();
        protos::Session {
            id: i64::try_from(self.id).unwrap_or(0),
            uid: st.uid.clone().unwrap_or_default(),
            data: if with_data { Value::Object(st.data().clone()).to_string().into_bytes() } else { Vec::new() },
        }
    }

    /// Sends changed data back to the frontend (`sys.pushsession`), before the response.
    pub async fn flush(&self) {
        if !std::mem::take(&mut self.state.lock().dirty) {
            return;
        }
        let req = self.sys_request("sys.pushsession", self.session_proto(true).encode_to_vec());
        match self.cluster.rpc.call(&self.frontend_id, req, self.timeout).await {
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
        let arg = protos::Session { id: i64::try_from(self.id).unwrap_or(0), uid: uid.to_owned(), data: Vec::new() };
        self.sys_call("sys.bindsession", arg.encode_to_vec())?;
        self.state.lock().uid = Some(uid.to_owned());
        Ok(())
    }

    /// A backend never sees a session close; only its frontend can tell.
    fn displaced(&self) -> bool {
        false
    }

    fn get(&self, key: &str) -> Option<String> {
        self.state.lock().data().get(key).map(Value::to_string)
    }

    fn set(&self, key: &str, value: &str) -> Result<(), GuestError> {
        let v = parse_value(key, value)?;
        let mut st = self.state.lock();
        st.data().insert(key.to_owned(), v);
        st.dirty = true;
        Ok(())
    }

    fn data(&self) -> String {
        Value::Object(self.state.lock().data().clone()).to_string()
    }

    fn set_data(&self, data: &str) -> Result<(), GuestError> {
        let map = parse_object(data)?;
        let mut st = self.state.lock();
        st.parsed = Some(map);
        st.dirty = true;
        Ok(())
    }

    fn push(&self, route: &str, body: &[u8]) -> Result<(), GuestError> {
        let uid = self.bound_uid()?;
        let frontend_type = self
            .frontend_type
            .get_or_init(|| self.cluster.discovery.server(&self.frontend_id).map(|s| s.server_type).unwrap_or_default());
        self.cluster.rpc.push(frontend_type, protos::Push { route: route.to_owned(), uid, data: body.to_vec() });
        Ok(())
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
