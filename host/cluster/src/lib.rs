//! Kiwano's cluster: how servers find each other and talk, with Pitaya's keys, subjects and
//! envelopes (`PITAYA-PROTOCOL.md` §4–§6), behind async, fallible traits:
//!
//! - [`Discovery`]: servers announce themselves; everyone sees a snapshot of the live servers
//!   that the implementation keeps current;
//! - [`Rpc`]: request/reply between servers (encoded `protos.Request` / `protos.Response`),
//!   pushes and kicks to users by frontend type, bind broadcasts for unique sessions;
//! - [`Groups`]: named sets of uids (Pitaya's group service);
//! - [`Bindings`]: which frontend holds a uid (Pitaya's binding storage).
//!
//! Implementations live side by side: [`memory`] (one process: the embedded cluster) and, across
//! machines, NATS for RPC and etcd for discovery, groups and bindings. [`messages`] builds and
//! reads the envelopes. The crate depends on the protocol crate only: nothing here blocks a
//! thread, knows the Wasm runtime or the server, or takes a runtime handle from its caller.

pub mod etcd;
pub mod groups;
pub mod memory;
pub mod messages;
pub mod nats;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiwano_protocol::{PitayaError, protos};
use parking_lot::Mutex;

pub use groups::MemoryGroups;
pub use memory::{MemoryBindings, MemoryDiscovery, MemoryRpc};

/// A boxed future, as the cluster traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A server as discovery knows it: Pitaya's etcd value
/// (`{"id","type","metadata":{…},"frontend","hostname"}`, §6.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// Unique id (no `/`).
    pub id: String,
    /// Server type (no `/`).
    #[serde(rename = "type")]
    pub server_type: String,
    /// Free-form metadata: a JSON object of strings.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Whether clients connect to it.
    pub frontend: bool,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// No answer within the timeout (Pitaya's `PIT-408`).
    #[error("rpc client: request timeout")]
    Timeout,
    /// Nobody listens on the server's subject: the request was never delivered (NATS "no
    /// responders"); another server of the type may be tried.
    #[error("server {0} has no responders: the request was not delivered")]
    NoResponders(String),
    /// The server is not known or not reachable.
    #[error("server {0} is not reachable")]
    Unreachable(String),
    /// A Pitaya-level refusal (group and binding operations carry Pitaya's messages).
    #[error("{}: {}", .0.code, .0.msg)]
    Pitaya(PitayaError),
    /// The backend (NATS, etcd) failed or is unreachable.
    #[error("{0}")]
    Backend(String),
}

impl ClusterError {
    /// The error a client or a guest sees: a Pitaya refusal as it is, a timeout `PIT-408`,
    /// anything else `PIT-500` with the cause.
    pub fn into_pitaya(self) -> PitayaError {
        use kiwano_protocol::error::codes;
        match self {
            Self::Pitaya(e) => e,
            Self::Timeout => PitayaError::new(codes::TIMEOUT, self.to_string()),
            other => PitayaError::new(codes::INTERNAL, other.to_string()),
        }
    }
}

impl From<PitayaError> for ClusterError {
    fn from(e: PitayaError) -> Self {
        Self::Pitaya(e)
    }
}

/// One server's registration as discovery sees it: its descriptor and a generation that
/// changes whenever it registers again (a restart, a lease lost and regained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The descriptor.
    pub info: ServerInfo,
    /// Changes with every registration of the id (etcd: the key's modification revision).
    pub generation: i64,
}

/// The live servers, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Servers {
    /// Every server discovery knows of.
    pub by_id: BTreeMap<String, Registration>,
}

impl Servers {
    /// The servers of `server_type`, sorted by id.
    pub fn of_type<'a>(&'a self, server_type: &'a str) -> impl Iterator<Item = &'a Registration> + 'a {
        self.by_id.values().filter(move |r| r.info.server_type == server_type)
    }

    /// A server by id.
    pub fn get(&self, id: &str) -> Option<&ServerInfo> {
        self.by_id.get(id).map(|r| &r.info)
    }
}

/// Finds servers.
pub trait Discovery: Send + Sync {
    /// Announces `server`; it stays announced (its lease kept alive) until deregistered.
    ///
    /// # Errors
    /// The backend refused or is unreachable.
    fn register<'a>(&'a self, server: &'a ServerInfo) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// Withdraws server `id` (bounded by a timeout).
    ///
    /// # Errors
    /// The backend refused or is unreachable.
    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// The live servers as last seen (a watch keeps this current).
    fn snapshot(&self) -> Arc<Servers>;

