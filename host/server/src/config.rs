//! `kiwano.toml`: the one configuration file of a project, with `KIWANO_*` environment
//! overrides.
//!
//! Every key, its default and its meaning is listed in `host/server/CONFIG.md` (a test checks that
//! table against these structs). Unknown keys are an error that names them, and so is an
//! unknown `KIWANO_*` variable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiwano_protocol::Serializer;
use serde::{Deserialize, Serialize};

/// Why a configuration was refused. The message names the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{path}: {msg}")]
    Syntax {
        /// The file.
        path: String,
        /// Parser message (with line and column).
        msg: String,
    },
    /// A key has a bad value, or is unknown.
    #[error("config key `{key}`: {msg}")]
    Key {
        /// The dotted key.
        key: String,
        /// The problem.
        msg: String,
    },
    /// An environment variable names no key.
    #[error("environment variable {0} matches no config key (see host/server/CONFIG.md)")]
    UnknownEnv(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Process-level settings.
    pub app: AppConfig,
    /// Client protocol settings.
    pub protocol: ProtocolConfig,
    /// Per-session settings.
    pub session: SessionConfig,
    /// The Wasm engine.
    pub runtime: RuntimeSection,
    /// Groups.
    pub groups: GroupsConfig,
    /// Cluster RPC.
    pub cluster: ClusterConfig,
    /// Metrics (`/metrics`).
    pub metrics: MetricsConfig,
    /// The process's log.
    pub log: LogConfig,
    /// Server types, by name.
    pub servers: BTreeMap<String, ServerTypeConfig>,
}

/// `[log]`: the process's log, on standard output (`KIWANO_LOG`, an `EnvFilter` directive such
/// as `info,kiwano_server=debug`, overrides `level`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// The least severe level written: `trace`, `debug`, `info`, `warn`, `error` or `off`.
    pub level: String,
    /// `text` (one line per record, colours only on a terminal) or `json` (one JSON object
    /// per line, with the record's fields).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per record.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[metrics]`: what `/metrics` on the HTTP listener serves (Pitaya's `pitaya.metrics.*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether metrics are recorded and served (`pitaya.metrics.prometheus.enabled`).
    pub enabled: bool,
    /// The constant label `game` (`pitaya.metrics.game`).
    pub game: String,
    /// More constant labels on every series (`pitaya.metrics.constlabels`).
    pub const_labels: BTreeMap<String, String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, game: String::new(), const_labels: BTreeMap::new() }
    }
}

/// Label names the metrics use themselves, which a constant label may not take.
const RESERVED_LABELS: &[&str] = &[
    "game", "serverType", "quantile", "le", "route", "status", "type", "code", "pool", "channel", "server_type", "reason", "why", "result",
    "frontend",
];

/// `[app]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// This server's id; empty: `<first server type>-<random hex>`.
    pub id: String,
    /// How long shutdown waits for in-flight calls before it gives up.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a server that starts shutting down reports not ready (`/readyz`) while it
    /// still accepts players, before it closes its acceptors (a lame duck).
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// `ip:port` of the HTTP listener serving `web_root` under `/web/`; empty: none.
    pub http: String,
    /// Directory of the game's web client, relative to the project.
    pub web_root: String,
    /// Bearer token of the admin endpoints of the HTTP listener (`/admin/…`: hot reload,
    /// versions); empty: no admin endpoints.
    pub admin_token: String,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            http: String::new(),
            web_root: "web".into(),
            admin_token: String::new(),
        }
    }
}

/// `[protocol]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Heartbeat period (`pitaya.heartbeat.interval`); sent in whole seconds in the handshake.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Time from TCP accept (TLS and WebSocket upgrade included) to the handshake ack.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Largest packet body accepted, checked from the header; also caps inflated payloads.
    pub max_body: usize,
    /// Largest handshake request accepted (a packet before the handshake is refused from its
    /// header when it announces more; `max_body` if smaller); the handshake is kept for the
    /// life of the session.
    pub max_handshake: usize,
    /// Compress the handshake and payloads with zlib when shorter
    /// (`pitaya.handler.messages.compression`).
    pub compression: bool,
    /// Payloads shorter than this many bytes are sent uncompressed even with `compression` on.
    pub compression_min_size: usize,
    /// `json` or `protobuf` (`pitaya.serializertype`).
    pub serializer: Serializer,
    /// Route dictionary: route → 2-byte code, shipped in the handshake.
    pub dictionary: BTreeMap<String, u16>,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            max_handshake: 16 << 10,
            compression: true,
            compression_min_size: 128,
            serializer: Serializer::Json,
            dictionary: BTreeMap::new(),
        }
    }
}

