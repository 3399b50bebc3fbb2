//! The cluster of one process: discovery, RPC and bindings in memory, with the same encoded
//! messages as across machines.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::protos;
use parking_lot::{Mutex, RwLock};

use crate::{Bindings, BoxFuture, ClusterError, Discovery, Registration, Rpc, RpcHandler, ServerInfo, Servers, Serving};

/// Discovery of the servers of this process.
#[derive(Debug, Default)]
pub struct MemoryDiscovery {
    servers: RwLock<Arc<Servers>>,
    generation: AtomicI64,
}

impl Discovery for MemoryDiscovery {
    fn register<'a>(&'a self, server: &'a ServerInfo) -> BoxFuture<'a, Result<(), ClusterError>> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut servers = self.servers.write();
        let mut next = Servers::clone(&servers);
        next.by_id.insert(server.id.clone(), Registration { info: server.clone(), generation });
        *servers = Arc::new(next);
        Box::pin(std::future::ready(Ok(())))
    }

    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        let mut servers = self.servers.write();
        let mut next = Servers::clone(&servers);
        next.by_id.remove(id);
        *servers = Arc::new(next);
        Box::pin(std::future::ready(Ok(())))
    }

    fn snapshot(&self) -> Arc<Servers> {
        self.servers.read().clone()
    }
}

struct Served {
    info: ServerInfo,
    handler: Arc<dyn RpcHandler>,
}

#[derive(Default)]
struct State {
    servers: BTreeMap<String, Served>,
    /// `(frontend type, uid)` → the frontends where it is bound.
    users: BTreeMap<(String, String), BTreeSet<String>>,
}

/// RPC between the servers of this process: a request is handed to the target's handler as
/// bytes and its response comes back as bytes; pushes and kicks reach the frontends where their
/// uid is bound.
#[derive(Default)]
pub struct MemoryRpc {
    state: Arc<RwLock<State>>,
}

impl std::fmt::Debug for MemoryRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRpc").field("servers", &self.state.read().servers.len()).finish()
    }
}

impl MemoryRpc {
    /// The handlers of the frontends of `frontend_type` where `uid` is bound.
    fn holders(&self, frontend_type: &str, uid: &str) -> Vec<Arc<dyn RpcHandler>> {
        let state = self.state.read();
        let Some(ids) = state.users.get(&(frontend_type.to_owned(), uid.to_owned())) else { return Vec::new() };
        ids.iter().filter_map(|id| state.servers.get(id)).map(|s| s.handler.clone()).collect()
    }
}

impl Rpc for MemoryRpc {
    fn serve<'a>(&'a self, server: &'a ServerInfo, handler: Arc<dyn RpcHandler>) -> BoxFuture<'a, Result<Serving, ClusterError>> {
        let id = server.id.clone();
        self.state.write().servers.insert(id.clone(), Served { info: server.clone(), handler });
        let state = self.state.clone();
        Box::pin(std::future::ready(Ok(Serving::on_drop(move || {
            state.write().servers.remove(&id);
        }))))
    }

    fn call(&self, target: &ServerInfo, request: Bytes, timeout: Duration) -> BoxFuture<'static, Result<Bytes, ClusterError>> {
        let handler = self.state.read().servers.get(&target.id).map(|s| s.handler.clone());
        let id = target.id.clone();
        Box::pin(async move {
            let Some(handler) = handler else { return Err(ClusterError::NoResponders(id)) };
            // Polled by the caller: no task per call. A caller that gives up stops waiting; the
            // guest call it started still runs to its end on its instance's thread. A guest
            // call run on this thread cannot be given up: it is run so only when it must end
            // (or trap) within `timeout`, and an answer coming later is a timeout all the same.
            let start = tokio::time::Instant::now();
            match tokio::time::timeout(timeout, handler.request(request, timeout)).await {
                Ok(Some(_)) if start.elapsed() > timeout => Err(ClusterError::Timeout),
                Ok(Some(response)) => Ok(response),
                // Dropped unanswered: the caller would wait out its timeout; here it learns at once.
                Ok(None) | Err(_) => Err(ClusterError::Timeout),
            }
        })
    }

    fn bind_user<'a>(&'a self, server: &'a ServerInfo, uid: &'a str) -> BoxFuture<'a, Result<Serving, ClusterError>> {
        let key = (server.server_type.clone(), uid.to_owned());
        self.state.write().users.entry(key.clone()).or_default().insert(server.id.clone());
        let (state, id) = (self.state.clone(), server.id.clone());
        Box::pin(std::future::ready(Ok(Serving::on_drop(move || {
            let mut state = state.write();
            if let Some(ids) = state.users.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    state.users.remove(&key);
                }
            }
        }))))
    }

    fn push<'a>(&'a self, frontend_type: &'a str, push: protos::Push) -> BoxFuture<'a, Result<(), ClusterError>> {
        for h in self.holders(frontend_type, &push.uid) {
            h.push(push.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn kick<'a>(&'a self, frontend_type: &'a str, kick: protos::KickMsg) -> BoxFuture<'a, Result<(), ClusterError>> {
        for h in self.holders(frontend_type, &kick.user_id) {
            h.kick(kick.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn broadcast_bind<'a>(&'a self, frontend_type: &'a str, bind: protos::BindMsg) -> BoxFuture<'a, Result<(), ClusterError>> {
        let handlers: Vec<_> = self
            .state
            .read()
            .servers
            .values()
            .filter(|s| s.info.frontend && s.info.server_type == frontend_type)
            .map(|s| s.handler.clone())
            .collect();
        for h in handlers {
            h.bound(bind.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Bindings of this process.
#[derive(Debug, Default)]
pub struct MemoryBindings {
    bindings: Mutex<BTreeMap<(String, String), String>>,
}

impl Bindings for MemoryBindings {
    fn put<'a>(&'a self, frontend_type: &'a str, uid: &'a str, frontend_id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        self.bindings.lock().insert((frontend_type.to_owned(), uid.to_owned()), frontend_id.to_owned());
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, frontend_type: &'a str, uid: &'a str, frontend_id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        let mut b = self.bindings.lock();
        let key = (frontend_type.to_owned(), uid.to_owned());
        if b.get(&key).is_some_and(|f| f == frontend_id) {
            b.remove(&key);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn get<'a>(&'a self, frontend_type: &'a str, uid: &'a str) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        let found = self.bindings.lock().get(&(frontend_type.to_owned(), uid.to_owned())).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
