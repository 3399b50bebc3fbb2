//! examples/chat's own web page, driven in headless Chromium (Debian's `chromium`, with
//! `playwright-core` from npm): two players join through the page's JavaScript, one sends a
//! message, both pages show it; both stay joined past three heartbeat intervals (1 s here)
//! and chat again.

use std::process::Command;

use kiwano_server::config::AcceptorKind;
use kiwano_tests::*;

#[tokio::test]
async fn the_chat_page_joins_and_chats_in_chromium() {
    let server = start_example_with("chat", &[("KIWANO_PROTOCOL_HEARTBEAT_INTERVAL", "1s")]).await;
    let http = server.http_address().unwrap();
    let ws = server.address("chat", AcceptorKind::Ws).unwrap();
    let url = format!("http://{http}/web/?ws=ws://{ws}/");
    let script = root().join("tests/browser/chat.mjs");
    let out = tokio::task::spawn_blocking(move || Command::new("node").arg(script).arg(url).output())
        .await
        .unwrap()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser test failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON summary");
    assert_eq!(v["alice"], serde_json::json!(["members: none", "New user: 2", "bob: hello from chromium", "alice: still here"]));
    assert_eq!(v["bob"], serde_json::json!(["members: 1", "bob: hello from chromium", "alice: still here"]));
    assert_eq!(v["statuses"], serde_json::json!(["joined", "joined"]), "both pages still joined after three intervals");
    assert_eq!(v["bobMembers"], serde_json::json!("1"));
    server.shutdown().await;
}
