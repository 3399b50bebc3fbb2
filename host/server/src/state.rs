//! What the parts of a running server share: its server types, the connections' settings and
//! the cluster. A leaf of the crate's modules: it imports none of the modules that use it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kiwano_cluster::{Cluster, ServerInfo};

use crate::bridge::Bridge;
use crate::connection::Net;
use crate::reload::{Version, Versions};

/// A server type hosted by this process.
#[derive(Debug)]
pub struct ServerType {
    /// Its name.
    pub name: String,
    /// The id of this process's server of the type.
    pub id: String,
    /// Its component's versions: the one serving, and how to load the next (hot reload).
    pub versions: Arc<Versions>,
    /// Whether clients connect to it.
    pub frontend: bool,
    /// The server as discovery announces it.
    pub info: ServerInfo,
}

impl ServerType {
    /// The version serving now: a call takes it once, at its start, and keeps it.
    pub fn current(&self) -> Arc<Version> {
        self.versions.current()
    }
}

/// State shared by the connections, the routers and the cluster handlers of the process.
#[derive(Debug)]
pub struct Shared {
    /// The connections' settings, sessions and shutdown signal.
    pub net: Arc<Net>,
    /// Server types hosted here.
    pub types: HashMap<String, Arc<ServerType>>,
    /// Discovery, RPC, groups, bindings.
    pub cluster: Arc<Cluster>,
    /// Deadline of forwarded messages and RPCs without a timeout of their own.
    pub request_timeout: Duration,
    /// Whether a uid bound on one frontend of a type is kicked from the others
    /// (`cluster.unique_session`).
    pub unique_session: bool,
    /// Where blocking callers wait for the cluster.
    pub bridge: Bridge,
    /// What the process records (`/metrics`).
    pub metrics: kiwano_metrics::Metrics,
    /// Where the process stands, for `/readyz`.
    pub health: Health,
}

/// Where the process stands, for `/readyz`: ready once every acceptor listens, until shutdown
/// starts (which it reports at once, `app.drain_delay` before it stops accepting).
#[derive(Debug, Default)]
pub struct Health {
    /// Every acceptor listens.
    pub accepting: std::sync::atomic::AtomicBool,
    /// Shutdown started.
    pub draining: std::sync::atomic::AtomicBool,
}
