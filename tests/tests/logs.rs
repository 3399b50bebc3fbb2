//! What the log says about clients: ordinary disconnects are not warnings, and a flood of
//! faulty connections is one line per kind plus a count, not a line each.

use std::time::Duration;

use kiwano_tests::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn warnings(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_disconnects_are_quiet_and_faults_are_summarised() {
    let s = TestServer::start().await;
    // Ordinary disconnects: WebSocket clients gone without a close frame, TCP clients reset.
    for _ in 0..10 {
        let c = kiwano_tests::rawws::handshaken(&s.addr(Transport::Ws)).await;
        drop(c);
        let c = tokio::net::TcpStream::connect(s.addr(Transport::Tcp)).await.unwrap();
        c.set_zero_linger().unwrap();
        drop(c);
    }
    eventually("the disconnects seen", Duration::from_secs(10), || s.server.sessions().count() == 0).await;
    assert_eq!(warnings(&logs()), Vec::<&str>::new(), "ordinary disconnects logged as warnings");

    // Fifty connections break the protocol, and a client's notify fails five times.
    for _ in 0..50 {
        let mut c = tokio::net::TcpStream::connect(s.addr(Transport::Tcp)).await.unwrap();
        c.write_all(&[9, 0, 0, 0]).await.unwrap();
    }
    let mut c = s.client(Transport::Tcp).await;
    for _ in 0..5 {
        c.notify("test.nope", b"").await.unwrap();
    }
    assert_eq!(&c.request("test.echo", b"after").await.unwrap().data[..], b"after");
    eventually("the faults seen", Duration::from_secs(10), || logs().matches("wrong packet type 0x09").count() == 50).await;
    s.server.shutdown().await;
    let logs = logs();
    let warned = warnings(&logs);
    let protocol: Vec<_> = warned.iter().filter(|l| l.contains("wrong packet type")).collect();
    assert_eq!(protocol.len(), 1, "one protocol error logged in full: {warned:#?}");
    let notify: Vec<_> = warned.iter().filter(|l| l.contains("notify test.nope failed")).collect();
    assert_eq!(notify.len(), 1, "{warned:#?}");
    assert!(notify[0].contains(" ERROR "), "a failed notify is an error: {}", notify[0]);
    let summary = warned.iter().find(|l| l.contains("not logged one by one")).expect("a summary line");
    assert!(summary.contains("protocol error ×49") && summary.contains("notify failed ×4"), "{summary}");
}

/// `[log] format = "json"`: one JSON object per line, the record's fields as fields; a guest's
/// line names its server type, route, session and uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_is_one_object_per_line_with_the_fields() {
    let p = kiwano_tests::process::KiwanoProcess::start("json-log", "[log]\nformat = \"json\"\n", "instances = 1").await;
    let mut c = Client::connect(p.addr("Tcp"), Transport::Tcp, None).await.expect("connects");
    c.handshake(&serde_json::json!({"sys": {"platform": "logs"}})).await.expect("handshake");
    assert_eq!(&c.request("test.bind", b"zoe").await.unwrap().data[..], b"bound");
    let session: u64 = String::from_utf8_lossy(&c.request("test.sessionid", b"").await.unwrap().data).parse().expect("a session id");
    c.request("test.log", b"hi").await.unwrap();
    eventually("the guest's line logged", Duration::from_secs(10), || p.logs().contains("guest says hi")).await;
    let logs = p.logs();
    let records: Vec<serde_json::Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let listening = records.iter().find(|r| r["fields"]["message"] == "listening").expect("a listening record");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["server_type"], "testbed");
    let said = records.iter().find(|r| r["fields"]["message"] == "guest says hi").expect("the guest's record");
    let f = &said["fields"];
    assert_eq!((&f["server_type"], &f["route"], &f["session"], &f["uid"]), (&json!("testbed"), &json!("test.log"), &json!(session), &json!("zoe")), "{said}");
    assert!(!logs.contains('\u{1b}'), "no terminal colour codes in a file: {logs}");
}
