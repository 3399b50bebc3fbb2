//! Payload compression: zlib (RFC 1950), the format Pitaya calls "gzip" in its flag name.
//!
//! Outgoing payloads are deflated and sent compressed only when strictly shorter. Incoming
//! compressed payloads are inflated with a cap, so a small "decompression bomb" cannot expand
//! past the maximum body size.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::ProtocolError;

thread_local! {
    /// One compressor per thread, reset between uses: its state is a few hundred KiB that would
    /// otherwise be allocated and zeroed for every message.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), true));
    /// Likewise one decompressor per thread.
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// Deflates `data` into at most `limit` bytes; `None` if the zlib stream does not fit.
fn deflate_within(data: &[u8], limit: usize) -> Option<Vec<u8>> {
    DEFLATE.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(limit);
        loop {
            let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX).min(data.len());
            match c.compress_vec(&data[consumed..], &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return Some(out),
                Ok(_) if out.len() < limit => {
                    let more = (limit - out.len()).min(out.capacity().max(64));
                    out.reserve(more);
                }
                _ => return None,
            }
        }
    })
}

/// Deflates `data` as a zlib stream.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    // A zlib stream is never more than a few bytes per 16 KiB larger than its input.
    deflate_within(data, data.len() + data.len() / 1000 + 64).unwrap_or_default()
}

/// Deflates `data` and returns the result only when it is strictly shorter.
pub fn deflate_if_shorter(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 2 {
        return None;
    }
    deflate_within(data, data.len() - 1).filter(|d| d.len() < data.len())
}

/// Inflates a zlib stream, failing once the output would exceed `max` bytes.
///
/// # Errors
/// [`ProtocolError::BadCompression`] for a corrupt stream, [`ProtocolError::InflatedTooLarge`]
/// when the output passes `max`.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, ProtocolError> {
    INFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(true);
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).clamp(64, 64 * 1024).min(max.saturating_add(1)));
        loop {
            let consumed = usize::try_from(d.total_in()).unwrap_or(usize::MAX).min(data.len());
            let before = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&data[consumed..], &mut out, FlushDecompress::None)
                .map_err(|e| ProtocolError::BadCompression(e.to_string()))?;
            if out.len() > max {
                return Err(ProtocolError::InflatedTooLarge { max });
            }
            match status {
                Status::StreamEnd => {
                    // The buffer grew by doubling: give the slack back, so a queued message holds
                    // what it is (the queues are bounded by message sizes).
                    if out.capacity() - out.len() > out.len() / 8 {
                        out.shrink_to_fit();
                    }
                    return Ok(out);
                }
                _ if out.len() == out.capacity() => {
                    // Room for one byte past the limit: that byte proves the limit was passed.
                    let more = (max.saturating_add(1) - out.len()).min(out.capacity().max(64));
                    out.reserve(more);
                }
                _ if (d.total_in(), d.total_out()) == before => {
                    return Err(ProtocolError::BadCompression("truncated zlib stream".into()));
                }
                _ => {}
            }
        }
    })
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
