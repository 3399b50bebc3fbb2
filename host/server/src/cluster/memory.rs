//! In-memory discovery and RPC: every server of one process, reached without sockets but with
//! the same encoded messages as across machines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::protos;
use parking_lot::RwLock;

use super::{BoxFuture, Discovery, Rpc, RpcError, RpcHandler, ServerInfo};

/// Discovery of the servers of this process.
#[derive(Debug, Default)]
pub struct MemoryDiscovery {
    servers: RwLock<BTreeMap<String, ServerInfo>>,
}

impl Discovery for MemoryDiscovery {
    fn register(&self, server: ServerInfo) {
        self.servers.write().insert(server.id.clone(), server);
    }

    fn deregister(&self, id: &str) {
        self.servers.write().remove(id);
    }

    fn servers_of(&self, server_type: &str) -> Vec<ServerInfo> {
        self.servers.read().values().filter(|s| s.server_type == server_type).cloned().collect()
    }

    fn server(&self, id: &str) -> Option<ServerInfo> {
        self.servers.read().get(id).cloned()
    }
}

struct Served {
    info: ServerInfo,
    handler: Arc<dyn RpcHandler>,
}

/// RPC between the servers of this process: a request is handed to the target's handler as
/// bytes and its response comes back as bytes.
#[derive(Default)]
pub struct MemoryRpc {
    servers: RwLock<BTreeMap<String, Served>>,
}

impl std::fmt::Debug for MemoryRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRpc").field("servers", &self.servers.read().len()).finish()
    }
}

impl Rpc for MemoryRpc {
    fn serve(&self, server: &ServerInfo, handler: Arc<dyn RpcHandler>) {
        self.servers.write().insert(server.id.clone(), Served { info: server.clone(), handler });
    }

    fn unserve(&self, id: &str) {
        self.servers.write().remove(id);
    }

    fn call(&self, id: &str, request: Bytes, timeout: Duration) -> BoxFuture<Result<Bytes, RpcError>> {
        let handler = self.servers.read().get(id).map(|s| s.handler.clone());
        let id = id.to_owned();
        Box::pin(async move {
            let Some(handler) = handler else { return Err(RpcError::Unreachable(id)) };
            // Polled by the caller: no task per call. A caller that gives up stops waiting; the
            // guest call it started still runs to its end on its instance's thread. A guest
            // call run on this thread cannot be given up: it is run so only when it must end
            // (or trap) within `timeout`, and an answer coming later is a timeout all the same.
            let start = tokio::time::Instant::now();
            match tokio::time::timeout(timeout, handler.request(request, timeout)).await {
                Ok(_) if start.elapsed() > timeout => Err(RpcError::Timeout),
                Ok(response) => Ok(response),
                Err(_) => Err(RpcError::Timeout),
            }
        })
    }

    fn push(&self, frontend_type: &str, push: protos::Push) {
        for s in self.servers.read().values().filter(|s| s.info.frontend && s.info.server_type == frontend_type) {
            s.handler.push(push.clone());
        }
    }

    fn kick(&self, frontend_type: &str, kick: protos::KickMsg) {
        for s in self.servers.read().values().filter(|s| s.info.frontend && s.info.server_type == frontend_type) {
            s.handler.kick(kick.clone());
        }
    }
}
