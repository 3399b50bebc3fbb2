//! The `kiwano` binary as a separate process, for tests that measure what the server itself
//! holds (its resident memory) or how it stops on signals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{guest, root};

/// Builds the `kiwano` binary (once per test process; quick when it is up to date) and returns
/// its path.
pub fn kiwano_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(root())
                .args(["build", "-q", "-p", "kiwano"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building kiwano failed");
            root().join("target").join("debug").join("kiwano")
        })
        .clone()
}

/// A `kiwano run` process: the testbed guest as server type `testbed` with a TCP and a WebSocket
/// acceptor on free loopback ports ([`KiwanoProcess::start`]), or one server of a project's type
/// in a cluster ([`KiwanoProcess::start_server`]). Killed when dropped.
pub struct KiwanoProcess {
    child: Child,
    /// The project directory (config and log).
    pub dir: PathBuf,
    /// Listening addresses by acceptor kind (`Tcp`, `Ws`, `Tls`, `Wss`).
    pub addresses: HashMap<String, String>,
}

impl KiwanoProcess {
    /// Starts the process; `extra` is TOML appended after the server type's table (other
    /// sections), `testbed` extra keys of the server type. Waits until it listens.
    pub async fn start(name: &str, extra: &str, testbed: &str) -> Self {
        let component = guest("testbed-guest");
        let dir = std::env::temp_dir().join(format!("kiwano-proc-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("project dir");
        let config = format!(
            r#"[runtime]
cache_dir = "{cache}"
{extra}
[servers.testbed]
frontend = true
component = "{component}"
{testbed}
[[servers.testbed.acceptors]]
kind = "tcp"
address = "127.0.0.1:0"
[[servers.testbed.acceptors]]
kind = "ws"
address = "127.0.0.1:0"
"#,
            cache = root().join("target").join("test-cache").display(),
            component = component.display(),
        );
        std::fs::write(dir.join("kiwano.toml"), config).expect("config");
        Self::spawn(dir.clone(), &["run".to_owned(), dir.display().to_string()], &[]).await
    }

    /// Starts `kiwano run <project> --type <server_type> --id <id>` with a `--listen` for each
    /// of `listen` (`tcp=127.0.0.1:0`…) and the config overrides `env` (`KIWANO_*`), logging to
    /// a file of its own; waits until it serves (registered in the cluster, listening).
    pub async fn start_server(project: &Path, server_type: &str, id: &str, listen: &[&str], env: &[(&str, &str)]) -> Self {
        let mut p = Self::spawn_server(project, server_type, id, listen, env);
        p.wait_serving().await;
        p
    }

    /// Starts `kiwano run <project> <args>...` (logging under `project`), and waits until it
    /// serves.
    pub async fn run_project(project: &Path, args: &[&str]) -> Self {
        let mut all = vec!["run".to_owned(), project.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::spawn(project.to_path_buf(), &all, &[]).await
    }

    /// Like [`KiwanoProcess::start_server`], without waiting for it to serve.
    pub fn spawn_server(project: &Path, server_type: &str, id: &str, listen: &[&str], env: &[(&str, &str)]) -> Self {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiwano-node-{id}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("log dir");
        let mut args = vec!["run".to_owned(), project.display().to_string(), "--type".into(), server_type.into(), "--id".into(), id.into()];
        for l in listen {
            args.extend(["--listen".to_owned(), (*l).to_owned()]);
        }
        Self::launch(dir, &args, env)
    }

    /// Runs the `kiwano` binary with `args`, logging to `dir/kiwano.log`, and waits until it
    /// logs that it serves.
    async fn spawn(dir: PathBuf, args: &[String], env: &[(&str, &str)]) -> Self {
        let mut p = Self::launch(dir, args, env);
        p.wait_serving().await;
        p
    }

    /// Runs the `kiwano` binary with `args`, logging to `dir/kiwano.log`.
    fn launch(dir: PathBuf, args: &[String], env: &[(&str, &str)]) -> Self {
        let log = std::fs::File::create(dir.join("kiwano.log")).expect("log file");
        let mut cmd = Command::new(kiwano_bin());
        // The test's own KIWANO_* variables (KIWANO_TEST_LOG…) would be refused as config keys.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KIWANO_")) {
            cmd.env_remove(k);
        }
        let child = cmd
            .args(args)
            .env("KIWANO_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("kiwano starts");
        Self { child, dir, addresses: HashMap::new() }
    }

    /// Waits until the process logs that it serves (at most 120 s); panics if it exits first.
    /// Then its listening addresses are known.
    pub async fn wait_serving(&mut self) {
        let start = tokio::time::Instant::now();
        while !self.logs().contains("kiwano is serving") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kiwano exited with {status}:\n{}", self.logs());
            }
            assert!(start.elapsed() < Duration::from_secs(120), "kiwano not serving:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.addresses = listening(&self.logs());
    }

    /// The address of the acceptor of `kind` (`Tcp`, `Ws`).
    pub fn addr(&self, kind: &str) -> &str {
        &self.addresses[kind]
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("kiwano.log")).unwrap_or_default()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `within`; its exit status, or `None` if it is
    /// still running.
    pub async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if start.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KiwanoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kind → address` from the `listening` lines of a log.
fn listening(logs: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in logs.lines().filter(|l| l.contains("listening")) {
        // A text line's `kind=Tcp address=…`, or a JSON line's `"kind":"Tcp","address":"…"`.
        let json: Option<serde_json::Value> = serde_json::from_str(line).ok();
        if let Some(f) = json.as_ref().map(|j| &j["fields"]) {
            if let (Some(kind), Some(addr)) = (f["kind"].as_str(), f["address"].as_str()) {
                out.insert(kind.to_owned(), addr.to_owned());
            }
            continue;
        }
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_owned);
        if let (Some(kind), Some(addr)) = (field("kind="), field("address=")) {
            out.insert(kind, addr);
        }
    }
    out
}
