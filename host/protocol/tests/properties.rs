//! Property tests: encodings round-trip, and no byte sequence panics a decoder.

use bytes::{Bytes, BytesMut};
use kiwano_protocol::message::{self, EncodeOptions};
use kiwano_protocol::packet::{self, PacketDecoder, PacketType};
use kiwano_protocol::{Message, MessageType, RouteDictionary, compression};
use proptest::prelude::*;

fn dictionary() -> RouteDictionary {
    RouteDictionary::new([("room.room.join", 1u16), ("onMessage", 2), ("a", 300)]).unwrap()
}

fn any_message() -> impl Strategy<Value = Message> {
    let route = prop_oneof![
        Just("room.room.join".to_owned()),
        Just("onMessage".to_owned()),
        "[a-z.]{0,255}",
    ];
    (0u8..4, any::<u64>(), route, proptest::collection::vec(any::<u8>(), 0..600), any::<bool>()).prop_map(
        |(k, id, route, data, error)| {
            let kind = [MessageType::Request, MessageType::Notify, MessageType::Response, MessageType::Push][k as usize];
            let has_id = matches!(kind, MessageType::Request | MessageType::Response);
            let route = if kind == MessageType::Response { String::new() } else { route };
            Message { kind, id: if has_id { id } else { 0 }, route, data: Bytes::from(data), error }
        },
    )
}

/// Any JSON value, nested up to `depth`.
fn any_json(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z\\u{0}-\\u{7f}é€😀]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(prop_oneof![Just("sys".to_owned()), Just("user".to_owned()), "[a-z]{0,6}"], inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn messages_round_trip(m in any_message(), compress in any::<bool>()) {
        let dict = dictionary();
        let bytes = message::to_bytes(&m, EncodeOptions { dictionary: &dict, compress }).unwrap();
        let back = message::decode(&bytes, &dict, 1 << 20).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn packets_round_trip_in_any_chunking(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8), cut in 1usize..64) {
        let mut wire = BytesMut::new();
        for b in &bodies {
            packet::encode(PacketType::Data, b, &mut wire).unwrap();
        }
        let dec = PacketDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(cut) {
            buf.extend_from_slice(chunk);
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                got.push(p.body.to_vec());
            }
        }
        prop_assert_eq!(got, bodies);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dict = dictionary();
        let bytes = Bytes::from(data.clone());
        let _ = message::decode(&bytes, &dict, 4096);
        let _ = packet::decode_frame(bytes, 4096);
        let mut buf = BytesMut::from(&data[..]);
        let dec = PacketDecoder::new(4096);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
        let _ = compression::inflate(&data, 4096);
        let _ = kiwano_protocol::handshake::HandshakeData::parse(&data);
    }

    #[test]
    fn missing_says_how_far_a_packet_is_from_whole(body in proptest::collection::vec(any::<u8>(), 0..3000), cut in 0usize..3004) {
        let whole = packet::to_bytes(PacketType::Data, &body).unwrap();
        let cut = cut.min(whole.len());
        let dec = PacketDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&whole[..cut]);
        let missing = dec.missing(&buf);
        // Before the header is whole, what the header lacks; then what the body lacks.
        let want = if cut < packet::HEADER_LEN { packet::HEADER_LEN - cut } else { whole.len() - cut };
        prop_assert_eq!(missing, want);
        if cut < whole.len() {
            let before = buf.capacity();
            prop_assert_eq!(dec.decode(&mut buf).unwrap(), None);
            prop_assert_eq!(buf.capacity(), before, "decoding reserved room");
        } else {
            prop_assert_eq!(dec.decode(&mut buf).unwrap().map(|p| p.body.to_vec()), Some(body));
        }
    }

    #[test]
    fn any_json_handshake_parses_or_is_refused_without_a_panic(v in any_json(3)) {
        let text = v.to_string();
        if let Ok(h) = kiwano_protocol::handshake::HandshakeData::parse(text.as_bytes()) {
            // What is kept for the session is JSON again.
            prop_assert!(serde_json::from_str::<serde_json::Value>(&h.to_json()).is_ok());
        }
    }

    #[test]
    fn compressed_flag_with_garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut body = vec![0x10u8 | 0x02, 1, b'a'];
        body.extend_from_slice(&data);
        let _ = message::decode(&Bytes::from(body), &dictionary(), 1024);
    }
}
