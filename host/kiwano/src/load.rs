//! `kiwano load`: the load generator. N connections over TCP or WebSocket, each handshakes and
//! then runs a closed loop of requests (a pipeline of `depth` in flight) for a fixed duration
//! after a warm-up; or members of a group receiving broadcasts; or idle connections held through
//! heartbeat intervals. Loopback only, bounded in time and count. Prints a JSON result.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiwano_client::{Client, Transport};
use kiwano_protocol::MessageType;
use kiwano_protocol::packet::PacketType;
use serde::Serialize;
use tokio::sync::{Barrier, Semaphore};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:3250")]
    pub addr: String,
    /// `tcp` or `ws`.
    #[arg(long, default_value = "tcp")]
    pub transport: String,
    /// `echo` (request loop), `broadcast` (group members) or `idle` (held connections).
    #[arg(long, default_value = "echo")]
    pub mode: String,
    /// Connections (echo, idle) or group members (broadcast).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Measured time (echo).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before it (echo).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Requests in flight per connection (echo).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Request route (echo).
    #[arg(long, default_value = "echo.echo")]
    pub route: String,
    /// Size of the JSON request body in bytes (echo).
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Broadcasts to send (broadcast).
    #[arg(long, default_value_t = 100)]
    pub broadcasts: usize,
    /// How long to hold the connections (idle).
    #[arg(long, default_value = "12s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
}

/// Latency figures in microseconds.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Latency {
    pub(crate) fn of(mut samples: Vec<u32>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| u64::from(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        Self { p50_us: at(0.5), p90_us: at(0.9), p99_us: at(0.99), max_us: at(1.0) }
    }
}

/// The result of a run.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct LoadResult {
    /// The mode.
    pub mode: String,
    /// The transport.
    pub transport: String,
    /// Connections (or members).
    pub connections: usize,
    /// Handshakes per second while connecting.
    pub handshakes_per_s: f64,
    /// Requests completed in the measured window (echo).
    pub requests: u64,
    /// Requests per second (echo).
    pub rps: f64,
    /// Request latency (echo), or broadcast completion time (broadcast).
    pub latency: Latency,
    /// Pushes delivered per second (broadcast).
    pub pushes_per_s: f64,
    /// Errors (failed requests, failed connects).
    pub errors: u64,
    /// Connections the server dropped (idle).
    pub dropped: u64,
}

fn transport(name: &str) -> anyhow::Result<Transport> {
    Ok(match name {
        "tcp" => Transport::Tcp,
        "ws" => Transport::Ws,
        other => bail!("--transport {other:?}: want tcp or ws"),
    })
}

fn check_loopback(addr: &str) -> anyhow::Result<()> {
    let sa: std::net::SocketAddr = addr.parse().with_context(|| format!("--addr {addr:?} is not ip:port"))?;
    if !sa.ip().is_loopback() {
        bail!("--addr {addr}: the load generator only targets loopback addresses");
    }
    Ok(())
}

/// A JSON body of exactly `size` bytes (at least `{"d":""}`).
pub fn body(size: usize) -> Vec<u8> {
    let pad = size.saturating_sub(8);
    format!("{{\"d\":\"{}\"}}", "x".repeat(pad)).into_bytes()
}

/// One connection, handshaken; bounded so that a server that stops accepting cannot hang the
/// run.
async fn connect_one(addr: &str, t: Transport) -> Option<Client> {
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut c = Client::connect(addr, t, None).await.ok()?;
        c.handshake(&serde_json::json!({"sys": {"platform": "kiwano-load"}})).await.ok()?;
        Some(c)
    })
    .await
    .ok()
    .flatten()
}

async fn connect_all(args: &LoadArgs, t: Transport, n: usize) -> (Vec<Client>, f64, u64) {
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let gate = gate.clone();
        let addr = args.addr.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            connect_one(&addr, t).await
        }));
    }
    let mut clients = Vec::with_capacity(n);
    let mut errors = 0;
    for task in tasks {
        match task.await.ok().flatten() {
            Some(c) => clients.push(c),
            None => errors += 1,
        }
    }
    let rate = clients.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    (clients, rate, errors)
}

/// Runs the load and returns its result.
///
/// # Errors
/// Bad arguments.
pub async fn run(args: LoadArgs) -> anyhow::Result<LoadResult> {
    check_loopback(&args.addr)?;
    let t = transport(&args.transport)?;
    match args.mode.as_str() {
        "echo" => echo(&args, t).await,
        "broadcast" => broadcast(&args, t).await,
        "idle" => idle(&args, t).await,
        other => bail!("--mode {other:?}: want echo, broadcast or idle"),
    }
}

async fn echo(args: &LoadArgs, t: Transport) -> anyhow::Result<LoadResult> {
    let (clients, handshakes_per_s, connect_errors) = connect_all(args, t, args.connections).await;
    let body = Arc::new(body(args.body_size));
    let barrier = Arc::new(Barrier::new(clients.len() + 1));
    let errors = Arc::new(AtomicU64::new(connect_errors));
    let mut tasks = Vec::new();
    for mut c in clients {
        let (barrier, body, errors, route) = (barrier.clone(), body.clone(), errors.clone(), args.route.clone());
        let (warmup, duration, depth) = (args.warmup, args.duration, args.depth.max(1));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            let (measure_from, end) = (start + warmup, start + warmup + duration);
            let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(depth);
            let mut samples = Vec::new();
            let mut done = 0u64;
            loop {
                let now = Instant::now();
                while in_flight.len() < depth && now < end {
                    match c.send_request(&route, &body).await {
                        Ok(id) => in_flight.push_back((id, Instant::now())),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return (samples, done);
                        }
                    }
                }
                let Some((id, sent)) = in_flight.pop_front() else { return (samples, done) };
                match c.next_message().await {
                    Ok(m) if m.kind == MessageType::Response && m.id == id && !m.error => {
                        if sent >= measure_from && sent < end {
                            samples.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            done += 1;
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return (samples, done);
                    }
                }
            }
        }));
    }
    barrier.wait().await;
    // Tell the orchestrator (bench) that the run starts: warm-up, then the measured window.
    println!("READY {}", args.connections);
    let mut samples = Vec::new();
    let mut requests = 0;
    for task in tasks {
        if let Ok((s, d)) = task.await {
            samples.extend(s);
            requests += d;
        }
    }
    Ok(LoadResult {
        mode: "echo".into(),
        transport: args.transport.clone(),
        connections: args.connections,
        handshakes_per_s,
        requests,
        rps: requests as f64 / args.duration.as_secs_f64(),
        latency: Latency::of(samples),
        errors: errors.load(Ordering::Relaxed),
        ..LoadResult::default()
    })
}

