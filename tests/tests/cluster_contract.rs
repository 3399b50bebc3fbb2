//! The cluster crate's contract, written once and kept by every implementation: the embedded
//! cluster of one process (memory), and NATS + etcd (real nats-server and etcd started on
//! free ports). Two `Cluster` values stand for two processes; in memory they are one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiwano_cluster::etcd::EtcdSettings;
use kiwano_cluster::nats::NatsSettings;
use kiwano_cluster::{BoxFuture, Cluster, ClusterError, RpcHandler, ServerInfo, Settings, Store, messages};
use kiwano_protocol::{CallChain, protos};
use kiwano_tests::services::{Etcd, Nats};
use kiwano_tests::{eventually, eventually_async, init_logs, logs};
use parking_lot::Mutex;
use prost::Message as _;

const WAIT: Duration = Duration::from_secs(10);

/// A server that records what reaches it. Requests are answered `<server id>:<route>`, except
/// `*.slow` (after 2 s) and `*.drop` (never: dropped as unreadable).
#[derive(Default)]
struct Recorder {
    id: String,
    requests: Mutex<Vec<Bytes>>,
    pushes: Mutex<Vec<protos::Push>>,
    kicks: Mutex<Vec<protos::KickMsg>>,
    binds: Mutex<Vec<protos::BindMsg>>,
}

impl RpcHandler for Recorder {
    fn request(&self, request: Bytes, _timeout: Duration) -> BoxFuture<'static, Option<Bytes>> {
        self.requests.lock().push(request.clone());
        let id = self.id.clone();
        Box::pin(async move {
            let route = protos::Request::decode(&request[..]).ok()?.msg?.route;
            if route.ends_with(".drop") {
                return None;
            }
            if route.ends_with(".slow") {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Some(messages::ok(format!("{id}:{route}").into_bytes()))
        })
    }
    fn push(&self, push: protos::Push) {
        self.pushes.lock().push(push);
    }
    fn kick(&self, kick: protos::KickMsg) {
        self.kicks.lock().push(kick);
    }
    fn bound(&self, bind: protos::BindMsg) {
        self.binds.lock().push(bind);
    }
}

fn server(id: &str, server_type: &str, frontend: bool) -> ServerInfo {
    let metadata = [("region".to_owned(), "test".to_owned())].into();
    ServerInfo { id: id.into(), server_type: server_type.into(), metadata, frontend, hostname: "host-1".into() }
}

fn request(route: &str) -> Bytes {
    messages::encode_request(&protos::Request {
        r#type: protos::RpcType::User as i32,
        session: None,
        msg: Some(protos::Msg { route: route.into(), data: b"{}".to_vec(), ..Default::default() }),
        frontend_id: String::new(),
        metadata: messages::metadata("connector-a", "connector", Duration::from_secs(1), &CallChain::default(), None, &[]),
    })
}

fn recorder(id: &str) -> Arc<Recorder> {
    Arc::new(Recorder { id: id.into(), ..Default::default() })
}

fn pitaya_message(e: ClusterError) -> String {
    match e {
        ClusterError::Pitaya(p) => format!("{} {}", p.code, p.msg),
        other => panic!("not a Pitaya error: {other}"),
    }
}

