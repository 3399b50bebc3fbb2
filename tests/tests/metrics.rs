//! `/metrics` on the HTTP listener: Pitaya's metric names, types and labels (so a Pitaya
//! dashboard works unchanged) and Kiwano's own, moving with the traffic a client sends; the
//! text parses with `promtool check metrics`, and Kiwano's own names pass its lint.

use std::time::Duration;

use kiwano_tests::*;

async fn server() -> TestServer {
    TestServer::with(TestConfig {
        extra: "[app]\nhttp = \"127.0.0.1:0\"\n[metrics]\ngame = \"tests\"\n".into(),
        testbed: "instances = 1\nmax_metric_series = 3".into(),
        metrics: true,
        ..Default::default()
    })
    .await
}

async fn scrape(s: &TestServer) -> String {
    let r = http_request(s.server.http_address().expect("http listener"), "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    r.text()
}

/// The value of the series `name{labels}` with the constant labels, if present (labels as the
/// exposition writes them: sorted by name, then `quantile` or `le`).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut all: Vec<(&str, &str)> = vec![("game", "tests")];
    if name.starts_with("pitaya_") {
        all.push(("serverType", "testbed"));
    }
    let last = labels.iter().find(|(k, _)| *k == "quantile" || *k == "le");
    all.extend(labels.iter().filter(|(k, _)| *k != "quantile" && *k != "le"));
    all.sort();
    all.extend(last);
    let pairs: Vec<String> = all.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let series = format!("{name}{{{}}} ", pairs.join(","));
    text.lines().find_map(|l| l.strip_prefix(&series).and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitaya_and_kiwano_metrics_move_with_the_traffic() {
    let s = server().await;
    let before = scrape(&s).await;
    assert_eq!(value(&before, "pitaya_acceptor_connected_clients", &[]), Some(0.0), "{before}");
    assert_eq!(value(&before, "pitaya_acceptor_exceeded_rate_limiting", &[]), Some(0.0));
    assert_eq!(value(&before, "pitaya_rpc_server_dropped_messages", &[]), Some(0.0));

    let mut a = s.client(Transport::Tcp).await;
    let mut b = s.client(Transport::Ws).await;
    for _ in 0..5 {
        assert_eq!(&a.request("test.echo", b"x").await.unwrap().data[..], b"x");
    }
    for _ in 0..2 {
        assert_eq!(&b.request("testbed.test.echo", b"y").await.unwrap().data[..], b"y");
    }
    assert!(b.request("test.error", b"").await.unwrap().error);
    assert!(b.request("test.trap", b"").await.unwrap().error);
    assert!(b.request("test.nope", b"").await.unwrap().error);
    // The guest's own metrics: two series of a counter, a histogram; then one series too many
    // (`max_metric_series = 3`): an error, and nothing new in the registry.
    for kind in ["small", "small", "large"] {
        assert_eq!(&a.request("test.metric", kind.as_bytes()).await.unwrap().data[..], b"counted");
    }
    let over = a.request("test.metric", b"third").await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&over.data),
        r#"{"code":"PIT-500","msg":"metric series limit reached: server type testbed records at most 3 series (servers.testbed.max_metric_series)"}"#
    );

    let text = scrape(&s).await;
    let rt = |route: &str, status: &str, code: &str, suffix: &str| {
        let name = format!("pitaya_handler_response_time_ns{suffix}");
        value(&text, &name, &[("route", route), ("status", status), ("code", code), ("type", "handler")])
    };
    // One series per route as the client sent it; the count is the requests answered.
    assert_eq!(rt("test.echo", "ok", "", "_count"), Some(5.0), "{text}");
    assert_eq!(rt("testbed.test.echo", "ok", "", "_count"), Some(2.0));
    assert_eq!(rt("test.error", "failed", "RH-001", "_count"), Some(1.0));
    assert_eq!(rt("test.trap", "failed", "PIT-500", "_count"), Some(1.0));
    // A route that names no handler is not a label of its own.
    assert_eq!(rt("unknown", "failed", "PIT-404", "_count"), Some(1.0));
    assert!(!text.contains("test.nope"), "{text}");
    // Pitaya's summary: the quantiles of its objectives, in nanoseconds.
    for q in ["0.7", "0.95", "0.99"] {
        let labels = [("route", "test.echo"), ("status", "ok"), ("code", ""), ("type", "handler"), ("quantile", q)];
        let ns = value(&text, "pitaya_handler_response_time_ns", &labels);
        assert!(ns.is_some_and(|ns| ns > 0.0 && ns < 5e9), "{q}: {text}");
    }
    assert_eq!(value(&text, "pitaya_handler_handler_delay_ns_count", &[("route", "test.echo"), ("type", "local")]), Some(5.0));
    assert_eq!(value(&text, "pitaya_acceptor_connected_clients", &[]), Some(2.0));
    assert_eq!(value(&text, "pitaya_service_discovery_count_servers", &[("type", "testbed")]), Some(1.0));
    assert_eq!(value(&text, "pitaya_worker_pool_total_workers", &[("pool", "handler_dispatch")]), Some(1.0));
    assert_eq!(value(&text, "pitaya_worker_pool_busy_workers", &[("pool", "handler_dispatch")]), Some(0.0));
    // Every packet queued for a client: its outgoing queue's free slots (the default queue of
    // 100 packets, empty each time: one request at a time). Pitaya creates this histogram and
    // forgets to register it.
    let chsend = [("channel", "agent_chsend")];
    assert_eq!(value(&text, "pitaya_channel_channel_capacity_count", &chsend), Some(14.0), "{text}");
    assert_eq!(value(&text, "pitaya_channel_channel_capacity_sum", &chsend), Some(1400.0), "{text}");
    // Kiwano's own: guest calls, the trap and the instance rebuilt after it.
    let call = [("route", "test.echo"), ("server_type", "testbed")];
    assert_eq!(value(&text, "kiwano_guest_call_duration_seconds_count", &call), Some(7.0));
    assert_eq!(value(&text, "kiwano_guest_failures_total", &[("reason", "trap"), ("server_type", "testbed")]), Some(1.0));
    assert_eq!(value(&text, "kiwano_instances_created_total", &[("why", "rebuild"), ("server_type", "testbed")]), Some(1.0));
    assert_eq!(value(&text, "kiwano_component_version", &[("server_type", "testbed")]), Some(1.0));
    assert_eq!(value(&text, "kiwano_sessions", &[("frontend", "testbed")]), Some(2.0));
    let requests = |kind: &str| value(&text, "kiwano_guest_testbed_requests_total", &[("kind", kind), ("server_type", "testbed")]);
    assert_eq!((requests("small"), requests("large"), requests("third")), (Some(2.0), Some(1.0), None), "{text}");
    let payload = |suffix: &str, le: Option<&str>| {
        let mut labels = vec![("server_type", "testbed")];
        labels.extend(le.map(|le| ("le", le)));
        value(&text, &format!("kiwano_guest_testbed_payload_bytes{suffix}"), &labels)
    };
    assert_eq!(payload("_bucket", Some("4")), Some(0.0));
    assert_eq!(payload("_bucket", Some("64")), Some(3.0));
    assert_eq!((payload("_count", None), payload("_sum", None)), (Some(3.0), Some(15.0)));
    assert!(text.contains("# HELP kiwano_guest_testbed_requests_total test.metric requests, by kind\n# TYPE kiwano_guest_testbed_requests_total counter"), "{text}");

    // A client leaves: the gauge goes down.
    drop(a);
    eventually_async("connected clients back to 1", Duration::from_secs(5), || async {
        value(&scrape(&s).await, "pitaya_acceptor_connected_clients", &[]) == Some(1.0)
    })
    .await;

    // promtool parses it all; its lint passes Kiwano's own names (Pitaya's keep Pitaya's
    // `serverType` label and `_ns` units, which the lint flags, as it does for Pitaya itself).
    let dir = std::env::temp_dir().join(format!("kiwano-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool runs (tests/setup.sh installs the Debian package prometheus)");
    let lint = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Parsed: a parse error is reported as such (and nothing else is).
    assert!(!lint.contains("error while linting"), "{lint}");
    let kiwano_problems: Vec<&str> = lint.lines().filter(|l| l.starts_with("kiwano_")).collect();
    assert!(kiwano_problems.is_empty(), "{lint}");
    s.server.shutdown().await;
}

/// SIGTERM to the binary: `/readyz` answers 503 at once, while the acceptors still take
/// players for `app.drain_delay`; then the process leaves and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_not_ready_on_sigterm_while_the_acceptors_still_accept() {
    let port = kiwano_tests::services::free_port();
    let extra = format!("[app]\nhttp = \"127.0.0.1:{port}\"\ndrain_delay = \"2s\"\n");
    let mut p = kiwano_tests::process::KiwanoProcess::start("readyz", &extra, "instances = 1").await;
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = |target: &'static str| async move {
        let r = http_request(http, "GET", target).await;
        (r.status, r.text())
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get("/readyz").await, (200, "ready\n".to_owned()));
    let tcp = p.addr("Tcp").to_owned();
    p.signal("TERM");
    eventually_async("not ready", Duration::from_secs(5), || async { get("/readyz").await.0 == 503 }).await;
    assert_eq!(get("/readyz").await, (503, "draining: shutting down\n".to_owned()));
    assert_eq!(get("/healthz").await.0, 200);
    // Not ready, and still accepting: a player who was on the way gets in.
    let mut late = Client::connect(&tcp, Transport::Tcp, None).await.expect("still accepting");
    late.handshake(&serde_json::json!({"sys": {}})).await.expect("handshake while draining");
    let status = p.wait(Duration::from_secs(30)).await.expect("the process exits");
    assert!(status.success(), "{status}: {}", p.logs());
    assert!(std::net::TcpStream::connect(&tcp).is_err(), "the acceptor is closed");
}