/// `[session]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Packets queued for a client before it is disconnected as too slow
    /// (`pitaya.buffer.agent.messages`).
    pub outgoing_queue: usize,
    /// Bytes queued for a client (and not yet written) before it is disconnected as too slow.
    pub outgoing_queue_bytes: usize,
    /// Deadline of one socket write (`pitaya.buffer.agent.conntimeout`); a client that does
    /// not take its bytes in time is disconnected.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Messages of one session waiting for dispatch before the server stops reading from it.
    pub inbound_queue: usize,
    /// Bytes of those messages (payloads after inflation) before the server stops reading.
    pub inbound_queue_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            outgoing_queue: 100,
            outgoing_queue_bytes: 4 << 20,
            write_timeout: Duration::from_secs(10),
            inbound_queue: 64,
            inbound_queue_bytes: 1 << 20,
        }
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Deadline of a forwarded client message or an RPC without a timeout of its own
    /// (`pitaya.cluster.rpc.client.nats.requesttimeout`); past it the caller gets `PIT-408`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Whether binding a uid on one frontend kicks its session from the other frontends of
    /// the type (`pitaya.session.unique`, Pitaya's `UniqueSession` module). Within one
    /// process a uid is always held by one session.
    pub unique_session: bool,
    /// The NATS server of the cluster's RPC (`pitaya.cluster.rpc.client.nats.connect`), as
    /// `nats://host:port`; empty: the embedded cluster of one process.
    pub nats_url: String,
    /// Deadline of one connection attempt to NATS
    /// (`pitaya.cluster.rpc.client.nats.connectiontimeout`).
    #[serde(with = "humantime_serde")]
    pub nats_connect_timeout: Duration,
    /// RPCs a server handles at once; more wait in its subscription
    /// (`pitaya.cluster.rpc.server.nats.services`).
    pub max_in_flight: usize,
    /// Messages buffered per NATS subscription before NATS drops them as a slow consumer's
    /// (`pitaya.buffer.cluster.rpc.server.nats.messages`).
    pub nats_buffer: usize,
    /// The etcd members of discovery, as `host:port` (`pitaya.cluster.sd.etcd.endpoints`);
    /// required with `nats_url`.
    pub etcd_endpoints: Vec<String>,
    /// The prefix of every etcd key (`pitaya.cluster.sd.etcd.prefix`).
    pub etcd_prefix: String,
    /// etcd user, when etcd has authentication on (`pitaya.cluster.sd.etcd.user`).
    pub etcd_user: String,
    /// etcd password (`pitaya.cluster.sd.etcd.pass`).
    pub etcd_password: String,
    /// Deadline of a connection attempt to etcd and of every etcd operation
    /// (`pitaya.cluster.sd.etcd.dialtimeout`).
    #[serde(with = "humantime_serde")]
    pub etcd_timeout: Duration,
    /// TTL of the lease of this process's server keys, kept alive at a third of it
    /// (`pitaya.cluster.sd.etcd.heartbeat.ttl`).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often every server is read again besides the watch
    /// (`pitaya.cluster.sd.etcd.syncservers.interval`).
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// Deadline of leaving etcd at shutdown (`pitaya.cluster.sd.etcd.revoke.timeout`).
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
    /// Server types discovery ignores (`pitaya.cluster.sd.etcd.servertypesblacklist`).
    pub blacklist: Vec<String>,
    /// Where bindings (which frontend holds a uid) are kept: `memory` or `etcd`
    /// (Pitaya's `ETCDBindingStorage` module).
    pub bindings: kiwano_cluster::Store,
    /// TTL of the lease of the binding keys (`pitaya.modules.bindingstorage.etcd.leasettl`).
    #[serde(with = "humantime_serde")]
    pub binding_lease_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            unique_session: true,
            nats_url: String::new(),
            nats_connect_timeout: Duration::from_secs(2),
            max_in_flight: 256,
            nats_buffer: 1024,
            etcd_endpoints: Vec::new(),
            etcd_prefix: "pitaya/".into(),
            etcd_user: String::new(),
            etcd_password: String::new(),
            etcd_timeout: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(60),
            resync_interval: Duration::from_secs(120),
            revoke_timeout: Duration::from_secs(5),
            blacklist: Vec::new(),
            bindings: kiwano_cluster::Store::Memory,
            binding_lease_ttl: Duration::from_secs(5 * 3600),
        }
    }
}

