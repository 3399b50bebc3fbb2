//! What a frontend lets in: caps on its connections, on those from one address and on those
//! still handshaking, each closing the connection at accept; and a handshake limit checked from
//! the packet header.

use std::time::Duration;

use kiwano_protocol::packet::{self, PacketType};
use kiwano_tests::*;

/// Whether the server closes a fresh connection at once (reading sees the end).
async fn refused(c: &mut Client) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(5), c.recv_packet()).await, Ok(Ok(None) | Err(_)))
}

async fn handshaken(s: &TestServer) -> Client {
    s.client(Transport::Tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshaking_and_per_address_caps_close_connections_at_accept() {
    let s = TestServer::with(TestConfig {
        testbed: "instances = 1\nmax_handshaking = 5\nmax_connections_per_address = 20".into(),
        ..Default::default()
    })
    .await;
    let mut bystander = handshaken(&s).await;
    // Five connections that never handshake fill the handshaking cap: the sixth is closed.
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(s.raw(Transport::Tcp).await);
    }
    let mut sixth = s.raw(Transport::Tcp).await;
    assert!(refused(&mut sixth).await, "a sixth handshaking connection was let in");
    // Once they handshake, they no longer count as handshaking.
    for c in &mut waiting {
        c.handshake(&serde_json::json!({"sys": {}})).await.expect("a waiting connection handshakes");
    }
    // 1 + 5 connections from 127.0.0.1; 14 more reach the per-address cap of 20.
    let mut more = Vec::new();
    for _ in 0..14 {
        more.push(handshaken(&s).await);
    }
    let mut over = s.raw(Transport::Tcp).await;
    assert!(refused(&mut over).await, "a 21st connection from the address was let in");
    assert_eq!(&bystander.request("test.echo", b"served").await.unwrap().data[..], b"served");
    // A place given back can be taken again.
    drop(more.pop());
    eventually("a place given back", Duration::from_secs(5), || s.server.sessions().count() == 19).await;
    let mut again = handshaken(&s).await;
    assert_eq!(&again.request("test.echo", b"in").await.unwrap().data[..], b"in");
    let logs = logs();
    assert!(logs.contains("5 connections are already handshaking"), "{logs}");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_over_all_acceptors() {
    let s = TestServer::with(TestConfig { testbed: "instances = 1\nmax_connections = 3".into(), ..Default::default() }).await;
    let mut held = vec![s.client(Transport::Tcp).await, s.client(Transport::Ws).await, s.client(Transport::Tls).await];
    let mut fourth = s.raw(Transport::Tcp).await;
    assert!(refused(&mut fourth).await, "a fourth connection was let in");
    assert_eq!(&held[0].request("test.echo", b"ok").await.unwrap().data[..], b"ok");
    assert!(logs().contains("the frontend holds its maximum of 3 connections"));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_over_the_limit_is_refused_from_its_header() {
    let s = TestServer::with(TestConfig { extra: "[protocol]\nmax_handshake = 1024\n".into(), ..Default::default() }).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        // Exactly the limit: accepted.
        let pad = "x".repeat(1024 - r#"{"sys":{},"user":{"pad":""}}"#.len());
        let body = format!(r#"{{"sys":{{}},"user":{{"pad":"{pad}"}}}}"#);
        assert_eq!(body.len(), 1024);
        let mut c = s.raw(transport).await;
        c.send_packet(PacketType::Handshake, body.as_bytes()).await.unwrap();
        let reply = c.read_handshake().await.expect("a 1024-byte handshake is answered");
        assert_eq!(reply.json["code"], 200);
        // One byte more is refused before its body is read.
        let mut c = s.raw(transport).await;
        c.send_raw(&packet::to_bytes(PacketType::Handshake, format!("{body} ").as_bytes()).unwrap()).await.unwrap();
        let got = expect_closed(&mut c, Duration::from_secs(5)).await;
        assert!(got.is_empty(), "{transport:?}: answered {got:?}");
    }
    let logs = logs();
    assert!(logs.contains("packet body of 1025 bytes exceeds the 1024-byte limit"), "{logs}");
    s.server.shutdown().await;
}
