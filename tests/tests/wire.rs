//! The client wire protocol over real sockets: handshake, heartbeats, deadlines, compression,
//! kick, and bad input that closes only the offending connection.

use std::time::{Duration, Instant};

use kiwano_protocol::packet::PacketType;
use kiwano_protocol::{compression, packet};
use kiwano_tests::*;
use serde_json::json;

const HANDSHAKE_OK: &str = r#"{"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#;

#[tokio::test]
async fn handshake_and_echo_on_every_transport() {
    let s = TestServer::start().await;
    for t in TRANSPORTS {
        let mut c = s.raw(t).await;
        c.send_packet(PacketType::Handshake, br#"{"sys":{"platform":"mac"}}"#).await.unwrap();
        let p = c.recv_packet().await.unwrap().unwrap();
        // 65 bytes: compressed it would be 68, so it goes out plain.
        assert_eq!(p.kind, PacketType::Handshake, "{t:?}");
        assert_eq!(&p.body[..], HANDSHAKE_OK.as_bytes(), "{t:?}");
        c.send_packet(PacketType::HandshakeAck, &[]).await.unwrap();
        let r = c.request("test.echo", br#"{"hello":"world"}"#).await.unwrap();
        assert_eq!((r.kind, r.id, r.error), (MessageType::Response, 1, false));
        assert_eq!(&r.data[..], br#"{"hello":"world"}"#, "{t:?}");
        let r = c.request("testbed.test.echo", b"3-part").await.unwrap();
        assert_eq!(&r.data[..], b"3-part");
    }
}

#[tokio::test]
async fn tcp_response_bytes_are_exact() {
    let s = TestServer::with(TestConfig { extra: "[protocol]\ncompression = false".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    c.send_raw(&[4, 0, 0, 13, 0x00, 0x05, 9, b't', b'e', b's', b't', b'.', b'e', b'c', b'h', b'o', b'!']).await.unwrap();
    let p = c.recv_packet().await.unwrap().unwrap();
    assert_eq!(packet::to_bytes(p.kind, &p.body).unwrap().to_vec(), vec![4, 0, 0, 3, 0x04, 0x05, b'!']);
    c.send_raw(&[4, 0, 0, 11, 0x00, 0x06, 8, b't', b'e', b's', b't', b'.', b'n', b'o', b'p']).await.unwrap();
    let p = c.recv_packet().await.unwrap().unwrap();
    let want = br#"{"code":"PIT-404","msg":"pitaya/handler: testbed.test.nop not found"}"#;
    let mut bytes = vec![4, 0, 0, (want.len() + 2) as u8, 0x24, 0x06];
    bytes.extend_from_slice(want);
    assert_eq!(packet::to_bytes(p.kind, &p.body).unwrap().to_vec(), bytes);
}

#[tokio::test]
async fn handshake_with_a_dictionary_is_compressed() {
    let dict: String = (0..5).map(|i| format!("\"connector.handler.route{i}\" = {i}\n")).collect();
    let s = TestServer::with(TestConfig { extra: format!("[protocol.dictionary]\n{dict}"), ..Default::default() }).await;
    let mut c = s.raw(Transport::Tcp).await;
    let reply = c.handshake(&json!({})).await.unwrap();
    assert!(reply.compressed);
    let want: serde_json::Value = json!({"code":200,"sys":{"dict":{"connector.handler.route0":0,"connector.handler.route1":1,
        "connector.handler.route2":2,"connector.handler.route3":3,"connector.handler.route4":4},"heartbeat":30,"serializer":"json"}});
    assert_eq!(reply.json, want);
    // Without compression the same response goes out plain.
    let s = TestServer::with(TestConfig {
        extra: format!("[protocol]\ncompression = false\n[protocol.dictionary]\n{dict}"),
        ..Default::default()
    })
    .await;
    let mut c = s.raw(Transport::Tcp).await;
    let reply = c.handshake(&json!({})).await.unwrap();
    assert!(!reply.compressed);
    assert_eq!(reply.json, want);
}

#[tokio::test]
async fn bad_handshake_gets_400_and_is_closed() {
    let s = TestServer::start().await;
    for (t, body) in TRANSPORTS.iter().zip([&b"{bad"[..], b"", br#"{"sys":{"platform":7}}"#, b"[1,2]"]) {
        let mut c = s.raw(*t).await;
        c.send_packet(PacketType::Handshake, body).await.unwrap();
        let got = expect_closed(&mut c, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 1, "{t:?}: {got:?}");
        assert_eq!(&got[0].body[..], br#"{"code":400,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#);
    }
    assert!(logs().contains("handshake failed: invalid handshake"));
}

#[tokio::test]
async fn heartbeats_flow_and_silence_closes_after_two_to_three_intervals() {
    let s = TestServer::with(TestConfig { extra: "[protocol]\nheartbeat_interval = \"1s\"".into(), ..Default::default() }).await;
    for t in [Transport::Tcp, Transport::Ws] {
        // A client that sends heartbeats stays connected and receives one per interval.
        let mut c = s.client(t).await;
        let start = Instant::now();
        let mut received = 0;
        while start.elapsed() < Duration::from_millis(3500) {
            if let Ok(Ok(Some(p))) = tokio::time::timeout(Duration::from_millis(400), c.recv_packet()).await {
                assert_eq!(p.kind, PacketType::Heartbeat);
                assert!(p.body.is_empty());
                received += 1;
            }
            c.heartbeat().await.unwrap();
        }
        assert!((3..=4).contains(&received), "{t:?}: {received} heartbeats in 3.5 s");
        assert_eq!(&c.request("test.echo", b"alive").await.unwrap().data[..], b"alive");

        // A silent one is closed 2 to 3 intervals after its last packet.
        let mut silent = s.client(t).await;
        let start = Instant::now();
        let got = expect_closed(&mut silent, Duration::from_secs(5)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900) && took <= Duration::from_millis(3300), "{t:?}: closed after {took:?}");
        assert!(got.iter().all(|p| p.kind == PacketType::Heartbeat));
    }
    assert!(logs().contains("heartbeat timeout"));
}

#[tokio::test]
async fn handshake_deadline_covers_tls_upgrade_and_ack() {
    let s = TestServer::with(TestConfig { extra: "[protocol]\nhandshake_timeout = \"300ms\"".into(), ..Default::default() }).await;
    // A bare TCP connection to each acceptor: no handshake, no TLS, no upgrade.
    for t in TRANSPORTS {
        let mut tcp = tokio::net::TcpStream::connect(s.addr(t)).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            use tokio::io::AsyncReadExt;
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{t:?} not closed");
        assert!(start.elapsed() >= Duration::from_millis(250), "{t:?} closed too early");
    }
    // A handshake without the ack.
    let mut c = s.raw(Transport::Ws).await;
    c.send_packet(PacketType::Handshake, b"{}").await.unwrap();
    let got = expect_closed(&mut c, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    assert!(logs().contains("handshake timeout"));
    // A client that completes in time is not affected, well past the deadline (a later check
    // on a busy machine proves the same).
    let mut c = s.client(Transport::Tcp).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(&c.request("test.echo", b"ok").await.unwrap().data[..], b"ok");
}

#[tokio::test]
async fn data_before_handshake_closes() {
    let s = TestServer::start().await;
    for t in [Transport::Tcp, Transport::Wss] {
        let mut c = s.raw(t).await;
        c.send_request("test.echo", b"x").await.unwrap();
        assert!(expect_closed(&mut c, Duration::from_secs(2)).await.is_empty());
        // Handshake without ack, then data.
        let mut c = s.raw(t).await;
        c.send_packet(PacketType::Handshake, b"{}").await.unwrap();
        c.read_handshake().await.unwrap();
        c.send_request("test.echo", b"x").await.unwrap();
        assert!(expect_closed(&mut c, Duration::from_secs(2)).await.is_empty());
    }
    assert!(logs().contains("data packet before the handshake completed"));
}

#[tokio::test]
async fn route_compression_both_ways() {
    let s = TestServer::with(TestConfig {
        extra: "[protocol]\ncompression = false\n[protocol.dictionary]\n\"testbed.test.push\" = 7\n\"onPush\" = 8".into(),
        ..Default::default()
    })
    .await;
    let mut c = s.client(Transport::Tcp).await;
    // The client adopted the dictionary: its request carries code 7 (flag 0x01).
    c.send_raw(&[4, 0, 0, 7, 0x01, 0x01, 0x00, 0x07, b'h', b'e', b'y']).await.unwrap();
    let push = c.recv_packet().await.unwrap().unwrap();
    assert_eq!(&push.body[..], &[0x07, 0x00, 0x08, b'h', b'e', b'y'], "push route sent as code 8");
    let resp = c.recv_packet().await.unwrap().unwrap();
    assert_eq!(&resp.body[..], b"\x04\x01pushed");
    // The same through the client's own encoder.
    let r = c.request("testbed.test.push", b"again").await.unwrap();
    assert_eq!(&r.data[..], b"pushed");
    let pushed = c.next_message().await.unwrap();
    assert_eq!((pushed.kind, pushed.route.as_str(), &pushed.data[..]), (MessageType::Push, "onPush", &b"again"[..]));
    // An unknown code closes the connection.
    c.send_raw(&[4, 0, 0, 4, 0x01, 0x02, 0x00, 0x63]).await.unwrap();
    expect_closed(&mut c, Duration::from_secs(2)).await;
    assert!(logs().contains("route code 99 not found in dictionary"));
}

#[tokio::test]
async fn payload_compression_follows_config() {
    let big = "bla".repeat(200);
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Ws).await;
    c.compress = true;
    let id = c.send_request("test.echo", big.as_bytes()).await.unwrap();
    let p = c.recv_packet().await.unwrap().unwrap();
    assert_eq!(p.body[0], 0x14, "response flagged zlib-compressed");
    assert_eq!(p.body[1] as u64, id);
    assert!(compression::looks_compressed(&p.body[2..]));
    assert_eq!(compression::inflate(&p.body[2..], 1 << 20).unwrap(), big.as_bytes());
    // Short payloads stay plain even with compression on.
    let p = {
        c.send_request("test.echo", b"ab").await.unwrap();
        c.recv_packet().await.unwrap().unwrap()
    };
    assert_eq!(&p.body[..], &[0x04, 0x02, b'a', b'b']);

    let s = TestServer::with(TestConfig { extra: "[protocol]\ncompression = false".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    c.compress = true;
    c.send_request("test.echo", big.as_bytes()).await.unwrap();
    let p = c.recv_packet().await.unwrap().unwrap();
    assert_eq!(p.body[0], 0x04);
    assert_eq!(&p.body[2..], big.as_bytes());
}

#[tokio::test]
async fn kick_sends_the_kick_packet_and_closes() {
    let s = TestServer::start().await;
    for t in TRANSPORTS {
        let mut c = s.client(t).await;
        c.send_request("test.kick", b"").await.unwrap();
        let got = expect_closed(&mut c, Duration::from_secs(2)).await;
        let kinds: Vec<_> = got.iter().map(|p| p.kind).collect();
        assert!(kinds.contains(&PacketType::Kick), "{t:?}: {kinds:?}");
        let kick = got.iter().find(|p| p.kind == PacketType::Kick).unwrap();
        assert!(kick.body.is_empty());
    }
}

/// Bad input closes the offending connection only: a bystander keeps being served.
#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let s = TestServer::with(TestConfig { extra: "[protocol]\nmax_body = 1024".into(), ..Default::default() }).await;
    let mut bystander = s.client(Transport::Tcp).await;
    let bomb = compression::deflate(&vec![0u8; 200_000]);
    assert!(bomb.len() < 1024);
    let mut bomb_msg = vec![0x10 | 0x00, 0x01, 9];
    bomb_msg.extend_from_slice(b"test.echo");
    bomb_msg.extend_from_slice(&bomb);
    let bomb_packet = packet::to_bytes(PacketType::Data, &bomb_msg).unwrap().to_vec();
    let cases: Vec<(&str, Transport, Vec<u8>)> = vec![
        ("wrong packet type", Transport::Tcp, vec![7, 0, 0, 0]),
        ("oversized body, from the header alone", Transport::Tcp, vec![4, 0, 4, 1]),
        ("oversized body over websocket", Transport::Ws, [&[4u8, 0, 4, 1][..], &[0; 1025]].concat()),
        ("two packets in one websocket message", Transport::Ws, vec![3, 0, 0, 0, 3, 0, 0, 0]),
        ("websocket message shorter than its header says", Transport::Ws, vec![4, 0, 0, 9, 0]),
        ("message shorter than 2 bytes", Transport::Tcp, vec![4, 0, 0, 1, 0]),
        ("route longer than the message", Transport::Tls, vec![4, 0, 0, 5, 0x00, 0x01, 200, b'a', b'b']),
        ("unterminated id varint", Transport::Tcp, vec![4, 0, 0, 3, 0x00, 0x80, 0x80]),
        ("request with id 0", Transport::Tcp, vec![4, 0, 0, 12, 0x00, 0x00, 9, b't', b'e', b's', b't', b'.', b'e', b'c', b'h', b'o']),
        ("response from a client", Transport::Wss, vec![4, 0, 0, 2, 0x04, 0x01]),
        ("kick from a client", Transport::Tcp, vec![5, 0, 0, 0]),
        ("decompression bomb", Transport::Tcp, bomb_packet),
        ("corrupt zlib payload", Transport::Tcp, vec![4, 0, 0, 6, 0x12, 1, b'a', b'x', b'y', b'z']),
    ];
    for (name, t, bytes) in cases {
        let mut c = s.client(t).await;
        c.send_raw(&bytes).await.unwrap();
        let got = expect_closed(&mut c, Duration::from_secs(2)).await;
        assert!(got.iter().all(|p| p.kind == PacketType::Heartbeat), "{name}: answered with {got:?}");
        let r = bystander.request("test.echo", name.as_bytes()).await.unwrap();
        assert_eq!(&r.data[..], name.as_bytes(), "bystander after {name}");
    }
    let logs = logs();
    for reason in [
        "wrong packet type 0x07",
        "packet body of 1025 bytes exceeds the 1024-byte limit",
        "websocket message holds 4 body bytes, the packet header announced 0",
        "request with id 0",
        "payload inflates beyond the 1024-byte limit",
    ] {
        assert!(logs.contains(reason), "log lacks {reason:?}");
    }
}

/// libpitaya sends the host it connects to as SNI, an IP address included, which TLS forbids;
/// the handshake goes on and the log stays quiet (rustls warned once per connection).
#[tokio::test]
async fn a_tls_client_sending_an_ip_address_as_sni_is_served_quietly() {
    let s = TestServer::start().await;
    let addr = s.addr(Transport::Tls);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-servername", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs (tests/setup.sh installs it)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CONNECTED") && text.contains("Server certificate"), "{text}");
    let logs = logs();
    assert!(!logs.contains("Illegal SNI"), "{logs}");
    s.server.shutdown().await;
}
