//! The README's run command, for real: `examples/run.sh` starts the example game (the chat), a
//! WebSocket client joins the room, the web page is served, and SIGTERM stops it cleanly.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiwano_tests::*;
use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

#[tokio::test]
async fn readme_run_command_serves_the_example_game() {
    let (ws, http) = (free_port(), free_port());
    let acceptors = format!(r#"[{{kind="ws",address="127.0.0.1:{ws}"}}]"#);
    let log_path = std::env::temp_dir().join(format!("kiwano-smoke-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new("bash")
        .arg(root().join("examples/run.sh"))
        .env("KIWANO_SERVERS_CHAT_ACCEPTORS", acceptors)
        .env("KIWANO_APP_HTTP", format!("127.0.0.1:{http}"))
        .env("KIWANO_LOG", "info")
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("examples/run.sh starts");
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The first start may build the binary and the guest.
    let start = Instant::now();
    let mut client = loop {
        if let Ok(c) = Client::connect(&format!("127.0.0.1:{ws}"), Transport::Ws, None).await {
            break c;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("examples/run.sh exited with {status}:\n{}", logs());
        }
        assert!(start.elapsed() < Duration::from_secs(900), "not serving after 15 min:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    client.handshake(&json!({"sys": {"platform": "smoke"}})).await.expect("handshake");
    let r = client.request("room.join", b"{}").await.expect("join");
    assert_eq!(&r.data[..], br#"{"code":0,"result":"success"}"#);
    let members = client.next_message().await.expect("members");
    assert_eq!((members.route.as_str(), &members.data[..]), ("onMembers", &br#"{"members":[]}"#[..]));
    let page = http_request(([127, 0, 0, 1], http).into(), "GET", "/web/").await;
    assert!(page.status == 200 && page.text().contains("Kiwano chat"), "{page:?}");

    // `cargo run` execs the binary: the child is kiwano itself.
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "kiwano did not stop on SIGTERM:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}:\n{}", logs());
    let logs = logs();
    assert!(logs.contains("SIGTERM received") && logs.contains("stopped"), "{logs}");
    assert!(client.recv_packet().await.map(|p| p.is_none()).unwrap_or(true), "connection closed at shutdown");
}

/// The run command's setup installs what running needs and nothing only the tests use: with
/// the Rust target there, it calls no package manager at all.
#[test]
fn the_run_commands_setup_installs_nothing_only_the_tests_need() {
    let shims = std::env::temp_dir().join(format!("kiwano-setup-shims-{}", std::process::id()));
    std::fs::create_dir_all(&shims).unwrap();
    let calls = shims.join("calls.log");
    for tool in ["apt-get", "npm", "pip", "pip3", "python3", "componentize-py", "chromium"] {
        let shim = shims.join(tool);
        std::fs::write(&shim, format!("#!/bin/sh\necho \"{tool} $*\" >> {}\nexit 0\n", calls.display())).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&shim).status().unwrap();
    }
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash").arg(root().join("deploy/setup.sh")).env("PATH", path).output().expect("setup runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(called, "", "deploy/setup.sh called: {called}");
    let run = std::fs::read_to_string(root().join("examples/run.sh")).unwrap();
    assert!(run.contains("deploy/setup.sh") && !run.contains("tests/setup.sh"), "{run}");
}