/// A real Prometheus server (the Debian package) scrapes a Kiwano server every second; a
/// query of its HTTP API returns the request rate of a route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_scrapes_kiwano_and_answers_the_rate_of_a_route() {
    let s = server().await;
    let target = s.server.http_address().expect("http listener");
    let port = kiwano_tests::services::free_port();
    let dir = std::env::temp_dir().join(format!("kiwano-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kiwano\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus runs (tests/setup.sh installs the Debian package prometheus)");
    // Players keep echoing meanwhile.
    let mut c = s.client(Transport::Tcp).await;
    let load = tokio::spawn(async move {
        loop {
            assert_eq!(&c.request("test.echo", b"x").await.unwrap().data[..], b"x");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // rate(pitaya_handler_response_time_ns_count{route="test.echo"}[5s])
    let query = "/api/v1/query?query=rate%28pitaya_handler_response_time_ns_count%7Broute%3D%22test.echo%22%7D%5B5s%5D%29";
    let mut answer = String::new();
    let rate = |body: &str| -> Option<f64> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let started = std::time::Instant::now();
    loop {
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(api)).await {
            drop(stream);
            answer = http_request(api, "GET", query).await.text();
            if rate(&answer).is_some_and(|r| r > 1.0) {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no rate from Prometheus: {answer}\n{}", std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // About 50 requests a second (one every 20 ms plus the round trip).
    let r = rate(&answer).unwrap_or_default();
    assert!(r > 1.0 && r < 60.0, "rate {r}: {answer}");
    assert!(answer.contains(r#""job":"kiwano""#) && answer.contains(r#""serverType":"testbed""#), "{answer}");
    // The Grafana dashboard's expressions (deploy/grafana/kiwano.json) all evaluate here, and
    // name only families Kiwano records.
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/kiwano.json")).unwrap()).unwrap();
    let known: Vec<&str> = kiwano_metrics::families::ALL.iter().map(|f| f.name).collect();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr").replace("$__rate_interval", "10s").replace("$serverType", ".*");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("pitaya_") || w.starts_with("kiwano_")) {
                let family = ["_count", "_sum", "_bucket"].iter().fold(word, |w, suffix| w.strip_suffix(suffix).unwrap_or(w));
                assert!(known.contains(&family), "{}: {word} is not recorded", panel["title"]);
            }
            let encoded: String = expr.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
            let answer = http_request(api, "GET", &format!("/api/v1/query?query={encoded}")).await.text();
            assert!(answer.contains(r#""status":"success""#), "{}: {expr}: {answer}", panel["title"]);
        }
    }
    load.abort();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    s.server.shutdown().await;
}

/// `kiwano top <http address> --once`: requests/s per route from two scrapes, clients,
/// instances and the guest failures, as a developer reads them in a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiwano_top_shows_requests_per_route_clients_and_failures() {
    let s = server().await;
    let mut c = s.client(Transport::Tcp).await;
    assert!(c.request("test.trap", b"").await.unwrap().error);
    let load = tokio::spawn(async move {
        loop {
            assert_eq!(&c.request("test.echo", b"x").await.unwrap().data[..], b"x");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let addr = s.server.http_address().expect("http listener").to_string();
    let out = tokio::process::Command::new(kiwano_tests::process::kiwano_bin())
        .args(["top", &addr, "--once", "--interval", "1s"])
        .env_remove("KIWANO_LOG")
        .output()
        .await
        .expect("kiwano top runs");
    load.abort();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with(&format!("kiwano top {addr}, every ")), "{text}");
    assert!(text.contains("clients 1   instances 0 busy of 1"), "{text}");
    let echo = text.lines().find(|l| l.starts_with("test.echo ")).unwrap_or_else(|| panic!("no test.echo line: {text}"));
    let cols: Vec<&str> = echo.split_whitespace().collect();
    let rps: f64 = cols[1].parse().unwrap();
    assert!(rps > 5.0 && rps < 200.0, "{echo}");
    assert_eq!(cols[2], "0.0", "{echo}");
    assert!(cols[3].parse::<f64>().is_ok_and(|ms| ms > 0.0), "{echo}");
    assert!(text.contains("testbed trap"), "{text}");
    assert!(text.contains("components: testbed v1"), "{text}");
    // A server without metrics: a clear error, not a blank screen.
    let out = std::process::Command::new(kiwano_tests::process::kiwano_bin()).args(["top", "127.0.0.1:1", "--once"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach http://127.0.0.1:1/metrics"));
    s.server.shutdown().await;
}
