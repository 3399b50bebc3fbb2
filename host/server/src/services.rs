//! What guests reach beyond their own session: users by uid, groups, and RPC to remotes
//! through the cluster.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::error::codes;
use kiwano_protocol::protos;
use kiwano_runtime::{CallChain, Caller, GroupOp, GroupReply, GuestError, HostServices, RpcTarget, SessionHandle};

use crate::cluster::{Cluster, RpcError, messages};
use crate::groups::MemoryGroups;
use crate::session::SessionPool;

/// The in-process host services.
pub struct Services {
    /// All sessions.
    pub sessions: Arc<SessionPool>,
    /// All groups.
    pub groups: MemoryGroups,
    /// Discovery and RPC.
    pub cluster: Arc<Cluster>,
    /// Spreads User RPCs over the servers of a type.
    pub next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
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

    fn rpc(
        &self,
        caller: &Caller,
        chain: &CallChain,
        target: RpcTarget,
        route: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, GuestError> {
        let parts: Vec<&str> = route.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(GuestError::new(codes::BAD_REQUEST, format!("invalid rpc route {route:?}: want server-type.service.method")));
        }
        let server_type = parts[0];
        if chain.hops >= messages::MAX_HOPS {
            return Err(GuestError::new(codes::INTERNAL, format!("rpc hop limit ({}) reached at {route}", messages::MAX_HOPS)));
        }
        let discovery = &self.cluster.discovery;
        let target = match &target {
            RpcTarget::Type if server_type == caller.server_type => return Err(GuestError::new(codes::UNKNOWN, NONSENSE_RPC)),
            RpcTarget::Type => {
                let servers = discovery.servers_of(server_type);
                if servers.is_empty() {
                    return Err(GuestError::new(codes::INTERNAL, format!("no servers available of this type: {server_type}")));
                }
                // Pitaya spreads User RPCs at random over the servers of the type.
                let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                servers[n % servers.len()].clone()
            }
            RpcTarget::Server(id) => discovery
                .server(id)
                .ok_or_else(|| GuestError::new(codes::INTERNAL, format!("server {id:?} not found")))?,
        };
        let frontend = discovery.server(&caller.server_id).is_some_and(|s| s.frontend);
        let meta = messages::metadata(&caller.server_id, &caller.server_type, timeout, chain, None);
        let request = protos::Request {
            r#type: protos::RpcType::User as i32,
            session: None,
            msg: Some(protos::Msg { route: route.to_owned(), data: body.to_vec(), ..Default::default() }),
            frontend_id: if frontend { caller.server_id.clone() } else { String::new() },
            metadata: meta,
        };
        match self.cluster.call_blocking(&target.id, messages::encode_request(&request), timeout) {
            Ok(resp) => messages::read_response(&resp)
                .map_err(|e| GuestError { code: e.code, msg: e.msg, metadata: e.metadata.into_iter().collect() }),
            Err(RpcError::Timeout) => {
                let mut e = GuestError::new(codes::TIMEOUT, "rpc client: request timeout");
                e.metadata.push(("timeout".into(), messages::go_duration(timeout)));
                e.metadata.push(("route".into(), route.to_owned()));
                e.metadata.push(("server".into(), target.id.clone()));
                e.metadata.push(("peer.id".into(), caller.server_id.clone()));
                Err(e)
            }
            Err(RpcError::Unreachable(_)) => {
                Err(GuestError::new(codes::INTERNAL, format!("no servers available of this type: {server_type}")))
            }
        }
    }
}
