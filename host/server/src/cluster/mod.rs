//! The cluster: how servers find each other and talk, behind traits that in-memory backends
//! fill in embedded mode (one process, every server type) and that NATS + etcd fill across
//! machines.
//!
//! What travels is exactly Pitaya's: encoded `protos.Request` / `protos.Response` for RPCs
//! (forwarded client messages are Sys RPCs, server-to-server calls User RPCs), `protos.Push`
//! for pushes to a uid and `protos.KickMsg` for kicks, addressed by server id and frontend type.

mod memory;
pub mod messages;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::protos;

pub use memory::{MemoryDiscovery, MemoryRpc};

/// A boxed future, as the cluster traits return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A server as discovery knows it (Pitaya's etcd value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// Unique id.
    pub id: String,
    /// Server type.
    #[serde(rename = "type")]
    pub server_type: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Whether clients connect to it.
    pub frontend: bool,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
}

/// Finds servers.
pub trait Discovery: Send + Sync {
    /// Announces a server.
    fn register(&self, server: ServerInfo);
    /// Withdraws a server.
    fn deregister(&self, id: &str);
    /// The servers of a type, sorted by id.
    fn servers_of(&self, server_type: &str) -> Vec<ServerInfo>;
    /// A server by id.
    fn server(&self, id: &str) -> Option<ServerInfo>;
}

/// Why an RPC got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No answer in time.
    #[error("rpc client: request timeout")]
    Timeout,
    /// The target is not reachable.
    #[error("server {0} is not reachable")]
    Unreachable(String),
}

/// What a server does with what the cluster delivers to it.
pub trait RpcHandler: Send + Sync {
    /// Answers an encoded `protos.Request` with an encoded `protos.Response`; the caller waits
    /// `timeout` for it.
    fn request(&self, request: Bytes, timeout: Duration) -> BoxFuture<Bytes>;
    /// A push for a uid that may be bound here.
    fn push(&self, push: protos::Push);
    /// A kick for a uid that may be bound here.
    fn kick(&self, kick: protos::KickMsg);
}

/// Sends to servers.
pub trait Rpc: Send + Sync {
    /// Starts delivering to `server` (its RPC subject) and, for frontends, its users' pushes
    /// and kicks.
    fn serve(&self, server: &ServerInfo, handler: Arc<dyn RpcHandler>);
    /// Stops delivering to `id`.
    fn unserve(&self, id: &str);
    /// Sends an encoded `protos.Request` to server `id` and waits for the encoded response.
    fn call(&self, id: &str, request: Bytes, timeout: Duration) -> BoxFuture<Result<Bytes, RpcError>>;
    /// Publishes a push to the frontends of `frontend_type` holding `push.uid`.
    fn push(&self, frontend_type: &str, push: protos::Push);
    /// Publishes a kick to the frontends of `frontend_type` holding `kick.user_id`.
    fn kick(&self, frontend_type: &str, kick: protos::KickMsg);
}

/// Discovery and RPC together, with helpers shared by every server of the process.
pub struct Cluster {
    /// Finds servers.
    pub discovery: Arc<dyn Discovery>,
    /// Talks to them.
    pub rpc: Arc<dyn Rpc>,
    /// The runtime on which blocking callers (guest threads) run their calls.
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// An in-memory cluster for one process.
    pub fn memory(runtime: tokio::runtime::Handle) -> Self {
        Self { discovery: Arc::new(MemoryDiscovery::default()), rpc: Arc::new(MemoryRpc::default()), runtime }
    }

    /// [`Rpc::call`] from a thread that is not a runtime thread (a guest instance), blocking it
    /// until the answer or the timeout.
    ///
    /// # Errors
    /// As [`Rpc::call`].
    pub fn call_blocking(&self, id: &str, request: Bytes, timeout: Duration) -> Result<Bytes, RpcError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let call = self.rpc.call(id, request, timeout);
        self.runtime.spawn(async move {
            let _ = tx.send(call.await);
        });
        // The call enforces `timeout` itself; the margin only guards against a lost task. The
        // caller may be a guest running on an I/O thread: its other connections move on.
        kiwano_runtime::blocking(|| rx.recv_timeout(timeout + Duration::from_secs(1))).unwrap_or(Err(RpcError::Timeout))
    }
}
