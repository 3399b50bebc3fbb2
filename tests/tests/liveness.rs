//! Liveness: the heartbeat cadences of the clients real games ship keep their connections, and
//! a silent client is closed.
//!
//! Pomelo-family clients (the starx client of Pitaya's chat page, pomelo's websocket clients)
//! send a heartbeat one interval *after each heartbeat they receive*, so their first one arrives
//! about two intervals after the handshake; Pitaya's Go client and libpitaya heartbeat on their
//! own timer, every interval from the handshake. Both must stay connected.

use std::time::Duration;

use kiwano_protocol::packet::PacketType;
use kiwano_tests::*;
use tokio::time::Instant;

/// The shortest interval the handshake can express (it is sent in whole seconds).
const INTERVAL: Duration = Duration::from_secs(1);
/// How long each client is kept: more than ten intervals.
const KEEP: Duration = Duration::from_millis(10_500);

async fn server() -> TestServer {
    TestServer::with(TestConfig { extra: "[protocol]\nheartbeat_interval = \"1s\"\n".into(), ..Default::default() }).await
}

#[derive(Debug, Clone, Copy)]
enum Cadence {
    /// A heartbeat one interval after each server heartbeat (pomelo, starx).
    AnswerLater,
    /// A heartbeat every interval from the handshake, whatever the server sends (Pitaya's Go
    /// client, libpitaya).
    OwnTimer,
}

/// Runs one client with `cadence` for [`KEEP`]; returns the server heartbeats it received.
/// Panics if the server closes the connection meanwhile.
async fn keep_alive(mut c: Client, cadence: Cadence, name: &str) -> (Client, u64) {
    let start = Instant::now();
    let end = start + KEEP;
    let mut received = 0;
    // The next heartbeat this client sends, if one is scheduled.
    let mut next: Option<Instant> = match cadence {
        Cadence::AnswerLater => None,
        Cadence::OwnTimer => Some(start + INTERVAL),
    };
    loop {
        let wake = next.map_or(end, |n| n.min(end));
        tokio::select! {
            p = c.recv_packet() => match p {
                Ok(Some(p)) if p.kind == PacketType::Heartbeat => {
                    received += 1;
                    // pomelo: `if (heartbeatId) return; heartbeatId = setTimeout(send, interval)`.
                    if let (Cadence::AnswerLater, None) = (cadence, next) {
                        next = Some(Instant::now() + INTERVAL);
                    }
                }
                Ok(Some(p)) => panic!("{name}: unexpected {:?} packet", p.kind),
                Ok(None) | Err(_) => panic!("{name}: closed by the server after {:?}", start.elapsed()),
            },
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= end {
                    return (c, received);
                }
                c.heartbeat().await.expect("heartbeat sent");
                next = match cadence {
                    Cadence::AnswerLater => None,
                    Cadence::OwnTimer => next.map(|n| n + INTERVAL),
                };
            }
        }
    }
}

#[tokio::test]
async fn pomelo_and_pitaya_cadences_stay_connected_for_ten_intervals() {
    let s = server().await;
    let mut runs = Vec::new();
    for transport in [Transport::Tcp, Transport::Ws] {
        for cadence in [Cadence::AnswerLater, Cadence::OwnTimer] {
            let c = s.client(transport).await;
            let name = format!("{transport:?}/{cadence:?}");
            runs.push(tokio::spawn(async move {
                let (mut c, beats) = keep_alive(c, cadence, &name).await;
                // Still served, not just still open.
                let r = c.request("test.echo", b"alive").await.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(&r.data[..], b"alive", "{name}");
                assert!(beats >= 9, "{name}: {beats} server heartbeats in {KEEP:?}");
            }));
        }
    }
    for r in runs {
        r.await.expect("client task");
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_two_intervals_and_a_second() {
    let s = server().await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let mut c = s.client(transport).await;
        let start = Instant::now();
        // Reads (heartbeats) but never sends.
        let got = expect_closed(&mut c, Duration::from_secs(6)).await;
        let closed = start.elapsed();
        assert!(closed >= 2 * INTERVAL + Duration::from_secs(1), "{transport:?}: closed after {closed:?}");
        assert!(got.iter().all(|p| p.kind == PacketType::Heartbeat), "{transport:?}: {got:?}");
    }
    assert!(logs().contains("heartbeat timeout"), "the reason is logged");
    s.server.shutdown().await;
}