impl ClusterConfig {
    /// Whether this process joins a cluster on NATS and etcd (else: the embedded cluster).
    pub fn distributed(&self) -> bool {
        !self.nats_url.is_empty()
    }

    /// The settings of the cluster crate.
    pub fn settings(&self, groups: kiwano_cluster::Store) -> kiwano_cluster::Settings {
        use kiwano_cluster::{etcd::EtcdSettings, nats::NatsSettings};
        let nats = self.distributed().then(|| NatsSettings {
            url: self.nats_url.clone(),
            connect_timeout: self.nats_connect_timeout,
            request_timeout: self.request_timeout,
            max_in_flight: self.max_in_flight,
            subscription_capacity: self.nats_buffer,
        });
        let etcd = (!self.etcd_endpoints.is_empty()).then(|| EtcdSettings {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            credentials: (!self.etcd_user.is_empty()).then(|| (self.etcd_user.clone(), self.etcd_password.clone())),
            timeout: self.etcd_timeout,
            lease_ttl: self.lease_ttl,
            resync_interval: self.resync_interval,
            revoke_timeout: self.revoke_timeout,
            blacklist: self.blacklist.clone(),
            binding_lease_ttl: self.binding_lease_ttl,
        });
        kiwano_cluster::Settings { nats, etcd, groups, bindings: self.bindings }
    }
}

/// `[groups]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// Where groups are kept: `memory` (this process's own, Pitaya's default) or `etcd`
    /// (shared by the cluster, under `cluster.etcd_prefix`).
    pub store: kiwano_cluster::Store,
    /// How often groups whose TTL passed are deleted (`pitaya.groups.memory.tickduration`).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self { store: kiwano_cluster::Store::Memory, sweep_interval: Duration::from_secs(30) }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Component instances the engine's pool holds, over all server types.
    pub max_instances: u32,
    /// Largest linear memory of any instance, in bytes (backstop for `memory_limit`).
    pub max_memory: usize,
    /// Compiled-component cache, relative to the project; empty: no cache.
    pub cache_dir: String,
    /// Native stack wasm code may use in one call, in bytes; deeper recursion traps.
    pub max_wasm_stack: usize,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self { max_instances: 128, max_memory: 1 << 30, cache_dir: ".kiwano/cache".into(), max_wasm_stack: 512 << 10 }
    }
}

