//! OpenTelemetry traces across the cluster: a request forwarded from a connector process to a
//! room process over NATS is one trace at an OTLP receiver — the connector's span of the client
//! message (named by its route), its `NATS RPC Call` below it, the room's RPC span below that
//! (the context crossed in the RPC metadata under `otel-span`), and the guest call below it.

use std::time::Duration;

use kiwano_tests::cluster_net::{ClusterNet, build};
use kiwano_telemetry::receiver::{Receiver, Span};
use kiwano_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_one_trace_across_processes() {
    let receiver = Receiver::start().await;
    let project = build(&root().join("examples/cluster"));
    let mut net = ClusterNet::start().await;
    net.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_TRACES_SAMPLER".into(), "always_on".into()),
    ];
    let _room = net.server(&project, "room", "room-1", false).await;
    let connector = net.server(&project, "connector", "connector-1", true).await;
    let mut c = Client::connect(connector.addr("Tcp"), Transport::Tcp, None).await.unwrap();
    c.handshake(&json!({"sys": {}})).await.unwrap();
    assert_eq!(&c.request("room.room.entry", b"{}").await.unwrap().data[..], br#"{"result":"ok"}"#);

    let find = |spans: &[Span], name: &str, local: Option<&str>| -> Option<Span> {
        spans.iter().find(|s| s.name == name && local.is_none_or(|l| s.attr("local.id") == Some(l))).cloned()
    };
    eventually("the four spans at the receiver", Duration::from_secs(20), || {
        let s = receiver.spans();
        find(&s, "room.room.entry", Some("connector-1")).is_some()
            && find(&s, "NATS RPC Call", None).is_some()
            && find(&s, "room.room.entry", Some("room-1")).is_some()
            && s.iter().any(|x| x.name == "guest call" && x.attr("server_type") == Some("room"))
    })
    .await;
    let spans = receiver.spans();
    let frontend = find(&spans, "room.room.entry", Some("connector-1")).unwrap();
    let client = find(&spans, "NATS RPC Call", None).unwrap();
    let server = find(&spans, "room.room.entry", Some("room-1")).unwrap();
    let guest = spans.iter().find(|x| x.name == "guest call" && x.attr("server_type") == Some("room")).cloned().unwrap();
    // One trace; each span the child of the one before.
    for s in [&client, &server, &guest] {
        assert_eq!(s.trace, frontend.trace, "{spans:#?}");
    }
    assert_eq!(frontend.parent, "", "{frontend:?}");
    assert_eq!(client.parent, frontend.id);
    assert_eq!(server.parent, client.id);
    assert_eq!(guest.parent, server.id);
    // Pitaya's kinds (as OpenTelemetry kinds, and as Pitaya's `span.kind` attribute) and
    // attributes.
    assert_eq!((frontend.kind, client.kind, server.kind), (2, 3, 2));
    let kind = |s: &Span| s.attr("span.kind").map(str::to_owned);
    assert_eq!((kind(&frontend), kind(&client), kind(&server)), (Some("server".into()), Some("client".into()), Some("server".into())));
    assert_eq!(frontend.attr("msg.type"), Some("request"));
    assert_eq!(client.attr("peer.serverType"), Some("room"));
    assert_eq!(client.attr("peer.id"), Some("room-1"));
    assert_eq!(guest.attr("route"), Some("room.entry"));

    // A guest's own RPC continues the trace: the room calls the connector's remote, which logs;
    // its log line is an event of its guest call's span.
    let body = json!({"server_id": "connector-1", "route": "connector.connectorremote.remotefunc", "msg": "hi"});
    let r = c.request("room.room.sendrpc", body.to_string().as_bytes()).await.unwrap();
    assert!(!r.error, "{}", String::from_utf8_lossy(&r.data));
    // The chain from the connector's remote up to the client message, once every span of it
    // reached the receiver: remote ← NATS RPC Call (room) ← guest call (room) ← room's RPC span
    // ← NATS RPC Call (connector) ← the client message.
    let chain = |s: &[Span]| -> Option<Vec<Span>> {
        let mut at = s.iter().find(|x| x.name == "connector.connectorremote.remotefunc" && x.attr("local.id") == Some("connector-1"))?.clone();
        let mut chain = vec![at.clone()];
        while !at.parent.is_empty() {
            at = s.iter().find(|x| x.id == at.parent)?.clone();
            chain.push(at.clone());
        }
        Some(chain)
    };
    eventually("the whole chain of spans", Duration::from_secs(20), || chain(&receiver.spans()).is_some_and(|c| c.len() == 6)).await;
    let spans = receiver.spans();
    let chain = chain(&spans).unwrap_or_default();
    let names: Vec<(&str, Option<&str>)> = chain.iter().map(|x| (x.name.as_str(), x.attr("local.id").or(x.attr("route")))).collect();
    assert_eq!(
        names,
        [
            ("connector.connectorremote.remotefunc", Some("connector-1")),
            ("NATS RPC Call", Some("room-1")),
            ("guest call", Some("room.sendrpc")),
            ("room.room.sendrpc", Some("room-1")),
            ("NATS RPC Call", Some("connector-1")),
            ("room.room.sendrpc", Some("connector-1")),
        ]
    );
    let (remote, top) = (&chain[0], &chain[5]);
    assert!(chain.iter().all(|x| x.trace == top.trace));
    let connector_guest = spans.iter().find(|x| x.name == "guest call" && x.parent == remote.id).unwrap();
    assert!(
        connector_guest.events.iter().any(|e| e == "received a remote call with this message: hi"),
        "{connector_guest:?}"
    );
}

