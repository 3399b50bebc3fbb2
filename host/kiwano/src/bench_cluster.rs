//! `kiwano bench-cluster`: the forwarded request of `kiwano bench`'s scenario 2, with the
//! `echo` frontend and the `room` backend in separate processes over a local nats-server (and
//! etcd for discovery), next to raw NATS request/reply with the same payload sizes and
//! concurrency and to the embedded forward, in one run. Written to `BENCHMARKS.md` under its
//! own marker. Needs `nats-server` and `etcd` (Debian's `nats-server` and `etcd-server`;
//! `tests/setup.sh` and `deploy/local/run.sh` install them).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt as _;

use crate::bench::{BenchArgs, FULL, SMOKE, Server, echo_args, free_port, kiwano, load, log_file, log_path, ms, spawn, wait_listening, wait_until, write_report};
use crate::load::{Latency, LoadResult};

/// `nats-echo`: answers every request on `subject` with `reply_size` bytes: the raw NATS
/// request/reply the cluster's forward is compared with.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsEchoArgs {
    /// `nats://host:port`.
    #[arg(long)]
    pub url: String,
    /// The subject to answer on.
    #[arg(long)]
    pub subject: String,
    /// Bytes of each reply.
    #[arg(long)]
    pub reply_size: usize,
}

const PROJECT: &str = "host/kiwano/bench/forward";

/// Starts an external program, its output in `target/bench/<name>.log`.
fn spawn_program(root: &Path, name: &str, program: &str, args: &[String]) -> anyhow::Result<Server> {
    let log = log_file(root, name)?;
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {program} (tests/setup.sh installs it)"))?;
    Ok(Server { child, name: name.to_owned() })
}

fn binary(name: &str) -> String {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin"].iter().map(|d| format!("{d}/{name}")).find(|p| Path::new(p).exists()).unwrap_or_else(|| name.to_owned())
}

/// Waits until `server`'s log says it serves.
fn wait_serving(root: &Path, server: &mut Server) -> anyhow::Result<()> {
    let log = log_path(root, &server.name);
    wait_until(server, "serving", || std::fs::read_to_string(&log).unwrap_or_default().contains("kiwano is serving"))
}

/// Runs the comparison and writes the report.
///
/// # Errors
/// A server, NATS, etcd or the load generator failing.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let root = args.root.canonicalize().context("--root")?;
    let s = if args.smoke { &SMOKE } else { &FULL };
    let conns = s.forward_conns;
    let started = Instant::now();
    let command = if args.smoke { "kiwano bench-cluster --smoke" } else { "kiwano bench-cluster" };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;

    // NATS and etcd of the run's own.
    let (nats_port, etcd_port, etcd_peer) = (free_port()?, free_port()?, free_port()?);
    let mut nats = spawn_program(&root, "nats-server", &binary("nats-server"), &["-a".into(), "127.0.0.1".into(), "-p".into(), nats_port.to_string()])?;
    let data = root.join("target").join("bench").join("etcd-data");
    let _ = std::fs::remove_dir_all(&data);
    let (client, peer) = (format!("http://127.0.0.1:{etcd_port}"), format!("http://127.0.0.1:{etcd_peer}"));
    let etcd_args: Vec<String> = [
        "--name", "bench", "--data-dir", &data.display().to_string(), "--listen-client-urls", &client, "--advertise-client-urls", &client,
        "--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer, "--initial-cluster", &format!("bench={peer}"),
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let mut etcd = spawn_program(&root, "etcd", &binary("etcd"), &etcd_args)?;
    wait_listening(nats_port, &mut nats)?;
    wait_listening(etcd_port, &mut etcd)?;
    let url = format!("nats://127.0.0.1:{nats_port}");
    let env = vec![
        ("KIWANO_CLUSTER_NATS_URL".to_owned(), url.clone()),
        ("KIWANO_CLUSTER_ETCD_ENDPOINTS".to_owned(), format!("[\"127.0.0.1:{etcd_port}\"]")),
        ("KIWANO_LOG".to_owned(), "info".to_owned()),
    ];

    // The embedded forward, for reference.
    eprintln!("bench-cluster: the embedded forward");
    let embedded = {
        let (server, tcp, _ws) = kiwano(&root, PROJECT, "echo", &[])?;
        let r = load(&root, &echo_args(tcp, "tcp", conns, "room.echo.echo", s), || {})?;
        drop(server);
        r
    };

    // The same forward across processes: echo-1 (frontend) → NATS → room-1.
    eprintln!("bench-cluster: the forward across processes over NATS");
    let (cluster, sizes) = {
        let mut room = spawn(&root, "cluster-room", &["run".into(), PROJECT.into(), "--type".into(), "room".into(), "--id".into(), "room-1".into()], &env)?;
        wait_serving(&root, &mut room)?;
        let port = free_port()?;
        let frontend_args = ["run", PROJECT, "--type", "echo", "--id", "echo-1", "--listen", &format!("tcp=127.0.0.1:{port}")];
        let mut frontend = spawn(&root, "cluster-echo", &frontend_args.map(str::to_owned), &env)?;
        wait_serving(&root, &mut frontend)?;
        // The sizes of the forward's envelopes, seen on NATS: the raw run uses the same.
        let sizes = rt.block_on(envelope_sizes(&url, port))?;
        let r = load(&root, &echo_args(port, "tcp", conns, "room.echo.echo", s), || {})?;
        drop((frontend, room));
        (r, sizes)
    };

    // Raw NATS request/reply: a responder process, and `conns` requesters on one connection
    // (as the frontend has), with the forward's request and reply sizes.
    eprintln!("bench-cluster: raw NATS request/reply");
    let raw = {
        let subject = "bench.echo";
        let responder_args = ["nats-echo", "--url", &url, "--subject", subject, "--reply-size", &sizes.1.to_string()].map(str::to_owned);
        let responder = spawn(&root, "nats-echo", &responder_args, &[])?;
        let warmup = humantime::parse_duration(s.warmup)?;
        let duration = humantime::parse_duration(s.duration)?;
        let r = rt.block_on(raw_requests(&url, subject, sizes.0, conns, warmup, duration))?;
        drop(responder);
        r
    };
    drop((nats, etcd));

    let mut report = String::new();
    let _ = writeln!(report, "## 7. A forwarded request across processes over NATS, vs raw NATS request/reply\n");
    let _ = writeln!(
        report,
        "The `room.echo.echo` request of scenario 2 (64-byte JSON body, TCP, {conns} connections) through an `echo` frontend \
         process and a `room` backend process on a local nats-server (discovery on etcd); raw NATS: {conns} concurrent \
         requesters on one connection and a responder process, with the forward's envelope sizes ({} B request, {} B reply).\n",
        sizes.0, sizes.1
    );
    let _ = writeln!(report, "| path | req/s | ratio to raw NATS (bar ≥ 0.50) | p50 / p99 / max ms | errors |");
    let _ = writeln!(report, "| --- | --- | --- | --- | --- |");
    for (name, r) in [("raw NATS request/reply", &raw), ("Kiwano forward across processes over NATS", &cluster), ("Kiwano forward, embedded (one process)", &embedded)] {
        let _ = writeln!(
            report,
            "| {name} | {:.0} | {:.2} | {} / {} / {} | {} |",
            r.rps, r.rps / raw.rps.max(1e-9), ms(r.latency.p50_us), ms(r.latency.p99_us), ms(r.latency.max_us), r.errors
        );
    }
    let _ = writeln!(report, "\nProduced by `{command}` in {:.0} s.", started.elapsed().as_secs_f64());
    println!("{report}");
    write_report(&args.out, "kiwano bench-cluster", command, &report, "Benchmarks")?;
    Ok(())
}