/// The contract: `a` and `b` are two processes of one cluster.
async fn contract(a: &Cluster, b: &Cluster) {
    // Discovery: each process announces its servers; both see all of them, exactly.
    let (fe_a, fe_b, be_b) = (server("connector-a", "connector", true), server("connector-b", "connector", true), server("room-b", "room", false));
    let (rec_fe_a, rec_fe_b, rec_be_b) = (recorder("connector-a"), recorder("connector-b"), recorder("room-b"));
    let _serving_fe_a = a.rpc.serve(&fe_a, rec_fe_a.clone()).await.unwrap();
    let _serving_fe_b = b.rpc.serve(&fe_b, rec_fe_b.clone()).await.unwrap();
    let serving_be_b = b.rpc.serve(&be_b, rec_be_b.clone()).await.unwrap();
    a.discovery.register(&fe_a).await.unwrap();
    b.discovery.register(&fe_b).await.unwrap();
    b.discovery.register(&be_b).await.unwrap();
    for c in [a, b] {
        eventually("every server discovered", WAIT, || c.discovery.snapshot().by_id.len() == 3).await;
        let snapshot = c.discovery.snapshot();
        assert_eq!(snapshot.get("connector-a"), Some(&fe_a));
        assert_eq!(snapshot.get("room-b"), Some(&be_b));
        assert_eq!(c.servers_of("connector"), vec![fe_a.clone(), fe_b.clone()]);
        assert_eq!(c.servers_of("room"), vec![be_b.clone()]);
        assert!(c.servers_of("chat").is_empty());
    }

    // RPC: the request reaches the server as sent; its response comes back as sent.
    let sent = request("room.room.join");
    let answer = a.rpc.call(&be_b, sent.clone(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(messages::read_response(&answer).unwrap(), b"room-b:room.room.join");
    assert_eq!(rec_be_b.requests.lock().as_slice(), &[sent]);
    // A request dropped unanswered, and one answered too late, are timeouts.
    assert_eq!(a.rpc.call(&be_b, request("room.room.drop"), Duration::from_millis(300)).await, Err(ClusterError::Timeout));
    assert_eq!(a.rpc.call(&be_b, request("room.room.slow"), Duration::from_millis(300)).await, Err(ClusterError::Timeout));
    // Nobody serving: never delivered, known at once.
    let ghost = server("room-ghost", "room", false);
    let started = tokio::time::Instant::now();
    assert_eq!(a.rpc.call(&ghost, request("room.room.join"), Duration::from_secs(5)).await, Err(ClusterError::NoResponders("room-ghost".into())));
    assert!(started.elapsed() < Duration::from_secs(2), "no responders took {:?}", started.elapsed());

    // Pushes and kicks reach the frontend where the uid is bound, only there.
    let alice = b.rpc.bind_user(&fe_b, "alice").await.unwrap();
    let _bob = a.rpc.bind_user(&fe_a, "bob").await.unwrap();
    let push = protos::Push { route: "onMessage".into(), uid: "alice".into(), data: br#"{"m":1}"#.to_vec() };
    a.rpc.push("connector", push.clone()).await.unwrap();
    a.rpc.kick("connector", protos::KickMsg { user_id: "alice".into() }).await.unwrap();
    eventually("alice's push and kick at connector-b", WAIT, || rec_fe_b.pushes.lock().len() == 1 && rec_fe_b.kicks.lock().len() == 1).await;
    assert_eq!(rec_fe_b.pushes.lock()[0], push);
    assert_eq!(rec_fe_b.kicks.lock()[0].user_id, "alice");
    // Unbound: alice's pushes go nowhere. Bob's, published after, arrive; alice's would have
    // come first.
    drop(alice);
    eventually_async("alice unsubscribed", WAIT, || async {
        a.rpc.push("connector", protos::Push { uid: "alice".into(), ..push.clone() }).await.unwrap();
        let marker = protos::Push { route: "marker".into(), uid: "bob".into(), data: Vec::new() };
        let before = rec_fe_a.pushes.lock().len();
        a.rpc.push("connector", marker).await.unwrap();
        eventually("bob's marker", WAIT, || rec_fe_a.pushes.lock().len() > before).await;
        rec_fe_b.pushes.lock().len() == 1
    })
    .await;
    let pushes_b = rec_fe_b.pushes.lock().len();
    b.rpc.push("connector", protos::Push { route: "last".into(), uid: "bob".into(), data: Vec::new() }).await.unwrap();
    eventually("bob's last push", WAIT, || rec_fe_a.pushes.lock().last().is_some_and(|p| p.route == "last")).await;
    assert_eq!(rec_fe_b.pushes.lock().len(), pushes_b, "nothing for alice after she left");
    assert!(rec_fe_a.kicks.lock().is_empty() && rec_be_b.pushes.lock().is_empty());

    // A bind broadcast reaches every frontend of the type, not the backends.
    let bind = protos::BindMsg { uid: "carol".into(), fid: "connector-a".into() };
    a.rpc.broadcast_bind("connector", bind.clone()).await.unwrap();
    eventually("the bind at both connectors", WAIT, || rec_fe_a.binds.lock().len() == 1 && rec_fe_b.binds.lock().len() == 1).await;
    assert_eq!(rec_fe_b.binds.lock()[0], bind);
    assert!(rec_be_b.binds.lock().is_empty());

    // Groups: shared, with Pitaya's messages.
    let (g, h) = (&a.groups, &b.groups);
    assert_eq!(pitaya_message(g.members("room").await.unwrap_err()), "PIT-404 group not found");
    g.create("room", None).await.unwrap();
    assert_eq!(pitaya_message(h.create("room", None).await.unwrap_err()), "PIT-400 group already exists");
    h.add("room", "alice").await.unwrap();
    g.add("room", "bob").await.unwrap();
    assert_eq!(pitaya_message(g.add("room", "alice").await.unwrap_err()), "PIT-400 member already exists in group");
    assert_eq!(pitaya_message(g.add("room", "").await.unwrap_err()), "PIT-400 empty uid");
    assert_eq!(pitaya_message(g.add("hall", "x").await.unwrap_err()), "PIT-404 group not found");
    assert_eq!(h.members("room").await.unwrap(), vec!["alice", "bob"]);
    assert!(h.contains("room", "bob").await.unwrap());
    assert!(!h.contains("room", "carol").await.unwrap());
    assert_eq!(g.count("room").await.unwrap(), 2);
    h.remove("room", "alice").await.unwrap();
    assert_eq!(pitaya_message(g.remove("room", "alice").await.unwrap_err()), "PIT-404 member not found in the group");
    assert_eq!(g.members("room").await.unwrap(), vec!["bob"]);
    g.remove_all("room").await.unwrap();
    assert_eq!(h.count("room").await.unwrap(), 0);
    assert_eq!(pitaya_message(h.count("hall").await.unwrap_err()), "PIT-404 group not found");
    g.delete("room").await.unwrap();
    assert_eq!(pitaya_message(h.delete("room").await.unwrap_err()), "PIT-404 group not found");
    g.create("timed", Some(Duration::from_secs(60))).await.unwrap();
    h.renew("timed").await.unwrap();
    g.delete("timed").await.unwrap();

    // Bindings: shared; removed only by the frontend that holds them.
    a.bindings.put("connector", "alice", "connector-a").await.unwrap();
    assert_eq!(b.bindings.get("connector", "alice").await.unwrap().as_deref(), Some("connector-a"));
    b.bindings.remove("connector", "alice", "connector-b").await.unwrap();
    assert_eq!(b.bindings.get("connector", "alice").await.unwrap().as_deref(), Some("connector-a"));
    a.bindings.remove("connector", "alice", "connector-a").await.unwrap();
    assert_eq!(b.bindings.get("connector", "alice").await.unwrap(), None);

    // A server that stops serving is "no responders" at once; one that leaves discovery is
    // gone from everyone's view.
    drop(serving_be_b);
    eventually_async("room-b no longer serving", WAIT, || async {
        a.rpc.call(&be_b, request("room.room.join"), Duration::from_secs(5)).await == Err(ClusterError::NoResponders("room-b".into()))
    })
    .await;
    b.discovery.deregister("room-b").await.unwrap();
    for c in [a, b] {
        eventually("room-b gone", WAIT, || c.discovery.snapshot().get("room-b").is_none()).await;
        assert!(c.servers_of("room").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_cluster_keeps_the_contract() {
    let c = Cluster::memory();
    contract(&c, &c).await;
}

/// Settings for a cluster on these services, everything shared on etcd.
pub fn settings(nats: &Nats, etcd: &Etcd) -> Settings {
    Settings {
        nats: Some(NatsSettings {
            url: nats.url(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_in_flight: 64,
            subscription_capacity: 1024,
        }),
        etcd: Some(EtcdSettings {
            endpoints: vec![etcd.endpoint()],
            prefix: "pitaya/".into(),
            credentials: None,
            timeout: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(60),
            resync_interval: Duration::from_secs(120),
            revoke_timeout: Duration::from_secs(5),
            blacklist: Vec::new(),
            binding_lease_ttl: Duration::from_secs(3600),
        }),
        groups: Store::Etcd,
        bindings: Store::Etcd,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_etcd_keep_the_contract() {
    let (nats, etcd) = (Nats::start().await, Etcd::start().await);
    let s = settings(&nats, &etcd);
    let (a, b) = (Cluster::connect(&s).await.unwrap(), Cluster::connect(&s).await.unwrap());
    contract(&a, &b).await;
    etcd_keys_are_pitayas(&a, &etcd).await;
}

/// What lands in etcd for groups and bindings: Pitaya's keys and values, leases for TTLs.
async fn etcd_keys_are_pitayas(c: &Cluster, etcd: &Etcd) {
    let keys = |prefix: &str| -> Vec<(String, String)> {
        let out = etcd.ctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        lines.chunks(2).filter(|p| p.len() == 2).map(|p| (p[0].to_owned(), p[1].to_owned())).collect()
    };
    let lease_ttl = |key: &str| -> i64 {
        let kv: serde_json::Value = serde_json::from_str(&etcd.ctl(&["get", key, "-w", "json"])).unwrap();
        let lease = kv["kvs"][0]["lease"].as_i64().unwrap_or(0);
        assert_ne!(lease, 0, "{key} has no lease");
        let ttl: serde_json::Value = serde_json::from_str(&etcd.ctl(&["lease", "timetolive", &format!("{lease:x}"), "-w", "json"])).unwrap();
        ttl["granted-ttl"].as_i64().unwrap_or(0)
    };
    c.groups.create("hall", None).await.unwrap();
    c.groups.add("hall", "alice").await.unwrap();
    assert_eq!(keys("pitaya/groups/hall"), [("pitaya/groups/hall".to_owned(), String::new()), ("pitaya/groups/hall/uids/alice".to_owned(), String::new())]);
    // A group with a TTL lives under a lease of that TTL, its members too; it expires whole.
    c.groups.create("brief", Some(Duration::from_millis(1500))).await.unwrap();
    c.groups.add("brief", "bob").await.unwrap();
    assert_eq!(lease_ttl("pitaya/groups/brief"), 2, "TTL rounded up to whole seconds");
    assert_eq!(lease_ttl("pitaya/groups/brief/uids/bob"), 2);
    eventually_async("the brief group expires", WAIT, || async {
        c.groups.members("brief").await.is_err_and(|e| pitaya_message(e) == "PIT-404 group not found")
    })
    .await;
    assert!(keys("pitaya/groups/brief").is_empty());
    // A binding: the frontend's id under `bindings/<frontend type>/<uid>`, leased.
    c.bindings.put("connector", "carol", "connector-a").await.unwrap();
    assert_eq!(keys("pitaya/bindings/"), [("pitaya/bindings/connector/carol".to_owned(), "connector-a".to_owned())]);
    assert_eq!(lease_ttl("pitaya/bindings/connector/carol"), 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_routed_around_then_tried_again() {
    let c = Cluster::memory();
    let (r1, r2) = (server("room-1", "room", false), server("room-2", "room", false));
    c.discovery.register(&r1).await.unwrap();
    c.discovery.register(&r2).await.unwrap();
    c.mark_silent("room-1");
    assert_eq!(c.servers_of("room"), vec![r2.clone()]);
    // Tried again after a while (a NATS blip must not leave it out for good)...
    let marked = tokio::time::Instant::now();
    eventually("room-1 tried again", WAIT, || c.servers_of("room").len() == 2).await;
    assert!(marked.elapsed() >= Duration::from_millis(900), "left out only {:?}", marked.elapsed());
    // ...and silent again on trial: left out longer (2 s).
    c.mark_silent("room-1");
    let marked = tokio::time::Instant::now();
    eventually("room-1 tried again", WAIT, || c.servers_of("room").len() == 2).await;
    assert!(marked.elapsed() >= Duration::from_millis(1900), "left out only {:?}", marked.elapsed());
    // Registering again ends it at once.
    c.mark_silent("room-1");
    assert_eq!(c.servers_of("room"), vec![r2.clone()]);
    c.discovery.deregister("room-1").await.unwrap();
    c.discovery.register(&r1).await.unwrap();
    assert_eq!(c.servers_of("room"), vec![r1, r2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_authentication_takes_user_and_password() {
    init_logs();
    let (nats, etcd) = (Nats::start().await, Etcd::start().await);
    etcd.ctl(&["user", "add", "root", "--new-user-password=s3cret"]);
    etcd.ctl(&["auth", "enable"]);
    let mut s = settings(&nats, &etcd);
    let with = |s: &mut Settings, password: &str| {
        if let Some(e) = s.etcd.as_mut() {
            e.credentials = Some(("root".into(), password.into()));
            e.timeout = Duration::from_secs(1);
        }
    };
    with(&mut s, "s3cret");
    let c = Cluster::connect(&s).await.unwrap();
    let fe = server("connector-auth", "connector", true);
    let _serving = c.rpc.serve(&fe, recorder("connector-auth")).await.unwrap();
    c.discovery.register(&fe).await.unwrap();
    eventually("registered and seen", WAIT, || c.discovery.snapshot().get("connector-auth").is_some()).await;
    c.groups.create("hall", None).await.unwrap();
    c.bindings.put("connector", "alice", "connector-auth").await.unwrap();
    assert_eq!(c.bindings.get("connector", "alice").await.unwrap().as_deref(), Some("connector-auth"));
    // A wrong password is said plainly, naming the keys to fix, while it waits.
    with(&mut s, "wrong");
    let attempt = tokio::spawn(async move { Cluster::connect(&s).await.map(drop) });
    eventually("the refusal logged", WAIT, || logs().contains("etcd refused the credentials of user \"root\" (cluster.etcd_user, cluster.etcd_password)")).await;
    attempt.abort();
}
