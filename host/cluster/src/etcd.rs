//! Discovery, groups and binding storage on etcd, with Pitaya's keys under one prefix
//! (`pitaya/` by default; `PITAYA-PROTOCOL.md` §4.3, §5, §6.1; Pitaya's
//! `cluster/etcd_service_discovery.go`, `groups/etcd_group_service.go`,
//! `modules/binding_storage.go`):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `servers/<type>/<id>` | the server's JSON descriptor | `lease_ttl` (60 s), kept alive |
//! | `groups/<name>` | empty | the group's TTL, if any |
//! | `groups/<name>/uids/<uid>` | empty | the group's |
//! | `bindings/<frontend type>/<uid>` | the frontend's id | `binding_lease_ttl` (5 h), kept alive |
//!
//! Where Pitaya gives up, Kiwano keeps going: a lost lease is granted again and its keys
//! written again for as long as etcd is away; a watch that falls behind a compaction reloads
//! instead of stopping (Pitaya #460); a binding is removed only by the frontend that holds it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use kiwano_protocol::PitayaError;
use kiwano_protocol::error::{codes, group_errors};
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::{Bindings, BoxFuture, ClusterError, Discovery, Groups, Registration, ServerInfo, Servers};

/// How Kiwano uses etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `host:port` (or URLs) of the etcd members.
    pub endpoints: Vec<String>,
    /// The prefix of every key (`pitaya/`).
    pub prefix: String,
    /// User and password, when etcd has authentication on (Pitaya #469).
    pub credentials: Option<(String, String)>,
    /// Deadline of a connection attempt and of every operation.
    pub timeout: Duration,
    /// TTL of the lease of the servers' keys (Pitaya's `heartbeat.ttl`).
    pub lease_ttl: Duration,
    /// How often the whole server list is read again besides the watch.
    pub resync_interval: Duration,
    /// Deadline of the lease's revocation at shutdown (Pitaya #419).
    pub revoke_timeout: Duration,
    /// Server types that discovery ignores (never this process's own).
    pub blacklist: Vec<String>,
    /// TTL of the lease of the binding keys.
    pub binding_lease_ttl: Duration,
}

/// A connection to etcd and the prefix of Kiwano's keys.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    prefix: String,
    timeout: Duration,
    /// Whether the last operation got an answer (the lease's keep-alive runs one every third
    /// of its TTL, so this follows etcd within that).
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Backend(format!("etcd: {what}: {e}"))
}

/// The delay before attempt `attempt` (from 1) of something that failed: 250 ms doubling, at
/// most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

