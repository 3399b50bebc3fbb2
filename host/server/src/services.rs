//! What guests reach beyond their own session, in-process: users by uid, groups, and RPC to the
//! remotes of the server types hosted here.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::error::codes;
use kiwano_runtime::{CallError, Caller, GroupOp, GroupReply, GuestError, HostServices, RpcTarget, SessionHandle};

use crate::groups::MemoryGroups;
use crate::router::ServerType;
use crate::session::SessionPool;

/// The in-process host services.
pub struct Services {
    /// All sessions.
    pub sessions: Arc<SessionPool>,
    /// All groups.
    pub groups: MemoryGroups,
    /// This server's id.
    pub server_id: String,
    /// Server types, set once their pools exist.
    pub types: OnceLock<HashMap<String, Arc<ServerType>>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("server_id", &self.server_id).finish_non_exhaustive()
    }
}

impl Services {
    /// Pushes to every member of a group; a member whose queue is full is disconnected by
    /// `send`, never waited for.
    fn broadcast(&self, name: &str, route: &str, body: &[u8]) -> Result<(), GuestError> {
        let uids = self.groups.members(name)?;
        self.push_to_users(route, body, &uids).map(drop)
    }
}

/// Pitaya's refusal of an RPC that this server would process itself.
const NONSENSE_RPC: &str =
    "you are making a rpc that may be processed locally, either specify a different server type or specify a server id";

impl HostServices for Services {
    fn push_to_users(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, GuestError> {
        let mut missed = Vec::new();
        // Encoded once, the same bytes queued for every member.
        let mut packet: Option<Bytes> = None;
        for uid in uids {
            let Some(session) = self.sessions.by_uid(uid) else {
                missed.push(uid.clone());
                continue;
            };
            let p = match &packet {
                Some(p) => p.clone(),
                None => {
                    let p = session
                        .wire()
                        .push(route, Bytes::copy_from_slice(body))
                        .map_err(|e| GuestError::new(codes::BAD_REQUEST, format!("cannot push on {route:?}: {e}")))?;
                    packet = Some(p.clone());
                    p
                }
            };
            if session.send(p).is_err() {
                missed.push(uid.clone());
            }
        }
        Ok(missed)
    }

    fn kick_users(&self, uids: &[String]) -> Result<Vec<String>, GuestError> {
        let mut missed = Vec::new();
        for uid in uids {
            match self.sessions.by_uid(uid) {
                Some(s) if SessionHandle::kick(&*s).is_ok() => {}
                _ => missed.push(uid.clone()),
            }
        }
        Ok(missed)
    }

    fn group(&self, op: GroupOp<'_>) -> Result<GroupReply, GuestError> {
        let g = &self.groups;
        Ok(match op {
            GroupOp::Create(n, ttl) => g.create(n, ttl.map(Duration::from_millis)).map(|()| GroupReply::Done)?,
            GroupOp::Delete(n) => g.delete(n).map(|()| GroupReply::Done)?,
            GroupOp::Add(n, u) => g.add(n, u).map(|()| GroupReply::Done)?,
            GroupOp::Remove(n, u) => g.remove(n, u).map(|()| GroupReply::Done)?,
            GroupOp::RemoveAll(n) => g.remove_all(n).map(|()| GroupReply::Done)?,
            GroupOp::Contains(n, u) => GroupReply::Bool(g.contains(n, u)?),
            GroupOp::Members(n) => GroupReply::Members(g.members(n)?),
            GroupOp::Count(n) => GroupReply::Count(g.count(n)?),
            GroupOp::Renew(n) => g.renew(n).map(|()| GroupReply::Done)?,
            GroupOp::Broadcast(n, route, body) => self.broadcast(n, route, body).map(|()| GroupReply::Done)?,
        })
    }

    fn rpc(&self, caller: &Caller, target: RpcTarget, route: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, GuestError> {
        let parts: Vec<&str> = route.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(GuestError::new(codes::BAD_REQUEST, format!("invalid rpc route {route:?}: want server-type.service.method")));
        }
        let (server_type, remote) = (parts[0], &route[parts[0].len() + 1..]);
        match &target {
            RpcTarget::Type if server_type == caller.server_type => {
                return Err(GuestError::new(codes::UNKNOWN, NONSENSE_RPC));
            }
            RpcTarget::Server(id) if *id != self.server_id => {
                return Err(GuestError::new(codes::INTERNAL, format!("server {id:?} not found")));
            }
            _ => {}
        }
        let no_server = || GuestError::new(codes::INTERNAL, format!("no servers available of this type: {server_type}"));
        let st = self.types.get().and_then(|t| t.get(server_type)).ok_or_else(no_server)?;
        let not_found = || {
            let mut e = GuestError::new(codes::NOT_FOUND, "route not found");
            e.metadata.push(("route".into(), remote.to_owned()));
            e
        };
        let pool = st.remotes.as_ref().filter(|p| p.description().remotes.contains(remote)).ok_or_else(not_found)?;
        match pool.remote_blocking(remote, Bytes::copy_from_slice(body), timeout) {
            Ok(reply) => Ok(reply),
            Err(CallError::Guest(e)) => Err(if e.code.is_empty() { GuestError { code: codes::UNKNOWN.into(), ..e } } else { e }),
            Err(CallError::Timeout(t)) => {
                let mut e = GuestError::new(codes::TIMEOUT, "rpc client: request timeout");
                e.metadata.push(("timeout".into(), humantime::format_duration(t).to_string()));
                e.metadata.push(("route".into(), route.to_owned()));
                e.metadata.push(("server".into(), self.server_id.clone()));
                e.metadata.push(("peer.id".into(), caller.server_id.clone()));
                Err(e)
            }
            Err(other) => {
                tracing::warn!(route, "remote call failed: {other}");
                Err(GuestError::new(codes::INTERNAL, format!("internal error handling {route}")))
            }
        }
    }
}
