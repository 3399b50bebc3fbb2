//! The byte stream under a WebSocket connection: hands tungstenite the upgrade request, then one
//! frame at a time, each only once all of its bytes have arrived.
//!
//! tungstenite reserves the whole payload a frame header announces as soon as it parses the
//! header (`FrameCodec::read_frame`), so a client that announces 1 MiB frames and sends 20 bytes
//! would make the server hold a megabyte per connection. Below it, this gate reads into a buffer
//! that grows only with the bytes received, parses frame headers itself (RFC 6455 §5.2) and
//! releases a frame to tungstenite when it is whole; a frame larger than the current limit is
//! refused from its header. Before the upgrade, only the HTTP head is passed on (at most
//! [`MAX_HEAD`] bytes), so no frame byte reaches tungstenite's handshake buffer either.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::transport::Stream;

/// Largest HTTP upgrade request accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// Largest read into the gate's buffer at once.
const CHUNK: usize = 64 << 10;

/// The largest frame payload a gate lets through, shared with the transport, which raises it
/// after the Pitaya handshake.
#[derive(Debug)]
pub struct FrameLimit(AtomicUsize);

impl FrameLimit {
    /// A limit of `max` payload bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self(AtomicUsize::new(max)))
    }

    /// Changes the limit for frames whose header has not been read yet.
    pub fn set(&self, max: usize) {
        self.0.store(max, Ordering::Relaxed);
    }

    /// The limit.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a frame header ends and how long its payload is, if `buf` holds the whole header.
fn frame_header(buf: &[u8]) -> Option<(usize, u64)> {
    let (&b1, _) = buf.get(1).zip(buf.first())?;
    let masked = b1 & 0x80 != 0;
    let (ext, len) = match b1 & 0x7f {
        126 => (2, u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]))),
        127 => {
            let b = buf.get(2..10)?;
            (8, u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        }
        n => (0, u64::from(n)),
    };
    let header = 2 + ext + if masked { 4 } else { 0 };
    (buf.len() >= header).then_some((header, len))
}

fn refuse(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The gate over a connection's byte stream.
pub struct FrameGate {
    /// The socket (TCP or TLS).
    io: Box<dyn Stream>,
    /// Bytes received and not yet passed on.
    buf: BytesMut,
    /// How many bytes at the front of `buf` tungstenite may read.
    open: usize,
    /// Whether the upgrade request has been passed on.
    upgraded: bool,
    /// The largest frame payload let through.
    limit: Arc<FrameLimit>,
}

impl FrameGate {
    /// A gate over `io` letting frames of at most `limit` payload bytes through.
    pub fn new(io: Box<dyn Stream>, limit: Arc<FrameLimit>) -> Self {
        Self { io, buf: BytesMut::new(), open: 0, upgraded: false, limit }
    }

    /// How many bytes of `buf` may be passed on now, or how many more are needed first.
    fn release(&mut self) -> io::Result<Result<usize, usize>> {
        if !self.upgraded {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                self.upgraded = true;
                return Ok(Ok(end + 4));
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(refuse(format!("websocket upgrade request of more than {MAX_HEAD} bytes")));
            }
            return Ok(Err(1024));
        }
        let Some((header, payload)) = frame_header(&self.buf) else {
            return Ok(Err(14 - self.buf.len().min(13)));
        };
        let limit = self.limit.get();
        if payload > limit as u64 {
            return Err(refuse(format!("websocket frame of {payload} bytes exceeds the {limit}-byte limit")));
        }
        // Within the limit: fits in usize.
        let whole = header + payload as usize;
        if self.buf.len() >= whole { Ok(Ok(whole)) } else { Ok(Err(whole - self.buf.len())) }
    }
}

impl AsyncRead for FrameGate {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.open > 0 {
                let n = this.open.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.open -= n;
                // Nothing held between frames: an idle connection costs the gate no buffer.
                if this.buf.is_empty() {
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            let need = match this.release()? {
                Ok(n) => {
                    this.open = n;
                    continue;
                }
                Err(need) => need,
            };
            // Waiting for the first bytes costs no buffer: they are read onto the stack, so an
            // idle connection holds nothing here.
            let n = if this.buf.is_empty() {
                let mut first = [0u8; 512];
                let mut read = ReadBuf::new(&mut first);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
                this.buf.extend_from_slice(read.filled());
                read.filled().len()
            } else {
                // Growing with the bytes that arrived (at most doubling per read), never with
                // what a header announces.
                let want = need.min(this.buf.len().clamp(512, CHUNK)).max(512);
                if this.buf.capacity() - this.buf.len() < want {
                    this.buf.reserve(want);
                }
                ready!(poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf))?
            };
            if n == 0 {
                // End of stream: what is left goes on as it is (tungstenite reports a frame cut
                // short); nothing left is the end.
                if this.buf.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.open = this.buf.len();
            }
        }
    }
}

impl AsyncWrite for FrameGate {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn parses_frame_headers() {
        assert_eq!(frame_header(&[0x82]), None);
        assert_eq!(frame_header(&[0x82, 0x85, 1, 2, 3]), None, "mask key incomplete");
        assert_eq!(frame_header(&[0x82, 0x85, 1, 2, 3, 4]), Some((6, 5)));
        assert_eq!(frame_header(&[0x82, 0x7e, 0x01, 0x00]), Some((4, 256)));
        assert_eq!(frame_header(&[0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4]), Some((14, 1 << 20)));
    }

    #[tokio::test]
    async fn passes_the_head_then_whole_frames_only() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut gate = FrameGate::new(Box::new(server), FrameLimit::new(100));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n\x82\x83abcd").await.unwrap();
        let mut out = [0u8; 64];
        let n = gate.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], b"GET / HTTP/1.1\r\n\r\n");
        // The frame's payload has not arrived: nothing is passed on.
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), gate.read(&mut out)).await;
        assert!(early.is_err(), "a partial frame was released");
        client.write_all(b"xyz").await.unwrap();
        let n = gate.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], b"\x82\x83abcdxyz");
    }

    #[tokio::test]
    async fn refuses_frames_over_the_limit_from_the_header() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let limit = FrameLimit::new(100);
        let mut gate = FrameGate::new(Box::new(server), limit.clone());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n\x82\xfe\x01\x00abcd").await.unwrap();
        let mut out = [0u8; 64];
        gate.read(&mut out).await.unwrap();
        let e = gate.read(&mut out).await.unwrap_err();
        assert_eq!(e.to_string(), "websocket frame of 256 bytes exceeds the 100-byte limit");
        assert!(gate.buf.capacity() < 2048, "held {} bytes", gate.buf.capacity());
    }

    #[tokio::test]
    async fn refuses_an_endless_upgrade_request() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut gate = FrameGate::new(Box::new(server), FrameLimit::new(100));
        client.write_all(&vec![b'a'; MAX_HEAD + 10]).await.unwrap();
        let mut out = [0u8; 64];
        let e = gate.read(&mut out).await.unwrap_err();
        assert!(e.to_string().contains("upgrade request"), "{e}");
    }
}
