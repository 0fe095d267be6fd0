//! One finished HTTP/2 response per TLS record, for DoH clients that
//! cannot take more.
//!
//! hyper's HTTP/2 server queues the frames of every response that is ready
//! and writes them in one go, so under load one TLS record carries the
//! HEADERS and DATA of many streams. That is valid HTTP/2, but dnsperf's
//! DoH client (its nghttp2 glue, up to 2.14 at least) hands out one DNS
//! message per `SSL_read`, i.e. per record: on a second response's DATA in
//! the same record it pauses nghttp2 and drops that chunk, returns an empty
//! message for it, and then waits for the socket while the rest of the
//! record sits unread in its buffer. On a connection with queries in
//! flight and none to send, that is a stall: the first few answers arrive
//! and the rest time out.
//!
//! [`StreamEndRecords`] sits between hyper and the TLS stream and ends the
//! write (and so the record, since rustls seals each write into its own
//! records) after every frame that ends a stream. It parses only the frame
//! headers of what hyper writes, never network input.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Length, type, flags and stream ID (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;
const TYPE_DATA: u8 = 0x0;
const TYPE_HEADERS: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;

/// Where the outgoing byte stream is, frame-wise.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Frame header bytes seen so far (a header can span writes).
    head: [u8; FRAME_HEADER],
    have: usize,
    /// Payload bytes of the current frame not yet seen.
    left: usize,
    /// The current frame ends its stream.
    ends: bool,
}

impl Scan {
    /// Consumes `buf` up to and including the end of the first frame that
    /// ends a stream, and returns how much that was; `None` when no such
    /// frame ends in `buf` (all of it is consumed).
    fn feed(&mut self, buf: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < buf.len() {
            if self.left == 0 {
                let take = (FRAME_HEADER - self.have).min(buf.len() - i);
                self.head[self.have..self.have + take].copy_from_slice(&buf[i..i + take]);
                self.have += take;
                i += take;
                if self.have < FRAME_HEADER {
                    return None;
                }
                self.have = 0;
                let h = self.head;
                self.left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.ends =
                    (h[3] == TYPE_DATA || h[3] == TYPE_HEADERS) && h[4] & FLAG_END_STREAM != 0;
            } else {
                let take = self.left.min(buf.len() - i);
                self.left -= take;
                i += take;
            }
            if self.left == 0 && self.have == 0 && self.ends {
                self.ends = false;
                return Some(i);
            }
        }
        None
    }
}

/// Passes I/O through, cutting writes after each stream-ending HTTP/2
/// frame when `active` (the connection speaks HTTP/2: ALPN "h2").
pub(crate) struct StreamEndRecords<S> {
    inner: S,
    active: bool,
    scan: Scan,
}

impl<S> StreamEndRecords<S> {
    /// Wraps `inner`; a pass-through unless `active`.
    pub(crate) fn new(inner: S, active: bool) -> Self {
        StreamEndRecords {
            inner,
            active,
            scan: Scan::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StreamEndRecords<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StreamEndRecords<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.active {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let cut = this.scan.clone().feed(buf).unwrap_or(buf.len());
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..cut]))?;
        // Only what was written moves the scan (n <= cut, so all of it).
        this.scan.feed(&buf[..n.min(cut)]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.active {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let mut probe = this.scan;
        let mut upto: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
        for b in bufs {
            match probe.feed(b) {
                Some(i) => {
                    upto.push(IoSlice::new(&b[..i]));
                    break;
                }
                None => upto.push(IoSlice::new(b)),
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &upto))?;
        let mut rest = n;
        for b in &upto {
            if rest == 0 {
                break;
            }
            let k = rest.min(b.len());
            this.scan.feed(&b[..k]);
            rest -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Splits `bytes` as the wrapper would, feeding `chunk` bytes at a time.
    fn cuts(bytes: &[u8], chunk: usize) -> Vec<usize> {
        let mut s = Scan::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let end = (pos + chunk).min(bytes.len());
            match s.feed(&bytes[pos..end]) {
                Some(i) => {
                    pos += i;
                    out.push(pos);
                }
                None => pos = end,
            }
        }
        out
    }

    #[test]
    fn cuts_after_each_stream_ending_frame_however_the_bytes_arrive() {
        let settings = frame(0x4, 0, 0, &[0; 6]);
        let h1 = frame(TYPE_HEADERS, 0x4, 1, b"hdrs");
        let h3 = frame(TYPE_HEADERS, 0x4, 3, b"hdrs");
        let d1 = frame(TYPE_DATA, FLAG_END_STREAM, 1, &[7; 40]);
        // A body-less reply: HEADERS with END_STREAM, empty payload too.
        let h5 = frame(TYPE_HEADERS, 0x4 | FLAG_END_STREAM, 5, b"");
        let d3 = frame(TYPE_DATA, FLAG_END_STREAM, 3, &[8; 300]);
        let stream = [settings, h1, h3, d1, h5, d3].concat();
        let ends: Vec<usize> = {
            let a = 15 + 13 + 13 + 49;
            vec![a, a + 9, a + 9 + 309]
        };
        for chunk in [1, 2, 5, 9, 10, 64, 10_000] {
            assert_eq!(cuts(&stream, chunk), ends, "chunk {chunk}");
        }
    }

    #[test]
    fn frames_without_end_stream_pass_whole() {
        let d = frame(TYPE_DATA, 0, 1, &[1; 100]);
        let ping = frame(0x6, FLAG_END_STREAM, 0, &[0; 8]); // ACK flag, not END_STREAM
        let mut s = Scan::default();
        assert_eq!(s.feed(&[d, ping].concat()), None);
    }
}
