//! A running Kiwano server: the server types of a project, their pools and acceptors, and
//! graceful shutdown.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiwano_metrics::{Metrics, families};
use kiwano_protocol::RouteDictionary;
use kiwano_protocol::handshake::HandshakeResponse;
use kiwano_runtime::{PoolConfig, Runtime, RuntimeConfig, ServerPool};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kiwano_cluster::{Cluster, MemoryGroups, ServerInfo, Serving};

use crate::admission::{Admission, Caps};
use crate::bridge::Bridge;
use crate::config::{AcceptorKind, AffinitySetting, Config};
use crate::connection::{self, Dispatch, Net};
use crate::node::Node;
use crate::reload::{Loader, ReloadError, Versions};
use crate::router::Router;
use crate::services::{ClusterBinding, Services};
use crate::session::SessionPool;
use crate::state::{ServerType, Shared};
use crate::transport::Transport;
use crate::wire::Wire;

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Wasm engine or a component.
    #[error(transparent)]
    Runtime(#[from] kiwano_runtime::RuntimeError),
    /// An acceptor could not bind.
    #[error("server type {server_type}: cannot listen on {address}: {cause}")]
    Bind {
        /// The server type.
        server_type: String,
        /// The address.
        address: String,
        /// Why (in the message, not a separate source: it would be printed twice).
        cause: std::io::Error,
    },
    /// The HTTP listener could not bind.
    #[error("the HTTP listener (app.http) cannot listen on {address}: {cause}")]
    HttpBind {
        /// The address.
        address: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The cluster could not be reached, or refused to serve or announce a server.
    #[error("server {server}: cannot join the cluster: {cause}")]
    Cluster {
        /// The server id.
        server: String,
        /// Why.
        cause: kiwano_cluster::ClusterError,
    },
    /// TLS files.
    #[error("server type {server_type}: {msg}")]
    Tls {
        /// The server type.
        server_type: String,
        /// Why.
        msg: String,
    },
}

/// One listening acceptor.
#[derive(Debug, Clone)]
pub struct BoundAcceptor {
    /// The server type it serves.
    pub server_type: String,
    /// Its transport.
    pub kind: AcceptorKind,
    /// The address it listens on.
    pub address: SocketAddr,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    acceptors: Vec<BoundAcceptor>,
    accept_loops: TaskTracker,
    shutdown_timeout: Duration,
    drain_delay: Duration,
    id: String,
    runtime: Runtime,
    /// The cluster's deliveries to this process's servers, until shutdown.
    serving: Vec<Serving>,
    http: Option<SocketAddr>,
}

impl Server {
    /// Loads the components named by `config` (relative to `project`), starts their pools and
    /// listens on every acceptor; records no metrics (see [`Server::start_with`]).
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(config: Config, project: &Path) -> Result<Self, StartError> {
        Self::start_with(config, project, Metrics::disabled()).await
    }

    /// [`Server::start`], recording into `metrics`, which the HTTP listener serves at
    /// `/metrics` (the binary makes it from `[metrics]` and [`Config::metric_labels`]).
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start_with(config: Config, project: &Path, metrics: Metrics) -> Result<Self, StartError> {
        let id = if config.app.id.is_empty() {
            let first = config.servers.keys().next().cloned().unwrap_or_default();
            format!("{first}-{:08x}", std::collections::hash_map::RandomState::new().build_hasher().finish() as u32)
        } else {
            config.app.id.clone()
        };
        let cache_dir = (!config.runtime.cache_dir.is_empty()).then(|| Config::resolve(project, &config.runtime.cache_dir));
        let runtime = Runtime::new(RuntimeConfig {
            max_instances: config.runtime.max_instances,
            max_memory: config.runtime.max_memory,
            cache_dir,
            max_wasm_stack: config.runtime.max_wasm_stack,
            metrics: metrics.clone(),
        })?;
        let sessions = Arc::new(SessionPool::with_metrics(&metrics));
        // Waits for NATS and etcd (logging each attempt) when the config names them.
        let cluster = Cluster::connect(&config.cluster.settings(config.groups.store))
            .await
            .map_err(|cause| StartError::Cluster { server: id.clone(), cause })?;
        let cluster = Arc::new(cluster);
        let bridge = Bridge::new(tokio::runtime::Handle::current());
        let suffix = id.rsplit('-').next().unwrap_or_default().to_owned();
        let server_id = |name: &str, configured: &str| if configured.is_empty() { format!("{name}-{suffix}") } else { configured.to_owned() };
        let services = Arc::new(Services {
            sessions: sessions.clone(),
            cluster: cluster.clone(),
            bridge: bridge.clone(),
            local: config.servers.iter().map(|(name, st)| server_id(name, &st.id)).collect(),
            timeout: config.cluster.request_timeout,
            next: std::sync::atomic::AtomicUsize::new(0),
            metrics: metrics.clone(),
        });
        let hostname = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let mut types = HashMap::new();
        for (name, st) in &config.servers {
            let path = Config::resolve(project, &st.component);
            let server_id = server_id(name, &st.id);
            let pool_config = PoolConfig {
                server_type: name.clone(),
                server_id: server_id.clone(),
                instances: st.instances,
                call_timeout: st.call_timeout,
                // A connection waits while its own call runs on its thread: only where that
                // cannot cost it a heartbeat (its client gives up after two missed ones).
                inline_calls: st.call_timeout < config.protocol.heartbeat_interval,
                memory_limit: st.memory_limit,
                max_response: st.max_response,
                config_json: serde_json::to_string(&st.config).unwrap_or_else(|_| "{}".into()),
                max_timers: st.max_timers,
                log_rate: st.log_rate,
                call_limits: kiwano_runtime::CallLimits {
                    pushes: st.max_pushes_per_call,
                    rpcs: st.max_rpcs_per_call,
                    group_ops: st.max_group_ops_per_call,
                    timers: st.max_timers_per_call,
                    log_lines: st.max_log_lines_per_call,
                    log_bytes: st.max_log_bytes_per_call,
                },
                remotes: false,
                untrusted: st.untrusted,
                metrics: metrics.clone(),
                max_metric_series: st.max_metric_series,
                component_version: 1,
            };
            let fixed_affinity = match st.parsed_affinity() {
                Ok(AffinitySetting::Fixed(a)) => Some(a),
                _ => None,
            };
            let loader = Loader {
                path,
                runtime: runtime.clone(),
                pool_config,
                remote_instances: st.remote_instances,
                services: services.clone(),
                fixed_affinity,
            };
            // Compiling a component is CPU work: keep it off the I/O threads.
            let (first, loader) = tokio::task::spawn_blocking(move || loader.load(1).map(|v| (v, loader)))
                .await
                .map_err(|e| kiwano_runtime::RuntimeError::Instance { server_type: name.clone(), msg: e.to_string() })??;
            tracing::info!(
                server_type = %name,
                instances = first.pool.instances(),
                handlers = first.pool.description().handlers.len(),
                affinity = ?first.affinity,
                "server type ready"
            );
            let versions = Arc::new(Versions::new(first, loader));
            let info = ServerInfo {
                id: server_id.clone(),
                server_type: name.clone(),
                metadata: Default::default(),
                frontend: st.frontend,
                hostname: hostname.clone(),
            };
            let server_type = ServerType { name: name.clone(), id: server_id, versions, frontend: st.frontend, info };
            types.insert(name.clone(), Arc::new(server_type));
        }
        let p = &config.protocol;
        // Validated with the rest of the config.
        let dictionary = RouteDictionary::new(p.dictionary.iter().map(|(k, v)| (k, *v))).unwrap_or_default();
        let handshake = HandshakeResponse::new(&dictionary, p.heartbeat_interval, p.serializer, p.compression);
        let wire = Arc::new(Wire {
            dictionary,
            compress: p.compression,
            compress_min: p.compression_min_size,
            serializer: p.serializer,
            max_body: p.max_body,
        });
        let net = Arc::new(Net {
            wire,
            handshake,
            heartbeat: p.heartbeat_interval,
            handshake_timeout: p.handshake_timeout,
            max_handshake: p.max_handshake.min(p.max_body),
            session: config.session.clone(),
            sessions: sessions.clone(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            faults: Arc::default(),
            metrics: metrics.clone(),
            inbound_capacity: metrics.series(&families::CHANNEL_CAPACITY, &["handler_chlocalprocess"]),
        });
        // The series without labels exist from the start, at zero (Kiwano pauses reading a
        // client that sends too fast rather than drop its messages: the rate-limit counter
        // stays at zero).
        metrics.add(&families::CONNECTED_CLIENTS, &[], 0.0);
        metrics.add(&families::EXCEEDED_RATE_LIMITING, &[], 0.0);
        for (name, st) in &config.servers {
            if st.frontend {
                metrics.add(&families::SESSIONS, &[name], 0.0);
            }
        }
        sessions.set_hooks(Arc::new(ClusterBinding {
            cluster: cluster.clone(),
            bridge: bridge.clone(),
            frontends: types.values().filter(|t: &&Arc<ServerType>| t.frontend).map(|t| (t.name.clone(), t.info.clone())).collect(),
            unique_session: config.cluster.unique_session,
            timeout: config.cluster.request_timeout,
        }));
        let shared = Arc::new(Shared {
            net: net.clone(),
            types,
            cluster: cluster.clone(),
            request_timeout: config.cluster.request_timeout,
            unique_session: config.cluster.unique_session,
            bridge,
            metrics: metrics.clone(),
            health: crate::state::Health::default(),
        });
        // Join the cluster: every server type of the process is a server the others reach over
        // RPC, exactly as across machines. Served before announced: whoever finds it can reach it.
        let mut serving = Vec::new();
        for t in shared.types.values() {
            let joined = |cause| StartError::Cluster { server: t.id.clone(), cause };
            let node = Arc::new(Node { shared: Arc::downgrade(&shared), server: t.clone() });
            serving.push(cluster.rpc.serve(&t.info, node).await.map_err(joined)?);
            cluster.discovery.register(&t.info).await.map_err(joined)?;
        }
        let accept_loops = TaskTracker::new();
        let mut http = None;
        if !config.app.http.is_empty() {
            let listener = TcpListener::bind(&config.app.http)
                .await
                .map_err(|cause| StartError::HttpBind { address: config.app.http.clone(), cause })?;
            http = listener.local_addr().ok();
            let root = Config::resolve(project, &config.app.web_root);
            tracing::info!(address = ?http, root = %root.display(), "serving the web client under /web/");
            let mut router = crate::http::router(root);
            if metrics.enabled() {
                router = crate::http::with_metrics(router, Arc::new(MetricsView(shared.clone())));
            }
            router = crate::http::with_health(router, Arc::new(HealthView(shared.clone())));
            if !config.app.admin_token.is_empty() {
                router = crate::http::with_admin(router, Arc::new(AdminTypes(shared.clone())), config.app.admin_token.clone());
            }
            accept_loops.spawn(crate::http::serve_http(listener, router, net.shutdown.clone()));
        }
        if let Some(groups) = cluster.memory_groups() {
            accept_loops.spawn(sweep_groups(groups.clone(), config.groups.sweep_interval, net.shutdown.clone()));
        }
        let faults = net.clone();
        accept_loops.spawn(async move { faults.faults.run(faults.shutdown.clone()).await });
        let mut acceptors = Vec::new();
        for (name, st) in &config.servers {
            let caps = Caps {
                connections: st.max_connections,
                per_address: st.max_connections_per_address,
                handshaking: st.max_handshaking,
            };
            // One count per frontend, over all of its acceptors.
            let admission = Admission::new(caps);
            for a in &st.acceptors {
                let tls = match a.kind {
                    AcceptorKind::Tls | AcceptorKind::Wss => Some(
                        crate::tls::acceptor(&Config::resolve(project, &a.cert), &Config::resolve(project, &a.key))
                            .map_err(|msg| StartError::Tls { server_type: name.clone(), msg })?,
                    ),
                    _ => None,
                };
                let bind_error = |cause| StartError::Bind { server_type: name.clone(), address: a.address.clone(), cause };
                let listener = TcpListener::bind(&a.address).await.map_err(bind_error)?;
                let address = listener.local_addr().map_err(bind_error)?;
                tracing::info!(server_type = %name, kind = ?a.kind, %address, "listening");
                acceptors.push(BoundAcceptor { server_type: name.clone(), kind: a.kind, address });
                let frontend: Arc<str> = name.as_str().into();
                let router: Arc<dyn Dispatch> = Arc::new(Router { shared: shared.clone(), frontend: frontend.clone() });
                let acceptor = Acceptor { frontend, router, kind: a.kind, tls, admission: admission.clone() };
                accept_loops.spawn(accept_loop(net.clone(), listener, acceptor));
            }
        }
        shared.health.accepting.store(true, std::sync::atomic::Ordering::Release);
        Ok(Self { shared, acceptors, accept_loops, shutdown_timeout: config.app.shutdown_timeout, drain_delay: config.app.drain_delay, id, runtime, serving, http })
    }

    /// The Wasm runtime (its counters show compilations and cache hits).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// This process's id (the suffix of its servers' ids).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address of the HTTP listener, if configured.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The ids of this process's servers, by type.
    pub fn server_ids(&self) -> BTreeMap<String, String> {
        self.shared.types.iter().map(|(name, t)| (name.clone(), t.id.clone())).collect()
    }

    /// The id of this process's server of `server_type`.
    pub fn server_id(&self, server_type: &str) -> Option<&str> {
        self.shared.types.get(server_type).map(|t| t.id.as_str())
    }

    /// Discovery, RPC, groups and bindings of this process.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.shared.cluster
    }

    /// The listening acceptors, with their bound addresses.
    pub fn acceptors(&self) -> &[BoundAcceptor] {
        &self.acceptors
    }

    /// The address of the first acceptor of `kind` for `server_type`.
    pub fn address(&self, server_type: &str, kind: AcceptorKind) -> Option<SocketAddr> {
        self.acceptors.iter().find(|a| a.server_type == server_type && a.kind == kind).map(|a| a.address)
    }

    /// The sessions of this server.
    pub fn sessions(&self) -> &SessionPool {
        &self.shared.net.sessions
    }

    /// The pool of a server type.
    pub fn pool(&self, server_type: &str) -> Option<Arc<ServerPool>> {
        self.shared.types.get(server_type).map(|t| t.current().pool.clone())
    }

    /// The version of `server_type`'s component serving now (1 at start, one more per hot
    /// reload).
    pub fn version(&self, server_type: &str) -> Option<u64> {
        self.shared.types.get(server_type).map(|t| t.current().number)
    }

    /// The versions of `server_type`'s component, to reload it from elsewhere (a watcher).
    pub fn versions(&self, server_type: &str) -> Option<Arc<Versions>> {
        self.shared.types.get(server_type).map(|t| t.versions.clone())
    }

    /// Loads `server_type`'s component file again and swaps it in while the server keeps
    /// serving (see [`crate::reload`]); the new version's number.
    ///
    /// # Errors
    /// [`ReloadError`]: the running version keeps serving.
    pub async fn reload(&self, server_type: &str) -> Result<u64, ReloadError> {
        let t = self.shared.types.get(server_type).ok_or_else(|| ReloadError::UnknownType(server_type.to_owned()))?;
        t.versions.reload(server_type).await
    }

    /// Stops accepting, lets connections finish their queued messages (bounded by
    /// `app.shutdown_timeout`), calls every guest's `shutdown`, and returns.
    ///
    /// The whole of it takes at most `app.shutdown_timeout`: connections and guest `shutdown`s
    /// share that one deadline. Returns whether everything finished in time; if not, calls may
    /// still be running in guests, and the caller should end the process rather than wait.
    pub async fn shutdown(self) -> bool {
        tracing::info!("shutting down");
        // Not ready any more, at once; still accepting for `drain_delay`, so that a load
        // balancer that polls `/readyz` stops sending players here before they are refused.
        self.shared.health.draining.store(true, std::sync::atomic::Ordering::Release);
        if !self.drain_delay.is_zero() {
            tracing::info!(drain_delay = ?self.drain_delay, "reporting not ready before closing the acceptors");
            tokio::time::sleep(self.drain_delay).await;
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        // Withdrawn first: no new work is routed here while connections finish.
        for t in self.shared.types.values() {
            match tokio::time::timeout_at(deadline, self.shared.cluster.discovery.deregister(&t.id)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(server = %t.id, "cannot deregister: {e}"),
                Err(_) => tracing::warn!(server = %t.id, "deregistering did not finish before the shutdown timeout"),
            }
        }
        let net = &self.shared.net;
        net.shutdown.cancel();
        // Connections stop reading, finish their queued messages and close.
        for session in net.sessions.all() {
            session.close(crate::session::CloseReason::Shutdown);
        }
        self.accept_loops.close();
        let _ = tokio::time::timeout_at(deadline, self.accept_loops.wait()).await;
        net.tracker.close();
        let mut clean = true;
        if tokio::time::timeout_at(deadline, net.tracker.wait()).await.is_err() {
            tracing::warn!(timeout = ?self.shutdown_timeout, "connections still open after the shutdown timeout");
            clean = false;
        }
        // Requests from other servers are answered until the connections are gone; the last
        // responses and publishes are sent before the pools stop.
        drop(self.serving);
        self.shared.cluster.rpc.flush(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        for t in self.shared.types.values() {
            let version = t.current();
            for pool in std::iter::once(&version.pool).chain(version.remotes.as_ref()) {
                if tokio::time::timeout_at(deadline, pool.shutdown()).await.is_err() {
                    tracing::warn!(server_type = %t.name, "guest shutdown did not finish before the shutdown timeout");
                    clean = false;
                }
            }
        }
        tracing::info!("stopped");
        clean
    }
}

/// What `/metrics` serves: the metrics recorded, with the gauges read from the process's state
/// (servers discovered, instances, component versions) brought up to date first.
struct MetricsView(Arc<Shared>);

impl crate::http::MetricsSource for MetricsView {
    fn render(&self) -> Option<(&'static str, String)> {
        let shared = &self.0;
        let m = &shared.metrics;
        for (t, n) in shared.cluster.server_counts() {
            m.set(&families::COUNT_SERVERS, &[&t], n as f64);
        }
        let (mut total, mut busy, mut remote_total, mut remote_busy) = (0, 0, 0, 0);
        for t in shared.types.values() {
            let v = t.current();
            m.set(&families::VERSION, &[&t.name], v.number as f64);
            total += v.pool.instances();
            busy += v.pool.busy();
            if let Some(r) = &v.remotes {
                remote_total += r.instances();
                remote_busy += r.busy();
            }
        }
        if let Some(up) = shared.cluster.rpc.connected() {
            m.set(&families::NATS_CONNECTED, &[], f64::from(u8::from(up)));
        }
        m.set(&families::RPC_DROPPED, &[], shared.cluster.rpc.dropped() as f64);
        if let Some(up) = shared.cluster.discovery.connected() {
            m.set(&families::ETCD_CONNECTED, &[], f64::from(u8::from(up)));
        }
        m.set(&families::WORKERS_TOTAL, &["handler_dispatch"], total as f64);
        m.set(&families::WORKERS_BUSY, &["handler_dispatch"], busy as f64);
        m.set(&families::WORKERS_TOTAL, &["rpc_server_remote"], remote_total as f64);
        m.set(&families::WORKERS_BUSY, &["rpc_server_remote"], remote_busy as f64);
        m.render()
    }
}

/// What `/readyz` reports.
struct HealthView(Arc<Shared>);

impl crate::http::HealthSource for HealthView {
    fn not_ready(&self) -> Option<String> {
        use std::sync::atomic::Ordering;
        let shared = &self.0;
        if shared.health.draining.load(Ordering::Acquire) {
            return Some("draining: shutting down".into());
        }
        if !shared.health.accepting.load(Ordering::Acquire) {
            return Some("starting: the acceptors are not listening yet".into());
        }
        if shared.cluster.rpc.connected() == Some(false) {
            return Some("not connected to NATS".into());
        }
        for t in shared.types.values() {
            if shared.cluster.server(&t.id).is_none() {
                return Some(format!("{} is not registered in discovery", t.id));
            }
        }
        None
    }
}

/// The admin endpoints' view of the server types.
struct AdminTypes(Arc<Shared>);

impl crate::http::Admin for AdminTypes {
    fn versions(&self) -> BTreeMap<String, u64> {
        self.0.types.iter().map(|(name, t)| (name.clone(), t.current().number)).collect()
    }

    fn reload(&self, server_type: String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, (axum::http::StatusCode, String)>> + Send>> {
        use axum::http::StatusCode;
        let shared = self.0.clone();
        Box::pin(async move {
            let t = shared.types.get(&server_type).ok_or_else(|| (StatusCode::NOT_FOUND, ReloadError::UnknownType(server_type.clone()).to_string()))?;
            t.versions.reload(&server_type).await.map_err(|e| {
                let status = match e {
                    ReloadError::Busy(_) => StatusCode::CONFLICT,
                    ReloadError::UnknownType(_) => StatusCode::NOT_FOUND,
                    ReloadError::Load(_) | ReloadError::Incompatible { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                };
                (status, e.to_string())
            })
        })
    }
}

async fn sweep_groups(groups: Arc<MemoryGroups>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                for name in groups.sweep() {
                    tracing::debug!(group = %name, "group TTL expired: deleted");
                }
            }
        }
    }
}

/// What an accept loop needs to take a connection in.
#[derive(Clone)]
struct Acceptor {
    frontend: Arc<str>,
    router: Arc<dyn Dispatch>,
    kind: AcceptorKind,
    tls: Option<TlsAcceptor>,
    admission: Arc<Admission>,
}

async fn accept_loop(shared: Arc<Net>, listener: TcpListener, acceptor: Acceptor) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                // Over a cap: closed before any byte of it is read.
                Ok((stream, peer)) => match acceptor.admission.admit(peer.ip()) {
                    Ok(ticket) => {
                        shared.tracker.spawn(accept(shared.clone(), acceptor.clone(), stream, peer, ticket));
                    }
                    Err(refusal) => {
                        drop(stream);
                        shared.faults.report("connection refused", || format!("{peer} refused by {}: {refusal}", acceptor.frontend));
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(server_type = %acceptor.frontend, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn accept(shared: Arc<Net>, acceptor: Acceptor, stream: TcpStream, peer: SocketAddr, ticket: crate::admission::Ticket) {
    // The handshake deadline covers TLS and the WebSocket upgrade.
    let deadline = Instant::now() + shared.handshake_timeout;
    let _ = stream.set_nodelay(true);
    // Until the Pitaya handshake, a packet may be no larger than a handshake.
    let (first_max, max_body) = (shared.max_handshake, shared.wire.max_body);
    let max_packet = shared.session.outgoing_queue_bytes;
    let kind = acceptor.kind;
    // Boxed, and done before the connection is served: the TLS and WebSocket handshakes' state
    // (kilobytes) is freed instead of staying in every connection's task for its whole life.
    let setup = Box::pin(async {
        let io: Box<dyn crate::transport::Stream> = match (&acceptor.tls, kind) {
            (Some(tls), AcceptorKind::Tls | AcceptorKind::Wss) => {
                Box::new(tls.accept(stream).await.map_err(|e| format!("tls handshake failed: {e}"))?)
            }
            _ => Box::new(stream),
        };
        match kind {
            AcceptorKind::Tcp | AcceptorKind::Tls => Ok(Transport::stream(io, first_max)),
            AcceptorKind::Ws | AcceptorKind::Wss => Transport::websocket(io, first_max, max_body, max_packet).await,
        }
    });
    let set_up = tokio::time::timeout_at(deadline, setup).await;
    match set_up {
        Ok(Ok(transport)) => connection::run(shared, acceptor.router, acceptor.frontend, transport, peer, deadline, ticket).await,
        Ok(Err(e)) => shared.faults.report("connection setup failed", || format!("{peer}: {e}")),
        Err(_) => shared.faults.report("handshake timeout", || format!("{peer}: handshake timeout during connection setup")),
    }
}
