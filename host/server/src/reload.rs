//! Hot reload: a server type's component replaced while it serves.
//!
//! A new version is compiled, instantiated and `init`ed beside the running one (on a blocking
//! thread); its `describe` is checked against the running version's; then it is swapped in at
//! a call boundary: a call picks the version that serves when it starts, so calls in flight
//! finish on the old instances and new calls go to the new ones. The old instances are shut
//! down (their guest `shutdown` runs) once the calls queued on them have finished. Sessions,
//! their data, bindings and groups are held by the host and carry over; what a guest keeps in
//! its own memory (timers included) starts again from its `init`. A version that fails to
//! compile, instantiate or `init`, or whose `describe` is incompatible, is rejected with a
//! logged reason and the running version keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiwano_runtime::{Affinity, Component, HandlerKind, HostServices, PoolConfig, Runtime, RuntimeError, ServerPool};
use parking_lot::RwLock;

/// One loaded version of a server type's component.
#[derive(Debug)]
pub struct Version {
    /// 1 for the component the process started with, then one more per reload.
    pub number: u64,
    /// Its instances for client messages.
    pub pool: Arc<ServerPool>,
    /// Its instances for remotes (RPC), apart from handlers; `None` when it has no remotes.
    pub remotes: Option<Arc<ServerPool>>,
    /// How calls pick an instance (the config's choice, else the guest's `describe`).
    pub affinity: Affinity,
}

/// Why a reload was refused; the running version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No server type of that name here.
    #[error("no server type {0} in this process")]
    UnknownType(String),
    /// The new component failed to compile, instantiate or `init`.
    #[error("{0}")]
    Load(#[from] RuntimeError),
    /// The new component's `describe` does not fit the running one.
    #[error("server type {server_type}: incompatible describe: {why}")]
    Incompatible {
        /// The server type.
        server_type: String,
        /// What differs.
        why: String,
    },
    /// Another reload of the type is under way.
    #[error("server type {0}: a reload is already under way")]
    Busy(String),
}

/// What it takes to load a version of one server type.
pub struct Loader {
    /// The component file (read again on each reload).
    pub path: PathBuf,
    /// The engine.
    pub runtime: Runtime,
    /// The handler pool's settings.
    pub pool_config: PoolConfig,
    /// Instances for remotes.
    pub remote_instances: usize,
    /// What the guests' host calls reach.
    pub services: Arc<dyn HostServices>,
    /// The config's affinity, if it fixes one.
    pub fixed_affinity: Option<Affinity>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Loader {
    /// The guest metrics of version `number` of this server type.
    fn guest_metrics(&self, number: u64) -> kiwano_metrics::GuestMetrics {
        let c = &self.pool_config;
        c.metrics.guest(&c.server_type, c.max_metric_series).version(number)
    }

    /// Compiles (or loads from the cache), instantiates and `init`s the component: CPU work,
    /// for a blocking thread.
    ///
    /// # Errors
    /// The component unreadable, invalid, or failing to instantiate or `init`.
    pub fn load(&self, number: u64) -> Result<Version, RuntimeError> {
        let component = Component::load(&self.runtime, &self.path)?;
        let config = PoolConfig { component_version: number, ..self.pool_config.clone() };
        let pool = ServerPool::start(&self.runtime, &component, config.clone(), self.services.clone())?;
        // Remotes get instances of their own: an RPC never waits behind client calls, and a
        // handler's RPC to its own type cannot wait on itself.
        let remotes = if pool.description().remotes.is_empty() {
            None
        } else {
            let cfg = PoolConfig { instances: self.remote_instances, remotes: true, ..config };
            Some(ServerPool::start(&self.runtime, &component, cfg, self.services.clone())?)
        };
        let affinity = self.fixed_affinity.clone().unwrap_or_else(|| pool.description().affinity.clone().unwrap_or(Affinity::Session));
        Ok(Version { number, pool, remotes, affinity })
    }
}

/// The versions of one server type: the one serving, and how to load the next.
#[derive(Debug)]
pub struct Versions {
    current: RwLock<Arc<Version>>,
    loader: Loader,
    next: AtomicU64,
    /// Held while a reload runs: one at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Reloads refused since start.
    pub rejected: AtomicU64,
}

impl Versions {
    /// Starts with `first` (version 1).
    pub fn new(first: Version, loader: Loader) -> Self {
        loader.guest_metrics(first.number).commit();
        Self { current: RwLock::new(Arc::new(first)), loader, next: AtomicU64::new(2), reloading: tokio::sync::Mutex::new(()), rejected: AtomicU64::new(0) }
    }

