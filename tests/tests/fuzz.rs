//! The connection state machine under arbitrary byte streams (proptest, bounded: `FUZZ_CASES`
//! cases per transport, 256 unless the environment says otherwise): streams of packets valid
//! and not (handshakes of any JSON, acks, heartbeats, data with valid and broken messages,
//! kicks, raw garbage), cut at arbitrary places, over TCP and WebSocket. Whatever comes in, the
//! server writes only well-formed packets, closes or keeps the connection, never panics, and
//! a bystander is served after every case.

use std::sync::OnceLock;
use std::time::Duration;

use kiwano_protocol::message::{self, EncodeOptions};
use kiwano_protocol::packet::{self, PacketType};
use kiwano_protocol::{Message, RouteDictionary};
use kiwano_tests::*;
use proptest::prelude::*;

/// One piece of a stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A well-framed packet of any type with this body.
    Packet(u8, Vec<u8>),
    /// A valid request or notify message in a data packet.
    Message { request: bool, id: u64, route: String, body: Vec<u8>, compress: bool },
    /// Bytes as they are.
    Raw(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    let json = prop_oneof![
        Just(br#"{"sys":{"platform":"fuzz"}}"#.to_vec()),
        Just(b"{}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    let route = prop_oneof![
        Just("test.echo".to_owned()),
        Just("test.notify".to_owned()),
        Just("test.nope".to_owned()),
        Just("testbed.test.echo".to_owned()),
        "[a-z.]{0,20}",
    ];
    prop_oneof![
        3 => (1u8..=5, json).prop_map(|(t, b)| Piece::Packet(t, b)),
        1 => (0u8..=9, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(t, b)| Piece::Packet(t, b)),
        3 => (any::<bool>(), 0u64..5, route, proptest::collection::vec(any::<u8>(), 0..200), any::<bool>())
            .prop_map(|(request, id, route, body, compress)| Piece::Message { request, id, route, body, compress }),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Piece::Raw),
    ]
}

fn bytes_of(p: &Piece) -> Vec<u8> {
    match p {
        Piece::Packet(t, body) => {
            let mut out = vec![*t];
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(body);
            out
        }
        Piece::Message { request, id, route, body, compress } => {
            let m = if *request {
                Message::request(*id, route, bytes::Bytes::from(body.clone()))
            } else {
                Message::notify(route, bytes::Bytes::from(body.clone()))
            };
            let dict = RouteDictionary::default();
            match message::to_bytes(&m, EncodeOptions { dictionary: &dict, compress: *compress }) {
                Ok(b) => packet::to_bytes(PacketType::Data, &b).map(|p| p.to_vec()).unwrap_or_default(),
                Err(_) => Vec::new(),
            }
        }
        Piece::Raw(b) => b.clone(),
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    server: TestServer,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let server = rt.block_on(TestServer::with(TestConfig {
            extra: "[protocol]\nmax_body = 4096\nhandshake_timeout = \"1s\"\n".into(),
            ..Default::default()
        }));
        Harness { rt, server }
    })
}

/// Sends `pieces` (over WebSocket: each piece one message, a stream split where the pieces
/// are), then reads what the server sends until it closes or stays quiet for 150 ms; every
/// packet read must be well formed.
async fn run_case(s: &TestServer, transport: Transport, pieces: &[Piece], cut: usize) -> Result<(), String> {
    let mut c = s.raw(transport).await;
    match transport {
        Transport::Tcp => {
            let stream: Vec<u8> = pieces.iter().flat_map(bytes_of).collect();
            for chunk in stream.chunks(cut.max(1)) {
                if c.send_raw(chunk).await.is_err() {
                    break;
                }
            }
        }
        _ => {
            for p in pieces {
                if c.send_raw(&bytes_of(p)).await.is_err() {
                    break;
                }
            }
        }
    }
    loop {
        match tokio::time::timeout(Duration::from_millis(150), c.recv_packet()).await {
            Err(_) | Ok(Ok(None)) | Ok(Err(ClientError::Reset)) => return Ok(()),
            Ok(Ok(Some(p))) if p.kind == PacketType::Data => {
                message::decode(&p.body, &RouteDictionary::default(), 1 << 20).map_err(|e| format!("a malformed message from the server: {e}"))?;
            }
            Ok(Ok(Some(_))) => {}
            Ok(Err(ClientError::Io(_))) => return Ok(()),
            Ok(Err(e)) => return Err(format!("the server sent what is not a packet: {e}")),
        }
    }
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn fuzz(transport: Transport) {
    let h = harness();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() });
    let strategy = (proptest::collection::vec(piece(), 0..12), 1usize..40);
    let result = runner.run(&strategy, |(pieces, cut)| {
        h.rt.block_on(async {
            run_case(&h.server, transport, &pieces, cut).await.map_err(TestCaseError::fail)?;
            let mut by = h.server.client(Transport::Tcp).await;
            let r = by.request("test.echo", b"still serving").await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&r.data[..], b"still serving");
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{transport:?}: {e}");
    }
    let logs = logs();
    assert!(!logs.contains("panicked"), "a panic under fuzzing:\n{logs}");
}

#[test]
fn arbitrary_streams_over_tcp() {
    fuzz(Transport::Tcp);
}

#[test]
fn arbitrary_messages_over_websocket() {
    fuzz(Transport::Ws);
}