/// `[servers.<type>]`: one server type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTypeConfig {
    /// This process's server id for the type; empty: `<type>-<process id suffix>`.
    pub id: String,
    /// Whether clients connect to this type (it then needs acceptors).
    pub frontend: bool,
    /// The component, relative to the project directory.
    pub component: String,
    /// Shell command that builds the component, run in the project directory when `sources`
    /// changed or the component is missing; empty: never build.
    pub build: String,
    /// Files and directories whose changes trigger `build`, relative to the project.
    pub sources: Vec<String>,
    /// Warm instances of the component.
    pub instances: usize,
    /// Instances serving remotes (RPC), apart from handlers; unused without remotes.
    pub remote_instances: usize,
    /// `session`, `uid`, `none` or `data:<field>`; empty: the guest's choice, else `session`.
    pub affinity: String,
    /// Deadline of one guest call.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// Largest response a handler may return, in bytes; also the largest error (code, message
    /// and metadata together).
    pub max_response: usize,
    /// Live timers one instance may hold.
    pub max_timers: usize,
    /// Log records and stdout/stderr lines one instance may emit per second (bursts of up to a
    /// second's worth); the rest are dropped and counted.
    pub log_rate: u32,
    /// Pushes and kicks one call may make (one per session or uid reached).
    pub max_pushes_per_call: u32,
    /// RPCs one call may make.
    pub max_rpcs_per_call: u32,
    /// Group operations (broadcasts included) one call may make.
    pub max_group_ops_per_call: u32,
    /// Timers one call may set.
    pub max_timers_per_call: u32,
    /// Log records and stdout/stderr lines one call may emit.
    pub max_log_lines_per_call: u32,
    /// Bytes of those.
    pub max_log_bytes_per_call: u64,
    /// Untrusted mode: every call runs on a fresh instance, and its host effects (session
    /// data, group changes, pushes, kicks) are applied only when it returns, discarded when it
    /// traps or runs out of time or memory.
    pub untrusted: bool,
    /// Series the guest's own metrics (the WIT `metrics` interface) may hold, over all its
    /// metrics: distinct label values; past it a new series is refused with `PIT-500`. 0: none.
    pub max_metric_series: usize,
    /// Free-form table given to the guest's `init` as JSON.
    pub config: toml::Table,
    /// Where clients connect.
    pub acceptors: Vec<AcceptorConfig>,
    /// Connections a frontend holds at once; more are closed at accept.
    pub max_connections: usize,
    /// Connections from one IP address a frontend holds at once.
    pub max_connections_per_address: usize,
    /// Connections that have not finished the Pitaya handshake (TLS and WebSocket upgrade
    /// included) a frontend holds at once.
    pub max_handshaking: usize,
}

impl Default for ServerTypeConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            frontend: false,
            component: String::new(),
            build: String::new(),
            sources: Vec::new(),
            instances: 2,
            remote_instances: 1,
            affinity: String::new(),
            call_timeout: Duration::from_secs(5),
            memory_limit: 64 << 20,
            max_response: 1 << 20,
            max_timers: 1024,
            log_rate: 100,
            max_pushes_per_call: 10_000,
            max_rpcs_per_call: 100,
            max_group_ops_per_call: 1000,
            max_timers_per_call: 100,
            max_log_lines_per_call: 1000,
            max_log_bytes_per_call: 1 << 20,
            untrusted: false,
            max_metric_series: 1000,
            config: toml::Table::new(),
            acceptors: Vec::new(),
            max_connections: 100_000,
            max_connections_per_address: 1024,
            max_handshaking: 4096,
        }
    }
}

/// Transport of an acceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptorKind {
    /// Plain TCP.
    #[default]
    Tcp,
    /// TCP with TLS.
    Tls,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

/// As in config and on `--listen`: `tcp`, `tls`, `ws`, `wss`.
impl std::fmt::Display for AcceptorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        })
    }
}

impl std::str::FromStr for AcceptorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "tls" => Ok(Self::Tls),
            "ws" => Ok(Self::Ws),
            "wss" => Ok(Self::Wss),
            other => Err(format!("unknown acceptor kind {other:?}: want tcp, tls, ws or wss")),
        }
    }
}

/// `[[servers.<type>.acceptors]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcceptorConfig {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub kind: AcceptorKind,
    /// `ip:port` to listen on (port 0: any free port).
    pub address: String,
    /// PEM certificate chain (tls, wss), relative to the project.
    pub cert: String,
    /// PEM private key (tls, wss), relative to the project.
    pub key: String,
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        Self { kind: AcceptorKind::Tcp, address: "0.0.0.0:3250".into(), cert: String::new(), key: String::new() }
    }
}

/// Environment variables that are not config keys but are read by the binary.
pub const NON_KEY_ENV: &[&str] = &["KIWANO_LOG"];

