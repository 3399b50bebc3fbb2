//! `deploy/local/run.sh`: a whole cluster on this machine from one command, and nothing left
//! behind when it stops.

use std::process::{Command, Stdio};
use std::time::Duration;

use kiwano_tests::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// The command lines of the running processes.
fn processes() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

async fn next_on(c: &mut Client, route: &str) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), c.next_message()).await.expect(route).expect(route);
        if m.route == route {
            return serde_json::from_slice(&m.data).expect("JSON");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sh_starts_a_cluster_and_stops_it_whole() {
    let out = std::env::temp_dir().join(format!("kiwano-run-sh-{}.log", std::process::id()));
    let mut cmd = Command::new(root().join("deploy/local/run.sh"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KIWANO_")) {
        cmd.env_remove(k);
    }
    let mut script = cmd
        .args(["examples/cluster", "connector=2"])
        .current_dir(root())
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&out).unwrap()))
        .spawn()
        .expect("run.sh starts");
    let text = || std::fs::read_to_string(&out).unwrap_or_default();
    let start = tokio::time::Instant::now();
    while !text().contains("the cluster is up") {
        if let Ok(Some(status)) = script.try_wait() {
            panic!("run.sh exited with {status}:\n{}", text());
        }
        assert!(start.elapsed() < WAIT, "run.sh did not start the cluster:\n{}", text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The summary: NATS, etcd, and every server with its addresses; the first connector on the
    // project's ports, the second on others.
    let summary: Vec<String> = text().lines().filter_map(|l| l.strip_prefix("run.sh:   ")).map(str::to_owned).collect();
    let line = |id: &str| summary.iter().find(|l| l.starts_with(&format!("{id} "))).cloned().unwrap_or_else(|| panic!("{id} missing from {summary:?}"));
    let nats_port = line("nats").rsplit(':').next().unwrap().to_owned();
    let etcd_port = line("etcd").rsplit(':').next().unwrap().to_owned();
    assert!(line("connector-1").contains("Tcp 0.0.0.0:3250 Ws 0.0.0.0:3251"), "{summary:?}");
    assert!(line("room-1").contains("backend"), "{summary:?}");
    let second = line("connector-2");
    let words: Vec<&str> = second.split_whitespace().collect();
    let tcp2 = words.iter().position(|w| *w == "Tcp").map(|i| words[i + 1].replace("0.0.0.0", "127.0.0.1")).expect("connector-2's TCP");
    assert!(!tcp2.ends_with(":3250"), "{second}");

    // Each server's HTTP listener (metrics, health), listed for Prometheus in the targets file
    // deploy/prometheus/prometheus.yml reads.
    let targets_file = line("prometheus").trim_start_matches("prometheus targets: ").trim().to_owned();
    let targets: Value = serde_json::from_str(&std::fs::read_to_string(&targets_file).expect("targets file")).expect("targets JSON");
    let mut ids = Vec::new();
    for t in targets.as_array().expect("a list of target groups") {
        let addr: std::net::SocketAddr = t["targets"][0].as_str().expect("an address").parse().expect("ip:port");
        let id = t["labels"]["server_id"].as_str().expect("server_id").to_owned();
        assert!(line(&id).ends_with(&format!("http {addr}")), "{summary:?}");
        let metrics = http_request(addr, "GET", "/metrics").await;
        assert_eq!(metrics.status, 200, "{id}");
        let text = metrics.text();
        assert!(text.contains(&format!("serverType=\"{}\"", t["labels"]["server_type"].as_str().unwrap_or_default())), "{id}");
        // Connected to the cluster's NATS and etcd.
        for family in ["kiwano_nats_connected", "kiwano_etcd_connected"] {
            let up = text.lines().find(|l| l.starts_with(&format!("{family}{{"))).and_then(|l| l.rsplit(' ').next());
            assert_eq!(up, Some("1"), "{id} {family}: {text}");
        }
        assert_eq!(http_request(addr, "GET", "/readyz").await.text(), "ready\n", "{id}");
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, ["connector-1", "connector-2", "room-1"]);

    // The cluster serves the demo: players on both connectors hear each other.
    let mut a = Client::connect("127.0.0.1:3250", Transport::Tcp, None).await.unwrap();
    a.handshake(&json!({"sys": {}})).await.unwrap();
    let mut b = Client::connect(&tcp2, Transport::Tcp, None).await.unwrap();
    b.handshake(&json!({"sys": {}})).await.unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(&c.request("room.room.entry", b"{}").await.unwrap().data[..], br#"{"result":"ok"}"#);
        c.send_request("room.room.join", b"{}").await.unwrap();
    }
    b.notify("room.room.message", br#"{"name":"b","content":"hello"}"#).await.unwrap();
    assert_eq!(next_on(&mut a, "onMessage").await, json!({"name": "b", "content": "hello"}));

    // SIGTERM: every process it started ends; nothing listens any more.
    let ok = Command::new("kill").args(["-TERM", &script.id().to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok);
    let start = tokio::time::Instant::now();
    let status = loop {
        if let Ok(Some(status)) = script.try_wait() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "run.sh still running after SIGTERM:\n{}", text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "run.sh: {status}\n{}", text());
    let left: Vec<String> = processes()
        .into_iter()
        .filter(|p| (p.contains("kiwano run") && p.contains("examples/cluster")) || p.contains(&format!("-p {nats_port}")) || p.contains(&format!(":{etcd_port}")))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for port in ["3250", "3251", &nats_port, &etcd_port] {
        assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(), "something still listens on {port}");
    }
    // Each server left etcd and stopped cleanly, within its shutdown budget.
    let logs = text();
    assert!(!logs.contains("cannot deregister"), "{logs}");
    assert_eq!(logs.matches("INFO stopped").count(), 3, "{logs}");
    assert!(!std::path::Path::new(&targets_file).exists(), "the targets file outlived its cluster");
}
