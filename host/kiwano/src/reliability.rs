//! `kiwano reliability`: the attacks and misbehaving guests of the hardening review, at the
//! review's scale, against `kiwano run` processes of the test guest (`tests/guests/testbed`),
//! each with a bystander client served throughout. Prints the figures next to the review's and
//! to the bounds Kiwano documents, and writes the generated part of `RELIABILITY.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiwano_client::{Client, Transport, rawws};
use kiwano_protocol::message::{self, EncodeOptions};
use kiwano_protocol::packet::{self, PacketType};
use kiwano_protocol::{Message, RouteDictionary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench::{Server, kiwano, log_path};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct ReliabilityArgs {
    /// Small sizes, seconds long, to check the harness (no figures worth keeping).
    #[arg(long)]
    pub smoke: bool,
    /// Where to write the report.
    #[arg(long, default_value = "RELIABILITY.md")]
    pub out: PathBuf,
    /// The repository root.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Only these groups of scenarios (comma-separated: memory, guests, faults, heartbeats,
    /// shutdown); the report then holds only their rows.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

struct Sizes {
    pre_handshake: usize,
    tcp_held: usize,
    ws_held: usize,
    ping_flood: Duration,
    inflate_clients: usize,
    inflate_requests: usize,
    big_handshakes: usize,
    timer_run: Duration,
    timer_storm: u32,
    printed: u32,
    heartbeat: u64,
    heartbeat_intervals: u32,
    fuzz: Duration,
}

const FULL: Sizes = Sizes {
    pre_handshake: 1000,
    tcp_held: 1000,
    ws_held: 2000,
    ping_flood: Duration::from_secs(9),
    inflate_clients: 8,
    // 2.5 MB in 1 KiB requests.
    inflate_requests: 2500,
    big_handshakes: 500,
    timer_run: Duration::from_secs(10),
    timer_storm: 100_000,
    printed: 100_000,
    heartbeat: 2,
    heartbeat_intervals: 10,
    fuzz: Duration::from_secs(60),
};

const SMOKE: Sizes = Sizes {
    pre_handshake: 20,
    tcp_held: 20,
    ws_held: 20,
    ping_flood: Duration::from_millis(500),
    inflate_clients: 2,
    inflate_requests: 20,
    big_handshakes: 5,
    timer_run: Duration::from_secs(1),
    timer_storm: 2000,
    printed: 2000,
    heartbeat: 1,
    heartbeat_intervals: 3,
    fuzz: Duration::from_secs(2),
};

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// A report row: the review's scenario, its figure then, the figure now, the bound.
struct Row {
    scenario: String,
    before: &'static str,
    now: String,
    bound: &'static str,
}

/// The test server's project, written under `target/reliability`.
fn project(root: &Path) -> anyhow::Result<String> {
    let dir = root.join("target").join("reliability").join("testbed");
    std::fs::create_dir_all(&dir)?;
    let wasm = root.join("target/wasm/wasm32-wasip2/guest/testbed_guest.wasm");
    let config = format!(
        r#"# Written by `kiwano reliability`: the test guest, its acceptors given by the harness.
[runtime]
cache_dir = "{cache}"

[servers.testbed]
frontend = true
component = "{wasm}"
build = "cd {root} && cargo build -q -p testbed-guest --target wasm32-wasip2 --profile guest --target-dir target/wasm"
sources = ["{root}/tests/guests/testbed", "{root}/guest-sdk", "{root}/wit"]
id = "testbed-1"
instances = 1
memory_limit = 134217728

[[servers.testbed.acceptors]]
kind = "tcp"
address = "127.0.0.1:0"
"#,
        cache = root.join("target/test-cache").display(),
        wasm = wasm.display(),
        root = root.display(),
    );
    std::fs::write(dir.join("kiwano.toml"), config)?;
    Ok("target/reliability/testbed".into())
}

/// A client served throughout an attack: an echo every 10 ms; the slowest answer, and whether
/// every request was answered.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, u64)>,
}

impl Bystander {
    async fn start(addr: &str) -> anyhow::Result<Self> {
        let mut c = connect(addr).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let addr = addr.to_owned();
        let task = tokio::spawn(async move {
            let (mut worst, mut failed) = (Duration::ZERO, 0);
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(10), c.request("test.echo", b"bystander")).await {
                    Ok(Ok(r)) if !r.error => worst = worst.max(t.elapsed()),
                    _ => {
                        failed += 1;
                        match connect(&addr).await {
                            Ok(n) => c = n,
                            Err(_) => return (worst, failed),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (worst, failed)
        });
        Ok(Self { stop, task })
    }

    /// `served in ≤ X ms` or how many failed.
    async fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok((worst, 0)) => format!("bystander answered, slowest {:.0} ms", worst.as_secs_f64() * 1000.0),
            Ok((_, failed)) => format!("bystander: {failed} requests failed"),
            Err(_) => "bystander task failed".into(),
        }
    }
}

async fn connect(addr: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(addr, Transport::Tcp, None).await?;
    c.handshake(&serde_json::json!({"sys": {"platform": "kiwano-reliability"}})).await?;
    Ok(c)
}

/// The peak resident memory of a process while it is watched, in KiB.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl Peak {
    fn watch(server: &Server) -> Self {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, p) = (stop.clone(), peak.clone());
        let status = format!("/proc/{}/status", server.child.id());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let kb = std::fs::read_to_string(&status)
                    .ok()
                    .and_then(|t| t.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_owned))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0);
                p.fetch_max(kb, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop, peak }
    }

    fn kb(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether the server closes `s` within `within` (reading and dropping what it sends).
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut scrap = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut scrap).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The resident memory once it settles after an attack: sampled until it stops falling.
async fn settled(server: &Server) -> u64 {
    let mut last = server.rss_kb();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = server.rss_kb();
        if now + 256 >= last {
            return now;
        }
        last = now;
    }
    last
}