impl Config {
    /// Reads `path`, applies `KIWANO_*` overrides from `env`, and validates.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Keeps only server type `server_type`: one server per process, as Pitaya runs them. Its
    /// id becomes `id`, or a random UUID (Pitaya's default); `listen`, when not empty, replaces
    /// its acceptors (a TLS or WSS one takes its certificate and key from the type's first
    /// configured acceptor of that kind).
    ///
    /// # Errors
    /// An unknown type; `listen` on a backend; a TLS or WSS address without a configured
    /// certificate; the result not validating.
    pub fn single_server(&mut self, server_type: &str, id: Option<String>, listen: &[(AcceptorKind, String)]) -> Result<(), ConfigError> {
        let key = format!("servers.{server_type}");
        let Some(mut st) = self.servers.remove(server_type) else {
            let known: Vec<&String> = self.servers.keys().collect();
            return Err(ConfigError::Key { key, msg: format!("no such server type; the project has {known:?}") });
        };
        st.id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !listen.is_empty() {
            if !st.frontend {
                return Err(ConfigError::Key { key: format!("{key}.acceptors"), msg: "--listen on a backend server type".into() });
            }
            let mut acceptors = Vec::with_capacity(listen.len());
            for (kind, address) in listen {
                let mut a = AcceptorConfig { kind: *kind, address: address.clone(), ..AcceptorConfig::default() };
                if matches!(kind, AcceptorKind::Tls | AcceptorKind::Wss) {
                    let Some(configured) = st.acceptors.iter().find(|c| c.kind == *kind) else {
                        return Err(ConfigError::Key {
                            key: format!("{key}.acceptors"),
                            msg: format!("--listen {kind:?}: no configured {kind:?} acceptor to take the certificate and key from"),
                        });
                    };
                    a.cert.clone_from(&configured.cert);
                    a.key.clone_from(&configured.key);
                }
                acceptors.push(a);
            }
            st.acceptors = acceptors;
        }
        self.servers.clear();
        self.servers.insert(server_type.to_owned(), st);
        self.validate()
    }