async fn broadcast(args: &LoadArgs, t: Transport) -> anyhow::Result<LoadResult> {
    let n = args.connections;
    let (mut clients, handshakes_per_s, connect_errors) = connect_all(args, t, n).await;
    if clients.is_empty() {
        bail!("no member could connect");
    }
    // Join one at a time: each join pushes to every member so far.
    for c in &mut clients {
        let r = c.request("room.join", b"{}").await.context("room.join")?;
        if r.error {
            bail!("room.join failed: {}", String::from_utf8_lossy(&r.data));
        }
    }
    let members = clients.len();
    let rounds = args.broadcasts;
    let received: Arc<Vec<AtomicUsize>> = Arc::new((0..rounds).map(|_| AtomicUsize::new(0)).collect());
    let done = Arc::new(tokio::sync::Notify::new());
    let mut sender = clients.remove(0);
    let mut tasks = Vec::new();
    let spawn_reader = |mut c: Client, received: Arc<Vec<AtomicUsize>>, done: Arc<tokio::sync::Notify>| {
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < rounds {
                let Ok(m) = c.next_message().await else { return c };
                if m.route != "onMessage" {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap_or_default();
                if let Some(k) = v["content"].as_str().and_then(|s| s.parse::<usize>().ok()).filter(|k| *k < rounds) {
                    seen += 1;
                    if received[k].fetch_add(1, Ordering::AcqRel) + 1 == members {
                        done.notify_one();
                    }
                }
            }
            c
        })
    };
    for c in clients {
        tasks.push(spawn_reader(c, received.clone(), done.clone()));
    }
    let mut samples = Vec::with_capacity(rounds);
    let start = Instant::now();
    for k in 0..rounds {
        let sent = Instant::now();
        sender.notify("room.message", format!(r#"{{"name":"bench","content":"{k}"}}"#).as_bytes()).await?;
        // The sender is a member too: it reads its own copy.
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), sender.next_message()).await.context("broadcast stalled")??;
            if m.route == "onMessage" {
                break;
            }
        }
        if received[k].fetch_add(1, Ordering::AcqRel) + 1 < members {
            tokio::time::timeout(Duration::from_secs(30), async {
                while received[k].load(Ordering::Acquire) < members {
                    done.notified().await;
                }
            })
            .await
            .context("broadcast never reached every member")?;
        }
        samples.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    let elapsed = start.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    Ok(LoadResult {
        mode: "broadcast".into(),
        transport: args.transport.clone(),
        connections: members,
        handshakes_per_s,
        requests: rounds as u64,
        pushes_per_s: (members * rounds) as f64 / elapsed.as_secs_f64(),
        latency: Latency::of(samples),
        errors: connect_errors,
        ..LoadResult::default()
    })
}

async fn idle(args: &LoadArgs, t: Transport) -> anyhow::Result<LoadResult> {
    let n = args.connections;
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settled = Arc::new(AtomicUsize::new(0));
    let all_settled = Arc::new(tokio::sync::Notify::new());
    let dropped = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (gate, addr, mut stop) = (gate.clone(), args.addr.clone(), stop_rx.clone());
        let (settled, all_settled, dropped, failed) = (settled.clone(), all_settled.clone(), dropped.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let settle = || {
                if settled.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    all_settled.notify_one();
                }
            };
            let connected = async {
                let _permit = gate.acquire_owned().await.ok()?;
                connect_one(&addr, t).await
            }
            .await;
            settle();
            let Some(mut c) = connected else {
                failed.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            // Heartbeats from the moment the handshake is done, so a connection that waits for
            // the others is not idle in the server's eyes.
            let mut beat = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.changed() => return Some(c),
                    _ = beat.tick() => {
                        if c.heartbeat().await.is_err() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                    }
                    p = c.recv_packet() => match p {
                        Ok(Some(p)) if p.kind == PacketType::Heartbeat => {}
                        _ => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                    },
                }
            }
        }));
    }
    if settled.load(Ordering::Acquire) < n {
        all_settled.notified().await;
    }
    let connected = n as u64 - failed.load(Ordering::Relaxed);
    let handshakes_per_s = connected as f64 / start.elapsed().as_secs_f64().max(1e-9);
    // Tell the orchestrator (bench) that every connection is up.
    println!("READY {connected}");
    tokio::time::sleep(args.hold).await;
    let _ = stop_tx.send(true);
    let mut held = Vec::new();
    for t in tasks {
        if let Ok(Some(c)) = t.await {
            held.push(c);
        }
    }
    Ok(LoadResult {
        mode: "idle".into(),
        transport: args.transport.clone(),
        connections: n,
        handshakes_per_s,
        errors: failed.load(Ordering::Relaxed),
        dropped: dropped.load(Ordering::Relaxed),
        ..LoadResult::default()
    })
}