impl Etcd {
    /// Connects, trying again with a logged backoff until etcd answers: a server started
    /// before etcd waits for it (Pitaya #439).
    pub async fn connect(settings: &EtcdSettings) -> Self {
        let mut attempt = 0u32;
        loop {
            let mut options = ConnectOptions::new().with_connect_timeout(settings.timeout).with_timeout(settings.timeout);
            if let Some((user, password)) = &settings.credentials {
                options = options.with_user(user.clone(), password.clone());
            }
            let connected = async {
                let mut client = Client::connect(&settings.endpoints, Some(options)).await?;
                // The client connects lazily: a read proves etcd is there (Pitaya's readiness
                // check reads the same key).
                client.get("health-check", None).await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match tokio::time::timeout(settings.timeout, connected).await {
                Ok(Ok(client)) => {
                    tracing::info!(endpoints = ?settings.endpoints, prefix = %settings.prefix, "connected to etcd");
                    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
                    return Self { client, prefix: settings.prefix.clone(), timeout: settings.timeout, up };
                }
                Ok(Err(e)) if e.to_string().contains("authentication failed") => {
                    attempt += 1;
                    let user = settings.credentials.as_ref().map_or("", |(u, _)| u.as_str());
                    tracing::error!(
                        endpoints = ?settings.endpoints,
                        attempt,
                        "etcd refused the credentials of user {user:?} (cluster.etcd_user, cluster.etcd_password): {e}; trying again in {:?}",
                        backoff(attempt)
                    );
                }
                Ok(Err(e)) => {
                    attempt += 1;
                    tracing::warn!(endpoints = ?settings.endpoints, attempt, "cannot reach etcd ({e}); trying again in {:?}", backoff(attempt));
                }
                Err(_) => {
                    attempt += 1;
                    tracing::warn!(endpoints = ?settings.endpoints, attempt, "etcd did not answer in {:?}; trying again in {:?}", settings.timeout, backoff(attempt));
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// The full key of `rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The client (tests read the keys through it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether etcd answered the last operation.
    pub fn connected(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one etcd operation within the timeout; an expired authentication token is renewed
    /// and the operation tried once more.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ClusterError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempt = || async {
            match tokio::time::timeout(self.timeout, op(self.client.clone())).await {
                Ok(r) => r.map_err(Some),
                Err(_) => Err(None),
            }
        };
        let first = attempt().await;
        let result = match first {
            Err(Some(e)) if e.to_string().contains("invalid auth token") => {
                self.client.refresh_token().await.map_err(|e| backend("authenticate", e))?;
                attempt().await
            }
            other => other,
        };
        // An answer, even a refusal (a lease not found), means etcd is there; no answer, a
        // broken transport or gRPC's `Unavailable` (the channel's own verdict) means it is not.
        let answered = match &result {
            Ok(_) => true,
            Err(None | Some(etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_))) => false,
            Err(Some(etcd_client::Error::GRpcStatus(s))) => !matches!(format!("{:?}", s.code()).as_str(), "Unavailable" | "DeadlineExceeded"),
            Err(Some(_)) => true,
        };
        self.up.store(answered, std::sync::atomic::Ordering::Relaxed);
        result.map_err(|e| match e {
            Some(e) => backend(what, e),
            None => ClusterError::Backend(format!("etcd: {what}: no answer within {:?}", self.timeout)),
        })
    }
}

/// A lease kept alive, with the keys written under it: when the lease is lost (etcd away for
/// longer than its TTL), a new one is granted and every key written again.
struct KeptLease {
    etcd: Etcd,
    ttl: Duration,
    /// What the lease is for, in the log.
    what: &'static str,
    state: tokio::sync::Mutex<LeaseState>,
    keeper: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct LeaseState {
    /// 0: none granted yet (or revoked).
    id: i64,
    keys: BTreeMap<String, Vec<u8>>,
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.lock().take() {
            k.abort();
        }
    }
}

impl KeptLease {
    fn new(etcd: Etcd, ttl: Duration, what: &'static str) -> Arc<Self> {
        Arc::new(Self { etcd, ttl, what, state: tokio::sync::Mutex::default(), keeper: Mutex::new(None) })
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX)
    }

    /// Grants a lease and writes every key under it.
    async fn grant(&self, st: &mut LeaseState) -> Result<(), ClusterError> {
        let ttl = self.ttl_secs();
        let granted = self.etcd.run("grant a lease", |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        st.id = granted.id();
        for (key, value) in &st.keys {
            let (k, v, id) = (key.clone(), value.clone(), st.id);
            self.etcd.run("put", |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move { c.put(k, v, Some(PutOptions::new().with_lease(id))).await }
            })
            .await?;
        }
        Ok(())
    }

    /// Writes `key` under the lease; returns the revision of the write.
    async fn put(self: &Arc<Self>, key: String, value: Vec<u8>) -> Result<i64, ClusterError> {
        let mut st = self.state.lock().await;
        if st.id == 0 {
            self.grant(&mut st).await?;
            self.start_keeper();
        }
        let id = st.id;
        let put = |id: i64| {
            let (k, v) = (key.clone(), value.clone());
            self.etcd.run("put", move |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move { c.put(k, v, Some(PutOptions::new().with_lease(id))).await }
            })
        };
        let written = match put(id).await {
            Err(ClusterError::Backend(e)) if e.contains("lease not found") => {
                self.grant(&mut st).await?;
                put(st.id).await?
            }
            other => other?,
        };
        st.keys.insert(key, value);
        Ok(written.header().map_or(0, |h| h.revision()))
    }

    /// Deletes `key`, only while it holds `value` when given.
    async fn delete(&self, key: &str, value: Option<&[u8]>) -> Result<(), ClusterError> {
        let mut st = self.state.lock().await;
        if value.is_none_or(|v| st.keys.get(key).is_some_and(|held| held == v)) {
            st.keys.remove(key);
        }
        drop(st);
        let (k, v) = (key.to_owned(), value.map(<[u8]>::to_vec));
        self.etcd
            .run("delete", move |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move {
                    match v {
                        None => c.delete(k, None).await.map(drop),
                        Some(v) => c
                            .txn(Txn::new().when([Compare::value(k.clone(), CompareOp::Equal, v)]).and_then([TxnOp::delete(k, None)]))
                            .await
                            .map(drop),
                    }
                }
            })
            .await
    }

