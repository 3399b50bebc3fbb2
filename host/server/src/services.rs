//! What guests reach beyond their own session: users by uid (here or on other frontends),
//! groups, and RPC to remotes through the cluster; and what binding a uid means in the cluster.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kiwano_cluster::{BoxFuture, Cluster, ClusterError, ServerInfo, messages};
use kiwano_protocol::error::codes;
use kiwano_protocol::{PitayaError, protos};
use kiwano_runtime::{CallChain, Caller, GroupOp, GroupReply, GuestError, HostServices, RpcTarget, SessionHandle};

use crate::bridge::Bridge;
use crate::session::{BindHooks, Session, SessionPool};

/// The host services of this process.
pub struct Services {
    /// This process's sessions.
    pub sessions: Arc<SessionPool>,
    /// Discovery, RPC, groups.
    pub cluster: Arc<Cluster>,
    /// Where guests wait for the cluster.
    pub bridge: Bridge,
    /// The ids of this process's servers: a uid not bound here is looked for on the frontends
    /// of other processes only.
    pub local: HashSet<String>,
    /// How long a guest waits for a group operation, a publish or an RPC without a timeout of
    /// its own (`cluster.request_timeout`).
    pub timeout: Duration,
    /// Spreads User RPCs over the servers of a type.
    pub next: AtomicUsize,
    /// Where outgoing RPCs are timed (`pitaya_handler_response_time_ns`, type `rpc`).
    pub metrics: kiwano_metrics::Metrics,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Pitaya's refusal of an RPC that this server would process itself.
const NONSENSE_RPC: &str =
    "you are making a rpc that may be processed locally, either specify a different server type or specify a server id";

fn cluster_error(e: ClusterError) -> GuestError {
    e.into_pitaya().into()
}

impl Services {
    /// Waits for a cluster operation that cannot run guest code.
    fn wait<T: Send + 'static>(&self, what: &str, fut: BoxFuture<'static, Result<T, ClusterError>>) -> Result<T, GuestError> {
        match self.bridge.wait(fut, self.timeout) {
            Some(r) => r.map_err(cluster_error),
            None => Err(GuestError::new(codes::TIMEOUT, format!("{what}: the cluster did not answer within {:?}", self.timeout))),
        }
    }

    /// The frontend types with servers in other processes: where a uid not bound here may be.
    fn remote_frontend_types(&self) -> BTreeSet<String> {
        let snapshot = self.cluster.discovery.snapshot();
        snapshot
            .by_id
            .values()
            .filter(|r| r.info.frontend && !self.local.contains(&r.info.id))
            .map(|r| r.info.server_type.clone())
            .collect()
    }

    /// Sends `what` for each of `uids` to the frontends of other processes (Pitaya publishes
    /// to `pitaya/<frontend type>/user/<uid>/push|kick` and cannot know whether anyone holds
    /// the uid); returns the uids whose publish failed everywhere, or all of them when no other
    /// process has a frontend.
    fn publish(&self, uids: Vec<String>, send: impl Fn(&str, &str) -> BoxFuture<'static, Result<(), ClusterError>>) -> Vec<String> {
        let types = self.remote_frontend_types();
        if uids.is_empty() || types.is_empty() {
            return uids;
        }
        let mut sends = Vec::with_capacity(uids.len() * types.len());
        for uid in &uids {
            for t in &types {
                sends.push((uid.clone(), send(t, uid)));
            }
        }
        let outcome = self.bridge.wait(
            async move {
                let mut reached = HashSet::new();
                for (uid, send) in sends {
                    match send.await {
                        Ok(()) => {
                            reached.insert(uid);
                        }
                        Err(e) => tracing::warn!(uid = %uid, "cannot publish to the uid's frontend: {e}"),
                    }
                }
                reached
            },
            self.timeout,
        );
        let reached = outcome.unwrap_or_default();
        uids.into_iter().filter(|u| !reached.contains(u)).collect()
    }

    /// Pushes to every member of a group; a member whose queue is full is disconnected by
    /// `send`, never waited for.
    fn broadcast(&self, name: &str, route: &str, body: &[u8]) -> Result<(), GuestError> {
        let GroupReply::Members(uids) = self.group(GroupOp::Members(name))? else {
            return Err(GuestError::new(codes::INTERNAL, "group members: unexpected reply"));
        };
        self.push_to_users(route, body, &uids).map(drop)
    }

    /// Picks the server of an RPC.
    fn target(&self, caller: &Caller, server_type: &str, target: &RpcTarget) -> Result<ServerInfo, GuestError> {
        match target {
            RpcTarget::Type if server_type == caller.server_type => Err(GuestError::new(codes::UNKNOWN, NONSENSE_RPC)),
            RpcTarget::Type => {
                let servers = self.cluster.servers_of(server_type);
                if servers.is_empty() {
                    return Err(GuestError::new(codes::INTERNAL, format!("no servers available of this type: {server_type}")));
                }
                // Pitaya spreads User RPCs at random over the servers of the type.
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                Ok(servers[n % servers.len()].clone())
            }
            RpcTarget::Server(id) => {
                self.cluster.server(id).ok_or_else(|| GuestError::new(codes::INTERNAL, format!("server {id:?} not found")))
            }
        }
    }
}