/// The same across Go Pitaya v3 and Kiwano: a Go Pitaya connector (its own OpenTelemetry set up
/// by Pitaya's `tracing.InitializeOtel`) forwards to a Kiwano room, whose RPC span is the child
/// of Go's `NATS RPC Call` through the `otel-span` Go put in the metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_crosses_from_a_go_pitaya_connector_into_a_kiwano_room() {
    let receiver = Receiver::start().await;
    let project = build(&root().join("examples/cluster"));
    let endpoint = receiver.endpoint();
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100"), ("OTEL_TRACES_SAMPLER", "always_on")];
    let mut net = ClusterNet::start().await;
    net.env = otel.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let _room = net.server(&project, "room", "room-1", false).await;
    let connector = kiwano_tests::go_pitaya::GoPitaya::start_with(&net, "connector", "go-connector-1", &otel).await;
    let mut c = Client::connect(&connector.tcp, Transport::Tcp, None).await.unwrap();
    c.handshake(&json!({"sys": {"platform": "test"}})).await.unwrap();
    assert_eq!(&c.request("room.room.entry", b"{}").await.unwrap().data[..], br#"{"result":"ok"}"#);

    let kiwano_rpc = |s: &[Span]| s.iter().find(|x| x.name == "room.room.entry" && x.attr("local.id") == Some("room-1")).cloned();
    eventually("Kiwano's RPC span and Go's client span", Duration::from_secs(30), || {
        let s = receiver.spans();
        kiwano_rpc(&s).is_some_and(|k| s.iter().any(|x| x.id == k.parent))
    })
    .await;
    let spans = receiver.spans();
    let server = kiwano_rpc(&spans).unwrap();
    let go_client = spans.iter().find(|x| x.id == server.parent).cloned().unwrap();
    assert_eq!(go_client.trace, server.trace);
    // Pitaya names it and marks its kind with an attribute (its OpenTelemetry kind stays
    // internal).
    assert_eq!((go_client.name.as_str(), go_client.attr("span.kind")), ("NATS RPC Call", Some("client")), "{go_client:?}");
    assert_eq!(go_client.attr("local.id"), Some("go-connector-1"));
    assert_eq!(go_client.attr("peer.id"), Some("room-1"));
    let guest = spans.iter().find(|x| x.name == "guest call" && x.parent == server.id);
    assert!(guest.is_some(), "{spans:#?}");
    // Go's own frontend span is the root of the trace.
    let root = spans.iter().find(|x| x.trace == server.trace && x.parent.is_empty());
    assert!(root.is_some_and(|r| r.name == "room.room.entry" && r.attr("span.kind") == Some("server")), "{spans:#?}");
}