/// Sends one forwarded request through the frontend on `port` and reads, on NATS, the sizes of
/// the request envelope to the room and of its reply.
async fn envelope_sizes(url: &str, port: u16) -> anyhow::Result<(usize, usize)> {
    let nats = async_nats::connect(url).await?;
    let mut requests = nats.subscribe("pitaya/servers/room/room-1").await?;
    let mut replies = nats.subscribe("_INBOX.>").await?;
    nats.flush().await?;
    let mut c = kiwano_client::Client::connect(&format!("127.0.0.1:{port}"), kiwano_client::Transport::Tcp, None).await?;
    c.handshake(&serde_json::json!({"sys": {}})).await?;
    c.request("room.echo.echo", &crate::load::body(64)).await?;
    let wait = Duration::from_secs(10);
    let request = tokio::time::timeout(wait, requests.next()).await?.context("no request seen")?;
    let reply = tokio::time::timeout(wait, replies.next()).await?.context("no reply seen")?;
    Ok((request.payload.len(), reply.payload.len()))
}

/// `conns` requesters, each one request at a time, for `warmup` then `duration`.
async fn raw_requests(url: &str, subject: &'static str, size: usize, conns: usize, warmup: Duration, duration: Duration) -> anyhow::Result<LoadResult> {
    let nats = async_nats::connect(url).await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (nats, payload, measuring, done) = (nats.clone(), payload.clone(), measuring.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let (mut samples, mut errors) = (Vec::new(), 0u64);
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = nats.request(subject, payload.clone()).await.is_ok();
                if measuring.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
                    if ok {
                        samples.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
            }
            (samples, errors)
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (samples, e) = t.await?;
        all.extend(samples);
        errors += e;
    }
    let requests = all.len() as u64;
    Ok(LoadResult {
        mode: "nats".into(),
        transport: "nats".into(),
        connections: conns,
        requests,
        rps: requests as f64 / elapsed.as_secs_f64(),
        latency: Latency::of(all),
        errors,
        ..LoadResult::default()
    })
}

/// Serves `nats-echo` until killed.
///
/// # Errors
/// NATS unreachable.
pub fn nats_echo(args: &NatsEchoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let nats = async_nats::connect(&args.url).await?;
        let mut requests = nats.subscribe(args.subject.clone()).await?;
        let reply = bytes::Bytes::from(vec![b'y'; args.reply_size]);
        while let Some(m) = requests.next().await {
            if let Some(to) = m.reply {
                nats.publish(to, reply.clone()).await?;
            }
        }
        anyhow::Ok(())
    })
}
