//! UDP listener: a receive loop per socket; several sockets per address
//! with SO_REUSEPORT so the kernel spreads clients over workers.
//!
//! Cache hits are answered inline in the loop; misses get a task of their
//! own so one slow resolution never holds up the socket.

use super::BindError;
use crate::handler::{Handler, Step, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use tokio::io::Interest;
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

/// Datagrams read or written per system call.
const BATCH: usize = 32;
/// Receive buffer per datagram. A query longer than this is not a query
/// worth answering (the kernel flags it MSG_TRUNC and it is dropped).
const MAX_QUERY: usize = 4096;

/// Serves one socket until `shutdown` fires.
///
/// Reads up to [`BATCH`] queries per `recvmmsg` and sends the fast-path
/// replies with one `sendmmsg`: on a cache-hit workload the system calls,
/// not the lookup, are the cost (RFC-agnostic; Unbound and Knot do the same).
pub async fn serve(
    sock: Arc<UdpSocket>,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut batch = mmsg::Batch::new(BATCH, MAX_QUERY);
    let mut replies: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut dests: Vec<SocketAddr> = Vec::with_capacity(BATCH);
    let mut sender = mmsg::SendBatch::new(BATCH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.readable() => if r.is_err() { continue },
        }
        // Drain what is queued, a batch at a time, before waiting again.
        while let Ok(n) = sock.try_io(Interest::READABLE, || batch.recv(sock.as_raw_fd())) {
            dests.clear();
            for i in 0..n {
                let Some((pkt, peer)) = batch.get(i) else {
                    continue;
                };
                let Some(out) = replies.get_mut(dests.len()) else {
                    break;
                };
                match handler.answer_now(pkt, peer, Transport::Udp, out) {
                    Step::Reply => dests.push(peer),
                    Step::Drop => {}
                    Step::Resolve => {
                        let pkt = pkt.to_vec();
                        let sock = sock.clone();
                        let handler = handler.clone();
                        tasks.spawn(async move {
                            let mut out = Vec::with_capacity(1024);
                            handler
                                .answer_resolved(&pkt, peer, Transport::Udp, &mut out)
                                .await;
                            if !out.is_empty() {
                                send(&sock, &out, peer).await;
                            }
                        });
                    }
                }
            }
            let ready = replies.get(..dests.len()).unwrap_or(&[]);
            let sent = sock
                .try_io(Interest::WRITABLE, || {
                    sender.send(sock.as_raw_fd(), ready, &dests)
                })
                .unwrap_or(0);
            // Whatever the kernel did not take at once (full buffer) goes
            // out one by one, waiting for room.
            for (out, peer) in ready.iter().zip(&dests).skip(sent) {
                send(&sock, out, *peer).await;
            }
            if n < BATCH {
                break;
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

/// `recvmmsg(2)` / `sendmmsg(2)` over preallocated buffers. The only unsafe
/// code in resolvd: raw pointers into buffers this struct owns, handed to
/// the kernel for the duration of one call.
mod mmsg {
    use socket2::SockAddr;
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    /// Buffers and headers for one batch of received datagrams.
    pub(super) struct Batch {
        bufs: Vec<Vec<u8>>,
        addrs: Vec<libc::sockaddr_storage>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    // The raw pointers in `iovs`/`hdrs` point into `bufs`/`addrs`, which are
    // owned alongside them and never reallocated; the batch is used by one
    // task at a time.
    unsafe impl Send for Batch {}

    impl Batch {
        pub(super) fn new(n: usize, size: usize) -> Batch {
            let mut b = Batch {
                bufs: (0..n).map(|_| vec![0u8; size]).collect(),
                // SAFETY: all-zero is a valid sockaddr_storage.
                addrs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
                iovs: Vec::with_capacity(n),
                hdrs: Vec::with_capacity(n),
            };
            for i in 0..n {
                let buf = &mut b.bufs[i];
                b.iovs.push(libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                });
            }
            for i in 0..n {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = &mut b.iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
                b.hdrs.push(h);
            }
            b
        }

        /// Receives up to a batch without blocking; returns how many.
        pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
            for h in self.hdrs.iter_mut() {
                h.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points at live buffers of the stated sizes.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }

        /// Datagram `i` of the last receive and its sender; None for a
        /// truncated datagram or an unknown address family.
        pub(super) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
            let h = self.hdrs.get(i)?;
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return None;
            }
            let pkt = self.bufs.get(i)?.get(..h.msg_len as usize)?;
            let storage = *self.addrs.get(i)?;
            // SAFETY: the kernel wrote a sockaddr of msg_namelen bytes.
            let addr = unsafe { SockAddr::new(storage, h.msg_hdr.msg_namelen) };
            Some((pkt, addr.as_socket()?))
        }
    }

    /// Reusable headers for one `sendmmsg`, so sending allocates nothing.
    pub(super) struct SendBatch {
        addrs: Vec<SockAddr>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    // Holds raw pointers only during `send`, into data borrowed for that call.
    unsafe impl Send for SendBatch {}

    impl SendBatch {
        pub(super) fn new(n: usize) -> SendBatch {
            SendBatch {
                addrs: Vec::with_capacity(n),
                iovs: Vec::with_capacity(n),
                hdrs: Vec::with_capacity(n),
            }
        }

        /// Sends each reply to its peer with one `sendmmsg`; returns how
        /// many the kernel took (the rest are the caller's to retry).
        pub(super) fn send(
            &mut self,
            fd: RawFd,
            replies: &[Vec<u8>],
            dests: &[SocketAddr],
        ) -> io::Result<usize> {
            let n = replies.len().min(dests.len());
            if n == 0 {
                return Ok(0);
            }
            self.addrs.clear();
            self.iovs.clear();
            self.hdrs.clear();
            self.addrs
                .extend(dests.iter().take(n).map(|d| SockAddr::from(*d)));
            self.iovs
                .extend(replies.iter().take(n).map(|r| libc::iovec {
                    iov_base: r.as_ptr() as *mut libc::c_void,
                    iov_len: r.len(),
                }));
            // Pointers are taken after both vectors are filled, so no push
            // can move what they point at.
            for (iov, addr) in self.iovs.iter_mut().zip(&self.addrs) {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = addr.len();
                self.hdrs.push(h);
            }
            // SAFETY: headers point at `iovs`, `addrs` and `replies`, all
            // alive until the call returns; the kernel only reads them.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(sent as usize)
        }
    }
}
