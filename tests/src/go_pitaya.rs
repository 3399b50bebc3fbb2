//! Go Pitaya servers for interop tests: the project's own Go program (`tests/go-pitaya`, built
//! against `github.com/topfreegames/pitaya/v3` from the Go module proxy) playing either side of
//! Pitaya's cluster demo, in a cluster of Kiwano servers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::cluster_net::ClusterNet;
use crate::root;
use crate::services::free_port;

/// Builds the Go program (once per test process; `GOWORK=off`, quick once Go's caches are
/// warm) and returns the binary's path.
pub fn go_pitaya_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = root().join("target").join("go-pitaya").join("gopitaya");
            let status = Command::new("go")
                .current_dir(root().join("tests").join("go-pitaya"))
                .env("GOWORK", "off")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .status()
                .expect("go runs");
            assert!(status.success(), "building tests/go-pitaya failed");
            out
        })
        .clone()
}

/// One Go Pitaya server in a [`ClusterNet`]. Killed when dropped.
pub struct GoPitaya {
    child: Child,
    /// Its server id.
    pub id: String,
    /// A connector's TCP acceptor, `127.0.0.1:<port>`.
    pub tcp: String,
    dir: PathBuf,
}

impl GoPitaya {
    /// Starts a server of `server_type` (`connector` or `room`) with id `id`; returns once it
    /// is registered and serving.
    pub async fn start(net: &ClusterNet, server_type: &str, id: &str) -> Self {
        Self::start_with(net, server_type, id, &[]).await
    }

    /// [`GoPitaya::start`] with more environment variables (`OTEL_*`…).
    pub async fn start_with(net: &ClusterNet, server_type: &str, id: &str, env: &[(&str, &str)]) -> Self {
        let bin = go_pitaya_bin();
        let dir = std::env::temp_dir().join(format!("kiwano-gopitaya-{id}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("log dir");
        let tcp = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .args(["-type", server_type, "-id", id, "-nats", &net.nats.url(), "-etcd", &net.etcd.endpoint(), "-prefix", "pitaya/", "-tcp", &tcp])
            .envs(env.iter().copied())
            .stdout(Stdio::from(std::fs::File::create(dir.join("stdout")).expect("stdout")))
            .stderr(Stdio::from(std::fs::File::create(dir.join("stderr")).expect("stderr")))
            .spawn()
            .expect("gopitaya starts");
        let mut p = Self { child, id: id.to_owned(), tcp, dir };
        let start = tokio::time::Instant::now();
        while !p.stdout().contains("gopitaya ready") {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("gopitaya {id} exited with {status}:\n{}", p.logs());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "gopitaya {id} not ready:\n{}", p.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// What it printed and logged.
    pub fn logs(&self) -> String {
        format!("{}{}", self.stdout(), std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default())
    }
}

impl Drop for GoPitaya {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
