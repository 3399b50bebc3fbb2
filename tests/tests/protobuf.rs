//! The protobuf serializer: announced in the handshake, errors as binary `protos.Error`.

use kiwano_protocol::protos;
use kiwano_tests::*;
use prost::Message as _;
use serde_json::json;

#[tokio::test]
async fn protobuf_clients_get_binary_errors() {
    let s = TestServer::with(TestConfig { extra: "[protocol]\nserializer = \"protobuf\"\ncompression = false".into(), ..Default::default() })
        .await;
    for t in [Transport::Tcp, Transport::Wss] {
        let mut c = s.raw(t).await;
        let hs = c.handshake(&json!({"sys": {"platform": "unity"}})).await.unwrap();
        assert_eq!(hs.json, json!({"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"protobuf"}}));
        // Payloads pass through untouched.
        let r = c.request("test.echo", &[0x08, 0x96, 0x01]).await.unwrap();
        assert_eq!(&r.data[..], &[0x08, 0x96, 0x01]);
        let r = c.request("test.error", b"").await.unwrap();
        assert!(r.error);
        let e = protos::Error::decode(&r.data[..]).expect("a protos.Error");
        assert_eq!(e.code, "RH-001");
        assert_eq!(e.msg, "custom failure");
        assert_eq!(e.metadata.get("failed").map(String::as_str), Some("bind"));
        assert_eq!(e.metadata.get("route").map(String::as_str), Some("test.error"));
        let r = c.request("test.nope", b"").await.unwrap();
        let want = protos::Error { code: "PIT-404".into(), msg: "pitaya/handler: testbed.test.nope not found".into(), metadata: Default::default() };
        assert_eq!(&r.data[..], &want.encode_to_vec()[..]);
    }
}