/// Starts the test server with `env` overrides; its TCP and WebSocket addresses.
async fn start(root: &Path, project: &str, env: &[(&str, &str)]) -> anyhow::Result<(Server, String, String)> {
    let (server, tcp, ws) = kiwano(root, project, "testbed", env)?;
    Ok((server, format!("127.0.0.1:{tcp}"), format!("127.0.0.1:{ws}")))
}

/// Warms the server (a few clients come and go) and returns its resident memory, in KiB.
async fn warm(server: &Server, addr: &str) -> anyhow::Result<u64> {
    for _ in 0..20 {
        let mut c = connect(addr).await?;
        c.request("test.echo", b"warm").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(server.rss_kb())
}

async fn memory(root: &Path, project: &str, s: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // Announced bodies, before and after the handshake. Every client here comes from 127.0.0.1:
    // the per-address cap (1024 by default) would refuse most of them first.
    let (server, tcp, ws) = start(root, project, &[("KIWANO_SERVERS_TESTBED_MAX_CONNECTIONS_PER_ADDRESS", "10000")]).await?;
    let base = warm(&server, &tcp).await?;
    let by = Bystander::start(&tcp).await?;
    let peak = Peak::watch(&server);
    let mut refused = 0;
    let mut pre = Vec::new();
    for _ in 0..s.pre_handshake {
        let mut c = TcpStream::connect(&tcp).await?;
        c.write_all(&[1, 0x10, 0, 0]).await?;
        let _ = c.write_all(&[b'{'; 16]).await;
        pre.push(c);
    }
    for c in &mut pre {
        if closed_by_server(c, Duration::from_secs(5)).await {
            refused += 1;
        }
    }
    let pre_growth = peak.kb().saturating_sub(base);
    drop(pre);
    rows.push(Row {
        scenario: format!("{} TCP connections announce a 1 MiB packet before the handshake, send 20 bytes", s.pre_handshake),
        before: "1.18 GB of RSS",
        now: format!("{refused} closed at the header (handshake limit 16 KiB); peak growth {}", mb(pre_growth)),
        bound: "refused from the header; `protocol.max_handshake`",
    });
    let mut held_tcp = Vec::new();
    for _ in 0..s.tcp_held {
        let mut c = connect(&tcp).await?;
        c.send_raw(&[&[4u8, 0x10, 0, 0][..], &[0; 20]].concat()).await?;
        held_tcp.push(c);
    }
    let mut held_ws = Vec::new();
    for _ in 0..s.ws_held {
        let mut c = rawws::try_handshaken(&ws).await?;
        c.write_all(&rawws::frame_header(0x2, (1 << 20) + 4)).await?;
        c.write_all(&[4, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await?;
        held_ws.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = server.rss_kb().saturating_sub(base);
    let n = (s.tcp_held + s.ws_held) as f64;
    rows.push(Row {
        scenario: format!(
            "after the handshake, {} TCP and {} WebSocket connections announce 1 MiB (a packet, a frame), send 20 bytes, hold",
            s.tcp_held, s.ws_held
        ),
        before: "1.18 GB (1000 TCP), 2.3 GB (2000 WS)",
        now: format!("{} in all, {:.1} KB a connection", mb(held), held as f64 / n),
        bound: "what was sent, plus an idle connection's few KB",
    });
    drop(held_tcp);
    drop(held_ws);
    let after = settled(&server).await;
    rows.push(Row {
        scenario: "those connections closed".into(),
        before: "—",
        now: format!("RSS {} above where it started", mb(after.saturating_sub(base))),
        bound: "back near the start",
    });

    // A WebSocket client flooding pings, never reading.
    let peak_before = server.rss_kb();
    let peak = Peak::watch(&server);
    let mut flood = rawws::try_handshaken(&ws).await?;
    let ping = rawws::frame(0x9, &[7u8; 125]);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 100).collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < s.ping_flood {
        if flood.write_all(&burst).await.is_err() {
            break;
        }
        sent += 100;
    }
    // Only now does the client read: has the server closed the connection?
    let closed = closed_by_server(&mut flood, Duration::from_secs(5)).await;
    let growth = peak.kb().saturating_sub(peak_before);
    drop(flood);
    rows.push(Row {
        scenario: format!("a WebSocket client floods pings for {:?} and never reads", s.ping_flood),
        before: "35 MB → 1 GB in 9 s (debug build)",
        now: format!(
            "{} pings written into the socket; {}; peak growth {}",
            sent,
            if closed { "closed by the server (more than 64 control frames in an interval)" } else { "not closed" },
            mb(growth)
        ),
        bound: "64 ping/pong frames per heartbeat interval; write buffer one packet + 64 KiB",
    });

    // 1 MiB handshakes.
    let before = server.rss_kb();
    let peak = Peak::watch(&server);
    let big = packet::to_bytes(PacketType::Handshake, &vec![b' '; 1 << 20])?;
    let mut refused = 0;
    for _ in 0..s.big_handshakes {
        let mut c = TcpStream::connect(&tcp).await?;
        let _ = c.write_all(&big).await;
        if closed_by_server(&mut c, Duration::from_secs(5)).await {
            refused += 1;
        }
    }
    rows.push(Row {
        scenario: format!("{} connections send a 1 MiB handshake", s.big_handshakes),
        before: "accepted and kept: ~2 MB RSS a connection",
        now: format!("{refused} refused from the header; peak growth {}", mb(peak.kb().saturating_sub(before))),
        bound: "`protocol.max_handshake` (16 KiB)",
    });
    rows.push(Row { scenario: "bystander during the above".into(), before: "—", now: by.finish().await, bound: "served" });
    drop(server);

    // Compressed requests inflating to 1 MiB each, compression off, clients never reading.
    let (server, addr, _) = start(root, project, &[("KIWANO_PROTOCOL_COMPRESSION", "false")]).await?;
    let base = warm(&server, &addr).await?;
    let by = Bystander::start(&addr).await?;
    let peak = Peak::watch(&server);
    let m = Message::request(1, "test.echo", bytes::Bytes::from(vec![0u8; 1 << 20]));
    let mut clients = Vec::new();
    for _ in 0..s.inflate_clients {
        clients.push(connect(&addr).await?);
    }
    let mut uploaded = 0usize;
    let mut tasks = Vec::new();
    for mut c in clients {
        let n = s.inflate_requests;
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let dict = RouteDictionary::default();
            let mut sent = 0usize;
            for i in 0..n {
                let mut m = m.clone();
                m.id = (i + 1) as u64;
                let Ok(body) = message::to_bytes(&m, EncodeOptions { dictionary: &dict, compress: true }) else { break };
                let Ok(p) = packet::to_bytes(PacketType::Data, &body) else { break };
                if c.send_raw(&p).await.is_err() {
                    break;
                }
                sent += p.len();
            }
            (c, sent)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        if let Ok((c, sent)) = t.await {
            uploaded += sent;
            held.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let top = peak.kb().saturating_sub(base);
    drop(held);
    let after = settled(&server).await.saturating_sub(base);
    rows.push(Row {
        scenario: format!(
            "{} connections try to upload {:.1} MB each in ~1 KiB zlib requests inflating to 1 MiB, compression off, never reading ({:.1} MB got in before they were disconnected as too slow)",
            s.inflate_clients,
            s.inflate_requests as f64 * 1024.0 / 1e6,
            uploaded as f64 / s.inflate_clients as f64 / 1e6
        ),
        before: "1 GB at peak, 591 MB after they closed",
        now: format!("{} at peak, {} after they closed", mb(top), mb(after)),
        bound: "7 MiB a connection (CONFIG.md) + the instance's grown memory",
    });
    rows.push(Row { scenario: "bystander during the above".into(), before: "—", now: by.finish().await, bound: "served" });
    drop(server);
    Ok(())
}

async fn request(c: &mut Client, route: &str, body: &[u8]) -> anyhow::Result<(Message, Duration)> {
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), c.request(route, body)).await.context("no answer in 60 s")??;
    Ok((r, t.elapsed()))
}

fn outcome(m: &Message) -> String {
    if m.error {
        match kiwano_protocol::PitayaError::decode(&m.data, kiwano_protocol::Serializer::Json) {
            Ok(e) => format!("{} ({} bytes)", e.code, m.data.len()),
            Err(_) => format!("an error of {} bytes", m.data.len()),
        }
    } else {
        format!("{} bytes", m.data.len())
    }
}

async fn guests(root: &Path, project: &str, s: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // A 20 s sleep in WASI under a 2 s deadline, and a session behind it on the same instance.
    let (server, addr, _) = start(root, project, &[("KIWANO_SERVERS_TESTBED_CALL_TIMEOUT", "2s")]).await?;
    let (mut a, mut b) = (connect(&addr).await?, connect(&addr).await?);
    let t = Instant::now();
    let slept = a.send_request("test.sleep", b"20000").await?;
    let next = b.send_request("test.echo", b"next").await?;
    let r = tokio::time::timeout(Duration::from_secs(60), a.response(slept)).await??;
    let answered = t.elapsed();
    b.response(next).await?;
    let behind = t.elapsed();
    rows.push(Row {
        scenario: "a guest sleeps 20 s in WASI under a 2 s deadline".into(),
        before: "answered \"slept\" after 20 s; the instance's other sessions waited",
        now: format!("{} after {:.2} s; the session behind it answered after {:.2} s", outcome(&r), answered.as_secs_f64(), behind.as_secs_f64()),
        bound: "`call_timeout`",
    });
    drop(server);

    // A timer every 1 ms whose handler is busy 5 ms.
    let (server, addr, _) = start(root, project, &[]).await?;
    let mut c = connect(&addr).await?;
    let before = server.rss_kb();
    let (r, _) = request(&mut c, "test.busytimer", b"[1,5]").await?;
    let id = String::from_utf8_lossy(&r.data).into_owned();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut calls = 0;
    while started.elapsed() < s.timer_run {
        let (_, took) = request(&mut c, "test.echo", b"call").await?;
        worst = worst.max(took);
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth = server.rss_kb().saturating_sub(before);
    let (cancel, _) = request(&mut c, "test.cancel", id.as_bytes()).await?;
    rows.push(Row {
        scenario: format!("`every(1 ms)` with a 5 ms handler, for {:?}", s.timer_run),
        before: "the instance stalled for good (calls and `cancel` never ran); +4.5 MB/s",
        now: format!(
            "{calls} calls answered, slowest {:.0} ms; cancel → {}; RSS {:+.1} MB",
            worst.as_secs_f64() * 1000.0,
            String::from_utf8_lossy(&cancel.data),
            growth as f64 / 1024.0
        ),
        bound: "one tick waiting per timer; calls take turns with ticks",
    });

    // A timer storm.
    let before = server.rss_kb();
    let (r, took) = request(&mut c, "test.timerstorm", s.timer_storm.to_string().as_bytes()).await?;
    rows.push(Row {
        scenario: format!("{} one-hour timers in one call", s.timer_storm),
        before: "55 MB a call, no cap",
        now: format!("\"{}\" in {:.0} ms; RSS {:+.1} MB", String::from_utf8_lossy(&r.data), took.as_secs_f64() * 1000.0, server.rss_kb().saturating_sub(before) as f64 / 1024.0),
        bound: "`max_timers` (1024) an instance",
    });

    // 100 000 lines printed in one call.
    let log = log_path(root, &format!("kiwano-{}", project.replace('/', "-")));
    drop(server);
    let (server, addr, _) = start(root, project, &[("KIWANO_LOG", "info")]).await?;
    let mut c = connect(&addr).await?;
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    request(&mut c, "test.print", s.printed.to_string().as_bytes()).await?;
    request(&mut c, "test.echo", b"flush").await?;
    let grown = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0).saturating_sub(before);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let logged = text.lines().filter(|l| l.contains("[stdout] line ")).count();
    rows.push(Row {
        scenario: format!("{} lines printed to stdout in one call", s.printed),
        before: "75 MB of log",
        now: format!("{logged} lines logged, the rest counted; the log grew {:.1} KB", grown as f64 / 1024.0),
        bound: "`log_rate` (100 lines/s an instance)",
    });

    // An RPC to this server's own single remote instance from inside it.
    let body = serde_json::json!({"route": "testbed.remote.cycle", "body": "x", "server_id": "testbed-1"}).to_string();
    let (r, took) = request(&mut c, "test.rpc", body.as_bytes()).await?;
    rows.push(Row {
        scenario: "a remote calls its own type's single remote instance".into(),
        before: "waited for its own 5 s timeout",
        now: format!("{} after {:.0} ms", outcome(&r), took.as_secs_f64() * 1000.0),
        bound: "at once",
    });
    drop(server);

    // Giant errors, compression off.
    let (server, addr, _) = start(root, project, &[("KIWANO_PROTOCOL_COMPRESSION", "false")]).await?;
    let mut c = connect(&addr).await?;
    for (size, before) in [(5_000_000u32, "sent in full"), (17_000_000, "an empty packet: never answered, nothing logged")] {
        let (r, took) = request(&mut c, "test.bigerror", size.to_string().as_bytes()).await?;
        rows.push(Row {
            scenario: format!("a guest error of {:.0} MB", f64::from(size) / 1e6),
            before,
            now: format!("{} after {:.0} ms", outcome(&r), took.as_secs_f64() * 1000.0),
            bound: "`max_response` (1 MiB): PIT-500",
        });
    }
    drop(server);
    Ok(())
}

/// Malformed connections as fast as one client opens them, for a while: how much the log grows
/// (at `info`, the default).
async fn fault_log(root: &Path, project: &str, s: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (server, addr, ws) = start(root, project, &[("KIWANO_LOG", "info")]).await?;
    let log = log_path(root, &format!("kiwano-{}", project.replace('/', "-")));
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < s.fuzz {
        // A wrong packet type, a body over the handshake limit, a WebSocket reset without a
        // close frame, a TLS-less client on a TCP port sending HTTP.
        let garbage: &[u8] = match n % 3 {
            0 => &[9, 0, 0, 0],
            1 => &[1, 0xff, 0xff, 0xff],
            _ => b"GET / HTTP/1.1\r\n\r\n",
        };
        if let Ok(mut c) = TcpStream::connect(&addr).await {
            let _ = c.write_all(garbage).await;
            n += 1;
        }
        if n % 10 == 0 {
            if let Ok(c) = rawws::try_handshaken(&ws).await {
                let _ = c.set_zero_linger();
                n += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server);
    let grown = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0).saturating_sub(before);
    // Kept for a look at what the log said.
    let _ = std::fs::copy(&log, root.join("target/reliability/fault-log.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let about_faults = text.lines().filter(|l| l.contains("kind=\"") || l.contains("not logged one by one")).count();
    let guest = text.lines().filter(|l| l.contains("route=\"on-session-close\"")).count();
    rows.push(Row {
        scenario: format!("{n} malformed or reset connections in {:?}", s.fuzz),
        before: "a WARN line each: 20 MB of log a minute",
        now: format!(
            "the log grew {:.1} KB: {about_faults} lines about the faults; {guest} of the test guest's own (it logs every session close, within its 100 lines/s)",
            grown as f64 / 1024.0
        ),
        bound: "one line per kind of fault per 10 s, and a count",
    });
    Ok(())
}

/// Clients that heartbeat one interval after each server heartbeat (pomelo), `n` of them;
/// how many the server dropped.
async fn heartbeats(root: &Path, project: &str, s: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let interval = format!("{}s", s.heartbeat);
    let (server, addr, _) = start(root, project, &[("KIWANO_PROTOCOL_HEARTBEAT_INTERVAL", interval.as_str())]).await?;
    let period = Duration::from_secs(s.heartbeat);
    let keep = period * s.heartbeat_intervals;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = connect(&addr).await?;
        tasks.push(tokio::spawn(async move {
            let end = Instant::now() + keep;
            let mut next: Option<Instant> = None;
            loop {
                let wake = next.map_or(end, |n| n.min(end));
                tokio::select! {
                    p = c.recv_packet() => match p {
                        Ok(Some(p)) if p.kind == PacketType::Heartbeat => {
                            if next.is_none() {
                                next = Some(Instant::now() + period);
                            }
                        }
                        Ok(Some(_)) => {}
                        _ => return false,
                    },
                    () = tokio::time::sleep_until(wake.into()) => {
                        if Instant::now() >= end {
                            return c.request("test.echo", b"alive").await.is_ok();
                        }
                        if c.heartbeat().await.is_err() {
                            return false;
                        }
                        next = None;
                    }
                }
            }
        }));
    }
    let mut kept = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            kept += 1;
        }
    }
    rows.push(Row {
        scenario: format!(
            "6 pomelo-style clients (a heartbeat one interval after each server heartbeat), {} s interval, {} intervals",
            s.heartbeat, s.heartbeat_intervals
        ),
        before: "6 of 6 dropped at 4.00 s (2 s interval)",
        now: format!("{} of 6 dropped", 6 - kept),
        bound: "silence of two intervals and a second",
    });
    drop(server);
    Ok(())
}

async fn shutdown(root: &Path, project: &str, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    for (timeout, second) in [("2s", false), ("60s", true)] {
        let env = [("KIWANO_APP_SHUTDOWN_TIMEOUT", timeout), ("KIWANO_SERVERS_TESTBED_CALL_TIMEOUT", "60s"), ("KIWANO_LOG", "info")];
        let (mut server, addr, _) = start(root, project, &env).await?;
        let mut c = connect(&addr).await?;
        c.send_request("test.loop", b"").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = server.child.id().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        if second {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = std::process::Command::new("kill").args(["-INT", &pid]).status();
        }
        let t = Instant::now();
        let mut exited = None;
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = server.child.try_wait() {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = std::fs::read_to_string(log_path(root, &format!("kiwano-{}", project.replace('/', "-")))).unwrap_or_default();
        let panic = if log.contains("panicked") { ", a panic logged" } else { ", no panic" };
        let took = t.elapsed().as_secs_f64();
        rows.push(Row {
            scenario: if second {
                "a second signal 0.5 s into a 60 s shutdown with a guest stuck in a call".into()
            } else {
                "SIGTERM with a guest stuck in a call, `shutdown_timeout` 2 s".into()
            },
            before: if second { "ignored" } else { "twice `shutdown_timeout`, and a host panic backtrace" },
            now: match exited {
                Some(s) => format!("exited ({s}) {took:.2} s after the {}{panic}", if second { "second signal" } else { "signal" }),
                None => "still running after 30 s".into(),
            },
            bound: if second { "at once" } else { "`shutdown_timeout`" },
        });
    }
    Ok(())
}

/// Runs every scenario and writes the report.
///
/// # Errors
/// A server failing to start or an attack failing to run.
pub fn run(args: &ReliabilityArgs) -> anyhow::Result<()> {
    let root = args.root.canonicalize().context("--root")?;
    let s = if args.smoke { &SMOKE } else { &FULL };
    let started = Instant::now();
    let project = project(&root)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    let wanted = |group: &str| args.only.is_empty() || args.only.iter().any(|o| o == group);
    rt.block_on(async {
        if wanted("memory") {
            eprintln!("reliability: memory");
            memory(&root, &project, s, &mut rows).await?;
        }
        if wanted("guests") {
            eprintln!("reliability: guests");
            guests(&root, &project, s, &mut rows).await?;
        }
        if wanted("faults") {
            eprintln!("reliability: the fault log");
            fault_log(&root, &project, s, &mut rows).await?;
        }
        if wanted("heartbeats") {
            eprintln!("reliability: heartbeats");
            heartbeats(&root, &project, s, &mut rows).await?;
        }
        if wanted("shutdown") {
            eprintln!("reliability: shutdown");
            shutdown(&root, &project, &mut rows).await?;
        }
        anyhow::Ok(())
    })?;
    if rows.is_empty() {
        bail!("no scenario ran");
    }
    let command = if args.smoke { "kiwano reliability --smoke" } else { "kiwano reliability" };
    let mut report = String::new();
    let _ = writeln!(report, "| scenario | in the review | now | bound |");
    let _ = writeln!(report, "| --- | --- | --- | --- |");
    for r in &rows {
        let _ = writeln!(report, "| {} | {} | {} | {} |", r.scenario, r.before, r.now, r.bound);
    }
    let _ = writeln!(report, "\nProduced by `{command}` in {:.0} s.", started.elapsed().as_secs_f64());
    println!("{report}");
    crate::bench::write_report(&args.out, "kiwano reliability", command, &report, "Reliability")
}