impl HostServices for Services {
    fn push_to_users(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, GuestError> {
        // Refused whoever the uids are, as a push to the session is (not only once one of them
        // turns out to be here).
        if route.len() > 255 {
            let e = kiwano_protocol::ProtocolError::RouteTooLong(route.len());
            return Err(GuestError::new(codes::BAD_REQUEST, format!("cannot push on {route:?}: {e}")));
        }
        let (mut elsewhere, mut failed) = (Vec::new(), Vec::new());
        // Encoded once, the same bytes queued for every member.
        let mut packet: Option<Bytes> = None;
        for uid in uids {
            let Some(session) = self.sessions.by_uid(uid) else {
                elsewhere.push(uid.clone());
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
                // Its connection closes: the uid is not reached, here or anywhere.
                failed.push(uid.clone());
            }
        }
        Ok(self.push_elsewhere(route, body, elsewhere, failed, uids))
    }

    fn kick_users(&self, uids: &[String]) -> Result<Vec<String>, GuestError> {
        let mut elsewhere = Vec::new();
        for uid in uids {
            match self.sessions.by_uid(uid) {
                Some(s) => {
                    let _ = SessionHandle::kick(&*s);
                }
                None => elsewhere.push(uid.clone()),
            }
        }
        let rpc = self.cluster.rpc.clone();
        Ok(self.publish(elsewhere, |t, uid| {
            let (rpc, t, kick) = (rpc.clone(), t.to_owned(), protos::KickMsg { user_id: uid.to_owned() });
            Box::pin(async move { rpc.kick(&t, kick).await })
        }))
    }

    fn group(&self, op: GroupOp<'_>) -> Result<GroupReply, GuestError> {
        if let GroupOp::Broadcast(n, route, body) = op {
            return self.broadcast(n, route, body).map(|()| GroupReply::Done);
        }
        let g = self.cluster.groups.clone();
        let done = |()| GroupReply::Done;
        let fut: BoxFuture<'static, Result<GroupReply, ClusterError>> = match op {
            GroupOp::Create(n, ttl) => {
                let n = n.to_owned();
                Box::pin(async move { g.create(&n, ttl.map(Duration::from_millis)).await.map(done) })
            }
            GroupOp::Delete(n) => {
                let n = n.to_owned();
                Box::pin(async move { g.delete(&n).await.map(done) })
            }
            GroupOp::Add(n, u) => {
                let (n, u) = (n.to_owned(), u.to_owned());
                Box::pin(async move { g.add(&n, &u).await.map(done) })
            }
            GroupOp::Remove(n, u) => {
                let (n, u) = (n.to_owned(), u.to_owned());
                Box::pin(async move { g.remove(&n, &u).await.map(done) })
            }
            GroupOp::RemoveAll(n) => {
                let n = n.to_owned();
                Box::pin(async move { g.remove_all(&n).await.map(done) })
            }
            GroupOp::Contains(n, u) => {
                let (n, u) = (n.to_owned(), u.to_owned());
                Box::pin(async move { g.contains(&n, &u).await.map(GroupReply::Bool) })
            }
            GroupOp::Members(n) => {
                let n = n.to_owned();
                Box::pin(async move { g.members(&n).await.map(GroupReply::Members) })
            }
            GroupOp::Count(n) => {
                let n = n.to_owned();
                Box::pin(async move { g.count(&n).await.map(GroupReply::Count) })
            }
            GroupOp::Renew(n) => {
                let n = n.to_owned();
                Box::pin(async move { g.renew(&n).await.map(done) })
            }
            GroupOp::Broadcast(..) => unreachable!("handled above"),
        };
        self.wait("group operation", fut)
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
        let started = std::time::Instant::now();
        let result = self.rpc_untimed(caller, chain, target, route, body, timeout);
        if self.metrics.enabled() {
            let (status, code) = match &result {
                Ok(_) => ("ok", ""),
                Err(e) => ("failed", crate::router::code_label(&e.code)),
            };
            // A route no server serves is the guest's own string: not a label of its own.
            let label = if result.as_ref().is_err_and(|e| e.code == codes::NOT_FOUND || e.code == codes::BAD_REQUEST) { "unknown" } else { route };
            let ns = started.elapsed().as_nanos() as f64;
            self.metrics.observe(&kiwano_metrics::families::RESPONSE_TIME, &[label, status, "rpc", code], ns);
        }
        result
    }
}

