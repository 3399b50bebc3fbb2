//! Kiwano and Go Pitaya in one cluster (one nats-server, one etcd): a Go Pitaya connector in
//! front of a Kiwano room, and a Kiwano connector in front of a Go Pitaya room, each passing
//! Pitaya's cluster demo contract both ways (forwarding, binds, session pushes, user pushes,
//! group broadcasts, protobuf remotes). The Go side is the project's own program,
//! `tests/go-pitaya`, built against `github.com/topfreegames/pitaya/v3` v3.0.0-beta.6.

use kiwano_tests::cluster_net::{ClusterNet, build};
use kiwano_tests::demo::demo_contract;
use kiwano_tests::go_pitaya::GoPitaya;
use kiwano_tests::*;
use serde_json::json;

async fn player(addr: &str) -> Client {
    let mut c = Client::connect(addr, Transport::Tcp, None).await.unwrap();
    c.handshake(&json!({"sys": {"platform": "test"}})).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_pitaya_connector_in_front_of_a_kiwano_room() {
    let project = build(&root().join("examples").join("cluster"));
    let net = ClusterNet::start().await;
    let _room = net.server(&project, "room", "room-1", false).await;
    let connector = GoPitaya::start(&net, "connector", "go-connector-1").await;
    let (mut a, mut b) = (player(&connector.tcp).await, player(&connector.tcp).await);
    demo_contract(&mut a, &mut b, "go-connector-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiwano_connector_in_front_of_a_go_pitaya_room() {
    let project = build(&root().join("examples").join("cluster"));
    let net = ClusterNet::start().await;
    let _room = GoPitaya::start(&net, "room", "go-room-1").await;
    let connector = net.server(&project, "connector", "connector-1", true).await;
    let (mut a, mut b) = (player(connector.addr("Tcp")).await, player(connector.addr("Tcp")).await);
    demo_contract(&mut a, &mut b, "connector-1").await;
}
