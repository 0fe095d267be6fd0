//! UDP listener: a receive loop per socket; several sockets per address
//! with SO_REUSEPORT so the kernel spreads clients over workers.
//!
//! Cache hits are answered inline in the loop; misses get a task of their
//! own so one slow resolution never holds up the socket.

use super::BindError;
use crate::handler::{Handler, Step, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds one UDP socket with SO_REUSEPORT (so siblings can share the port).
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, BindError> {
    let err = |source| BindError {
        proto: "udp",
        addr,
        source,
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true).map_err(err)?;
    }
    sock.set_reuse_port(true).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    // Bursts of queries must not be dropped by a small default buffer.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&addr.into()).map_err(err)?;
    UdpSocket::from_std(sock.into()).map_err(err)
}

/// Serves one socket until `shutdown` fires.
pub async fn serve(
    sock: Arc<UdpSocket>,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here; keep serving.
                Err(_) => continue,
            },
        };
        let pkt = buf.get(..n).unwrap_or(&[]);
        match handler.answer_now(pkt, peer, Transport::Udp, &mut out) {
            Step::Reply => send(&sock, &out, peer).await,
            Step::Drop => {}
            Step::Resolve => {
                let pkt = pkt.to_vec();
                let sock = sock.clone();
                let handler = handler.clone();
                tasks.spawn(async move {
                    let mut out = Vec::with_capacity(1024);
                    handler
                        .answer_resolved(&pkt, Transport::Udp, &mut out)
                        .await;
                    if !out.is_empty() {
                        send(&sock, &out, peer).await;
                    }
                });
            }
        }
    }
}

async fn send(sock: &UdpSocket, out: &[u8], peer: SocketAddr) {
    // Try the non-blocking send first: it succeeds unless the socket buffer
    // is full, and saves a trip through the reactor.
    match sock.try_send_to(out, peer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let _ = sock.send_to(out, peer).await;
        }
        Err(_) => {}
    }
}
