//! tests/projects/cluster through the embedded cluster: a `connector` frontend forwards `room.room.*`
//! to the `room` backend as Sys RPCs carrying encoded `protos.Request`s; the backend binds,
//! sets session data, kicks and pushes through the frontend; user RPCs go both ways.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_protocol::packet::PacketType;
use kiwano_protocol::protos;
use kiwano_cluster::{BoxFuture, RpcHandler, ServerInfo, Serving, messages};
use kiwano_server::config::AcceptorKind;
use kiwano_tests::*;
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::{Value, json};

async fn client(server: &Server) -> Client {
    let addr = server.address("connector", AcceptorKind::Ws).unwrap().to_string();
    let mut c = Client::connect(&addr, Transport::Ws, None).await.unwrap();
    c.handshake(&json!({"sys": {"platform": "test"}})).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_join_binds_pushes_and_broadcasts() {
    let server = start_test_project("cluster").await;
    let mut alice = client(&server).await;
    let id = alice.send_request("room.room.join", br#"{"name":"alice"}"#).await.unwrap();
    let members = alice.next_message().await.unwrap();
    assert_eq!((members.route.as_str(), &members.data[..]), ("onMembers", &br#"{"members":[]}"#[..]));
    assert_eq!(&alice.response(id).await.unwrap().data[..], br#"{"code":0,"result":"success"}"#);
    // The backend's bind reached the frontend (sys.bindsession).
    assert!(server.sessions().by_uid("alice").is_some());

    let mut bob = client(&server).await;
    assert_eq!(ok_json(&mut bob, "room.room.join", json!({"name": "bob"})).await, json!({"code":0,"result":"success"}));
    let m = bob.next_message().await.unwrap();
    assert_eq!((m.route.as_str(), &m.data[..]), ("onMembers", &br#"{"members":["alice"]}"#[..]));
    let m = alice.next_message().await.unwrap();
    assert_eq!((m.route.as_str(), &m.data[..]), ("onNewUser", &br#"{"content":"New user: bob"}"#[..]));
    bob.notify("room.room.message", br#"{"name":"bob","content":"hi"}"#).await.unwrap();
    for c in [&mut alice, &mut bob] {
        let m = c.next_message().await.unwrap();
        assert_eq!((m.route.as_str(), &m.data[..]), ("onMessage", &br#"{"name":"bob","content":"hi"}"#[..]));
    }
    // Binding twice fails on the backend with the frontend's error.
    let e = err_json(&mut alice, "room.room.join", json!({"name": "again"})).await;
    assert_eq!(e, pe("RH-000", "session is already bound to an uid (\"alice\")", &[("failed", "bind")]));
    // Alice leaves: the connector sees the close and tells the room (user RPC frontend → backend)
    // before the session is forgotten.
    drop(alice);
    eventually("alice's session forgotten", Duration::from_secs(10), || server.sessions().count() == 1).await;
    let mut carol = client(&server).await;
    ok_json(&mut carol, "room.room.join", json!({"name": "carol"})).await;
    let m = carol.next_message().await.unwrap();
    assert_eq!(&m.data[..], br#"{"members":["bob"]}"#);
    server.shutdown().await;
}

/// Reads messages until one on `route` arrives; panics if the connection ends first.
async fn next_on(c: &mut Client, route: &str) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), c.next_message())
            .await
            .unwrap_or_else(|_| panic!("no {route} within 10s"))
            .unwrap_or_else(|e| panic!("waiting for {route}: {e}"));
        if m.route == route {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_who_reconnects_and_rejoins_stays_in_the_room() {
    let server = start_test_project("cluster").await;
    let mut watcher = client(&server).await;
    ok_json(&mut watcher, "room.room.join", json!({"name": "watcher"})).await;
    let mut player = client(&server).await;
    ok_json(&mut player, "room.room.join", json!({"name": "p"})).await;
    for round in 0..20 {
        let mut again = client(&server).await;
        // Both orders a reconnect takes: the old connection is gone before the new one joins
        // (its close races the join), or it is still open and the join's bind kicks it.
        let mut old = Some(player);
        if round % 2 == 0 {
            drop(old.take());
        }
        let joined = ok_json(&mut again, "room.room.join", json!({"name": "p"})).await;
        assert_eq!(joined, json!({"code":0,"result":"success"}), "round {round}");
        if let Some(mut old) = old {
            let got = expect_closed(&mut old, Duration::from_secs(10)).await;
            assert_eq!(got.last().map(|p| p.kind), Some(PacketType::Kick), "round {round}: the old connection is kicked");
        }
        // Until the old session's close handler has run and it is forgotten.
        eventually("the old session forgotten", Duration::from_secs(10), || server.sessions().count() == 2).await;
        let body = format!(r#"{{"name":"watcher","content":"round {round}"}}"#);
        watcher.notify("room.room.message", body.as_bytes()).await.unwrap();
        let m = next_on(&mut again, "onMessage").await;
        assert_eq!(String::from_utf8_lossy(&m.data), body, "round {round}: the player is still in the room");
        next_on(&mut watcher, "onMessage").await;
        player = again;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_session_changes_reach_the_frontend() {
    let server = start_test_project("cluster").await;
    let mut c = client(&server).await;
    ok_json(&mut c, "room.room.join", json!({"name": "dora"})).await;
    let _members = c.next_message().await.unwrap();
    assert_eq!(ok_json(&mut c, "room.room.setdata", json!({"key": "level", "value": 7})).await, json!({"set": "level"}));
    // Set on the backend, read on the frontend.
    assert_eq!(ok_json(&mut c, "connector.data", json!({})).await, json!({"ipversion": "ipv4", "level": 7}));
    ok_json(&mut c, "connector.enter", json!({"room": "blue"})).await;
    // Set on the frontend, seen by the backend.
    let who = ok_json(&mut c, "room.room.whoami", json!({})).await;
    assert_eq!(who["room"], json!("blue"));
    // Kick from the backend (sys.kick).
    c.send_request("room.room.kickme", b"{}").await.unwrap();
    let got = expect_closed(&mut c, Duration::from_secs(2)).await;
    assert!(got.iter().any(|p| p.kind == PacketType::Kick), "{got:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_rpc_both_ways_with_errors_and_timeouts() {
    let server = start_test_project("cluster").await;
    let mut c = client(&server).await;
    // Frontend → backend.
    let r = ok_json(&mut c, "connector.ask", json!({"route": "room.room.echo", "body": {"x": 1}})).await;
    assert_eq!(r, json!({"room got": {"x": 1}}));
    // Backend → frontend.
    let r = ok_json(&mut c, "room.room.ask", json!({"route": "connector.connector.echo", "body": {"y": 2}})).await;
    assert_eq!(r, json!({"connector got": {"y": 2}}));
    // A remote's custom error, with metadata.
    let e = err_json(&mut c, "connector.ask", json!({"route": "room.room.fail", "body": null})).await;
    assert_eq!(e, pe("RM-002", "remote refused", &[("why", "asked to")]));
    // A forwarded handler's custom error.
    let e = err_json(&mut c, "room.room.fail", json!({})).await;
    assert_eq!(e, pe("RM-001", "room refused", &[("session", "1")]));
    // Not found: remote and handler.
    let e = err_json(&mut c, "connector.ask", json!({"route": "room.room.nope", "body": null})).await;
    assert_eq!(e, pe("PIT-404", "route not found", &[("route", "room.nope")]));
    let e = err_json(&mut c, "room.room.nope", json!({})).await;
    assert_eq!(e, pe("PIT-404", "pitaya/handler: room.room.nope not found", &[]));
    let e = err_json(&mut c, "lobby.room.join", json!({})).await;
    assert_eq!(e, pe("PIT-500", "no servers available of this type: lobby.room.join", &[]));
    // Timeout.
    let e = err_json(&mut c, "connector.ask", json!({"route": "room.room.slow", "body": 600, "timeout_ms": 150})).await;
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-408", "rpc client: request timeout"));
    assert_eq!(e.metadata.get("timeout").map(String::as_str), Some("150ms"));
    assert_eq!(e.metadata.get("route").map(String::as_str), Some("room.room.slow"));
    // Pitaya refuses an RPC to one's own type without a server id.
    let e = err_json(&mut c, "connector.ask", json!({"route": "connector.connector.echo", "body": null})).await;
    assert_eq!(e.code, "PIT-000");
    server.shutdown().await;
}

/// A server that records what it receives and answers every request with `spied`.
#[derive(Default)]
struct Spy {
    requests: Mutex<Vec<Bytes>>,
}

impl RpcHandler for Spy {
    fn request(&self, request: Bytes, _timeout: Duration) -> BoxFuture<'static, Option<Bytes>> {
        self.requests.lock().push(request);
        Box::pin(async { Some(messages::ok(&b"\"spied\""[..])) })
    }
    fn push(&self, _: protos::Push) {}
    fn kick(&self, _: protos::KickMsg) {}
    fn bound(&self, _: protos::BindMsg) {}
}

/// Serves a [`Spy`] as server `id` of `server_type`, for as long as the returned handle lives.
async fn spy(server: &Server, server_type: &str, id: &str) -> (Arc<Spy>, Serving) {
    let spy = Arc::new(Spy::default());
    let info = ServerInfo { id: id.into(), server_type: server_type.into(), metadata: Default::default(), frontend: false, hostname: "spyhost".into() };
    let serving = server.cluster().rpc.serve(&info, spy.clone()).await.unwrap();
    server.cluster().discovery.register(&info).await.unwrap();
    (spy, serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_is_an_encoded_protos_request() {
    let server = start_test_project("cluster").await;
    let (spy, _serving) = spy(&server, "spy", "spy-1").await;
    let mut c = client(&server).await;
    ok_json(&mut c, "connector.enter", json!({"room": "red"})).await;
    let id = c.send_request("spy.svc.look", br#"{"q":1}"#).await.unwrap();
    assert_eq!(&c.response(id).await.unwrap().data[..], br#""spied""#);
    c.notify("spy.svc.tell", b"n").await.unwrap();
    eventually("the notify forwarded", Duration::from_secs(10), || spy.requests.lock().len() == 2).await;
    let requests = spy.requests.lock().clone();
    assert_eq!(requests.len(), 2);
    let connector = server.server_id("connector").unwrap().to_owned();

    let r = protos::Request::decode(&requests[0][..]).unwrap();
    assert_eq!(r.r#type, protos::RpcType::Sys as i32);
    assert_eq!(r.frontend_id, connector);
    let s = r.session.clone().unwrap();
    assert_eq!((s.id, s.uid.as_str()), (1, ""));
    assert_eq!(serde_json::from_slice::<Value>(&s.data).unwrap(), json!({"ipversion": "ipv4", "room": "red"}));
    let m = r.msg.clone().unwrap();
    assert_eq!((m.id, m.route.as_str(), &m.data[..], m.reply.as_str()), (id, "spy.svc.look", &br#"{"q":1}"#[..], ""));
    assert_eq!(m.r#type, protos::MsgType::MsgRequest as i32);
    let meta: Value = serde_json::from_slice(&r.metadata).unwrap();
    assert_eq!(meta["peer.id"], json!(connector));
    assert_eq!(meta["peer.service"], json!("connector"));
    assert_eq!(meta["reqTimeout"], json!("5s"));
    assert_eq!(meta["req-route"], json!("spy.svc.look"));
    assert_eq!(meta["kiwano.hops"], json!(0));
    assert!(meta["request.id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(meta["req-start-time"].as_u64().is_some_and(|t| t > 1_700_000_000_000_000_000));
    // The wire form: type Sys (0) is the proto3 default, so field 1 is absent.
    assert_ne!(requests[0][0], 0x08);

    let n = protos::Request::decode(&requests[1][..]).unwrap();
    let m = n.msg.unwrap();
    assert_eq!((m.id, m.route.as_str(), m.r#type), (0, "spy.svc.tell", protos::MsgType::MsgNotify as i32));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_affinity_and_pinning() {
    let server = start_test_project("cluster").await;
    // Two sessions per room land on one instance of the room type.
    for room in ["blue", "green", "amber", "violet"] {
        let mut instances = Vec::new();
        for _ in 0..2 {
            let mut c = client(&server).await;
            ok_json(&mut c, "connector.enter", json!({"room": room})).await;
            instances.push(ok_json(&mut c, "room.room.whoami", json!({})).await["instance"].clone());
        }
        assert_eq!(instances[0], instances[1], "room {room}");
    }
    // A handler pins a session to a server of a type.
    let (spy, _serving) = spy(&server, "room", "room-spy").await;
    let mut c = client(&server).await;
    assert_eq!(ok_json(&mut c, "connector.pin", json!({"server_type": "room", "server_id": "room-spy"})).await, json!("pinned"));
    for _ in 0..3 {
        assert_eq!(ok_json(&mut c, "room.room.whoami", json!({})).await, json!("spied"));
    }
    assert_eq!(spy.requests.lock().len(), 3);
    let real = server.server_id("room").unwrap().to_owned();
    ok_json(&mut c, "connector.pin", json!({"server_type": "room", "server_id": real})).await;
    assert_eq!(ok_json(&mut c, "room.room.whoami", json!({})).await["server"], json!(real));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_cycle_is_stopped_by_the_hop_count() {
    let s = TestServer::with(TestConfig { testbed: "instances = 1\nremote_instances = 8".into(), ..Default::default() }).await;
    let id = s.server.server_id("testbed").unwrap().to_owned();
    let mut c = s.client(Transport::Tcp).await;
    let body = json!({"route": "testbed.remote.cycle", "body": "", "server_id": id});
    let e = error_of(&c.request("test.rpc", body.to_string().as_bytes()).await.unwrap());
    assert_eq!(e, PitayaError::new("PIT-500", "rpc hop limit (8) reached at testbed.remote.cycle"));
}