    /// Revokes the lease: its keys go at once.
    async fn revoke(&self) -> Result<(), ClusterError> {
        if let Some(k) = self.keeper.lock().take() {
            k.abort();
        }
        let mut st = self.state.lock().await;
        let id = std::mem::take(&mut st.id);
        st.keys.clear();
        if id != 0 {
            self.etcd.run("revoke the lease", move |mut c| async move { c.lease_revoke(id).await }).await?;
        }
        Ok(())
    }

    fn start_keeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = (self.ttl / 3).max(Duration::from_millis(500));
        *self.keeper.lock() = Some(tokio::spawn(keep_alive(weak, every)));
    }
}

/// Renews the lease every `every`; a lease found gone is granted again with its keys.
async fn keep_alive(lease: Weak<KeptLease>, every: Duration) {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(if failures == 0 { every } else { backoff(failures) }).await;
        let Some(lease) = lease.upgrade() else { return };
        let id = lease.state.lock().await.id;
        if id == 0 {
            return;
        }
        let renewed = lease.etcd.run("keep the lease alive", move |mut c| async move { c.lease_keep_alive(id).await.map(drop) }).await;
        match renewed {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(lease = lease.what, "etcd: lease kept alive again");
                }
                failures = 0;
            }
            Err(ClusterError::Backend(e)) if e.contains("lease not found") => {
                let mut st = lease.state.lock().await;
                tracing::warn!(lease = lease.what, keys = st.keys.len(), "etcd: the lease expired; granting a new one and writing its keys again");
                match lease.grant(&mut st).await {
                    Ok(()) => {
                        tracing::info!(lease = lease.what, keys = st.keys.len(), "etcd: keys written again under a new lease");
                        failures = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(lease = lease.what, "etcd: cannot grant a new lease ({e}); trying again in {:?}", backoff(failures));
                    }
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(lease = lease.what, "etcd: cannot keep the lease alive ({e}); trying again in {:?}", backoff(failures));
            }
        }
    }
}

/// Discovery on etcd: this process's servers under a kept lease, everyone's read once, then
/// kept current by a watch and a periodic full read.
pub struct EtcdDiscovery {
    etcd: Etcd,
    lease: Arc<KeptLease>,
    servers: RwLock<Arc<Servers>>,
    /// This process's servers: always in the snapshot.
    own: Mutex<BTreeMap<String, ServerInfo>>,
    blacklist: Vec<String>,
    revoke_timeout: Duration,
    watch: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery").field("servers", &self.servers.read().by_id.len()).finish_non_exhaustive()
    }
}

impl Drop for EtcdDiscovery {
    fn drop(&mut self) {
        if let Some(w) = self.watch.lock().take() {
            w.abort();
        }
    }
}

