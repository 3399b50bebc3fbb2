//! `kiwano top <http address>`: a live terminal view of one server's `/metrics`, for a
//! developer without Grafana. Every interval it scrapes again and shows, from the difference
//! between two scrapes, requests/s, errors/s and the p99 per route, connected clients,
//! instances (busy of total), guest failures and the component versions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_parse::{Sample, Scrape, Value};

/// `kiwano top` arguments.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The server's HTTP listener (`app.http`), e.g. 127.0.0.1:3251.
    pub addr: String,
    /// Time between two scrapes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print one view (two scrapes, `interval` apart) and exit.
    #[arg(long)]
    pub once: bool,
}

/// One scrape: its samples and when it was taken.
struct Taken {
    samples: Vec<Sample>,
    at: Instant,
}

async fn scrape(addr: &str) -> anyhow::Result<Taken> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = format!("http://{addr}/metrics").parse().with_context(|| format!("{addr:?} is not an ip:port"))?;
    let response = client.get(uri).await.with_context(|| format!("cannot reach http://{addr}/metrics"))?;
    anyhow::ensure!(response.status().is_success(), "GET http://{addr}/metrics answered {} (is [metrics] enabled?)", response.status());
    let body = http_body_util::BodyExt::collect(response.into_body()).await.context("reading /metrics")?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).context("parsing /metrics")?;
    Ok(Taken { samples: scrape.samples, at: Instant::now() })
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        _ => 0.0,
    }
}

fn label<'a>(s: &'a Sample, name: &str) -> &'a str {
    s.labels.get(name).unwrap_or_default()
}

/// The sum of the samples named `metric` that `keep` accepts, by `key`.
fn sums(t: &Taken, metric: &str, keep: impl Fn(&Sample) -> bool, key: impl Fn(&Sample) -> String) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in t.samples.iter().filter(|s| s.metric == metric && keep(s)) {
        *out.entry(key(s)).or_insert(0.0) += number(&s.value);
    }
    out
}

/// One view, from two scrapes.
fn view(addr: &str, before: &Taken, now: &Taken) -> String {
    let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let rate = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, k: &str| (b.get(k).copied().unwrap_or(0.0) - a.get(k).copied().unwrap_or(0.0)).max(0.0) / secs;
    let handler = |s: &Sample| label(s, "type") == "handler";
    let by_route = |s: &Sample| label(s, "route").to_owned();
    let count = "pitaya_handler_response_time_ns_count";
    let (all0, all1) = (sums(before, count, handler, by_route), sums(now, count, handler, by_route));
    let failed = |s: &Sample| handler(s) && label(s, "status") == "failed";
    let (err0, err1) = (sums(before, count, failed, by_route), sums(now, count, failed, by_route));
    let mut p99 = BTreeMap::new();
    for s in now.samples.iter().filter(|s| s.metric == "pitaya_handler_response_time_ns" && handler(s)) {
        if let Value::Summary(qs) = &s.value
            && let Some(q) = qs.iter().find(|q| (q.quantile - 0.99).abs() < 1e-9).filter(|q| q.count.is_finite())
        {
            let e = p99.entry(by_route(s)).or_insert(0.0f64);
            *e = e.max(q.count);
        }
    }
    let gauge = |metric: &str, keep: &dyn Fn(&Sample) -> bool| sums(now, metric, keep, |_| String::new()).values().sum::<f64>();
    let pool = |p: &'static str| move |s: &Sample| label(s, "pool") == p;
    let mut out = String::new();
    let _ = writeln!(out, "kiwano top {addr}, every {:.1} s", secs);
    let _ = writeln!(
        out,
        "clients {}   instances {} busy of {}   remote instances {} busy of {}",
        gauge("pitaya_acceptor_connected_clients", &|_| true),
        gauge("pitaya_worker_pool_busy_workers", &pool("handler_dispatch")),
        gauge("pitaya_worker_pool_total_workers", &pool("handler_dispatch")),
        gauge("pitaya_worker_pool_busy_workers", &pool("rpc_server_remote")),
        gauge("pitaya_worker_pool_total_workers", &pool("rpc_server_remote")),
    );
    let _ = writeln!(out, "\n{:<40} {:>10} {:>10} {:>10}", "route", "req/s", "err/s", "p99 ms");
    let mut routes: Vec<(&String, f64)> = all1.keys().map(|r| (r, rate(&all0, &all1, r))).collect();
    routes.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (route, rps) in routes {
        let p = p99.get(route).map_or_else(|| "-".to_owned(), |ns| format!("{:.2}", ns / 1e6));
        let _ = writeln!(out, "{:<40} {:>10.1} {:>10.1} {:>10}", route, rps, rate(&err0, &err1, route), p);
    }
    let reason = |s: &Sample| format!("{} {}", label(s, "server_type"), label(s, "reason"));
    let (f0, f1) = (sums(before, "kiwano_guest_failures_total", |_| true, reason), sums(now, "kiwano_guest_failures_total", |_| true, reason));
    if !f1.is_empty() {
        let _ = writeln!(out, "\nguest failures (total, per second now)");
        for (k, total) in &f1 {
            let _ = writeln!(out, "  {k:<38} {total:>10} {:>10.1}", rate(&f0, &f1, k));
        }
    }
    let versions = sums(now, "kiwano_component_version", |_| true, |s| label(s, "server_type").to_owned());
    if !versions.is_empty() {
        let list: Vec<String> = versions.iter().map(|(t, v)| format!("{t} v{v}")).collect();
        let _ = writeln!(out, "\ncomponents: {}", list.join(", "));
    }
    out
}

/// Runs `kiwano top`.
///
/// # Errors
/// The server cannot be reached, or answers no metrics.
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut before = scrape(&args.addr).await?;
    loop {
        tokio::time::sleep(args.interval).await;
        let now = scrape(&args.addr).await?;
        let frame = view(&args.addr, &before, &now);
        if terminal && !args.once {
            // Clear the screen, cursor home.
            print!("\x1b[2J\x1b[H");
        }
        print!("{frame}");
        if args.once {
            return Ok(());
        }
        before = now;
    }
}
