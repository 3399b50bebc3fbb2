//! Payload compression: zlib (RFC 1950), the format Pitaya calls "gzip" in its flag name.
//!
//! Outgoing payloads are deflated and sent compressed only when strictly shorter. Incoming
//! compressed payloads are inflated with a cap, so a small "decompression bomb" cannot expand
//! past the maximum body size.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use crate::ProtocolError;

/// Deflates `data` as a zlib stream.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(Vec::with_capacity(data.len() / 2 + 16), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Deflates `data` and returns the result only when it is strictly shorter.
pub fn deflate_if_shorter(data: &[u8]) -> Option<Vec<u8>> {
    if data.is_empty() {
        return None;
    }
    let d = deflate(data);
    (d.len() < data.len()).then_some(d)
}

/// Inflates a zlib stream, failing once the output would exceed `max` bytes.
///
/// # Errors
/// [`ProtocolError::BadCompression`] for a corrupt stream, [`ProtocolError::InflatedTooLarge`]
/// when the output passes `max`.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max).min(64 * 1024));
    // Read at most one byte more than allowed: that byte proves the limit was passed.
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    ZlibDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| ProtocolError::BadCompression(e.to_string()))?;
    if out.len() > max {
        return Err(ProtocolError::InflatedTooLarge { max });
    }
    Ok(out)
}

/// Whether `data` starts like a zlib or gzip stream; this is how Pitaya's clients recognise a
/// compressed handshake response.
pub fn looks_compressed(data: &[u8]) -> bool {
    matches!(data, [0x78, 0x9C | 0x01 | 0xDA | 0x5E, ..] | [0x1F, 0x8B, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_caps() {
        let data = b"bla".repeat(1000);
        let d = deflate(&data);
        assert!(looks_compressed(&d));
        assert_eq!(inflate(&d, 3000).unwrap(), data);
        assert_eq!(inflate(&d, 2999), Err(ProtocolError::InflatedTooLarge { max: 2999 }));
        assert!(matches!(inflate(b"not zlib", 100), Err(ProtocolError::BadCompression(_))));
    }

    #[test]
    fn only_when_shorter() {
        assert_eq!(deflate_if_shorter(b"ab"), None);
        assert!(deflate_if_shorter(&[b'a'; 100]).is_some());
    }
}