/// A server's key, or why it is not one: `servers/<type>/<id>`, neither part empty nor
/// holding a `/`.
fn server_key(etcd: &Etcd, info: &ServerInfo) -> Result<String, ClusterError> {
    for (what, part) in [("type", &info.server_type), ("id", &info.id)] {
        if part.is_empty() || part.contains('/') {
            return Err(ClusterError::Backend(format!("etcd: server {what} {part:?} cannot be part of a key: empty, or holds '/'")));
        }
    }
    Ok(etcd.key(&format!("servers/{}/{}", info.server_type, info.id)))
}

impl EtcdDiscovery {
    /// Reads every server, then watches for changes (and reads everything again every
    /// `resync_interval`).
    ///
    /// # Errors
    /// The first read failing.
    pub async fn start(etcd: Etcd, settings: &EtcdSettings) -> Result<Arc<Self>, ClusterError> {
        let this = Arc::new(Self {
            lease: KeptLease::new(etcd.clone(), settings.lease_ttl, "servers"),
            etcd,
            servers: RwLock::default(),
            own: Mutex::default(),
            blacklist: settings.blacklist.clone(),
            revoke_timeout: settings.revoke_timeout,
            watch: Mutex::new(None),
        });
        let revision = this.reload().await?;
        *this.watch.lock() = Some(tokio::spawn(watch(Arc::downgrade(&this), revision, settings.resync_interval)));
        Ok(this)
    }

    fn servers_prefix(&self) -> String {
        self.etcd.key("servers/")
    }

    /// A server from its key and value; `None` (logged) for what is not one, or is a
    /// blacklisted type's.
    fn parse(&self, key: &[u8], value: &[u8]) -> Option<ServerInfo> {
        let prefix = self.servers_prefix();
        let key = String::from_utf8_lossy(key);
        let rest = key.strip_prefix(&prefix)?;
        let Some((server_type, id)) = rest.split_once('/').filter(|(t, i)| !t.is_empty() && !i.is_empty() && !i.contains('/')) else {
            tracing::warn!(%key, "etcd: not a server key (want servers/<type>/<id>): ignored");
            return None;
        };
        let info = match serde_json::from_slice::<ServerInfo>(value) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(%key, "etcd: unreadable server descriptor ({e}): ignored");
                return None;
            }
        };
        if info.id != id || info.server_type != server_type {
            tracing::warn!(%key, id = %info.id, server_type = %info.server_type, "etcd: the descriptor names another server than its key: ignored");
            return None;
        }
        if self.blacklist.contains(&info.server_type) && !self.own.lock().contains_key(&info.id) {
            return None;
        }
        Some(info)
    }

    /// Reads every server; returns the revision read at.
    async fn reload(&self) -> Result<i64, ClusterError> {
        let prefix = self.servers_prefix();
        let read = self
            .etcd
            .run("read the servers", move |mut c| {
                let p = prefix.clone();
                async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut next = Servers::default();
        for kv in read.kvs() {
            if let Some(info) = self.parse(kv.key(), kv.value()) {
                next.by_id.insert(info.id.clone(), Registration { info, generation: kv.mod_revision() });
            }
        }
        let mut servers = self.servers.write();
        for (id, info) in self.own.lock().iter() {
            if !next.by_id.contains_key(id) {
                let generation = servers.by_id.get(id).map_or(0, |r| r.generation);
                next.by_id.insert(id.clone(), Registration { info: info.clone(), generation });
            }
        }
        *servers = Arc::new(next);
        Ok(read.header().map_or(0, |h| h.revision()))
    }

    fn apply(&self, event: &etcd_client::Event) {
        let Some(kv) = event.kv() else { return };
        let mut servers = self.servers.write();
        let mut next = Servers::clone(&servers);
        match event.event_type() {
            EventType::Put => {
                let Some(info) = self.parse(kv.key(), kv.value()) else { return };
                next.by_id.insert(info.id.clone(), Registration { info, generation: kv.mod_revision() });
            }
            EventType::Delete => {
                let key = String::from_utf8_lossy(kv.key());
                let Some(id) = key.rsplit('/').next() else { return };
                // This process's servers stay: their keys are written again.
                if self.own.lock().contains_key(id) {
                    return;
                }
                next.by_id.remove(id);
            }
        }
        *servers = Arc::new(next);
    }
}

/// Keeps `discovery`'s snapshot current from revision `revision` on: a watch, and a full read
/// every `resync`, on a compaction, a cancelled watch or a lost connection.
async fn watch(discovery: Weak<EtcdDiscovery>, mut revision: i64, resync: Duration) {
    let mut failures = 0u32;
    let mut next_resync = tokio::time::Instant::now() + resync;
    loop {
        let Some(d) = discovery.upgrade() else { return };
        let (etcd, prefix) = (d.etcd.clone(), d.servers_prefix());
        drop(d);
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = match etcd.client.clone().watch(prefix, Some(options)).await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                tracing::warn!("etcd: cannot watch the servers ({e}); trying again in {:?}", backoff(failures));
                tokio::time::sleep(backoff(failures)).await;
                revision = reload(&discovery, revision).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        failures = 0;
                        if resp.compact_revision() > 0 || resp.canceled() {
                            tracing::warn!(compacted = resp.compact_revision(), reason = resp.cancel_reason(), "etcd: the servers' watch was cancelled; reading them all again");
                            break;
                        }
                        let Some(d) = discovery.upgrade() else { return };
                        for event in resp.events() {
                            d.apply(event);
                            if let Some(kv) = event.kv() {
                                revision = revision.max(kv.mod_revision());
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("etcd: the servers' watch ended; watching again");
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!("etcd: the servers' watch failed ({e}); watching again in {:?}", backoff(failures));
                        tokio::time::sleep(backoff(failures)).await;
                        break;
                    }
                },
                () = tokio::time::sleep_until(next_resync) => {
                    next_resync = tokio::time::Instant::now() + resync;
                    revision = reload(&discovery, revision).await;
                }
            }
        }
        revision = reload(&discovery, revision).await;
    }
}

