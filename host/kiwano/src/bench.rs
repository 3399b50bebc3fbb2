//! `kiwano bench`: every benchmark scenario in one command, printed as tables and written to
//! `BENCHMARKS.md`. Servers (Kiwano and the raw ceiling) and the load generator run as separate
//! processes of this binary, on loopback.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::load::LoadResult;

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds-long run with tiny sizes, to check the harness (no figures worth keeping).
    #[arg(long)]
    pub smoke: bool,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// The repository root (holding `examples/`).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
}

pub(crate) struct Sizes {
    pub(crate) warmup: &'static str,
    pub(crate) duration: &'static str,
    conns: [usize; 2],
    pub(crate) forward_conns: usize,
    members: usize,
    broadcasts: usize,
    idle: usize,
    heartbeat: &'static str,
    hold: &'static str,
    calls: u32,
}

pub(crate) const FULL: Sizes = Sizes {
    warmup: "2s",
    duration: "8s",
    conns: [100, 1000],
    forward_conns: 100,
    members: 1000,
    broadcasts: 200,
    idle: 20_000,
    heartbeat: "5s",
    hold: "11s",
    calls: 300_000,
};

pub(crate) const SMOKE: Sizes = Sizes {
    warmup: "200ms",
    duration: "500ms",
    conns: [4, 8],
    forward_conns: 4,
    members: 10,
    broadcasts: 5,
    idle: 50,
    heartbeat: "1s",
    hold: "2500ms",
    calls: 2_000,
};

/// This process's hard open-file limit (after `kiwano` raised what it could).
fn nofile_hard() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_max).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process, stopped (SIGTERM, then kill) when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) name: String,
}

