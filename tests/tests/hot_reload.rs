//! Hot reload: a server type's component replaced while players stay connected — through the
//! admin endpoint of the HTTP listener and through `kiwano run --watch` — with no request
//! failing and no connection dropping during the swap, session data carried over, a guest's
//! changed metric exported from the moment its version serves, and a
//! component that fails to compile or to `init` refused while the running one keeps serving.

use std::time::Duration;

use kiwano_tests::*;

const TOKEN: &str = "s3cret-admin-token";

/// A copy of a component at a path the test owns (the "deployed" file that gets replaced).
fn deployed(name: &str, from: &std::path::Path) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiwano-reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("testbed.wasm");
    std::fs::copy(from, &path).unwrap();
    path
}

async fn admin(server: &TestServer, method: &str, target: &str, token: Option<&str>) -> HttpResponse {
    let addr = server.server.http_address().expect("http listener");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    HttpResponse { status, headers: Vec::new(), body: body.into_bytes() }
}

async fn version(c: &mut Client) -> String {
    let r = c.request("test.version", b"").await.unwrap();
    assert!(!r.error, "{}", String::from_utf8_lossy(&r.data));
    String::from_utf8_lossy(&r.data).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_swapped_in_while_players_play() {
    let v1 = guest("testbed-guest");
    let v2 = testbed_variant("v2", &[("TESTBED_VERSION", "2")]);
    let broken_init = testbed_variant("fail-init", &[("TESTBED_FAIL_INIT", "1")]);
    let path = deployed("admin", &v1);
    let server = TestServer::with(TestConfig {
        component: Some(path.clone()),
        extra: format!("[app]\nhttp = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"),
        ..Default::default()
    })
    .await;

    // The admin endpoints want the token.
    assert_eq!(admin(&server, "GET", "/admin/versions", None).await.status, 401);
    assert_eq!(admin(&server, "POST", "/admin/reload/testbed", Some("wrong")).await.status, 401);
    let versions = admin(&server, "GET", "/admin/versions", Some(TOKEN)).await;
    assert_eq!((versions.status, versions.text()), (200, r#"{"testbed":1}"#.to_owned()));

    // Players with session data, and a steady stream of requests from them.
    let mut players = Vec::new();
    for i in 0..6 {
        let mut c = server.client(if i % 2 == 0 { Transport::Tcp } else { Transport::Ws }).await;
        assert!(!c.request("test.set", format!("level={i}").as_bytes()).await.unwrap().error);
        players.push(c);
    }
    assert_eq!(version(&mut players[0]).await, "1");
    // Each player plays until it has been answered by version 2 five times.
    let mut load = Vec::new();
    for mut c in players {
        load.push(tokio::spawn(async move {
            let (mut seen, mut slowest, mut on_v2) = (Vec::new(), Duration::ZERO, 0);
            while on_v2 < 5 {
                let started = tokio::time::Instant::now();
                let v = version(&mut c).await;
                slowest = slowest.max(started.elapsed());
                on_v2 += usize::from(v == "2");
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
            }
            (c, seen, slowest)
        }));
    }

    // A component that does not compile, then one whose init fails: refused, v1 serves on.
    std::fs::write(&path, b"not a component").unwrap();
    let r = admin(&server, "POST", "/admin/reload/testbed", Some(TOKEN)).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("is not a valid kiwano:server component"), "{}", r.text());
    std::fs::copy(&broken_init, &path).unwrap();
    let r = admin(&server, "POST", "/admin/reload/testbed", Some(TOKEN)).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("TESTBED_FAIL_INIT"), "{}", r.text());
    assert_eq!(server.server.version("testbed"), Some(1));
    assert!(logs().contains("hot reload refused, the running version keeps serving"));

    // Version 2, under load.
    std::fs::copy(&v2, &path).unwrap();
    let r = admin(&server, "POST", "/admin/reload/testbed", Some(TOKEN)).await;
    assert_eq!((r.status, r.text()), (200, r#"{"server_type":"testbed","version":2}"#.to_owned()));
    assert_eq!(server.server.version("testbed"), Some(2));
    let mut check = server.client(Transport::Tcp).await;
    assert_eq!(version(&mut check).await, "2");
    for (i, task) in load.into_iter().enumerate() {
        // No request failed (`version` asserts it), no connection dropped: each player saw 1
        // then 2, and keeps its session data.
        let (mut c, seen, slowest) = tokio::time::timeout(Duration::from_secs(30), task).await.unwrap_or_else(|_| panic!("player {i} never saw version 2")).expect("a player's load");
        assert_eq!(seen, ["1", "2"], "player {i}");
        let data = c.request("test.get", b"level").await.unwrap();
        assert_eq!(String::from_utf8_lossy(&data.data), i.to_string(), "player {i}'s session data");
        assert!(slowest < Duration::from_secs(2), "player {i} waited {slowest:?}");
    }
    let versions = admin(&server, "GET", "/admin/versions", Some(TOKEN)).await;
    assert_eq!(versions.text(), r#"{"testbed":2}"#);
    assert!(logs().contains("hot reload: the new version serves"));
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_watch_swaps_in_a_changed_component() {
    let v1 = guest("testbed-guest");
    let v2 = testbed_variant("v2", &[("TESTBED_VERSION", "2")]);
    let path = deployed("watch", &v1);
    let project = path.parent().unwrap().to_path_buf();
    let config = format!(
        "[runtime]\ncache_dir = \"{}\"\n[servers.testbed]\nfrontend = true\ncomponent = \"testbed.wasm\"\n[[servers.testbed.acceptors]]\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\n",
        root().join("target").join("test-cache").display()
    );
    std::fs::write(project.join("kiwano.toml"), config).unwrap();
    let p = kiwano_tests::process::KiwanoProcess::run_project(&project, &["--watch"]).await;
    let mut c = Client::connect(p.addr("Tcp"), Transport::Tcp, None).await.unwrap();
    c.handshake(&serde_json::json!({"sys": {}})).await.unwrap();
    assert_eq!(version(&mut c).await, "1");
    // Deployed over the file (a temporary name, then a rename, as a deploy tool would).
    let staged = project.join("testbed.wasm.new");
    std::fs::copy(&v2, &staged).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    // The same connection, answered by the new version once the watcher swapped it in.
    let start = tokio::time::Instant::now();
    while version(&mut c).await != "2" {
        assert!(start.elapsed() < Duration::from_secs(30), "not reloaded:\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.logs().contains("hot reload: the new version serves"), "{}", p.logs());
}

/// A new version that changes one of its own metrics (a label more): from the moment it serves,
/// `/metrics` has the new family in place of the old, whose series go with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_may_change_its_own_metrics() {
    let v1 = guest("testbed-guest");
    let v2 = testbed_variant("metric-shard", &[("TESTBED_VERSION", "2"), ("TESTBED_METRIC_SHARD", "eu")]);
    let path = deployed("metric", &v1);
    let server = TestServer::with(TestConfig {
        component: Some(path.clone()),
        extra: format!("[app]\nhttp = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"),
        metrics: true,
        ..Default::default()
    })
    .await;
    let scrape = || async { http_request(server.server.http_address().expect("http"), "GET", "/metrics").await.text() };
    let old = r#"kiwano_guest_testbed_requests_total{game="",kind="small",server_type="testbed"} 1"#;
    let new = r#"kiwano_guest_testbed_requests_total{game="",kind="small",server_type="testbed",shard="eu"} 1"#;
    let mut c = server.client(Transport::Tcp).await;
    assert_eq!(&c.request("test.metric", b"small").await.unwrap().data[..], b"counted");
    let text = scrape().await;
    assert!(text.lines().any(|l| l == old), "{text}");

    std::fs::copy(&v2, &path).unwrap();
    let r = admin(&server, "POST", "/admin/reload/testbed", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(version(&mut c).await, "2");
    assert_eq!(&c.request("test.metric", b"small").await.unwrap().data[..], b"counted");
    let text = scrape().await;
    assert!(text.lines().any(|l| l == new), "{text}");
    assert!(!text.contains(r#"kind="small",server_type="testbed"}"#), "the old family's series are gone: {text}");
    assert_eq!(text.matches("# TYPE kiwano_guest_testbed_requests_total counter").count(), 1, "{text}");
    server.server.shutdown().await;
}