/// Reads every server again; returns the revision to watch from (`revision` unchanged when
/// the read failed).
async fn reload(discovery: &Weak<EtcdDiscovery>, revision: i64) -> i64 {
    let Some(d) = discovery.upgrade() else { return revision };
    match d.reload().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("etcd: cannot read the servers: {e}");
            revision
        }
    }
}

impl Discovery for EtcdDiscovery {
    fn register<'a>(&'a self, server: &'a ServerInfo) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let key = server_key(&self.etcd, server)?;
            let value = serde_json::to_vec(server).map_err(|e| backend("encode a server", e))?;
            self.own.lock().insert(server.id.clone(), server.clone());
            let generation = match self.lease.put(key, value).await {
                Ok(g) => g,
                Err(e) => {
                    self.own.lock().remove(&server.id);
                    return Err(e);
                }
            };
            let mut servers = self.servers.write();
            let mut next = Servers::clone(&servers);
            next.by_id.insert(server.id.clone(), Registration { info: server.clone(), generation });
            *servers = Arc::new(next);
            tracing::info!(server = %server.id, server_type = %server.server_type, "registered in etcd");
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let Some(info) = self.own.lock().remove(id) else { return Ok(()) };
            {
                let mut servers = self.servers.write();
                let mut next = Servers::clone(&servers);
                next.by_id.remove(id);
                *servers = Arc::new(next);
            }
            let last = self.own.lock().is_empty();
            let leave = async {
                if last {
                    // The last server of the process: the lease goes, and its keys with it.
                    self.lease.revoke().await
                } else {
                    self.lease.delete(&server_key(&self.etcd, &info)?, None).await
                }
            };
            match tokio::time::timeout(self.revoke_timeout, leave).await {
                Ok(r) => r,
                Err(_) => Err(ClusterError::Backend(format!("etcd: leaving did not finish in {:?}", self.revoke_timeout))),
            }
        })
    }

    fn snapshot(&self) -> Arc<Servers> {
        self.servers.read().clone()
    }

    fn connected(&self) -> Option<bool> {
        Some(self.etcd.connected())
    }
}

