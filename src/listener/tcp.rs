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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
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
            connection(stream, handler, limits, shutdown, tasks2).await;
            drop(slot);
        });
    }
}

async fn connection(
    stream: TcpStream,
    handler: Arc<Handler>,
    limits: TcpLimits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let Ok(peer) = stream.peer_addr() else { return };
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(limits.max_inflight.max(1));
    let idle = limits.idle_timeout;
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Ok(len) = u16::try_from(msg.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(msg.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&msg);
            match tokio::time::timeout(idle, wr.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = wr.shutdown().await;
    });
    let inflight = Arc::new(Semaphore::new(limits.max_inflight.max(1)));
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
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
                if inflight.available_permits() < limits.max_inflight.max(1) {
                    continue;
                }
                break;
            }
        };
        let pkt = buf.get(..n).unwrap_or(&[]);
        // Back-pressure: at the in-flight cap, stop reading until one finishes.
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        match handler.answer_now(pkt, peer, Transport::Tcp, &mut out) {
            Step::Reply => {
                if tx.send(out.clone()).await.is_err() {
                    break;
                }
            }
            Step::Drop => {}
            Step::Resolve => {
                let pkt = pkt.to_vec();
                let handler = handler.clone();
                let tx = tx.clone();
                tasks.spawn(async move {
                    let mut out = Vec::with_capacity(1024);
                    handler
                        .answer_resolved(&pkt, Transport::Tcp, &mut out)
                        .await;
                    if !out.is_empty() {
                        let _ = tx.send(out).await;
                    }
                    drop(permit);
                });
                continue;
            }
        }
        drop(permit);
    }
    // The writer finishes once every pending answer has been sent (all
    // senders dropped), then closes the stream.
    drop(tx);
    let _ = writer.await;
}

/// Reads one length-prefixed message; None on EOF, a zero length or error.
async fn read_frame(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut [u8]) -> Option<usize> {
    let mut len = [0u8; 2];
    rd.read_exact(&mut len).await.ok()?;
    let n = u16::from_be_bytes(len) as usize;
    if n == 0 {
        return None;
    }
    rd.read_exact(buf.get_mut(..n)?).await.ok()?;
    Some(n)
}
