//! examples/chat is Pitaya's chat demo: several WebSocket clients join, see the members, are
//! told of new users, exchange messages, and leave the room when they disconnect. The same
//! room written in Python (examples/chat-python) and JavaScript (examples/chat-js) with their
//! SDKs serves the same bytes.

use std::time::Duration;

use kiwano_server::config::AcceptorKind;
use kiwano_tests::*;
use serde_json::json;

async fn joined(addr: &str) -> (Client, String) {
    let mut c = Client::connect(addr, Transport::Ws, None).await.unwrap();
    let hs = c.handshake(&json!({"sys": {"platform": "test"}})).await.unwrap();
    assert_eq!(hs.json, json!({"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}));
    let id = c.send_request("room.join", b"{}").await.unwrap();
    let members = c.next_message().await.unwrap();
    assert_eq!((members.kind, members.route.as_str()), (MessageType::Push, "onMembers"));
    let resp = c.response(id).await.unwrap();
    assert!(!resp.error);
    assert_eq!(&resp.data[..], br#"{"code":0,"result":"success"}"#);
    (c, String::from_utf8(members.data.to_vec()).unwrap())
}

async fn push(c: &mut Client) -> (String, String) {
    let m = tokio::time::timeout(Duration::from_secs(2), c.next_message()).await.expect("a push").unwrap();
    assert_eq!(m.kind, MessageType::Push);
    (m.route, String::from_utf8(m.data.to_vec()).unwrap())
}

#[tokio::test]
async fn chat_flow_with_several_websocket_clients() {
    chat_flow("chat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_room_serves_the_same_bytes() {
    chat_flow("chat-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_room_serves_the_same_bytes() {
    chat_flow("chat-js").await;
}

async fn chat_flow(example: &str) {
    let server = start_example(example).await;
    let addr = server.address("chat", AcceptorKind::Ws).unwrap().to_string();

    let (mut a, members) = joined(&addr).await;
    assert_eq!(members, r#"{"members":[]}"#);
    let (mut b, members) = joined(&addr).await;
    assert_eq!(members, r#"{"members":["1"]}"#);
    assert_eq!(push(&mut a).await, ("onNewUser".into(), r#"{"content":"New user: 2"}"#.into()));
    let (mut c, members) = joined(&addr).await;
    assert_eq!(members, r#"{"members":["1","2"]}"#);
    for x in [&mut a, &mut b] {
        assert_eq!(push(x).await, ("onNewUser".into(), r#"{"content":"New user: 3"}"#.into()));
    }

    b.notify("room.message", br#"{"name":"bob","content":"hello all"}"#).await.unwrap();
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(push(x).await, ("onMessage".into(), r#"{"name":"bob","content":"hello all"}"#.into()));
    }

    // Joining twice: the bind fails.
    let r = a.request("room.join", b"{}").await.unwrap();
    assert!(r.error);
    assert_eq!(&r.data[..], br#"{"code":"RH-000","msg":"session is already bound to an uid (\"1\")","metadata":{"failed":"bind"}}"#);

    // A leaves on disconnect: the next joiner does not see it.
    drop(a);
    eventually("a's session forgotten", Duration::from_secs(10), || server.sessions().count() == 2).await;
    let (_d, members) = joined(&addr).await;
    assert_eq!(members, r#"{"members":["2","3"]}"#);
    for x in [&mut b, &mut c] {
        assert_eq!(push(x).await, ("onNewUser".into(), r#"{"content":"New user: 4"}"#.into()));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_web_client_is_served_over_http() {
    let server = start_example("chat").await;
    let http = server.http_address().unwrap();
    let page = http_request(http, "GET", "/web/").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap_or_default().starts_with("text/html"), "{page:?}");
    assert!(page.text().contains("<title>Kiwano chat</title>"));
    let js = http_request(http, "GET", "/web/pitaya.js").await;
    assert!(js.header("content-type").unwrap_or_default().starts_with("text/javascript"), "{js:?}");
    assert!(js.text().contains("export class PitayaClient"));
    assert_eq!(http_request(http, "GET", "/web/../kiwano.toml").await.status, 404);
    assert_eq!(http_request(http, "GET", "/web/nope.js").await.status, 404);
    assert_eq!(http_request(http, "GET", "/").await.header("location"), Some("/web/"));
    server.shutdown().await;
}