/// Groups on etcd, as Pitaya's etcd group service keeps them, so that a Go Pitaya server
/// sees the same groups. Unlike Pitaya, counting a missing group is an error, and a TTL under
/// a second is one second (etcd leases count whole seconds).
#[derive(Debug)]
pub struct EtcdGroups {
    etcd: Etcd,
}

fn group_not_found() -> ClusterError {
    group_errors::not_found().into()
}

fn check_uid(uid: &str) -> Result<(), ClusterError> {
    Ok(group_errors::check_uid(uid)?)
}

impl EtcdGroups {
    /// Groups under `etcd`'s prefix.
    pub fn new(etcd: Etcd) -> Self {
        Self { etcd }
    }

    fn group_key(&self, name: &str) -> String {
        self.etcd.key(&format!("groups/{name}"))
    }

    fn member_key(&self, name: &str, uid: &str) -> String {
        self.etcd.key(&format!("groups/{name}/uids/{uid}"))
    }

    /// Runs `ops` if the group exists; `Ok(None)` when it does not.
    async fn if_group(&self, name: &str, ops: Vec<TxnOp>) -> Result<Option<Vec<TxnOpResponse>>, ClusterError> {
        let group = self.group_key(name);
        let txn = Txn::new().when([Compare::create_revision(group, CompareOp::Greater, 0)]).and_then(ops);
        let r = self.etcd.run("group transaction", move |mut c| {
            let t = txn.clone();
            async move { c.txn(t).await }
        });
        let r = r.await?;
        Ok(r.succeeded().then(|| r.op_responses()))
    }

    /// The lease of the group's key (0: none).
    async fn group_lease(&self, name: &str) -> Result<i64, ClusterError> {
        let key = self.group_key(name);
        let r = self.etcd.run("read a group", move |mut c| {
            let k = key.clone();
            async move { c.get(k, None).await }
        });
        r.await?.kvs().first().map(etcd_client::KeyValue::lease).ok_or_else(group_not_found)
    }
}

fn range(responses: Option<Vec<TxnOpResponse>>) -> Result<etcd_client::GetResponse, ClusterError> {
    match responses.ok_or_else(group_not_found)?.into_iter().next() {
        Some(TxnOpResponse::Get(g)) => Ok(g),
        _ => Err(ClusterError::Backend("etcd: a group read without its result".into())),
    }
}

