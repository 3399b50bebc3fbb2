//! A cluster's services for tests that run `kiwano` processes: a nats-server and an etcd of the
//! test's own, and the config overrides that point a server at them.

use std::path::{Path, PathBuf};

use crate::process::KiwanoProcess;
use crate::services::{Etcd, Nats};

/// NATS and etcd for one test, and how `kiwano run` processes join them.
pub struct ClusterNet {
    /// The nats-server.
    pub nats: Nats,
    /// The etcd member.
    pub etcd: Etcd,
    /// Overrides given to every process started through [`ClusterNet::server`] (besides NATS
    /// and etcd), as `KIWANO_*` variables.
    pub env: Vec<(String, String)>,
}

impl ClusterNet {
    /// Starts NATS and etcd on free ports.
    pub async fn start() -> Self {
        let (nats, etcd) = tokio::join!(Nats::start(), Etcd::start());
        Self { nats, etcd, env: Vec::new() }
    }

    /// The config overrides that put a server in this cluster.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("KIWANO_CLUSTER_NATS_URL".to_owned(), self.nats.url()),
            ("KIWANO_CLUSTER_ETCD_ENDPOINTS".to_owned(), format!("[\"{}\"]", self.etcd.endpoint())),
            ("KIWANO_RUNTIME_CACHE_DIR".to_owned(), crate::root().join("target").join("test-cache").display().to_string()),
        ];
        env.extend(self.env.iter().cloned());
        env
    }

    /// Starts `kiwano run <project> --type <server_type> --id <id>` in this cluster, a frontend
    /// with a TCP and a WebSocket acceptor on free ports; returns once it serves.
    pub async fn server(&self, project: &Path, server_type: &str, id: &str, frontend: bool) -> KiwanoProcess {
        let listen: &[&str] = if frontend { &["tcp=127.0.0.1:0", "ws=127.0.0.1:0"] } else { &[] };
        let env = self.overrides();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        KiwanoProcess::start_server(project, server_type, id, listen, &env).await
    }

    /// The server descriptors registered under `pitaya/servers/`, as `(key, JSON value)`.
    pub fn registered(&self) -> Vec<(String, serde_json::Value)> {
        let out = self.etcd.ctl(&["get", "--prefix", "pitaya/servers/"]);
        let lines: Vec<&str> = out.lines().collect();
        lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_owned(), serde_json::from_str(c[1]).expect("a JSON descriptor"))).collect()
    }
}

/// Builds a project's components (once they are up to date this is quick), so that processes
/// started next do not each wait on the build.
pub fn build(project: &Path) -> PathBuf {
    let config = kiwano_server::config::Config::load(&project.join("kiwano.toml"), std::iter::empty()).expect("project config");
    kiwano_server::project::build_all(project, &config).expect("project builds");
    project.to_path_buf()
}
