//! The `kiwano` binary.
//!
//! - `kiwano run <project-dir>`: builds the project's components whose sources changed, then
//!   serves every server type of its `kiwano.toml` until SIGINT or SIGTERM.
//! - `kiwano build <project-dir>`: only the build step.
//! - `kiwano top <http address>`: a live view of one server's metrics in the terminal.
//! - `kiwano load …`: the load generator; `kiwano raw …`: the raw ceiling server;
//!   `kiwano bench`: every benchmark scenario, written to `BENCHMARKS.md`; `kiwano reliability`:
//!   the hardening review's attacks, written to `RELIABILITY.md`.
//!
//! Logging follows the project's `[log]` (level, `text` or `json`), `KIWANO_LOG` (an `EnvFilter`
//! directive) overriding its level.

mod bench;
mod bench_cluster;
mod load;
mod new;
mod reliability;
mod top;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiwano_server::config::AcceptorKind;
use kiwano_server::{Config, Server, project};

/// mimalloc: per-thread free lists instead of glibc's arenas. The request path allocates small,
/// short-lived buffers on every message; the raw ceiling server (same binary) uses it too.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes mimalloc give freed memory back to the system at once. With its default delay (1 s,
/// applied only when the freeing thread allocates again) a burst of large messages left the
/// memory of the buffers it freed with the process (~75 MB after four clients sending inflating
/// requests closed, `RELIABILITY.md`); purging at once costs nothing measurable on the request
/// path (alternating `kiwano load` runs, 100 connections, within the machine's noise).
fn purge_freed_memory_at_once() {
    /// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (`include/mimalloc.h`).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide option of the allocator; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[derive(Parser)]
#[command(name = "kiwano", version, about = "A game server that speaks Pitaya and runs its game logic as WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build what changed and serve a project (its kiwano.toml) until SIGINT/SIGTERM: every
    /// server type in one process, or with --type one server of that type (Pitaya's model;
    /// with `cluster.nats_url` set it joins the cluster on NATS and etcd).
    Run {
        /// The project directory, holding kiwano.toml.
        project: PathBuf,
        /// The config file, if not <project>/kiwano.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run only one server, of this type.
        #[arg(long = "type", value_name = "TYPE")]
        server_type: Option<String>,
        /// The server's id (`room-1`); default: a random UUID.
        #[arg(long, requires = "server_type")]
        id: Option<String>,
        /// `<kind>=<ip:port>` (kind: tcp, tls, ws, wss), repeatable: replaces the type's
        /// configured acceptors.
        #[arg(long, value_name = "KIND=ADDR", value_parser = parse_listen, requires = "server_type")]
        listen: Vec<(AcceptorKind, String)>,
        /// Hot reload: rebuild a server type whose sources change (its `build` command), and
        /// swap in its component whenever the file changes, while players stay connected.
        #[arg(long)]
        watch: bool,
    },
    /// Build the components of a project whose sources changed.
    Build {
        /// The project directory, holding kiwano.toml.
        project: PathBuf,
        /// The config file, if not <project>/kiwano.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A live view of one server's metrics in the terminal (requests/s, errors/s and p99 per
    /// route, clients, instances, guest failures), from its `/metrics`.
    Top(top::TopArgs),
    /// Create a project that builds and runs as it is: one frontend server type named after
    /// the directory, in Rust, Python or JavaScript.
    New {
        /// The project directory to create (its name is the server type's).
        dir: PathBuf,
        /// The guest's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
    },
    /// The server types of a project, one line each: `<type> frontend|backend
    /// [<kind>=<ip:port>]...` (the acceptors, as `run --listen` takes them). For scripts that
    /// start one process per server, such as deploy/local/run.sh.
    Servers {
        /// The project directory, holding kiwano.toml.
        project: PathBuf,
        /// The config file, if not <project>/kiwano.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load generator: connections running requests, broadcasts or idling; prints JSON.
    Load(load::LoadArgs),
    /// The raw ceiling server: same packets, no routing, sessions or Wasm.
    Raw {
        /// TCP address.
        #[arg(long)]
        tcp: Option<std::net::SocketAddr>,
        /// WebSocket address.
        #[arg(long)]
        ws: Option<std::net::SocketAddr>,
    },
    /// Every benchmark scenario; tables printed and written to BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// The forward across processes over NATS vs raw NATS request/reply (needs nats-server and
    /// etcd); written to BENCHMARKS.md.
    BenchCluster(bench::BenchArgs),
    /// Raw NATS responder used by bench-cluster.
    #[command(hide = true)]
    NatsEcho(bench_cluster::NatsEchoArgs),
    /// The hardening review's attacks and misbehaving guests; figures written to RELIABILITY.md.
    Reliability(reliability::ReliabilityArgs),
}

/// Raises the open-file limit: servers and benchmarks hold tens of thousands of sockets. With
/// the privilege to (root), up to the kernel's `nr_open`; otherwise up to the hard limit.
fn raise_nofile() {
    let nr_open: libc::rlim_t =
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = nr_open.max(lim.rlim_max);
        let raised = libc::rlimit { rlim_cur: want, rlim_max: want };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    // A project's `[log]` applies to the commands that read its config (a bad config is
    // reported when the command loads it again).
    let log = match &cli.command {
        Command::Run { project, config, .. } | Command::Build { project, config } | Command::Servers { project, config } => {
            load(project, config.clone()).map(|c| c.log).unwrap_or_default()
        }
        _ => kiwano_server::config::LogConfig::default(),
    };
    // `kiwano run`'s I/O runtime, made first: the trace exporter (OTLP over gRPC) starts on it.
    let rt = match &cli.command {
        Command::Run { .. } => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => Some(rt),
            Err(e) => {
                eprintln!("kiwano: cannot start the I/O runtime: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let entered = rt.as_ref().map(tokio::runtime::Runtime::enter);
    let traces = match init_log(&log, rt.is_some()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kiwano: {e}");
            return ExitCode::FAILURE;
        }
    };
    drop(entered);
    raise_nofile();
    let result = match cli.command {
        Command::Load(args) => tokio_main(async move {
            let r = load::run(args).await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }),
        Command::Raw { tcp, ws } => tokio_main(async move {
            let (t, w) = kiwano_server::raw::bind(tcp, ws).await?;
            kiwano_server::raw::serve(t, w, std::time::Duration::from_secs(30), true).await;
            Ok(())
        }),
        Command::Bench(args) => bench::run(&args),
        Command::BenchCluster(args) => bench_cluster::run(&args),
        Command::NatsEcho(args) => bench_cluster::nats_echo(&args),
        Command::Reliability(args) => reliability::run(&args),
        Command::Run { project, config, server_type, id, listen, watch } => load(&project, config).and_then(|mut c| {
            if let Some(t) = server_type {
                c.single_server(&t, id, &listen)?;
            }
            let rt = rt.context("no I/O runtime")?;
            let r = run(&project, c, watch, &rt, traces.as_ref());
            if let Some(t) = &traces {
                t.shutdown();
            }
            r
        }),
        Command::Top(args) => tokio_main(top::run(args)),
        Command::New { dir, lang } => new::create(&dir, lang),
        Command::Servers { project, config } => load(&project, config).map(|c| {
            for (name, st) in &c.servers {
                let role = if st.frontend { "frontend" } else { "backend" };
                let acceptors: String = st.acceptors.iter().map(|a| format!(" {}={}", a.kind, a.address)).collect();
                println!("{name} {role}{acceptors}");
            }
        }),
        Command::Build { project, config } => load(&project, config).and_then(|c| {
            let built = project::build_all(&project, &c)?;
            tracing::info!(?built, "build finished");
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiwano: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging as `[log]` says, `KIWANO_LOG` (an `EnvFilter` directive) overriding its level.
/// Colour only for a terminal: a redirected log stays plain text. With `traces` (`kiwano run`)
/// and the `OTEL_*` variables asking for it, the host's spans are exported over OTLP too;
/// otherwise their target is off and they cost nothing.
fn init_log(log: &kiwano_server::config::LogConfig, traces: bool) -> anyhow::Result<Option<kiwano_telemetry::traces::Traces>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let traces = traces && kiwano_telemetry::traces::wanted();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("KIWANO_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let spans = if traces { "info" } else { "off" };
    let directive = format!("{}={spans}", kiwano_telemetry::traces::TARGET);
    filter = filter.add_directive(directive.parse().context("the trace spans' filter")?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (otel, pipeline) = if traces {
        kiwano_server::trace::set_root_ratio(kiwano_telemetry::traces::root_ratio().map_err(anyhow::Error::msg)?);
        let (layer, pipeline) = kiwano_telemetry::traces::layer("kiwano").map_err(anyhow::Error::msg)?;
        (Some(layer), Some(pipeline))
    } else {
        (None, None)
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match log.format {
        kiwano_server::config::LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi)).init(),
        kiwano_server::config::LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_target(false)).init(),
    }
    Ok(pipeline)
}

fn tokio_main(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the I/O runtime")?.block_on(f)
}

fn load(project: &Path, config: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = config.unwrap_or_else(|| project.join("kiwano.toml"));
    Ok(Config::load(&path, std::env::vars())?)
}

/// `--listen <kind>=<ip:port>`.
fn parse_listen(s: &str) -> Result<(AcceptorKind, String), String> {
    let (kind, address) = s.split_once('=').ok_or_else(|| format!("{s:?}: want <kind>=<ip:port>, e.g. ws=0.0.0.0:3251"))?;
    address.parse::<std::net::SocketAddr>().map_err(|e| format!("{address:?}: {e}"))?;
    Ok((kind.parse()?, address.to_owned()))
}

/// What the process records, as `[metrics]` says: Prometheus text at `/metrics`, with the
/// constant labels `game` and `serverType` (and `metrics.const_labels`).
fn metrics(config: &Config) -> anyhow::Result<kiwano_metrics::Metrics> {
    if !config.metrics.enabled {
        return Ok(kiwano_metrics::Metrics::disabled());
    }
    let sink = kiwano_telemetry::Prometheus::new(&config.metric_labels()).context("cannot set up the metrics ([metrics])")?;
    Ok(kiwano_metrics::Metrics::new(std::sync::Arc::new(sink)))
}

fn run(project: &Path, config: Config, watch: bool, rt: &tokio::runtime::Runtime, traces: Option<&kiwano_telemetry::traces::Traces>) -> anyhow::Result<()> {
    project::build_all(project, &config)?;
    let clean = rt.block_on(async {
        let mut signals = Signals::new()?;
        // Starting may wait for NATS and etcd: a signal meanwhile stops the wait.
        let watched = watch.then(|| config.servers.clone());
        // The components as they are before the server loads them: a change from here on is a
        // new version, even one made before the watcher's first look.
        let baseline: Vec<_> = watched.iter().flatten().map(|(_, st)| stamp(&Config::resolve(project, &st.component))).collect();
        let metrics = metrics(&config)?;
        let server = tokio::select! {
            server = Server::start_with(config, project, metrics) => server?,
            () = signals.next() => {
                tracing::info!("stopped before serving");
                return anyhow::Ok(true);
            }
        };
        if let Some(servers) = watched {
            let types = servers
                .into_iter()
                .zip(baseline)
                .filter_map(|((name, st), seen)| Some((server.versions(&name)?, name, st, seen)))
                .collect();
            tokio::spawn(watch_types(project.to_owned(), types));
        }
        let ids: Vec<String> = server.server_ids().into_values().collect();
        let listening: Vec<String> = server.acceptors().iter().map(|a| format!("{} {} {}", a.server_type, a.kind, a.address)).collect();
        tracing::info!(servers = ?ids, ?listening, "kiwano is serving; SIGINT or SIGTERM stops it");
        signals.next().await;
        // A second signal ends the process at once.
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("second signal: stopping now, without waiting for the shutdown to finish");
            std::process::exit(1);
        });
        anyhow::Ok(server.shutdown().await)
    })?;
    if !clean {
        // Guest calls may still be running on this runtime's threads: ending the process here
        // is the bounded way out (dropping the runtime would wait for them, or fail the host
        // calls they are in).
        if let Some(t) = traces {
            t.shutdown();
        }
        std::process::exit(0);
    }
    Ok(())
}

/// A component file's length and modification time: what tells a new build from the old.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// `run --watch`: every second, rebuilds each server type whose sources changed (its `build`
/// command) and hot-reloads the ones whose component file changed. A failed build (tried again
/// once its sources change) or a refused component is logged; the running version serves on.
/// What `run --watch` watches of one server type: its versions, name, config and its component
/// file's stamp when the server loaded it.
type Watched = (std::sync::Arc<kiwano_server::reload::Versions>, String, kiwano_server::config::ServerTypeConfig, Option<(u64, std::time::SystemTime)>);

async fn watch_types(project: PathBuf, types: Vec<Watched>) {
    let (types, mut seen): (Vec<_>, Vec<_>) = types.into_iter().map(|(v, n, st, seen)| ((v, n, st), seen)).unzip();
    // The sources of a build that failed: not built again until they change.
    let mut failed: Vec<Option<String>> = vec![None; types.len()];
    tracing::info!(types = types.len(), "watching sources and components for hot reload");
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (((versions, name, st), last), failed) in types.iter().zip(seen.iter_mut()).zip(failed.iter_mut()) {
            if !st.build.is_empty() {
                // Reading the sources' metadata is blocking work: off the I/O threads, with the build.
                let (p, n, s, skip) = (project.clone(), name.clone(), st.clone(), failed.clone());
                let outcome = tokio::task::spawn_blocking(move || {
                    let sources = project::sources_fingerprint(&p, &s);
                    // Unchanged since its build failed: not tried again.
                    (skip.as_deref() != Some(sources.as_str())).then(|| {
                        let built = project::build(&p, &n, &s);
                        (sources, built)
                    })
                });
                match outcome.await {
                    Ok(None) => continue,
                    Ok(Some((_, Ok(_)))) => *failed = None,
                    Ok(Some((sources, Err(e)))) => {
                        tracing::error!(server_type = %name, "hot reload: the build failed, the running version keeps serving (built again when the sources change): {e}");
                        *failed = Some(sources);
                        continue;
                    }
                    Err(e) => tracing::error!(server_type = %name, "hot reload: the build panicked: {e}"),
                }
            }
            let now = stamp(&Config::resolve(&project, &st.component));
            if now.is_some() && now != *last {
                *last = now;
                // Refusals are logged by the reload itself.
                let _ = versions.reload(name).await;
            }
        }
    }
}

/// SIGINT and SIGTERM.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
