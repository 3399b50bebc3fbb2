//! Real NATS and etcd servers for the cluster tests: each test starts its own, on free
//! loopback ports, from the Debian packages (`tests/setup.sh` installs them). Killed when
//! dropped; stoppable and restartable on the same port (and, for etcd, the same data).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port (bound then released: the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A directory of its own under the system's temporary directory, emptied.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiwano-{name}-{}-{}", std::process::id(), free_port()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Waits until something accepts TCP connections on `port`.
async fn wait_listening(port: u16, what: &str, log: &std::path::Path) {
    let start = tokio::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} not listening on {port} after 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn binary(name: &str) -> String {
    // Debian puts nats-server in /usr/sbin, which a user's PATH may lack.
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    name.to_owned()
}

/// A nats-server.
pub struct Nats {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
    dir: PathBuf,
}

impl Nats {
    /// Starts one on a free port and waits until it listens.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts one on `port` (a server may already be waiting for it there).
    pub async fn start_on(port: u16) -> Self {
        let mut n = Self { child: None, port, dir: fresh_dir("nats") };
        n.restart().await;
        n
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (`SIGKILL`).
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same port (stopping it first if it runs).
    pub async fn restart(&mut self) {
        self.stop();
        let log = self.dir.join("nats.log");
        let out = std::fs::File::create(&log).expect("nats log");
        let child = Command::new(binary("nats-server"))
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("nats-server starts (tests/setup.sh installs it)");
        self.child = Some(child);
        wait_listening(self.port, "nats-server", &log).await;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An etcd member of a cluster of one.
pub struct Etcd {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
    peer_port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Etcd {
    /// Starts one on free ports and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts one with extra command-line flags (`--auto-compaction-retention=…`).
    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra).await
    }

    /// Starts one whose clients connect on `port`, with extra command-line flags.
    pub async fn start_on(port: u16, extra: &[&str]) -> Self {
        let mut e = Self {
            child: None,
            port,
            peer_port: free_port(),
            dir: fresh_dir("etcd"),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        e.restart().await;
        e
    }

    /// `127.0.0.1:<port>`, as `cluster.etcd_endpoints` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it (`SIGKILL`); its data stays for [`Etcd::restart`].
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same ports and data (stopping it first if it runs).
    pub async fn restart(&mut self) {
        self.stop();
        let log = self.dir.join("etcd.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("etcd log");
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(binary("etcd"))
            .args(["--name", "kiwano-test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("kiwano-test={peer}")])
            .args(&self.extra)
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("etcd starts (tests/setup.sh installs etcd-server)");
        self.child = Some(child);
        wait_listening(self.port, "etcd", &log).await;
        // Listening comes before serving: wait for an answer.
        let start = tokio::time::Instant::now();
        loop {
            let ok = Command::new(binary("etcdctl"))
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.endpoint(), "--command-timeout=1s", "get", "health-check"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "etcd does not answer:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `etcdctl` against it with `args`; its standard output.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(binary("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint()])
            .args(args)
            .output()
            .expect("etcdctl runs");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