    /// The version serving now.
    pub fn current(&self) -> Arc<Version> {
        self.current.read().clone()
    }

    /// Loads the component file again and swaps it in (see the module documentation);
    /// returns the new version's number.
    ///
    /// # Errors
    /// See [`ReloadError`]; the running version keeps serving.
    pub async fn reload(self: &Arc<Self>, server_type: &str) -> Result<u64, ReloadError> {
        let Ok(_guard) = self.reloading.try_lock() else { return Err(ReloadError::Busy(server_type.to_owned())) };
        let started = std::time::Instant::now();
        let number = self.next.load(Ordering::Relaxed);
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || this.loader.load(number))
            .await
            .map_err(|e| RuntimeError::Instance { server_type: server_type.to_owned(), msg: format!("loading panicked: {e}") });
        let new = match loaded.and_then(|r| r) {
            Ok(v) => v,
            Err(e) => {
                self.loader.guest_metrics(number).discard();
                return Err(self.refused(server_type, e.into()));
            }
        };
        let old = self.current();
        if let Err(why) = compatible(&old, &new) {
            self.loader.guest_metrics(number).discard();
            tokio::spawn(async move { stop(&new).await });
            return Err(self.refused(server_type, ReloadError::Incompatible { server_type: server_type.to_owned(), why }));
        }
        self.next.store(number + 1, Ordering::Relaxed);
        let old = std::mem::replace(&mut *self.current.write(), Arc::new(new));
        self.loader.guest_metrics(number).commit();
        tracing::info!(server_type, version = number, previous = old.number, took = ?started.elapsed(), path = %self.loader.path.display(), "hot reload: the new version serves");
        self.loader.pool_config.metrics.inc(&kiwano_metrics::families::RELOADS, &[server_type, "ok"]);
        // The old instances stop once every call that picked them has ended (bounded by the
        // deadline of a call, which ends or traps by then), so none finds them stopped.
        let patience = self.loader.pool_config.call_timeout * 2 + std::time::Duration::from_secs(1);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + patience;
            let busy = |v: &Version| Arc::strong_count(&v.pool) > 1 || v.remotes.as_ref().is_some_and(|r| Arc::strong_count(r) > 1);
            while busy(&old) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            stop(&old).await;
        });
        Ok(number)
    }

    fn refused(&self, server_type: &str, e: ReloadError) -> ReloadError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.loader.pool_config.metrics.inc(&kiwano_metrics::families::RELOADS, &[server_type, "refused"]);
        tracing::error!(server_type, serving = self.current().number, "hot reload refused, the running version keeps serving: {e}");
        e
    }
}

async fn stop(v: &Version) {
    v.pool.shutdown().await;
    if let Some(r) = &v.remotes {
        r.shutdown().await;
    }
}

/// A new version may add and drop routes (a dropped one answers `PIT-404`, as for any unknown
/// route), but a route it keeps must keep its kind: clients send a request or a notify to it.
fn compatible(old: &Version, new: &Version) -> Result<(), String> {
    let (old, new) = (old.pool.description(), new.pool.description());
    let changed: Vec<String> = old
        .handlers
        .iter()
        .filter_map(|(route, kind)| match new.handlers.get(route) {
            Some(k) if k != kind => Some(format!("{route} was a {} and would be a {}", kind_name(*kind), kind_name(*k))),
            _ => None,
        })
        .collect();
    if changed.is_empty() { Ok(()) } else { Err(changed.join("; ")) }
}

fn kind_name(kind: HandlerKind) -> &'static str {
    match kind {
        HandlerKind::Request => "request",
        HandlerKind::Notify => "notify",
    }
}
