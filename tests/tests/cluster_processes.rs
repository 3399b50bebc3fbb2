//! A real cluster: one `kiwano run --type … --id …` process per server, on a nats-server and an
//! etcd of each test's own, with clients over TCP and WebSocket. What a player of a Pitaya
//! cluster sees, across processes.

use std::path::PathBuf;
use std::time::Duration;

use kiwano_protocol::packet::PacketType;
use kiwano_protocol::protos;
use prost::Message as _;
use kiwano_tests::cluster_net::{ClusterNet, build};
use kiwano_tests::demo::{demo_contract, next_on, request_with_pushes};
use kiwano_tests::process::KiwanoProcess;
use kiwano_tests::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn example() -> PathBuf {
    build(&root().join("examples").join("cluster"))
}

fn test_project() -> PathBuf {
    build(&root().join("tests").join("projects").join("cluster"))
}

async fn connect(p: &KiwanoProcess, transport: Transport) -> Client {
    let kind = match transport {
        Transport::Tcp => "Tcp",
        Transport::Ws => "Ws",
        other => panic!("{other:?}"),
    };
    let mut c = Client::connect(p.addr(kind), transport, None).await.unwrap();
    c.handshake(&json!({"sys": {"platform": "test"}})).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_demo_contract_across_processes() {
    let project = example();
    let net = ClusterNet::start().await;
    let room = net.server(&project, "room", "room-1", false).await;
    let (c1, c2) = tokio::join!(net.server(&project, "connector", "connector-1", true), net.server(&project, "connector", "connector-2", true));

    let mut a = connect(&c1, Transport::Tcp).await;
    let mut b = connect(&c2, Transport::Ws).await;
    demo_contract(&mut a, &mut b, "connector-2").await;
    drop((room, c1, c2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_register_in_etcd_as_pitaya_does_and_sigterm_leaves() {
    let project = example();
    let net = ClusterNet::start().await;
    let mut room = net.server(&project, "room", "room-1", false).await;
    let connector = net.server(&project, "connector", "connector-1", true).await;
    let registered = net.registered();
    let keys: Vec<&str> = registered.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["pitaya/servers/connector/connector-1", "pitaya/servers/room/room-1"]);
    let host = registered[1].1["hostname"].as_str().expect("hostname").to_owned();
    assert!(!host.is_empty());
    assert_eq!(registered[1].1, json!({"id": "room-1", "type": "room", "metadata": {}, "frontend": false, "hostname": host}));
    assert_eq!(registered[0].1["frontend"], json!(true));
    // Under a lease of `cluster.lease_ttl`.
    let kv = net.etcd.ctl(&["get", "pitaya/servers/room/room-1", "-w", "json"]);
    let lease = serde_json::from_str::<Value>(&kv).unwrap()["kvs"][0]["lease"].as_i64().expect("a lease");
    let ttl = net.etcd.ctl(&["lease", "timetolive", &format!("{lease:x}")]);
    assert!(ttl.contains("granted with TTL(60s)"), "{ttl}");

    // SIGTERM: the server leaves etcd at once (no waiting for the lease), and exits cleanly.
    room.signal("TERM");
    let status = room.wait(WAIT).await.expect("room exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", room.logs());
    let keys: Vec<String> = net.registered().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["pitaya/servers/connector/connector-1"]);
    // The connector saw it go: a forwarded request fails at once with Pitaya's error.
    let mut a = connect(&connector, Transport::Tcp).await;
    let start = tokio::time::Instant::now();
    loop {
        let r = a.request("room.room.entry", b"{}").await.unwrap();
        if r.error && error_of(&r).msg.starts_with("no servers available of this type") {
            break;
        }
        assert!(start.elapsed() < WAIT, "the connector still routes to room-1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `room.room.join` of the test project: binds `name`; its answer and onMembers.
async fn join_as(c: &mut Client, name: &str) -> Value {
    let body = json!({"name": name}).to_string();
    let (answer, pushes) = request_with_pushes(c, "room.room.join", body.as_bytes(), &["onMembers"]).await;
    assert_eq!(answer, br#"{"code":0,"result":"success"}"#, "{name} joins");
    pushes[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_rpc_and_unique_session_across_processes() {
    let project = test_project();
    let net = ClusterNet::start().await;
    let _room = net.server(&project, "room", "room-1", false).await;
    let (c1, c2, gate) = tokio::join!(
        net.server(&project, "connector", "connector-1", true),
        net.server(&project, "connector", "connector-2", true),
        net.server(&project, "gate", "gate-1", true),
    );

    // Forwarded request (bind on the backend, sys.bindsession on the frontend) and notify;
    // pushes to users on two frontends; a group broadcast across them.
    let mut alice = connect(&c1, Transport::Tcp).await;
    assert_eq!(join_as(&mut alice, "alice").await, json!({"members": []}));
    let mut bob = connect(&c2, Transport::Ws).await;
    assert_eq!(join_as(&mut bob, "bob").await, json!({"members": ["alice"]}));
    assert_eq!(next_on(&mut alice, "onNewUser").await, json!({"content": "New user: bob"}));
    bob.notify("room.room.message", br#"{"name":"bob","content":"hi"}"#).await.unwrap();
    for c in [&mut alice, &mut bob] {
        assert_eq!(next_on(c, "onMessage").await, json!({"name": "bob", "content": "hi"}));
    }

    // User RPC both ways, with a custom error and its metadata, not-found and a timeout.
    let r = ok_json(&mut alice, "connector.ask", json!({"route": "room.room.echo", "body": {"x": 1}})).await;
    assert_eq!(r, json!({"room got": {"x": 1}}));
    let r = ok_json(&mut alice, "room.room.ask", json!({"route": "connector.connector.echo", "body": {"y": 2}})).await;
    assert_eq!(r, json!({"connector got": {"y": 2}}));
    let e = err_json(&mut alice, "connector.ask", json!({"route": "room.room.fail", "body": null})).await;
    assert_eq!(e, pe("RM-002", "remote refused", &[("why", "asked to")]));
    let e = err_json(&mut alice, "room.room.fail", json!({})).await;
    assert_eq!(e, pe("RM-001", "room refused", &[("session", "1")]));
    let e = err_json(&mut alice, "connector.ask", json!({"route": "room.room.nope", "body": null})).await;
    assert_eq!(e, pe("PIT-404", "route not found", &[("route", "room.nope")]));
    let e = err_json(&mut alice, "room.room.nope", json!({})).await;
    assert_eq!(e, pe("PIT-404", "pitaya/handler: room.room.nope not found", &[]));
    let e = err_json(&mut alice, "connector.ask", json!({"route": "room.room.slow", "body": 600, "timeout_ms": 150})).await;
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-408", "rpc client: request timeout"));

    // Session data set on the backend reaches the frontend.
    assert_eq!(ok_json(&mut alice, "room.room.setdata", json!({"key": "level", "value": 7})).await, json!({"set": "level"}));
    assert_eq!(ok_json(&mut alice, "connector.data", json!({})).await["level"], json!(7));

    // Unique session: alice binding on the other connector kicks her first session, even
    // though it is on another process; binding on a frontend of another type kicks nobody.
    let mut alice2 = connect(&c2, Transport::Tcp).await;
    join_as(&mut alice2, "alice").await;
    let got = expect_closed(&mut alice, WAIT).await;
    assert_eq!(got.last().map(|p| p.kind), Some(PacketType::Kick), "{got:?}");
    let mut alice3 = connect(&gate, Transport::Tcp).await;
    join_as(&mut alice3, "alice").await;
    // The gate's bind was broadcast (if at all) before its answer: a round trip on connector-2
    // after it would see the kick.
    bob.notify("room.room.message", br#"{"name":"bob","content":"still here?"}"#).await.unwrap();
    assert_eq!(next_on(&mut alice2, "onMessage").await, json!({"name": "bob", "content": "still here?"}));
    assert_eq!(ok_json(&mut alice2, "connector.data", json!({})).await["ipversion"], json!("ipv4"));

    // A kick from the backend (sys.kick across processes).
    bob.send_request("room.room.kickme", b"{}").await.unwrap();
    let got = expect_closed(&mut bob, WAIT).await;
    assert!(got.iter().any(|p| p.kind == PacketType::Kick), "{got:?}");
}

/// The server that answered `room.room.whoami`, or the error code.
async fn whoami(c: &mut Client) -> Result<String, String> {
    let r = c.request("room.room.whoami", b"{}").await.map_err(|e| format!("connection: {e}"))?;
    if r.error {
        return Err(error_of(&r).code);
    }
    let v: Value = serde_json::from_slice(&r.data).map_err(|e| e.to_string())?;
    Ok(v["server"].as_str().unwrap_or_default().to_owned())
}

/// One request of the load: when it was sent, how long it took, what answered it.
struct Sample {
    sent: tokio::time::Instant,
    took: Duration,
    answer: Result<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_fast_and_traffic_moves_on() {
    let project = test_project();
    let mut net = ClusterNet::start().await;
    net.env.push(("KIWANO_CLUSTER_REQUEST_TIMEOUT".into(), "2s".into()));
    // Backends first: a frontend reads discovery as it starts, the watch brings the rest.
    let (room1, room2) = tokio::join!(net.server(&project, "room", "room-1", false), net.server(&project, "room", "room-2", false));
    let connector = net.server(&project, "connector", "connector-1", true).await;
    let mut rooms = [Some(room1), Some(room2)];
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(&connector, Transport::Tcp).await);
    }
    // Which room serves these players (one room's worth of players share an affinity key).
    let victim = whoami(&mut clients[0]).await.expect("a room answers");
    let survivor = if victim == "room-1" { "room-2" } else { "room-1" };

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for mut c in clients {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = tokio::time::Instant::now();
                let answer = whoami(&mut c).await;
                samples.push(Sample { sent, took: sent.elapsed(), answer });
            }
            samples
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = tokio::time::Instant::now();
    let index = usize::from(victim == "room-2");
    let mut dead = rooms[index].take().expect("the victim runs");
    dead.signal("KILL");
    dead.wait(WAIT).await.expect("killed");

    // A new player is served at once, by the survivor, though the dead room's lease (60 s)
    // still stands in etcd.
    let mut newcomer = connect(&connector, Transport::Ws).await;
    let started = tokio::time::Instant::now();
    assert_eq!(whoami(&mut newcomer).await.as_deref(), Ok(survivor));
    assert!(started.elapsed() < Duration::from_secs(1), "the newcomer waited {:?}", started.elapsed());
    assert!(net.registered().iter().any(|(k, _)| k.ends_with(&victim)), "the victim's key should still be in etcd");

    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let samples = task.await.expect("a load task");
        total += samples.len();
        for s in &samples {
            // No request hangs: each is answered, at worst by the request timeout (2 s).
            assert!(s.took < Duration::from_millis(3000), "a request took {:?}", s.took);
            match &s.answer {
                Ok(_) => {}
                // Only requests already on their way to the dead room time out.
                Err(code) => {
                    assert_eq!(code, "PIT-408", "unexpected error");
                    assert!(s.sent < killed_at + Duration::from_millis(500), "a request sent {:?} after the kill failed", s.sent - killed_at);
                }
            }
        }
        // Once the kill is known, every request is served by the survivor.
        let late: Vec<_> = samples.iter().filter(|s| s.sent > killed_at + Duration::from_secs(1)).collect();
        assert!(!late.is_empty(), "no requests after the kill");
        assert!(late.iter().all(|s| s.answer.as_deref() == Ok(survivor)));
    }
    assert!(total > 8 * 10, "only {total} requests");
    drop(rooms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_etcd_restarts_are_survived_without_restarting_kiwano() {
    let project = test_project();
    let mut net = ClusterNet::start().await;
    net.env.push(("KIWANO_CLUSTER_REQUEST_TIMEOUT".into(), "1s".into()));
    let mut room1 = net.server(&project, "room", "room-1", false).await;
    let connector = net.server(&project, "connector", "connector-1", true).await;
    let mut alice = connect(&connector, Transport::Tcp).await;
    join_as(&mut alice, "alice").await;

    // NATS goes away and comes back on its port: the servers reconnect and subscribe again,
    // the bound user's subscriptions included.
    net.nats.restart().await;
    let start = tokio::time::Instant::now();
    while whoami(&mut alice).await.as_deref() != Ok("room-1") {
        assert!(start.elapsed() < WAIT, "no RPC after NATS restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut bob = connect(&connector, Transport::Ws).await;
    join_as(&mut bob, "bob").await;
    assert_eq!(next_on(&mut alice, "onNewUser").await, json!({"content": "New user: bob"}));
    bob.notify("room.room.message", br#"{"name":"bob","content":"after nats"}"#).await.unwrap();
    assert_eq!(next_on(&mut alice, "onMessage").await, json!({"name": "bob", "content": "after nats"}));

    // etcd goes away and comes back: leases are kept (or granted again and the keys written
    // again), the watch is re-established and sees a server that starts afterwards.
    net.etcd.restart().await;
    let room2 = net.server(&project, "room", "room-2", false).await;
    let start = tokio::time::Instant::now();
    loop {
        let keys: Vec<String> = net.registered().into_iter().map(|(k, _)| k).collect();
        if keys == ["pitaya/servers/connector/connector-1", "pitaya/servers/room/room-1", "pitaya/servers/room/room-2"] {
            break;
        }
        assert!(start.elapsed() < WAIT, "etcd holds {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    room1.signal("TERM");
    room1.wait(WAIT).await.expect("room-1 stops");
    let start = tokio::time::Instant::now();
    while whoami(&mut alice).await.as_deref() != Ok("room-2") {
        assert!(start.elapsed() < WAIT, "the connector never routed to room-2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(room2);
}

/// Everything published on a NATS server, as `(subject, reply subject, payload)`.
struct NatsTap {
    seen: std::sync::Arc<parking_lot::Mutex<Vec<(String, String, Vec<u8>)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl NatsTap {
    async fn start(url: &str) -> Self {
        use futures_util::StreamExt as _;
        let client = async_nats::connect(url).await.expect("the tap connects");
        let mut all = client.subscribe(">").await.expect("subscribe to everything");
        client.flush().await.expect("flush");
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(m) = all.next().await {
                let reply = m.reply.as_ref().map(ToString::to_string).unwrap_or_default();
                sink.lock().push((m.subject.to_string(), reply, m.payload.to_vec()));
            }
        });
        Self { seen, _task: task }
    }

    /// Waits for a message on `subject` that decodes as `T` and satisfies `pick`; returns it
    /// with its reply subject.
    async fn wait<T: prost::Message + Default>(&self, subject: &str, pick: impl Fn(&T) -> bool) -> (T, String) {
        let start = tokio::time::Instant::now();
        loop {
            let found = self.seen.lock().iter().filter(|(s, _, _)| s == subject).find_map(|(_, reply, payload)| {
                let m = T::decode(&payload[..]).ok()?;
                pick(&m).then(|| (m, reply.clone()))
            });
            if let Some(found) = found {
                return found;
            }
            let subjects: Vec<String> = self.seen.lock().iter().map(|(s, _, _)| s.clone()).collect();
            assert!(start.elapsed() < WAIT, "nothing on {subject}; seen {subjects:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn route_of(r: &protos::Request) -> &str {
    r.msg.as_ref().map_or("", |m| m.route.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_travels_on_nats_is_pitayas_protobuf() {
    let project = test_project();
    let net = ClusterNet::start().await;
    let tap = NatsTap::start(&net.nats.url()).await;
    let _room = net.server(&project, "room", "room-1", false).await;
    let connector = net.server(&project, "connector", "connector-1", true).await;
    let mut alice = connect(&connector, Transport::Tcp).await;
    join_as(&mut alice, "alice").await;

    // The forwarded request: a Sys protos.Request to the room's subject, with the session, the
    // frontend's id and the propagated context; answered once on the reply subject.
    let (forward, reply) = tap.wait::<protos::Request>("pitaya/servers/room/room-1", |r| route_of(r) == "room.room.join").await;
    assert_eq!(forward.r#type, protos::RpcType::Sys as i32);
    let msg = forward.msg.clone().expect("msg");
    assert_eq!((msg.r#type, &msg.data[..]), (protos::MsgType::MsgRequest as i32, &br#"{"name":"alice"}"#[..]));
    let session = forward.session.clone().expect("session");
    assert_eq!((session.id, session.uid.as_str()), (1, ""));
    assert!(serde_json::from_slice::<Value>(&session.data).expect("session data is JSON").is_object());
    assert_eq!(forward.frontend_id, "connector-1");
    let meta: Value = serde_json::from_slice(&forward.metadata).expect("metadata is JSON");
    assert_eq!((meta["peer.id"].as_str(), meta["peer.service"].as_str(), meta["req-route"].as_str()), (Some("connector-1"), Some("connector"), Some("room.room.join")));
    assert_eq!(meta["reqTimeout"], json!("5s"));
    assert!(!reply.is_empty(), "a request has a reply subject");
    let (response, _) = tap.wait::<protos::Response>(&reply, |_| true).await;
    assert_eq!((&response.data[..], response.error), (&br#"{"code":0,"result":"success"}"#[..], None));
    assert_eq!(tap.seen.lock().iter().filter(|(s, _, _)| *s == reply).count(), 1, "answered exactly once");

    // The backend's bind: sys.bindsession to the frontend's subject, a User RPC with a
    // protos.Session (as Pitaya's `Remote.SendRequest`); the frontend tells the other frontends
    // of its type (unique session) with a BindMsg.
    let (bind, _) = tap.wait::<protos::Request>("pitaya/servers/connector/connector-1", |r| route_of(r) == "sys.bindsession").await;
    assert_eq!(bind.r#type, protos::RpcType::User as i32);
    let bound = protos::Session::decode(&bind.msg.expect("msg").data[..]).expect("a protos.Session");
    assert_eq!((bound.id, bound.uid.as_str()), (1, "alice"));
    let (bind_msg, _) = tap.wait::<protos::BindMsg>("pitaya/connector/bindings", |_| true).await;
    assert_eq!(bind_msg, protos::BindMsg { uid: "alice".into(), fid: "connector-1".into() });

    // A push to the bound player: protos.Push on the user's subject of the frontend type.
    let (push, _) = tap.wait::<protos::Push>("pitaya/connector/user/alice/push", |p| p.route == "onMembers").await;
    assert_eq!(push, protos::Push { route: "onMembers".into(), uid: "alice".into(), data: br#"{"members":[]}"#.to_vec() });

    // A forwarded notify is answered with `ack`.
    alice.notify("room.room.message", br#"{"name":"alice","content":"hi"}"#).await.unwrap();
    let (_, reply) = tap.wait::<protos::Request>("pitaya/servers/room/room-1", |r| route_of(r) == "room.room.message").await;
    let (ack, _) = tap.wait::<protos::Response>(&reply, |_| true).await;
    assert_eq!(&ack.data[..], b"ack");

    // A kick by uid: protos.KickMsg on the user's kick subject; the player is kicked.
    let mut bob = connect(&connector, Transport::Ws).await;
    join_as(&mut bob, "bob").await;
    assert_eq!(ok_json(&mut bob, "room.room.kickuser", json!("alice")).await, json!([]));
    let (kick, _) = tap.wait::<protos::KickMsg>("pitaya/connector/user/alice/kick", |_| true).await;
    assert_eq!(kick.user_id, "alice");
    let got = expect_closed(&mut alice, WAIT).await;
    assert!(got.iter().any(|p| p.kind == PacketType::Kick), "{got:?}");

    // A forwarded session whose data is not a JSON object is refused, never read as `{}`
    // (and written back over the frontend's data).
    let nats = async_nats::connect(net.nats.url()).await.unwrap();
    let mut bad = forward.clone();
    if let Some(session) = bad.session.as_mut() {
        session.data = b"[1,2]".to_vec();
    }
    let answer = nats.request("pitaya/servers/room/room-1", bad.encode_to_vec().into()).await.unwrap();
    let error = protos::Response::decode(&answer.payload[..]).unwrap().error.expect("an error");
    assert_eq!(error.code, "PIT-400", "{error:?}");
    assert!(error.msg.starts_with("invalid session data from connector-1"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_nats_and_etcd_waits_for_them() {
    use kiwano_tests::services::{Etcd, Nats, free_port};
    let project = test_project();
    let (nats_port, etcd_port) = (free_port(), free_port());
    let cache = root().join("target").join("test-cache").display().to_string();
    let env = |nats: u16, etcd: u16| {
        vec![
            ("KIWANO_CLUSTER_NATS_URL".to_owned(), format!("nats://127.0.0.1:{nats}")),
            ("KIWANO_CLUSTER_ETCD_ENDPOINTS".to_owned(), format!("[\"127.0.0.1:{etcd}\"]")),
            ("KIWANO_CLUSTER_ETCD_TIMEOUT".to_owned(), "1s".to_owned()),
            ("KIWANO_RUNTIME_CACHE_DIR".to_owned(), cache.clone()),
        ]
    };
    let first = env(nats_port, etcd_port);
    let first: Vec<(&str, &str)> = first.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut room = KiwanoProcess::spawn_server(&project, "room", "room-1", &[], &first);
    // Nothing to connect to: it waits, and says so, for each.
    eventually("retries logged", WAIT, || {
        let logs = room.logs();
        logs.contains("cannot reach NATS") && logs.contains("trying again in") && (logs.contains("cannot reach etcd") || logs.contains("etcd did not answer"))
    })
    .await;
    // They come up: it serves, without a restart.
    let (nats, etcd) = tokio::join!(Nats::start_on(nats_port), Etcd::start_on(etcd_port, &[]));
    room.wait_serving().await;
    assert!(etcd.ctl(&["get", "--prefix", "--keys-only", "pitaya/servers/"]).contains("pitaya/servers/room/room-1"));
    drop(nats);

    // A signal while it waits ends the wait, cleanly (Pitaya #461 panicked on a second one).
    let other = env(free_port(), free_port());
    let other: Vec<(&str, &str)> = other.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut waiting = KiwanoProcess::spawn_server(&project, "room", "room-2", &[], &other);
    eventually("a retry logged", WAIT, || waiting.logs().contains("trying again in")).await;
    waiting.signal("INT");
    let status = waiting.wait(WAIT).await.expect("the wait ends on SIGINT");
    assert!(status.success(), "{status}\n{}", waiting.logs());
    assert!(waiting.logs().contains("stopped before serving"), "{}", waiting.logs());
    assert!(!waiting.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_frontend_registers_and_serves_like_any_other() {
    let project = test_project();
    let mut net = ClusterNet::start().await;
    let tls = tls();
    let (cert, key) = (tls.dir.join("cert.pem"), tls.dir.join("key.pem"));
    let acceptors = format!(r#"[{{kind="wss",address="127.0.0.1:0",cert="{}",key="{}"}}]"#, cert.display(), key.display());
    net.env.push(("KIWANO_SERVERS_GATE_ACCEPTORS".into(), acceptors));
    let _room = net.server(&project, "room", "room-1", false).await;
    // No --listen: the type's configured acceptors, here one WSS (Pitaya #488 never
    // registered WSS frontends).
    let env = net.overrides();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gate = KiwanoProcess::start_server(&project, "gate", "gate-1", &[], &env).await;
    let registered = net.registered();
    let (_, descriptor) = registered.iter().find(|(k, _)| k == "pitaya/servers/gate/gate-1").expect("gate-1 registered");
    assert_eq!(descriptor["frontend"], json!(true));
    let mut c = Client::connect(gate.addr("Wss"), Transport::Wss, Some(&tls.client)).await.unwrap();
    c.handshake(&json!({"sys": {}})).await.unwrap();
    assert_eq!(join_as(&mut c, "wendy").await, json!({"members": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_granted_again_and_the_keys_written_again() {
    let project = example();
    let mut net = ClusterNet::start().await;
    net.env.push(("KIWANO_CLUSTER_LEASE_TTL".into(), "3s".into()));
    let room = net.server(&project, "room", "room-1", false).await;
    let lease_of = |net: &ClusterNet| -> Option<i64> {
        let kv: Value = serde_json::from_str(&net.etcd.ctl(&["get", "pitaya/servers/room/room-1", "-w", "json"])).ok()?;
        kv["kvs"][0]["lease"].as_i64()
    };
    let lost = lease_of(&net).expect("room-1 registered under a lease");
    // The lease goes (as after an etcd outage longer than its TTL): the key goes with it.
    net.etcd.ctl(&["lease", "revoke", &format!("{lost:x}")]);
    assert_eq!(lease_of(&net), None);
    // The server notices at its next keep-alive (a third of the TTL) and registers again.
    let start = tokio::time::Instant::now();
    let again = loop {
        if let Some(lease) = lease_of(&net) {
            break lease;
        }
        assert!(start.elapsed() < WAIT, "room-1 never registered again:\n{}", room.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(again, lost);
    let (_, descriptor) = net.registered().into_iter().find(|(k, _)| k == "pitaya/servers/room/room-1").expect("registered");
    assert_eq!(descriptor["id"], json!("room-1"));
}

/// A burst of messages faster than a server takes them from a subscription of
/// `cluster.nats_buffer = 1`: the NATS client drops what does not fit (a slow consumer), and
/// `pitaya_rpc_server_dropped_messages` counts them, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_nats_client_drops_are_counted() {
    let project = test_project();
    let mut net = ClusterNet::start().await;
    let port = kiwano_tests::services::free_port();
    net.env.push(("KIWANO_CLUSTER_NATS_BUFFER".into(), "1".into()));
    net.env.push(("KIWANO_APP_HTTP".into(), format!("127.0.0.1:{port}")));
    let room = net.server(&project, "room", "room-1", false).await;
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dropped = || async move {
        let text = http_request(http, "GET", "/metrics").await.text();
        text.lines().find(|l| l.starts_with("pitaya_rpc_server_dropped_messages{")).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(dropped().await, Some(0.0));
    let tap = async_nats::connect(net.nats.url()).await.expect("connects");
    for _ in 0..5000 {
        tap.publish("pitaya/servers/room/room-1", bytes::Bytes::from_static(b"not a request")).await.expect("publish");
    }
    tap.flush().await.expect("flush");
    eventually_async("drops counted", WAIT, || async { dropped().await.is_some_and(|n| n > 0.0) }).await;
    assert!(room.logs().contains("slow consumer"), "{}", room.logs());
    drop(room);
}

/// NATS and etcd going away and coming back, as `/metrics` and `/readyz` show it:
/// `kiwano_nats_connected` and `kiwano_etcd_connected` go to 0 and back to 1, and the server is
/// not ready while NATS is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_gauges_follow_nats_and_etcd() {
    let project = test_project();
    let mut net = ClusterNet::start().await;
    let port = kiwano_tests::services::free_port();
    net.env.push(("KIWANO_APP_HTTP".into(), format!("127.0.0.1:{port}")));
    // The lease's keep-alive asks etcd every third of this.
    net.env.push(("KIWANO_CLUSTER_LEASE_TTL".into(), "2s".into()));
    let room = net.server(&project, "room", "room-1", false).await;
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gauge = |family: &'static str| async move {
        let text = http_request(http, "GET", "/metrics").await.text();
        text.lines().find(|l| l.starts_with(&format!("{family}{{"))).and_then(|l| l.rsplit(' ').next()).map(str::to_owned)
    };
    let is = |family: &'static str, want: &'static str| async move { gauge(family).await.as_deref() == Some(want) };
    assert_eq!(gauge("kiwano_nats_connected").await.as_deref(), Some("1"));
    assert_eq!(gauge("kiwano_etcd_connected").await.as_deref(), Some("1"));

    net.etcd.stop();
    eventually_async("etcd seen away", WAIT, || is("kiwano_etcd_connected", "0")).await;
    net.etcd.restart().await;
    eventually_async("etcd seen back", WAIT, || is("kiwano_etcd_connected", "1")).await;

    net.nats.stop();
    eventually_async("NATS seen away", WAIT, || is("kiwano_nats_connected", "0")).await;
    assert_eq!(http_request(http, "GET", "/readyz").await.text(), "not connected to NATS\n");
    net.nats.restart().await;
    eventually_async("NATS seen back", WAIT, || is("kiwano_nats_connected", "1")).await;
    eventually_async("ready again", WAIT, || async { http_request(http, "GET", "/readyz").await.status == 200 }).await;
    drop(room);
}