    /// Parses TOML text (named `origin` in errors), applies overrides from `env`, and validates.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: origin.to_owned(), msg: e.to_string() })?;
        apply_env(&mut table, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let msg = e.into_inner().to_string();
            let msg = msg.lines().next().unwrap_or_default().to_owned();
            ConfigError::Key { key, msg }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The constant labels of every metric: `game`, `serverType` (the process's server type;
    /// the first frontend's, or the first type's, when it hosts several) and
    /// `metrics.const_labels`.
    pub fn metric_labels(&self) -> std::collections::HashMap<String, String> {
        let server_type = self
            .servers
            .iter()
            .find(|(_, st)| st.frontend)
            .or_else(|| self.servers.iter().next())
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
        let mut labels: std::collections::HashMap<String, String> = self.metrics.const_labels.clone().into_iter().collect();
        labels.insert("game".into(), self.metrics.game.clone());
        labels.insert("serverType".into(), server_type);
        labels
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: String, msg: &str| Err(ConfigError::Key { key, msg: msg.to_owned() });
        if !["trace", "debug", "info", "warn", "error", "off"].contains(&self.log.level.as_str()) {
            return bad("log.level".into(), "must be trace, debug, info, warn, error or off (KIWANO_LOG takes a full directive)");
        }
        for name in self.metrics.const_labels.keys() {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            if !valid {
                return bad(format!("metrics.const_labels.{name}"), "a label name is letters, digits and `_`, not starting with a digit or `__`");
            }
            if RESERVED_LABELS.contains(&name.as_str()) {
                return bad(format!("metrics.const_labels.{name}"), "this label is Kiwano's own");
            }
        }
        if self.protocol.heartbeat_interval < Duration::from_secs(1) {
            return bad("protocol.heartbeat_interval".into(), "must be at least 1s (it is sent in whole seconds)");
        }
        if self.protocol.max_body == 0 || self.protocol.max_body > kiwano_protocol::MAX_WIRE_BODY {
            return bad("protocol.max_body".into(), "must be between 1 and 16777215");
        }
        if self.session.outgoing_queue == 0 {
            return bad("session.outgoing_queue".into(), "must be at least 1");
        }
        if self.session.inbound_queue == 0 {
            return bad("session.inbound_queue".into(), "must be at least 1");
        }
        if self.session.inbound_queue_bytes == 0 {
            return bad("session.inbound_queue_bytes".into(), "must be at least 1");
        }
        if self.protocol.max_handshake < 64 {
            return bad("protocol.max_handshake".into(), "must be at least 64");
        }
        if !self.app.http.is_empty() && self.app.http.parse::<SocketAddr>().is_err() {
            return bad("app.http".into(), &format!("{:?} is not an ip:port address", self.app.http));
        }
        if self.servers.is_empty() {
            return bad("servers".into(), "no server type is configured");
        }
        if kiwano_protocol::RouteDictionary::new(self.protocol.dictionary.iter().map(|(k, v)| (k, *v))).is_err() {
            return bad("protocol.dictionary".into(), "two routes share a code, or a route is empty");
        }
        let c = &self.cluster;
        let has_etcd = !c.etcd_endpoints.is_empty();
        if c.distributed() != has_etcd {
            return if c.distributed() {
                bad("cluster.etcd_endpoints".into(), "required with `cluster.nats_url`: discovery runs on etcd")
            } else {
                bad("cluster.nats_url".into(), "required with `cluster.etcd_endpoints`: RPC runs on NATS")
            };
        }
        if c.distributed() && !c.nats_url.contains("://") {
            return bad("cluster.nats_url".into(), &format!("{:?} is not a URL like nats://127.0.0.1:4222", c.nats_url));
        }
        if c.etcd_endpoints.iter().any(|e| e.trim().is_empty()) {
            return bad("cluster.etcd_endpoints".into(), "an endpoint is empty");
        }
        for (key, store) in [("groups.store", self.groups.store), ("cluster.bindings", c.bindings)] {
            if store == kiwano_cluster::Store::Etcd && c.etcd_endpoints.is_empty() {
                return bad(key.into(), "`etcd` needs `cluster.etcd_endpoints`");
            }
        }
        if c.lease_ttl < Duration::from_secs(2) || c.binding_lease_ttl < Duration::from_secs(2) {
            let key = if c.lease_ttl < Duration::from_secs(2) { "cluster.lease_ttl" } else { "cluster.binding_lease_ttl" };
            return bad(key.into(), "must be at least 2s (etcd leases count whole seconds)");
        }
        for (key, d) in [
            ("cluster.request_timeout", c.request_timeout),
            ("cluster.nats_connect_timeout", c.nats_connect_timeout),
            ("cluster.etcd_timeout", c.etcd_timeout),
            ("cluster.resync_interval", c.resync_interval),
            ("cluster.revoke_timeout", c.revoke_timeout),
        ] {
            if d.is_zero() {
                return bad(key.into(), "must be more than 0");
            }
        }
        if c.max_in_flight == 0 || c.nats_buffer == 0 {
            return bad(if c.max_in_flight == 0 { "cluster.max_in_flight" } else { "cluster.nats_buffer" }.into(), "must be at least 1");
        }
        if self.app.id.contains('/') {
            return bad("app.id".into(), "a server id cannot hold '/' (it is part of etcd keys and NATS subjects)");
        }
        for (name, s) in &self.servers {
            let key = |k: &str| format!("servers.{name}.{k}");
            if s.id.contains('/') {
                return bad(key("id"), "a server id cannot hold '/' (it is part of etcd keys and NATS subjects)");
            }
            if name.is_empty() || name.contains(['.', '/']) {
                return bad(format!("servers.{name}"), "a server type name must be non-empty, without '.' or '/'");
            }
            if s.component.is_empty() {
                return bad(key("component"), "missing: the path of the component");
            }
            if s.instances == 0 {
                return bad(key("instances"), "must be at least 1");
            }
            if s.remote_instances == 0 {
                return bad(key("remote_instances"), "must be at least 1");
            }
            if self.runtime.max_wasm_stack < 64 << 10 {
                return bad("runtime.max_wasm_stack".into(), "must be at least 65536 bytes");
            }
            if s.call_timeout.is_zero() {
                return bad(key("call_timeout"), "must be more than 0");
            }
            if s.memory_limit > self.runtime.max_memory {
                return bad(
                    key("memory_limit"),
                    &format!("{} bytes is more than `runtime.max_memory` ({} bytes)", s.memory_limit, self.runtime.max_memory),
                );
            }
            // Room for the response's packet header, flag, id and route around the body.
            if s.max_response.saturating_add(1024) > self.session.outgoing_queue_bytes {
                return bad(
                    key("max_response"),
                    &format!(
                        "a response of {} bytes would not fit `session.outgoing_queue_bytes` ({} bytes, which must exceed it by 1024)",
                        s.max_response, self.session.outgoing_queue_bytes
                    ),
                );
            }
            for (k, v) in [
                ("max_timers", s.max_timers),
                ("log_rate", s.log_rate as usize),
                ("max_connections", s.max_connections),
                ("max_connections_per_address", s.max_connections_per_address),
                ("max_handshaking", s.max_handshaking),
            ] {
                if v == 0 {
                    return bad(key(k), "must be at least 1");
                }
            }
            if s.frontend && s.acceptors.is_empty() {
                return bad(key("acceptors"), "a frontend server type needs at least one acceptor");
            }
            if !s.frontend && !s.acceptors.is_empty() {
                return bad(key("acceptors"), "a backend server type (frontend = false) cannot have acceptors");
            }
            if let Err(msg) = s.parsed_affinity() {
                return bad(key("affinity"), &msg);
            }
            for (i, a) in s.acceptors.iter().enumerate() {
                let key = |k: &str| format!("servers.{name}.acceptors[{i}].{k}");
                if a.address.parse::<SocketAddr>().is_err() {
                    return bad(key("address"), &format!("{:?} is not an ip:port address", a.address));
                }
                let tls = matches!(a.kind, AcceptorKind::Tls | AcceptorKind::Wss);
                if tls && (a.cert.is_empty() || a.key.is_empty()) {
                    return bad(key("cert"), "tls and wss acceptors need `cert` and `key`");
                }
            }
        }
        Ok(())
    }

    /// The path of a file named in the config, relative to the project directory.
    pub fn resolve(project: &Path, file: &str) -> PathBuf {
        project.join(file)
    }
}

/// Parsed `affinity` of a server type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinitySetting {
    /// Not set: the guest decides, else `session`.
    Guest,
    /// Set in the config.
    Fixed(kiwano_runtime::Affinity),
}

impl ServerTypeConfig {
    /// The `affinity` key, parsed.
    ///
    /// # Errors
    /// An unknown value.
    pub fn parsed_affinity(&self) -> Result<AffinitySetting, String> {
        use kiwano_runtime::Affinity;
        Ok(match self.affinity.as_str() {
            "" => AffinitySetting::Guest,
            "session" => AffinitySetting::Fixed(Affinity::Session),
            "uid" => AffinitySetting::Fixed(Affinity::Uid),
            "none" => AffinitySetting::Fixed(Affinity::None),
            other => match other.strip_prefix("data:") {
                Some(field) if !field.is_empty() => AffinitySetting::Fixed(Affinity::DataField(field.to_owned())),
                _ => return Err(format!("{other:?} is not one of session, uid, none, data:<field>")),
            },
        })
    }
}

/// The environment variable for a dotted key: `KIWANO_` + upper case, `.` and `-` as `_`.
pub fn env_name(key: &str) -> String {
    format!("KIWANO_{}", key.to_uppercase().replace(['.', '-'], "_"))
}

/// Every leaf key of `table` (arrays of tables are leaves), dotted.
fn leaf_keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) if !key.ends_with(".config") && key != "protocol.dictionary" => {
                leaf_keys(&key, t, out);
            }
            _ => out.push(key),
        }
    }
}

