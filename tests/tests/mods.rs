//! examples/mods: a third-party mod under tight limits. Each way the mod misbehaves fails only
//! that call; the game answers with its default score, and the next move is scored by the mod
//! again.

use std::time::{Duration, Instant};

use kiwano_server::config::AcceptorKind;
use kiwano_tests::*;
use serde_json::{Value, json};

async fn play(c: &mut Client, mv: &str) -> Value {
    ok_json(c, "game.play", json!({"move": mv})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_mod_fails_alone_and_the_game_plays_on() {
    let server = start_example_with("mods", &[("KIWANO_APP_HTTP", "")]).await;
    let addr = server.address("game", AcceptorKind::Tcp).unwrap().to_string();
    let mut c = Client::connect(&addr, Transport::Tcp, None).await.unwrap();
    c.handshake(&json!({"sys": {}})).await.unwrap();
    assert_eq!(play(&mut c, "jump").await, json!({"score": 4, "by": "mod"}));
    for (mv, why) in [
        ("loop", "PIT-500 internal error handling mod.mod.score"),
        ("hoard", "PIT-500 internal error handling mod.mod.score"),
        ("crash", "PIT-500 internal error handling mod.mod.score"),
        ("spam", "PIT-500 call limit reached: at most 0 pushes and kicks in one call (servers.mod.max_pushes_per_call)"),
    ] {
        let started = Instant::now();
        let answer = play(&mut c, mv).await;
        assert_eq!(answer, json!({"score": 1, "by": "game", "mod_error": why}), "{mv}");
        assert!(started.elapsed() < Duration::from_secs(2), "{mv} took {:?}", started.elapsed());
        // The next move is the mod's again.
        assert_eq!(play(&mut c, "run").await, json!({"score": 3, "by": "mod"}), "after {mv}");
    }
    server.shutdown().await;
}