    /// Whether the backend answered lately; `None` for in-process discovery, which has none.
    fn connected(&self) -> Option<bool> {
        None
    }
}

/// What a server does with what the cluster delivers to it.
pub trait RpcHandler: Send + Sync {
    /// Answers an encoded `protos.Request` with an encoded `protos.Response`. The caller waits
    /// for it as long as the request's `reqTimeout` says, or `timeout` when it says nothing.
    /// `None`: the bytes are not a request with a message; it is dropped unanswered, as Pitaya
    /// drops it (its caller times out).
    fn request(&self, request: Bytes, timeout: Duration) -> BoxFuture<'static, Option<Bytes>>;
    /// A push for a uid bound here.
    fn push(&self, push: protos::Push);
    /// A kick for a uid bound here.
    fn kick(&self, kick: protos::KickMsg);
    /// Another frontend of this server's type bound `bind.uid` (Pitaya's unique session).
    fn bound(&self, bind: protos::BindMsg);
}

/// Delivery that lasts as long as this handle: dropping it stops serving a server or a bound
/// uid.
pub struct Serving(#[allow(dead_code)] Box<dyn Send + Sync>);

impl Serving {
    /// A handle that runs `stop` when dropped.
    pub fn on_drop(stop: impl FnOnce() + Send + Sync + 'static) -> Self {
        struct Stop<F: FnOnce()>(Option<F>);
        impl<F: FnOnce()> Drop for Stop<F> {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f();
                }
            }
        }
        Self(Box::new(Stop(Some(stop))))
    }

    /// A handle that keeps `value` alive (a subscription that ends when dropped).
    pub fn holding(value: impl Send + Sync + 'static) -> Self {
        Self(Box::new(value))
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serving")
    }
}

/// Sends to servers and users.
pub trait Rpc: Send + Sync {
    /// Delivers RPCs to `server` (its subject `pitaya/servers/<type>/<id>`), and for a frontend
    /// the bind broadcasts of its type, to `handler` until the returned handle is dropped.
    ///
    /// # Errors
    /// The backend refused or is unreachable.
    fn serve<'a>(&'a self, server: &'a ServerInfo, handler: Arc<dyn RpcHandler>) -> BoxFuture<'a, Result<Serving, ClusterError>>;

    /// Sends an encoded `protos.Request` to `target` and waits for the encoded response.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`], [`ClusterError::NoResponders`] (never delivered), or the
    /// backend failing.
    fn call(&self, target: &ServerInfo, request: Bytes, timeout: Duration) -> BoxFuture<'static, Result<Bytes, ClusterError>>;

    /// Delivers pushes and kicks for `uid` to `server` (a frontend where it is bound) until the
    /// returned handle is dropped (`pitaya/<type>/user/<uid>/push|kick`).
    ///
    /// # Errors
    /// The backend refused or is unreachable.
    fn bind_user<'a>(&'a self, server: &'a ServerInfo, uid: &'a str) -> BoxFuture<'a, Result<Serving, ClusterError>>;

    /// Whether the connection to the transport is up; `None` for an in-process transport,
    /// which has none.
    fn connected(&self) -> Option<bool> {
        None
    }

    /// Messages for this process the transport dropped since start (NATS: a subscription's
    /// queue full, a slow consumer); 0 for an in-process transport, which drops none.
    fn dropped(&self) -> u64 {
        0
    }

    /// Sends whatever is still buffered, within `timeout`: the last responses and publishes of
    /// a server that stops.
    fn flush<'a>(&'a self, timeout: Duration) -> BoxFuture<'a, ()> {
        let _ = timeout;
        Box::pin(std::future::ready(()))
    }

    /// Publishes a push to the frontend of `frontend_type` holding `push.uid`.
    ///
    /// # Errors
    /// The backend failing (a uid bound nowhere is not an error: the push is lost, as in Pitaya).
    fn push<'a>(&'a self, frontend_type: &'a str, push: protos::Push) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// Publishes a kick to the frontend of `frontend_type` holding `kick.user_id`.
    ///
    /// # Errors
    /// The backend failing.
    fn kick<'a>(&'a self, frontend_type: &'a str, kick: protos::KickMsg) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// Tells every frontend of `frontend_type` that `bind.uid` is now bound at `bind.fid`
    /// (`pitaya/<type>/bindings`).
    ///
    /// # Errors
    /// The backend failing.
    fn broadcast_bind<'a>(&'a self, frontend_type: &'a str, bind: protos::BindMsg) -> BoxFuture<'a, Result<(), ClusterError>>;
}