impl Groups for EtcdGroups {
    fn create<'a>(&'a self, name: &'a str, ttl: Option<Duration>) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let lease = match ttl {
                Some(ttl) => {
                    let secs = i64::try_from(ttl.as_secs_f64().ceil() as u64).unwrap_or(i64::MAX).max(1);
                    self.etcd.run("grant a group lease", move |mut c| async move { c.lease_grant(secs, None).await }).await?.id()
                }
                None => 0,
            };
            let key = self.group_key(name);
            let put = if lease == 0 { None } else { Some(PutOptions::new().with_lease(lease)) };
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, "", put)]);
            let created = self.etcd.run("create a group", move |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            });
            if created.await?.succeeded() { Ok(()) } else { Err(group_errors::already_exists().into()) }
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let ops = vec![
                TxnOp::delete(self.member_key(name, ""), Some(DeleteOptions::new().with_prefix())),
                TxnOp::delete(self.group_key(name), None),
            ];
            self.if_group(name, ops).await?.map(drop).ok_or_else(group_not_found)
        })
    }

    fn add<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            check_uid(uid)?;
            let lease = self.group_lease(name).await?;
            let member = self.member_key(name, uid);
            let put = if lease == 0 { None } else { Some(PutOptions::new().with_lease(lease)) };
            let txn = Txn::new()
                .when([
                    Compare::create_revision(self.group_key(name), CompareOp::Greater, 0),
                    Compare::create_revision(member.clone(), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put(member, "", put)]);
            let added = self.etcd.run("add a member", move |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            });
            if added.await?.succeeded() {
                Ok(())
            } else {
                Err(group_errors::member_exists().into())
            }
        })
    }

    fn remove<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            check_uid(uid)?;
            let member = self.member_key(name, uid);
            let ops = vec![TxnOp::get(member.clone(), Some(GetOptions::new().with_count_only())), TxnOp::delete(member, None)];
            let found = range(self.if_group(name, ops).await?)?;
            if found.count() > 0 { Ok(()) } else { Err(group_errors::member_not_found().into()) }
        })
    }

    fn remove_all<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let ops = vec![TxnOp::delete(self.member_key(name, ""), Some(DeleteOptions::new().with_prefix()))];
            self.if_group(name, ops).await?.map(drop).ok_or_else(group_not_found)
        })
    }

    fn contains<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async move {
            check_uid(uid)?;
            let ops = vec![TxnOp::get(self.member_key(name, uid), Some(GetOptions::new().with_count_only()))];
            Ok(range(self.if_group(name, ops).await?)?.count() > 0)
        })
    }

    fn members<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, ClusterError>> {
        Box::pin(async move {
            let prefix = self.member_key(name, "");
            let ops = vec![TxnOp::get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only()))];
            let found = range(self.if_group(name, ops).await?)?;
            Ok(found.kvs().iter().map(|kv| String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned()).collect())
        })
    }

    fn count<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<u32, ClusterError>> {
        Box::pin(async move {
            let ops = vec![TxnOp::get(self.member_key(name, ""), Some(GetOptions::new().with_prefix().with_count_only()))];
            let found = range(self.if_group(name, ops).await?)?;
            Ok(u32::try_from(found.count()).unwrap_or(u32::MAX))
        })
    }

    fn renew<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            match self.group_lease(name).await? {
                0 => Err(PitayaError::new(codes::BAD_REQUEST, "etcd lease not found in group").into()),
                lease => self.etcd.run("renew a group", move |mut c| async move { c.lease_keep_alive(lease).await.map(drop) }).await,
            }
        })
    }
}

/// Binding storage on etcd: `bindings/<frontend type>/<uid>` = the frontend's id, under a
/// lease kept alive.
pub struct EtcdBindings {
    etcd: Etcd,
    lease: Arc<KeptLease>,
}

impl std::fmt::Debug for EtcdBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBindings").finish_non_exhaustive()
    }
}

impl EtcdBindings {
    /// Bindings under `etcd`'s prefix, their lease of `ttl`.
    pub fn new(etcd: Etcd, ttl: Duration) -> Self {
        Self { lease: KeptLease::new(etcd.clone(), ttl, "bindings"), etcd }
    }

    fn key(&self, frontend_type: &str, uid: &str) -> String {
        self.etcd.key(&format!("bindings/{frontend_type}/{uid}"))
    }
}

impl Bindings for EtcdBindings {
    fn put<'a>(&'a self, frontend_type: &'a str, uid: &'a str, frontend_id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.lease.put(self.key(frontend_type, uid), frontend_id.as_bytes().to_vec()).await.map(drop) })
    }

    fn remove<'a>(&'a self, frontend_type: &'a str, uid: &'a str, frontend_id: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        // Only while it names this frontend: a player who reconnected elsewhere keeps the new
        // binding (Pitaya deletes it whoever holds it).
        Box::pin(async move { self.lease.delete(&self.key(frontend_type, uid), Some(frontend_id.as_bytes())).await })
    }

    fn get<'a>(&'a self, frontend_type: &'a str, uid: &'a str) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        Box::pin(async move {
            let key = self.key(frontend_type, uid);
            let r = self.etcd.run("read a binding", move |mut c| {
                let k = key.clone();
                async move { c.get(k, None).await }
            });
            Ok(r.await?.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
        })
    }
}