fn set_key(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut t = table;
    for p in parts {
        let entry = t.entry(p.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(inner) => t = inner,
            _ => return,
        }
    }
    t.insert(last.to_owned(), value);
}

fn get_key<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut v = table.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// Applies `KIWANO_*` overrides: each names a key of the defaults or of the file.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    // The shape of every key: the defaults, with each server type of the file filled in.
    let mut shape = toml::Table::try_from(Config::default()).unwrap_or_default();
    if let Some(toml::Value::Table(servers)) = table.get("servers") {
        let type_defaults = toml::Value::Table(toml::Table::try_from(ServerTypeConfig::default()).unwrap_or_default());
        for name in servers.keys() {
            set_key(&mut shape, &format!("servers.{name}"), type_defaults.clone());
        }
    }
    let mut keys = Vec::new();
    leaf_keys("", &shape, &mut keys);
    leaf_keys("", table, &mut keys);
    keys.sort();
    keys.dedup();
    for (name, raw) in env {
        if !name.starts_with("KIWANO_") || NON_KEY_ENV.contains(&name.as_str()) {
            continue;
        }
        let Some(key) = keys.iter().find(|k| env_name(k) == name) else {
            return Err(ConfigError::UnknownEnv(name));
        };
        let current = get_key(table, key).or_else(|| get_key(&shape, key)).cloned();
        let value = match current {
            Some(toml::Value::String(_)) | None => toml::Value::String(raw),
            Some(_) => raw
                .parse::<toml::Value>()
                .or_else(|_| {
                    toml::from_str::<toml::Table>(&format!("v = {raw}"))
                        .map(|mut t| t.remove("v").unwrap_or(toml::Value::Boolean(false)))
                })
                .map_err(|e| ConfigError::Key { key: key.clone(), msg: format!("{name}={raw:?} is not a valid value: {e}") })?,
        };
        set_key(table, key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &str = r#"
        [servers.echo]
        frontend = true
        component = "echo.wasm"
        [[servers.echo.acceptors]]
        kind = "tcp"
        address = "127.0.0.1:3250"
    "#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse(text, "kiwano.toml", env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse(ECHO, &[("KIWANO_PROTOCOL_HEARTBEAT_INTERVAL", "5s"), ("KIWANO_SERVERS_ECHO_INSTANCES", "4")]).unwrap();
        assert_eq!(c.protocol.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.servers["echo"].instances, 4);
        assert_eq!(c.protocol.max_body, 1 << 20);
        assert!(c.protocol.compression);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(&format!("{ECHO}\n[protocol]\nheartbeet = 3"), &[]).unwrap_err().to_string();
        assert!(e.contains("protocol") && e.contains("heartbeet"), "{e}");
        let e = parse(ECHO, &[("KIWANO_PROTOCOL_NOPE", "1")]).unwrap_err().to_string();
        assert!(e.contains("KIWANO_PROTOCOL_NOPE"), "{e}");
        let e = parse(&ECHO.replace("\"tcp\"", "\"udp\""), &[]).unwrap_err().to_string();
        assert!(e.contains("servers.echo.acceptors[0].kind") || e.contains("servers.echo.acceptors"), "{e}");
    }

    #[test]
    fn a_memory_limit_above_the_engine_maximum_names_both_keys() {
        let with = |line: &str| ECHO.replace("component = \"echo.wasm\"", &format!("component = \"echo.wasm\"\n{line}"));
        let e = parse(&with("memory_limit = 2147483648"), &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "config key `servers.echo.memory_limit`: 2147483648 bytes is more than `runtime.max_memory` (1073741824 bytes)"
        );
        let e = parse(&with("max_response = 4194304"), &[]).unwrap_err().to_string();
        assert!(e.starts_with("config key `servers.echo.max_response`") && e.contains("session.outgoing_queue_bytes"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse(ECHO, &[("KIWANO_PROTOCOL_MAX_BODY", "lots")]).unwrap_err().to_string();
        assert!(e.contains("protocol.max_body"), "{e}");
        let e = parse(&ECHO.replace("127.0.0.1:3250", "nowhere"), &[]).unwrap_err().to_string();
        assert_eq!(e, "config key `servers.echo.acceptors[0].address`: \"nowhere\" is not an ip:port address");
        let e = parse(&format!("{ECHO}\naffinity = \"room\""), &[]).unwrap_err().to_string();
        assert!(e.contains("affinity"), "{e}");
    }
}