/// Where groups or bindings are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// In this process (Pitaya's memory group service; no binding storage).
    #[default]
    Memory,
    /// On etcd, shared by the cluster (Pitaya's etcd group service and binding storage).
    Etcd,
}

/// How to reach the cluster: nothing (the embedded cluster of one process), or NATS and etcd.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// RPC on NATS; `None`: in memory.
    pub nats: Option<nats::NatsSettings>,
    /// Discovery on etcd; required with NATS.
    pub etcd: Option<etcd::EtcdSettings>,
    /// Where groups are kept.
    pub groups: Store,
    /// Where bindings are kept.
    pub bindings: Store,
}

/// Named groups of uids (Pitaya's group service, §5). Errors carry Pitaya's codes and messages
/// (`group already exists`, `group not found`, `member already exists in group`, `member not
/// found in the group`, `memory group TTL not found`, `empty uid`).
pub trait Groups: Send + Sync {
    /// Creates a group, deleted once it has not been renewed for `ttl` if given.
    ///
    /// # Errors
    /// `group already exists`.
    fn create<'a>(&'a self, name: &'a str, ttl: Option<Duration>) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Deletes a group.
    ///
    /// # Errors
    /// `group not found`.
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Adds a member.
    ///
    /// # Errors
    /// `empty uid`, `group not found`, `member already exists in group`.
    fn add<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Removes a member.
    ///
    /// # Errors
    /// `empty uid`, `group not found`, `member not found in the group`.
    fn remove<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Removes every member.
    ///
    /// # Errors
    /// `group not found`.
    fn remove_all<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Whether `uid` is a member.
    ///
    /// # Errors
    /// `empty uid`, `group not found`.
    fn contains<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<bool, ClusterError>>;
    /// The members (in the order they were added, for memory groups; sorted for etcd).
    ///
    /// # Errors
    /// `group not found`.
    fn members<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, ClusterError>>;
    /// The number of members.
    ///
    /// # Errors
    /// `group not found`.
    fn count<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<u32, ClusterError>>;
    /// Restarts the TTL.
    ///
    /// # Errors
    /// `group not found`, a group without TTL.
    fn renew<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
}

/// Which frontend holds a uid (Pitaya's binding storage, §4.3: `bindings/<frontendType>/<uid>`).
pub trait Bindings: Send + Sync {
    /// Records that `uid` is bound at frontend `frontend_id` of `frontend_type`.
    ///
    /// # Errors
    /// The backend failing.
    fn put<'a>(&'a self, frontend_type: &'a str, uid: &'a str, frontend_id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Forgets the binding of `uid`, if it still names `frontend_id`.
    ///
    /// # Errors
    /// The backend failing.
    fn remove<'a>(&'a self, frontend_type: &'a str, uid: &'a str, frontend_id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// The frontend holding `uid`, if any.
    ///
    /// # Errors
    /// The backend failing.
    fn get<'a>(&'a self, frontend_type: &'a str, uid: &'a str) -> BoxFuture<'a, Result<Option<String>, ClusterError>>;
}

/// Discovery, RPC, groups and bindings together, and the servers that stopped answering.
pub struct Cluster {
    /// Finds servers.
    pub discovery: Arc<dyn Discovery>,
    /// Talks to them.
    pub rpc: Arc<dyn Rpc>,
    /// Groups.
    pub groups: Arc<dyn Groups>,
    /// Binding storage.
    pub bindings: Arc<dyn Bindings>,
    /// Servers that answered "no responders", by id: left out of routing for a while.
    silent: Mutex<BTreeMap<String, Silence>>,
    /// The groups when they are kept in memory: someone has to sweep them.
    memory_groups: Option<Arc<MemoryGroups>>,
}

/// How long a server that answered "no responders" is first left out of routing.
const SILENCE_FIRST: Duration = Duration::from_secs(1);
/// The longest it is left out at once.
const SILENCE_MAX: Duration = Duration::from_secs(30);

/// A server left out of routing: its discovery generation when it went silent, until when,
/// and for how long this time.
#[derive(Debug, Clone, Copy)]
struct Silence {
    generation: i64,
    until: Instant,
    window: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster of these parts.
    pub fn new(discovery: Arc<dyn Discovery>, rpc: Arc<dyn Rpc>, groups: Arc<dyn Groups>, bindings: Arc<dyn Bindings>) -> Self {
        Self { discovery, rpc, groups, bindings, silent: Mutex::new(BTreeMap::new()), memory_groups: None }
    }