impl Server {
    pub(crate) fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: {} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_listening(port: u16, server: &mut Server) -> anyhow::Result<()> {
    wait_until(server, &format!("listening on {port}"), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// Waits (up to 5 minutes: a first start may build guests) until `ready` holds; fails if
/// `server` exits first.
pub(crate) fn wait_until(server: &mut Server, what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready() {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("{} exited with {status} before {what}", server.name);
        }
        if Instant::now() > deadline {
            bail!("{} is not {what}", server.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) fn log_path(root: &Path, name: &str) -> PathBuf {
    root.join("target").join("bench").join(format!("{name}.log"))
}

pub(crate) fn log_file(root: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let dir = root.join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

/// Starts this binary with `args` (and `env`; the log level is `warn` unless `KIWANO_LOG` is
/// given), its output in `target/bench/<name>.log`.
pub(crate) fn spawn(root: &Path, name: &str, args: &[String], env: &[(String, String)]) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?;
    let log = log_file(root, name)?;
    let level = env.iter().find(|(k, _)| k == "KIWANO_LOG").map_or("warn", |(_, v)| v.as_str()).to_owned();
    let child = Command::new(exe)
        .args(args)
        .envs(env.iter().cloned())
        .env("KIWANO_LOG", level)
        .current_dir(root)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Server { child, name: name.to_owned() })
}

/// Starts `kiwano run <project>` with its frontend's TCP and WS acceptors on free ports.
pub(crate) fn kiwano(root: &Path, project: &str, frontend: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<(Server, u16, u16)> {
    let (tcp, ws) = (free_port()?, free_port()?);
    let acceptors = format!(r#"[{{kind="tcp",address="127.0.0.1:{tcp}"}},{{kind="ws",address="127.0.0.1:{ws}"}}]"#);
    let mut env = vec![(format!("KIWANO_SERVERS_{}_ACCEPTORS", frontend.to_uppercase()), acceptors)];
    env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let name = format!("kiwano-{}", project.replace('/', "-"));
    let mut s = spawn(root, &name, &["run".into(), project.into()], &env)?;
    wait_listening(tcp, &mut s)?;
    wait_listening(ws, &mut s)?;
    Ok((s, tcp, ws))
}

fn raw(root: &Path) -> anyhow::Result<(Server, u16, u16)> {
    let (tcp, ws) = (free_port()?, free_port()?);
    let args = vec!["raw".into(), "--tcp".into(), format!("127.0.0.1:{tcp}"), "--ws".into(), format!("127.0.0.1:{ws}")];
    let mut s = spawn(root, "raw", &args, &[])?;
    wait_listening(tcp, &mut s)?;
    wait_listening(ws, &mut s)?;
    Ok((s, tcp, ws))
}

/// Runs the load generator as its own process and reads its JSON result.
pub(crate) fn load(root: &Path, args: &[String], on_ready: impl FnOnce()) -> anyhow::Result<LoadResult> {
    use std::io::BufRead;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("load")
        .args(args)
        .current_dir(root)
        .env("KIWANO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("load output")?;
    let mut on_ready = Some(on_ready);
    let mut last = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with("READY") {
            if let Some(f) = on_ready.take() {
                f();
            }
        } else if !line.trim().is_empty() {
            last = line;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("load generator failed ({status}) with {args:?}");
    }
    serde_json::from_str(&last).with_context(|| format!("load generator output {last:?}"))
}

pub(crate) fn echo_args(port: u16, transport: &str, conns: usize, route: &str, s: &Sizes) -> Vec<String> {
    [
        "--addr", &format!("127.0.0.1:{port}"), "--transport", transport, "--connections", &conns.to_string(),
        "--warmup", s.warmup, "--duration", s.duration, "--route", route, "--body-size", "64",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

pub(crate) fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// Runs every scenario and writes the report.
///
/// # Errors
/// A server or the load generator failing.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let root = args.root.canonicalize().context("--root")?;
    let s = if args.smoke { &SMOKE } else { &FULL };
    let started = Instant::now();
    let mut report = String::new();
    let command = if args.smoke { "kiwano bench --smoke" } else { "kiwano bench" };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let _ = writeln!(report, "Machine: {cores} cores ({cpu}); release build; servers and load generator on the same machine, loopback.\n");

    // Scenario 1: Kiwano vs the raw ceiling.
    eprintln!("bench: scenario 1 (echo through a Rust guest vs the raw ceiling)");
    let mut s1 = Vec::new();
    {
        let (raw_server, raw_tcp, raw_ws) = raw(&root)?;
        let (kiwano_server, k_tcp, k_ws) = kiwano(&root, "examples/echo", "echo", &[])?;
        for transport in ["tcp", "ws"] {
            for &conns in &s.conns {
                let (rp, kp) = if transport == "tcp" { (raw_tcp, k_tcp) } else { (raw_ws, k_ws) };
                let r = load(&root, &echo_args(rp, transport, conns, "echo.echo", s), || {})?;
                let k = load(&root, &echo_args(kp, transport, conns, "echo.echo", s), || {})?;
                s1.push((transport, conns, r, k));
            }
        }
        drop((raw_server, kiwano_server));
    }
    let _ = writeln!(report, "## 1. Echo of a 64-byte JSON body through a Rust guest, vs the raw ceiling\n");
    let _ = writeln!(report, "| transport | connections | raw req/s | Kiwano req/s | ratio (bar ≥ 0.70) | raw p50 / p99 / max ms | Kiwano p50 / p99 / max ms | p99 ratio (bar ≤ 2) | errors |");
    let _ = writeln!(report, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (t, c, r, k) in &s1 {
        let ratio = k.rps / r.rps.max(1e-9);
        let p99 = k.latency.p99_us as f64 / (r.latency.p99_us.max(1)) as f64;
        let _ = writeln!(
            report,
            "| {t} | {c} | {:.0} | {:.0} | {ratio:.2} | {} / {} / {} | {} / {} / {} | {p99:.2} | {} |",
            r.rps, k.rps, ms(r.latency.p50_us), ms(r.latency.p99_us), ms(r.latency.max_us),
            ms(k.latency.p50_us), ms(k.latency.p99_us), ms(k.latency.max_us), r.errors + k.errors
        );
    }

    // Scenario 2: forwarded connector → room.
    eprintln!("bench: scenario 2 (forwarded through the embedded cluster)");
    let mut s2 = Vec::new();
    {
        let (server, tcp, ws) = kiwano(&root, "host/kiwano/bench/forward", "echo", &[])?;
        for transport in ["tcp", "ws"] {
            let port = if transport == "tcp" { tcp } else { ws };
            s2.push((transport, load(&root, &echo_args(port, transport, s.forward_conns, "room.echo.echo", s), || {})?));
        }
        drop(server);
    }
    let _ = writeln!(report, "\n## 2. The same request forwarded echo → room through the embedded cluster\n");
    let _ = writeln!(report, "| transport | connections | forwarded req/s | direct req/s (scenario 1) | ratio (bar ≥ 0.50) | p50 / p99 / max ms | errors |");
    let _ = writeln!(report, "| --- | --- | --- | --- | --- | --- | --- |");
    for (t, f) in &s2 {
        let direct = s1.iter().find(|(tt, c, _, _)| tt == t && *c == s.forward_conns).map_or(0.0, |x| x.3.rps);
        let _ = writeln!(
            report,
            "| {t} | {} | {:.0} | {direct:.0} | {:.2} | {} / {} / {} | {} |",
            s.forward_conns, f.rps, f.rps / direct.max(1e-9), ms(f.latency.p50_us), ms(f.latency.p99_us), ms(f.latency.max_us), f.errors
        );
    }

    // Scenario 3: group broadcast.
    eprintln!("bench: scenario 3 (group broadcast)");
    let b = {
        let (server, _tcp, ws) = kiwano(&root, "examples/chat", "chat", &[("KIWANO_APP_HTTP", "")])?;
        let args: Vec<String> = [
            "--addr", &format!("127.0.0.1:{ws}"), "--transport", "ws", "--mode", "broadcast",
            "--connections", &s.members.to_string(), "--broadcasts", &s.broadcasts.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let r = load(&root, &args, || {})?;
        drop(server);
        r
    };
    let _ = writeln!(report, "\n## 3. Group broadcast: one sender, every member receives each message\n");
    let _ = writeln!(report, "| members | broadcasts | pushes delivered/s | last member received after: p50 / p99 / max ms |");
    let _ = writeln!(report, "| --- | --- | --- | --- |");
    let _ = writeln!(
        report,
        "| {} | {} | {:.0} | {} / {} / {} |",
        b.connections, b.requests, b.pushes_per_s, ms(b.latency.p50_us), ms(b.latency.p99_us), ms(b.latency.max_us)
    );

    // Scenarios 4 and 5: idle connections, connection rate. A process cannot hold more sockets
    // than its hard open-file limit allows (20 000 on some machines, and not raisable there).
    eprintln!("bench: scenarios 4 and 5 (idle connections, connection rate)");
    let idle_target = s.idle.min(nofile_hard().saturating_sub(100));
    let (idle, before, ready_rss, after) = {
        // Every load connection comes from 127.0.0.1: lift the per-address cap (1024).
        let env = [("KIWANO_PROTOCOL_HEARTBEAT_INTERVAL", s.heartbeat), ("KIWANO_SERVERS_ECHO_MAX_CONNECTIONS_PER_ADDRESS", "1000000")];
        let (server, _tcp, ws) = kiwano(&root, "examples/echo", "echo", &env)?;
        std::thread::sleep(Duration::from_millis(500));
        let before = server.rss_kb();
        let args: Vec<String> = [
            "--addr", &format!("127.0.0.1:{ws}"), "--transport", "ws", "--mode", "idle",
            "--connections", &idle_target.to_string(), "--hold", s.hold,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let ready = std::cell::Cell::new(0);
        let r = load(&root, &args, || ready.set(server.rss_kb()))?;
        let after = server.rss_kb();
        drop(server);
        (r, before, ready.get(), after)
    };
    let per_conn = |rss: u64| (rss.saturating_sub(before)) as f64 * 1024.0 / idle.connections.max(1) as f64;
    let _ = writeln!(report, "\n## 4. Idle WebSocket connections held through two heartbeat intervals ({})\n", s.heartbeat);
    if idle_target < s.idle {
        let _ = writeln!(
            report,
            "This machine's hard open-file limit ({}) cannot be raised, so a process holds at most {idle_target} sockets here, not {}.\n",
            nofile_hard(),
            s.idle
        );
    }
    let _ = writeln!(report, "| connections | RSS before | RSS connected | RSS after hold | per connection (bar ≤ 6 KB) | dropped (bar 0) |");
    let _ = writeln!(report, "| --- | --- | --- | --- | --- | --- |");
    let _ = writeln!(
        report,
        "| {} | {:.1} MB | {:.1} MB | {:.1} MB | {:.2} KB | {} |",
        idle.connections, before as f64 / 1024.0, ready_rss as f64 / 1024.0, after as f64 / 1024.0,
        per_conn(after.max(ready_rss)) / 1024.0, idle.dropped + idle.errors
    );
    let _ = writeln!(report, "\n## 5. Connection rate\n");
    let _ = writeln!(report, "| connections | handshakes/s (WebSocket upgrade + Pitaya handshake, 200 at a time) |");
    let _ = writeln!(report, "| --- | --- |");
    let _ = writeln!(report, "| {} | {:.0} |", idle.connections, idle.handshakes_per_s);

    // Scenario 9 (before 6 too): echo per language through the same harness, and the memory of
    // a warm instance.
    eprintln!("bench: scenario 9 (echo per language, memory per instance)");
    let mut per_lang = Vec::new();
    for (lang, file) in [
        ("Rust", root.join("target/wasm/wasm32-wasip2/guest/echo_guest.wasm")),
        ("Python", polyglot(&root, "python-echo")?),
        ("JavaScript", polyglot(&root, "js-echo")?),
    ] {
        let dir = root.join("target").join("bench").join(format!("lang-{}", lang.to_lowercase()));
        std::fs::create_dir_all(&dir)?;
        let cache = root.join("target").join("bench").join("lang-cache");
        std::fs::write(
            dir.join("kiwano.toml"),
            format!(
                "[runtime]\ncache_dir = \"{}\"\n[servers.echo]\nfrontend = true\ncomponent = \"{}\"\n",
                cache.display(),
                file.display()
            ),
        )?;
        let project = dir.display().to_string();
        // A first start compiles the component into the cache: the memory measured below is a
        // server's that loaded it from there, without the compiler's leftovers.
        drop(kiwano(&root, &project, "echo", &[])?);
        let mut rss = Vec::new();
        for instances in ["1", "5"] {
            let (server, tcp, _ws) = kiwano(&root, &project, "echo", &[("KIWANO_SERVERS_ECHO_INSTANCES", instances)])?;
            // One call on every instance (affinity none spreads them), then the resident memory.
            let warm: Vec<String> = ["--addr", &format!("127.0.0.1:{tcp}"), "--transport", "tcp", "--connections", "10", "--warmup", "100ms", "--duration", "300ms", "--route", "echo.echo", "--body-size", "64"]
                .iter()
                .map(|a| (*a).to_owned())
                .collect();
            load(&root, &warm, || {})?;
            rss.push(server.rss_kb());
            if instances == "1" {
                let r = load(&root, &echo_args(tcp, "tcp", s.forward_conns, "echo.echo", s), || {})?;
                per_lang.push((lang, r, 0u64, 0u64, None));
            }
            drop(server);
        }
        // The same echo in untrusted mode: a fresh instance per call.
        let (server, tcp, _ws) = kiwano(&root, &project, "echo", &[("KIWANO_SERVERS_ECHO_INSTANCES", "1"), ("KIWANO_SERVERS_ECHO_UNTRUSTED", "true")])?;
        let untrusted = load(&root, &echo_args(tcp, "tcp", s.forward_conns, "echo.echo", s), || {})?;
        drop(server);
        if let Some(last) = per_lang.last_mut() {
            last.2 = rss[0];
            last.3 = rss[1];
            last.4 = Some(untrusted);
        }
    }

    // Scenario 8 (run before 6, which is in-process): a hot reload under load.
    eprintln!("bench: scenario 8 (hot reload under load)");
    let reload = {
        let http = free_port()?;
        let addr = format!("127.0.0.1:{http}");
        let env = [("KIWANO_APP_HTTP", addr.as_str()), ("KIWANO_APP_ADMIN_TOKEN", "bench")];
        let (server, tcp, _ws) = kiwano(&root, "examples/echo", "echo", &env)?;
        let when = humantime::parse_duration(s.warmup)? + humantime::parse_duration(s.duration)? / 2;
        // The reloader waits for the load to be connected, then for the middle of its run.
        let (go, ready) = std::sync::mpsc::channel::<()>();
        let reloader = std::thread::spawn(move || {
            ready.recv().ok()?;
            std::thread::sleep(when);
            let t = Instant::now();
            let answer = admin_post(&addr, "/admin/reload/echo", "bench");
            Some((t.elapsed(), answer))
        });
        let r = load(&root, &echo_args(tcp, "tcp", s.forward_conns, "echo.echo", s), move || {
            let _ = go.send(());
        })?;
        let took = reloader.join().ok().flatten();
        drop(server);
        (r, took)
    };

    // Scenario 10 (before 6 too): the cost of metrics and of traces on the echo of scenario 1
    // (TCP): both off, metrics on, traces on (to an OTLP receiver in this process that counts
    // the spans) sampled at 0 %, 1 % and 100 %, then both off again to show the drift.
    eprintln!("bench: scenario 10 (the cost of metrics and traces)");
    let sink_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let sink = sink_rt.block_on(kiwano_telemetry::receiver::Receiver::start_keeping(false))?;
    let endpoint = sink.endpoint();
    let traced = |ratio: &'static str| {
        vec![
            ("KIWANO_METRICS_ENABLED", "false"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", ratio),
        ]
    };
    let mut s10 = Vec::new();
    for (label, env) in [
        ("both off", vec![("KIWANO_METRICS_ENABLED", "false")]),
        ("metrics on", vec![("KIWANO_METRICS_ENABLED", "true")]),
        ("traces at 0 %", traced("0")),
        ("traces at 1 %", traced("0.01")),
        ("traces at 100 %", traced("1")),
        ("both off again", vec![("KIWANO_METRICS_ENABLED", "false")]),
    ] {
        let before = sink.count();
        let (server, tcp, _ws) = kiwano(&root, "examples/echo", "echo", &env)?;
        let r = load(&root, &echo_args(tcp, "tcp", s.forward_conns, "echo.echo", s), || {})?;
        drop(server);
        s10.push((label, r, sink.count() - before));
    }
    drop(sink_rt);

    // Scenario 6: the guest call itself, per language, and starting a component cold and cached.
    eprintln!("bench: scenario 6 (guest call cost, per language)");
    let _ = writeln!(report, "\n## 6. Guest call cost and component start, per language, in-process\n");
    let _ = writeln!(
        report,
        "| guest | warm call of a trivial handler (`echo.echo`, host → guest → host; target) | warm call with one host import (host → guest → host import → guest → host) | instance from the prepared component (+ `init`) | one call in untrusted mode (fresh instance + transaction) | component compiled (cold) | loaded from the cache (target ≤ 50 ms for Python and JS) | component size |"
    );
    let _ = writeln!(report, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (lang, file, route, target) in [
        ("Rust (`examples/echo`)", root.join("target/wasm/wasm32-wasip2/guest/echo_guest.wasm"), "echo.session", "≤ 1 µs"),
        ("Python (`tests/polyglot/python-echo`)", polyglot(&root, "python-echo")?, "echo.who", "≤ 5 µs"),
        ("JavaScript (`tests/polyglot/js-echo`)", polyglot(&root, "js-echo")?, "echo.who", "≤ 20 µs"),
    ] {
        let cache = root.join("target").join("bench").join("cache-probe");
        let _ = std::fs::remove_dir_all(&cache);
        let runtime = kiwano_runtime::Runtime::new(kiwano_runtime::RuntimeConfig { cache_dir: Some(cache.clone()), ..Default::default() })?;
        let t = Instant::now();
        let component = kiwano_runtime::Component::load(&runtime, &file)?;
        let cold = t.elapsed();
        let t = Instant::now();
        drop(kiwano_runtime::Component::load(&runtime, &file)?);
        let cached = t.elapsed();
        let calls = if lang.starts_with("Rust") { s.calls } else { s.calls / 10 };
        let trivial = kiwano_runtime::bench::call_cost(&runtime, &component, "echo.echo", calls, 1).map_err(anyhow::Error::msg)?;
        let cost = kiwano_runtime::bench::call_cost(&runtime, &component, route, calls, 200).map_err(anyhow::Error::msg)?;
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(
            report,
            "| {lang} | {:.3} µs ({target}) | {:.3} µs (`{route}`) | {:.1} µs | {:.1} µs | {:.0} ms | {:.1} ms | {:.1} MB |",
            trivial.per_call.as_secs_f64() * 1e6,
            cost.per_call.as_secs_f64() * 1e6,
            cost.instantiate.as_secs_f64() * 1e6,
            cost.untrusted.as_secs_f64() * 1e6,
            cold.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            size as f64 / 1e6
        );
        let _ = std::fs::remove_dir_all(&cache);
    }

    let _ = writeln!(report, "\n## 9. Echo per language, and the memory of a warm instance\n");
    let _ = writeln!(
        report,
        "The echo guest of each language (`examples/echo`, `tests/polyglot/python-echo`, `tests/polyglot/js-echo`; route `echo.echo`, 64-byte body) as server type `echo` with one instance, {} TCP connections; then the server's resident memory with 1 and with 5 warm instances.\n",
        s.forward_conns
    );
    let _ = writeln!(report, "| guest | req/s | p50 / p99 / max ms | errors | server RSS, 1 warm instance | 5 warm instances | per further instance | untrusted mode (`untrusted = true`): req/s, p50 / p99 ms, errors |");
    let _ = writeln!(report, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (lang, r, rss1, rss5, untrusted) in &per_lang {
        let per = (*rss5 as f64 - *rss1 as f64) / 4.0;
        let u = untrusted.as_ref().map_or_else(
            || "—".to_owned(),
            |u| format!("{:.0}, {} / {}, {}", u.rps, ms(u.latency.p50_us), ms(u.latency.p99_us), u.errors),
        );
        let _ = writeln!(
            report,
            "| {lang} | {:.0} | {} / {} / {} | {} | {:.1} MB | {:.1} MB | {:.2} MB | {u} |",
            r.rps, ms(r.latency.p50_us), ms(r.latency.p99_us), ms(r.latency.max_us), r.errors, *rss1 as f64 / 1024.0, *rss5 as f64 / 1024.0, per / 1024.0
        );
    }
    let (r, took) = reload;
    let _ = writeln!(report, "\n## 8. A hot reload under load\n");
    let _ = writeln!(
        report,
        "`examples/echo`, {} TCP connections echoing; halfway through, `POST /admin/reload/echo` swaps in the component again (loaded from the compiled-component cache, instantiated, `init`ed, swapped at a call boundary).\n",
        s.forward_conns
    );
    let _ = writeln!(report, "| reload took (HTTP request to answer) | answer | req/s over the run | p50 / p99 / max ms over the run (max: the slowest request, the reload's included) | errors (bar 0) |");
    let _ = writeln!(report, "| --- | --- | --- | --- | --- |");
    let (t, answer) = took.map_or((String::from("—"), String::from("no reload happened")), |(d, a)| (format!("{:.1} ms", d.as_secs_f64() * 1e3), a));
    let _ = writeln!(report, "| {t} | `{}` | {:.0} | {} / {} / {} | {} |", answer.trim(), r.rps, ms(r.latency.p50_us), ms(r.latency.p99_us), ms(r.latency.max_us), r.errors);
    let _ = writeln!(report, "\n## 10. The cost of metrics and of traces\n");
    let _ = writeln!(
        report,
        "`examples/echo` over TCP, {} connections: both off; metrics on (Pitaya's response-time and handler-delay summaries per route, Kiwano's guest-call histogram, per request); traces on, exported over OTLP/gRPC to a receiver in the harness, sampled at 0 %, 1 % and 100 % (`parentbased_traceidratio`; a span per message and per guest call); both off again, to show the drift.\n",
        s.forward_conns
    );
    let _ = writeln!(report, "| run | req/s | p50 / p99 / max ms | errors | spans received | ratio to both off |");
    let _ = writeln!(report, "| --- | --- | --- | --- | --- | --- |");
    let off = s10.first().map_or(1.0, |(_, r, _)| r.rps);
    for (label, r, spans) in &s10 {
        let _ = writeln!(
            report,
            "| {label} | {:.0} | {} / {} / {} | {} | {spans} | {:.2} |",
            r.rps, ms(r.latency.p50_us), ms(r.latency.p99_us), ms(r.latency.max_us), r.errors, r.rps / off.max(1e-9)
        );
    }
    let _ = writeln!(report, "\nProduced by `{command}` in {:.0} s.", started.elapsed().as_secs_f64());
    println!("{report}");
    write_report(&args.out, "kiwano bench", command, &report, "Benchmarks")?;
    Ok(())
}

/// `POST target` to the HTTP listener at `addr` with the admin `token`; the answer's status line
/// and body, or why there is none.
fn admin_post(addr: &str, target: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let request = format!("POST {target} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let sent = std::net::TcpStream::connect(addr).and_then(|mut s| {
        s.write_all(request.as_bytes())?;
        s.read_to_string(&mut answer)
    });
    match sent {
        Ok(_) => {
            let status = answer.lines().next().unwrap_or_default().to_owned();
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_owned();
            format!("{status} {body}")
        }
        Err(e) => format!("no answer: {e}"),
    }
}

/// The component of the polyglot test guest `name` (`tests/polyglot/<name>`), built with its
/// language's helper when missing (componentize-py, componentize-js: tests/setup.sh installs
/// them).
fn polyglot(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let out = root.join("target").join("polyglot").join(format!("{name}.wasm"));
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().context("target dir")?)?;
    let src = root.join("tests").join("polyglot").join(name);
    let status = if name.starts_with("python") {
        Command::new("bash").arg(root.join("guest-sdk/python/build.sh")).arg(&src).arg("app").arg(&out).status()?
    } else {
        Command::new("node").arg(root.join("guest-sdk/js/componentize.mjs")).arg(src.join("echo.js")).arg(&out).status()?
    };
    if !status.success() {
        bail!("building {name} failed ({status}): run tests/setup.sh");
    }
    Ok(out)
}

/// Replaces the generated part of a report file (between the `<!-- {marker}: begin/end -->`
/// lines), keeping the rest; a file without that part gets it at its end, a new file is headed
/// `# {title}`.
pub(crate) fn write_report(path: &Path, marker: &str, command: &str, body: &str, title: &str) -> anyhow::Result<()> {
    let (begin, end) = (format!("<!-- {marker}: begin -->"), format!("<!-- {marker}: end -->"));
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let generated = format!("{begin}\n`{command}`\n\n{body}{end}");
    let text = match (existing.find(&begin), existing.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &existing[..a], generated, &existing[b + end.len()..]),
        // A file without this report's part keeps what it has; the part goes at its end.
        _ if !existing.trim().is_empty() => format!("{}\n\n{generated}\n", existing.trim_end()),
        _ => format!("# {title}\n\n{generated}\n"),
    };
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
