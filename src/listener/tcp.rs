//! TCP listener (RFC 7766; RFC 1035 §4.2.2 framing): a 2-byte length before
//! each message, pipelined queries answered as each completes (out of order
//! allowed, §6.2.1.1), an idle timeout, a cap on connections and a cap on
//! queries in flight per connection.
//!
//! A client that stalls mid-frame is cut off by the same idle timeout, and
//! one that stops reading replies is cut off by the write timeout, so slow
//! or half-open clients hold a connection slot for bounded time only.

use super::BindError;
use crate::handler::{Handler, Step, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// TCP limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Close a connection idle this long.
    pub idle_timeout: Duration,
    /// Queries in flight per connection.
    pub max_inflight: usize,
}

/// Binds a listening socket.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let err = |source| BindError {
        proto: "tcp",
        addr,
        source,
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true).map_err(err)?;
    }
    sock.set_reuse_address(true).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    sock.bind(&addr.into()).map_err(err)?;
    sock.listen(1024).map_err(err)?;
    TcpListener::from_std(sock.into()).map_err(err)
}

/// Accepts connections until `shutdown` fires. `slots` caps connections
/// over all TCP listeners.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    limits: TcpLimits,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // At the cap: closing at once tells the client to go elsewhere
            // sooner than a queued SYN would.
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let tasks2 = tasks.clone();
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(peer) = stream.peer_addr() else { return };
            let (rd, wr) = stream.into_split();
            connection(
                rd,
                wr,
                peer,
                Transport::Tcp,
                handler,
                limits,
                shutdown,
                tasks2,
            )
            .await;
            drop(slot);
        });
    }
}

/// Serves one connection's length-prefixed queries until the client
/// closes, idles out or `shutdown` fires. Generic over the byte stream so
/// DNS over TLS (RFC 7858 §3.3: the same framing inside TLS) runs this
/// very loop on the two halves of a TLS stream; plain TCP passes the
/// halves of its socket, which need no lock between them. `peer` is the
/// client as access lists and geo pools see it.
#[allow(clippy::too_many_arguments)]
pub async fn connection<R, W>(
    rd: R,
    wr: W,
    peer: SocketAddr,
    transport: Transport,
    handler: Arc<Handler>,
    limits: TcpLimits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let idle = limits.idle_timeout;
    // The reader writes fast-path replies itself (no hop through another
    // task); resolutions finishing later take the same lock for theirs.
    // A tokio Mutex because the guard is held across the write.
    let wr = Arc::new(Mutex::new(wr));
    // Pipelining clients send many queries per segment: read them through
    // a buffer and answer every complete one before writing. 4 KiB holds
    // dozens of queries; the message buffer grows to the largest one seen.
    // Thousands of idle connections must not cost 128 KiB each.
    let mut rd = BufReader::with_capacity(4 * 1024, rd);
    let max_inflight = limits.max_inflight.max(1);
    let inflight = Arc::new(Semaphore::new(max_inflight));
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(4096);
    let mut batch: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if batch.len() > 64 * 1024 || (!batch.is_empty() && !frame_buffered(rd.buffer())) {
            // Nothing more to answer without waiting (or plenty already):
            // send what we have.
            if !write(&wr, &batch, idle).await {
                break;
            }
            batch.clear();
        }
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(idle, read_frame(&mut rd, &mut buf)) => r,
        };
        let n = match frame {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(_) => {
                // Idle: nothing arrived. Keep the connection while answers
                // are still being worked on, close it otherwise.
                if inflight.available_permits() < max_inflight {
                    continue;
                }
                break;
            }
        };
        let pkt = buf.get(..n).unwrap_or(&[]);
        match handler.answer_now(pkt, peer, transport, &mut out) {
            Step::Reply => push_framed(&mut batch, &out),
            Step::Drop => {}
            Step::Resolve => {
                // Back-pressure: at the in-flight cap, stop reading until
                // one finishes.
                let Ok(permit) = inflight.clone().acquire_owned().await else {
                    break;
                };
                let pkt = pkt.to_vec();
                let handler = handler.clone();
                let wr = wr.clone();
                tasks.spawn(async move {
                    let mut out = Vec::with_capacity(1024);
                    handler
                        .answer_resolved(&pkt, peer, transport, &mut out)
                        .await;
                    if !out.is_empty() {
                        let mut framed = Vec::with_capacity(out.len() + 2);
                        push_framed(&mut framed, &out);
                        write(&wr, &framed, idle).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    if !batch.is_empty() {
        write(&wr, &batch, idle).await;
    }
    // Answers still being resolved get written before the stream closes
    // (bounded: each resolution has its own deadline).
    let all = u32::try_from(max_inflight).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(idle, inflight.acquire_many(all)).await;
    let _ = wr.lock().await.shutdown().await;
}

/// Writes framed replies; false when the client is gone or too slow to
/// take them within `limit` (the connection is then given up).
async fn write<W: AsyncWrite + Unpin>(wr: &Mutex<W>, bytes: &[u8], limit: Duration) -> bool {
    let mut w = wr.lock().await;
    // A TLS stream buffers what it encrypts: flush so the reply leaves
    // now (a no-op on a TCP socket).
    let io = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    matches!(tokio::time::timeout(limit, io).await, Ok(Ok(())))
}

/// Appends a 2-byte length and the message (RFC 1035 §4.2.2).
fn push_framed(batch: &mut Vec<u8>, msg: &[u8]) {
    if let Ok(len) = u16::try_from(msg.len()) {
        batch.extend_from_slice(&len.to_be_bytes());
        batch.extend_from_slice(msg);
    }
}

/// Whether `buffered` already holds a complete length-prefixed message.
fn frame_buffered(buffered: &[u8]) -> bool {
    match buffered {
        [hi, lo, rest @ ..] => rest.len() >= u16::from_be_bytes([*hi, *lo]) as usize,
        _ => false,
    }
}

/// Reads one length-prefixed message; None on EOF, a zero length or error.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> Option<usize> {
    let mut len = [0u8; 2];
    rd.read_exact(&mut len).await.ok()?;
    let n = u16::from_be_bytes(len) as usize;
    if n == 0 {
        return None;
    }
    if buf.len() < n {
        buf.resize(n, 0);
    }
    rd.read_exact(buf.get_mut(..n)?).await.ok()?;
    Some(n)
}