    /// The embedded cluster of one process: everything in memory.
    pub fn memory() -> Self {
        let groups = Arc::new(MemoryGroups::default());
        Self {
            memory_groups: Some(groups.clone()),
            ..Self::new(Arc::new(MemoryDiscovery::default()), Arc::new(MemoryRpc::default()), groups, Arc::new(MemoryBindings::default()))
        }
    }

    /// Connects to the cluster `settings` names: NATS and etcd, each waited for (with a
    /// logged backoff) until it answers; or, with neither, the embedded cluster.
    ///
    /// # Errors
    /// Settings that do not go together (NATS without etcd, groups or bindings on etcd
    /// without etcd), or etcd failing the first read of the servers.
    pub async fn connect(settings: &Settings) -> Result<Self, ClusterError> {
        let (nats, etcd) = match (&settings.nats, &settings.etcd) {
            (None, None) => {
                if settings.groups == Store::Etcd || settings.bindings == Store::Etcd {
                    return Err(ClusterError::Backend("groups or bindings on etcd need etcd endpoints".into()));
                }
                return Ok(Self::memory());
            }
            (Some(nats), Some(etcd)) => (nats, etcd),
            (None, Some(_)) => return Err(ClusterError::Backend("discovery on etcd needs RPC on NATS: no NATS url".into())),
            (Some(_), None) => return Err(ClusterError::Backend("RPC on NATS needs discovery on etcd: no etcd endpoints".into())),
        };
        // Both at once: either may be the one still starting.
        let (rpc, client) = tokio::join!(nats::NatsRpc::connect(nats.clone()), etcd::Etcd::connect(etcd));
        let discovery = etcd::EtcdDiscovery::start(client.clone(), etcd).await?;
        let memory_groups = (settings.groups == Store::Memory).then(|| Arc::new(MemoryGroups::default()));
        let groups: Arc<dyn Groups> = match &memory_groups {
            Some(g) => g.clone(),
            None => Arc::new(etcd::EtcdGroups::new(client.clone())),
        };
        let bindings: Arc<dyn Bindings> = match settings.bindings {
            Store::Memory => Arc::new(MemoryBindings::default()),
            Store::Etcd => Arc::new(etcd::EtcdBindings::new(client, etcd.binding_lease_ttl)),
        };
        Ok(Self { memory_groups, ..Self::new(discovery, Arc::new(rpc), groups, bindings) })
    }

    /// The groups, when they are kept in this process: they need sweeping
    /// ([`MemoryGroups::sweep`]).
    pub fn memory_groups(&self) -> Option<&Arc<MemoryGroups>> {
        self.memory_groups.as_ref()
    }

    /// The live servers of `server_type` that route to (sorted by id): discovery's view without
    /// the servers that went silent lately.
    pub fn servers_of(&self, server_type: &str) -> Vec<ServerInfo> {
        let snapshot = self.discovery.snapshot();
        let now = Instant::now();
        let mut silent = self.silent.lock();
        // A silent server registered again (a new generation) is routed to again; one silent
        // long ago starts over.
        silent.retain(|id, s| snapshot.by_id.get(id).is_some_and(|r| r.generation == s.generation) && now < s.until + SILENCE_MAX);
        snapshot.of_type(server_type).filter(|r| silent.get(&r.info.id).is_none_or(|s| now >= s.until)).map(|r| r.info.clone()).collect()
    }

    /// How many servers of each type discovery knows of (silent ones included).
    pub fn server_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.discovery.snapshot().by_id.values() {
            *counts.entry(r.info.server_type.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// A live server by id.
    pub fn server(&self, id: &str) -> Option<ServerInfo> {
        self.discovery.snapshot().get(id).cloned()
    }

    /// Leaves server `id` out of routing for a while: it answered "no responders" (nobody
    /// subscribed to its subject: it died, or NATS lost it for a moment). It is left out for
    /// 1 s, then tried again; each "no responders" while on trial doubles the time, up to
    /// 30 s. Registering again (a new generation) ends it. Trying a dead server costs one NATS
    /// round trip before the call moves on, never the caller's timeout.
    pub fn mark_silent(&self, id: &str) {
        let Some(r) = self.discovery.snapshot().by_id.get(id).cloned() else { return };
        let now = Instant::now();
        let mut silent = self.silent.lock();
        let window = match silent.get(id) {
            Some(s) if s.generation == r.generation && now < s.until + SILENCE_MAX => (s.window * 2).min(SILENCE_MAX),
            _ => SILENCE_FIRST,
        };
        tracing::warn!(server = id, server_type = %r.info.server_type, ?window, "no responders: routing around the server");
        silent.insert(id.to_owned(), Silence { generation: r.generation, until: now + window, window });
    }
}