impl Services {
    /// An RPC, untimed (see `HostServices::rpc`).
    fn rpc_untimed(
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
        let frontend = self.cluster.server(&caller.server_id).is_some_and(|s| s.frontend);
        // Pitaya's client span of the RPC, below the guest call that makes it; its context
        // travels in the metadata.
        let span = crate::trace::rpc_client(&caller.server_id, server_type);
        let carrier = crate::trace::inject(&span);
        let request = messages::encode_request(&protos::Request {
            r#type: protos::RpcType::User as i32,
            session: None,
            msg: Some(protos::Msg { route: route.to_owned(), data: body.to_vec(), ..Default::default() }),
            frontend_id: if frontend { caller.server_id.clone() } else { String::new() },
            metadata: messages::metadata(&caller.server_id, &caller.server_type, timeout, chain, None, &carrier),
        });
        loop {
            let server = self.target(caller, server_type, &target)?;
            span.record("peer.id", server.id.as_str());
            // May run guest code of this process: on the runtime, never nested on this stack.
            // The call enforces `timeout` itself; the margin only guards against a lost task.
            let call = self.cluster.rpc.call(&server, request.clone(), timeout);
            let result = self.bridge.wait_spawned(call, timeout + Duration::from_secs(1)).unwrap_or(Err(ClusterError::Timeout));
            return match result {
                Ok(resp) => messages::read_response(&resp).map_err(GuestError::from),
                Err(ClusterError::Timeout) => Err(messages::timeout_error(timeout, route, &server.id, &caller.server_id).into()),
                // Never delivered: another server of the type may take it.
                Err(ClusterError::NoResponders(id)) if target == RpcTarget::Type => {
                    self.cluster.mark_silent(&id);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(server_type = %caller.server_type, route, server = %server.id, "rpc failed: {e}");
                    Err(GuestError::new(codes::INTERNAL, format!("no servers available of this type: {server_type}")))
                }
            };
        }
    }
}

impl Services {
    /// Pushes to the uids not bound here through the cluster; returns the uids not reached
    /// (`failed`, and those `elsewhere` whose publish failed), in the order of `all`.
    fn push_elsewhere(&self, route: &str, body: &[u8], elsewhere: Vec<String>, failed: Vec<String>, all: &[String]) -> Vec<String> {
        let rpc = self.cluster.rpc.clone();
        let missed: HashSet<String> = self
            .publish(elsewhere, |t, uid| {
                let (rpc, t) = (rpc.clone(), t.to_owned());
                let push = protos::Push { route: route.to_owned(), uid: uid.to_owned(), data: body.to_vec() };
                Box::pin(async move { rpc.push(&t, push).await })
            })
            .into_iter()
            .chain(failed)
            .collect();
        all.iter().filter(|u| missed.contains(*u)).cloned().collect()
    }
}

/// What binding a uid at a frontend of this process means in the cluster: its pushes and kicks
/// are delivered here (`pitaya/<type>/user/<uid>/…`), the other frontends of the type hear of
/// it (unique session: they kick their session of the uid), and the binding is recorded.
pub struct ClusterBinding {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// Where the bind waits for the cluster.
    pub bridge: Bridge,
    /// This process's frontends, by server type.
    pub frontends: HashMap<String, ServerInfo>,
    /// Whether other frontends are told to kick the uid (`cluster.unique_session`).
    pub unique_session: bool,
    /// How long a bind waits for the cluster.
    pub timeout: Duration,
}

impl BindHooks for ClusterBinding {
    fn bound(&self, session: &Session, uid: &str) -> Result<Box<dyn Send + Sync>, GuestError> {
        let Some(info) = self.frontends.get(session.frontend()).cloned() else {
            return Err(GuestError::new(codes::INTERNAL, format!("frontend {} is not served here", session.frontend())));
        };
        let (cluster, owned, unique) = (self.cluster.clone(), uid.to_owned(), self.unique_session);
        let bind = async move {
            let serving = cluster.rpc.bind_user(&info, &owned).await?;
            if unique {
                let msg = protos::BindMsg { uid: owned.clone(), fid: info.id.clone() };
                cluster.rpc.broadcast_bind(&info.server_type, msg).await?;
            }
            cluster.bindings.put(&info.server_type, &owned, &info.id).await?;
            Ok::<_, ClusterError>(serving)
        };
        match self.bridge.wait(bind, self.timeout) {
            Some(Ok(serving)) => Ok(Box::new(serving)),
            Some(Err(e)) => {
                tracing::warn!(uid, session = session.id(), "bind refused by the cluster: {e}");
                Err(cluster_error(e))
            }
            None => Err(PitayaError::new(codes::TIMEOUT, format!("bind: the cluster did not answer within {:?}", self.timeout)).into()),
        }
    }

    fn unbound(&self, session: &Session, uid: &str) {
        let Some(info) = self.frontends.get(session.frontend()).cloned() else { return };
        let (cluster, uid) = (self.cluster.clone(), uid.to_owned());
        self.bridge.spawn(async move {
            if let Err(e) = cluster.bindings.remove(&info.server_type, &uid, &info.id).await {
                tracing::warn!(uid, "cannot remove the binding: {e}");
            }
        });
    }
}
