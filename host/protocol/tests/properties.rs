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
    fn compressed_flag_with_garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut body = vec![0x10u8 | 0x02, 1, b'a'];
        body.extend_from_slice(&data);
        let _ = message::decode(&Bytes::from(body), &dictionary(), 1024);
    }
}
